//! AuditStore: shipping audit records once.

use super::*;

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
