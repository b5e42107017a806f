use super::*;

#[test]
fn change_log_names_what_changed_or_says_it_cannot() {
    let c = Changes::default();
    assert_eq!(c.since(0), Some(vec![]));
    c.record(Changes::parse("k:/a\u{1f}k1"));
    c.record(Changes::parse("o:uid-1"));
    assert_eq!(
        c.since(0),
        Some(vec![
            ChangeScope::Key {
                store: "/a".into(),
                id: "k1".into()
            },
            ChangeScope::Object("uid-1".into())
        ])
    );
    assert_eq!(c.since(1), Some(vec![ChangeScope::Object("uid-1".into())]));
    c.record(Changes::parse("*"));
    c.record(Changes::parse("k:no separator"));
    assert_eq!(c.since(2), Some(vec![ChangeScope::All, ChangeScope::All]));
    for _ in 0..CHANGE_LOG_LEN {
        c.bump();
    }
    // Too far behind: the log no longer covers it.
    assert_eq!(c.since(1), None);
    assert!(c.since(c.token.load(Ordering::SeqCst) - 1).is_some());
}
