//! Key lifecycle and break glass through the real binary and curl: each
//! admin command returns only once the running server applies it, so the
//! very next request sees the change (no `eventually` here on purpose).

mod common;

use common::*;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

fn encrypt(server: &Server, cred: &Cred, key: &str) -> Resp {
    demo_encrypt(server, cred, key, b"data key")
}

fn metadata(server: &Server, cred: &Cred, key: &str) -> serde_json::Value {
    let body = json!({"requestMetadata": meta("DescribeKey")});
    let r = Curl::new(server, cred).send(
        &format!("/demo/kms/xks/v1/keys/{key}/metadata"),
        &body.to_string(),
    );
    assert_eq!(r.status, 200, "{r:?}");
    r.json()
}

#[test]
fn lifecycle_states_map_to_xks_errors() {
    let env = Env::new();
    env.run_ok(&["store", "create", "/demo"]);
    let cred = env.add_credential("/demo");
    let k = env.json(&["key", "create", "/demo", "pre", "--pre-active"]);
    assert_eq!(k[0]["state"], "PRE_ACTIVE");
    env.run_ok(&["key", "create", "/demo", "k"]);
    let server = env.serve(&[]);

    // PRE_ACTIVE: refused, reported DISABLED; activation makes it usable.
    encrypt(&server, &cred, "pre").assert_error(400, "InvalidStateException");
    assert_eq!(metadata(&server, &cred, "pre")["keyStatus"], "DISABLED");
    env.run_ok(&["key", "activate", "/demo", "pre"]);
    assert_eq!(encrypt(&server, &cred, "pre").status, 200);

    // Rotation: v1 and v2 ciphertext both decrypt; retiring v1 refuses it.
    let v1 = encrypt(&server, &cred, "k").json();
    env.run_ok(&["key", "rotate", "/demo", "k"]);
    let v2 = encrypt(&server, &cred, "k").json();
    assert_ne!(v1["ciphertextMetadata"], v2["ciphertextMetadata"]);
    assert_eq!(demo_decrypt(&server, &cred, "k", &v1).status, 200);
    assert_eq!(demo_decrypt(&server, &cred, "k", &v2).status, 200);
    env.run_ok(&["key", "set-min-decrypt-version", "/demo", "k", "2"]);
    demo_decrypt(&server, &cred, "k", &v1).assert_error(400, "InvalidStateException");
    assert_eq!(demo_decrypt(&server, &cred, "k", &v2).status, 200);
    let out = env.json(&["key", "trim-versions", "/demo", "k"]);
    assert_eq!(out["shredded_versions"], 1);
    let vs = env.json(&["key", "versions", "/demo", "k"]);
    assert_eq!(vs[0]["status"], "DESTROYED");
    assert_eq!(vs[1]["status"], "GOOD");

    // DEACTIVATED: decrypt only.
    env.run_ok(&["key", "deactivate", "/demo", "k"]);
    encrypt(&server, &cred, "k").assert_error(400, "InvalidKeyUsageException");
    assert_eq!(demo_decrypt(&server, &cred, "k", &v2).status, 200);
    let m = metadata(&server, &cred, "k");
    assert_eq!(
        (m["keyStatus"].clone(), m["keyUsage"].clone()),
        (json!("ENABLED"), json!(["DECRYPT"]))
    );

    destruction_is_scheduled_or_confirmed(&env, &server, &cred, &v2);
    lockdown_and_compromise(&env, &server, &cred);
}

