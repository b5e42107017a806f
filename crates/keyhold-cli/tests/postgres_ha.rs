//! Several nodes on one PostgreSQL database, failover to a synchronous
//! replica, and backup/restore between backends: the real binary, a real
//! PostgreSQL (throwaway clusters on loopback ports) and curl --aws-sigv4.

mod common;

use common::*;
use keyhold_testkit::PgCluster;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

fn health(server: &Server, cred: &Cred) -> Value {
    let r = Curl::new(server, cred).send(
        "/demo/kms/xks/v1/health",
        &json!({"requestMetadata": {"kmsRequestId": "h", "kmsOperation": "KmsHealthCheck"}})
            .to_string(),
    );
    assert_eq!(r.status, 200, "{r:?}");
    r.json()
}

/// A node on the database at `url` that shares `root` (another node's
/// root.key), or the first node (a new root) when `root` is None.
fn node(url: &str, root: Option<&Path>) -> Env {
    let mut args = vec!["--storage-url", url];
    let root = root.map(|r| r.to_string_lossy().into_owned());
    if let Some(r) = &root {
        args.extend(["--root-key", r]);
    }
    Env::with_init_args(&args, vec![])
}

#[test]
fn two_nodes_share_keys_and_break_glass() {
    let pg = PgCluster::start(&[("fsync", "off")]);
    let url = pg.create_database("keyhold");
    let a = node(&url, None);
    let b = node(&url, Some(&a.data().join("root.key")));
    // B's config names the same database; stores and credentials made
    // through A are B's too.
    assert!(read(&b.config()).contains("[storage]"));
    a.run_ok(&["store", "create", "/demo"]);
    let cred = a.add_credential("/demo");
    assert_eq!(b.json(&["store", "list"])[0]["prefix"], "/demo");

    let sa = a.serve(&[]);
    let sb = b.serve(&[]);
    // Created on A, used on B (and back).
    a.run_ok(&["key", "create", "/demo", "k"]);
    let enc = demo_encrypt(&sb, &cred, "k", b"shared data key");
    assert_eq!(enc.status, 200, "{enc:?}");
    let dec = demo_decrypt(&sa, &cred, "k", &enc.json());
    assert_eq!(
        unb64(dec.json()["plaintext"].as_str().unwrap()),
        b"shared data key"
    );

    // Both nodes heartbeat: the fleet is two.
    eventually("a fleet of two", || {
        health(&sb, &cred)["xksProxyFleetSize"] == 2
    });

    // Disable on A: once the command returns, B refuses; measured from the
    // moment the command starts.
    let started = Instant::now();
    let out = a.cmd(&["key", "disable", "/demo", "k"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(said.contains("in force on 2 running server"), "{said}");
    let r = demo_encrypt(&sb, &cred, "k", b"x");
    let took = started.elapsed();
    r.assert_error(400, "InvalidStateException");
    // The promise is the order (B refuses once A's command has returned),
    // checked above; how long it takes is a figure, not a test.
    println!("disable on A refused on B after {took:?} (command start to refusal)");

    // Each node keeps its own audit chain; both verify.
    for env in [&a, &b] {
        env.run_ok(&["audit", "verify"]);
    }
    // Each node copies its chains to the database: node A's query shows
    // the Encrypt that node B served, from B's chain, and A verifies it.
    let b_node = read(&b.data().join("node.name"));
    eventually("B's records reach A", || {
        let q = a.json(&["audit", "query", "--frontend", "xks"]);
        q.as_array()
            .unwrap()
            .iter()
            .any(|r| r["chain"] == format!("xks@{b_node}") && r["operation"] == "Encrypt")
    });
    let v = a.json(&["audit", "verify"]);
    let chains: Vec<&str> = v["chains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["chain"].as_str().unwrap())
        .collect();
    assert!(
        chains.contains(&format!("xks@{b_node}").as_str()),
        "{chains:?}"
    );

    // A node that stops leaves the fleet.
    drop(sa);
    eventually("a fleet of one", || {
        health(&sb, &cred)["xksProxyFleetSize"] == 1
    });
}

#[test]
fn tls_to_the_database_is_verified() {
    let pg = PgCluster::start(&[("fsync", "off")]);
    let ca = keyhold_server::tls::LocalCa::new("database CA").unwrap();
    let srv = ca.issue_server(&["127.0.0.1", "localhost"]).unwrap();
    pg.enable_tls(&srv.cert_pem, &srv.key_pem);
    let url = format!("{}?sslmode=require", pg.create_database("keyhold"));
    let files = tempfile::tempdir().unwrap();
    let ca_file = files.path().join("db-ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    let ca_s = ca_file.to_string_lossy().into_owned();

    let env = Env::with_init_args(&["--storage-url", &url, "--storage-tls-ca", &ca_s], vec![]);
    env.run_ok(&["store", "create", "/demo"]);
    let _server = env.serve(&[]);
    // The node's connections are encrypted.
    let tls_conns = pg.psql(
        "postgres",
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE s.ssl AND a.application_name = 'keyhold'",
    );
    assert_ne!(tls_conns, "0");

    // A server whose certificate the configured CA did not sign is refused.
    let other = keyhold_server::tls::LocalCa::new("someone else").unwrap();
    let other_file = files.path().join("other-ca.pem");
    std::fs::write(&other_file, other.cert_pem()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args([
            "init",
            "--listen",
            "127.0.0.1:0",
            "--storage-url",
            &url,
            "--storage-tls-ca",
        ])
        .arg(&other_file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("database"), "{said}");
}

/// While the database is down, cached keys keep serving (for at most
/// max_staleness), keys that need the database get DependencyTimeout, and
/// health says DEGRADED; when it is back the node carries on by itself.
#[test]
fn database_outage_serves_cached_keys_for_a_bounded_time() {
    let mut pg = PgCluster::start(&[("fsync", "off")]);
    let url = pg.create_database("keyhold");
    let env = node(&url, None);
    // [storage] is the config's last table.
    let mut c = read(&env.config());
    c.push_str("op_timeout_ms = 1000\nmax_staleness_ms = 4000\n");
    // Checkpoints (into the database) far more often than the outage is
    // long: they fail during it, and health must come back by itself.
    c.push_str("\n[audit]\ncheckpoint_interval_ms = 200\n");
    std::fs::write(env.config(), c).unwrap();
    env.run_ok(&["store", "create", "/demo"]);
    let cred = env.add_credential("/demo");
    env.run_ok(&["key", "create", "/demo", "hot"]);
    env.run_ok(&["key", "create", "/demo", "cold"]);
    let server = env.serve(&[]);
    assert_eq!(demo_encrypt(&server, &cred, "hot", b"cache me").status, 200);
    let ekm = |s: &Server| health(s, &cred)["ekmFleetDetails"][0]["healthStatus"].clone();
    assert_eq!(ekm(&server), "ACTIVE");

    // The server counts max_staleness from the moment it sees the database
    // go, which is after this instant: measured from here, the cached key
    // serves at least max_staleness whatever the machine's load.
    let down = Instant::now();
    pg.stop();
    assert_eq!(demo_encrypt(&server, &cred, "hot", b"x").status, 200);
    demo_encrypt(&server, &cred, "cold", b"x").assert_error(503, "DependencyTimeoutException");
    // DEGRADED (storage down), or UNAVAILABLE once a checkpoint into the
    // database has failed: not ACTIVE either way.
    eventually("health not ACTIVE", || ekm(&server) != "ACTIVE");
    assert_eq!(demo_encrypt(&server, &cred, "hot", b"x").status, 200);
    // Past max_staleness the cached key stops serving too.
    eventually("cached keys expire", || {
        demo_encrypt(&server, &cred, "hot", b"x").status == 503
    });
    // The lease runs from the last heartbeat that reached the database
    // (every 0.5 s here), so a little less than 4 s after the stop.
    let served_for = down.elapsed();
    println!("served from cache for {served_for:?} with the database down (lease 4 s)");

    pg.restart(&[("fsync", "off")]);
    eventually("back after the database returns", || {
        demo_encrypt(&server, &cred, "cold", b"x").status == 200
    });
    eventually("health ACTIVE", || ekm(&server) == "ACTIVE");
}

/// Encrypts `n` data keys with each key; returns (key, plaintext, response).
fn corpus(server: &Server, cred: &Cred, keys: &[&str], n: usize) -> Vec<(String, Vec<u8>, Value)> {
    let mut out = Vec::new();
    for k in keys {
        for i in 0..n {
            let pt = format!("data key {k} #{i}").into_bytes();
            let r = demo_encrypt(server, cred, k, &pt);
            assert_eq!(r.status, 200, "{r:?}");
            out.push((k.to_string(), pt, r.json()));
        }
    }
    out
}

fn decrypts_all(server: &Server, cred: &Cred, corpus: &[(String, Vec<u8>, Value)]) {
    for (k, pt, enc) in corpus {
        let r = demo_decrypt(server, cred, k, enc);
        assert_eq!(r.status, 200, "{k}: {r:?}");
        assert_eq!(&unb64(r.json()["plaintext"].as_str().unwrap()), pt);
    }
}

#[test]
fn backup_during_traffic_restores_on_either_backend() {
    let pg = PgCluster::start(&[("fsync", "off")]);
    let env = Env::new();
    env.run_ok(&["store", "create", "/demo"]);
    let cred = Arc::new(env.add_credential("/demo"));
    for k in ["k1", "k2", "rotated"] {
        env.run_ok(&["key", "create", "/demo", k]);
    }
    let policy = env.dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[[rule]]\nname = \"anyone\"\neffect = \"allow\"\nprincipal = [\"arn:aws:iam::*\"]\n",
    )
    .unwrap();
    env.run_ok(&[
        "policy",
        "set",
        "--store",
        "/demo",
        "--file",
        &policy.to_string_lossy(),
    ]);
    let server = env.serve(&[]);
    let mut made = corpus(&server, &cred, &["k1", "k2", "rotated"], 3);
    env.run_ok(&["key", "rotate", "/demo", "rotated"]);
    made.extend(corpus(&server, &cred, &["rotated"], 3));

    let file_s = a_backup_taken_during_traffic(&env, &server, &cred);
    flipped_bytes_are_detected(&env, &file_s);
    drop(server);

    // Without the root of trust, nothing.
    let other = Env::new();
    let out = other.cmd(&["backup", "verify", &file_s]).output().unwrap();
    assert!(!out.status.success());

    let root = env.data().join("root.key").to_string_lossy().into_owned();
    let url = pg.create_database("restored");
    restores_into_sqlite_and_postgres(&file_s, &root, &url, &cred, &made);
    a_postgres_backup_restores_into_sqlite(&url, &root, &cred, &made);
}

/// Traffic goes on while the backup is taken.
fn a_backup_taken_during_traffic(env: &Env, server: &Server, cred: &Arc<Cred>) -> String {
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(Mutex::new(0u32));
    let traffic = {
        let (s, cred, stop, served) = (
            server.detached(),
            cred.clone(),
            stop.clone(),
            served.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let r = demo_encrypt(&s, &cred, "k1", b"during backup");
                assert_eq!(r.status, 200, "{r:?}");
                *served.lock().unwrap() += 1;
            }
        })
    };
    eventually("traffic runs", || *served.lock().unwrap() > 0);
    let file = env.dir.path().join("keyhold.backup");
    let file_s = file.to_string_lossy().into_owned();
    let b = env.json(&["backup", "create", &file_s]);
    assert_eq!(b["rows"]["keys"], 3);
    assert_eq!(b["rows"]["key_versions"], 4);
    stop.store(true, Ordering::Relaxed);
    traffic.join().unwrap();
    assert!(*served.lock().unwrap() > 0);
    env.run_ok(&["backup", "verify", &file_s]);
    file_s
}

/// A flipped byte anywhere is detected.
fn flipped_bytes_are_detected(env: &Env, file_s: &str) {
    let file = Path::new(file_s);
    let bytes = std::fs::read(file).unwrap();
    for at in [20, bytes.len() / 2, bytes.len() - 3] {
        let mut bad = bytes.clone();
        bad[at] ^= 0x40;
        let f = env.dir.path().join(format!("bad-{at}.backup"));
        std::fs::write(&f, bad).unwrap();
        let out = env
            .cmd(&["backup", "verify", &f.to_string_lossy()])
            .output()
            .unwrap();
        assert!(!out.status.success(), "flipped byte {at} not detected");
    }
}

/// Into a fresh SQLite node, then into PostgreSQL; both decrypt every
/// ciphertext made before the backup, with the same credential.
fn restores_into_sqlite_and_postgres(
    file_s: &str,
    root: &str,
    url: &str,
    cred: &Cred,
    made: &[(String, Vec<u8>, Value)],
) {
    for storage in [None, Some(url)] {
        let dir = tempfile::tempdir().unwrap();
        let restored = Env {
            dir,
            extra_env: vec![],
        };
        let mut args = vec![
            "backup",
            "restore",
            file_s,
            "--root-key",
            &root,
            "--listen",
            "127.0.0.1:0",
        ];
        if let Some(u) = storage {
            args.extend(["--storage-url", u]);
        }
        let said = restored.run_ok(&args);
        assert!(said.contains("LOCKDOWN"), "{said}");
        restored.run_ok(&["audit", "verify"]);
        // Nothing serves until a custodian lifts the restore's lockdown.
        let s = restored.serve(&[]);
        let (k, _, enc) = &made[0];
        demo_decrypt(&s, cred, k, enc).assert_error(400, "InvalidStateException");
        drop(s);
        restored.run_ok(&["unlock"]);
        let s = restored.serve(&[]);
        decrypts_all(&s, cred, made);
        // Policies came along.
        assert!(restored
            .run_ok(&["policy", "show", "--store", "/demo"])
            .contains("anyone"));
        // Restoring over it is refused.
        let out = restored.cmd(&args).output().unwrap();
        assert!(!out.status.success());
    }
}

/// And back: a backup of the PostgreSQL node restores into SQLite.
fn a_postgres_backup_restores_into_sqlite(
    url: &str,
    root: &str,
    cred: &Cred,
    made: &[(String, Vec<u8>, Value)],
) {
    let pg_node = Env {
        dir: tempfile::tempdir().unwrap(),
        extra_env: vec![],
    };
    pg_node.run_ok(&[
        "init",
        "--listen",
        "127.0.0.1:0",
        "--storage-url",
        url,
        "--root-key",
        root,
    ]);
    let file2 = pg_node
        .dir
        .path()
        .join("pg.backup")
        .to_string_lossy()
        .into_owned();
    pg_node.run_ok(&["backup", "create", &file2]);
    let back = Env {
        dir: tempfile::tempdir().unwrap(),
        extra_env: vec![],
    };
    back.run_ok(&[
        "backup",
        "restore",
        &file2,
        "--root-key",
        root,
        "--listen",
        "127.0.0.1:0",
    ]);
    back.run_ok(&["unlock"]);
    let s = back.serve(&[]);
    decrypts_all(&s, cred, &made[..3]);
}

/// A key made during a failover: (name, acknowledged, when).
type Made = (String, bool, Instant);
/// An XKS request during a failover: (when, status, error).
type Request = (Instant, u16, String);
type Created = Arc<Mutex<Vec<Made>>>;
type Served = Arc<Mutex<Vec<Request>>>;

/// Primary with a synchronous streaming replica. Keys are created and
/// XKS traffic runs without pause; the primary is killed with SIGKILL and
/// the replica promoted. No acknowledged key may be lost; the node finds
/// the new primary by itself (multi-host URL, read-write target).
#[test]
fn failover_to_a_synchronous_replica_loses_no_acknowledged_key() {
    let mut primary = PgCluster::start(&[]);
    primary.psql("postgres", "CREATE DATABASE keyhold");
    let replica = primary.replica(&[]);
    // From now on a commit returns only once the replica has it.
    primary.psql(
        "postgres",
        "ALTER SYSTEM SET synchronous_standby_names = '*'",
    );
    primary.psql("postgres", "SELECT pg_reload_conf()");
    eventually("the replica streams synchronously", || {
        primary.psql("postgres", "SELECT sync_state FROM pg_stat_replication") == "sync"
    });
    let url = format!(
        "postgres://keyhold@127.0.0.1:{},127.0.0.1:{}/keyhold?target_session_attrs=read-write&connect_timeout=2",
        primary.port, replica.port
    );
    let env = node(&url, None);
    env.run_ok(&["store", "create", "/demo"]);
    let cred = Arc::new(env.add_credential("/demo"));
    env.run_ok(&["key", "create", "/demo", "hot"]);
    let server = env.serve(&[]);
    assert_eq!(
        demo_encrypt(&server, &cred, "hot", b"warm the cache").status,
        200
    );

    let stop = Arc::new(AtomicBool::new(false));
    // Key creation through the admin CLI: (name, acknowledged, when).
    let created = Arc::new(Mutex::new(Vec::<(String, bool, Instant)>::new()));
    let creator = keep_creating_keys(&env, &stop, &created);
    // XKS traffic on the cached key: (when, status, error).
    let xks = Arc::new(Mutex::new(Vec::<(Instant, u16, String)>::new()));
    let traffic = keep_encrypting(&server, &cred, &stop, &xks);
    // Both kinds of traffic run before the primary dies.
    eventually("keys made and XKS served before the failover", || {
        created.lock().unwrap().iter().filter(|c| c.1).count() >= 3
            && !xks.lock().unwrap().is_empty()
    });
    let killed = Instant::now();
    primary.kill9();
    // The disable made before the outage still holds during it.
    let r = demo_encrypt(&server, &cred, "off", b"x");
    assert_ne!(r.status, 200, "a disabled key served during the outage");
    let left = Duration::from_millis(500).saturating_sub(killed.elapsed());
    std::thread::sleep(left);
    replica.promote();
    let promoted = Instant::now();
    // Run until key creation has worked again for a while.
    eventually("key creation works on the new primary", || {
        created
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, ok, t)| *ok && *t > promoted)
            .count()
            >= 3
    });
    stop.store(true, Ordering::Relaxed);
    creator.join().unwrap();
    traffic.join().unwrap();

    nothing_acknowledged_was_lost(
        &env,
        &server,
        &cred,
        (&created.lock().unwrap(), &xks.lock().unwrap()),
        killed,
    );
}

