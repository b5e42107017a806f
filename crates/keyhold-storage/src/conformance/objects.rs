//! ObjectRepo: KMIP managed objects, their revisions, grants and erasure.

use super::*;

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
