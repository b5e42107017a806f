//! The behaviour every storage backend must show, as functions the
//! backends' tests call with fresh storage (SQLite in its unit tests,
//! PostgreSQL in `tests/postgres.rs`).
//!
//! One module per storage trait; fixtures shared by all of them here.

mod audit;
mod backend;
mod keys;
mod maintenance;
mod meta;
mod nodes;
mod objects;
mod policies;
mod sealing;
mod stores;

pub use audit::*;
pub use backend::*;
pub use keys::*;
pub use maintenance::*;
pub use meta::*;
pub use nodes::*;
pub use objects::*;
pub use policies::*;
pub use sealing::*;
pub use stores::*;

use crate::{NodeInfo, Storage};
use keyhold_core::{
    now, Error, Key, KeyId, KeyState, KeyStore, Lifecycle, ManagedObject, ObjectState, Status,
    StorePrefix, StoredCredential, Usage, VersionFlag, WrappedItem, WrappedKeyVersion,
};
use std::sync::Arc;

fn store(p: &str) -> KeyStore {
    KeyStore {
        prefix: StorePrefix::parse(p).unwrap(),
        status: Status::Enabled,
        description: String::new(),
        created_at: now(),
    }
}

fn key(p: &str, id: &str) -> (Key, WrappedKeyVersion) {
    (
        Key {
            store: StorePrefix::parse(p).unwrap(),
            id: KeyId::parse(id).unwrap(),
            status: Status::Enabled,
            usage: Usage::BOTH,
            current_version: 1,
            created_at: now(),
            updated_at: now(),
            hsm_label: None,
            lifecycle: Lifecycle::default(),
            key_type: Default::default(),
        },
        WrappedKeyVersion {
            version: 1,
            wrapped: vec![1, 2, 3],
            created_at: now(),
            flag: VersionFlag::Good,
        },
    )
}

pub(crate) fn object(uid: &str) -> ManagedObject {
    ManagedObject {
        uid: uid.into(),
        object_type: 2,
        owner: "alice".into(),
        state: ObjectState::PreActive,
        exportable: true,
        attrs: vec![keyhold_core::ObjectAttr {
            name: "Name".into(),
            value: keyhold_core::AttrValue::Text(uid.into()),
        }],
        has_material: true,
        rev: 1,
    }
}

/// Waits for `s`'s change token to move from `t0` (ten seconds at most: a
/// bound no loaded machine misses; how fast it moves is measured elsewhere).
fn token_moves(s: &dyn Storage, t0: u64) {
    let started = std::time::Instant::now();
    while s.change_token().unwrap() == t0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the change was not noticed within ten seconds"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn granted(uid: &str, owner: &str, to: &str) -> ManagedObject {
    let mut o = object(uid);
    o.owner = owner.into();
    o.attrs.push(keyhold_core::ObjectAttr {
        name: keyhold_core::GRANT_ATTR.into(),
        value: keyhold_core::AttrValue::Text(to.into()),
    });
    o
}

fn uids(v: Vec<ManagedObject>) -> Vec<String> {
    v.into_iter().map(|o| o.uid).collect()
}
