//! The Azure Managed HSM EKM proxy API end to end: the real `keyhold`
//! binary serves a key store bound with `keyhold store create --api
//! azure-ekm` on its own TLS 1.3 listener, and curl plays Managed HSM as
//! the specification's "How to test" says — a client certificate from a
//! throw-away CA with the pool's common name, `?api-version=0.1-preview`,
//! base64url values — through info, metadata, wrapkey and unwrapkey with
//! AES-256 (A256KW, A256KWP) and RSA (RSA-OAEP-256, whose wrapped values
//! are made by pyca/cryptography from the metadata's n and e), and every
//! error case of the specification, each with its status and ProxyError.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use common::*;
use keyhold_server::tls::LocalCa;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;

const CN: &str = "test.managedhsmclient.azure.net";

/// A client identity: certificate and key files.
struct Client {
    cert: PathBuf,
    key: PathBuf,
}

fn write_client(dir: &Path, name: &str, issued: keyhold_server::tls::IssuedCert) -> Client {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, issued.cert_pem).unwrap();
    std::fs::write(&key, issued.key_pem).unwrap();
    Client { cert, key }
}

/// The throw-away PKI: Managed HSM's CA and client, a stranger with the
/// same common name from another CA, and a certificate of the right CA
/// with another name.
struct Pki {
    ca: PathBuf,
    hsm: Client,
    stranger: Client,
    wrong_name: Client,
}

fn pki(dir: &Path) -> Pki {
    let ca = LocalCa::new("Test Managed HSM Client CA").unwrap();
    let other = LocalCa::new("Someone Else's CA").unwrap();
    let ca_path = dir.join("azure-client-ca.pem");
    std::fs::write(&ca_path, ca.cert_pem()).unwrap();
    Pki {
        ca: ca_path,
        hsm: write_client(dir, "hsm", ca.issue_client(CN).unwrap()),
        stranger: write_client(dir, "stranger", other.issue_client(CN).unwrap()),
        wrong_name: write_client(dir, "wrong", ca.issue_client("other.example").unwrap()),
    }
}

/// The Azure listener of a running server.
struct Azure {
    port: u16,
    ca: PathBuf,
}

/// An answer: HTTP status (0 when no HTTP answer came) and body.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: serde_json::Value,
    curl_exit: i32,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    fn assert_error(&self, status: u16, code: &str) {
        assert_eq!((self.status, self.code()), (status, code), "{self:?}");
        assert!(
            self.body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{self:?}"
        );
    }
}

impl Azure {
    fn call(
        &self,
        client: Option<&Client>,
        method: &str,
        path: &str,
        body: &str,
        extra: &[&str],
    ) -> Answer {
        let url = format!("https://localhost:{}{path}", self.port);
        let mut c = Command::new("curl");
        c.args(["-sS", "-X", method, "--cacert"])
            .arg(&self.ca)
            .args([
                "-H",
                "Content-Type: application/json",
                "-w",
                "\n%{http_code}",
            ])
            .args(extra);
        if let Some(cl) = client {
            c.arg("--cert").arg(&cl.cert).arg("--key").arg(&cl.key);
        }
        if !body.is_empty() {
            c.args(["--data-binary", body]);
        }
        let out = c.arg(&url).output().expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
        Answer {
            status: status.trim().parse().unwrap_or(0),
            body: serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
            curl_exit: out.status.code().unwrap_or(-1),
        }
    }

    /// POST as Managed HSM does.
    fn post(&self, client: &Client, op: &str, body: serde_json::Value) -> Answer {
        self.call(
            Some(client),
            "POST",
            &format!("/pfx/{op}?api-version=0.1-preview"),
            &body.to_string(),
            &[],
        )
    }
}

fn ctx(id: &str) -> serde_json::Value {
    json!({"request_id": format!("r-{id}"), "correlation_id": id, "pool_name": "pool1"})
}

fn wrap_body(alg: &str, value: &[u8], id: &str) -> serde_json::Value {
    json!({"request_context": ctx(id), "alg": alg, "value": B64URL.encode(value)})
}

