use super::*;
use keyhold_root::SoftwareRoot;
use keyhold_storage::SqliteStorage;

fn service() -> (tempfile::TempDir, KeyService) {
    let dir = tempfile::tempdir().unwrap();
    let root = SoftwareRoot::create(&dir.path().join("root.key"), None).unwrap();
    let st = SqliteStorage::open(&dir.path().join("k.db")).unwrap();
    let s = KeyService::open(Arc::new(st), Arc::new(root)).unwrap();
    (dir, s)
}

/// A write drops only what it touched from this process's caches: what
/// else is cached keeps serving (through a database outage too).
#[test]
fn writes_drop_only_what_they_touched() {
    let (_d, s) = service();
    let (a, b) = (
        StorePrefix::parse("/a").unwrap(),
        StorePrefix::parse("/b").unwrap(),
    );
    for p in [&a, &b] {
        s.create_store(p, "").unwrap();
        for k in ["k1", "k2"] {
            s.create_key(p, &KeyId::parse(k).unwrap(), Usage::BOTH)
                .unwrap();
        }
    }
    let akid = s.add_credential(&b).unwrap().access_key_id;
    let warm = |s: &KeyService| {
        for p in [&a, &b] {
            s.store_by_prefix(p.as_str()).unwrap();
            for k in ["k1", "k2"] {
                s.key_handle(p, k).unwrap();
            }
        }
        s.credential(&akid).unwrap();
    };
    let cached = |s: &KeyService, p: &StorePrefix, k: &str| {
        s.keys.get(&(p.as_str().to_owned(), k.to_owned())).is_some()
    };
    warm(&s);
    s.set_key_status(&a, &KeyId::parse("k1").unwrap(), Status::Disabled)
        .unwrap();
    assert!(!cached(&s, &a, "k1"));
    assert!(cached(&s, &a, "k2") && cached(&s, &b, "k1"));
    assert!(s.creds.get(&akid).is_some());

    warm(&s);
    s.set_store_status(&a, Status::Disabled).unwrap();
    assert!(!cached(&s, &a, "k1") && !cached(&s, &a, "k2"));
    assert!(cached(&s, &b, "k1") && cached(&s, &b, "k2"));
    assert!(s.creds.get(&akid).is_some() && s.stores.get(b.as_str()).is_some());

    warm(&s);
    s.set_policy(
        &crate::policy::PolicyScope::Key(b.clone(), "k2".into()),
        "[[rule]]\nname = \"r\"\neffect = \"deny\"\nvia_service = [\"s3\"]\n",
    )
    .unwrap();
    assert!(!cached(&s, &b, "k2"));
    assert!(cached(&s, &b, "k1") && cached(&s, &a, "k1"));

    s.remove_credential(&b, &akid).unwrap();
    assert!(s.creds.get(&akid).is_none());
    assert!(s.credential(&akid).unwrap().is_none());
}

