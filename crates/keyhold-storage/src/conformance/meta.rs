//! MetaStore: reservation counters.

use super::*;

/// Reservation counters grow atomically from every thread and, on SQLite,
/// move no change token (no cache depends on them; on PostgreSQL their
/// table has no NOTIFY trigger, and the token also moves with the
/// listening connection, so it is not compared there).
pub fn reservations_only_grow(s: Arc<dyn Storage>) {
    assert_eq!(s.reserve_count("c", 10).unwrap(), 10);
    let t0 = s.change_token().unwrap();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || {
                (0..25)
                    .map(|_| s.reserve_count("c", 4).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seen: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 200, "every reservation got a total of its own");
    assert_eq!(*seen.last().unwrap(), 10 + 8 * 25 * 4);
    assert_eq!(s.reserve_count("other", 1).unwrap(), 1);
    if !s.shared() {
        assert_eq!(s.change_token().unwrap(), t0, "reservations move no token");
    }
}
