//! Storage is untrusted: rows changed in the database behind Keyhold's
//! back (someone with write access to it but not the root of trust) are
//! refused, never obeyed, and reported: in GetHealthStatus, in `keyhold
//! status`, in the log. The real binary, its real SQLite file, changed
//! with Python's sqlite3 while the server runs.

mod common;

use common::*;
use serde_json::json;

fn health(server: &Server, cred: &Cred) -> serde_json::Value {
    let r = Curl::new(server, cred).send(
        "/demo/kms/xks/v1/health",
        r#"{"requestMetadata":{"kmsRequestId":"h","kmsOperation":"KmsHealthCheck"}}"#,
    );
    assert_eq!(r.status, 200, "{r:?}");
    r.json()
}

#[test]
fn rows_changed_outside_keyhold_are_refused_and_reported() {
    let env = Env::new();
    env.run_ok(&["store", "create", "/demo"]);
    let cred = env.add_credential("/demo");
    env.run_ok(&["key", "create", "/demo", "k1"]);
    env.run_ok(&["key", "create", "/demo", "k2"]);
    env.run_ok(&["key", "disable", "/demo", "k1"]);
    let status = env.json(&["status"]);
    assert_eq!(status["integrity"], json!({"genuine": true, "refused": []}));
    let server = env.serve(&[]);
    demo_encrypt(&server, &cred, "k1", b"x").assert_error(400, "InvalidStateException");
    assert_eq!(demo_encrypt(&server, &cred, "k2", b"x").status, 200);
    assert_eq!(
        health(&server, &cred)["ekmFleetDetails"][0]["healthStatus"],
        "ACTIVE"
    );

    // Someone with the database but not the root of trust enables the
    // disabled key: it is never served, whatever the cache held.
    let db = env.data().join("keyhold.db");
    sqlite(
        &db,
        "UPDATE keys SET status = 'ENABLED' WHERE key_id = 'k1'",
    );
    eventually("the changed row refused", || {
        let r = demo_encrypt(&server, &cred, "k1", b"x");
        assert_ne!(r.status, 200, "a key enabled outside Keyhold was used");
        r.status == 500 && r.error_name() == "InternalException"
    });
    // The other key serves on; health says what happened.
    assert_eq!(demo_encrypt(&server, &cred, "k2", b"x").status, 200);
    eventually("health DEGRADED", || {
        let h = health(&server, &cred);
        let e = &h["ekmFleetDetails"][0];
        e["healthStatus"] == "DEGRADED"
    });
    // (the log is written by a thread of its own)
    eventually("the refusal in the log", || {
        read(&server.log).contains("key /demo/k1 does not verify")
    });
    let status = env.json(&["status"]);
    assert_eq!(status["integrity"]["genuine"], false);
    assert_eq!(status["integrity"]["refused"], json!(["key /demo/k1"]));
    let text = env.run_ok(&["status"]);
    assert!(text.contains("1 stored rows NOT GENUINE"), "{text}");

    // Nor can a custodian's change bless it: the row stays refused.
    let out = env.cmd(&["key", "enable", "/demo", "k1"]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not verify"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Destroying it works (it only takes power away) and leaves a genuine row.
    env.run_ok(&["key", "destroy", "/demo", "k1", "--now", "--confirm", "k1"]);
    let shown = env.json(&["key", "show", "/demo", "k1"]);
    assert_eq!(shown[0]["state"], "DESTROYED", "{shown}");
    assert_eq!(env.json(&["status"])["integrity"]["genuine"], true);

    // Lifting a lockdown by deleting its row locks everything down.
    env.run_ok(&["lockdown"]);
    env.run_ok(&["unlock"]);
    assert_eq!(demo_encrypt(&server, &cred, "k2", b"x").status, 200);
    env.run_ok(&["lockdown"]);
    sqlite(&db, "DELETE FROM meta WHERE name = 'lockdown'");
    let status = env.json(&["status"]);
    assert_eq!(status["lockdown"], true);
    assert!(status["integrity"]["refused"]
        .as_array()
        .unwrap()
        .contains(&json!("the lockdown switch")));
    assert_ne!(demo_encrypt(&server, &cred, "k2", b"x").status, 200);
    server.terminate();

    // A restart reads the same rows the same way.
    let server = env.serve(&[]);
    assert_ne!(demo_encrypt(&server, &cred, "k2", b"x").status, 200);
    // Unlocking through Keyhold writes a sealed switch again.
    env.run_ok(&["unlock"]);
    eventually("unlocked", || {
        demo_encrypt(&server, &cred, "k2", b"x").status == 200
    });
    assert_ne!(demo_encrypt(&server, &cred, "k1", b"x").status, 200);
}

/// A database from before sealed rows is sealed once, as it stood, and
/// the data directory remembers it: stripping every seal and the marker
/// afterwards does not get rows re-sealed.
#[test]
fn a_database_is_sealed_once_and_never_again() {
    let env = Env::new();
    env.run_ok(&["store", "create", "/demo"]);
    env.run_ok(&["key", "create", "/demo", "k1"]);
    let anchor = env.data().join("rows.sealed");
    assert!(anchor.exists());
    // As if written by a Keyhold from before sealed rows.
    let db = env.data().join("keyhold.db");
    let strip = "UPDATE stores SET seal = NULL; UPDATE keys SET seal = NULL; \
                 UPDATE key_versions SET seal = NULL; DELETE FROM policies; \
                 DELETE FROM meta WHERE name IN ('rows-sealed', 'lockdown');";
    sqlite(&db, strip);
    std::fs::remove_file(&anchor).unwrap();
    let status = env.json(&["status"]);
    assert_eq!(status["integrity"]["genuine"], true, "{status}");
    assert_eq!(status["lockdown"], false);
    assert!(anchor.exists());
    assert_eq!(
        env.json(&["key", "list", "/demo"]).as_array().map(Vec::len),
        Some(1)
    );

    // Once sealed, the same stripping is tampering: refused, not re-sealed.
    sqlite(&db, strip);
    sqlite(&db, "UPDATE keys SET usage = 3");
    let status = env.json(&["status"]);
    assert_eq!(status["integrity"]["genuine"], false, "{status}");
    assert_eq!(status["lockdown"], true);
    let out = env.cmd(&["key", "show", "/demo", "k1"]).output().unwrap();
    assert!(!out.status.success());
}
