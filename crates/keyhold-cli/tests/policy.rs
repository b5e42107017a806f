//! Secondary authorization through the real binary and curl: wildcard
//! principals, deny over allow, AccessDeniedException naming the rule in the
//! audit log, health never subject, malformed policies refused, and changes
//! in force when the command returns.

mod common;

use common::*;
use serde_json::json;
use std::path::Path;

fn encrypt(server: &Server, cred: &Cred, principal: &str, via: &str, id: &str) -> Resp {
    let mut m = meta("Encrypt");
    m["awsPrincipalArn"] = json!(principal);
    m["kmsViaService"] = json!(via);
    m["kmsRequestId"] = json!(id);
    let body = json!({
        "requestMetadata": m, "plaintext": b64(b"data key"), "encryptionAlgorithm": "AES_GCM",
    });
    Curl::new(server, cred).send("/demo/kms/xks/v1/keys/k/encrypt", &body.to_string())
}

fn audit_rule(env: &Env, id: &str) -> serde_json::Value {
    env.json(&["audit", "query", "--kms-request-id", id])[0]["rule"].clone()
}

const ROLE: &str = "arn:aws:iam::123456789012:role/app";
const USER: &str = "arn:aws:iam::123456789012:user/Alice";

#[test]
fn policies_allow_deny_and_are_audited() {
    let env = Env::new();
    env.run_ok(&["store", "create", "/demo"]);
    let cred = env.add_credential("/demo");
    env.run_ok(&["key", "create", "/demo", "k"]);
    let server = env.serve(&[]);
    assert_eq!(
        encrypt(&server, &cred, USER, "ebs", "r0").status,
        200,
        "no policy: allow"
    );

    let f = env.dir.path().join("p.toml");
    std::fs::write(
        &f,
        r#"
[[rule]]
name = "roles"
effect = "allow"
principal = ["arn:aws:iam::123456789012:role/*"]

[[rule]]
name = "no-s3"
effect = "deny"
via_service = ["s3"]
"#,
    )
    .unwrap();
    env.run_ok(&[
        "policy",
        "set",
        "--store",
        "/demo",
        "--file",
        f.to_str().unwrap(),
    ]);
    assert_eq!(encrypt(&server, &cred, ROLE, "ebs", "r1").status, 200);
    assert_eq!(audit_rule(&env, "r1"), "roles");
    encrypt(&server, &cred, USER, "ebs", "r2").assert_error(403, "AccessDeniedException");
    assert_eq!(audit_rule(&env, "r2"), "(no rule allows)");
    let r = encrypt(&server, &cred, ROLE, "s3", "r3");
    r.assert_error(403, "AccessDeniedException");
    assert!(r.json()["errorMessage"].as_str().unwrap().contains("no-s3"));
    assert_eq!(audit_rule(&env, "r3"), "no-s3");
    // Health is never subject to secondary authorization.
    let h = Curl::new(&server, &cred).send(
        "/demo/kms/xks/v1/health",
        r#"{"requestMetadata":{"kmsRequestId":"h","kmsOperation":"KmsHealthCheck"}}"#,
    );
    assert_eq!(h.status, 200);

    policy_test_decides_the_same_way(&env);
    a_key_policy_applies_on_top(&env, &server, &cred);
    a_malformed_policy_is_refused(&env, &server, &cred, &f);
    // Removing the policies allows again, at once.
    env.run_ok(&["policy", "remove", "--store", "/demo"]);
    env.run_ok(&["policy", "remove", "--store", "/demo", "--key", "k"]);
    assert_eq!(encrypt(&server, &cred, USER, "rds", "r7").status, 200);
    let admin = env.json(&["audit", "query", "--operation", "policy set"]);
    assert!(!admin.as_array().unwrap().is_empty());
}

/// policy test evaluates a sample request the same way.
fn policy_test_decides_the_same_way(env: &Env) {
    let t = env.json(&[
        "policy",
        "test",
        "--store",
        "/demo",
        "--principal",
        ROLE,
        "--via-service",
        "s3",
    ]);
    assert_eq!(
        (t["decision"].clone(), t["rule"].clone()),
        (json!("DENY"), json!("no-s3"))
    );
    let t = env.json(&["policy", "test", "--store", "/demo", "--principal", ROLE]);
    assert_eq!(t["decision"], "ALLOW");
}

/// A key policy applies on top of the store's: deny wins.
fn a_key_policy_applies_on_top(env: &Env, server: &Server, cred: &Cred) {
    let kf = env.dir.path().join("k.toml");
    std::fs::write(
        &kf,
        "[[rule]]\nname = \"enc-only-ebs\"\neffect = \"allow\"\nvia_service = [\"ebs\"]\n",
    )
    .unwrap();
    env.run_ok(&[
        "policy",
        "set",
        "--store",
        "/demo",
        "--key",
        "k",
        "--file",
        kf.to_str().unwrap(),
    ]);
    encrypt(server, cred, ROLE, "rds", "r4").assert_error(403, "AccessDeniedException");
    assert_eq!(encrypt(server, cred, ROLE, "ebs", "r5").status, 200);
}

/// A malformed policy is refused with a clear error; the old one stays.
fn a_malformed_policy_is_refused(env: &Env, server: &Server, cred: &Cred, f: &Path) {
    std::fs::write(
        f,
        "[[rule]]\nname = \"x\"\neffect = \"allow\"\nprincipals = [\"*\"]\n",
    )
    .unwrap();
    let out = env
        .cmd(&[
            "policy",
            "set",
            "--store",
            "/demo",
            "--file",
            f.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("principals") && err.contains("p.toml"),
        "{err}"
    );
    encrypt(server, cred, USER, "ebs", "r6").assert_error(403, "AccessDeniedException");
}

/// The Prometheus endpoint on its own listener.
#[test]
fn metrics_count_requests_keys_and_health() {
    let env = Env::new();
    env.run_ok(&["store", "create", "/demo"]);
    let cred = env.add_credential("/demo");
    env.run_ok(&["key", "create", "/demo", "k"]);
    env.run_ok(&["key", "create", "/demo", "pre", "--pre-active"]);
    let server = env.serve(&["--metrics-listen", "127.0.0.1:0"]);
    let mut url = String::new();
    eventually("the metrics address is printed", || {
        url = read(&env.dir.path().join("serve.stdout"))
            .lines()
            .find_map(|l| l.strip_prefix("keyhold metrics on ").map(str::to_owned))
            .unwrap_or_default();
        !url.is_empty()
    });
    for i in 0..3 {
        assert_eq!(
            encrypt(&server, &cred, USER, "ebs", &format!("m{i}")).status,
            200
        );
    }
    let out = std::process::Command::new("curl")
        .args(["-sS", &url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "keyhold_xks_requests_total{operation=\"Encrypt\",store=\"/demo\",outcome=\"OK\"} 3",
        "keyhold_xks_request_duration_seconds_count{operation=\"Encrypt\",store=\"/demo\",outcome=\"OK\"} 3",
        "keyhold_keys{store=\"/demo\",state=\"ACTIVE\",status=\"ENABLED\"} 1",
        "keyhold_keys{store=\"/demo\",state=\"PRE_ACTIVE\",status=\"ENABLED\"} 1",
        "keyhold_lockdown 0",
        "keyhold_audit_failing 0",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert!(
        text.contains("keyhold_ekm_health{") && text.contains("} 1\n"),
        "{text}"
    );
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &url.replace("/metrics", "/other"),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
}
