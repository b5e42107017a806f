//! Maintenance: wrapped items, compare-and-swap, snapshots and restores.

use super::*;

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

/// A snapshot of `a` restored into empty `b` reads back the same, and a
/// restore into storage that holds keys is refused.
pub fn snapshot_and_restore(a: &dyn Storage, b: &dyn Storage) {
    fill(a);
    let (mut ec, v) = key("/a", "ec");
    ec.key_type = keyhold_core::KeyType::EcP384;
    ec.usage = Usage::SIGN_VERIFY;
    a.create_key(&ec, &v).unwrap();
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
    assert_eq!(b.get_key(&ec.store, &ec.id).unwrap().unwrap(), ec);
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

/// A restore goes into a new database that a key service has already
/// sealed (its empty set of policies is a sealed row), and takes backups
/// made before sealed rows and key types (their rows end before those
/// columns).
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
    // A backup from before sealed rows and key types: no seal or
    // key_type column; its keys are AES-256.
    let mut old = snap.clone();
    for t in &mut old.tables {
        let spec = crate::SNAPSHOT_TABLES
            .iter()
            .find(|s| s.name == t.name)
            .unwrap();
        let added = spec
            .columns
            .iter()
            .rev()
            .take_while(|c| ["seal", "key_type"].contains(c))
            .count();
        for r in &mut t.rows {
            r.truncate(r.len() - added);
        }
    }
    assert!(old
        .tables
        .iter()
        .any(|t| t.name == "keys" && t.rows[0].len() == 16));
    c.restore(&old).unwrap();
    assert_eq!(c.snapshot().unwrap(), snap);
}
