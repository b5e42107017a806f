//! The PKCS#11 root against a real module: SoftHSMv2, with a fresh token in a
//! temporary directory for this test run (its own SOFTHSM2_CONF).

use keyhold_root::RootOfTrust;
use keyhold_root::{PinSource, Pkcs11Config, Pkcs11Root};
use keyhold_testkit::softhsm::{SoftHsm, MODULE};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

const PIN: &str = "4321-user-pin";
const TOKEN: &str = "keyhold-test";

/// One token per test process: a PKCS#11 module is initialised once per
/// process, so every test here shares this token (with its own KEK label).
fn token() -> &'static SoftHsm {
    static HSM: OnceLock<SoftHsm> = OnceLock::new();
    HSM.get_or_init(|| {
        let hsm = SoftHsm::new();
        // Set before the module is first loaded, by the only thread doing so.
        std::env::set_var("SOFTHSM2_CONF", &hsm.conf);
        std::env::set_var("KEYHOLD_TEST_HSM_PIN", PIN);
        hsm.add_token(TOKEN, PIN);
        // Written by another process (pkcs11-tool) before this one loads
        // the module: SoftHSMv2 does not take another process's writes
        // while this one's sessions generate keys.
        hsm.write_aes_key(TOKEN, PIN, "rfc3394-kek", &RFC3394_KEK);
        hsm
    })
}

/// RFC 3394 §4.6's 256-bit key-encryption key.
const RFC3394_KEK: [u8; 32] = [
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F,
    0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x1B, 0x1C, 0x1D, 0x1E, 0x1F,
];

/// The tests here take the token one at a time: SoftHSMv2 has been seen to
/// fail a key generation (CKR_FUNCTION_FAILED) or an attribute read in one
/// test while another creates and destroys session objects on the same
/// token. Each test's own concurrency (the session cap, the busy pool)
/// stays.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

fn config(kek: &str) -> Pkcs11Config {
    token();
    let mut c = Pkcs11Config::new(
        MODULE.into(),
        TOKEN.into(),
        PinSource::Env("KEYHOLD_TEST_HSM_PIN".into()),
    );
    c.kek_label = kek.into();
    c
}

