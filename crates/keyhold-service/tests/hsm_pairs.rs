//! A key store's key pairs resident in a real HSM token (SoftHSMv2): made
//! there or adopted by label, used there through the one key-use order
//! (signatures, RSA-OAEP), rotated into a new pair per version and
//! crypto-shredded, with the same break glass as any key.

use keyhold_core::{Error, KeyId, KeyType, Status, StorePrefix, Usage};
use keyhold_crypto::asym::{self, Hash, SignScheme};
use keyhold_root::{HsmKeys, PinSource, Pkcs11Config, Pkcs11Root};
use keyhold_service::policy::PolicyRequest;
use keyhold_service::{KeyService, KeyUse};
use keyhold_storage::SqliteStorage;
use keyhold_testkit::softhsm::{SoftHsm, MODULE};
use std::process::Command;
use std::sync::Arc;

const PIN: &str = "8642-user-pin";

struct Fixture {
    _dir: tempfile::TempDir,
    hsm: SoftHsm,
    root: Arc<Pkcs11Root>,
    s: KeyService,
    p: StorePrefix,
}

fn fixture() -> Fixture {
    let hsm = SoftHsm::new();
    // The module is loaded once per process, by this test only.
    std::env::set_var("SOFTHSM2_CONF", &hsm.conf);
    std::env::set_var("KEYHOLD_TEST_HSM_PIN", PIN);
    hsm.add_token("pairs", PIN);
    let cfg = Pkcs11Config::new(
        MODULE.into(),
        "pairs".into(),
        PinSource::Env("KEYHOLD_TEST_HSM_PIN".into()),
    );
    let root = Arc::new(Pkcs11Root::open(cfg, true).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let st = SqliteStorage::open(&dir.path().join("k.db")).unwrap();
    let s = KeyService::open(Arc::new(st), root.clone()).unwrap();
    let p = StorePrefix::parse("/hsm").unwrap();
    s.create_store(&p, "").unwrap();
    Fixture {
        _dir: dir,
        hsm,
        root,
        s,
        p,
    }
}

fn use_of<'a>(p: &'a StorePrefix, key: &'a str) -> KeyUse<'a> {
    KeyUse {
        store: p,
        key,
        context: PolicyRequest::default(),
    }
}

/// OpenSC's pkcs11-tool on the test token, logged in.
fn pkcs11_tool(f: &Fixture, args: &[&str]) {
    let out = Command::new("pkcs11-tool")
        .args([
            "--module",
            MODULE,
            "--token-label",
            "pairs",
            "--login",
            "--pin",
            PIN,
        ])
        .args(args)
        .env("SOFTHSM2_CONF", &f.hsm.conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn hsm_resident_key_pairs() {
    let f = fixture();
    every_type_signs_in_the_token(&f);
    rsa_decrypts_rotates_stops_and_is_shredded(&f);
    pairs_made_by_another_tool_are_adopted(&f);
}

/// Each type signs in the token; the public key verifies outside.
fn every_type_signs_in_the_token(f: &Fixture) {
    let (s, p) = (&f.s, &f.p);
    for (t, scheme) in [
        (KeyType::Rsa2048, SignScheme::RsaPss(Hash::Sha256)),
        (KeyType::EcP256, SignScheme::Ecdsa(Hash::Sha256)),
        (KeyType::EcP384, SignScheme::Ecdsa(Hash::Sha384)),
        (KeyType::Ed25519, SignScheme::Ed25519),
    ] {
        let id = KeyId::parse(t.short()).unwrap();
        let k = s
            .create_hsm_key_of(p, &id, t, Usage::SIGN_VERIFY, None)
            .unwrap();
        assert_eq!(k.key_type, t);
        assert_eq!(k.hsm_label.as_deref(), Some(&*format!("keyhold:/hsm:{id}")));
        let u = use_of(p, t.short());
        let signed = s.sign(&u, b"payload", scheme).result.unwrap();
        let (_, spki) = s.public_key(p, &id, None).unwrap();
        assert!(asym::verify(&spki, scheme, b"payload", &signed.signature).unwrap());
        let checked = s.verify(&u, None, b"payload", &signed.signature, scheme);
        assert!(checked.result.unwrap(), "{t}");
    }
}

/// RSA-OAEP in the token (SoftHSMv2 does it with SHA-1), a new pair per
/// rotation, break glass on the next request, both pairs shredded.
fn rsa_decrypts_rotates_stops_and_is_shredded(f: &Fixture) {
    let (s, p) = (&f.s, &f.p);
    let rsa = KeyId::parse("rsa-dec").unwrap();
    s.create_hsm_key_of(p, &rsa, KeyType::Rsa3072, Usage::BOTH, Some("tenant-rsa"))
        .unwrap();
    let u = use_of(p, "rsa-dec");
    let (_, spki1) = s.public_key(p, &rsa, None).unwrap();
    let ct1 = asym::oaep_encrypt(&spki1, Hash::Sha1, b"dek-1", None).unwrap();
    let pt = s.decrypt_oaep(&u, 1, &ct1, Hash::Sha1, None);
    assert_eq!(pt.facts.key_version, Some(1));
    assert_eq!(pt.result.unwrap().expose(), b"dek-1");

    s.rotate_key(p, &rsa).unwrap();
    assert!(f.root.pair_kind("tenant-rsa#v2").is_ok());
    let (v, spki2) = s.public_key(p, &rsa, None).unwrap();
    assert_eq!(v, 2);
    assert_ne!(spki1, spki2);
    let ct2 = asym::oaep_encrypt(&spki2, Hash::Sha1, b"dek-2", None).unwrap();
    let pt = s
        .decrypt_oaep(&u, 2, &ct2, Hash::Sha1, None)
        .result
        .unwrap();
    assert_eq!(pt.expose(), b"dek-2");
    assert!(matches!(
        s.decrypt_oaep(&u, 2, &ct1, Hash::Sha1, None).result,
        Err(Error::InvalidCiphertext)
    ));

    s.set_key_status(p, &rsa, Status::Disabled).unwrap();
    assert!(matches!(
        s.decrypt_oaep(&u, 1, &ct1, Hash::Sha1, None).result,
        Err(Error::InvalidState(_))
    ));
    s.destroy_now(p, &rsa).unwrap();
    for label in ["tenant-rsa", "tenant-rsa#v2"] {
        assert!(f.root.pair_kind(label).is_err(), "{label} is still there");
        assert!(f.root.public_key(label).is_err());
    }
}

/// Pairs made by another tool are adopted by label, their type read from
/// the token; an RSA pair must say what it is for.
fn pairs_made_by_another_tool_are_adopted(f: &Fixture) {
    let (s, p) = (&f.s, &f.p);
    pkcs11_tool(
        f,
        &[
            "--keypairgen",
            "--key-type",
            "EC:secp384r1",
            "--label",
            "legacy-ec",
            "--usage-sign",
            "--sensitive",
        ],
    );
    let legacy = KeyId::parse("legacy").unwrap();
    let k = s.import_hsm_key(p, &legacy, None, "legacy-ec").unwrap();
    assert_eq!(k.key_type, KeyType::EcP384);
    assert_eq!(k.usage, Usage::SIGN_VERIFY);
    let u = use_of(p, "legacy");
    let scheme = SignScheme::Ecdsa(Hash::Sha384);
    let sig = s.sign(&u, b"m", scheme).result.unwrap();
    let ok = s.verify(&u, Some(1), b"m", &sig.signature, scheme);
    assert!(ok.result.unwrap());

    pkcs11_tool(
        f,
        &[
            "--keypairgen",
            "--key-type",
            "rsa:2048",
            "--label",
            "legacy-rsa",
            "--sensitive",
        ],
    );
    let lr = KeyId::parse("lr").unwrap();
    let e = s.import_hsm_key(p, &lr, None, "legacy-rsa").unwrap_err();
    assert!(e.to_string().contains("say its usage"), "{e}");
    let k = s
        .import_hsm_key(p, &lr, Some(Usage::SIGN_VERIFY), "legacy-rsa")
        .unwrap();
    assert_eq!(k.key_type, KeyType::Rsa2048);
}
