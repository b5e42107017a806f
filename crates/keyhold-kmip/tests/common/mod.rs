//! What the KMIP front-end's integration tests share: a front-end over a
//! fresh key service, and one-item KMIP 2.1 requests answered directly.

#![allow(dead_code)]

use keyhold_kmip::enums::{crypto_alg, key_format, object_type, operation as op, usage_mask};
use keyhold_kmip::tags as t;
use keyhold_kmip::ttlv::{Ttlv, Value};
use keyhold_kmip::{Client, Kmip};

pub(crate) fn kmip() -> (tempfile::TempDir, Kmip) {
    let (dir, s) = keyhold_testkit::service::fresh();
    (dir, Kmip::new(s))
}

pub(crate) fn client(name: &str) -> Client {
    Client {
        identity: name.into(),
        peer: None,
    }
}

/// Sends one KMIP 2.1 batch item; returns (result status, payload or
/// the result message).
pub(crate) fn call(k: &Kmip, who: &str, operation: u32, payload: Vec<Ttlv>) -> (u32, Ttlv) {
    let item = call_item(k, who, operation, payload);
    let status = match item.child(t::RESULT_STATUS).map(|s| &s.value) {
        Some(Value::Enumeration(s)) => *s,
        other => panic!("no result status: {other:?}"),
    };
    let body = item
        .child(t::RESPONSE_PAYLOAD)
        .or(item.child(t::RESULT_MESSAGE))
        .cloned()
        .unwrap_or(Ttlv::structure(t::RESPONSE_PAYLOAD, vec![]));
    (status, body)
}

/// Sends one KMIP 2.1 batch item; returns the response's batch item.
pub(crate) fn call_item(k: &Kmip, who: &str, operation: u32, payload: Vec<Ttlv>) -> Ttlv {
    let req = Ttlv::structure(
        t::REQUEST_MESSAGE,
        vec![
            Ttlv::structure(
                t::REQUEST_HEADER,
                vec![
                    Ttlv::structure(
                        t::PROTOCOL_VERSION,
                        vec![
                            Ttlv::int(t::PROTOCOL_VERSION_MAJOR, 2),
                            Ttlv::int(t::PROTOCOL_VERSION_MINOR, 1),
                        ],
                    ),
                    Ttlv::int(t::BATCH_COUNT, 1),
                ],
            ),
            Ttlv::structure(
                t::BATCH_ITEM,
                vec![
                    Ttlv::enumeration(t::OPERATION, operation),
                    Ttlv::structure(t::REQUEST_PAYLOAD, payload),
                ],
            ),
        ],
    );
    let resp = k.handle(&client(who), &req);
    resp.child(t::BATCH_ITEM).expect("batch item").clone()
}

pub(crate) const SUCCESS: u32 = 0;

pub(crate) fn bytes(p: &Ttlv, tag: u32) -> Vec<u8> {
    match p.child(tag).map(|c| &c.value) {
        Some(Value::ByteString(b)) => b.clone(),
        other => panic!("no byte string {tag:#x}: {other:?} in {p:?}"),
    }
}

/// Makes an Active key pair; returns (private, public) identifiers.
pub(crate) fn pair(k: &Kmip, alg: u32, len: i32) -> (String, String) {
    let common = vec![
        Ttlv::enumeration(t::CRYPTOGRAPHIC_ALGORITHM, alg),
        Ttlv::int(t::CRYPTOGRAPHIC_LENGTH, len),
    ];
    let (status, p) = call(
        k,
        "alice",
        op::CREATE_KEY_PAIR,
        vec![
            Ttlv::structure(t::COMMON_ATTRIBUTES, common),
            Ttlv::structure(
                t::PRIVATE_KEY_ATTRIBUTES,
                vec![Ttlv::int(
                    t::CRYPTOGRAPHIC_USAGE_MASK,
                    usage_mask::SIGN | usage_mask::DECRYPT,
                )],
            ),
            Ttlv::structure(
                t::PUBLIC_KEY_ATTRIBUTES,
                vec![Ttlv::int(
                    t::CRYPTOGRAPHIC_USAGE_MASK,
                    usage_mask::VERIFY | usage_mask::ENCRYPT,
                )],
            ),
        ],
    );
    assert_eq!(status, SUCCESS, "{p:?}");
    let text = |tag| match p.child(tag).map(|v| &v.value) {
        Some(Value::TextString(s)) => s.clone(),
        other => panic!("{tag:#x}: {other:?}"),
    };
    let (private, public) = (
        text(t::PRIVATE_KEY_UNIQUE_IDENTIFIER),
        text(t::PUBLIC_KEY_UNIQUE_IDENTIFIER),
    );
    for u in [&private, &public] {
        let (s, p) = call(
            k,
            "alice",
            op::ACTIVATE,
            vec![Ttlv::text(t::UNIQUE_IDENTIFIER, u.as_str())],
        );
        assert_eq!(s, SUCCESS, "{p:?}");
    }
    (private, public)
}

/// A Register payload for a symmetric key of `alg` with this raw material
/// and usage mask, Active since a minute ago.
pub(crate) fn register_for(alg: u32, material: Vec<u8>, mask: i32) -> Vec<Ttlv> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let len = (material.len() * 8) as i32;
    vec![
        Ttlv::enumeration(t::OBJECT_TYPE, object_type::SYMMETRIC_KEY),
        Ttlv::structure(
            t::ATTRIBUTES,
            vec![
                Ttlv::int(t::CRYPTOGRAPHIC_USAGE_MASK, mask),
                Ttlv::date_time(t::ACTIVATION_DATE, now - 60),
            ],
        ),
        Ttlv::structure(
            t::SYMMETRIC_KEY,
            vec![Ttlv::structure(
                t::KEY_BLOCK,
                vec![
                    Ttlv::enumeration(t::KEY_FORMAT_TYPE, key_format::RAW),
                    Ttlv::structure(t::KEY_VALUE, vec![Ttlv::bytes(t::KEY_MATERIAL, material)]),
                    Ttlv::enumeration(t::CRYPTOGRAPHIC_ALGORITHM, alg),
                    Ttlv::int(t::CRYPTOGRAPHIC_LENGTH, len),
                ],
            )],
        ),
    ]
}

/// Registers an Active AES-256 key (for encryption and decryption);
/// returns its identifier.
pub(crate) fn register_aes(k: &Kmip, who: &str) -> String {
    let mask = usage_mask::ENCRYPT | usage_mask::DECRYPT;
    let payload = register_for(crypto_alg::AES, vec![7u8; 32], mask);
    let (status, p) = call(k, who, op::REGISTER, payload);
    assert_eq!(status, SUCCESS, "{p:?}");
    match &p.child(t::UNIQUE_IDENTIFIER).unwrap().value {
        Value::TextString(u) => u.clone(),
        v => panic!("{v:?}"),
    }
}
