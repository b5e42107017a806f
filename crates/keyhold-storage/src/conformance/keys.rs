//! KeyRepo: keys, their versions, lifecycle, shredding and due keys.

use super::*;

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
    assert!(s.disabled_keys(10).unwrap().is_empty());
    s.set_key_status(&k.store, &k.id, Status::Disabled).unwrap();
    assert_eq!(
        s.get_key(&k.store, &k.id).unwrap().unwrap().status,
        Status::Disabled
    );
    let disabled = s.disabled_keys(10).unwrap();
    assert_eq!(disabled.len(), 1);
    assert_eq!(disabled[0].id, k.id);
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
    // Key types and the signing usages are kept.
    for (i, t) in keyhold_core::KeyType::ALL.into_iter().enumerate() {
        let (mut k, v) = key("/a", &format!("typed-{i}"));
        k.key_type = t;
        k.usage = t.default_usage().unwrap_or(Usage::SIGN_VERIFY);
        s.create_key(&k, &v).unwrap();
        assert_eq!(s.get_key(&k.store, &k.id).unwrap().unwrap(), k);
    }
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