fn start(env: &Env) -> (Server, Azure) {
    let server = env.serve(&[
        "--azure-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let port = env.listener_port("azure-ekm");
    let ca = env.ca();
    (server, Azure { port, ca })
}

/// RSA-OAEP-256 encryption with a public key given as Azure's n and e,
/// by pyca/cryptography (as a Managed HSM caller would do it).
fn oaep256_encrypt(n: &str, e: &str, plaintext: &[u8]) -> Vec<u8> {
    let script = r#"
import base64, sys
from cryptography.hazmat.primitives.asymmetric import rsa, padding
from cryptography.hazmat.primitives import hashes
d = lambda s: int.from_bytes(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)), "big")
pub = rsa.RSAPublicNumbers(d(sys.argv[2]), d(sys.argv[1])).public_key()
ct = pub.encrypt(bytes.fromhex(sys.argv[3]), padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None))
print(ct.hex())
"#;
    let hex: String = plaintext.iter().map(|b| format!("{b:02x}")).collect();
    let out = Command::new("python3")
        .args(["-c", script, n, e, &hex])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8(out.stdout).unwrap();
    (0..s.trim().len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn managed_hsm_wraps_and_unwraps_through_the_ekm_api() {
    let env = Env::new();
    let pki = pki(env.dir.path());
    env.run_ok(&[
        "store",
        "create",
        "/azure",
        "--api",
        "azure-ekm",
        "--path-prefix",
        "/pfx",
        "--client-cn",
        CN,
        "--client-ca",
        pki.ca.to_str().unwrap(),
    ]);
    env.run_ok(&["key", "create", "/azure", "key-1"]);
    env.run_ok(&[
        "key",
        "create",
        "/azure",
        "rsa-1",
        "--type",
        "rsa-2048",
        "--usage",
        "ENCRYPT,DECRYPT",
    ]);
    env.run_ok(&["key", "create", "/azure", "ec-1", "--type", "ec-p256"]);
    let (_server, az) = start(&env);
    let hsm = &pki.hsm;

    // info: a POST with only the request context.
    let info = az.post(hsm, "info", json!({"request_context": ctx("c-info")}));
    assert_eq!(info.status, 200, "{info:?}");
    assert_eq!(info.body["api_version"], "0.1-preview");
    assert_eq!(info.body["proxy_vendor"], "Keyhold");
    for f in ["proxy_name", "ekm_vendor", "ekm_product"] {
        assert!(
            info.body[f].as_str().is_some_and(|s| !s.is_empty()),
            "{f}: {info:?}"
        );
    }

    // AES-256: metadata, then A256KW and A256KWP round trips.
    let m = az.post(
        hsm,
        "key-1/metadata",
        json!({"request_context": ctx("c-m1")}),
    );
    assert_eq!(m.status, 200, "{m:?}");
    assert_eq!(
        m.body,
        json!({"key_type": "oct", "key_size": 256, "key_ops": ["wrapKey", "unwrapKey"]})
    );
    let dek = B64URL
        .decode("ABEiM0RVZneImaq7zN3u_wABAgMEBQYHCAkKCwwNDg8")
        .unwrap();
    for (alg, len) in [("A256KW", 40), ("A256KWP", 40)] {
        let w = az.post(hsm, "key-1/wrapkey", wrap_body(alg, &dek, "c-w"));
        assert_eq!(w.status, 200, "{alg}: {w:?}");
        let wrapped = w.body["value"].as_str().unwrap().to_owned();
        assert!(
            !wrapped.contains('='),
            "base64url without padding: {wrapped}"
        );
        assert_eq!(B64URL.decode(&wrapped).unwrap().len(), len);
        // AES key wrap is deterministic.
        let again = az.post(hsm, "key-1/wrapkey", wrap_body(alg, &dek, "c-w2"));
        assert_eq!(again.body["value"], w.body["value"]);
        let u = az.post(
            hsm,
            "key-1/unwrapkey",
            json!({"request_context": ctx("c-u"), "alg": alg, "value": wrapped}),
        );
        assert_eq!(u.status, 200, "{alg}: {u:?}");
        assert_eq!(
            B64URL.decode(u.body["value"].as_str().unwrap()).unwrap(),
            dek
        );
    }
    // A256KWP takes any length.
    let w = az.post(
        hsm,
        "key-1/wrapkey",
        wrap_body("A256KWP", b"seven!!", "c-7"),
    );
    let u = az.post(
        hsm,
        "key-1/unwrapkey",
        json!({"request_context": ctx("c-7u"), "alg": "A256KWP", "value": w.body["value"]}),
    );
    assert_eq!(
        B64URL.decode(u.body["value"].as_str().unwrap()).unwrap(),
        b"seven!!"
    );

    // RSA: metadata with n and e; the caller encrypts, we unwrap; and our
    // own wrap (randomised) unwraps too.
    let m = az.post(
        hsm,
        "rsa-1/metadata",
        json!({"request_context": ctx("c-m2")}),
    );
    assert_eq!(m.status, 200, "{m:?}");
    assert_eq!(
        (m.body["key_type"].as_str(), m.body["key_size"].as_u64()),
        (Some("RSA"), Some(2048))
    );
    assert_eq!(m.body["key_ops"], json!(["wrapKey", "unwrapKey"]));
    assert_eq!(m.body["e"], "AQAB");
    let n = m.body["n"].as_str().unwrap();
    assert_eq!(
        B64URL.decode(n).unwrap().len(),
        256,
        "unsigned big-endian modulus"
    );
    let ct = oaep256_encrypt(n, "AQAB", &dek);
    let u = az.post(
        hsm,
        "rsa-1/unwrapkey",
        wrap_body("RSA-OAEP-256", &ct, "c-ru"),
    );
    assert_eq!(u.status, 200, "{u:?}");
    assert_eq!(
        B64URL.decode(u.body["value"].as_str().unwrap()).unwrap(),
        dek
    );
    let w1 = az.post(
        hsm,
        "rsa-1/wrapkey",
        wrap_body("RSA-OAEP-256", &dek, "c-rw"),
    );
    let w2 = az.post(
        hsm,
        "rsa-1/wrapkey",
        wrap_body("RSA-OAEP-256", &dek, "c-rw2"),
    );
    assert_eq!(w1.status, 200, "{w1:?}");
    assert_ne!(
        w1.body["value"], w2.body["value"],
        "RSA-OAEP wrap is randomised"
    );
    let u = az.post(
        hsm,
        "rsa-1/unwrapkey",
        json!({"request_context": ctx("c-ru2"), "alg": "RSA-OAEP-256", "value": w1.body["value"]}),
    );
    assert_eq!(
        B64URL.decode(u.body["value"].as_str().unwrap()).unwrap(),
        dek
    );

    // ---- errors, as the specification lists them ----
    // No client certificate: 401 with a ProxyError.
    az.call(
        None,
        "POST",
        "/pfx/info?api-version=0.1-preview",
        &json!({"request_context": ctx("x")}).to_string(),
        &[],
    )
    .assert_error(401, "Unauthorized");
    // The right CA, another name: 401.
    az.post(
        &pki.wrong_name,
        "info",
        json!({"request_context": ctx("x")}),
    )
    .assert_error(401, "Unauthorized");
    // A foreign CA: the handshake fails (no HTTP answer).
    let a = az.post(&pki.stranger, "info", json!({"request_context": ctx("x")}));
    assert_eq!(a.status, 0, "{a:?}");
    assert_ne!(a.curl_exit, 0);
    // TLS 1.2 offered: refused.
    let a = az.call(
        Some(hsm),
        "POST",
        "/pfx/info?api-version=0.1-preview",
        "{}",
        &["--tls-max", "1.2"],
    );
    assert_eq!(a.status, 0, "{a:?}");
    // api-version missing or unknown.
    let body = json!({"request_context": ctx("x")}).to_string();
    az.call(Some(hsm), "POST", "/pfx/info", &body, &[])
        .assert_error(400, "BadRequest");
    az.call(Some(hsm), "POST", "/pfx/info?api-version=1.0", &body, &[])
        .assert_error(400, "UnsupportedApiVersion");
    // GET: 405, still a ProxyError.
    az.call(
        Some(hsm),
        "GET",
        "/pfx/info?api-version=0.1-preview",
        "",
        &[],
    )
    .assert_error(405, "MethodNotAllowed");
    // Malformed JSON and a missing request context.
    az.call(
        Some(hsm),
        "POST",
        "/pfx/info?api-version=0.1-preview",
        "{not json",
        &[],
    )
    .assert_error(400, "BadRequest");
    az.post(
        hsm,
        "key-1/wrapkey",
        json!({"alg": "A256KW", "value": "AA"}),
    )
    .assert_error(400, "BadRequest");
    // Padded or standard base64.
    let padded = json!({"request_context": ctx("x"), "alg": "A256KW",
        "value": "ABEiM0RVZneImaq7zN3u_wABAgMEBQYHCAkKCwwNDg8="});
    az.post(hsm, "key-1/wrapkey", padded)
        .assert_error(400, "BadRequest");
    let standard = json!({"request_context": ctx("x"), "alg": "A256KW",
        "value": "ABEiM0RVZneImaq7zN3u/wABAgMEBQYHCAkKCwwNDg8"});
    az.post(hsm, "key-1/wrapkey", standard)
        .assert_error(400, "BadRequest");
    // Key names: 65 characters, or an underscore.
    let long = format!("{}/metadata", "k".repeat(65));
    az.post(hsm, &long, json!({"request_context": ctx("x")}))
        .assert_error(400, "BadRequest");
    az.post(hsm, "key_1/metadata", json!({"request_context": ctx("x")}))
        .assert_error(400, "BadRequest");
    // Unknown key: 404; names are case-sensitive.
    az.post(hsm, "nokey/metadata", json!({"request_context": ctx("x")}))
        .assert_error(404, "KeyNotFound");
    az.post(hsm, "KEY-1/wrapkey", wrap_body("A256KW", &dek, "x"))
        .assert_error(404, "KeyNotFound");
    // The algorithm of the other key type; one we do not know.
    az.post(hsm, "rsa-1/wrapkey", wrap_body("A256KW", &dek, "x"))
        .assert_error(400, "UnsupportedAlgorithm");
    az.post(hsm, "key-1/wrapkey", wrap_body("RSA-OAEP-256", &dek, "x"))
        .assert_error(400, "UnsupportedAlgorithm");
    az.post(hsm, "key-1/wrapkey", wrap_body("A128KW", &dek, "x"))
        .assert_error(400, "UnsupportedAlgorithm");
    // Sizes: A256KW of 12 bytes, an RSA value that is not 256 bytes, RSA
    // wrap input above k - 2*hLen - 2.
    az.post(hsm, "key-1/wrapkey", wrap_body("A256KW", &[1; 12], "x"))
        .assert_error(400, "BadRequest");
    az.post(
        hsm,
        "rsa-1/unwrapkey",
        wrap_body("RSA-OAEP-256", &[1; 255], "x"),
    )
    .assert_error(400, "BadRequest");
    az.post(
        hsm,
        "rsa-1/wrapkey",
        wrap_body("RSA-OAEP-256", &[1; 191], "x"),
    )
    .assert_error(400, "BadRequest");
    // A flipped byte in a wrapped value.
    let w = az.post(hsm, "key-1/wrapkey", wrap_body("A256KW", &dek, "x"));
    let mut bad = B64URL.decode(w.body["value"].as_str().unwrap()).unwrap();
    bad[5] ^= 0x80;
    az.post(hsm, "key-1/unwrapkey", wrap_body("A256KW", &bad, "x"))
        .assert_error(400, "BadRequest");
    let mut bad_rsa = ct.clone();
    bad_rsa[100] ^= 1;
    az.post(
        hsm,
        "rsa-1/unwrapkey",
        wrap_body("RSA-OAEP-256", &bad_rsa, "x"),
    )
    .assert_error(400, "BadRequest");
    // An EC key cannot serve Azure.
    az.post(hsm, "ec-1/metadata", json!({"request_context": ctx("x")}))
        .assert_error(403, "OperationNotAllowed");
    // A path no store serves.
    az.call(
        Some(hsm),
        "POST",
        "/other/info?api-version=0.1-preview",
        &body,
        &[],
    )
    .assert_error(404, "NotFound");

    // Break glass: a disabled key, then a disabled store, refuse on the
    // next request (403 KeyDisabled), and serve again when enabled.
    env.run_ok(&["key", "disable", "/azure", "key-1"]);
    az.post(hsm, "key-1/wrapkey", wrap_body("A256KW", &dek, "x"))
        .assert_error(403, "KeyDisabled");
    az.post(hsm, "key-1/metadata", json!({"request_context": ctx("x")}))
        .assert_error(403, "KeyDisabled");
    env.run_ok(&["key", "enable", "/azure", "key-1"]);
    assert_eq!(
        az.post(hsm, "key-1/wrapkey", wrap_body("A256KW", &dek, "x"))
            .status,
        200
    );
    env.run_ok(&["store", "disable", "/azure"]);
    az.post(hsm, "rsa-1/unwrapkey", wrap_body("RSA-OAEP-256", &ct, "x"))
        .assert_error(403, "KeyDisabled");
    env.run_ok(&["store", "enable", "/azure"]);
    assert_eq!(
        az.post(hsm, "rsa-1/unwrapkey", wrap_body("RSA-OAEP-256", &ct, "x"))
            .status,
        200
    );

    // Every call is in the audit log with its request context and the
    // client certificate's name; never a value.
    let records = env.json(&[
        "audit",
        "query",
        "--frontend",
        "azure-ekm",
        "--limit",
        "1000",
    ]);
    let records = records.as_array().unwrap();
    let ru = records
        .iter()
        .find(|r| r["request_id"] == "r-c-ru")
        .expect("the RSA unwrap's record");
    assert_eq!(ru["operation"], "unwrapkey");
    assert_eq!(ru["result"], "OK");
    assert_eq!(ru["store"], "/azure");
    assert_eq!(ru["key"], "rsa-1");
    assert_eq!(ru["key_version"], 1);
    assert_eq!(ru["actor"], CN);
    assert!(ru["context"]
        .as_str()
        .unwrap()
        .contains("pool_name=pool1 correlation_id=c-ru"));
    assert!(records.iter().any(|r| r["result"] == "Unauthorized"));
    assert!(records.iter().any(|r| r["result"] == "KeyDisabled"));
    let all = serde_json::to_string(records).unwrap();
    assert!(
        !all.contains("ABEiM0RVZneImaq7zN3u"),
        "no key value in the audit log"
    );

    // Prometheus counts the front-end's requests and errors.
    let out = std::fs::read_to_string(env.dir.path().join("serve.stdout")).unwrap();
    let metrics_url = out
        .lines()
        .find_map(|l| l.strip_prefix("keyhold metrics on "))
        .unwrap_or_else(|| panic!("no metrics address in: {out}"))
        .to_owned();
    let m = Command::new("curl")
        .args(["-sS", &metrics_url])
        .output()
        .unwrap();
    let m = String::from_utf8_lossy(&m.stdout);
    let line = m
        .lines()
        .find(|l| l.starts_with("keyhold_frontend_requests_last_hour{frontend=\"azure-ekm\"}"))
        .unwrap_or_else(|| panic!("{m}"));
    let n: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n > 30, "{line}");
    assert!(m.contains("keyhold_frontend_errors_last_hour{frontend=\"azure-ekm\"}"));

    // The XKS API does not serve an Azure store.
    assert!(env.run_ok(&["store", "list"]).contains("azure-ekm"));
    let listed = env.json(&["store", "list"]);
    assert_eq!(listed[0]["api"], "azure-ekm");
    assert_eq!(listed[0]["azure_ekm"]["path_prefix"], "/pfx");
}

