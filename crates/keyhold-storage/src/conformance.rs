//! The behaviour every storage backend must show, as functions the
//! backends' tests call with fresh storage (SQLite in its unit tests,
//! PostgreSQL in `tests/postgres.rs`).

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
        },
        WrappedKeyVersion {
            version: 1,
            wrapped: vec![1, 2, 3],
            created_at: now(),
            flag: VersionFlag::Good,
        },
    )
}

/// Stores, keys, batches (all or nothing), status and versions.
pub fn store_and_key_lifecycle(s: &dyn Storage) {
    s.create_store(&store("/a")).unwrap();
    assert!(matches!(
        s.create_store(&store("/a")),
        Err(Error::StoreExists(_))
    ));
    let (k, v) = key("/a", "k1");
    s.create_key(&k, &v).unwrap();
    assert!(matches!(s.create_key(&k, &v), Err(Error::KeyExists { .. })));
    let (k2, v2) = key("/missing", "k1");
    assert!(matches!(
        s.create_key(&k2, &v2),
        Err(Error::StoreNotFound(_))
    ));
    // A batch is all or nothing.
    let batch = vec![key("/a", "b1"), key("/a", "b2"), key("/a", "k1")];
    assert!(matches!(
        s.create_keys(&batch),
        Err(Error::KeyExists { .. })
    ));
    assert!(s
        .get_key(&k.store, &KeyId::parse("b1").unwrap())
        .unwrap()
        .is_none());
    s.create_keys(&batch[..2]).unwrap();
    assert_eq!(s.get_key(&k.store, &k.id).unwrap().unwrap(), k);
    s.set_key_status(&k.store, &k.id, Status::Disabled).unwrap();
    assert_eq!(
        s.get_key(&k.store, &k.id).unwrap().unwrap().status,
        Status::Disabled
    );
    let v2 = WrappedKeyVersion {
        version: 2,
        wrapped: vec![4],
        created_at: now(),
        flag: VersionFlag::Good,
    };
    s.add_key_version(&k.store, &k.id, &v2).unwrap();
    assert!(s.add_key_version(&k.store, &k.id, &v2).is_err());
    assert_eq!(
        s.get_key(&k.store, &k.id).unwrap().unwrap().current_version,
        2
    );
    assert_eq!(
        s.get_key_version(&k.store, &k.id, 1)
            .unwrap()
            .unwrap()
            .wrapped,
        vec![1, 2, 3]
    );
    assert!(s.get_key_version(&k.store, &k.id, 3).unwrap().is_none());
    assert_eq!(s.list_keys(&k.store, None, 10).unwrap().len(), 3);
    assert_eq!(s.count_keys(&k.store).unwrap(), 3);
}

