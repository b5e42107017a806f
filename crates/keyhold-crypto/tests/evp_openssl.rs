//! RSA-OAEP with an MGF1 hash of its own and RSA signatures with SHA-1 (the
//! operations AWS-LC does through its EVP interface because aws-lc-rs has
//! no API for them), checked both ways against OpenSSL's command line, an
//! independent implementation.

use keyhold_crypto::asym::{self, Hash, PairKind, PrivateKey, SignScheme};
use keyhold_crypto::CryptoError;
use std::path::Path;
use std::process::Command;

fn openssl(args: &[&str]) -> std::process::Output {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl (install openssl)");
    out
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<_> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

struct Keys {
    dir: tempfile::TempDir,
    private: Vec<u8>,
    public: Vec<u8>,
}

impl Keys {
    fn new() -> Self {
        let pair = asym::generate(PairKind::Rsa(2048)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pkcs8 = asym::rsa_private_to_pkcs8(pair.private.expose()).unwrap();
        std::fs::write(
            dir.path().join("key.pem"),
            pem("PRIVATE KEY", pkcs8.expose()),
        )
        .unwrap();
        let spki = asym::rsa_public_to_spki(&pair.public).unwrap();
        std::fs::write(
            dir.path().join("pub.pem"),
            asym::public_key_pem(&spki).unwrap(),
        )
        .unwrap();
        Self {
            private: pair.private.expose().to_vec(),
            public: pair.public,
            dir,
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    fn write(&self, name: &str, data: &[u8]) -> String {
        std::fs::write(self.dir.path().join(name), data).unwrap();
        self.path(name)
    }
}

fn read(p: &str) -> Vec<u8> {
    std::fs::read(Path::new(p)).unwrap()
}

#[test]
fn oaep_with_its_own_mgf1_hash_agrees_with_openssl() {
    let k = Keys::new();
    let label = b"a label";
    let label_hex = hex::encode(label);
    let plain = b"thirty-two bytes of a data key..";
    // Keyhold encrypts (OAEP SHA-384, MGF1 SHA-256, a label); OpenSSL decrypts.
    let ct =
        asym::oaep_encrypt_mgf1(&k.public, Hash::Sha384, Hash::Sha256, plain, Some(label)).unwrap();
    assert_eq!(ct.len(), 256);
    let ct_path = k.write("ct", &ct);
    let out_path = k.path("out");
    let o = openssl(&[
        "pkeyutl",
        "-decrypt",
        "-inkey",
        &k.path("key.pem"),
        "-in",
        &ct_path,
        "-out",
        &out_path,
        "-pkeyopt",
        "rsa_padding_mode:oaep",
        "-pkeyopt",
        "rsa_oaep_md:sha384",
        "-pkeyopt",
        "rsa_mgf1_md:sha256",
        "-pkeyopt",
        &format!("rsa_oaep_label:{label_hex}"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(read(&out_path), plain);

    // OpenSSL encrypts (OAEP SHA-256, MGF1 SHA-384, no label); Keyhold decrypts.
    let in_path = k.write("in", plain);
    let o = openssl(&[
        "pkeyutl",
        "-encrypt",
        "-pubin",
        "-inkey",
        &k.path("pub.pem"),
        "-in",
        &in_path,
        "-out",
        &ct_path,
        "-pkeyopt",
        "rsa_padding_mode:oaep",
        "-pkeyopt",
        "rsa_oaep_md:sha256",
        "-pkeyopt",
        "rsa_mgf1_md:sha384",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ct = read(&ct_path);
    let key = PrivateKey::parse(&k.private).unwrap();
    let got = key
        .oaep_decrypt_mgf1(Hash::Sha256, Hash::Sha384, &ct, None)
        .unwrap();
    assert_eq!(got.expose(), plain);

    // The wrong MGF1 hash, the wrong label, a damaged value: no plaintext,
    // and no more said than that.
    for (h, m, l, damage) in [
        (Hash::Sha256, Hash::Sha256, None, false),
        (Hash::Sha256, Hash::Sha512, None, false),
        (Hash::Sha256, Hash::Sha384, Some(&b"x"[..]), false),
        (Hash::Sha256, Hash::Sha384, None, true),
    ] {
        let mut ct = ct.clone();
        if damage {
            ct[100] ^= 1;
        }
        let e = key.oaep_decrypt_mgf1(h, m, &ct, l).unwrap_err();
        assert_eq!(e, CryptoError::AuthenticationFailed, "{h:?} {m:?} {l:?}");
    }
    // The same hash for both still goes through aws-lc-rs, and agrees.
    let ct = asym::oaep_encrypt_mgf1(&k.public, Hash::Sha256, Hash::Sha256, plain, None).unwrap();
    assert_eq!(
        key.oaep_decrypt(Hash::Sha256, &ct, None).unwrap().expose(),
        plain
    );
    // Too long for the key: refused, not truncated.
    assert!(asym::oaep_encrypt_mgf1(&k.public, Hash::Sha512, Hash::Sha1, &[0; 200], None).is_err());
    // Not an RSA key.
    assert!(asym::oaep_encrypt_mgf1(
        b"\x30\x03\x02\x01\x01",
        Hash::Sha256,
        Hash::Sha1,
        plain,
        None
    )
    .is_err());
}

#[test]
fn pss_with_sha1_agrees_with_openssl() {
    let k = Keys::new();
    let key = PrivateKey::parse(&k.private).unwrap();
    let msg = b"a message signed with RSA-PSS and SHA-1";
    let msg_path = k.write("msg", msg);
    for (scheme, salt) in [
        (SignScheme::RsaPss(Hash::Sha1), "20"),
        (SignScheme::RsaPssMaxSalt(Hash::Sha1), "max"),
    ] {
        // Keyhold signs, OpenSSL verifies.
        let sig = key.sign(scheme, msg).unwrap();
        assert_eq!(sig.len(), 256);
        let sig_path = k.write("sig", &sig);
        let o = openssl(&[
            "dgst",
            "-sha1",
            "-verify",
            &k.path("pub.pem"),
            "-signature",
            &sig_path,
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sigopt",
            &format!("rsa_pss_saltlen:{salt}"),
            &msg_path,
        ]);
        assert!(
            o.status.success(),
            "{scheme:?}: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        // OpenSSL signs, Keyhold verifies.
        let o = openssl(&[
            "dgst",
            "-sha1",
            "-sign",
            &k.path("key.pem"),
            "-out",
            &sig_path,
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sigopt",
            &format!("rsa_pss_saltlen:{salt}"),
            &msg_path,
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let theirs = read(&sig_path);
        assert!(
            asym::verify(&k.public, scheme, msg, &theirs).unwrap(),
            "{scheme:?}"
        );
        // Another message, a damaged signature, another hash: not valid.
        assert!(!asym::verify(&k.public, scheme, b"another", &theirs).unwrap());
        let mut bad = theirs.clone();
        bad[9] ^= 1;
        assert!(!asym::verify(&k.public, scheme, msg, &bad).unwrap());
        let sha256 = match scheme {
            SignScheme::RsaPss(_) => SignScheme::RsaPss(Hash::Sha256),
            _ => SignScheme::RsaPssMaxSalt(Hash::Sha256),
        };
        assert!(!asym::verify(&k.public, sha256, msg, &theirs).unwrap());
    }
    // PKCS#1 v1.5 with SHA-1: signed here, verified by OpenSSL and here.
    let sig = key.sign(SignScheme::RsaPkcs1(Hash::Sha1), msg).unwrap();
    let sig_path = k.write("sig", &sig);
    let o = openssl(&[
        "dgst",
        "-sha1",
        "-verify",
        &k.path("pub.pem"),
        "-signature",
        &sig_path,
        &msg_path,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    assert!(asym::verify(&k.public, SignScheme::RsaPkcs1(Hash::Sha1), msg, &sig).unwrap());
    // A SHA-256 PSS signature does not verify as SHA-1 (OASIS CS-AC-M-3).
    let sig = key.sign(SignScheme::RsaPss(Hash::Sha256), msg).unwrap();
    assert!(!asym::verify(&k.public, SignScheme::RsaPss(Hash::Sha1), msg, &sig).unwrap());
}