#[test]
fn lifecycle_and_usage() {
    let (_d, s) = service();
    let p = StorePrefix::parse("/t").unwrap();
    s.create_store(&p, "").unwrap();
    let id = KeyId::parse("k1").unwrap();
    s.create_key(&p, &id, Usage::BOTH).unwrap();
    let h = s.key_handle(&p, "k1").unwrap();
    s.authorize(&h, Operation::Encrypt).unwrap();
    let (v, k) = h.current().unwrap();
    assert_eq!(v, 1);
    let mut buf = b"data".to_vec();
    let (iv, tag) = k.seal(b"", &mut buf).unwrap();

    s.rotate_key(&p, &id).unwrap();
    let h2 = s.key_handle(&p, "k1").unwrap();
    assert_eq!(h2.current().unwrap().0, 2);
    let (old, _) = s.key_version(&h2, 1).unwrap();
    assert_eq!(old.open(&iv, b"", &buf, &tag).unwrap().expose(), b"data");
    assert!(matches!(
        s.key_version(&h2, 3),
        Err(Error::InvalidCiphertext)
    ));
    assert!(matches!(
        s.key_version(&h2, 0),
        Err(Error::InvalidCiphertext)
    ));

    s.set_key_status(&p, &id, Status::Disabled).unwrap();
    let h3 = s.key_handle(&p, "k1").unwrap();
    assert!(matches!(
        s.authorize(&h3, Operation::Encrypt),
        Err(Error::InvalidState(_))
    ));
    s.authorize(&h3, Operation::Metadata).unwrap();

    s.set_key_status(&p, &id, Status::Enabled).unwrap();
    s.set_key_usage(&p, &id, Usage::parse("DECRYPT").unwrap())
        .unwrap();
    let h4 = s.key_handle(&p, "k1").unwrap();
    assert!(matches!(
        s.authorize(&h4, Operation::Encrypt),
        Err(Error::KeyUsage(_))
    ));
    s.authorize(&h4, Operation::Decrypt).unwrap();

    s.set_store_status(&p, Status::Disabled).unwrap();
    let h5 = s.key_handle(&p, "k1").unwrap();
    assert!(matches!(
        s.authorize(&h5, Operation::Decrypt),
        Err(Error::InvalidState(_))
    ));
    assert!(matches!(
        s.key_handle(&p, "nope"),
        Err(Error::KeyNotFound { .. })
    ));
    assert!(matches!(
        s.key_handle(&p, "bad/id"),
        Err(Error::KeyNotFound { .. })
    ));
}

#[test]
fn credentials() {
    let (_d, s) = service();
    let p = StorePrefix::parse("/t").unwrap();
    s.create_store(&p, "").unwrap();
    let c1 = s.add_credential(&p).unwrap();
    let c2 = s.add_credential(&p).unwrap();
    validate_access_key_id(&c1.access_key_id).unwrap();
    validate_secret_access_key(std::str::from_utf8(c1.secret_access_key.expose()).unwrap())
        .unwrap();
    assert_eq!(s.list_credentials(&p).unwrap().len(), 2);
    let e = s.credential(&c2.access_key_id).unwrap().unwrap();
    assert_eq!(e.secret.expose(), c2.secret_access_key.expose());
    s.remove_credential(&p, &c1.access_key_id).unwrap();
    assert!(s.credential(&c1.access_key_id).unwrap().is_none());
    assert!(s.credential("not-an-akid").unwrap().is_none());
    assert!(s
        .import_credential(&p, "SHORT", &SecretBytes::new(vec![b'a'; 44]))
        .is_err());
}

#[test]
fn changes_by_another_process_invalidate() {
    let dir = tempfile::tempdir().unwrap();
    let root_path = dir.path().join("root.key");
    let db = dir.path().join("k.db");
    SoftwareRoot::create(&root_path, None).unwrap();
    let open = || {
        KeyService::open(
            Arc::new(SqliteStorage::open(&db).unwrap()),
            Arc::new(SoftwareRoot::load(&root_path, None).unwrap()),
        )
        .unwrap()
    };
    let server = open();
    let admin = open();
    let p = StorePrefix::parse("/t").unwrap();
    admin.create_store(&p, "").unwrap();
    let id = KeyId::parse("k").unwrap();
    admin.create_key(&p, &id, Usage::BOTH).unwrap();
    server.refresh().unwrap();
    server
        .key_handle(&p, "k")
        .unwrap()
        .check(Operation::Encrypt, now())
        .unwrap();
    admin.set_key_status(&p, &id, Status::Disabled).unwrap();
    assert!(server.refresh().unwrap());
    assert!(server
        .key_handle(&p, "k")
        .unwrap()
        .check(Operation::Encrypt, now())
        .is_err());
}

#[test]
fn wrong_root_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("k.db");
    let r1 = SoftwareRoot::create(&dir.path().join("a"), None).unwrap();
    KeyService::open(Arc::new(SqliteStorage::open(&db).unwrap()), Arc::new(r1)).unwrap();
    let r2 = SoftwareRoot::create(&dir.path().join("b"), None).unwrap();
    assert!(KeyService::open(Arc::new(SqliteStorage::open(&db).unwrap()), Arc::new(r2)).is_err());
}

#[test]
fn health_is_active() {
    let (_d, s) = service();
    assert_eq!(s.health().status(), HealthStatus::Active);
}
