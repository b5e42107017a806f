//! Backend: the change token other handles see move.

use super::*;

/// A write through `b` moves `a`'s change token (within a second) and is
/// visible through `a`.
pub fn other_handle_changes_are_seen(a: &dyn Storage, b: &dyn Storage) {
    let t0 = a.change_token().unwrap();
    b.create_store(&store("/x")).unwrap();
    token_moves(a, t0);
    assert!(a
        .get_store(&StorePrefix::parse("/x").unwrap())
        .unwrap()
        .is_some());
}
