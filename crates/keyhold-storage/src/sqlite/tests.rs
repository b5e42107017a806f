use super::*;
use crate::conformance as c;

#[test]
fn store_and_key_lifecycle() {
    c::store_and_key_lifecycle(&SqliteStorage::open_in_memory().unwrap());
}

/// Purges asked for at the same moment share truncating checkpoints,
/// and each leaves the WAL empty of everything committed before it,
/// while readers and writers carry on beside them.
#[test]
fn concurrent_purges_empty_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    let s = Arc::new(SqliteStorage::open(&path).unwrap());
    let wal = path.with_extension("db-wal");
    std::thread::scope(|scope| {
        for t in 0..8 {
            let s = s.clone();
            scope.spawn(move || {
                for i in 0..20 {
                    s.set_meta(&format!("m{t}-{i}"), Some(&[7u8; 3000]))
                        .unwrap();
                    s.list_meta("m").unwrap();
                    s.purge_erased_copies().unwrap();
                }
            });
        }
    });
    s.set_meta("last", Some(b"x")).unwrap();
    assert!(std::fs::metadata(&wal).unwrap().len() > 0);
    s.purge_erased_copies().unwrap();
    assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0);
    let g = s.purges.state.lock();
    assert!(g.finished <= 161 && g.finished >= 1, "{}", g.finished);
    assert_eq!(s.list_meta("m").unwrap().len(), 160);
}

#[test]
fn audit_checkpoints_do_not_move_the_change_token() {
    let s = SqliteStorage::open_in_memory().unwrap();
    let t0 = s.change_token().unwrap();
    for seq in 1..5 {
        s.add_audit_checkpoint(&keyhold_core::AuditCheckpoint {
            chain: "xks".into(),
            kind: "checkpoint".into(),
            seq,
            head: "00".repeat(32),
            ts_ms: 1,
            mac: "11".repeat(32),
        })
        .unwrap();
    }
    assert_eq!(s.change_token().unwrap(), t0, "the server's caches stay");
    s.set_meta("x", Some(b"1")).unwrap();
    assert_ne!(s.change_token().unwrap(), t0, "a real change still shows");
}

#[test]
fn wrapped_items_and_compare_and_swap() {
    c::wrapped_items_and_compare_and_swap(&SqliteStorage::open_in_memory().unwrap());
}

#[test]
fn objects_round_trip_conflict_and_erase() {
    c::objects_round_trip_conflict_and_erase(&SqliteStorage::open_in_memory().unwrap());
}

#[test]
fn objects_for_an_identity() {
    c::objects_for_an_identity(&SqliteStorage::open_in_memory().unwrap());
}

