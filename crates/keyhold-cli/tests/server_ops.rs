//! Operating the server: mutual TLS, crash safety, secrets kept out of logs
//! and out of the database, the sealed root of trust, plain HTTP only on request.

mod common;

use common::*;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

const HEALTH: &str = r#"{"requestMetadata":{"kmsRequestId":"h","kmsOperation":"KmsHealthCheck"}}"#;

fn encrypt_body(pt: &[u8], aad: &[u8]) -> String {
    json!({
        "requestMetadata": meta("Encrypt"),
        "plaintext": b64(pt),
        "additionalAuthenticatedData": b64(aad),
        "encryptionAlgorithm": "AES_GCM",
        "ciphertextDataIntegrityValueAlgorithm": "SHA_256",
    })
    .to_string()
}

fn decrypt_body(enc: &serde_json::Value, aad: &[u8]) -> String {
    json!({
        "requestMetadata": meta("Decrypt"),
        "ciphertext": enc["ciphertext"],
        "ciphertextMetadata": enc["ciphertextMetadata"],
        "initializationVector": enc["initializationVector"],
        "authenticationTag": enc["authenticationTag"],
        "additionalAuthenticatedData": b64(aad),
        "encryptionAlgorithm": "AES_GCM",
    })
    .to_string()
}

#[test]
fn mutual_tls_checks_ca_and_subject() {
    use keyhold_server::tls::LocalCa;
    let env = Env::new();
    env.run_ok(&["store", "create", "/demo"]);
    let cred = env.add_credential("/demo");
    let dir = env.dir.path();
    let trusted = LocalCa::new("trusted client CA").unwrap();
    let other = LocalCa::new("some other CA").unwrap();
    let subject = "cks.kms.eu-west-1.amazonaws.com";
    let write = |name: &str, c: keyhold_server::tls::IssuedCert| {
        std::fs::write(dir.join(format!("{name}.pem")), c.cert_pem).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), c.key_pem).unwrap();
    };
    write("good", trusted.issue_client(subject).unwrap());
    write(
        "wrong-subject",
        trusted.issue_client("cks.kms.evil.example.com").unwrap(),
    );
    write("wrong-ca", other.issue_client(subject).unwrap());
    // A subject with two common names, one of them the right one, either
    // way round.
    write(
        "two-names-first",
        trusted
            .issue_client_two_names(subject, "cks.kms.evil.example.com")
            .unwrap(),
    );
    write(
        "two-names-second",
        trusted
            .issue_client_two_names("cks.kms.evil.example.com", subject)
            .unwrap(),
    );
    std::fs::write(dir.join("client-ca.pem"), trusted.cert_pem()).unwrap();
    let mut cfg = std::fs::read_to_string(env.config()).unwrap();
    cfg.push_str(&format!(
        "client_ca = \"{}\"\nclient_subject = \"{subject}\"\n",
        dir.join("client-ca.pem").display()
    ));
    std::fs::write(env.config(), cfg).unwrap();
    let server = env.serve(&[]);

    let with_cert = |name: &str| {
        Curl::new(&server, &cred)
            .arg("--cert")
            .arg(&dir.join(format!("{name}.pem")).display().to_string())
            .arg("--key")
            .arg(&dir.join(format!("{name}.key")).display().to_string())
            .send("/demo/kms/xks/v1/health", HEALTH)
    };
    let ok = with_cert("good");
    assert_eq!(ok.status, 200, "{ok:?}");
    for bad in [
        "wrong-subject",
        "wrong-ca",
        "two-names-first",
        "two-names-second",
    ] {
        let r = with_cert(bad);
        assert_eq!(r.status, 0, "{bad} must be refused in the handshake: {r:?}");
    }
    let r = Curl::new(&server, &cred).send("/demo/kms/xks/v1/health", HEALTH);
    assert_eq!(r.status, 0, "no client certificate must be refused: {r:?}");
    // The server kept serving through the refusals.
    assert_eq!(with_cert("good").status, 200);
    // (The log is written asynchronously: give it a moment.)
    eventually("the refusals are logged", || {
        read(&server.log).contains("TLS handshake refused")
    });
}

