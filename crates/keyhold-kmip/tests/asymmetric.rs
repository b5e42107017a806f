//! Asymmetric keys through the KMIP front-end: key pairs of each kind,
//! their links, Get in the formats RSA keys convert between, signatures
//! checked outside the server, RSA-OAEP, and what each half of a pair may
//! not do.

use keyhold_crypto::asym::{self, Hash, SignScheme};
use keyhold_kmip::enums::{crypto_alg, key_format, operation as op};
use keyhold_kmip::tags as t;
use keyhold_kmip::ttlv::{Ttlv, Value};
use keyhold_kmip::Kmip;

mod common;
use common::*;

fn uid(u: &str) -> Vec<Ttlv> {
    vec![Ttlv::text(t::UNIQUE_IDENTIFIER, u)]
}

/// Get's Key Material and Key Format Type.
fn get(k: &Kmip, u: &str, format: Option<u32>) -> (u32, Vec<u8>) {
    let mut p = uid(u);
    if let Some(f) = format {
        p.push(Ttlv::enumeration(t::KEY_FORMAT_TYPE, f));
    }
    let (s, body) = call(k, "alice", op::GET, p);
    assert_eq!(s, SUCCESS, "{body:?}");
    let holder = body
        .items()
        .iter()
        .find(|i| i.tag == t::PRIVATE_KEY || i.tag == t::PUBLIC_KEY)
        .expect("a key");
    let block = holder.child(t::KEY_BLOCK).unwrap();
    let f = match block.child(t::KEY_FORMAT_TYPE).unwrap().value {
        Value::Enumeration(f) => f,
        _ => panic!(),
    };
    let m = block
        .child(t::KEY_VALUE)
        .unwrap()
        .child(t::KEY_MATERIAL)
        .unwrap();
    match &m.value {
        Value::ByteString(b) => (f, b.clone()),
        _ => panic!(),
    }
}

fn params(items: Vec<Ttlv>) -> Ttlv {
    Ttlv::structure(t::CRYPTOGRAPHIC_PARAMETERS, items)
}

const PSS: u32 = 0x0A;
const OAEP: u32 = 0x02;
const SHA_256: u32 = 0x06;

fn sign(k: &Kmip, u: &str, p: Ttlv, data: &[u8]) -> (u32, Ttlv) {
    let mut payload = uid(u);
    payload.push(p);
    payload.push(Ttlv::bytes(t::DATA, data.to_vec()));
    call(k, "alice", op::SIGN, payload)
}

fn verify(k: &Kmip, u: &str, p: Ttlv, data: &[u8], sig: &[u8]) -> u32 {
    let mut payload = uid(u);
    payload.push(p);
    payload.push(Ttlv::bytes(t::DATA, data.to_vec()));
    payload.push(Ttlv::bytes(t::SIGNATURE_DATA, sig.to_vec()));
    let (s, body) = call(k, "alice", op::SIGNATURE_VERIFY, payload);
    assert_eq!(s, SUCCESS, "{body:?}");
    match body.child(t::VALIDITY_INDICATOR).unwrap().value {
        Value::Enumeration(v) => v,
        _ => panic!(),
    }
}

