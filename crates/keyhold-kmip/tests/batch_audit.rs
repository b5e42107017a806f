//! A message of several read-only items (signatures, encryption, lookups)
//! has their audit records written together, one per item and in order,
//! before any answer leaves; an item whose record cannot be written fails
//! as it would alone (with Stop, the items after it are not answered).

mod common;

use common::*;
use keyhold_audit::{AuditLog, AuditLogConfig, ChainWriter};
use keyhold_crypto::HmacKey;
use keyhold_kmip::enums::{block_cipher_mode, operation as op};
use keyhold_kmip::tags as t;
use keyhold_kmip::ttlv::{Ttlv, Value};
use keyhold_kmip::Kmip;
use std::sync::Arc;

/// A message of `n` Encrypt items with `uid`, with a Batch Error
/// Continuation Option when one is given (1 Continue, 2 Stop).
fn encrypts(uid: &str, n: usize, on_error: Option<u32>) -> Ttlv {
    let mut header = vec![
        Ttlv::structure(
            t::PROTOCOL_VERSION,
            vec![
                Ttlv::int(t::PROTOCOL_VERSION_MAJOR, 1),
                Ttlv::int(t::PROTOCOL_VERSION_MINOR, 4),
            ],
        ),
        Ttlv::int(t::BATCH_COUNT, n as i32),
    ];
    if let Some(o) = on_error {
        header.push(Ttlv::enumeration(t::BATCH_ERROR_CONTINUATION_OPTION, o));
    }
    let mut parts = vec![Ttlv::structure(t::REQUEST_HEADER, header)];
    for i in 0..n {
        parts.push(Ttlv::structure(
            t::BATCH_ITEM,
            vec![
                Ttlv::enumeration(t::OPERATION, op::ENCRYPT),
                Ttlv::bytes(t::UNIQUE_BATCH_ITEM_ID, vec![i as u8]),
                Ttlv::structure(
                    t::REQUEST_PAYLOAD,
                    vec![
                        Ttlv::text(t::UNIQUE_IDENTIFIER, uid),
                        // AES-CBC with PKCS#5 padding; the server makes the IV.
                        Ttlv::structure(
                            t::CRYPTOGRAPHIC_PARAMETERS,
                            vec![
                                Ttlv::enumeration(t::BLOCK_CIPHER_MODE, block_cipher_mode::CBC),
                                Ttlv::enumeration(t::PADDING_METHOD, 3),
                            ],
                        ),
                        Ttlv::bytes(t::DATA, vec![i as u8; 16]),
                    ],
                ),
            ],
        ));
    }
    Ttlv::structure(t::REQUEST_MESSAGE, parts)
}

/// (status, batch item id, result message) of each answered item.
fn answers(resp: &Ttlv) -> Vec<(u32, Vec<u8>, String)> {
    resp.children(t::BATCH_ITEM)
        .map(|b| {
            let status = match b.child(t::RESULT_STATUS).map(|s| &s.value) {
                Some(Value::Enumeration(s)) => *s,
                other => panic!("no status: {other:?}"),
            };
            let id = match b.child(t::UNIQUE_BATCH_ITEM_ID).map(|s| &s.value) {
                Some(Value::ByteString(v)) => v.clone(),
                _ => vec![],
            };
            let msg = match b.child(t::RESULT_MESSAGE).map(|s| &s.value) {
                Some(Value::TextString(m)) => m.clone(),
                _ => String::new(),
            };
            (status, id, msg)
        })
        .collect()
}

#[test]
fn batch_items_are_recorded_together_and_fail_without_their_record() {
    let (_dir, service) = keyhold_testkit::service::fresh();
    let logs = tempfile::tempdir().unwrap();
    let mut cfg = AuditLogConfig::new(logs.path().to_owned());
    // Small files, so that a later write must start a new one.
    cfg.max_file_bytes = 4096;
    let key = Arc::new(HmacKey::new(b"audit key"));
    let writer = ChainWriter::open(&cfg, "kmip@test", key.clone(), false).unwrap();
    assert!(service.audit().attach(Arc::new(AuditLog::start(writer))));
    let k = Kmip::new(service);

    let uid = register_aes(&k, "alice");

    // Five items: five answers, five records (one per item, in order).
    let resp = k.handle(&client("alice"), &encrypts(&uid, 5, None));
    let got = answers(&resp);
    assert_eq!(got.len(), 5);
    for (i, (status, id, msg)) in got.iter().enumerate() {
        assert_eq!((*status, id.as_slice()), (SUCCESS, &[i as u8][..]), "{msg}");
    }
    let records = || {
        let mut v = Vec::new();
        keyhold_audit::read_all(logs.path(), &[], &key, |r, _, ok| {
            assert!(ok, "every record verifies");
            v.push((r.operation.clone(), r.key.clone(), r.result.clone()));
        });
        v
    };
    let all = records();
    let encrypts_seen: Vec<_> = all.iter().filter(|r| r.0 == "Encrypt").collect();
    assert_eq!(encrypts_seen.len(), 5, "{all:?}");
    assert!(encrypts_seen
        .iter()
        .all(|r| r.1.as_deref() == Some(uid.as_str()) && r.2 == "OK"));

    // Fill the current file, then take the chain's directory away: the next
    // write must start a new file there and cannot.
    for _ in 0..40 {
        let _ = k.handle(&client("alice"), &encrypts(&uid, 1, None));
    }
    std::fs::remove_dir_all(logs.path().join("kmip@test")).unwrap();
    let mut refused = false;
    for _ in 0..100 {
        let got = answers(&k.handle(&client("alice"), &encrypts(&uid, 3, None)));
        if got.iter().all(|g| g.0 == SUCCESS) {
            continue; // still room in the current file
        }
        // Stop (the default): the first item fails for want of its record
        // and nothing after it is answered.
        assert_eq!(got.len(), 1, "{got:?}");
        assert_ne!(got[0].0, SUCCESS);
        assert!(got[0].2.contains("audit log"), "{got:?}");
        refused = true;
        break;
    }
    assert!(refused, "a full audit file never made the items fail");
    // Continue: every item is answered, each failing on its own.
    let got = answers(&k.handle(&client("alice"), &encrypts(&uid, 3, Some(1))));
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(
        got.iter()
            .all(|g| g.0 != SUCCESS && g.2.contains("audit log")),
        "{got:?}"
    );
}
