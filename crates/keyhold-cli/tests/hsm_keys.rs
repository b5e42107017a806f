//! Keys that live in the HSM: made there or adopted by label, their usage
//! set in the token too, rotated (a new key in the HSM per version),
//! served concurrently; refused without an HSM root of trust.

mod common;

use common::hsm::*;
use common::*;
use serde_json::json;
use std::path::PathBuf;
use std::process::Command;

#[test]
fn hsm_resident_keys_created_and_imported() {
    let h = hsm_env();
    let env = &h.env;
    env.run_ok(&["store", "create", "/demo"]);
    let cred = env.add_credential("/demo");
    let k = env.json(&["key", "create", "/demo", "hk", "--protection", "hsm"]);
    assert_eq!(k[0]["protection"], "HSM");
    assert_eq!(k[0]["hsm_label"], "keyhold:/demo:hk");
    env.run_ok(&["key", "create", "/demo", "soft"]);
    a_key_made_by_another_tool_is_adopted(env);
    keyholds_own_keys_are_never_adopted(env);
    key_pairs_live_in_the_hsm_too(env);
    let server = usage_is_in_the_token_too(env);
    an_encrypt_only_key_encrypts(&server, &cred);
    hsm_keys_rotate_and_retired_versions_leave_the_hsm(env, &server, &cred);
    concurrent_requests_on_an_hsm_key_succeed(&server, &cred);
}