/// Destruction: scheduled (refused meanwhile, cancellable), or at once with
/// the key id repeated; then nothing decrypts.
fn destruction_is_scheduled_or_confirmed(
    env: &Env,
    server: &Server,
    cred: &Cred,
    v2: &serde_json::Value,
) {
    // Scheduled destruction: refused meanwhile, cancellable.
    let out = env
        .cmd(&["key", "destroy", "/demo", "k", "--days", "3"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("7 to 30 days"));
    let k = env.json(&["key", "destroy", "/demo", "k", "--days", "7"]);
    assert!(k[0]["destroy_at"].is_string());
    demo_decrypt(server, cred, "k", v2).assert_error(400, "InvalidStateException");
    env.run_ok(&["key", "cancel-destroy", "/demo", "k"]);
    assert_eq!(demo_decrypt(server, cred, "k", v2).status, 200);

    // Destroy now needs the key id repeated; then nothing decrypts.
    let out = env
        .cmd(&["key", "destroy", "/demo", "k", "--now"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--confirm k"));
    let k = env.json(&["key", "destroy", "/demo", "k", "--now", "--confirm", "k"]);
    assert_eq!(k[0]["state"], "DESTROYED");
    demo_decrypt(server, cred, "k", v2).assert_error(400, "InvalidStateException");
    let vs = env.json(&["key", "versions", "/demo", "k"]);
    assert!(vs
        .as_array()
        .unwrap()
        .iter()
        .all(|v| v["status"] == "DESTROYED"));
}

/// Lockdown refuses every key (health still answers) until unlock; a
/// compromised key decrypts only, and every use is on record.
fn lockdown_and_compromise(env: &Env, server: &Server, cred: &Cred) {
    // Lockdown: every key refused, health still answers; unlock restores.
    env.run_ok(&["lockdown"]);
    encrypt(server, cred, "pre").assert_error(400, "InvalidStateException");
    let h = Curl::new(server, cred).send(
        "/demo/kms/xks/v1/health",
        r#"{"requestMetadata":{"kmsRequestId":"h","kmsOperation":"KmsHealthCheck"}}"#,
    );
    assert_eq!(h.status, 200, "{h:?}");
    env.run_ok(&["unlock"]);
    assert_eq!(encrypt(server, cred, "pre").status, 200);

    // Compromised: decrypt only, and every use is reported in the audit log.
    let c = encrypt(server, cred, "pre").json();
    env.run_ok(&["key", "compromise", "/demo", "pre"]);
    encrypt(server, cred, "pre").assert_error(400, "InvalidKeyUsageException");
    assert_eq!(demo_decrypt(server, cred, "pre", &c).status, 200);
    // The audit record is written before the answer; the log line may lag.
    let recs = env.json(&["audit", "query", "--key", "pre", "--operation", "Decrypt"]);
    let last = recs.as_array().unwrap().last().unwrap().clone();
    assert!(
        last["detail"]
            .as_str()
            .unwrap_or("")
            .contains("compromised"),
        "{last}"
    );
    eventually("the log line too", || {
        read(&server.log).contains("marked compromised")
    });
}

/// Break glass under load: four clients send Encrypt continuously; once
/// `keyhold key disable` (then `store disable`, then `lockdown`) returns,
/// no request sent after that succeeds.
#[test]
fn break_glass_holds_for_the_very_next_request() {
    let env = Env::new();
    env.run_ok(&["store", "create", "/demo"]);
    let cred = Arc::new(env.add_credential("/demo"));
    env.run_ok(&["key", "create", "/demo", "k"]);
    let server = env.serve(&[]);

    for (command, undo) in [
        (
            vec!["key", "disable", "/demo", "k"],
            vec!["key", "enable", "/demo", "k"],
        ),
        (
            vec!["store", "disable", "/demo"],
            vec!["store", "enable", "/demo"],
        ),
        (vec!["lockdown"], vec!["unlock"]),
    ] {
        // (start of request, status) for every request.
        let log = Arc::new(Mutex::new(Vec::<(Instant, u16)>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..4)
            .map(|_| {
                let (s, cred, log, stop) =
                    (server.detached(), cred.clone(), log.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        let r = encrypt(&s, &cred, "k");
                        log.lock().unwrap().push((t, r.status));
                    }
                })
            })
            .collect();
        eventually("traffic is served", || {
            log.lock().unwrap().iter().any(|(_, s)| *s == 200)
        });
        let issued = Instant::now();
        let out = env.cmd(&command).output().unwrap();
        let returned = Instant::now();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(said.contains("in force on 1 running server"), "{said}");
        // Every client has sent (and had answered) requests after it.
        eventually("traffic goes on after the command", || {
            log.lock()
                .unwrap()
                .iter()
                .filter(|(t, _)| *t >= returned)
                .count()
                >= 8
        });
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.join().unwrap();
        }
        let log = log.lock().unwrap();
        let before = log.iter().filter(|(t, s)| *t < issued && *s == 200).count();
        let after: Vec<_> = log.iter().filter(|(t, _)| *t >= returned).collect();
        assert!(before > 0, "traffic was served before {command:?}");
        assert!(!after.is_empty(), "traffic went on after {command:?}");
        assert!(
            after.iter().all(|(_, s)| *s == 400),
            "{command:?}: a request sent after the command returned was served: {:?}",
            after.iter().filter(|(_, s)| *s != 400).collect::<Vec<_>>()
        );
        eprintln!(
            "{command:?}: command took {:.0} ms end to end ({})",
            (returned - issued).as_secs_f64() * 1e3,
            said.trim()
        );
        env.run_ok(&undo);
        assert_eq!(
            encrypt(&server, &cred, "k").status,
            200,
            "{undo:?} restores"
        );
    }
}

/// Crypto-shredding on SQLite: once a retired version or a whole key is
/// destroyed, no file in the data directory holds any piece of its wrapped
/// material: not the database, not its write-ahead log, while a server
/// has both open and goes on serving.
#[test]
fn destroyed_material_leaves_no_copy_in_the_data_directory() {
    use keyhold_storage::prelude::*;
    let env = Env::new();
    env.run_ok(&["store", "create", "/demo"]);
    let cred = env.add_credential("/demo");
    env.run_ok(&["key", "create", "/demo", "k"]);
    env.run_ok(&["key", "create", "/demo", "other"]);
    let server = env.serve(&[]);
    assert_eq!(encrypt(&server, &cred, "k").status, 200);
    env.run_ok(&["key", "rotate", "/demo", "k"]);
    let wrapped = |v: u32| {
        let s = keyhold_storage::SqliteStorage::open(&env.data().join("keyhold.db")).unwrap();
        let (p, id) = (
            keyhold_core::StorePrefix::parse("/demo").unwrap(),
            keyhold_core::KeyId::parse("k").unwrap(),
        );
        s.get_key_version(&p, &id, v).unwrap().unwrap().wrapped
    };
    let (v1, v2) = (wrapped(1), wrapped(2));
    // The scan finds material that is there.
    assert!(!files_holding(&env.data(), &v1).is_empty());
    assert!(!files_holding(&env.data(), &v2).is_empty());

    env.run_ok(&["key", "set-min-decrypt-version", "/demo", "k", "2"]);
    assert_eq!(
        env.json(&["key", "trim-versions", "/demo", "k"])["shredded_versions"],
        1
    );
    assert_eq!(
        files_holding(&env.data(), &v1),
        Vec::<std::path::PathBuf>::new()
    );
    assert!(!files_holding(&env.data(), &v2).is_empty());
    assert_eq!(encrypt(&server, &cred, "k").status, 200);

    env.run_ok(&["key", "destroy", "/demo", "k", "--now", "--confirm", "k"]);
    assert_eq!(
        files_holding(&env.data(), &v2),
        Vec::<std::path::PathBuf>::new()
    );
    encrypt(&server, &cred, "k").assert_error(400, "InvalidStateException");
    assert_eq!(encrypt(&server, &cred, "other").status, 200);
}

/// A backup restored after keys were disabled, destroyed and scheduled for
/// destruction brings them back as they were, so the restored node starts
/// in lockdown: it says so, lists every key with its state, refuses every
/// key until a custodian runs `keyhold unlock` (an audited decision), and
/// the disabled key can be disabled again before that.
#[test]
fn a_restored_backup_serves_nothing_until_a_custodian_unlocks_it() {
    let env = Env::new();
    env.run_ok(&["store", "create", "/demo"]);
    let cred = env.add_credential("/demo");
    for k in [
        "kept",
        "disabled-later",
        "destroyed-later",
        "scheduled-later",
    ] {
        env.run_ok(&["key", "create", "/demo", k]);
    }
    let file = env.dir.path().join("before.backup");
    env.run_ok(&["backup", "create", file.to_str().unwrap()]);
    env.run_ok(&["key", "disable", "/demo", "disabled-later"]);
    env.run_ok(&[
        "key",
        "destroy",
        "/demo",
        "destroyed-later",
        "--now",
        "--confirm",
        "destroyed-later",
    ]);
    env.run_ok(&["key", "destroy", "/demo", "scheduled-later"]);

    let restored = Env {
        dir: tempfile::tempdir().unwrap(),
        extra_env: vec![],
    };
    let root = env.data().join("root.key");
    let said = restored.run_ok(&[
        "backup",
        "restore",
        file.to_str().unwrap(),
        "--root-key",
        root.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(said.contains("LOCKDOWN"), "{said}");
    for k in [
        "kept",
        "disabled-later",
        "destroyed-later",
        "scheduled-later",
    ] {
        assert!(
            said.contains(&format!("key /demo {k}: ACTIVE ENABLED")),
            "{k}: {said}"
        );
    }
    let status = restored.json(&["status"]);
    assert_eq!(status["lockdown"], true, "{status}");
    let server = restored.serve(&[]);
    for k in ["kept", "destroyed-later"] {
        encrypt(&server, &cred, k).assert_error(400, "InvalidStateException");
    }
    // The custodian re-applies what changed after the backup, then unlocks.
    restored.run_ok(&["key", "disable", "/demo", "disabled-later"]);
    restored.run_ok(&[
        "key",
        "destroy",
        "/demo",
        "destroyed-later",
        "--now",
        "--confirm",
        "destroyed-later",
    ]);
    restored.run_ok(&["unlock"]);
    drop(server);
    let server = restored.serve(&[]);
    assert_eq!(encrypt(&server, &cred, "kept").status, 200);
    encrypt(&server, &cred, "disabled-later").assert_error(400, "InvalidStateException");
    encrypt(&server, &cred, "destroyed-later").assert_error(400, "InvalidStateException");
    let unlocks = restored.json(&["audit", "query", "--operation", "unlock"]);
    assert_eq!(unlocks.as_array().unwrap().len(), 1, "{unlocks}");
}
