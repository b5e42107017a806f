//! Streamed Encrypt/Decrypt (Init Indicator, Correlation Value, Final
//! Indicator) through the KMIP front-end: what the OASIS GCM-3 case does
//! not cover — decryption, a wrong tag, another identity's stream, parts
//! after the end, and modes that do not stream.

use keyhold_kmip::enums::block_cipher_mode as bcm;
use keyhold_kmip::enums::operation as op;
use keyhold_kmip::tags as t;
use keyhold_kmip::ttlv::Ttlv;
use keyhold_kmip::Kmip;

mod common;
use common::*;

fn gcm_params(mode: u32) -> Ttlv {
    Ttlv::structure(
        t::CRYPTOGRAPHIC_PARAMETERS,
        vec![
            Ttlv::enumeration(t::BLOCK_CIPHER_MODE, mode),
            Ttlv::int(t::TAG_LENGTH, 16),
        ],
    )
}

/// An Encrypt/Decrypt payload on `uid` in `mode`: Data, then `rest`.
fn payload(uid: &str, mode: u32, data: Vec<u8>, rest: Vec<Ttlv>) -> Vec<Ttlv> {
    let mut p = vec![
        Ttlv::text(t::UNIQUE_IDENTIFIER, uid),
        gcm_params(mode),
        Ttlv::bytes(t::DATA, data),
    ];
    p.extend(rest);
    p
}

/// One streamed operation: `parts` of data, the first with the IV and
/// AAD, the last with `last_extra` (a tag when decrypting). Returns the
/// joined output and the last payload.
fn stream(
    k: &Kmip,
    who: &str,
    uid: &str,
    operation: u32,
    parts: &[&[u8]],
    last_extra: Vec<Ttlv>,
) -> (Vec<u8>, (u32, Ttlv)) {
    let (status, first) = call(
        k,
        who,
        operation,
        payload(
            uid,
            bcm::GCM,
            parts[0].to_vec(),
            vec![
                Ttlv::bytes(t::IV_COUNTER_NONCE, b"nonce-of-any-length".to_vec()),
                Ttlv::boolean(t::INIT_INDICATOR, true),
                Ttlv::bytes(t::AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA, b"aad".to_vec()),
            ],
        ),
    );
    assert_eq!(status, SUCCESS, "{first:?}");
    let cv = bytes(&first, t::CORRELATION_VALUE);
    let mut out = bytes(&first, t::DATA);
    for (i, part) in parts[1..].iter().enumerate() {
        let last = i + 2 == parts.len();
        let mut p = payload(
            uid,
            bcm::GCM,
            part.to_vec(),
            vec![Ttlv::bytes(t::CORRELATION_VALUE, cv.clone())],
        );
        if last {
            p.push(Ttlv::boolean(t::FINAL_INDICATOR, true));
            p.extend(last_extra.clone());
        }
        let r = call(k, who, operation, p);
        if r.0 != SUCCESS {
            return (out, r);
        }
        out.extend(bytes(&r.1, t::DATA));
        if last {
            return (out, r);
        }
    }
    unreachable!("at least two parts")
}

#[test]
fn a_streamed_encryption_decrypts_in_one_go_and_streamed() {
    let (_d, k) = kmip();
    let uid = register_aes(&k, "alice");
    let msg: Vec<u8> = (0..100u8).collect();
    let (ct, (status, last)) = stream(
        &k,
        "alice",
        &uid,
        op::ENCRYPT,
        &[&msg[..7], &msg[7..40], &msg[40..]],
        vec![],
    );
    assert_eq!(status, SUCCESS);
    let tag = bytes(&last, t::AUTHENTICATED_ENCRYPTION_TAG);
    assert!(last.child(t::CORRELATION_VALUE).is_none());
    // One-shot decryption with the same 19-byte IV.
    let (status, p) = call(
        &k,
        "alice",
        op::DECRYPT,
        payload(
            &uid,
            bcm::GCM,
            ct.clone(),
            vec![
                Ttlv::bytes(t::IV_COUNTER_NONCE, b"nonce-of-any-length".to_vec()),
                Ttlv::bytes(t::AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA, b"aad".to_vec()),
                Ttlv::bytes(t::AUTHENTICATED_ENCRYPTION_TAG, tag.clone()),
            ],
        ),
    );
    assert_eq!(status, SUCCESS, "{p:?}");
    assert_eq!(bytes(&p, t::DATA), msg);
    // Streamed decryption, with the right tag and with a wrong one.
    let tag_item = |t: Vec<u8>| vec![Ttlv::bytes(t::AUTHENTICATED_ENCRYPTION_TAG, t)];
    let (pt, (status, _)) = stream(
        &k,
        "alice",
        &uid,
        op::DECRYPT,
        &[&ct[..50], &ct[50..]],
        tag_item(tag.clone()),
    );
    assert_eq!((status, pt), (SUCCESS, msg));
    let mut bad = tag;
    bad[3] ^= 1;
    let (_, (status, m)) = stream(
        &k,
        "alice",
        &uid,
        op::DECRYPT,
        &[&ct[..50], &ct[50..]],
        tag_item(bad),
    );
    assert_ne!(status, SUCCESS);
    assert!(format!("{m:?}").contains("authentication failed"), "{m:?}");
}

