//! PolicyStore: setting, replacing and removing a scope's policy.

use super::*;

/// A scope's policy is set, replaced and removed, each change says whether
/// a row changed, and the list holds exactly the scopes with a policy.
pub fn policies_set_replace_and_remove(s: &dyn Storage) {
    s.create_store(&store("/a")).unwrap();
    assert_eq!(s.get_policy("store /a").unwrap(), None);
    assert!(s.set_policy("store /a", Some("deny all")).unwrap());
    assert!(s
        .set_policy("key /a k1", Some("allow * when kmsOperation = Encrypt"))
        .unwrap());
    assert!(s.set_policy("store /a", Some("allow all")).unwrap());
    assert_eq!(
        s.get_policy("store /a").unwrap().as_deref(),
        Some("allow all")
    );
    let scopes: Vec<String> = s
        .list_policies()
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(scopes, ["key /a k1", "store /a"]);
    assert!(s.set_policy("store /a", None).unwrap());
    assert!(
        !s.set_policy("store /a", None).unwrap(),
        "nothing left to remove"
    );
    assert_eq!(s.get_policy("store /a").unwrap(), None);
    assert_eq!(s.list_policies().unwrap().len(), 1);
}