/// Creates keys through the admin CLI until `stop`, noting each: (name,
/// acknowledged, when).
fn keep_creating_keys(env: &Env, stop: &Arc<AtomicBool>, created: &Created) -> JoinHandle<()> {
    let (data, stop, created) = (env.data(), stop.clone(), created.clone());
    std::thread::spawn(move || {
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            let name = format!("k{i}");
            let out = std::process::Command::new(BIN)
                .arg("--data-dir")
                .arg(&data)
                .args(["key", "create", "/demo", &name])
                .output()
                .unwrap();
            created
                .lock()
                .unwrap()
                .push((name, out.status.success(), Instant::now()));
        }
    })
}

/// XKS Encrypt on the cached key "hot" until `stop`, noting each: (when,
/// status, error).
fn keep_encrypting(
    server: &Server,
    cred: &Arc<Cred>,
    stop: &Arc<AtomicBool>,
    xks: &Served,
) -> JoinHandle<()> {
    let (s, cred, stop, xks) = (server.detached(), cred.clone(), stop.clone(), xks.clone());
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            let r = demo_encrypt(&s, &cred, "hot", b"during failover");
            let err = if r.status == 200 {
                String::new()
            } else {
                r.body
            };
            xks.lock().unwrap().push((t, r.status, err));
        }
    })
}

