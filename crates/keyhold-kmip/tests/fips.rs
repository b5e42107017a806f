//! FIPS mode through KMIP: in a FIPS build (`--features keyhold-crypto/fips`)
//! ChaCha20 keys that may encrypt, new Triple DES keys, Triple DES
//! encryption, AES-GCM outside the module (IVs other than 96 bits, streams)
//! and SHA-1 signatures are refused with Feature Not Supported saying FIPS
//! mode; old Triple DES keys and decrypt-only ChaCha20 keys still come in
//! and decrypt (migration), and AES works.
//! In the default build the same requests succeed: one test, both builds.

use keyhold_kmip::enums::{block_cipher_mode as bcm, crypto_alg, object_type};
use keyhold_kmip::enums::{operation as op, usage_mask};
use keyhold_kmip::tags as t;
use keyhold_kmip::ttlv::{Ttlv, Value};
use keyhold_kmip::Kmip;

mod common;
use common::*;

const FIPS: bool = keyhold_crypto::fips::BUILD;
const FEATURE_NOT_SUPPORTED: u32 = 0x08;

/// One KMIP 2.1 item: (status, reason, message, payload).
fn call_full(k: &Kmip, operation: u32, payload: Vec<Ttlv>) -> (u32, Option<u32>, String, Ttlv) {
    let item = call_item(k, "alice", operation, payload);
    let e = |tag| match item.child(tag).map(|c| &c.value) {
        Some(Value::Enumeration(v)) => Some(*v),
        _ => None,
    };
    let msg = match item.child(t::RESULT_MESSAGE).map(|c| &c.value) {
        Some(Value::TextString(s)) => s.clone(),
        _ => String::new(),
    };
    let body = item
        .child(t::RESPONSE_PAYLOAD)
        .cloned()
        .unwrap_or(Ttlv::structure(t::RESPONSE_PAYLOAD, vec![]));
    (
        e(t::RESULT_STATUS).expect("status"),
        e(t::RESULT_REASON),
        msg,
        body,
    )
}

/// Succeeds in the default build; in a FIPS build fails saying FIPS mode.
fn refused_in_fips(what: &str, r: (u32, Option<u32>, String, Ttlv)) -> Option<Ttlv> {
    if FIPS {
        assert_ne!(r.0, SUCCESS, "{what} succeeded in FIPS mode");
        assert_eq!(r.1, Some(FEATURE_NOT_SUPPORTED), "{what}: {}", r.2);
        assert!(r.2.contains("not allowed in FIPS mode"), "{what}: {}", r.2);
        None
    } else {
        assert_eq!(r.0, SUCCESS, "{what}: {}", r.2);
        Some(r.3)
    }
}