#[test]
fn rsa_pairs_convert_sign_verify_and_do_oaep() {
    let (_d, k) = kmip();
    let (private, public) = pair(&k, crypto_alg::RSA, 2048);
    // Kept in PKCS#1; PKCS#8 and X.509 on request, the same keys.
    let (f, pkcs1_pub) = get(&k, &public, None);
    assert_eq!(f, key_format::PKCS_1);
    let (f, spki) = get(&k, &public, Some(key_format::X_509));
    assert_eq!(f, key_format::X_509);
    assert_eq!(asym::rsa_public_to_pkcs1(&spki).unwrap(), pkcs1_pub);
    let (f, pkcs8) = get(&k, &private, Some(key_format::PKCS_8));
    assert_eq!(f, key_format::PKCS_8);
    // A signature made here with the exported private key verifies on the
    // server; the server's verifies here.
    let pss = || {
        params(vec![
            Ttlv::enumeration(t::CRYPTOGRAPHIC_ALGORITHM, crypto_alg::RSA),
            Ttlv::enumeration(t::PADDING_METHOD, PSS),
            Ttlv::enumeration(t::HASHING_ALGORITHM, SHA_256),
        ])
    };
    let mine = asym::sign(&pkcs8, SignScheme::RsaPss(Hash::Sha256), b"data").unwrap();
    assert_eq!(verify(&k, &public, pss(), b"data", &mine), 1, "Valid");
    assert_eq!(verify(&k, &public, pss(), b"date", &mine), 2, "Invalid");
    let (s, body) = sign(&k, &private, pss(), b"data");
    assert_eq!(s, SUCCESS, "{body:?}");
    let Value::ByteString(theirs) = &body.child(t::SIGNATURE_DATA).unwrap().value else {
        panic!()
    };
    assert!(asym::verify(&spki, SignScheme::RsaPss(Hash::Sha256), b"data", theirs).unwrap());
    // RSA-OAEP: encrypted here to the public key, decrypted by the server.
    let oaep = params(vec![
        Ttlv::enumeration(t::PADDING_METHOD, OAEP),
        Ttlv::enumeration(t::HASHING_ALGORITHM, SHA_256),
    ]);
    let ct = asym::oaep_encrypt(&pkcs1_pub, Hash::Sha256, b"a secret", None).unwrap();
    let mut p = uid(&private);
    p.push(oaep.clone());
    p.push(Ttlv::bytes(t::DATA, ct));
    let (s, body) = call(&k, "alice", op::DECRYPT, p);
    assert_eq!(s, SUCCESS, "{body:?}");
    assert_eq!(bytes(&body, t::DATA), b"a secret");
    // Each half does only its own work.
    let (s, body) = sign(&k, &public, pss(), b"data");
    assert_ne!(s, SUCCESS, "a public key signed: {body:?}");
    let mut p = uid(&public);
    p.push(oaep);
    p.push(Ttlv::bytes(t::DATA, vec![0; 256]));
    let (s, _) = call(&k, "alice", op::DECRYPT, p);
    assert_ne!(s, SUCCESS, "a public key decrypted");
    // Another client may not use Alice's private key.
    let mut p = uid(&private);
    p.push(pss());
    p.push(Ttlv::bytes(t::DATA, b"data".to_vec()));
    let (s, _) = call(&k, "mallory", op::SIGN, p);
    assert_ne!(s, SUCCESS, "another client signed with Alice's key");
}

#[test]
fn ec_pairs_sign_with_ecdsa_and_refuse_rsa_formats() {
    let (_d, k) = kmip();
    for (len, hash, scheme) in [
        (256, SHA_256, SignScheme::Ecdsa(Hash::Sha256)),
        (384, 0x07, SignScheme::Ecdsa(Hash::Sha384)),
        (521, 0x08, SignScheme::Ecdsa(Hash::Sha512)),
    ] {
        let (private, public) = pair(&k, crypto_alg::EC, len);
        let (f, spki) = get(&k, &public, None);
        assert_eq!(f, key_format::X_509);
        let p = || {
            params(vec![
                Ttlv::enumeration(t::CRYPTOGRAPHIC_ALGORITHM, crypto_alg::ECDSA),
                Ttlv::enumeration(t::HASHING_ALGORITHM, hash),
            ])
        };
        let (s, body) = sign(&k, &private, p(), b"data");
        assert_eq!(s, SUCCESS, "{body:?}");
        let Value::ByteString(sig) = &body.child(t::SIGNATURE_DATA).unwrap().value else {
            panic!()
        };
        assert!(
            asym::verify(&spki, scheme, b"data", sig).unwrap(),
            "P-{len}"
        );
        assert_eq!(verify(&k, &public, p(), b"data", sig), 1);
        // EC keys stay in their own formats.
        let (s, _) = call(
            &k,
            "alice",
            op::GET,
            vec![
                Ttlv::text(t::UNIQUE_IDENTIFIER, &public),
                Ttlv::enumeration(t::KEY_FORMAT_TYPE, key_format::PKCS_1),
            ],
        );
        assert_ne!(s, SUCCESS);
    }
    // Unsupported sizes and curves are refused clearly.
    let (s, body) = call(
        &k,
        "alice",
        op::CREATE_KEY_PAIR,
        vec![Ttlv::structure(
            t::COMMON_ATTRIBUTES,
            vec![
                Ttlv::enumeration(t::CRYPTOGRAPHIC_ALGORITHM, crypto_alg::RSA),
                Ttlv::int(t::CRYPTOGRAPHIC_LENGTH, 1024),
            ],
        )],
    );
    assert_ne!(s, SUCCESS);
    assert!(
        format!("{body:?}").contains("2048, 3072 or 4096"),
        "{body:?}"
    );
}