#[test]
fn bindings_change_without_a_restart_and_tenants_stay_apart() {
    let env = Env::new();
    let dir = env.dir.path();
    let a = pki(&dir.join("a").tap_mkdir());
    let b = pki(&dir.join("b").tap_mkdir());
    for (store, prefix, p) in [("/ta", "/pfx", &a), ("/tb", "/tenant-b/prod", &b)] {
        env.run_ok(&[
            "store",
            "create",
            store,
            "--api",
            "azure-ekm",
            "--path-prefix",
            prefix,
            "--client-cn",
            CN,
            "--client-ca",
            p.ca.to_str().unwrap(),
        ]);
        env.run_ok(&["key", "create", store, "k"]);
    }
    let (_server, az) = start(&env);
    let ok = |c: &Client, path: &str| {
        az.call(
            Some(c),
            "POST",
            &format!("{path}?api-version=0.1-preview"),
            &json!({"request_context": ctx("t")}).to_string(),
            &[],
        )
    };
    assert_eq!(ok(&a.hsm, "/pfx/k/metadata").status, 200);
    assert_eq!(ok(&b.hsm, "/tenant-b/prod/k/metadata").status, 200);
    // Tenant B's certificate passes the handshake (its CA is known) but
    // not tenant A's store.
    ok(&b.hsm, "/pfx/k/metadata").assert_error(401, "Unauthorized");
    ok(&a.hsm, "/tenant-b/prod/k/metadata").assert_error(401, "Unauthorized");

    // Microsoft rotates tenant A's CA: the new one is bound while the
    // server runs, and counts from the next request.
    let rotated = pki(&dir.join("a2").tap_mkdir());
    env.run_ok(&[
        "store",
        "api",
        "/ta",
        "azure-ekm",
        "--path-prefix",
        "/pfx",
        "--client-cn",
        CN,
        "--client-ca",
        rotated.ca.to_str().unwrap(),
    ]);
    assert_eq!(ok(&rotated.hsm, "/pfx/k/metadata").status, 200);
    let old = ok(&a.hsm, "/pfx/k/metadata");
    assert!(old.status == 0 || old.status == 401, "{old:?}");

    // A prefix another store has is refused; back to XKS frees it.
    let out = env
        .cmd(&[
            "store",
            "api",
            "/tb",
            "azure-ekm",
            "--path-prefix",
            "/pfx",
            "--client-cn",
            CN,
            "--client-ca",
            b.ca.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already serves azure-ekm"));
    env.run_ok(&["store", "api", "/ta", "xks"]);
    let unbound = ok(&rotated.hsm, "/pfx/k/metadata");
    assert_ne!(unbound.status, 200, "{unbound:?}");
    // Bad input to the binding: a clear error.
    let bad_ca = dir.join("bad.pem");
    std::fs::write(&bad_ca, "not a certificate").unwrap();
    let out = env
        .cmd(&[
            "store",
            "api",
            "/ta",
            "azure-ekm",
            "--client-cn",
            CN,
            "--client-ca",
            bad_ca.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = env
        .cmd(&[
            "store",
            "api",
            "/ta",
            "azure-ekm",
            "--path-prefix",
            "no-slash",
            "--client-cn",
            CN,
            "--client-ca",
            a.ca.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("path prefix"),
        "{out:?}"
    );
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}

impl TapMkdir for PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

/// Keys resident in the HSM serve Managed HSM as well as keys wrapped under
/// the root of trust: AES key wrap inside the token (C_WrapKey and
/// C_UnwrapKey with CKM_AES_KEY_WRAP and CKM_AES_KEY_WRAP_PAD), across a
/// rotation, within the key's usage; RSA-OAEP-256 with a pair in the token.
#[test]
fn hsm_resident_keys_serve_managed_hsm() {
    let h = common::hsm::hsm_env();
    let env = &h.env;
    let pki = pki(env.dir.path());
    env.run_ok(&[
        "store",
        "create",
        "/azure",
        "--api",
        "azure-ekm",
        "--path-prefix",
        "/pfx",
        "--client-cn",
        CN,
        "--client-ca",
        pki.ca.to_str().unwrap(),
    ]);
    env.run_ok(&["key", "create", "/azure", "hk", "--protection", "hsm"]);
    env.run_ok(&[
        "key",
        "create",
        "/azure",
        "hw",
        "--protection",
        "hsm",
        "--usage",
        "ENCRYPT",
    ]);
    env.run_ok(&[
        "key",
        "create",
        "/azure",
        "hr",
        "--protection",
        "hsm",
        "--type",
        "rsa-2048",
        "--usage",
        "ENCRYPT,DECRYPT",
    ]);
    let (_server, az) = start(env);
    let hsm = &pki.hsm;
    let dek: Vec<u8> = (0..32).collect();

    let mut first = Vec::new();
    for (alg, len) in [("A256KW", 40), ("A256KWP", 40)] {
        let w = az.post(hsm, "hk/wrapkey", wrap_body(alg, &dek, "c-w"));
        assert_eq!(w.status, 200, "{alg}: {w:?}");
        let wrapped = B64URL.decode(w.body["value"].as_str().unwrap()).unwrap();
        assert_eq!(wrapped.len(), len);
        let u = az.post(hsm, "hk/unwrapkey", wrap_body(alg, &wrapped, "c-u"));
        assert_eq!(u.status, 200, "{alg}: {u:?}");
        assert_eq!(
            B64URL.decode(u.body["value"].as_str().unwrap()).unwrap(),
            dek
        );
        let mut bad = wrapped.clone();
        bad[3] ^= 0x40;
        az.post(hsm, "hk/unwrapkey", wrap_body(alg, &bad, "c-bad"))
            .assert_error(400, "BadRequest");
        first.push((alg, wrapped));
    }
    // RFC 5649 padding of a size that is not whole 8-byte blocks: wrapped
    // right, or refused where the module pads wrongly (Debian's SoftHSMv2
    // 2.6.1), never answered with a value that unwraps to other bytes.
    let odd = [0x11u8; 20];
    let w = az.post(hsm, "hk/wrapkey", wrap_body("A256KWP", &odd, "c-odd"));
    if w.status == 200 {
        let wrapped = B64URL.decode(w.body["value"].as_str().unwrap()).unwrap();
        let u = az.post(hsm, "hk/unwrapkey", wrap_body("A256KWP", &wrapped, "c-odd"));
        assert_eq!(
            B64URL.decode(u.body["value"].as_str().unwrap()).unwrap(),
            odd
        );
    } else {
        w.assert_error(403, "OperationNotAllowed");
        assert!(
            w.body["message"].as_str().unwrap().contains("RFC 5649"),
            "{w:?}"
        );
    }
    // A rotation makes a new key in the token; values wrapped by the old
    // one still unwrap.
    env.run_ok(&["key", "rotate", "/azure", "hk"]);
    let w = az.post(hsm, "hk/wrapkey", wrap_body("A256KW", &dek, "c-w3"));
    assert_eq!(w.status, 200, "{w:?}");
    assert_ne!(
        B64URL.decode(w.body["value"].as_str().unwrap()).unwrap(),
        first[0].1
    );
    for (alg, wrapped) in &first {
        let u = az.post(hsm, "hk/unwrapkey", wrap_body(alg, wrapped, "c-old"));
        assert_eq!(u.status, 200, "{alg}: {u:?}");
        assert_eq!(
            B64URL.decode(u.body["value"].as_str().unwrap()).unwrap(),
            dek
        );
    }
    // A key for ENCRYPT only wraps and does not unwrap.
    let w = az.post(hsm, "hw/wrapkey", wrap_body("A256KW", &dek, "c-hw"));
    assert_eq!(w.status, 200, "{w:?}");
    let wrapped = B64URL.decode(w.body["value"].as_str().unwrap()).unwrap();
    az.post(hsm, "hw/unwrapkey", wrap_body("A256KW", &wrapped, "c-hw"))
        .assert_error(403, "OperationNotAllowed");

    // RSA-OAEP-256 with the pair in the token, where the module does it
    // (SoftHSMv2 2.6 does OAEP with SHA-1 only, and says so).
    let m = az.post(hsm, "hr/metadata", json!({"request_context": ctx("c-m")}));
    assert_eq!(m.status, 200, "{m:?}");
    let ct = oaep256_encrypt(
        m.body["n"].as_str().unwrap(),
        m.body["e"].as_str().unwrap(),
        &dek,
    );
    let u = az.post(hsm, "hr/unwrapkey", wrap_body("RSA-OAEP-256", &ct, "c-r"));
    if u.status == 200 {
        assert_eq!(
            B64URL.decode(u.body["value"].as_str().unwrap()).unwrap(),
            dek
        );
    } else {
        u.assert_error(400, "BadRequest");
        let why = u.body["message"].as_str().unwrap();
        assert!(
            why.contains("PKCS#11 module does not do RSA-OAEP with SHA-256"),
            "{u:?}"
        );
    }

    // Every call is in the audit log with the key's version.
    let log = env.run_ok(&["audit", "query", "--store", "/azure"]);
    assert!(log.contains("c-old") && log.contains("c-hw"), "{log}");
}
