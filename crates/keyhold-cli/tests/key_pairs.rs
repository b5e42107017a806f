//! A key store's key pairs end to end: the real `keyhold` binary makes
//! RSA, EC and Ed25519 keys (through the admin API while a server runs,
//! and directly on the data directory when none does), prints their public
//! keys as PEM that OpenSSL reads, rotates them into new pairs, and the XKS
//! API refuses them (it serves AES-256 keys only), checked with
//! `curl --aws-sigv4`.

mod common;

use common::*;
use serde_json::json;
use std::process::Command;

/// What `openssl pkey -pubin -text` says of a PEM public key.
fn openssl_describe(pem: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pub.pem");
    std::fs::write(&p, pem).unwrap();
    let out = Command::new("openssl")
        .args(["pkey", "-pubin", "-noout", "-text", "-in"])
        .arg(&p)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl refused the PEM: {}\n{pem}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(env: &Env, args: &[&str]) -> String {
    let out = env.cmd(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn key_pairs_are_made_shown_rotated_and_refused_by_xks() {
    let env = Env::new();
    env.run_ok(&["store", "create", "/demo"]);
    let cred = env.add_credential("/demo");
    // Made without a server: on the data directory.
    env.run_ok(&["key", "create", "/demo", "ed", "--type", "ed25519"]);
    let server = env.serve(&[]);
    // And through the admin API while it runs.
    env.run_ok(&["key", "create", "/demo", "aes"]);
    env.run_ok(&[
        "key",
        "create",
        "/demo",
        "rsa",
        "--type",
        "rsa-3072",
        "--usage",
        "ENCRYPT,DECRYPT",
    ]);
    env.run_ok(&["key", "create", "/demo", "ec", "--type", "EC-P384"]);

    // `key show --json` answers a list of one, as `key list` does.
    let shown = &env.json(&["key", "show", "/demo", "ec"])[0];
    assert_eq!(shown["key_spec"], "ECC_NIST_P384", "{shown}");
    assert_eq!(shown["usage"], json!(["SIGN", "VERIFY"]));
    let rsa = &env.json(&["key", "show", "/demo", "rsa"])[0];
    assert_eq!(rsa["key_spec"], "RSA_3072");
    assert_eq!(rsa["usage"], json!(["ENCRYPT", "DECRYPT"]));
    let listed = env.json(&["key", "list", "/demo"]);
    let specs: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key_spec"].as_str().unwrap())
        .collect();
    assert_eq!(specs, ["AES_256", "ECC_NIST_P384", "ED25519", "RSA_3072"]);

    // Public keys: PEM that OpenSSL reads, of the right kind and size.
    let pem = env.run_ok(&["key", "public-key", "/demo", "rsa"]);
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{pem}");
    assert!(openssl_describe(&pem).contains("3072 bit"));
    let ec = openssl_describe(&env.run_ok(&["key", "public-key", "/demo", "ec"]));
    assert!(ec.contains("secp384r1") || ec.contains("P-384"), "{ec}");
    let ed = openssl_describe(&env.run_ok(&["key", "public-key", "/demo", "ed"]));
    assert!(ed.contains("ED25519"), "{ed}");
    let e = fails(&env, &["key", "public-key", "/demo", "aes"]);
    assert!(e.contains("AES-256") && e.contains("no public key"), "{e}");

    // Rotation makes a new pair; the old public key stays readable.
    env.run_ok(&["key", "rotate", "/demo", "rsa"]);
    let v2 = env.json(&["key", "public-key", "/demo", "rsa"]);
    assert_eq!(v2["version"], 2);
    assert_ne!(v2["public_key_pem"].as_str().unwrap(), pem);
    let v1 = env.run_ok(&["key", "public-key", "/demo", "rsa", "--version", "1"]);
    assert_eq!(v1, pem);
    let e = fails(
        &env,
        &["key", "public-key", "/demo", "rsa", "--version", "3"],
    );
    assert!(e.contains("versions 1 to 2"), "{e}");

    // Bad requests say what to do.
    let e = fails(
        &env,
        &["key", "create", "/demo", "r2", "--type", "rsa-2048"],
    );
    assert!(e.contains("needs a usage"), "{e}");
    let e = fails(
        &env,
        &[
            "key", "create", "/demo", "e2", "--type", "ec-p256", "--usage", "ENCRYPT",
        ],
    );
    assert!(e.contains("sign and verify"), "{e}");
    let e = fails(&env, &["key", "create", "/demo", "x", "--type", "rsa-1024"]);
    assert!(
        e.contains("unknown key type") && e.contains("rsa-3072"),
        "{e}"
    );
    let e = fails(
        &env,
        &[
            "key",
            "create",
            "/demo",
            "h",
            "--type",
            "ed25519",
            "--protection",
            "hsm",
        ],
    );
    assert!(e.contains("need an HSM root of trust"), "{e}");
    let e = fails(
        &env,
        &["key", "set-usage", "/demo", "ec", "--usage", "ENCRYPT"],
    );
    assert!(e.contains("sign and verify"), "{e}");

    // XKS serves AES-256 keys only: a key pair is refused on every
    // operation with the spec's InvalidKeyUsageException, and says why.
    let xks = |key: &str, op: &str, body: serde_json::Value| {
        Curl::new(&server, &cred).send(
            &format!("/demo/kms/xks/v1/keys/{key}/{op}"),
            &body.to_string(),
        )
    };
    for key in ["rsa", "ec", "ed"] {
        let md = xks(
            key,
            "metadata",
            json!({"requestMetadata": meta("DescribeKey")}),
        );
        md.assert_error(400, "InvalidKeyUsageException");
        assert!(
            md.json()["errorMessage"]
                .as_str()
                .unwrap()
                .contains("AES-256 keys only"),
            "{:?}",
            md
        );
        demo_encrypt(&server, &cred, key, b"data").assert_error(400, "InvalidKeyUsageException");
    }
    let enc = demo_encrypt(&server, &cred, "aes", b"data");
    assert_eq!(enc.status, 200, "{enc:?}");
    let ct = enc.json();
    demo_decrypt(&server, &cred, "rsa", &ct).assert_error(400, "InvalidKeyUsageException");
    assert_eq!(demo_decrypt(&server, &cred, "aes", &ct).status, 200);
}