#[test]
fn ed25519_pairs_sign_with_pure_eddsa() {
    let (_d, k) = kmip();
    let (private, public) = pair(&k, crypto_alg::ED25519, 256);
    let (f, spki) = get(&k, &public, None);
    assert_eq!(f, key_format::X_509);
    let (f, _) = get(&k, &private, None);
    assert_eq!(f, key_format::PKCS_8);
    // Named in the parameters, or taken from the key.
    for p in [
        params(vec![Ttlv::enumeration(
            t::CRYPTOGRAPHIC_ALGORITHM,
            crypto_alg::ED25519,
        )]),
        params(vec![]),
    ] {
        let (s, body) = sign(&k, &private, p.clone(), b"data");
        assert_eq!(s, SUCCESS, "{body:?}");
        let Value::ByteString(sig) = &body.child(t::SIGNATURE_DATA).unwrap().value else {
            panic!()
        };
        assert_eq!(sig.len(), 64);
        assert!(asym::verify(&spki, SignScheme::Ed25519, b"data", sig).unwrap());
        assert_eq!(verify(&k, &public, p.clone(), b"data", sig), 1);
        assert_eq!(verify(&k, &public, p, b"other", sig), 2);
    }
    // ECDSA parameters are not Ed25519's.
    let ecdsa = params(vec![Ttlv::enumeration(
        t::CRYPTOGRAPHIC_ALGORITHM,
        crypto_alg::ECDSA,
    )]);
    let (s, _) = sign(&k, &private, ecdsa, b"data");
    assert_ne!(s, SUCCESS);
}

/// Get's Key Material in a Transparent format (a structure).
fn get_transparent(k: &Kmip, u: &str, format: u32) -> Ttlv {
    let mut p = uid(u);
    p.push(Ttlv::enumeration(t::KEY_FORMAT_TYPE, format));
    let (s, body) = call(k, "alice", op::GET, p);
    assert_eq!(s, SUCCESS, "{body:?}");
    let holder = body
        .items()
        .iter()
        .find(|i| i.tag == t::PRIVATE_KEY || i.tag == t::PUBLIC_KEY)
        .expect("a key");
    let block = holder.child(t::KEY_BLOCK).unwrap();
    assert_eq!(
        block.child(t::KEY_FORMAT_TYPE).unwrap().value,
        Value::Enumeration(format)
    );
    block
        .child(t::KEY_VALUE)
        .unwrap()
        .child(t::KEY_MATERIAL)
        .unwrap()
        .clone()
}