#[test]
fn kek_is_created_once_and_never_extractable() {
    let _one = one_at_a_time();
    let cfg = config("kek-create");
    let err = Pkcs11Root::open(cfg.clone(), false).unwrap_err();
    assert!(err.to_string().contains("keyhold hsm init"), "{err}");
    let root = Pkcs11Root::open(cfg.clone(), true).unwrap();
    let again = Pkcs11Root::open(cfg.clone(), true).unwrap();
    assert_eq!(
        root.list_secret_keys()
            .unwrap()
            .iter()
            .filter(|l| *l == "kek-create")
            .count(),
        1
    );
    drop((root, again));
    // An independent client (OpenSC's pkcs11-tool) sees a sensitive,
    // never-extractable AES key.
    let out = Command::new("pkcs11-tool")
        .args([
            "--module",
            MODULE,
            "--token-label",
            TOKEN,
            "--login",
            "--pin",
            PIN,
            "--list-objects",
            "--type",
            "secrkey",
        ])
        .env("SOFTHSM2_CONF", &token().conf)
        .output()
        .expect("pkcs11-tool (install opensc)");
    let text = String::from_utf8_lossy(&out.stdout);
    let block = text
        .split("Secret Key Object")
        .find(|b| b.contains("kek-create"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(block.contains("AES length 32"), "{block}");
    assert!(
        block.contains("sensitive") && block.contains("never extractable"),
        "{block}"
    );
}

#[test]
fn wrap_round_trip_is_bound_to_its_context() {
    let _one = one_at_a_time();
    let root = Pkcs11Root::open(config("kek-wrap"), true).unwrap();
    let w = root
        .wrap(b"store/key/1", b"thirty-two bytes of key material")
        .unwrap();
    assert_eq!(w[0], 2);
    assert!(!w.windows(8).any(|x| x == b"thirty-t"));
    assert_eq!(
        root.unwrap(b"store/key/1", &w).unwrap().expose(),
        b"thirty-two bytes of key material"
    );
    assert!(root.unwrap(b"store/key/2", &w).is_err());
    let mut bad = w.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(root.unwrap(b"store/key/1", &bad).is_err());
    // Another KEK cannot unwrap it.
    let other = Pkcs11Root::open(config("kek-wrap-other"), true).unwrap();
    assert!(other.unwrap(b"store/key/1", &w).is_err());
    assert!(
        root.info().model.contains("SoftHSM"),
        "{}",
        root.info().model
    );
}

/// (A wrong PIN is tested with a fresh process, in keyhold-cli's tests: in
/// this process other tests have already logged the token in, and PKCS#11
/// login state is shared by every session of an application.)
#[test]
fn unknown_token_module_and_pin_source_are_clear_errors() {
    let _one = one_at_a_time();
    let mut cfg = config("kek-pin");
    cfg.token_label = Some("no-such-token".into());
    let e = Pkcs11Root::open(cfg, true).unwrap_err().to_string();
    assert!(e.contains("no-such-token") && e.contains(TOKEN), "{e}");
    let mut cfg = config("kek-pin");
    cfg.pin = PinSource::Env("KEYHOLD_TEST_UNSET_VARIABLE".into());
    assert!(Pkcs11Root::open(cfg, true)
        .unwrap_err()
        .to_string()
        .contains("not set"));
    let mut cfg = config("kek-pin");
    cfg.module = "/nonexistent/libpkcs11.so".into();
    assert!(Pkcs11Root::open(cfg, true)
        .unwrap_err()
        .to_string()
        .contains("cannot load"));
}

#[test]
fn session_cap_holds_under_concurrency() {
    let _one = one_at_a_time();
    let mut cfg = config("kek-pool");
    cfg.max_sessions = 2;
    cfg.session_wait_ms = 5_000;
    let root = Arc::new(Pkcs11Root::open(cfg, true).unwrap());
    let peak = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (root, peak, stop) = (root.clone(), peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(root.status()[0].open_sessions, Ordering::Relaxed);
                std::thread::yield_now();
            }
        })
    };
    let workers: Vec<_> = (0..12)
        .map(|i| {
            let root = root.clone();
            std::thread::spawn(move || {
                for j in 0..100 {
                    let ctx = format!("ctx-{i}-{j}");
                    let w = root.wrap(ctx.as_bytes(), b"material").unwrap();
                    assert_eq!(
                        root.unwrap(ctx.as_bytes(), &w).unwrap().expose(),
                        b"material"
                    );
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    assert!(
        peak.load(Ordering::Relaxed) <= 2,
        "peak {}",
        peak.load(Ordering::Relaxed)
    );
    assert!(root.status()[0].open_sessions <= 2, "no session leaked");
}

#[test]
fn a_busy_pool_times_out_instead_of_hanging() {
    let _one = one_at_a_time();
    let mut cfg = config("kek-busy");
    cfg.max_sessions = 1;
    cfg.session_wait_ms = 1;
    let root = Arc::new(Pkcs11Root::open(cfg, true).unwrap());
    let timeouts = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (root, timeouts) = (root.clone(), timeouts.clone());
            std::thread::spawn(move || {
                for _ in 0..200 {
                    match root.wrap(b"c", &[7u8; 4096]) {
                        Ok(_) => {}
                        Err(keyhold_core::Error::DependencyTimeout(_)) => {
                            timeouts.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!("unexpected {e}"),
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert!(
        timeouts.load(Ordering::Relaxed) > 0,
        "some callers must have timed out"
    );
    assert_eq!(root.status()[0].open_sessions, 1);
}

#[test]
fn hsm_resident_key_gcm() {
    let _one = one_at_a_time();
    use keyhold_root::HsmKeys;
    let root = Pkcs11Root::open(config("kek-resident"), true).unwrap();
    root.generate_key("resident-1", keyhold_core::Usage::BOTH)
        .unwrap();
    assert!(
        root.generate_key("resident-1", keyhold_core::Usage::BOTH)
            .is_err(),
        "labels are unique"
    );
    let (iv, ct, tag) = root.encrypt("resident-1", b"aad", b"secret").unwrap();
    assert_eq!(ct.len(), 6);
    assert_eq!(
        root.decrypt("resident-1", &iv, b"aad", &ct, &tag)
            .unwrap()
            .expose(),
        b"secret"
    );
    let e = root
        .decrypt("resident-1", &iv, b"bad", &ct, &tag)
        .unwrap_err();
    assert!(matches!(e, keyhold_core::Error::InvalidCiphertext), "{e:?}");
    assert!(root.check_key("missing-label").is_err());
}

/// Key pairs generated in the token: each kind signs there (checked by
/// software verification with the public key read out), RSA decrypts
/// RSA-OAEP there, and the private key is sensitive and never extractable.
#[test]
fn hsm_resident_key_pairs() {
    let _one = one_at_a_time();
    use keyhold_core::{Error, Usage};
    use keyhold_crypto::asym::{self, Hash, PairKind, SignScheme};
    use keyhold_root::HsmKeys;
    let root = Pkcs11Root::open(config("kek-pairs"), true).unwrap();
    for (kind, schemes) in [
        (
            PairKind::Rsa(2048),
            &[
                SignScheme::RsaPss(Hash::Sha256),
                SignScheme::RsaPssMaxSalt(Hash::Sha384),
                SignScheme::RsaPkcs1(Hash::Sha512),
            ][..],
        ),
        (PairKind::EcP256, &[SignScheme::Ecdsa(Hash::Sha256)][..]),
        (PairKind::EcP384, &[SignScheme::Ecdsa(Hash::Sha384)][..]),
        (PairKind::EcP521, &[SignScheme::Ecdsa(Hash::Sha512)][..]),
        (PairKind::Ed25519, &[SignScheme::Ed25519][..]),
    ] {
        let label = format!("pair-{kind:?}");
        root.generate_pair(&label, kind, Usage::SIGN_VERIFY)
            .unwrap();
        assert!(
            root.generate_pair(&label, kind, Usage::SIGN_VERIFY)
                .is_err(),
            "labels are unique"
        );
        assert_eq!(root.pair_kind(&label).unwrap(), kind);
        let spki = root.public_key(&label).unwrap();
        for scheme in schemes {
            let sig = root.sign(&label, *scheme, b"message").unwrap();
            assert!(
                asym::verify(&spki, *scheme, b"message", &sig).unwrap(),
                "{kind:?} {scheme:?}"
            );
            assert!(!asym::verify(&spki, *scheme, b"other", &sig).unwrap());
        }
        // Not a signature of this key: a clear refusal, not a token error.
        let wrong = if kind == PairKind::Ed25519 {
            SignScheme::Ecdsa(Hash::Sha256)
        } else {
            SignScheme::Ed25519
        };
        assert!(matches!(
            root.sign(&label, wrong, b"m"),
            Err(Error::Invalid { .. })
        ));
    }
    // RSA-OAEP inside the token.
    root.generate_pair("pair-oaep", PairKind::Rsa(3072), Usage::BOTH)
        .unwrap();
    let spki = root.public_key("pair-oaep").unwrap();
    let ct = asym::oaep_encrypt(&spki, Hash::Sha1, b"data key", None).unwrap();
    let pt = root
        .decrypt_oaep("pair-oaep", Hash::Sha1, &ct, None)
        .unwrap();
    assert_eq!(pt.expose(), b"data key");
    let mut bad = ct.clone();
    bad[10] ^= 1;
    assert!(matches!(
        root.decrypt_oaep("pair-oaep", Hash::Sha1, &bad, None),
        Err(Error::InvalidCiphertext)
    ));
    // SoftHSMv2 2.6 does RSA-OAEP with SHA-1 only: SHA-256 is refused by
    // the module, and said so (an HSM that does it decrypts).
    let ct = asym::oaep_encrypt(&spki, Hash::Sha256, b"data key", None).unwrap();
    match root.decrypt_oaep("pair-oaep", Hash::Sha256, &ct, None) {
        Ok(pt) => assert_eq!(pt.expose(), b"data key"),
        Err(Error::Invalid { why, .. }) => assert!(why.contains("SHA-256"), "{why}"),
        Err(e) => panic!("{e:?}"),
    }
    // The token enforces usage too: this key may not sign.
    assert!(root
        .sign("pair-oaep", SignScheme::RsaPss(Hash::Sha256), b"m")
        .is_err());
    // A usage change reaches the private key's attributes.
    assert!(root.set_usage("pair-oaep", Usage::SIGN_VERIFY).unwrap());
    root.sign("pair-oaep", SignScheme::RsaPss(Hash::Sha256), b"m")
        .unwrap();
    // Destroyed: both halves leave the token.
    root.destroy_key("pair-oaep").unwrap();
    assert!(root.public_key("pair-oaep").is_err());
    assert!(root.pair_kind("pair-oaep").is_err());
    // OpenSC's pkcs11-tool sees a sensitive, never-extractable private key.
    let out = Command::new("pkcs11-tool")
        .args([
            "--module",
            MODULE,
            "--token-label",
            TOKEN,
            "--login",
            "--pin",
            PIN,
        ])
        .args([
            "--list-objects",
            "--type",
            "privkey",
            "--label",
            "pair-EcP256",
        ])
        .env("SOFTHSM2_CONF", &token().conf)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("sensitive") && listed.contains("never extractable"),
        "{listed}"
    );
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// AES key wrap inside the token with customer keys: RFC 3394 §4.6's
/// known answer with a key written by another tool at set-up (see
/// `token`; Keyhold lets it wrap on first use, as its usage allows), RFC
/// 5649 padding, a damaged
/// value, sizes the mechanism refuses, a key whose usage forbids the
/// direction, and Keyhold's own keys, which never wrap.
#[test]
fn hsm_resident_key_wrap() {
    let _one = one_at_a_time();
    use keyhold_core::{Error, Usage};
    use keyhold_root::HsmKeys;
    let root = Pkcs11Root::open(config("kek-key-wrap"), true).unwrap();
    let data = unhex("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F");
    let expected =
        unhex("28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21");
    let opened = root.key_unwrap("rfc3394-kek", &expected, false).unwrap();
    assert_eq!(opened.expose(), &data[..]);
    assert_eq!(
        root.key_wrap("rfc3394-kek", &data, false).unwrap(),
        expected
    );
    let mut damaged = expected.clone();
    damaged[9] ^= 1;
    let e = root.key_unwrap("rfc3394-kek", &damaged, false).unwrap_err();
    assert!(matches!(e, Error::InvalidCiphertext), "{e:?}");

    // RFC 5649 (pyca/cryptography's answer): every module unwraps it.
    let kwp = unhex("924ffdc1f61323fc81d0ac8d0c83baf23c7f9b9b2de3ee3846dbaed43952b94a");
    let opened = root.key_unwrap("rfc3394-kek", &kwp, true).unwrap();
    assert_eq!(opened.expose(), &[0x11; 20]);
    // Debian's SoftHSMv2 2.6.1 pads before an RFC 5649 wrap: found and
    // refused rather than answered wrongly; a later module wraps right.
    match root.key_wrap("rfc3394-kek", &[0x11; 20], true) {
        Ok(w) => assert_eq!(w, kwp),
        Err(e) => assert!(
            matches!(&e, Error::KeyUsage(m) if m.contains("RFC 5649")),
            "{e:?}"
        ),
    }
    root.generate_key("wrap-both", Usage::BOTH).unwrap();
    for (len, padded) in [
        (32usize, false),
        (16, false),
        (40, false),
        (32, true),
        (8, true),
    ] {
        let value: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let wrapped = root.key_wrap("wrap-both", &value, padded).unwrap();
        assert_eq!(wrapped.len(), len.div_ceil(8) * 8 + 8, "{len} {padded}");
        let back = root.key_unwrap("wrap-both", &wrapped, padded).unwrap();
        assert_eq!(back.expose(), &value[..]);
        let e = root.key_unwrap("wrap-both", &wrapped, !padded).unwrap_err();
        assert!(matches!(e, Error::InvalidCiphertext), "{e:?}");
    }
    for (len, padded) in [(12, false), (8, false), (0, true), (16 * 1024 + 1, true)] {
        let e = root
            .key_wrap("wrap-both", &vec![7; len], padded)
            .unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }), "{len} {padded}: {e:?}");
    }

    let encrypt_only = Usage {
        decrypt: false,
        ..Usage::BOTH
    };
    root.generate_key("wrap-only", encrypt_only).unwrap();
    let wrapped = root.key_wrap("wrap-only", &data, false).unwrap();
    let e = root.key_unwrap("wrap-only", &wrapped, false).unwrap_err();
    assert!(matches!(e, Error::KeyUsage(_)), "{e:?}");

    for own in ["kek-key-wrap", "kek-key-wrap-health"] {
        let e = root.key_wrap(own, &data, false).unwrap_err();
        assert!(matches!(e, Error::KeyUsage(_)), "{own}: {e:?}");
    }
}