fn uid_of(p: &Ttlv) -> String {
    match &p.child(t::UNIQUE_IDENTIFIER).unwrap().value {
        Value::TextString(u) => u.clone(),
        v => panic!("{v:?}"),
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn create(alg: u32, len: i32) -> Vec<Ttlv> {
    vec![
        Ttlv::enumeration(t::OBJECT_TYPE, object_type::SYMMETRIC_KEY),
        Ttlv::structure(
            t::ATTRIBUTES,
            vec![
                Ttlv::enumeration(t::CRYPTOGRAPHIC_ALGORITHM, alg),
                Ttlv::int(t::CRYPTOGRAPHIC_LENGTH, len),
                Ttlv::int(
                    t::CRYPTOGRAPHIC_USAGE_MASK,
                    usage_mask::ENCRYPT | usage_mask::DECRYPT,
                ),
                Ttlv::date_time(t::ACTIVATION_DATE, now() - 60),
            ],
        ),
    ]
}

fn register(alg: u32, material: Vec<u8>) -> Vec<Ttlv> {
    register_for(alg, material, usage_mask::ENCRYPT | usage_mask::DECRYPT)
}

fn crypt(uid: &str, mode: Option<u32>, data: &[u8], iv: Option<&[u8]>) -> Vec<Ttlv> {
    let mut p = vec![Ttlv::text(t::UNIQUE_IDENTIFIER, uid)];
    if let Some(m) = mode {
        p.push(Ttlv::structure(
            t::CRYPTOGRAPHIC_PARAMETERS,
            vec![Ttlv::enumeration(t::BLOCK_CIPHER_MODE, m)],
        ));
    }
    p.push(Ttlv::bytes(t::DATA, data.to_vec()));
    if let Some(iv) = iv {
        p.push(Ttlv::bytes(t::IV_COUNTER_NONCE, iv.to_vec()));
    }
    p
}

#[test]
fn kmip_refuses_what_fips_mode_does_not_allow() {
    let (_d, k) = kmip();
    // AES works in both builds, with a 96-bit IV.
    let aes = call_full(&k, op::CREATE, create(crypto_alg::AES, 256));
    assert_eq!(aes.0, SUCCESS, "{}", aes.2);
    let aes = uid_of(&aes.3);
    let enc = call_full(
        &k,
        op::ENCRYPT,
        crypt(&aes, Some(bcm::GCM), b"data", Some(&[1; 12])),
    );
    assert_eq!(enc.0, SUCCESS, "{}", enc.2);
    // AES-GCM with a 128-bit IV is GHASH outside the module.
    refused_in_fips(
        "AES-GCM with a 16-byte IV",
        call_full(
            &k,
            op::ENCRYPT,
            crypt(&aes, Some(bcm::GCM), b"data", Some(&[1; 16])),
        ),
    );

    // ChaCha20 and ChaCha20-Poly1305 keys are not made.
    for alg in [crypto_alg::CHACHA20, crypto_alg::CHACHA20_POLY1305] {
        refused_in_fips(
            "a ChaCha20 key",
            call_full(&k, op::CREATE, create(alg, 256)),
        );
        refused_in_fips(
            "a registered ChaCha20 key",
            call_full(&k, op::REGISTER, register(alg, vec![3; 32])),
        );
    }
    // A ChaCha20-Poly1305 key for decryption only comes in and decrypts
    // what it encrypted before (by pyca/cryptography), but encrypts nothing.
    let chacha_key = [5u8; 32];
    let (nonce, aad, plain) = ([6u8; 12], b"header", b"old secret");
    let sealed = pyca_chacha20_poly1305(&chacha_key, &nonce, aad, plain);
    let (ct, tag) = sealed.split_at(sealed.len() - 16);
    let reg = call_full(
        &k,
        op::REGISTER,
        register_for(
            crypto_alg::CHACHA20_POLY1305,
            chacha_key.to_vec(),
            usage_mask::DECRYPT,
        ),
    );
    assert_eq!(reg.0, SUCCESS, "{}", reg.2);
    let old = uid_of(&reg.3);
    let mut p = crypt(&old, None, ct, Some(&nonce));
    p.push(Ttlv::bytes(
        t::AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA,
        aad.to_vec(),
    ));
    p.push(Ttlv::bytes(t::AUTHENTICATED_ENCRYPTION_TAG, tag.to_vec()));
    let dec = call_full(&k, op::DECRYPT, p);
    assert_eq!(dec.0, SUCCESS, "{}", dec.2);
    assert_eq!(
        dec.3.child(t::DATA).unwrap().value,
        Value::ByteString(plain.to_vec())
    );
    let enc = call_full(&k, op::ENCRYPT, crypt(&old, None, b"new", Some(&nonce)));
    assert_ne!(enc.0, SUCCESS, "a decrypt-only key does not encrypt");

    // No new Triple DES keys; one from elsewhere comes in and decrypts what
    // it encrypted before (3DES-CBC by OpenSSL), but encrypts nothing.
    refused_in_fips(
        "a new Triple DES key",
        call_full(&k, op::CREATE, create(crypto_alg::TRIPLE_DES, 168)),
    );
    let tdes_key: Vec<u8> = (1..=24).collect();
    let reg = call_full(
        &k,
        op::REGISTER,
        register(crypto_alg::TRIPLE_DES, tdes_key.clone()),
    );
    assert_eq!(reg.0, SUCCESS, "{}", reg.2);
    let tdes = uid_of(&reg.3);
    let iv = [9u8; 8];
    let ct = openssl_tdes_cbc(&tdes_key, &iv, b"legacy record 01");
    let dec = call_full(
        &k,
        op::DECRYPT,
        crypt(&tdes, Some(bcm::CBC), &ct, Some(&iv)),
    );
    assert_eq!(dec.0, SUCCESS, "{}", dec.2);
    assert_eq!(
        dec.3.child(t::DATA).unwrap().value,
        Value::ByteString(b"legacy record 01".to_vec())
    );
    refused_in_fips(
        "Triple DES encryption",
        call_full(
            &k,
            op::ENCRYPT,
            crypt(&tdes, Some(bcm::CBC), b"new data 16 byte", Some(&iv)),
        ),
    );
    // The key itself stays readable, to migrate away from it.
    assert_eq!(
        call_full(&k, op::GET, vec![Ttlv::text(t::UNIQUE_IDENTIFIER, &tdes)]).0,
        SUCCESS
    );
}

/// 3DES-CBC without padding by OpenSSL's command line.
fn openssl_tdes_cbc(key: &[u8], iv: &[u8], data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut child = std::process::Command::new("openssl")
        .args([
            "enc",
            "-des-ede3-cbc",
            "-nopad",
            "-K",
            &hex(key),
            "-iv",
            &hex(iv),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run openssl");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    out.stdout
}

/// Signatures: SHA-2 in both builds; SHA-1 refused, in FIPS mode saying
/// so (RSA PKCS#1 v1.5 and ECDSA).
#[test]
fn kmip_signs_with_sha2_and_refuses_sha1_in_fips_mode() {
    let (_d, k) = kmip();
    let sign = |u: &str, items: Vec<Ttlv>| {
        call_full(
            &k,
            op::SIGN,
            vec![
                Ttlv::text(t::UNIQUE_IDENTIFIER, u),
                Ttlv::structure(t::CRYPTOGRAPHIC_PARAMETERS, items),
                Ttlv::bytes(t::DATA, b"to be signed".to_vec()),
            ],
        )
    };
    const PKCS1_V1_5: u32 = 0x08;
    const SHA_1: u32 = 0x04;
    const SHA_256: u32 = 0x06;
    let (rsa, _) = pair(&k, crypto_alg::RSA, 2048);
    let (ec, _) = pair(&k, crypto_alg::ECDSA, 256);
    for (u, padding) in [(&rsa, Some(PKCS1_V1_5)), (&ec, None)] {
        let with = |hash| {
            let mut items = vec![Ttlv::enumeration(t::HASHING_ALGORITHM, hash)];
            if let Some(p) = padding {
                items.push(Ttlv::enumeration(t::PADDING_METHOD, p));
            }
            items
        };
        let ok = sign(u, with(SHA_256));
        assert_eq!(ok.0, SUCCESS, "SHA-256: {}", ok.2);
        // FIPS mode makes no new SHA-1 signature, and says why; the default
        // build signs with SHA-1 for legacy RSA clients (an EC key's curve
        // fixes its hash: P-256 signs with SHA-256 only).
        let sha1 = sign(u, with(SHA_1));
        if FIPS {
            refused_in_fips("a signature with SHA-1", sha1);
        } else {
            assert_eq!(sha1.0 == SUCCESS, padding.is_some(), "{}", sha1.2);
        }
    }
}

/// ChaCha20-Poly1305 by pyca/cryptography: ciphertext then tag.
fn pyca_chacha20_poly1305(key: &[u8], nonce: &[u8], aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let script = "import sys\nfrom cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305 as C\n\
        a = [bytes.fromhex(x) for x in sys.argv[1:]]\nprint(C(a[0]).encrypt(a[1], a[3], a[2]).hex())";
    let out = std::process::Command::new("python3")
        .args(["-c", script, &hex(key), &hex(nonce), &hex(aad), &hex(plain)])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8(out.stdout).unwrap();
    let s = s.trim();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}