/// Every wrapped value is listed and replaced only if unchanged.
pub fn wrapped_items_and_compare_and_swap(s: &dyn Storage) {
    s.create_store(&store("/a")).unwrap();
    let (k, v) = key("/a", "k1");
    s.create_key(&k, &v).unwrap();
    s.put_meta_if_absent("root_check", b"rc").unwrap();
    s.add_credential(&StoredCredential {
        access_key_id: "AAAAAAAAAAAAAAAAAAAA".into(),
        store: k.store.clone(),
        wrapped_secret: vec![9],
        created_at: now(),
    })
    .unwrap();
    let items = s.wrapped_items().unwrap();
    assert_eq!(items.len(), 3);
    let (kv, blob) = items
        .iter()
        .find(|(i, _)| matches!(i, WrappedItem::KeyVersion { .. }))
        .unwrap();
    assert_eq!(blob, &vec![1, 2, 3]);
    assert!(!s.replace_wrapped(kv, b"stale", b"new").unwrap());
    assert!(s.replace_wrapped(kv, blob, b"new").unwrap());
    assert_eq!(
        s.get_key_version(&k.store, &k.id, 1)
            .unwrap()
            .unwrap()
            .wrapped,
        b"new"
    );
    for (item, blob) in &items {
        if !matches!(item, WrappedItem::KeyVersion { .. }) {
            assert!(s.replace_wrapped(item, blob, b"x").unwrap());
        }
    }
    assert_eq!(s.get_meta("root_check").unwrap().unwrap(), b"x");
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

/// Managed objects: revisions, conflicts, one-way erasure.
pub fn objects_round_trip_conflict_and_erase(s: &dyn Storage) {
    let o = object("u1");
    s.create_object(&o, b"wrapped").unwrap();
    assert!(matches!(s.create_object(&o, b"x"), Err(Error::Conflict(_))));
    assert_eq!(s.get_object("u1").unwrap().unwrap(), o);
    assert_eq!(s.object_material("u1").unwrap().unwrap(), b"wrapped");
    let mut o2 = o.clone();
    o2.state = ObjectState::Active;
    s.update_object(&o2).unwrap();
    // A stale revision loses; a missing object is named.
    assert!(matches!(s.update_object(&o2), Err(Error::Conflict(_))));
    assert!(matches!(
        s.update_object(&object("nope")),
        Err(Error::ObjectNotFound(_))
    ));
    let mut o3 = s.get_object("u1").unwrap().unwrap();
    assert_eq!((o3.state, o3.rev), (ObjectState::Active, 2));
    assert!(s
        .wrapped_items()
        .unwrap()
        .iter()
        .any(|(i, _)| *i == WrappedItem::Object { uid: "u1".into() }));
    o3.has_material = false;
    o3.state = ObjectState::Destroyed;
    s.update_object(&o3).unwrap();
    assert_eq!(s.object_material("u1").unwrap(), None);
    // Erasing is one-way: an update that says the material is there loses.
    let mut o4 = s.get_object("u1").unwrap().unwrap();
    o4.has_material = true;
    assert!(matches!(s.update_object(&o4), Err(Error::Conflict(_))));
    assert_eq!(s.object_material("u1").unwrap(), None);
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

/// What Locate reads: an identity's own objects and every shared one,
/// oldest first, destroyed ones only when asked; a grant given or taken
/// back moves an object in or out of the shared ones.
pub fn objects_for_an_identity(s: &dyn Storage) {
    s.create_object(&object("a1"), b"w").unwrap();
    let mut bob = object("b1");
    bob.owner = "bob".into();
    s.create_object(&bob, b"w").unwrap();
    let mut gone = object("a2");
    s.create_object(&gone, b"w").unwrap();
    gone.state = ObjectState::Destroyed;
    gone.has_material = false;
    s.update_object(&gone).unwrap();
    s.create_object(&granted("b2", "bob", "carol"), b"w")
        .unwrap();
    assert_eq!(
        uids(s.list_objects_for("alice", false).unwrap()),
        ["a1", "b2"]
    );
    assert_eq!(
        uids(s.list_objects_for("alice", true).unwrap()),
        ["a1", "a2", "b2"]
    );
    assert_eq!(
        uids(s.list_objects_for("bob", false).unwrap()),
        ["b1", "b2"]
    );
    assert_eq!(uids(s.list_objects_for("dave", false).unwrap()), ["b2"]);
    // Granting b1 makes it shared; ungranting b2 makes it bob's alone.
    let mut b1 = s.get_object("b1").unwrap().unwrap();
    b1.attrs = granted("b1", "bob", "alice").attrs;
    s.update_object(&b1).unwrap();
    let mut b2 = s.get_object("b2").unwrap().unwrap();
    b2.attrs.retain(|a| a.name != keyhold_core::GRANT_ATTR);
    s.update_object(&b2).unwrap();
    assert_eq!(
        uids(s.list_objects_for("alice", false).unwrap()),
        ["a1", "b1"]
    );
    assert_eq!(uids(s.list_objects_for("carol", false).unwrap()), ["b1"]);
}

/// Concurrent writers each get their own outcome.
pub fn writes_from_many_threads_all_land(s: Arc<dyn Storage>) {
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    s.create_object(&object(&format!("t{t}-{i}")), b"w")
                        .unwrap();
                }
                // One duplicate per thread fails alone.
                assert!(s.create_object(&object(&format!("t{t}-0")), b"w").is_err());
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(s.list_objects().unwrap().len(), 400);
}

/// Credentials, meta values, and the change token moving on a write.
pub fn credentials_and_meta(s: &dyn Storage) {
    s.create_store(&store("/a")).unwrap();
    let c = StoredCredential {
        access_key_id: "AAAAAAAAAAAAAAAAAAAA".into(),
        store: StorePrefix::parse("/a").unwrap(),
        wrapped_secret: vec![9],
        created_at: now(),
    };
    let t0 = s.change_token().unwrap();
    s.add_credential(&c).unwrap();
    token_moves(s, t0);
    assert_eq!(s.get_credential(&c.access_key_id).unwrap().unwrap(), c);
    assert_eq!(s.list_credentials(&c.store).unwrap().len(), 1);
    s.remove_credential(&c.store, &c.access_key_id).unwrap();
    assert!(s.get_credential(&c.access_key_id).unwrap().is_none());
    assert_eq!(s.put_meta_if_absent("x", b"1").unwrap(), b"1");
    assert_eq!(s.put_meta_if_absent("x", b"2").unwrap(), b"1");
    s.set_meta("tok:b", Some(b"2")).unwrap();
    s.set_meta("tok:a", Some(b"1")).unwrap();
    s.set_meta("tok%", Some(b"not under the prefix")).unwrap();
    let listed = s.list_meta("tok:").unwrap();
    assert_eq!(
        listed,
        vec![
            ("tok:a".to_owned(), b"1".to_vec()),
            ("tok:b".to_owned(), b"2".to_vec())
        ]
    );
    assert!(s.list_meta("nothing:").unwrap().is_empty());
}

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

/// Lifecycle fields, version flags, shredding, due keys, counters.
pub fn lifecycle_versions_shredding_and_due_keys(s: &dyn Storage) {
    s.create_store(&store("/a")).unwrap();
    let (k, v) = key("/a", "k");
    s.create_key(&k, &v).unwrap();
    for n in 2..=3 {
        s.add_key_version(
            &k.store,
            &k.id,
            &WrappedKeyVersion {
                version: n,
                wrapped: vec![n as u8; 3],
                created_at: 10,
                flag: VersionFlag::Good,
            },
        )
        .unwrap();
    }
    let l = Lifecycle {
        state: KeyState::PreActive,
        activate_at: Some(100),
        deactivate_at: Some(200),
        rotation_period: Some(86_400),
        next_rotation_at: Some(500),
        min_decrypt_version: 2,
        ..Lifecycle::default()
    };
    s.set_key_lifecycle(&k.store, &k.id, &l).unwrap();
    assert_eq!(s.get_key(&k.store, &k.id).unwrap().unwrap().lifecycle, l);
    assert!(s.due_keys(499, 10).unwrap().is_empty());
    assert_eq!(s.due_keys(500, 10).unwrap().len(), 1);

    s.set_version_flag(&k.store, &k.id, 2, VersionFlag::CompromisedAllowed)
        .unwrap();
    assert!(s
        .set_version_flag(&k.store, &k.id, 9, VersionFlag::Good)
        .is_err());
    assert_eq!(
        s.get_key_version(&k.store, &k.id, 2).unwrap().unwrap().flag,
        VersionFlag::CompromisedAllowed
    );
    assert_eq!(s.shred_versions_below(&k.store, &k.id, 2).unwrap(), 1);
    assert_eq!(s.shred_versions_below(&k.store, &k.id, 2).unwrap(), 0);
    let vs = s.list_key_versions(&k.store, &k.id).unwrap();
    assert_eq!(
        vs.iter().map(|v| v.has_material).collect::<Vec<_>>(),
        [false, true, true]
    );
    assert!(s
        .wrapped_items()
        .unwrap()
        .iter()
        .all(|(i, _)| !matches!(i, WrappedItem::KeyVersion { version: 1, .. })));

    s.destroy_key_material(&k.store, &k.id, 1_000).unwrap();
    let d = s.get_key(&k.store, &k.id).unwrap().unwrap();
    assert_eq!(d.lifecycle.state, KeyState::Destroyed);
    assert_eq!(d.lifecycle.destroy_at, Some(1_000));
    assert!(s
        .list_key_versions(&k.store, &k.id)
        .unwrap()
        .iter()
        .all(|v| !v.has_material));
    assert!(s.due_keys(i64::MAX, 10).unwrap().is_empty());

    assert_eq!(s.bump_counter("c").unwrap(), 1);
    assert_eq!(s.bump_counter("c").unwrap(), 2);
    s.set_meta("x", Some(b"1")).unwrap();
    s.set_meta("x", Some(b"2")).unwrap();
    assert_eq!(s.get_meta("x").unwrap().unwrap(), b"2");
    s.set_meta("x", None).unwrap();
    assert!(s.get_meta("x").unwrap().is_none());
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

/// Nodes heartbeat, are listed while fresh, and can be removed.
pub fn nodes_heartbeat_and_expire(s: &dyn Storage) {
    let n = |id: &str, beat: i64, epoch: u64| NodeInfo {
        id: id.into(),
        started_ms: 1,
        heartbeat_ms: beat,
        ack_epoch: epoch,
        lease_ms: 0,
    };
    s.node_heartbeat(&n("a", 1_000, 0)).unwrap();
    s.node_heartbeat(&n("b", 2_000, 0)).unwrap();
    s.node_heartbeat(&n("a", 3_000, 7)).unwrap();
    assert_eq!(s.live_nodes(2_500).unwrap(), vec![n("a", 3_000, 7)]);
    assert_eq!(s.live_nodes(0).unwrap().len(), 2);
    s.remove_node("a").unwrap();
    assert_eq!(s.live_nodes(0).unwrap(), vec![n("b", 2_000, 0)]);
}

/// Fills `s` with one of everything a snapshot holds.
pub fn fill(s: &dyn Storage) {
    s.put_meta_if_absent("root_check", b"rc").unwrap();
    s.create_store(&store("/a")).unwrap();
    let (k, v) = key("/a", "k1");
    s.create_key(&k, &v).unwrap();
    s.add_key_version(
        &k.store,
        &k.id,
        &WrappedKeyVersion {
            version: 2,
            wrapped: vec![7; 40],
            created_at: 5,
            flag: VersionFlag::CompromisedAllowed,
        },
    )
    .unwrap();
    s.set_key_lifecycle(
        &k.store,
        &k.id,
        &Lifecycle {
            deactivate_at: Some(99),
            ..Lifecycle::default()
        },
    )
    .unwrap();
    s.add_credential(&StoredCredential {
        access_key_id: "AAAAAAAAAAAAAAAAAAAA".into(),
        store: k.store.clone(),
        wrapped_secret: vec![9, 0, 255],
        created_at: now(),
    })
    .unwrap();
    s.set_policy("store /a", Some("allow * when kmsOperation = Encrypt"))
        .unwrap();
    s.add_audit_checkpoint(&keyhold_core::AuditCheckpoint {
        chain: "xks".into(),
        kind: "checkpoint".into(),
        seq: 3,
        head: "ab".into(),
        ts_ms: 4,
        mac: "cd".into(),
    })
    .unwrap();
    s.create_object(&object("o1"), b"wrapped").unwrap();
    s.create_object(&granted("o3", "bob", "alice"), b"w3")
        .unwrap();
    let mut gone = object("o2");
    s.create_object(&gone, b"w2").unwrap();
    gone.has_material = false;
    s.update_object(&gone).unwrap();
    s.reserve_count("gcm:/a/k1/1", 65_536).unwrap();
}

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

/// A snapshot of `a` restored into empty `b` reads back the same, and a
/// restore into storage that holds keys is refused.
pub fn snapshot_and_restore(a: &dyn Storage, b: &dyn Storage) {
    fill(a);
    let snap = a.snapshot().unwrap();
    for t in crate::SNAPSHOT_TABLES {
        assert!(snap.count(t.name) > 0, "{} is empty", t.name);
    }
    b.put_meta_if_absent("fresh", b"1").unwrap();
    b.restore(&snap).unwrap();
    assert_eq!(b.snapshot().unwrap(), snap);
    assert!(b.get_meta("fresh").unwrap().is_none());
    let k = b
        .get_key(
            &StorePrefix::parse("/a").unwrap(),
            &KeyId::parse("k1").unwrap(),
        )
        .unwrap()
        .unwrap();
    assert_eq!(k.current_version, 2);
    assert_eq!(k.lifecycle.deactivate_at, Some(99));
    assert_eq!(b.object_material("o2").unwrap(), None);
    // The shared-object index is rebuilt.
    assert_eq!(
        uids(b.list_objects_for("alice", false).unwrap()),
        uids(a.list_objects_for("alice", false).unwrap())
    );
    assert!(uids(b.list_objects_for("alice", false).unwrap()).contains(&"o3".to_owned()));
    assert!(matches!(b.restore(&snap), Err(Error::InvalidState(_))));
    let mut bad = snap.clone();
    bad.tables[0].rows[0].pop();
    assert!(a.restore(&bad).is_err());
}

/// Audit lines are copied once per (chain, sequence number) and read back
/// per chain, in order.
pub fn audit_records_are_shipped_once(s: &dyn Storage) {
    assert_eq!(s.audit_shipped("xks@a").unwrap(), 0);
    let line = |n: u64| (n, format!("{{\"seq\":{n}}}"));
    s.ship_audit("xks@a", &[line(1), line(2)]).unwrap();
    s.ship_audit("xks@a", &[line(2), line(3)]).unwrap();
    s.ship_audit("admin@a", &[line(1)]).unwrap();
    s.ship_audit("xks@b", &[]).unwrap();
    assert_eq!(s.audit_shipped("xks@a").unwrap(), 3);
    let all = s.shipped_audit().unwrap();
    assert_eq!(
        all,
        vec![
            ("admin@a".to_owned(), vec![line(1).1]),
            ("xks@a".to_owned(), vec![line(1).1, line(2).1, line(3).1]),
        ]
    );
}

/// A sealer for tests: a keyed hash (not a MAC worth the name; the
/// service's is HMAC-SHA256), counting what it refused.
#[derive(Default)]
pub struct TestSealer {
    pub refused: std::sync::Mutex<Vec<String>>,
}

impl crate::RowSealer for TestSealer {
    fn seal(&self, row: &[u8]) -> Vec<u8> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        b"test seal key".hash(&mut h);
        row.hash(&mut h);
        h.finish().to_be_bytes().to_vec()
    }
    fn verify(&self, row: &[u8], seal: &[u8]) -> bool {
        self.seal(row) == seal
    }
    fn refused(&self, what: &str) {
        self.refused.lock().unwrap().push(what.to_owned());
    }
}

/// Storage is untrusted: once a sealer is installed, rows written
/// outside Keyhold (`sql` runs a statement straight on the database) are
/// refused on every read and every change, never obeyed; rows from before
/// sealing are sealed once, as they stood.
pub fn sealed_rows_refuse_changes_made_outside(s: &dyn Storage, sql: &dyn Fn(&str)) {
    // A row from before sealing, then sealed as it stood.
    s.create_store(&store("/a")).unwrap();
    let sealer = Arc::new(TestSealer::default());
    s.set_row_sealer(sealer.clone());
    assert!(!s.any_sealed_rows().unwrap());
    assert!(matches!(
        s.get_store(&StorePrefix::parse("/a").unwrap()),
        Err(Error::Integrity(_))
    ));
    assert_eq!(s.seal_unsealed_rows().unwrap(), 1);
    assert!(s.any_sealed_rows().unwrap());
    let a = StorePrefix::parse("/a").unwrap();
    assert!(s.get_store(&a).unwrap().is_some());
    let (k, k1) = key("/a", "k");
    let (j, j1) = key("/a", "j");
    s.create_keys(&[(k.clone(), k1), (j.clone(), j1)]).unwrap();
    s.set_key_status(&a, &k.id, Status::Disabled).unwrap();
    s.set_version_flag(&a, &j.id, 1, VersionFlag::Compromised)
        .unwrap();
    s.set_policy("store /a", Some("deny all")).unwrap();
    s.create_object(&granted("o1", "alice", "bob"), b"w")
        .unwrap();
    // Genuine rows read back.
    assert_eq!(
        s.get_key(&a, &k.id).unwrap().unwrap().status,
        Status::Disabled
    );
    assert_eq!(s.list_keys(&a, None, 10).unwrap().len(), 2);
    assert_eq!(
        s.get_policy("store /a").unwrap().as_deref(),
        Some("deny all")
    );
    assert_eq!(s.list_policies().unwrap().len(), 1);
    assert_eq!(s.get_object("o1").unwrap().unwrap().owner, "alice");
    assert_eq!(
        s.get_key_version(&a, &j.id, 1).unwrap().unwrap().flag,
        VersionFlag::Compromised
    );
    assert!(sealer.refused.lock().unwrap().len() == 1);

    // A disabled key enabled outside: refused on read, on change, in lists.
    sql("UPDATE keys SET status = 'ENABLED' WHERE key_id = 'k'");
    assert!(matches!(s.get_key(&a, &k.id), Err(Error::Integrity(_))));
    assert!(matches!(
        s.set_key_usage(&a, &k.id, Usage::BOTH),
        Err(Error::Integrity(_))
    ));
    assert_eq!(s.list_keys(&a, None, 10).unwrap().len(), 1);
    // A compromised version made good outside.
    sql("UPDATE key_versions SET flag = 0 WHERE key_id = 'j'");
    assert!(matches!(
        s.get_key_version(&a, &j.id, 1),
        Err(Error::Integrity(_))
    ));
    assert!(matches!(
        s.set_version_flag(&a, &j.id, 1, VersionFlag::Good),
        Err(Error::Integrity(_))
    ));
    assert!(s.list_key_versions(&a, &j.id).unwrap().is_empty());
    // A key row made up outside.
    sql(
        "INSERT INTO keys(store, key_id, status, usage, current_version, created_at, updated_at) \
         VALUES ('/a', 'forged', 'ENABLED', 3, 1, 0, 0)",
    );
    assert!(matches!(
        s.get_key(&a, &KeyId::parse("forged").unwrap()),
        Err(Error::Integrity(_))
    ));
    // A policy deleted outside, or one made up.
    sql("DELETE FROM policies WHERE scope = 'store /a'");
    assert!(matches!(s.get_policy("store /a"), Err(Error::Integrity(_))));
    assert!(matches!(s.list_policies(), Err(Error::Integrity(_))));
    // Setting it again through Keyhold seals the set again.
    s.set_policy("store /a", Some("deny all")).unwrap();
    assert_eq!(s.list_policies().unwrap().len(), 1);
    sql("INSERT INTO policies(scope, body, updated_at) VALUES ('key /a j', 'allow all', 0)");
    assert!(matches!(s.get_policy("key /a j"), Err(Error::Integrity(_))));
    sql("DELETE FROM policies WHERE scope = 'key /a j'");
    assert_eq!(s.list_policies().unwrap().len(), 1);
    // An object taken over outside: refused, and missing from Locate.
    sql("UPDATE objects SET owner = 'mallory' WHERE uid = 'o1'");
    assert!(matches!(s.get_object("o1"), Err(Error::Integrity(_))));
    assert!(s.list_objects_for("mallory", false).unwrap().is_empty());
    assert!(s.list_objects().unwrap().is_empty());
    // A store enabled outside.
    s.set_store_status(&a, Status::Disabled).unwrap();
    sql("UPDATE stores SET status = 'ENABLED' WHERE prefix = '/a'");
    assert!(matches!(s.get_store(&a), Err(Error::Integrity(_))));
    assert!(s.list_stores().unwrap().is_empty());
    // Rows changed outside stay refused: sealing again leaves them alone.
    assert_eq!(
        s.seal_unsealed_rows().unwrap(),
        1,
        "only the made-up key row has no seal"
    );
    assert!(matches!(s.get_key(&a, &k.id), Err(Error::Integrity(_))));
    // Destroying only takes power away: it works on a refused key, and
    // leaves a row that says so.
    s.destroy_key_material(&a, &k.id, now()).unwrap();
    let gone = s.get_key(&a, &k.id).unwrap().unwrap();
    assert_eq!(gone.lifecycle.state, KeyState::Destroyed);
    assert!(sealer.refused.lock().unwrap().len() > 10);
}

/// A restore goes into a new database that a key service has already
/// sealed (its empty set of policies is a sealed row), and takes backups
/// made before sealed rows (their rows have no seal column).
pub fn restore_into_a_sealed_database_and_from_old_backups(
    a: &dyn Storage,
    b: &dyn Storage,
    c: &dyn Storage,
) {
    fill(a);
    let snap = a.snapshot().unwrap();
    b.set_row_sealer(Arc::new(TestSealer::default()));
    b.seal_unsealed_rows().unwrap();
    b.restore(&snap).unwrap();
    assert_eq!(b.snapshot().unwrap(), snap);
    // Rows from the backup are sealed as they stand, once.
    assert!(b.seal_unsealed_rows().unwrap() > 0);
    assert_eq!(
        b.list_keys(&StorePrefix::parse("/a").unwrap(), None, 10)
            .unwrap()
            .len(),
        1
    );
    // A backup from before sealed rows: no seal column.
    let mut old = snap.clone();
    for t in &mut old.tables {
        let spec = crate::SNAPSHOT_TABLES
            .iter()
            .find(|s| s.name == t.name)
            .unwrap();
        if spec.columns.last() == Some(&"seal") {
            for r in &mut t.rows {
                r.pop();
            }
        }
    }
    c.restore(&old).unwrap();
    assert_eq!(c.snapshot().unwrap(), snap);
}
