//! NodeRegistry: heartbeats and expiry.

use super::*;

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