#[test]
fn a_stream_is_its_owners_and_ends_with_its_last_part() {
    let (_d, k) = kmip();
    let uid = register_aes(&k, "alice");
    let start = |who: &str| {
        call(
            &k,
            who,
            op::ENCRYPT,
            payload(
                &uid,
                bcm::GCM,
                vec![1; 16],
                vec![
                    Ttlv::bytes(t::IV_COUNTER_NONCE, vec![0; 12]),
                    Ttlv::boolean(t::INIT_INDICATOR, true),
                ],
            ),
        )
    };
    let (status, first) = start("alice");
    assert_eq!(status, SUCCESS);
    let cv = bytes(&first, t::CORRELATION_VALUE);
    let continuing = || vec![Ttlv::bytes(t::CORRELATION_VALUE, cv.clone())];
    let next = |who: &str, last: bool| {
        let mut p = payload(&uid, bcm::GCM, vec![2; 5], continuing());
        if last {
            p.push(Ttlv::boolean(t::FINAL_INDICATOR, true));
        }
        call(&k, who, op::ENCRYPT, p)
    };
    // Another identity is refused (the object is alice's, and so is the stream).
    assert_ne!(next("mallory", true).0, SUCCESS);
    // A Decrypt cannot continue an Encrypt stream.
    let (status, m) = call(
        &k,
        "alice",
        op::DECRYPT,
        payload(&uid, bcm::GCM, vec![2; 5], continuing()),
    );
    assert_ne!(status, SUCCESS);
    assert!(format!("{m:?}").contains("Encrypt stream"), "{m:?}");
    // Still alice's to finish; then it is gone.
    assert_eq!(next("alice", false).0, SUCCESS);
    let (status, last) = next("alice", true);
    assert_eq!(status, SUCCESS);
    assert_eq!(bytes(&last, t::AUTHENTICATED_ENCRYPTION_TAG).len(), 16);
    let (status, m) = next("alice", true);
    assert_ne!(status, SUCCESS);
    assert!(format!("{m:?}").contains("Correlation Value"), "{m:?}");
    // CBC does not stream: a clear refusal, not a wrong answer.
    let (status, m) = call(
        &k,
        "alice",
        op::ENCRYPT,
        payload(
            &uid,
            bcm::CBC,
            vec![1; 16],
            vec![Ttlv::boolean(t::INIT_INDICATOR, true)],
        ),
    );
    assert_ne!(status, SUCCESS);
    assert!(format!("{m:?}").contains("AES-GCM only"), "{m:?}");
    // A stream's IV is checked as a one-shot call's: required to decrypt,
    // at most 256 bytes.
    let start_with = |operation, iv: Option<Vec<u8>>| {
        let mut rest = vec![Ttlv::boolean(t::INIT_INDICATOR, true)];
        rest.extend(iv.map(|iv| Ttlv::bytes(t::IV_COUNTER_NONCE, iv)));
        call(
            &k,
            "alice",
            operation,
            payload(&uid, bcm::GCM, vec![1; 16], rest),
        )
    };
    let (status, m) = start_with(op::DECRYPT, None);
    assert_ne!(status, SUCCESS);
    assert!(format!("{m:?}").contains("missing IV"), "{m:?}");
    let (status, m) = start_with(op::ENCRYPT, Some(vec![0; 257]));
    assert_ne!(status, SUCCESS);
    assert!(format!("{m:?}").contains("1 to 256 bytes"), "{m:?}");
    assert_eq!(start_with(op::ENCRYPT, Some(vec![0; 256])).0, SUCCESS);
}