/// A key made by another tool (OpenSC's pkcs11-tool), adopted by label.
fn a_key_made_by_another_tool_is_adopted(env: &Env) {
    let conf = &env.extra_env[0].1;
    let out = pkcs11_tool(
        conf,
        &[
            "--keygen",
            "--key-type",
            "AES:32",
            "--label",
            "legacy-key",
            "--sensitive",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let k = env.json(&["key", "import-hsm", "/demo", "--label", "legacy-key"]);
    assert_eq!(k[0]["key_id"], "legacy-key");
    let out = env
        .cmd(&["key", "import-hsm", "/demo", "--label", "no-such-label"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-label"));
}

/// Key pairs made in the token: their private key sensitive and never
/// extractable there, their public key printed as PEM; a pair made by
/// another tool adopted with its type read from the token.
fn key_pairs_live_in_the_hsm_too(env: &Env) {
    let conf = &env.extra_env[0].1;
    let k = env.json(&[
        "key",
        "create",
        "/demo",
        "hsm-ec",
        "--protection",
        "hsm",
        "--type",
        "ec-p256",
    ]);
    assert_eq!(k[0]["key_spec"], "ECC_NIST_P256");
    assert_eq!(k[0]["protection"], "HSM");
    let pem = env.run_ok(&["key", "public-key", "/demo", "hsm-ec"]);
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
    let out = pkcs11_tool(
        conf,
        &[
            "--list-objects",
            "--type",
            "privkey",
            "--label",
            "keyhold:/demo:hsm-ec",
        ],
    );
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("EC") && listed.contains("never extractable"),
        "{listed}"
    );
    let out = pkcs11_tool(
        conf,
        &[
            "--keypairgen",
            "--key-type",
            "rsa:2048",
            "--label",
            "legacy-rsa",
            "--sensitive",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let k = env.json(&[
        "key",
        "import-hsm",
        "/demo",
        "--label",
        "legacy-rsa",
        "--usage",
        "ENCRYPT,DECRYPT",
    ]);
    assert_eq!(k[0]["key_spec"], "RSA_2048");
    let labels = env.json(&["hsm", "list-keys"]);
    assert!(labels
        .as_array()
        .unwrap()
        .contains(&json!("keyhold:/demo:hsm-ec")));
    let table = env.run_ok(&["hsm", "list-keys"]);
    assert!(
        table
            .lines()
            .any(|l| l.contains("legacy-rsa") && l.contains("key pair")),
        "{table}"
    );
    // Its public key, straight from the token, is the one OpenSC reads.
    let ours = env.run_ok(&["key", "public-key", "/demo", "legacy-rsa"]);
    let dir = tempfile::tempdir().unwrap();
    let der = dir.path().join("pub.der");
    let out = pkcs11_tool(
        conf,
        &[
            "--read-object",
            "--type",
            "pubkey",
            "--label",
            "legacy-rsa",
            "--output-file",
            der.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs = std::process::Command::new("openssl")
        .args(["pkey", "-pubin", "-inform", "DER", "-in"])
        .arg(&der)
        .output()
        .unwrap();
    assert_eq!(ours, String::from_utf8_lossy(&theirs.stdout));
}

/// Keyhold's own keys in the token are never adopted as customer keys.
fn keyholds_own_keys_are_never_adopted(env: &Env) {
    for own in ["keyhold-kek", "keyhold-kek-health"] {
        let out = env
            .cmd(&[
                "key",
                "import-hsm",
                "/demo",
                "--label",
                own,
                "--key-id",
                "stolen",
            ])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{own} was adopted");
        assert!(said.contains("Keyhold's own key"), "{said}");
    }
    let labels = env.json(&["hsm", "list-keys"]);
    assert!(labels
        .as_array()
        .unwrap()
        .contains(&json!("keyhold:/demo:hk")));
}

/// A key's usage is in the token too, as OpenSC's pkcs11-tool reads it:
/// exactly encrypt and/or decrypt, with AES key wrap in the same
/// directions (wrap with encrypt, unwrap with decrypt), never sign or verify.
fn usage_is_in_the_token_too(env: &Env) -> Server {
    let conf = &env.extra_env[0].1;
    env.run_ok(&[
        "key",
        "create",
        "/demo",
        "enc-hsm",
        "--protection",
        "hsm",
        "--usage",
        "ENCRYPT",
    ]);
    env.run_ok(&[
        "key",
        "create",
        "/demo",
        "none-hsm",
        "--protection",
        "hsm",
        "--usage",
        "NONE",
    ]);
    let token_usage = |label: &str| -> String {
        let out = pkcs11_tool(conf, &["--list-objects", "--type", "secrkey"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // Objects are listed one block each: its label, then its usage.
        let mut current = "";
        for l in text.lines().map(str::trim) {
            if let Some(n) = l.strip_prefix("label:") {
                current = n.trim();
            } else if let Some(u) = l.strip_prefix("Usage:") {
                if current == label {
                    return u.trim().to_owned();
                }
            }
        }
        panic!("no usage for {label}: {text}")
    };
    assert_eq!(
        token_usage("keyhold:/demo:hk"),
        "encrypt, decrypt, wrap, unwrap"
    );
    assert_eq!(token_usage("keyhold:/demo:enc-hsm"), "encrypt, wrap");
    assert_eq!(token_usage("keyhold:/demo:none-hsm"), "none");
    // The adopted key's attributes now say its usage (both) and no more.
    assert_eq!(token_usage("legacy-key"), "encrypt, decrypt, wrap, unwrap");
    let out = env
        .cmd(&["key", "set-usage", "/demo", "enc-hsm", "--usage", "DECRYPT"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("attributes in the HSM token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(token_usage("keyhold:/demo:enc-hsm"), "decrypt, unwrap");
    env.run_ok(&["key", "set-usage", "/demo", "enc-hsm", "--usage", "ENCRYPT"]);

    env.serve(&[])
}

/// An encrypt-only HSM key encrypts (the token could not decrypt to
/// check it; it refuses a CDIV, which needs that).
fn an_encrypt_only_key_encrypts(server: &Server, cred: &Cred) {
    let body = json!({
        "requestMetadata": meta("Encrypt"), "plaintext": b64(b"x"),
        "encryptionAlgorithm": "AES_GCM",
    });
    let r =
        Curl::new(server, cred).send("/demo/kms/xks/v1/keys/enc-hsm/encrypt", &body.to_string());
    assert_eq!(r.status, 200, "{r:?}");
}

/// Rotation of an HSM-resident key: a new key in the HSM per version;
/// ciphertext of every live version decrypts; retired versions are
/// refused, then trimmed out of the HSM.
fn hsm_keys_rotate_and_retired_versions_leave_the_hsm(env: &Env, server: &Server, cred: &Cred) {
    env.run_ok(&["key", "create", "/demo", "hr", "--protection", "hsm"]);
    let (v1, d) = encrypt_decrypt(server, cred, "hr", b"under v1");
    assert_eq!(d.status, 200);
    env.run_ok(&["key", "rotate", "/demo", "hr"]);
    env.run_ok(&["key", "set-rotation", "/demo", "hr", "--period", "90d"]);
    let (v2, d) = encrypt_decrypt(server, cred, "hr", b"under v2");
    assert_eq!(d.status, 200);
    let hr = env.json(&["key", "show", "/demo", "hr"]);
    assert_eq!(hr[0]["current_version"], 2, "{hr}");
    let labels = env.json(&["hsm", "list-keys"]);
    assert!(labels
        .as_array()
        .unwrap()
        .contains(&json!("keyhold:/demo:hr#v2")));
    let decrypt = |dec: &serde_json::Value| {
        Curl::new(server, cred).send("/demo/kms/xks/v1/keys/hr/decrypt", &dec.to_string())
    };
    let d = decrypt(&v1);
    assert_eq!(d.status, 200, "{d:?}");
    assert_eq!(unb64(d.json()["plaintext"].as_str().unwrap()), b"under v1");
    env.run_ok(&["key", "set-min-decrypt-version", "/demo", "hr", "2"]);
    decrypt(&v1).assert_error(400, "InvalidStateException");
    env.run_ok(&["key", "trim-versions", "/demo", "hr"]);
    let labels = env.json(&["hsm", "list-keys"]);
    let labels = labels.as_array().unwrap();
    assert!(!labels.contains(&json!("keyhold:/demo:hr")), "{labels:?}");
    assert!(labels.contains(&json!("keyhold:/demo:hr#v2")));
    assert_eq!(decrypt(&v2).status, 200);
    decrypt(&v1).assert_error(400, "InvalidStateException");
    env.run_ok(&["key", "destroy", "/demo", "hr", "--now", "--confirm", "hr"]);
    let labels = env.json(&["hsm", "list-keys"]);
    assert!(
        !labels.to_string().contains("keyhold:/demo:hr"),
        "every version left the HSM: {labels}"
    );

    for key in ["hk", "legacy-key", "soft"] {
        let (mut dec, d) = encrypt_decrypt(server, cred, key, key.as_bytes());
        assert_eq!(d.status, 200, "{key}: {d:?}");
        assert_eq!(
            unb64(d.json()["plaintext"].as_str().unwrap()),
            key.as_bytes()
        );
        // Tampering is caught by the HSM's GCM as well.
        dec["additionalAuthenticatedData"] = json!(b64(b"other"));
        Curl::new(server, cred)
            .send(
                &format!("/demo/kms/xks/v1/keys/{key}/decrypt"),
                &dec.to_string(),
            )
            .assert_error(400, "InvalidCiphertextException");
    }
}

/// Concurrent requests on an HSM-resident key all succeed.
fn concurrent_requests_on_an_hsm_key_succeed(server: &Server, cred: &Cred) {
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let base = server.base.clone();
            let ca = server.ca.clone();
            let cred = Cred {
                akid: cred.akid.clone(),
                secret: cred.secret.clone(),
            };
            std::thread::spawn(move || {
                let s = Server {
                    child: Command::new("true").spawn().unwrap(),
                    base,
                    port: 0,
                    log: PathBuf::new(),
                    ca,
                };
                for j in 0..5 {
                    let pt = format!("t{i}-{j}");
                    let (_, d) = encrypt_decrypt(&s, &cred, "hk", pt.as_bytes());
                    assert_eq!(d.status, 200, "{d:?}");
                    assert_eq!(
                        unb64(d.json()["plaintext"].as_str().unwrap()),
                        pt.as_bytes()
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn hsm_keys_need_an_hsm_root() {
    let env = Env::new();
    env.run_ok(&["store", "create", "/demo"]);
    let out = env
        .cmd(&["key", "create", "/demo", "hk", "--protection", "hsm"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("HSM root of trust"));
}
