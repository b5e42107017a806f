//! The tamper-evident audit log end to end: every XKS request (with its
//! kmsRequestId) and every admin command lands in a chain that verifies;
//! editing a record or cutting the tail off is caught and located.

mod common;

use common::*;
use serde_json::json;

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
    std::thread::sleep(std::time::Duration::from_millis(500));
    drop(server);

    // One record per request, found by its kmsRequestId.
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
    let all_text: String = audit_files(&env, "xks")
        .iter()
        .chain(audit_files(&env, "admin").iter())
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

    // An edited record is found, and where.
    let f = audit_files(&env, "xks").pop().unwrap();
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

    // The newest records cut off: caught by the checkpoint in the database.
    let kept: Vec<&str> = original.lines().take(15).collect();
    std::fs::write(&f, kept.join("\n") + "\n").unwrap();
    let out = env.cmd(&["audit", "verify"]).output().unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("newest records were removed"), "{text}");
}