/// A Big Integer's magnitude (its sign padding dropped).
fn magnitude(m: &Ttlv, tag: u32) -> Vec<u8> {
    match &m
        .child(tag)
        .unwrap_or_else(|| panic!("{tag:#x} in {m:?}"))
        .value
    {
        Value::BigInteger(b) => {
            assert_eq!(b.len() % 8, 0, "padded to eight bytes");
            assert!(b[0] & 0x80 == 0, "positive");
            b.iter().copied().skip_while(|x| *x == 0).collect()
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn keys_are_given_in_their_transparent_forms() {
    use keyhold_kmip::enums::recommended_curve as rc;
    let (_d, k) = kmip();
    let (private, public) = pair(&k, crypto_alg::RSA, 2048);
    let (_, pkcs1) = get(&k, &public, None);
    let m = get_transparent(&k, &public, key_format::TRANSPARENT_RSA_PUBLIC_KEY);
    let (n, e) = (magnitude(&m, t::MODULUS), magnitude(&m, t::PUBLIC_EXPONENT));
    assert_eq!(e, vec![1, 0, 1]);
    assert_eq!(
        asym::rsa_spki_from_parts(&n, &e).unwrap(),
        asym::rsa_public_to_spki(&pkcs1).unwrap()
    );
    let m = get_transparent(&k, &private, key_format::TRANSPARENT_RSA_PRIVATE_KEY);
    assert_eq!(magnitude(&m, t::MODULUS), n);
    for tag in [
        t::PRIVATE_EXPONENT,
        t::P,
        t::Q,
        t::PRIME_EXPONENT_P,
        t::PRIME_EXPONENT_Q,
        t::CRT_COEFFICIENT,
    ] {
        assert!(!magnitude(&m, tag).is_empty());
    }
    for (len, curve) in [(256, rc::P_256), (384, rc::P_384), (521, rc::P_521)] {
        let (private, public) = pair(&k, crypto_alg::EC, len);
        let (_, spki) = get(&k, &public, None);
        let m = get_transparent(&k, &public, key_format::TRANSPARENT_EC_PUBLIC_KEY);
        assert_eq!(
            m.child(t::RECOMMENDED_CURVE).unwrap().value,
            Value::Enumeration(curve)
        );
        assert_eq!(
            m.child(t::Q_STRING).unwrap().value,
            Value::ByteString(asym::ec_public_point(&spki).unwrap())
        );
        let m = get_transparent(&k, &private, key_format::TRANSPARENT_EC_PRIVATE_KEY);
        assert_eq!(
            m.child(t::RECOMMENDED_CURVE).unwrap().value,
            Value::Enumeration(curve)
        );
        assert!(magnitude(&m, t::D).len() <= (len as usize).div_ceil(8));
    }
    // A form of another kind of key is refused (an RSA key as EC).
    let (s, _) = call(
        &k,
        "alice",
        op::GET,
        vec![
            Ttlv::text(t::UNIQUE_IDENTIFIER, &public),
            Ttlv::enumeration(t::KEY_FORMAT_TYPE, key_format::TRANSPARENT_EC_PUBLIC_KEY),
        ],
    );
    assert_ne!(s, SUCCESS);
}

/// The identifier a Link of `link_type` on object `u` points to.
fn link_of(k: &Kmip, u: &str, link_type: u32) -> Option<String> {
    let (s, body) = call(k, "alice", op::GET_ATTRIBUTES, uid(u));
    assert_eq!(s, SUCCESS, "{body:?}");
    let attrs = body.child(t::ATTRIBUTES).expect("attributes");
    let found = attrs.children(t::LINK).find_map(|l| {
        let ty = l.child(t::LINK_TYPE).map(|v| v.value.clone());
        match (ty, l.child(t::LINKED_OBJECT_IDENTIFIER).map(|v| &v.value)) {
            (Some(Value::Enumeration(x)), Some(Value::TextString(id))) if x == link_type => {
                Some(id.clone())
            }
            _ => None,
        }
    });
    found
}

#[test]
fn rekey_key_pair_makes_a_linked_successor() {
    let (_d, k) = kmip();
    let (private, public) = pair(&k, crypto_alg::RSA, 2048);
    assert_eq!(
        link_of(&k, &private, 0x102).as_deref(),
        Some(public.as_str())
    );
    assert_eq!(
        link_of(&k, &public, 0x103).as_deref(),
        Some(private.as_str())
    );
    let (s, body) = call(
        &k,
        "alice",
        op::REKEY_KEY_PAIR,
        vec![Ttlv::text(t::PRIVATE_KEY_UNIQUE_IDENTIFIER, &private)],
    );
    assert_eq!(s, SUCCESS, "{body:?}");
    let text = |tag| match body.child(tag).map(|v| &v.value) {
        Some(Value::TextString(u)) => u.clone(),
        other => panic!("{other:?}"),
    };
    let (new_private, new_public) = (
        text(t::PRIVATE_KEY_UNIQUE_IDENTIFIER),
        text(t::PUBLIC_KEY_UNIQUE_IDENTIFIER),
    );
    assert_ne!(new_private, private);
    // The new objects link to each other and to what they replace; the old
    // ones to their replacements.
    assert_eq!(link_of(&k, &new_private, 0x102), Some(new_public.clone()));
    assert_eq!(link_of(&k, &new_private, 0x107), Some(private.clone()));
    assert_eq!(link_of(&k, &new_public, 0x107), Some(public.clone()));
    assert_eq!(link_of(&k, &private, 0x106), Some(new_private.clone()));
    // The new pair is Active (the old one was) and is another key.
    let p = || {
        params(vec![
            Ttlv::enumeration(t::PADDING_METHOD, PSS),
            Ttlv::enumeration(t::HASHING_ALGORITHM, SHA_256),
        ])
    };
    let (s, body) = sign(&k, &new_private, p(), b"data");
    assert_eq!(s, SUCCESS, "{body:?}");
    let Value::ByteString(sig) = &body.child(t::SIGNATURE_DATA).unwrap().value else {
        panic!()
    };
    assert_eq!(verify(&k, &new_public, p(), b"data", sig), 1);
    assert_eq!(
        verify(&k, &public, p(), b"data", sig),
        2,
        "the old key differs"
    );
    // A public key is not re-keyed as a pair.
    let (s, _) = call(
        &k,
        "alice",
        op::REKEY_KEY_PAIR,
        vec![Ttlv::text(t::PRIVATE_KEY_UNIQUE_IDENTIFIER, &public)],
    );
    assert_ne!(s, SUCCESS);
}