/// Locate reads through the indexes, not the whole table.
#[test]
fn objects_for_an_identity_use_the_indexes() {
    let s = SqliteStorage::open_in_memory().unwrap();
    let conn = s.writer();
    for sql in [
        "SELECT uid FROM objects WHERE (owner = ?1 AND state < 5) OR (shared = 1 AND state < 5) ORDER BY created_ms, uid",
        "SELECT uid FROM objects WHERE owner = ?1 OR shared = 1 ORDER BY created_ms, uid",
    ] {
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map(["x"], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let plan = plan.join("; ");
        assert!(plan.contains("objects_owner"), "{plan}");
        assert!(plan.contains("objects_shared"), "{plan}");
        assert!(!plan.contains("SCAN objects"), "{plan}");
    }
}

/// A KMIP object with a typical ~1 KB of attributes costs about that on
/// disk: rows stay inline in their pages (they took an overflow page
/// each, ~4.7 KB, before objects left WITHOUT ROWID).
#[test]
fn objects_cost_about_their_size_on_disk() {
    let d = tempfile::tempdir().unwrap();
    let s = SqliteStorage::open(&d.path().join("k.db")).unwrap();
    let pages = |s: &SqliteStorage| -> i64 {
        s.writer()
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap()
    };
    let before = pages(&s);
    let n = 500;
    for i in 0..n {
        let mut o = crate::conformance::object(&format!("{i:036}"));
        for a in 0..10 {
            o.attrs.push(keyhold_core::ObjectAttr {
                name: format!("Attribute number {a}"),
                value: keyhold_core::AttrValue::Text("x".repeat(40)),
            });
        }
        assert!(serde_json::to_string(&o.attrs).unwrap().len() > 950);
        s.create_object(&o, &[9u8; 72]).unwrap();
    }
    let per_object = (pages(&s) - before) * 4096 / n;
    assert!(per_object < 2_000, "{per_object} bytes per object");
}

#[test]
fn grouped_writes_from_many_threads_all_land() {
    let d = tempfile::tempdir().unwrap();
    c::writes_from_many_threads_all_land(Arc::new(
        SqliteStorage::open(&d.path().join("db")).unwrap(),
    ));
}

/// The writer does not checkpoint inside its commits; the checkpoint
/// thread and the writer's finishing checkpoint must still let the WAL
/// start over under constant writes and reads (without them it grows by
/// every page written: here to about 17 MB, against about 4 MB).
#[test]
fn the_wal_stays_bounded_under_constant_writes_and_reads() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("db");
    let s = Arc::new(SqliteStorage::open(&path).unwrap());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (s, stop) = (s.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = s.get_object("w0-0").unwrap();
            }
        })
    };
    let writers: Vec<_> = (0..32)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                let pad = "x".repeat(3000);
                for i in 0..100 {
                    let mut o = c::object(&format!("w{t}-{i}"));
                    o.attrs[0].value = keyhold_core::AttrValue::Text(pad.clone());
                    s.create_object(&o, &[7; 32]).unwrap();
                    s.delete_object(&o.uid).unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    reader.join().unwrap();
    let wal = std::fs::metadata(d.path().join("db-wal")).unwrap().len();
    assert!(wal < 10 << 20, "the WAL grew to {wal} bytes");
    assert!(s.list_objects().unwrap().is_empty());
}

#[test]
fn credentials_and_meta() {
    c::credentials_and_meta(&SqliteStorage::open_in_memory().unwrap());
}

#[test]
fn other_connection_changes_are_seen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    c::other_handle_changes_are_seen(
        &SqliteStorage::open(&path).unwrap(),
        &SqliteStorage::open(&path).unwrap(),
    );
}

#[test]
fn lifecycle_versions_shredding_and_due_keys() {
    c::lifecycle_versions_shredding_and_due_keys(&SqliteStorage::open_in_memory().unwrap());
}

#[test]
fn nodes_heartbeat_and_expire() {
    c::nodes_heartbeat_and_expire(&SqliteStorage::open_in_memory().unwrap());
}

#[test]
fn reservations_only_grow() {
    c::reservations_only_grow(Arc::new(SqliteStorage::open_in_memory().unwrap()));
}

#[test]
fn audit_records_are_shipped_once() {
    c::audit_records_are_shipped_once(&SqliteStorage::open_in_memory().unwrap());
}

#[test]
fn sealed_rows_refuse_changes_made_outside() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("k.db");
    let s = SqliteStorage::open(&path).unwrap();
    let outside = Connection::open(&path).unwrap();
    c::sealed_rows_refuse_changes_made_outside(&s, &|sql| {
        outside.execute_batch(sql).unwrap();
    });
}

#[test]
fn restore_into_a_sealed_database_and_from_old_backups() {
    c::restore_into_a_sealed_database_and_from_old_backups(
        &SqliteStorage::open_in_memory().unwrap(),
        &SqliteStorage::open_in_memory().unwrap(),
        &SqliteStorage::open_in_memory().unwrap(),
    );
}

#[test]
fn policies_set_replace_and_remove() {
    c::policies_set_replace_and_remove(&SqliteStorage::open_in_memory().unwrap());
}

#[test]
fn snapshot_and_restore() {
    let d = tempfile::tempdir().unwrap();
    c::snapshot_and_restore(
        &SqliteStorage::open(&d.path().join("a")).unwrap(),
        &SqliteStorage::open(&d.path().join("b")).unwrap(),
    );
}