/// Every acknowledged key is still there, cached keys served throughout,
/// and the node serves keys made after the failover (figures printed).
fn nothing_acknowledged_was_lost(
    env: &Env,
    server: &Server,
    cred: &Cred,
    (created, xks): (&[Made], &[Request]),
    killed: Instant,
) {
    let acknowledged: Vec<&String> = created.iter().filter(|c| c.1).map(|c| &c.0).collect();
    let listed = env.json(&["key", "list", "/demo", "--limit", "100000"]);
    let present: std::collections::HashSet<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key_id"].as_str().unwrap())
        .collect();
    let lost: Vec<&&String> = acknowledged
        .iter()
        .filter(|n| !present.contains(n.as_str()))
        .collect();
    let last_before = created
        .iter()
        .filter(|c| c.1 && c.2 <= killed)
        .map(|c| c.2)
        .max()
        .unwrap();
    let first_after = created
        .iter()
        .filter(|c| c.1 && c.2 > killed)
        .map(|c| c.2)
        .min()
        .unwrap();
    let xks_failed = xks.iter().filter(|x| x.1 != 200).count();
    if let Some(f) = xks.iter().find(|x| x.1 != 200) {
        println!("first XKS failure: {} {}", f.1, f.2);
    }
    println!(
    "failover: {} keys acknowledged, {} lost; key creation unavailable for {:?} (kill to promote: 500 ms); \
     XKS Encrypt on a cached key: {} of {} requests failed",
    acknowledged.len(),
    lost.len(),
    first_after - last_before,
    xks_failed,
    xks.len()
);
    assert!(lost.is_empty(), "acknowledged keys lost: {lost:?}");
    assert!(acknowledged.len() > 3);
    // Cached keys kept serving through the outage.
    assert_eq!(xks_failed, 0);
    // And the node serves keys made after the failover.
    let newest = created.iter().rev().find(|c| c.1).unwrap();
    assert_eq!(demo_encrypt(server, cred, &newest.0, b"after").status, 200);
}

