//! The storage conformance suite against a real PostgreSQL cluster (one
//! throwaway cluster for the file, one database per test), plus what only
//! a database server has: change notification between nodes, and errors
//! while it is unreachable.

use keyhold_storage::conformance as c;
use keyhold_storage::{PgOptions, PostgresStorage, Storage};
use keyhold_testpg::PgCluster;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

fn cluster() -> &'static PgCluster {
    static C: OnceLock<PgCluster> = OnceLock::new();
    C.get_or_init(|| PgCluster::start(&[("fsync", "off")]))
}

/// A new, empty database on the shared cluster.
fn fresh_url() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "t{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    cluster().create_database(&name)
}

fn open(url: &str) -> PostgresStorage {
    PostgresStorage::connect(url, PgOptions::default()).expect("connect")
}

fn fresh() -> PostgresStorage {
    open(&fresh_url())
}

#[test]
fn store_and_key_lifecycle() {
    c::store_and_key_lifecycle(&fresh());
}

#[test]
fn wrapped_items_and_compare_and_swap() {
    c::wrapped_items_and_compare_and_swap(&fresh());
}

#[test]
fn objects_round_trip_conflict_and_erase() {
    c::objects_round_trip_conflict_and_erase(&fresh());
}

#[test]
fn writes_from_many_threads_all_land() {
    c::writes_from_many_threads_all_land(Arc::new(fresh()));
}

#[test]
fn credentials_and_meta() {
    c::credentials_and_meta(&fresh());
}

#[test]
fn other_node_changes_are_seen() {
    let url = fresh_url();
    c::other_handle_changes_are_seen(&open(&url), &open(&url));
}

#[test]
fn lifecycle_versions_shredding_and_due_keys() {
    c::lifecycle_versions_shredding_and_due_keys(&fresh());
}

#[test]
fn nodes_heartbeat_and_expire() {
    c::nodes_heartbeat_and_expire(&fresh());
}

#[test]
fn snapshot_and_restore() {
    c::snapshot_and_restore(&fresh(), &fresh());
}

#[test]
fn snapshots_move_between_backends() {
    let d = tempfile::tempdir().unwrap();
    let lite = keyhold_storage::SqliteStorage::open(&d.path().join("a.db")).unwrap();
    c::fill(&lite);
    let snap = lite.snapshot().unwrap();
    // SQLite to PostgreSQL and back again: nothing changes on the way.
    let pg = fresh();
    pg.restore(&snap).unwrap();
    assert_eq!(pg.snapshot().unwrap(), snap);
    let back = keyhold_storage::SqliteStorage::open(&d.path().join("b.db")).unwrap();
    back.restore(&pg.snapshot().unwrap()).unwrap();
    assert_eq!(back.snapshot().unwrap(), snap);
}

#[test]
fn several_nodes_migrate_at_once() {
    let url = fresh_url();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || open(&url).ping().unwrap())
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
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

#[test]
fn calls_from_an_async_runtime_do_not_panic() {
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
    // Dropping the storage inside a runtime is fine too.
    rt.block_on(async move { drop(s) });
}
