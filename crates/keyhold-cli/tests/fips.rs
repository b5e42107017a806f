//! FIPS mode as a user meets it, in whichever build runs the tests (the
//! default one, and `--features fips` in scripts/test.sh): `--version` and
//! `status` say which it is; a FIPS build's listeners refuse what is not
//! FIPS-approved in TLS (ChaCha20-Poly1305, X25519) and serve XKS with the
//! rest; a sealed root uses PBKDF2 in FIPS mode and moves between KDFs
//! with `keyhold root reseal`.

mod common;

use common::*;

const FIPS: bool = keyhold_crypto::fips::BUILD;

#[test]
fn fips_mode_is_reported_and_tls_is_approved_only() {
    let out = std::process::Command::new(BIN)
        .arg("--version")
        .output()
        .unwrap();
    let v = String::from_utf8_lossy(&out.stdout);
    assert_eq!(v.contains("FIPS mode on (self-tests passed)"), FIPS, "{v}");
    assert_eq!(v.contains("not a FIPS build"), !FIPS, "{v}");

    let env = Env::new();
    let s = env.run_ok(&["status"]);
    let line = s.lines().find(|l| l.starts_with("fips")).expect(&s);
    assert_eq!(line.contains("FIPS mode (FIPS build"), FIPS, "{line}");
    let j = env.json(&["status"]);
    assert_eq!(j["fips"]["build"], FIPS);
    assert_eq!(j["fips"]["module_fips_mode"], FIPS);

    env.run_ok(&["store", "create", "/demo"]);
    env.run_ok(&["key", "create", "/demo", "k1"]);
    let cred = env.add_credential("/demo");
    let server = env.serve(&[]);
    let enc = demo_encrypt(&server, &cred, "k1", b"hello");
    assert_eq!(enc.status, 200, "{enc:?}");
    // TLS 1.3 with ChaCha20-Poly1305 only, or X25519 only: refused in
    // FIPS mode (the handshake fails), served otherwise.
    for (what, args) in [
        (
            "ChaCha20-Poly1305",
            vec![
                "--tlsv1.3",
                "--tls13-ciphers",
                "TLS_CHACHA20_POLY1305_SHA256",
            ],
        ),
        ("X25519", vec!["--curves", "X25519"]),
    ] {
        let mut c = Curl::new(&server, &cred);
        for a in args {
            c = c.arg(a);
        }
        let body = serde_json::json!({
            "requestMetadata": meta("Encrypt"), "plaintext": b64(b"x"),
            "encryptionAlgorithm": "AES_GCM",
        });
        let r = c.send("/demo/kms/xks/v1/keys/k1/encrypt", &body.to_string());
        if FIPS {
            assert_eq!(r.status, 0, "{what} was served in FIPS mode: {r:?}");
        } else {
            assert_eq!(r.status, 200, "{what}: {r:?}");
        }
    }
    // FIPS mode serves the XKS API over TLS only (a default build serves
    // plain HTTP when asked: server_ops.rs tests that).
    if FIPS {
        drop(server);
        let out = env
            .cmd(&["serve", "--listen", "127.0.0.1:0", "--insecure-http"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(
            e.contains("FIPS mode") && e.contains("insecure_http"),
            "{e}"
        );
    }
}

#[test]
fn a_sealed_root_moves_between_kdfs() {
    let env = Env::with_init_args(
        &["--sealed"],
        vec![("KEYHOLD_PASSPHRASE".into(), "correct horse battery".into())],
    );
    let kdf = |env: &Env| -> String {
        let text = std::fs::read_to_string(env.data().join("root.key")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["kdf"]["alg"].as_str().unwrap().to_owned()
    };
    assert_eq!(
        kdf(&env),
        if FIPS {
            "pbkdf2-hmac-sha256"
        } else {
            "argon2id"
        }
    );
    env.run_ok(&["store", "create", "/demo"]);
    env.run_ok(&["key", "create", "/demo", "k1"]);
    let out = env.run_ok(&["root", "reseal", "--kdf", "pbkdf2"]);
    assert!(out.contains("pbkdf2-hmac-sha256"), "{out}");
    assert_eq!(kdf(&env), "pbkdf2-hmac-sha256");
    // The same root: the key still works.
    let cred = env.add_credential("/demo");
    let server = env.serve(&[]);
    let enc = demo_encrypt(&server, &cred, "k1", b"hello");
    assert_eq!(enc.status, 200, "{enc:?}");
    let back = demo_decrypt(&server, &cred, "k1", &enc.json());
    assert_eq!(back.status, 200, "{back:?}");
    drop(server);
    let r = env
        .cmd(&["root", "reseal", "--kdf", "argon2id"])
        .output()
        .unwrap();
    if FIPS {
        assert!(!r.status.success());
        let e = String::from_utf8_lossy(&r.stderr);
        assert!(e.contains("Argon2id is not allowed in FIPS mode"), "{e}");
        assert_eq!(kdf(&env), "pbkdf2-hmac-sha256");
    } else {
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        assert_eq!(kdf(&env), "argon2id");
    }
    // A plain root has nothing to reseal.
    let plain = Env::new();
    let r = plain
        .cmd(&["root", "reseal", "--kdf", "pbkdf2"])
        .output()
        .unwrap();
    assert!(!r.status.success());
}
