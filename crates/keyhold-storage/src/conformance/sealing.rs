//! RowSealing: rows changed outside Keyhold are refused.

use super::*;

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

    keys_and_versions_changed_outside_are_refused(s, sql, &k, &j);
    policies_objects_and_stores_changed_outside_are_refused(s, sql);
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

/// Keys and versions changed or made up outside Keyhold are refused.
fn keys_and_versions_changed_outside_are_refused(
    s: &dyn Storage,
    sql: &dyn Fn(&str),
    k: &Key,
    j: &Key,
) {
    let a = StorePrefix::parse("/a").unwrap();
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
    // A key's type changed outside.
    sql("UPDATE keys SET key_type = 'RSA_2048' WHERE key_id = 'j'");
    assert!(matches!(s.get_key(&a, &j.id), Err(Error::Integrity(_))));
    // A key row made up outside.
    sql(
        "INSERT INTO keys(store, key_id, status, usage, current_version, created_at, updated_at) \
         VALUES ('/a', 'forged', 'ENABLED', 3, 1, 0, 0)",
    );
    assert!(matches!(
        s.get_key(&a, &KeyId::parse("forged").unwrap()),
        Err(Error::Integrity(_))
    ));
}

/// Policies, objects and stores changed outside Keyhold are refused.
fn policies_objects_and_stores_changed_outside_are_refused(s: &dyn Storage, sql: &dyn Fn(&str)) {
    let a = StorePrefix::parse("/a").unwrap();
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
}
