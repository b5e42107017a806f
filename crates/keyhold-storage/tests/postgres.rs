//! The storage conformance suite against a real PostgreSQL cluster (one
//! throwaway cluster for the file, one database per test), plus what only
//! a database server has: change notification between nodes, and errors
//! while it is unreachable.

use keyhold_storage::conformance as c;
use keyhold_storage::prelude::*;
use keyhold_storage::{PgOptions, PostgresStorage};
use keyhold_testkit::PgCluster;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A new, empty database on `pg`.
fn fresh_url(pg: &PgCluster) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    pg.create_database(&format!("t{}", N.fetch_add(1, Ordering::SeqCst)))
}

fn open(url: &str) -> PostgresStorage {
    PostgresStorage::connect(url, PgOptions::default()).expect("connect")
}

/// Every conformance check, each on a database of its own, on one
/// throwaway cluster (stopped when the test ends, pass or fail).
#[test]
fn conformance_suite_on_postgres() {
    let pg = PgCluster::start(&[("fsync", "off")]);
    let fresh = || open(&fresh_url(&pg));
    c::store_and_key_lifecycle(&fresh());
    c::wrapped_items_and_compare_and_swap(&fresh());
    c::objects_round_trip_conflict_and_erase(&fresh());
    c::objects_for_an_identity(&fresh());
    c::writes_from_many_threads_all_land(Arc::new(fresh()));
    c::credentials_and_meta(&fresh());
    let url = fresh_url(&pg);
    c::other_handle_changes_are_seen(&open(&url), &open(&url));
    c::lifecycle_versions_shredding_and_due_keys(&fresh());
    c::nodes_heartbeat_and_expire(&fresh());
    c::snapshot_and_restore(&fresh(), &fresh());
    c::restore_into_a_sealed_database_and_from_old_backups(&fresh(), &fresh(), &fresh());
    c::audit_records_are_shipped_once(&fresh());
    c::reservations_only_grow(Arc::new(fresh()));
    c::policies_set_replace_and_remove(&fresh());
    let url = pg.create_database("sealed");
    c::sealed_rows_refuse_changes_made_outside(&open(&url), &|sql| {
        pg.psql("sealed", sql);
    });

    // Snapshots move between the backends unchanged: SQLite to
    // PostgreSQL and back again.
    let d = tempfile::tempdir().unwrap();
    let lite = keyhold_storage::SqliteStorage::open(&d.path().join("a.db")).unwrap();
    c::fill(&lite);
    let snap = lite.snapshot().unwrap();
    let pgs = fresh();
    pgs.restore(&snap).unwrap();
    assert_eq!(pgs.snapshot().unwrap(), snap);
    let back = keyhold_storage::SqliteStorage::open(&d.path().join("b.db")).unwrap();
    back.restore(&pgs.snapshot().unwrap()).unwrap();
    assert_eq!(back.snapshot().unwrap(), snap);

    // Several nodes starting at once migrate the schema once.
    let url = fresh_url(&pg);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || open(&url).ping().unwrap())
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }

    // Calls from inside an async runtime do not panic, nor does a drop.
    let s = Arc::new(fresh());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let s2 = s.clone();
    rt.block_on(async move {
        s2.ping().unwrap();
        assert!(s2.get_meta("nothing").unwrap().is_none());
    });
    rt.block_on(async move { drop(s) });
}

#[test]
fn unreachable_database_is_a_dependency_timeout() {
    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let opts = PgOptions {
        op_timeout: Duration::from_millis(500),
        ..PgOptions::default()
    };
    let started = std::time::Instant::now();
    let e = PostgresStorage::connect(&format!("postgres://keyhold@127.0.0.1:{port}/x"), opts)
        .err()
        .expect("no database there");
    assert!(
        matches!(e, keyhold_core::Error::DependencyTimeout(_)),
        "{e:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    // A bad URL is named as such (and its password is not repeated).
    let e = PostgresStorage::connect(
        "postgres://u:secret@127.0.0.1:notaport/x",
        PgOptions::default(),
    )
    .err()
    .unwrap();
    assert!(!e.to_string().contains("secret"), "{e}");
}