#[test]
fn acknowledged_keys_survive_sigkill() {
    let env = Env::new();
    env.run_ok(&["store", "create", "/demo"]);
    let cred = env.add_credential("/demo");
    env.run_ok(&["key", "create", "/demo", "batch", "--count", "5"]);
    let mut server = env.serve(&[]);
    // Keys created while the server runs, each acknowledged by the CLI.
    for i in 0..5 {
        env.run_ok(&["key", "create", "/demo", &format!("live-{i}")]);
    }
    env.run_ok(&["key", "rotate", "/demo", "live-0"]);
    let mut ids: Vec<String> = (1..=5).map(|i| format!("batch-{i:06}")).collect();
    ids.extend((0..5).map(|i| format!("live-{i}")));
    let mut encrypted = Vec::new();
    for id in &ids {
        let path = format!("/demo/kms/xks/v1/keys/{id}/encrypt");
        let mut r = Curl::new(&server, &cred).send(&path, &encrypt_body(id.as_bytes(), b"aad"));
        eventually(&format!("{id} encrypts"), || {
            if r.status != 200 {
                r = Curl::new(&server, &cred).send(&path, &encrypt_body(id.as_bytes(), b"aad"));
            }
            r.status == 200
        });
        encrypted.push((id.clone(), r.json()));
    }
    assert_eq!(
        unb64(encrypted[5].1["ciphertextMetadata"].as_str().unwrap()),
        vec![1, 0, 0, 0, 2],
        "live-0 was rotated before it encrypted"
    );
    // SIGKILL: no chance to flush anything.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    env.run_ok(&["key", "create", "/demo", "after-crash"]);
    let server = env.serve(&[]);
    for (id, enc) in &encrypted {
        let r = Curl::new(&server, &cred).send(
            &format!("/demo/kms/xks/v1/keys/{id}/decrypt"),
            &decrypt_body(enc, b"aad"),
        );
        assert_eq!(r.status, 200, "{id}: {r:?}");
        assert_eq!(
            unb64(r.json()["plaintext"].as_str().unwrap()),
            id.as_bytes()
        );
    }
    let keys = env.json(&["key", "list", "/demo"]);
    assert_eq!(keys.as_array().unwrap().len(), 11);
}

#[test]
fn no_secrets_in_logs_or_database() {
    let env = Env::new();
    env.run_ok(&["store", "create", "/demo"]);
    let cred = env.add_credential("/demo");
    env.run_ok(&["key", "create", "/demo", "k1"]);
    env.run_ok(&["key", "create", "/demo", "off"]);
    env.run_ok(&["key", "disable", "/demo", "off"]);
    let server = env.serve(&[]);
    let plaintext = b"CANARY-plaintext-7f3a9c21-data-key!";
    let aad = b"CANARY-aad-5b1e";
    let mut outputs = String::new();
    for _ in 0..3 {
        let r = Curl::new(&server, &cred).send(
            "/demo/kms/xks/v1/keys/k1/encrypt",
            &encrypt_body(plaintext, aad),
        );
        assert_eq!(r.status, 200);
        let enc = r.json();
        let d = Curl::new(&server, &cred)
            .send("/demo/kms/xks/v1/keys/k1/decrypt", &decrypt_body(&enc, aad));
        assert_eq!(d.status, 200);
        outputs.push_str(&d.body);
        // Failing paths must not log it either.
        Curl::new(&server, &cred).send(
            "/demo/kms/xks/v1/keys/off/encrypt",
            &encrypt_body(plaintext, aad),
        );
        Curl::new(&server, &cred).send(
            "/demo/kms/xks/v1/keys/k1/decrypt",
            &decrypt_body(&enc, b"wrong"),
        );
        Curl::new(&server, &cred).send(
            "/demo/kms/xks/v1/keys/k1/encrypt",
            &encrypt_body(plaintext, aad).replace("AES_GCM", "XX"),
        );
    }
    // Decrypt returned it: the test does see the plaintext.
    assert!(outputs.contains(&b64(plaintext)));
    drop(server);

    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let forbidden = [
        String::from_utf8(plaintext.to_vec()).unwrap(),
        b64(plaintext),
        hex(plaintext),
        hex(plaintext).to_uppercase(),
        String::from_utf8(aad.to_vec()).unwrap(),
        b64(aad),
        cred.secret.clone(),
    ];
    let logs = logs_and_audit_files(&env);
    assert!(logs.contains("kms_request_id"), "audit records expected");
    assert!(
        logs.contains(&format!("\"actor\":\"{}\"", cred.akid)),
        "the audit record names the credential that signed"
    );
    for f in &forbidden {
        assert!(
            !logs.contains(f.as_str()),
            "log output contains a secret ({} chars)",
            f.len()
        );
    }
    // The database alone reveals no credential secret.
    let db = database_bytes(&env);
    let secret_raw = unb64(&cred.secret);
    assert!(!db
        .windows(cred.secret.len())
        .any(|w| w == cred.secret.as_bytes()));
    assert!(!db
        .windows(secret_raw.len())
        .any(|w| w == secret_raw.as_slice()));
}