/// Admin changes made through a node's admin API drop only what they
/// touched from that node's caches: when the database fails right after
/// (a failover), the node goes on serving every other cached key, with
/// the credential it cached, until `max_staleness`.
#[test]
fn an_admin_change_before_a_database_outage_leaves_the_rest_of_the_cache_serving() {
    let mut pg = PgCluster::start(&[("fsync", "off")]);
    let url = pg.create_database("keyhold");
    let env = node(&url, None);
    let mut c = read(&env.config());
    c.push_str("op_timeout_ms = 1000\n");
    std::fs::write(env.config(), c).unwrap();
    env.run_ok(&["store", "create", "/demo"]);
    env.run_ok(&["store", "create", "/other"]);
    let cred = env.add_credential("/demo");
    for k in ["hot", "warm", "changed"] {
        env.run_ok(&["key", "create", "/demo", k]);
    }
    let token = env.json(&["admin", "token", "create", "c", "--role", "custodian"])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let server = env.serve(&["--admin-listen", "127.0.0.1:0"]);
    let out = env.dir.path().join("serve.stdout");
    let mut admin = String::new();
    eventually("the admin listener", || {
        match read(&out)
            .lines()
            .find_map(|l| l.strip_prefix("keyhold admin on "))
        {
            Some(a) => {
                admin = a.to_owned();
                true
            }
            None => false,
        }
    });
    let port = admin.rsplit(':').next().unwrap().to_owned();
    let api = |args: &[&str]| {
        let o = std::process::Command::new(BIN)
            .current_dir(env.dir.path())
            .env("KEYHOLD_ADMIN_TOKEN", &token)
            .env_remove("KEYHOLD_DATA_DIR")
            .stdin(std::process::Stdio::null())
            .arg("--server")
            .arg(format!("https://localhost:{port}"))
            .arg("--server-ca")
            .arg(env.ca())
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    for k in ["hot", "warm", "changed"] {
        assert_eq!(demo_encrypt(&server, &cred, k, b"cache me").status, 200);
    }
    // Through this node's admin API: a new key, a rotation, a policy on
    // another store, a new store, a credential elsewhere, break glass.
    api(&["key", "create", "/demo", "new"]);
    api(&["key", "rotate", "/demo", "changed"]);
    api(&["store", "create", "/third"]);
    api(&["store", "credential", "add", "/other"]);
    api(&["key", "disable", "/demo", "changed"]);
    let policy = env.dir.path().join("p.toml");
    std::fs::write(
        &policy,
        "[[rule]]\nname = \"no-s3\"\neffect = \"deny\"\nvia_service = [\"s3\"]\n",
    )
    .unwrap();
    api(&[
        "policy",
        "set",
        "--store",
        "/other",
        "--file",
        policy.to_str().unwrap(),
    ]);
    // The break-glass command returned once the node applied it; the node
    // has seen every change (the last one waited for all before it).
    demo_encrypt(&server, &cred, "changed", b"x").assert_error(400, "InvalidStateException");

    pg.stop();
    for k in ["hot", "warm"] {
        let r = demo_encrypt(&server, &cred, k, b"during the outage");
        assert_eq!(r.status, 200, "{k}: {r:?}");
    }
    // What was changed is not served from a stale cache.
    demo_encrypt(&server, &cred, "changed", b"x").assert_error(400, "InvalidStateException");
}

/// A TCP proxy to the database that can be cut like a network: once cut,
/// nothing goes through either way and nothing is refused, reset or lost
/// (connections just go silent), until healed.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: u16) -> Self {
        use std::io::{Read, Write};
        use std::net::{TcpListener, TcpStream};
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let c = cut.clone();
        std::thread::spawn(move || {
            for client in l.incoming().flatten() {
                let cut = c.clone();
                std::thread::spawn(move || {
                    // While cut, a new connection is held open, silent.
                    while cut.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                        return;
                    };
                    let pipe = |mut from: TcpStream, mut to: TcpStream, cut: Arc<AtomicBool>| {
                        from.set_read_timeout(Some(Duration::from_millis(20)))
                            .unwrap();
                        let mut buf = [0u8; 16 * 1024];
                        loop {
                            // Cut: nothing is read, so nothing is lost;
                            // TCP holds it back as a partition would.
                            if cut.load(Ordering::SeqCst) {
                                std::thread::sleep(Duration::from_millis(20));
                                continue;
                            }
                            match from.read(&mut buf) {
                                Ok(0) => return,
                                Ok(n) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        return;
                                    }
                                }
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::WouldBlock
                                            | std::io::ErrorKind::TimedOut
                                    ) => {}
                                Err(_) => return,
                            }
                        }
                    };
                    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                    let cut2 = cut.clone();
                    std::thread::spawn(move || pipe(c2, s2, cut2));
                    pipe(server, client, cut);
                });
            }
        });
        Self { port, cut }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// Break glass with a node cut off from the database (behind a proxy that
