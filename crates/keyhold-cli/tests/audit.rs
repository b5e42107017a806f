//! The tamper-evident audit log end to end: every XKS request (with its
//! kmsRequestId) and every admin command lands in a chain that verifies;
//! editing a record or cutting the tail off is caught and located.

mod common;

use common::*;
use serde_json::json;
use std::path::{Path, PathBuf};

fn encrypt(server: &Server, cred: &Cred, request_id: &str) -> Resp {
    let mut m = meta("Encrypt");
    m["kmsRequestId"] = json!(request_id);
    let body = json!({
        "requestMetadata": m, "plaintext": b64(b"data key"), "encryptionAlgorithm": "AES_GCM",
    });
    Curl::new(server, cred).send("/demo/kms/xks/v1/keys/k/encrypt", &body.to_string())
}

fn audit_files(env: &Env, chain: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(env.data().join("audit").join(chain))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_request_and_admin_command_is_recorded_and_verifiable() {
    let env = Env::new();
    // Checkpoints often, so that the test sees one.
    let cfg = read(&env.config()) + "\n[audit]\ncheckpoint_interval_ms = 100\n";
    std::fs::write(env.config(), cfg).unwrap();
    env.run_ok(&["store", "create", "/demo"]);
    let cred = env.add_credential("/demo");
    env.run_ok(&["key", "create", "/demo", "k"]);
    let server = env.serve(&[]);
    for i in 0..20 {
        assert_eq!(encrypt(&server, &cred, &format!("req-{i}")).status, 200);
    }
    let bad = Cred {
        akid: cred.akid.clone(),
        secret: "A".repeat(44),
    };
    encrypt(&server, &bad, "req-bad").assert_error(401, "AuthenticationFailedException");
    // A clean stop writes the final checkpoint: the one that covers the
    // newest records (and catches their removal below).
    server.terminate();

    every_request_is_recorded_without_secrets(&env, &cred);
    let (f, original) = an_edited_record_is_found(&env);
    cutting_the_newest_records_is_caught(&env, &f, &original);
}

/// One record per request, found by its kmsRequestId.
fn every_request_is_recorded_without_secrets(env: &Env, cred: &Cred) {
    let r = env.json(&["audit", "query", "--kms-request-id", "req-7"]);
    let r = r.as_array().unwrap();
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["operation"], "Encrypt");
    assert_eq!(r[0]["result"], "OK");
    assert_eq!(r[0]["key"], "k");
    assert_eq!(r[0]["key_version"], 1);
    assert_eq!(r[0]["actor"], cred.akid.as_str());
    assert_eq!(r[0]["principal"], "arn:aws:iam::123456789012:user/Alice");
    assert_eq!(r[0]["kms_via_service"], "ebs");
    let all = env.json(&["audit", "query", "--frontend", "xks", "--limit", "1000"]);
    assert_eq!(all.as_array().unwrap().len(), 21);
    let failed = env.json(&["audit", "query", "--result", "error"]);
    assert_eq!(failed[0]["result"], "AuthenticationFailedException");
    // Admin commands, with who ran them.
    let admin = env.json(&["audit", "query", "--frontend", "admin"]);
    let ops: Vec<_> = admin
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["operation"].as_str().unwrap().to_owned())
        .collect();
    assert!(ops.contains(&"key create".to_owned()), "{ops:?}");
    assert!(admin[0]["actor"].as_str().unwrap().contains("uid"));
    // Never a secret, plaintext or key material.
    let all_text: String = audit_files(env, "xks")
        .iter()
        .chain(audit_files(env, "admin").iter())
        .map(|p| read(p))
        .collect();
    assert!(!all_text.contains(&cred.secret));
    assert!(!all_text.contains(&b64(b"data key")));

    let v = env.json(&["audit", "verify"]);
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["checkpoints_checked"].as_u64().unwrap() >= 1, "{v}");
    let out = env.dir.path().join("export.jsonl");
    env.run_ok(&[
        "audit",
        "export",
        "--frontend",
        "xks",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(read(&out).lines().count(), 21);
}

/// An edited record is found, and where.
fn an_edited_record_is_found(env: &Env) -> (PathBuf, String) {
    let f = audit_files(env, "xks").pop().unwrap();
    let original = read(&f);
    std::fs::write(
        &f,
        original.replacen("\"result\":\"OK\"", "\"result\":\"OX\"", 1),
    )
    .unwrap();
    let out = env.cmd(&["audit", "verify"]).output().unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("line 1") && text.contains("altered"),
        "{text}"
    );
    // query marks it; export leaves it out and says so.
    let q = env.json(&["audit", "query", "--frontend", "xks", "--limit", "1000"]);
    let q = q.as_array().unwrap();
    let unverified: Vec<_> = q.iter().filter(|r| r["verified"] == false).collect();
    assert_eq!(unverified.len(), 1, "{q:?}");
    assert_eq!(unverified[0]["result"], "OX");
    assert!(q.iter().filter(|r| r["verified"] == true).count() == 20);
    let text = env.run_ok(&["audit", "query", "--frontend", "xks", "--limit", "1000"]);
    assert!(text.contains("NOT VERIFIED: Encrypt"), "{text}");
    let out2 = env.dir.path().join("export2.jsonl");
    let o = env
        .cmd(&[
            "audit",
            "export",
            "--frontend",
            "xks",
            "--out",
            out2.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("1 record(s) that do not verify"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(read(&out2).lines().count(), 20);
    assert!(!read(&out2).contains("\"OX\""));
    (f, original)
}

/// The newest records cut off: caught by the checkpoint in the database.
fn cutting_the_newest_records_is_caught(env: &Env, f: &Path, original: &str) {
    let kept: Vec<&str> = original.lines().take(15).collect();
    std::fs::write(f, kept.join("\n") + "\n").unwrap();
    let out = env.cmd(&["audit", "verify"]).output().unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("newest records were removed"), "{text}");
}

/// The README's quick start as a user types it: the default, relative
/// `keyhold-data`, admin commands from that directory and from another one
/// (naming it relative to there), a server started with the relative
/// default and used through the admin API, then `audit verify`: one audit
/// directory, every record in it, and the chain intact.
#[test]
fn the_default_relative_data_dir_keeps_one_verifiable_audit_log() {
    use std::io::BufRead;
    use std::process::Stdio;
    let top = tempfile::tempdir().unwrap();
    let elsewhere = top.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    ok(top.path(), &["init", "--listen", "127.0.0.1:0"]);
    ok(top.path(), &["store", "create", "/x"]);
    ok(top.path(), &["key", "create", "/x", "k1"]);
    ok(
        &elsewhere,
        &["--data-dir", "../keyhold-data", "key", "create", "/x", "k2"],
    );
    let v: serde_json::Value = serde_json::from_str(&ok(
        top.path(),
        &[
            "--json",
            "admin",
            "token",
            "create",
            "c",
            "--role",
            "custodian",
        ],
    ))
    .unwrap();
    let token = v["token"].as_str().unwrap().to_owned();

    let mut server = keyhold(top.path(), &["serve", "--admin-listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(server.stdout.take().unwrap()).lines();
    let admin = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("keyhold admin on ").map(str::to_owned))
        .expect("the admin listener's address");
    let port = admin.rsplit(':').next().unwrap();
    let remote = keyhold(
        &elsewhere,
        &[
            "--server",
            &format!("https://localhost:{port}"),
            "--server-ca",
            "../keyhold-data/tls/ca.pem",
            "key",
            "create",
            "/x",
            "k3",
        ],
    )
    .env("KEYHOLD_ADMIN_TOKEN", &token)
    .output()
    .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        remote.status.success(),
        "{}",
        String::from_utf8_lossy(&remote.stderr)
    );

    one_verifiable_audit_log_beside_the_data(top.path(), &elsewhere);
}

/// One audit directory, where the data directory is.
fn one_verifiable_audit_log_beside_the_data(top: &Path, elsewhere: &Path) {
    let data = top.join("keyhold-data");
    assert!(data.join("audit/admin").is_dir());
    assert!(
        !data.join("keyhold-data").exists(),
        "a second data directory was made inside the first"
    );
    let created: Vec<String> = serde_json::from_str::<serde_json::Value>(&ok(
        top,
        &["--json", "audit", "query", "--operation", "key create"],
    ))
    .unwrap()
    .as_array()
    .unwrap()
    .iter()
    .map(|r| r["key"].as_str().unwrap_or("").to_owned())
    .collect();
    for k in ["k1", "k2", "k3"] {
        assert!(created.iter().any(|c| c == k), "{k} missing: {created:?}");
    }
    for cwd in [top, elsewhere] {
        let dd = if cwd == top {
            "keyhold-data"
        } else {
            "../keyhold-data"
        };
        let v: serde_json::Value =
            serde_json::from_str(&ok(cwd, &["--data-dir", dd, "--json", "audit", "verify"]))
                .unwrap();
        assert_eq!(v["ok"], true, "{v}");
    }
}

/// `keyhold` run in `cwd` as a user would: no data directory, passphrase
/// or token from the environment.
fn keyhold(cwd: &Path, args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(BIN);
    c.current_dir(cwd)
        .args(args)
        .env_remove("KEYHOLD_DATA_DIR")
        .env_remove("KEYHOLD_PASSPHRASE")
        .env_remove("KEYHOLD_ADMIN_TOKEN")
        .stdin(std::process::Stdio::null());
    c
}

/// [`keyhold`]'s output; it must succeed.
fn ok(cwd: &Path, args: &[&str]) -> String {
    let o = keyhold(cwd, args).output().unwrap();
    assert!(
        o.status.success(),
        "keyhold {args:?} in {}: {}",
        cwd.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// The sequence numbers of a chain's records, in file order.
fn chain_seqs(env: &Env, chain: &str) -> Vec<u64> {
    audit_files(env, chain)
        .iter()
        .flat_map(|f| read(f).lines().map(str::to_owned).collect::<Vec<_>>())
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(&l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

/// Cuts the last `n` lines off a chain's newest file.
fn cut_tail(env: &Env, chain: &str, n: usize) {
    let f = audit_files(env, chain).pop().unwrap();
    let text = read(&f);
    let lines: Vec<&str> = text.lines().collect();
    let kept = &lines[..lines.len() - n];
    std::fs::write(
        &f,
        kept.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
}

/// A server killed (SIGKILL) before its next checkpoint, and the newest
/// lines of its log cut off: `verify` says the chain was not closed cleanly
/// and records may be missing, the restarted server records its unclean
/// start and numbers its records after the high-water mark it reserved
/// (never a number twice); with a checkpoint file off the box, the cut
/// records are caught outright once the off-box interval has passed.
#[test]
fn cutting_the_newest_records_after_a_kill_is_seen_and_no_number_is_reused() {
    let env = Env::new();
    env.run_ok(&["store", "create", "/demo"]);
    let cred = env.add_credential("/demo");
    env.run_ok(&["key", "create", "/demo", "k"]);
    let server = env.serve(&[]);
    for i in 0..5 {
        assert_eq!(encrypt(&server, &cred, &format!("a-{i}")).status, 200);
    }
    drop(server); // SIGKILL, long before the 10 s checkpoint.
    let before = chain_seqs(&env, "xks");
    assert_eq!(before.len(), 5, "{before:?}");
    cut_tail(&env, "xks", 2);

    // Before any restart: the chain was left open, and verify says so.
    let v = env.json(&["audit", "verify"]);
    assert_eq!(v["ok"], true, "{v}");
    let warnings = v["warnings"].to_string();
    assert!(warnings.contains("not closed cleanly"), "{v}");
    assert!(warnings.contains("cannot be proven complete"), "{v}");

    let server = env.serve(&[]);
    assert_eq!(encrypt(&server, &cred, "b-0").status, 200);
    server.terminate();
    let after = chain_seqs(&env, "xks");
    let max_before = *before.iter().max().unwrap();
    let new: Vec<u64> = after.iter().copied().filter(|s| *s > 3).collect();
    assert_eq!(new.len(), 2, "the unclean-start record and b-0: {after:?}");
    assert!(
        new.iter().all(|s| *s > max_before),
        "numbers {:?} reused: the log had reached {max_before}",
        new
    );
    let starts = env.json(&["audit", "query", "--operation", "audit.unclean_start"]);
    let starts = starts.as_array().unwrap();
    assert_eq!(starts.len(), 1, "{starts:?}");
    assert!(
        starts[0]["detail"]
            .as_str()
            .unwrap()
            .contains("ends at record 3"),
        "{starts:?}"
    );
    let out = env.cmd(&["audit", "verify"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("WARNING") && text.contains("skipped"),
        "{text}"
    );
    assert!(text.contains("see the warnings"), "{text}");
    // A clean stop leaves nothing to warn about next time.
    let server = env.serve(&[]);
    assert_eq!(encrypt(&server, &cred, "c-0").status, 200);
    server.terminate();
    assert_eq!(
        env.json(&["audit", "query", "--operation", "audit.unclean_start"])
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Off the box: a checkpoint file, written every 200 ms under traffic.
    let offbox = env.dir.path().join("offbox-checkpoints.jsonl");
    let cfg = read(&env.config())
        + &format!(
            "\n[audit]\ncheckpoint_file = {:?}\noffbox_checkpoint_interval_ms = 200\n",
            offbox.to_str().unwrap()
        );
    std::fs::write(env.config(), cfg).unwrap();
    let server = env.serve(&[]);
    for i in 0..5 {
        assert_eq!(encrypt(&server, &cred, &format!("d-{i}")).status, 200);
    }
    let last = *chain_seqs(&env, "xks").last().unwrap();
    eventually("an off-box checkpoint of the newest record", || {
        read(&offbox).lines().any(|l| {
            let c: serde_json::Value = serde_json::from_str(l).unwrap();
            c["chain"] == "xks" && c["kind"] == "checkpoint" && c["seq"].as_u64() == Some(last)
        })
    });
    drop(server);
    cut_tail(&env, "xks", 2);
    let out = env.cmd(&["audit", "verify"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("newest records were removed"), "{text}");
}

/// An admin change that committed is reported as done even when its audit
/// checkpoint cannot be written to the database (seen during a failover):
/// the record is in the log, and the CLI warns about the checkpoint.
#[test]
fn a_committed_admin_change_is_not_reported_failed_for_its_checkpoint() {
    let env = Env::new();
    env.run_ok(&["store", "create", "/demo"]);
    let db = env.data().join("keyhold.db");
    let st = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); \
             c.execute(\"CREATE TRIGGER no_cp BEFORE INSERT ON audit_checkpoints BEGIN SELECT RAISE(ABORT, 'checkpoints refused'); END\"); \
             c.commit()",
            db.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let out = env.cmd(&["key", "create", "/demo", "k"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("checkpoint"), "{err}");
    let keys = env.run_ok(&["key", "list", "/demo"]);
    assert!(keys.contains('k'), "{keys}");
    let q = env.json(&["audit", "query", "--operation", "key create"]);
    assert_eq!(q.as_array().unwrap().len(), 1, "{q}");
}
