//! The admin API with roles: the real server, the real `keyhold --server`
//! client from a directory with no data directory in it, curl for raw
//! requests, curl --aws-sigv4 for the XKS side of break glass.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A client on another "host": its own empty working directory.
struct Client {
    dir: tempfile::TempDir,
    url: String,
    ca: PathBuf,
}

impl Client {
    fn run(&self, token: &str, args: &[&str]) -> Output {
        Command::new(BIN)
            .current_dir(self.dir.path())
            .env_remove("KEYHOLD_DATA_DIR")
            .env("KEYHOLD_ADMIN_TOKEN", token)
            .arg("--server")
            .arg(&self.url)
            .arg("--server-ca")
            .arg(&self.ca)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run keyhold")
    }

    fn ok(&self, token: &str, args: &[&str]) -> String {
        let o = self.run(token, args);
        assert!(
            o.status.success(),
            "keyhold --server {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// Runs a command that must fail; returns its error text.
    fn fails(&self, token: &str, args: &[&str]) -> String {
        let o = self.run(token, args);
        assert!(!o.status.success(), "keyhold --server {args:?} succeeded");
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
}

fn token(env: &Env, name: &str, role: &str, extra: &[&str]) -> String {
    let mut a = vec!["admin", "token", "create", name, "--role", role];
    a.extend_from_slice(extra);
    env.json(&a)["token"].as_str().unwrap().to_owned()
}

/// The address a server printed for one of its extra listeners.
fn bound(env: &Env, what: &str) -> String {
    let out = env.dir.path().join("serve.stdout");
    let prefix = format!("keyhold {what} on ");
    let mut addr = String::new();
    eventually(&format!("{what} listener"), || {
        match read(&out).lines().find_map(|l| l.strip_prefix(&prefix)) {
            Some(a) => {
                addr = a.to_owned();
                true
            }
            None => false,
        }
    });
    addr
}

fn curl(args: &[&str]) -> (u16, String) {
    let o = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    let code = code.trim().parse().unwrap_or(0);
    assert_ne!(
        code,
        0,
        "curl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    (code, body.to_owned())
}

/// A call of the typed API: token, method, path, body → status and JSON.
type Call<'a> = dyn Fn(&str, &str, &str, Option<&str>) -> (u16, serde_json::Value) + 'a;

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn roles_decide_what_each_token_may_do_and_every_call_is_audited() {
    let env = Env::new();
    // Scrapes need a token too.
    let mut config = read(&env.config());
    config.push_str("\n[metrics]\nlisten = \"127.0.0.1:0\"\nrequire_token = true\n");
    std::fs::write(env.config(), config).unwrap();

    // Whoever holds the root of trust makes the first tokens, locally.
    let alice = token(&env, "alice", "custodian", &[]);
    let ann = token(&env, "ann", "auditor", &[]);
    let op = token(&env, "op", "operator", &["--expires-in", "30d"]);
    let brief = token(&env, "brief", "operator", &["--expires-in", "1s"]);
    assert!(alice.starts_with("khadm_"));
    let listed = env.json(&["admin", "token", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 4);
    assert!(
        !listed.to_string().contains(&alice[25..]),
        "no secrets listed"
    );

    let server = env.serve(&["--admin-listen", "127.0.0.1:0"]);
    let admin = bound(&env, "admin");
    let metrics = bound(&env, "metrics");
    let c = Client {
        dir: tempfile::tempdir().unwrap(),
        url: format!("https://{admin}"),
        ca: env.ca(),
    };

    // No token, a wrong one, an expired one: 401, and nothing runs.
    let e = c.fails("", &["status"]);
    assert!(e.contains("KEYHOLD_ADMIN_TOKEN"), "{e}");
    let (code, _) = curl(&[
        "--cacert",
        env.ca().to_str().unwrap(),
        &format!("https://{admin}/v1/whoami"),
    ]);
    assert_eq!(code, 401);
    let mut wrong = alice.clone();
    wrong.replace_range(wrong.len() - 4.., "AAAA");
    assert!(c.fails(&wrong, &["status"]).contains("(401)"));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert!(c.fails(&brief, &["status"]).contains("(401)"));

    operator_sees_status_and_metrics_only(&c, &op, metrics);
    let cred = custodian_changes_are_in_force_at_once(&c, &alice, &server);
    files_go_between_client_and_server(&env, &c, &alice, &ann, &server, &cred);
    custodians_make_and_revoke_tokens_but_read_no_audit(&c, &alice, &ann);
    auditors_read_and_every_call_is_recorded(&c, &alice, &ann);
    raw_requests_are_checked_and_recorded(&env, &c, &admin, &alice, &op);
    drop(server);
}

/// Operator: status and metrics only.
fn operator_sees_status_and_metrics_only(c: &Client, op: &str, metrics: String) {
    assert!(c.ok(op, &["status"]).contains("health     ACTIVE"));
    assert_eq!(c.ok(op, &["admin", "whoami"]).trim(), "op (operator)");
    let e = c.fails(op, &["key", "list", "/demo"]);
    assert!(e.contains("(403)") && e.contains("operator"), "{e}");
    let murl = metrics;
    assert_eq!(curl(&[&murl]).0, 401);
    let (code, body) = curl(&["-H", &format!("Authorization: Bearer {op}"), &murl]);
    assert_eq!(code, 200);
    assert!(body.contains("keyhold_keys"));
}

/// Custodian: stores, keys, credentials, policies, break glass.
fn custodian_changes_are_in_force_at_once(c: &Client, alice: &str, server: &Server) -> Cred {
    c.ok(alice, &["store", "create", "/demo"]);
    let v: serde_json::Value =
        serde_json::from_str(&c.ok(alice, &["--json", "store", "credential", "add", "/demo"]))
            .unwrap();
    let cred = Cred {
        akid: v["access_key_id"].as_str().unwrap().to_owned(),
        secret: v["secret_access_key"].as_str().unwrap().to_owned(),
    };
    c.ok(alice, &["key", "create", "/demo", "k1"]);
    assert_eq!(demo_encrypt(server, &cred, "k1", b"x").status, 200);
    let out = c.ok(alice, &["key", "disable", "/demo", "k1"]);
    assert!(out.contains("DISABLED"), "{out}");
    // In force when the command returns.
    demo_encrypt(server, &cred, "k1", b"x").assert_error(400, "InvalidStateException");
    c.ok(alice, &["key", "enable", "/demo", "k1"]);
    assert_eq!(demo_encrypt(server, &cred, "k1", b"x").status, 200);
    c.ok(alice, &["lockdown"]);
    demo_encrypt(server, &cred, "k1", b"x").assert_error(400, "InvalidStateException");
    c.ok(alice, &["unlock"]);

    cred
}

/// Files: the policy is read on the client and sent; outputs come back
/// to the client's paths, with their modes, never overwriting.
fn files_go_between_client_and_server(
    env: &Env,
    c: &Client,
    alice: &str,
    ann: &str,
    server: &Server,
    cred: &Cred,
) {
    std::fs::write(
    c.path("p.toml"),
    "[[rule]]\nname = \"roles\"\neffect = \"allow\"\nprincipal = [\"arn:aws:iam::123456789012:role/*\"]\n",
)
.unwrap();
    c.ok(
        alice,
        &["policy", "set", "--store", "/demo", "--file", "p.toml"],
    );
    assert!(c
        .ok(ann, &["policy", "show", "--store", "/demo"])
        .contains("roles"));
    demo_encrypt(server, cred, "k1", b"x").assert_error(403, "AccessDeniedException");
    c.ok(alice, &["policy", "remove", "--store", "/demo"]);
    c.ok(
        alice,
        &["store", "kms-config", "/demo", "--output", "kms.json"],
    );
    assert_eq!(mode(&c.path("kms.json")), 0o600);
    assert!(read(&c.path("kms.json")).contains("/demo/kms/xks/v1"));
    assert!(!env.data().join("kms.json").exists());
    let e = c.fails(
        alice,
        &["store", "kms-config", "/demo", "--output", "kms.json"],
    );
    assert!(e.contains("kms.json"), "{e}");
    c.ok(
        alice,
        &["kmip", "client-cert", "issue", "db1", "--out", "."],
    );
    assert_eq!(mode(&c.path("db1.key")), 0o600);
    assert!(read(&c.path("db1.pem")).contains("BEGIN CERTIFICATE"));
    c.ok(alice, &["backup", "create", "b.khb"]);
    assert!(std::fs::metadata(c.path("b.khb")).unwrap().len() > 100);
    assert!(c
        .ok(alice, &["backup", "verify", "b.khb"])
        .contains("verified"));
}

/// The custodian does not read the audit log; commands that make data
/// directories or open the HSM are not on the API at all.
fn custodians_make_and_revoke_tokens_but_read_no_audit(c: &Client, alice: &str, ann: &str) {
    let e = c.fails(alice, &["audit", "query"]);
    assert!(e.contains("(403)") && e.contains("auditor role"), "{e}");
    assert!(c
        .fails(alice, &["hsm", "status"])
        .contains("only on the server's host"));

    // Custodians make tokens; a revoked one stops at once.
    let v: serde_json::Value = serde_json::from_str(&c.ok(
        alice,
        &[
            "--json", "admin", "token", "create", "bob", "--role", "auditor",
        ],
    ))
    .unwrap();
    let bob = v["token"].as_str().unwrap().to_owned();
    assert!(c
        .ok(&bob, &["audit", "verify"])
        .contains("verified: intact"));
    assert!(c
        .fails(ann, &["admin", "token", "revoke", "bob"])
        .contains("(403)"));
    c.ok(alice, &["admin", "token", "revoke", "bob"]);
    assert!(c.fails(&bob, &["status"]).contains("(401)"));
}

/// The auditor reads metadata and the audit log; it changes nothing.
fn auditors_read_and_every_call_is_recorded(c: &Client, alice: &str, ann: &str) {
    assert!(c.ok(ann, &["key", "list", "/demo"]).contains("k1"));
    assert!(c
        .fails(ann, &["key", "disable", "/demo", "k1"])
        .contains("(403)"));
    c.ok(ann, &["audit", "export", "--out", "audit.jsonl"]);
    assert_eq!(mode(&c.path("audit.jsonl")), 0o600);
    let records: Vec<serde_json::Value> = read(&c.path("audit.jsonl"))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let admin_records: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["frontend"] == "admin")
        .collect();
    let find = |op: &str, result: &str, actor: &str| {
        admin_records.iter().any(|r| {
            r["operation"] == op
                && r["result"] == result
                && r["actor"].as_str().unwrap_or("").contains(actor)
        })
    };
    assert!(
        find("key disable", "OK", "token alice (custodian"),
        "{admin_records:#?}"
    );
    assert!(find("key list", "AccessDenied", "token op (operator"));
    assert!(find(
        "audit query",
        "AccessDenied",
        "token alice (custodian"
    ));
    assert!(find(
        "authenticate",
        "ERROR",
        "unauthenticated from 127.0.0.1"
    ));
    assert!(find("admin token create", "OK", "token alice (custodian"));
    assert!(
        find("admin token create", "OK", "uid"),
        "local creation by the OS user"
    );
    assert!(
        !read(&c.path("audit.jsonl")).contains(&alice[25..]),
        "no token in the audit log"
    );
    assert!(c.ok(ann, &["audit", "verify"]).contains("verified: intact"));
}

/// Raw requests: unknown paths, bad bodies, unknown fields; the old
/// argv endpoint is gone.
fn raw_requests_are_checked_and_recorded(
    env: &Env,
    c: &Client,
    admin: &str,
    alice: &str,
    op: &str,
) {
    let auth = format!("Authorization: Bearer {alice}");
    let ca = env.ca();
    let base = format!("https://{admin}");
    let raw = |path: &str, body: Option<&str>| {
        let mut a = vec![
            "--cacert".to_owned(),
            ca.to_str().unwrap().to_owned(),
            "-H".into(),
            auth.clone(),
        ];
        if let Some(b) = body {
            a.extend(["-X".into(), "POST".into(), "--data-binary".into(), b.into()]);
        }
        a.push(format!("{base}{path}"));
        curl(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    assert_eq!(
        raw("/admin/v1/command", Some(r#"{"args":["status"]}"#)).0,
        404
    );
    assert_eq!(raw("/v1/nope", None).0, 404);
    assert_eq!(raw("/v1/backups", None).0, 405);
    let (code, body) = raw("/v1/stores", Some("{not json"));
    assert_eq!(code, 400, "{body}");
    let (code, body) = raw("/v1/stores", Some(r#"{"prefix":"/x","config":"/decoy"}"#));
    assert_eq!(code, 400, "unknown fields are refused: {body}");
    let (code, body) = raw("/v1/backups/verify", Some("{}"));
    assert_eq!(code, 400, "a missing field: {body}");
    let (code, body) = raw("/v1/status", None);
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["health"], "ACTIVE");
    assert_eq!(raw("/v1/whoami", None).0, 200);
    // Every one of these authenticated calls is in the audit log, named
    // as the command it amounts to (never a store taken from a bad body).
    let by_alice: Vec<serde_json::Value> = env
        .json(&["audit", "query", "--frontend", "admin", "--limit", "10000"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["actor"]
                .as_str()
                .is_some_and(|a| a.contains("token alice"))
        })
        .cloned()
        .collect();
    let seen = |op: &str, detail: &str| {
        by_alice.iter().any(|r| {
            r["operation"] == op && r["detail"].as_str().is_some_and(|d| d.contains(detail))
        })
    };
    assert!(seen("admin whoami", ""), "{by_alice:#?}");
    assert!(seen("store create", "malformed request"), "{by_alice:#?}");
    assert!(seen("status", ""));
    assert!(
        by_alice.iter().all(|r| r["store"] != "/decoy"),
        "the record named a store from the body"
    );
    // Another CA's client does not trust the server.
    let other = Env::new();
    let e = Client {
        dir: tempfile::tempdir().unwrap(),
        url: format!("https://{admin}"),
        ca: other.ca(),
    }
    .fails(alice, &["status"]);
    assert!(e.contains("TLS"), "{e}");
    // And the server kept serving through all of it.
    assert!(c.ok(op, &["status"]).contains("ACTIVE"));
}

/// The typed API (`/v1/…`) with curl: resources as JSON, the same roles
/// and audit records as the CLI's commands, break glass in force when the
/// answer comes, and the OpenAPI document served as checked in.
#[test]
fn typed_api_resources_roles_audit_and_openapi() {
    let env = Env::new();
    let alice = token(&env, "alice", "custodian", &[]);
    let ann = token(&env, "ann", "auditor", &[]);
    let op = token(&env, "op", "operator", &[]);
    let server = env.serve(&["--admin-listen", "127.0.0.1:0"]);
    let base = format!("https://{}", bound(&env, "admin"));
    let ca = env.ca();
    let call = |token: &str, method: &str, path: &str, body: Option<&str>| {
        let mut a = vec![
            "--cacert".to_owned(),
            ca.to_str().unwrap().to_owned(),
            "-X".into(),
            method.into(),
        ];
        if !token.is_empty() {
            a.extend(["-H".into(), format!("Authorization: Bearer {token}")]);
        }
        if let Some(b) = body {
            a.extend([
                "-H".into(),
                "Content-Type: application/json".into(),
                "--data-binary".into(),
                b.into(),
            ]);
        }
        a.push(format!("{base}{path}"));
        let (code, text) = curl(&a.iter().map(String::as_str).collect::<Vec<_>>());
        let v = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        (code, v)
    };

    the_openapi_document_is_served_as_checked_in(&call, &alice);
    let cred = a_custodian_makes_a_store_a_credential_and_a_key(&call, &alice, &server);
    auditors_read_and_operators_read_nothing(&call, &ann, &op, &cred);
    break_glass_is_in_force_when_the_answer_comes(&call, &alice, &server, &cred);
    lifecycle_through_the_api(&call, &alice, &ann, &server, &cred);
    every_api_call_is_recorded_as_its_command(&env);
    drop(server);
}

/// The document needs no token, and is the one in the repository.
fn the_openapi_document_is_served_as_checked_in(call: &Call<'_>, alice: &str) {
    let (code, doc) = call("", "GET", "/v1/openapi.json", None);
    assert_eq!(code, 200);
    let kept: serde_json::Value = serde_json::from_str(&read(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/openapi.json"
    ))))
    .unwrap();
    assert!(
    doc == kept,
    "served and checked-in OpenAPI documents differ: run UPDATE_OPENAPI=1 cargo test -p keyhold-server openapi"
);

    // No token: 401; unknown paths and methods: 404, 405.
    assert_eq!(call("", "GET", "/v1/stores", None).0, 401);
    assert_eq!(call(alice, "GET", "/v1/nothing", None).0, 404);
    assert_eq!(call(alice, "DELETE", "/v1/stores", None).0, 405);
}

/// A custodian makes a store, a credential and a key.
fn a_custodian_makes_a_store_a_credential_and_a_key(
    call: &Call<'_>,
    alice: &str,
    server: &Server,
) -> Cred {
    let (code, s) = call(
        alice,
        "POST",
        "/v1/stores",
        Some(r#"{"prefix":"/demo","description":"typed"}"#),
    );
    assert_eq!(code, 201, "{s}");
    assert_eq!(s["uri_path"], "/demo/kms/xks/v1");
    assert_eq!(
        call(alice, "POST", "/v1/stores", Some(r#"{"prefix":"/demo"}"#)).0,
        409
    );
    assert_eq!(
        call(
            alice,
            "POST",
            "/v1/stores",
            Some(r#"{"prefix":"/d","x":1}"#)
        )
        .0,
        400,
        "unknown fields are refused"
    );
    let (code, c) = call(alice, "POST", "/v1/stores/demo/credentials", None);
    assert_eq!(code, 201, "{c}");
    let cred = Cred {
        akid: c["access_key_id"].as_str().unwrap().to_owned(),
        secret: c["secret_access_key"].as_str().unwrap().to_owned(),
    };
    let (code, k) = call(
        alice,
        "POST",
        "/v1/stores/demo/keys",
        Some(r#"{"key_id":"k1"}"#),
    );
    assert_eq!(code, 201, "{k}");
    assert_eq!(k["state"], "ACTIVE");
    assert_eq!(demo_encrypt(server, &cred, "k1", b"x").status, 200);

    cred
}

/// The auditor reads; the secret is never listed; the operator reads nothing.
fn auditors_read_and_operators_read_nothing(call: &Call<'_>, ann: &str, op: &str, cred: &Cred) {
    let (code, creds) = call(ann, "GET", "/v1/stores/demo/credentials", None);
    assert_eq!(code, 200);
    assert!(!creds.to_string().contains(&cred.secret));
    let (code, keys) = call(ann, "GET", "/v1/stores/%2Fdemo/keys?limit=10", None);
    assert_eq!(code, 200);
    assert_eq!(keys[0]["key_id"], "k1");
    assert_eq!(call(ann, "GET", "/v1/stores/demo/keys/nope", None).0, 404);
    let (code, e) = call(op, "GET", "/v1/stores", None);
    assert_eq!(code, 403);
    assert!(e["error"].as_str().unwrap().contains("operator"), "{e}");
    assert_eq!(call(op, "GET", "/v1/lockdown", None).0, 200);
    let (code, _) = call(
        ann,
        "PATCH",
        "/v1/stores/demo/keys/k1",
        Some(r#"{"status":"DISABLED"}"#),
    );
    assert_eq!(code, 403);
}

/// Break glass: in force when the answer comes.
fn break_glass_is_in_force_when_the_answer_comes(
    call: &Call<'_>,
    alice: &str,
    server: &Server,
    cred: &Cred,
) {
    let (code, k) = call(
        alice,
        "PATCH",
        "/v1/stores/demo/keys/k1",
        Some(r#"{"status":"DISABLED"}"#),
    );
    assert_eq!((code, k["status"].as_str()), (200, Some("DISABLED")));
    demo_encrypt(server, cred, "k1", b"x").assert_error(400, "InvalidStateException");
    call(
        alice,
        "PATCH",
        "/v1/stores/demo/keys/k1",
        Some(r#"{"status":"ENABLED"}"#),
    );
    let (code, k) = call(alice, "POST", "/v1/stores/demo/keys/k1/rotate", None);
    assert_eq!((code, k["current_version"].as_u64()), (200, Some(2)));
    let (code, l) = call(alice, "PUT", "/v1/lockdown", Some(r#"{"lockdown":true}"#));
    assert_eq!((code, l["lockdown"].as_bool()), (200, Some(true)));
    demo_encrypt(server, cred, "k1", b"x").assert_error(400, "InvalidStateException");
    call(alice, "PUT", "/v1/lockdown", Some(r#"{"lockdown":false}"#));
    assert_eq!(demo_encrypt(server, cred, "k1", b"x").status, 200);
}

/// Lifecycle: versions, usage, dates, destruction with its confirmation.
fn lifecycle_through_the_api(
    call: &Call<'_>,
    alice: &str,
    ann: &str,
    server: &Server,
    cred: &Cred,
) {
    let (code, vs) = call(ann, "GET", "/v1/stores/demo/keys/k1/versions", None);
    assert_eq!(code, 200);
    assert_eq!(vs.as_array().map(Vec::len), Some(2), "{vs}");
    assert_eq!(vs[1]["current"], true);
    let (code, k) = call(
        alice,
        "PUT",
        "/v1/stores/demo/keys/k1/usage",
        Some(r#"{"usage":["DECRYPT"]}"#),
    );
    assert_eq!(
        (code, k["usage"].clone()),
        (200, serde_json::json!(["DECRYPT"]))
    );
    demo_encrypt(server, cred, "k1", b"x").assert_error(400, "InvalidKeyUsageException");
    call(
        alice,
        "PUT",
        "/v1/stores/demo/keys/k1/usage",
        Some(r#"{"usage":["ENCRYPT","DECRYPT"]}"#),
    );
    let (code, _) = call(
        alice,
        "PUT",
        "/v1/stores/demo/keys/k1/dates",
        Some(r#"{"deactivate_at":"yesterday"}"#),
    );
    assert_eq!(code, 400);
    call(
        alice,
        "POST",
        "/v1/stores/demo/keys",
        Some(r#"{"key_id":"gone"}"#),
    );
    let (code, e) = call(
        alice,
        "POST",
        "/v1/stores/demo/keys/gone/destroy",
        Some(r#"{"now":true,"confirm":"other"}"#),
    );
    assert_eq!(code, 400, "{e}");
    let (code, k) = call(alice, "POST", "/v1/stores/demo/keys/gone/deactivate", None);
    assert_eq!((code, k["state"].as_str()), (200, Some("DEACTIVATED")));
    let (code, k) = call(alice, "POST", "/v1/stores/demo/keys/gone/destroy", None);
    assert_eq!(code, 200, "{k}");
    assert!(k["destroy_at"].is_string(), "{k}");
    let (code, _) = call(alice, "POST", "/v1/stores/demo/keys/gone/activate", None);
    assert_eq!(code, 409, "a deactivated key does not activate again");

    let path = format!("/v1/stores/demo/credentials/{}", cred.akid);
    assert_eq!(call(alice, "DELETE", &path, None).0, 204);
    demo_encrypt(server, cred, "k1", b"x").assert_error(401, "AuthenticationFailedException");
}

/// Every call is recorded as the CLI's command would be.
fn every_api_call_is_recorded_as_its_command(env: &Env) {
    let records = env.json(&["audit", "query", "--frontend", "admin", "--limit", "10000"]);
    let records = records.as_array().unwrap();
    let find = |op: &str, result: &str, actor: &str| {
        records.iter().any(|r| {
            r["operation"] == op
                && r["result"] == result
                && r["actor"].as_str().unwrap_or("").contains(actor)
        })
    };
    assert!(find("store create", "OK", "token alice"), "{records:#?}");
    assert!(find("key disable", "OK", "token alice"));
    assert!(find("key disable", "AccessDenied", "token ann"));
    assert!(find("store list", "AccessDenied", "token op"));
    assert!(find("lockdown", "OK", "token alice"));
    assert!(find("unlock", "OK", "token alice"));
    assert!(find("store credential remove", "OK", "token alice"));
    assert!(find("key set-usage", "OK", "token alice"));
    assert!(find("key destroy", "OK", "token alice"));
    assert!(find("key versions", "OK", "token ann"));
    assert!(records
        .iter()
        .any(|r| r["operation"] == "key disable" && r["store"] == "/demo" && r["key"] == "k1"));
}