/// is cut): the node serves its cached key only under its lease; `key
/// disable` on another node returns only once that lease has run out,
/// says which node it waited out, and from then on the cut node serves
/// nothing it had cached. Healed, it sees the disable.
#[test]
fn break_glass_waits_out_the_lease_of_a_node_cut_off_from_the_database() {
    let pg = PgCluster::start(&[("fsync", "off")]);
    let url = pg.create_database("keyhold");
    let a = node(&url, None);
    let proxy = Proxy::start(pg.port);
    let via_proxy = url.replace(&format!(":{}/", pg.port), &format!(":{}/", proxy.port));
    let b = node(&via_proxy, Some(&a.data().join("root.key")));
    // [storage] is the config's last table.
    let mut c = read(&b.config());
    c.push_str("op_timeout_ms = 1000\nlease_ms = 6000\n");
    std::fs::write(b.config(), c).unwrap();
    a.run_ok(&["store", "create", "/demo"]);
    let cred = a.add_credential("/demo");
    a.run_ok(&["key", "create", "/demo", "k"]);
    let sa = a.serve(&[]);
    let sb = b.serve(&[]);
    assert_eq!(demo_encrypt(&sb, &cred, "k", b"warm").status, 200);
    assert_eq!(demo_encrypt(&sa, &cred, "k", b"warm").status, 200);

    proxy.cut();
    // Within its lease the cut node serves what it has cached.
    assert_eq!(demo_encrypt(&sb, &cred, "k", b"offline").status, 200);
    let t = Instant::now();
    let out = a.cmd(&["key", "disable", "/demo", "k"]).output().unwrap();
    let took = t.elapsed();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("waited until its lease ran out"), "{said}");
    println!("break glass with a node cut off (lease 6 s) returned after {took:?}: {said}");
    // From here on, neither node serves the key.
    demo_encrypt(&sa, &cred, "k", b"x").assert_error(400, "InvalidStateException");
    let r = demo_encrypt(&sb, &cred, "k", b"x");
    assert_ne!(
        r.status, 200,
        "the cut node still served the disabled key: {r:?}"
    );
    assert_eq!(r.error_name(), "DependencyTimeoutException", "{r:?}");

    proxy.heal();
    eventually("the healed node sees the disable", || {
        let r = demo_encrypt(&sb, &cred, "k", b"x");
        r.status == 400 && r.error_name() == "InvalidStateException"
    });
}