/// The server's logs and the audit log's files, as one text.
fn logs_and_audit_files(env: &Env) -> String {
    let mut logs = String::new();
    let mut dirs = vec![env.dir.path().to_owned()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_file() && (d == env.dir.path() || p.extension().is_some_and(|x| x == "jsonl")) {
                logs.push_str(&read(&p));
            } else if p.is_dir()
                && (p.ends_with("data") || p.ends_with("audit") || d.ends_with("audit"))
            {
                dirs.push(p);
            }
        }
    }
    logs
}

/// The bytes of the database and its WAL files.
fn database_bytes(env: &Env) -> Vec<u8> {
    let mut db = Vec::new();
    for entry in std::fs::read_dir(env.data()).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("keyhold.db")
        {
            db.extend(std::fs::read(&p).unwrap());
        }
    }
    db
}

#[test]
fn root_key_file_is_private_and_checked() {
    let env = Env::new();
    let root = env.data().join("root.key");
    let mode = std::fs::metadata(&root).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dmode = std::fs::metadata(env.data()).unwrap().permissions().mode() & 0o777;
    assert_eq!(dmode, 0o700);
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = env.cmd(&["store", "list"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("0600"));
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o600)).unwrap();
    env.run_ok(&["store", "list"]);
    // A different root cannot open this database.
    let other = Env::new();
    std::fs::copy(other.data().join("root.key"), &root).unwrap();
    let out = env.cmd(&["store", "list"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not the one"));
}

#[test]
fn sealed_root_needs_its_passphrase() {
    let pass = (
        "KEYHOLD_PASSPHRASE".to_owned(),
        "a long enough test passphrase".to_owned(),
    );
    let env = Env::with_init_args(&["--sealed"], vec![pass.clone()]);
    let root = read(&env.data().join("root.key"));
    // Argon2id, or in FIPS mode PBKDF2 (fips.rs tests the difference).
    let kdf = if keyhold_crypto::fips::BUILD {
        "pbkdf2-hmac-sha256"
    } else {
        "argon2id"
    };
    assert!(root.contains(kdf) && !root.contains("\"key\""));
    env.run_ok(&["store", "create", "/demo"]);
    let cred = env.add_credential("/demo");
    let server = env.serve(&[]);
    assert_eq!(
        Curl::new(&server, &cred)
            .send("/demo/kms/xks/v1/health", HEALTH)
            .status,
        200
    );
    drop(server);

    let mut no_pass = Env {
        dir: tempfile::tempdir().unwrap(),
        extra_env: vec![],
    };
    std::mem::swap(
        &mut no_pass.dir,
        &mut Env {
            dir: env.dir,
            extra_env: vec![],
        }
        .dir,
    );
    let out = no_pass.cmd(&["store", "list"]).output().unwrap();
    assert!(!out.status.success());
    let wrong = Env {
        dir: no_pass.dir,
        extra_env: vec![("KEYHOLD_PASSPHRASE".into(), "the wrong passphrase!".into())],
    };
    let out = wrong.cmd(&["store", "list"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong passphrase"));
    // A passphrase file works too.
    let pf = wrong.dir.path().join("pass");
    std::fs::write(&pf, format!("{}\n", pass.1)).unwrap();
    let ok = Env {
        dir: wrong.dir,
        extra_env: vec![],
    };
    ok.run_ok(&["--passphrase-file", pf.to_str().unwrap(), "store", "list"]);
}

#[test]
fn plain_http_only_when_asked() {
    let env = Env::new();
    env.run_ok(&["store", "create", "/"]);
    let cred = env.add_credential("/");
    // Without TLS files and without the flag the server refuses to start.
    let cfg = std::fs::read_to_string(env.config()).unwrap();
    let no_tls: String = cfg
        .lines()
        .filter(|l| !l.starts_with("cert") && !l.starts_with("key"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(env.config(), no_tls).unwrap();
    let out = env.cmd(&["serve"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("insecure_http"));
    if keyhold_crypto::fips::BUILD {
        // FIPS mode never serves plain HTTP (fips.rs).
        return;
    }
    let server = env.serve(&["--insecure-http"]);
    assert!(server.base.starts_with("http://"));
    // The empty prefix: /kms/xks/v1 directly.
    let r = Curl::new(&server, &cred).send("/kms/xks/v1/health", HEALTH);
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn tls_versions_and_suites_follow_the_spec() {
    let env = Env::new();
    env.run_ok(&["store", "create", "/demo"]);
    let cred = env.add_credential("/demo");
    let server = env.serve(&[]);
    let path = "/demo/kms/xks/v1/health";
    // TLS 1.3 (default) and TLS 1.2 with ECDHE-ECDSA-AES256-GCM-SHA384.
    assert_eq!(Curl::new(&server, &cred).send(path, HEALTH).status, 200);
    let r = Curl::new(&server, &cred)
        .arg("--tls-max")
        .arg("1.2")
        .send(path, HEALTH);
    assert_eq!(r.status, 200, "{r:?}");
    // HTTP/1.1 only works as well as HTTP/2.
    let r = Curl::new(&server, &cred)
        .arg("--http1.1")
        .send(path, HEALTH);
    assert_eq!(r.status, 200, "{r:?}");
    // Suites outside the spec's list are refused.
    let r = Curl::new(&server, &cred)
        .arg("--tls-max")
        .arg("1.2")
        .arg("--ciphers")
        .arg("ECDHE-ECDSA-AES128-GCM-SHA256")
        .send(path, HEALTH);
    assert_eq!(r.status, 0, "AES-128 suite must be refused: {r:?}");
    let r = Curl::new(&server, &cred)
        .arg("--tls13-ciphers")
        .arg("TLS_AES_128_GCM_SHA256")
        .send(path, HEALTH);
    assert_eq!(r.status, 0, "TLS 1.3 AES-128 suite must be refused: {r:?}");
    // TLS 1.1 and below are refused.
    let r = Curl::new(&server, &cred)
        .arg("--tls-max")
        .arg("1.1")
        .send(path, HEALTH);
    assert_eq!(r.status, 0, "{r:?}");
}

/// `keyhold status` lists the servers running on the data directory: pid,
/// uptime and every listener; a stopped one is gone from the list.
#[test]
fn status_lists_the_running_servers_and_their_listeners() {
    let env = Env::new();
    let none = env.json(&["status"]);
    assert_eq!(none["servers"], json!([]), "{none}");
    let server = env.serve(&["--admin-listen", "127.0.0.1:0"]);
    let pid = server.child.id();
    let mut listed = serde_json::Value::Null;
    eventually("the listeners are registered", || {
        listed = env.json(&["status"]);
        listed["servers"][0]["listeners"]["admin"].is_string()
    });
    let s = &listed["servers"][0];
    assert_eq!(listed["servers"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(s["pid"], pid, "{listed}");
    assert_eq!(
        s["listeners"]["xks"],
        format!("https://127.0.0.1:{}", server.port),
        "{listed}"
    );
    assert!(s["uptime_s"].as_i64().unwrap() >= 0);
    let text = env.run_ok(&["status"]);
    assert!(
        text.contains(&format!("pid {pid}")) && text.contains("1 running on"),
        "{text}"
    );
    server.terminate();
    assert_eq!(env.json(&["status"])["servers"], json!([]));
}

/// The certificate a listener presents, as `openssl s_client` receives it
/// (PEM), trusting `ca`; with `client` (certificate, key) when the
/// listener wants one.
fn presented_cert(
    port: u16,
    ca: &std::path::Path,
    client: Option<(&std::path::Path, &std::path::Path)>,
) -> String {
    let mut c = std::process::Command::new("openssl");
    c.args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-servername", "localhost", "-verify_return_error"])
        .arg("-CAfile")
        .arg(ca)
        .stdin(std::process::Stdio::null());
    if let Some((cert, key)) = client {
        c.arg("-cert").arg(cert).arg("-key").arg(key);
    }
    let out = c.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    match (
        text.find("-----BEGIN CERTIFICATE-----"),
        text.find("-----END CERTIFICATE-----"),
    ) {
        (Some(a), Some(b)) => text[a..b].split_whitespace().collect(),
        _ => String::new(),
    }
}

fn pem_body(pem: &str) -> String {
    let b = pem.find("-----END CERTIFICATE-----").unwrap();
    pem[..b].split_whitespace().collect()
}

/// Certificates are replaced under load, as certbot or a PKI renews them:
/// every listener (XKS, admin API, KMIP) presents the new one to the next
/// connection, no request fails, and SIGHUP does not stop the server.
#[test]
fn tls_certificates_reload_without_a_restart() {
    use keyhold_server::tls::LocalCa;
    let env = Env::new();
    env.run_ok(&["store", "create", "/demo"]);
    let cred = std::sync::Arc::new(env.add_credential("/demo"));
    env.run_ok(&["key", "create", "/demo", "k"]);
    let d = env.dir.path().to_owned();
    env.run_ok(&[
        "kmip",
        "client-cert",
        "issue",
        "c",
        "--out",
        d.to_str().unwrap(),
    ]);
    let server = env.serve(&[
        "--admin-listen",
        "127.0.0.1:0",
        "--kmip-listen",
        "127.0.0.1:0",
    ]);
    let ports = admin_and_kmip_ports(&d);
    // Clients trust the old CA and the new one.
    let ca = LocalCa::new("renewed CA").unwrap();
    let new = ca.issue_server(&["localhost", "127.0.0.1"]).unwrap();
    let bundle = d.join("bundle.pem");
    std::fs::write(&bundle, read(&env.ca()) + &ca.cert_pem()).unwrap();
    let client = (d.join("c.pem"), d.join("c.key"));
    let client = Some((client.0.as_path(), client.1.as_path()));
    let old = read(&env.data().join("tls/server.pem"));
    for port in [server.port, ports.0] {
        assert_eq!(presented_cert(port, &bundle, None), pem_body(&old));
    }
    assert_eq!(presented_cert(ports.1, &bundle, client), pem_body(&old));

    // Load: a new connection per request (curl), trusting both CAs.
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let done = std::sync::Arc::new(AtomicUsize::new(0));
    let load = encrypt_on_new_connections(&server, &cred, &bundle, &stop, &done);
    eventually("load runs", || done.load(Ordering::Relaxed) > 2);
    // The key first, then the certificate, each replaced whole (rename):
    // in between the pair does not match and the old one is kept.
    let tls = env.data().join("tls");
    for (name, data) in [("server.key", &new.key_pem), ("server.pem", &new.cert_pem)] {
        let tmp = tls.join(format!("{name}.new"));
        std::fs::write(&tmp, data).unwrap();
        std::fs::rename(&tmp, tls.join(name)).unwrap();
    }
    eventually("every listener presents the new certificate", || {
        presented_cert(server.port, &bundle, None) == pem_body(&new.cert_pem)
            && presented_cert(ports.0, &bundle, None) == pem_body(&new.cert_pem)
            && presented_cert(ports.1, &bundle, client) == pem_body(&new.cert_pem)
    });
    let at_switch = done.load(Ordering::Relaxed);
    eventually("load goes on after the switch", || {
        done.load(Ordering::Relaxed) > at_switch + 2
    });
    // SIGHUP reloads at once and does not stop the server.
    let pid = server.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    eventually("the reload is logged", || {
        read(&server.log).contains("TLS certificate reloaded")
    });
    stop.store(true, Ordering::Relaxed);
    let statuses = load.join().unwrap();
    assert!(!statuses.is_empty());
    assert!(
        statuses.iter().all(|s| *s == 200),
        "failed requests: {statuses:?}"
    );
    let mut s2 = server.detached();
    s2.ca = bundle.clone();
    assert_eq!(demo_encrypt(&s2, &cred, "k", b"after").status, 200);
}

/// The admin and KMIP listeners' ports, once the server has said them.
fn admin_and_kmip_ports(d: &Path) -> (u16, u16) {
    let mut ports = (0u16, 0u16);
    eventually("the admin and KMIP listeners", || {
        let out = read(&d.join("serve.stdout"));
        let port = |what: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("keyhold {what} on 127.0.0.1:")))
                .and_then(|p| p.parse().ok())
                .unwrap_or(0)
        };
        ports = (port("admin"), port("kmip"));
        ports.0 != 0 && ports.1 != 0
    });
    ports
}

/// XKS Encrypt on a new connection per request (curl) trusting `bundle`,
/// until `stop`; the statuses answered.
fn encrypt_on_new_connections(
    server: &Server,
    cred: &std::sync::Arc<Cred>,
    bundle: &Path,
    stop: &std::sync::Arc<AtomicBool>,
    done: &std::sync::Arc<AtomicUsize>,
) -> std::thread::JoinHandle<Vec<u16>> {
    let (s, cred, stop, done, bundle) = (
        server.detached(),
        cred.clone(),
        stop.clone(),
        done.clone(),
        bundle.to_owned(),
    );
    std::thread::spawn(move || {
        let mut statuses = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let mut s2 = s.detached();
            s2.ca = bundle.clone();
            statuses.push(demo_encrypt(&s2, &cred, "k", b"during renewal").status);
            done.fetch_add(1, Ordering::Relaxed);
        }
        statuses
    })
}

/// `keyhold doctor` checks what AWS KMS will need: with a certificate from
/// a CA the client trusts, for the public name, every key store answers;
/// a store without a credential, a wrong name, Keyhold's own local CA and
/// a stopped server are each reported with what to do.
#[test]
fn doctor_checks_what_aws_kms_needs() {
    use keyhold_server::tls::LocalCa;
    let env = Env::new();
    env.run_ok(&["store", "create", "/demo"]);
    env.add_credential("/demo");
    env.run_ok(&["store", "create", "/bare"]);
    let doctor = |extra: &[&str]| {
        let mut a = vec!["--json", "doctor"];
        a.extend_from_slice(extra);
        let out = env.cmd(&a).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
        (out.status.success(), v)
    };
    let status = |v: &serde_json::Value, check: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|f| f["check"] == check)
            .map(|f| f["status"].as_str().unwrap().to_owned())
            .unwrap_or_else(|| panic!("no {check} in {v}"))
    };
    // Keyhold's own local CA, no server: both said.
    let (ok, v) = doctor(&[]);
    assert!(!ok);
    assert_eq!(status(&v, "certificate chain"), "FAIL", "{v}");
    let text = v.to_string();
    assert!(
        text.contains("Keyhold's own local CA") && text.contains("no server is running"),
        "{v}"
    );

    // A certificate from a CA the client trusts (a stand-in for a public
    // one), for the public name.
    let ca = LocalCa::new("Stand-in Public CA").unwrap();
    let cert = ca.issue_server(&["localhost", "127.0.0.1"]).unwrap();
    std::fs::write(env.data().join("tls/server.pem"), &cert.cert_pem).unwrap();
    std::fs::write(env.data().join("tls/server.key"), &cert.key_pem).unwrap();
    let trust = env.dir.path().join("public-ca.pem");
    std::fs::write(&trust, ca.cert_pem()).unwrap();
    let trust = trust.to_str().unwrap();
    let _server = env.serve(&[]);
    let (ok, v) = doctor(&["--public-name", "localhost", "--trust", trust]);
    assert_eq!(status(&v, "certificate chain"), "ok", "{v}");
    assert_eq!(status(&v, "key store /demo"), "ok", "{v}");
    assert_eq!(status(&v, "key store /bare"), "FAIL", "{v}");
    assert_eq!(status(&v, "listen"), "warn", "not port 443: {v}");
    assert!(!ok, "a store without a credential fails the run");
    env.add_credential("/bare");
    let (ok, v) = doctor(&["--public-name", "localhost", "--trust", trust]);
    assert_eq!(status(&v, "key store /bare"), "ok", "{v}");
    assert!(ok, "warnings alone pass: {v}");
    // The name AWS would call is not on the certificate.
    let (ok, v) = doctor(&["--public-name", "xks.example.com", "--trust", trust]);
    assert!(!ok);
    assert_eq!(status(&v, "certificate chain"), "FAIL", "{v}");
    assert_eq!(status(&v, "key store /demo"), "FAIL", "{v}");
}
