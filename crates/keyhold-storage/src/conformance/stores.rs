//! StoreRepo: key stores and their credentials (with the meta values they sit beside).

use super::*;

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
