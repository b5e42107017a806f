//! The KMIP front-end end to end: the real server over mutual TLS, PyKMIP as
//! an independent client, a native client for what PyKMIP cannot send
//! (malformed and hostile messages), and the key manager's rules (owner,
//! export policy, break glass, audit) applied to KMIP objects.

mod common;

use common::kmip::*;
use common::{eventually, files_holding, Env};
use keyhold_kmip::enums::{object_type, operation as op};
use keyhold_kmip::tags as t;
use keyhold_kmip::ttlv::{Limits, Ttlv, Value};
use std::io::Write;
use std::path::PathBuf;

/// `kmip status` run in the server (through the admin API) reports the
/// listener as it is now; run on the data directory it says it cannot.
#[test]
fn kmip_status_through_the_admin_api_is_live() {
    let k = start();
    let token = k
        .env
        .json(&["admin", "token", "create", "ops", "--role", "operator"])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = k.env.dir.path().join("serve.stdout");
    let mut admin = String::new();
    eventually("the admin listener", || {
        admin = std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("keyhold admin on "))
            .unwrap_or("")
            .to_owned();
        !admin.is_empty()
    });
    let mut alice = Conn::open(&k, "alice");
    ok(&alice.one((1, 4), op::CREATE, create_aes(vec![])));
    ok(&alice.one((1, 4), op::CREATE, create_aes(vec![])));
    let remote = std::process::Command::new(common::BIN)
        .env("KEYHOLD_ADMIN_TOKEN", &token)
        .args([
            "--json",
            "--server",
            &format!("https://{admin}"),
            "--server-ca",
        ])
        .arg(&k.server.ca)
        .args(["kmip", "status"])
        .output()
        .unwrap();
    assert!(
        remote.status.success(),
        "{}",
        String::from_utf8_lossy(&remote.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&remote.stdout).unwrap();
    let l = &v["listener"];
    assert_eq!(l["connections_open"], 1, "{v}");
    assert!(l["messages"].as_u64().unwrap() >= 2, "{v}");
    assert_eq!(l["clients"][0]["identity"], "alice", "{v}");
    assert_eq!(l["clients"][0]["messages"], 2, "{v}");
    assert_eq!(v["objects"], 2);
    drop(alice);
    // Locally there is no listener to ask.
    let local = k.env.run_ok(&["kmip", "status"]);
    assert!(local.contains("not in this process"), "{local}");
}

#[test]
fn hostile_clients_and_bytes_get_answers_or_a_closed_door() {
    let k = start();
    strangers_are_refused_at_the_handshake(&k);
    let mut c = Conn::open(&k, "alice");
    malformed_requests_are_answered(&mut c);
    batches_and_destroyed_keys(&mut c);
    broken_messages_close_the_door(&k);
}

/// Without a client certificate, or with another CA's, no service.
fn strangers_are_refused_at_the_handshake(k: &Kmip) {
    // No client certificate: the handshake fails.
    let no_cert = Conn::with(k.port, client_config(&k.server.ca, None)).and_then(|mut c| {
        c.raw(&request((1, 4), vec![(op::QUERY, vec![])]).encode())
            .ok_or(std::io::ErrorKind::ConnectionReset.into())
    });
    assert!(no_cert.is_err(), "served a client without a certificate");
    // A certificate from another CA: refused.
    let other = Env::new();
    let (oc, ok_) = issue(&other, "mallory");
    let wrong_ca =
        Conn::with(k.port, client_config(&k.server.ca, Some((&oc, &ok_)))).and_then(|mut c| {
            c.raw(&request((1, 4), vec![(op::QUERY, vec![])]).encode())
                .ok_or(std::io::ErrorKind::ConnectionReset.into())
        });
    assert!(wrong_ca.is_err(), "served a certificate from another CA");
}

/// Wrong lengths, deep nesting, unknown tags and operations: answered.
fn malformed_requests_are_answered(c: &mut Conn) {
    // Wrong lengths: an Integer claiming 8 bytes.
    let mut bad = request(
        (1, 4),
        vec![(op::QUERY, vec![Ttlv::int(t::QUERY_FUNCTION, 1)])],
    )
    .encode();
    let n = bad.len();
    let pos = n - 16; // the Query Function item's header
    bad[pos + 3] = 0x02;
    bad[pos + 7] = 0x08;
    let r = c.raw(&bad).expect("an answer to a bad length");
    failed(&r.children(t::BATCH_ITEM).next().unwrap().clone(), 0x04);
    // Deep nesting.
    let mut deep = Ttlv::int(t::QUERY_FUNCTION, 1);
    for _ in 0..100 {
        deep = Ttlv::structure(t::REQUEST_PAYLOAD, vec![deep]);
    }
    let r = c
        .raw(&request((1, 4), vec![(op::QUERY, vec![deep])]).encode())
        .expect("an answer to deep nesting");
    let m = failed(&r.children(t::BATCH_ITEM).next().unwrap().clone(), 0x04);
    assert!(m.contains("nested"), "{m}");
    // Unknown tags in a payload are ignored; an unknown operation is named.
    let items = c.call(
        (1, 4),
        vec![(
            op::QUERY,
            vec![
                Ttlv::int(0x54_0001, 7),
                Ttlv::enumeration(t::QUERY_FUNCTION, 3),
            ],
        )],
    );
    ok(&items[0]);
    let items = c.call((1, 4), vec![(0x77, vec![])]);
    failed(&items[0], 0x05);
}

/// A batch with an ID placeholder; a destroyed key's refusals in each
/// version; a version Keyhold does not speak.
fn batches_and_destroyed_keys(c: &mut Conn) {
    // Create then Activate in one batch, the second by ID placeholder;
    // then revoke, destroy, and use the destroyed key.
    let items = c.call(
        (1, 4),
        vec![(op::CREATE, create_aes(vec![])), (op::ACTIVATE, vec![])],
    );
    let u = uid_of(ok(&items[0]));
    assert_eq!(uid_of(ok(&items[1])), u);
    let reason = Ttlv::structure(
        t::REVOCATION_REASON,
        vec![Ttlv::enumeration(t::REVOCATION_REASON_CODE, 6)],
    );
    let mut p = uid(&u);
    p.push(reason);
    ok(&c.one((1, 4), op::REVOKE, p));
    ok(&c.one((1, 4), op::DESTROY, uid(&u)));
    failed(&c.one((2, 0), op::GET, uid(&u)), 0x36); // Object Destroyed (2.x)
    failed(&c.one((1, 4), op::GET, uid(&u)), 0x01); // nearest 1.x reason
    let mut p = uid(&u);
    p.push(Ttlv::bytes(t::DATA, b"x".to_vec()));
    failed(&c.one((1, 4), op::ENCRYPT, p), 0x0C); // Permission Denied in 1.x
                                                  // A version Keyhold does not speak: answered in the nearest one below.
    let items = c.call((1, 9), vec![(op::DISCOVER_VERSIONS, vec![])]);
    assert!(ok(&items[0]).children(t::PROTOCOL_VERSION).count() >= 7);
}

/// Truncated messages, huge length claims and HTTP: the door closes, the
/// server stays up.
fn broken_messages_close_the_door(k: &Kmip) {
    // Truncated message: the connection closes, the server stays up.
    let mut t1 = Conn::open(k, "alice");
    let whole = request((1, 4), vec![(op::QUERY, vec![])]).encode();
    t1.tls.write_all(&whole[..whole.len() - 5]).unwrap();
    t1.tls.flush().unwrap();
    drop(t1);
    // A 100 MB length claim: one Invalid Message answer, then the door closes.
    let mut big = Conn::open(k, "alice");
    let mut h = vec![0x42, 0x00, 0x78, 0x01];
    h.extend_from_slice(&(100u32 << 20).to_be_bytes());
    let r = big.raw(&h).expect("an answer to a 100 MB claim");
    failed(&r.children(t::BATCH_ITEM).next().unwrap().clone(), 0x04);
    // Not a request message at all.
    let mut junk = Conn::open(k, "alice");
    let r = junk
        .raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("an answer to HTTP");
    failed(&r.children(t::BATCH_ITEM).next().unwrap().clone(), 0x04);
    // Still serving.
    let mut c = Conn::open(k, "alice");
    ok(&c.one(
        (1, 4),
        op::QUERY,
        vec![Ttlv::enumeration(t::QUERY_FUNCTION, 1)],
    ));
}

#[test]
fn owner_export_policy_and_break_glass_apply_to_kmip_keys() {
    let k = start();
    let mut alice = Conn::open(&k, "alice");
    let mut bob = Conn::open(&k, "bob");
    let locked = a_key_that_may_never_leave(&mut alice);
    wrapped_export_and_the_key_that_stays_in(&mut alice, &locked);
    past_its_protect_stop_date_a_key_no_longer_encrypts(&mut alice);
    let open_key = grants_are_for_use_only(&k, &mut alice, &mut bob);
    break_glass_refuses_kmip_and_refusals_are_on_record(&k, &mut alice, &open_key, &locked);
}

/// A key that may never leave Keyhold.
fn a_key_that_may_never_leave(alice: &mut Conn) -> String {
    let p = create_aes(vec![attr("Extractable", Ttlv::boolean(0, false))]);
    let locked = uid_of(ok(&alice.one((1, 4), op::CREATE, p)));
    let m = failed(&alice.one((2, 0), op::GET, uid(&locked)), 0x17); // Not Extractable
    assert!(m.contains("not exportable"), "{m}");
    failed(&alice.one((1, 4), op::GET, uid(&locked)), 0x0C); // Permission Denied in 1.x
                                                             // ...but it works inside Keyhold.
    ok(&alice.one((1, 4), op::ACTIVATE, uid(&locked)));
    let mut p = uid(&locked);
    p.push(Ttlv::bytes(t::DATA, b"secret".to_vec()));
    let enc = alice.one((1, 4), op::ENCRYPT, p);
    let payload = ok(&enc);
    let mut p = uid(&locked);
    for tag in [
        t::DATA,
        t::IV_COUNTER_NONCE,
        t::AUTHENTICATED_ENCRYPTION_TAG,
    ] {
        p.push(payload.child(tag).unwrap().clone());
    }
    let dec = alice.one((1, 4), op::DECRYPT, p);
    assert_eq!(
        ok(&dec).child(t::DATA).unwrap().value,
        Value::ByteString(b"secret".to_vec())
    );

    locked
}

/// Wrapped export: the whole Key Value, TTLV-encoded, under AES key wrap
/// with padding; a non-exportable key stays in even when wrapped.
fn wrapped_export_and_the_key_that_stays_in(alice: &mut Conn, locked: &str) {
    let p = vec![
        Ttlv::enumeration(t::OBJECT_TYPE, object_type::SYMMETRIC_KEY),
        Ttlv::structure(
            t::TEMPLATE_ATTRIBUTE,
            vec![
                attr("Cryptographic Algorithm", Ttlv::enumeration(0, 3)),
                attr("Cryptographic Length", Ttlv::int(0, 256)),
                attr("Cryptographic Usage Mask", Ttlv::int(0, 0x10 | 0x20)),
            ],
        ),
    ];
    let kek = uid_of(ok(&alice.one((1, 4), op::CREATE, p)));
    ok(&alice.one((1, 4), op::ACTIVATE, uid(&kek)));
    let target = uid_of(ok(&alice.one((1, 4), op::CREATE, create_aes(vec![]))));
    let spec = Ttlv::structure(
        t::KEY_WRAPPING_SPECIFICATION,
        vec![
            Ttlv::enumeration(t::WRAPPING_METHOD, 1),
            Ttlv::structure(
                t::ENCRYPTION_KEY_INFORMATION,
                vec![
                    Ttlv::text(t::UNIQUE_IDENTIFIER, &kek),
                    Ttlv::structure(
                        t::CRYPTOGRAPHIC_PARAMETERS,
                        vec![Ttlv::enumeration(t::BLOCK_CIPHER_MODE, 0x0C)],
                    ),
                ],
            ),
        ],
    );
    let key_bytes = |payload: &Ttlv| -> Ttlv {
        payload
            .child(t::SYMMETRIC_KEY)
            .unwrap()
            .child(t::KEY_BLOCK)
            .unwrap()
            .child(t::KEY_VALUE)
            .unwrap()
            .clone()
    };
    let mut p = uid(&target);
    p.push(spec.clone());
    let got = alice.one((1, 4), op::GET, p);
    let Value::ByteString(wrapped) = key_bytes(ok(&got)).value else {
        panic!("a wrapped Key Value is a byte string")
    };
    let plain = alice.one((1, 4), op::GET, uid(&target));
    let kek_raw = alice.one((1, 4), op::GET, uid(&kek));
    let Value::ByteString(kek_bytes) = key_bytes(ok(&kek_raw))
        .child(t::KEY_MATERIAL)
        .unwrap()
        .value
        .clone()
    else {
        panic!("raw key")
    };
    let unwrapped = keyhold_crypto::sym::aes_key_unwrap(&kek_bytes, &wrapped, true).unwrap();
    let kv = Ttlv::decode(&unwrapped, &Limits::default()).unwrap();
    assert_eq!(kv, key_bytes(ok(&plain)), "unwraps to the Key Value");
    let mut p = uid(locked);
    p.push(spec);
    failed(&alice.one((2, 0), op::GET, p), 0x17);
}

/// Past its Protect Stop Date a key no longer encrypts: Permission
/// Denied up to KMIP 2.0, Wrong Key Lifecycle State from 2.1, as the
/// profiles' cases of each version expect.
fn past_its_protect_stop_date_a_key_no_longer_encrypts(alice: &mut Conn) {
    let stopped = uid_of(ok(&alice.one(
        (1, 4),
        op::CREATE,
        create_aes(vec![attr(
            "Protect Stop Date",
            Ttlv::date_time(0, 1_000_000_000),
        )]),
    )));
    ok(&alice.one((1, 4), op::ACTIVATE, uid(&stopped)));
    for (version, reason) in [((1, 4), 0x0C), ((2, 0), 0x0C), ((2, 1), 0x43)] {
        let mut p = uid(&stopped);
        p.push(Ttlv::bytes(t::DATA, b"late".to_vec()));
        let m = failed(&alice.one(version, op::ENCRYPT, p), reason);
        assert!(m.contains("Protect Stop Date"), "{m}");
    }
}

/// Bob may not use Alice's key until a custodian grants it.
fn grants_are_for_use_only(k: &Kmip, alice: &mut Conn, bob: &mut Conn) -> String {
    let open_key = uid_of(ok(&alice.one((1, 4), op::CREATE, create_aes(vec![]))));
    failed(&bob.one((1, 4), op::GET, uid(&open_key)), 0x0C);
    let found = ok(&bob.one((1, 4), op::LOCATE, vec![]))
        .children(t::UNIQUE_IDENTIFIER)
        .count();
    assert_eq!(found, 0, "Locate shows Bob none of Alice's objects");
    k.env.run_ok(&["kmip", "grant", &open_key, "bob"]);
    ok(&bob.one((1, 4), op::GET, uid(&open_key)));
    // A grant is for use: Bob may read and use the key, never change it,
    // end it or take its name (in either KMIP version).
    ok(&bob.one((1, 4), op::GET_ATTRIBUTES, uid(&open_key)));
    let mut named = uid(&open_key);
    named.push(attr(
        "Name",
        Ttlv::structure(
            0,
            vec![
                Ttlv::text(t::NAME_VALUE, "bobs-now"),
                Ttlv::enumeration(t::NAME_TYPE, 1),
            ],
        ),
    ));
    let mut revoke = uid(&open_key);
    revoke.push(Ttlv::structure(
        t::REVOCATION_REASON,
        vec![Ttlv::enumeration(t::REVOCATION_REASON_CODE, 1)],
    ));
    for (version, operation, payload) in [
        ((1, 4), op::DESTROY, uid(&open_key)),
        ((2, 1), op::DESTROY, uid(&open_key)),
        ((1, 4), op::REVOKE, revoke.clone()),
        ((1, 4), op::REKEY, uid(&open_key)),
        ((1, 4), op::ACTIVATE, uid(&open_key)),
        ((1, 4), op::ADD_ATTRIBUTE, named.clone()),
        ((1, 4), op::MODIFY_ATTRIBUTE, named.clone()),
    ] {
        let m = failed(&bob.one(version, operation, payload), 0x0C);
        assert!(m.contains("for use only"), "{operation:#x}: {m}");
    }
    // The owner still may.
    ok(&alice.one((1, 4), op::ACTIVATE, uid(&open_key)));

    open_key
}

/// Break glass: every KMIP use of key material is refused until unlock.
fn break_glass_refuses_kmip_and_refusals_are_on_record(
    k: &Kmip,
    alice: &mut Conn,
    open_key: &str,
    locked: &str,
) {
    k.env.run_ok(&["lockdown"]);
    let m = failed(&alice.one((1, 4), op::GET, uid(open_key)), 0x0C);
    assert!(m.contains("locked down"), "{m}");
    k.env.run_ok(&["unlock"]);
    ok(&alice.one((1, 4), op::GET, uid(open_key)));

    // The refused export is on record, with who asked.
    assert_refused_gets_on_record(&k.env, locked, "alice", 3);
    let out = k.env.run_ok(&["kmip", "status"]);
    assert!(
        out.contains("alice") && out.contains("SymmetricKey"),
        "{out}"
    );
}

/// XKS keys are KMIP objects too (`xks:/STORE/KEY`): visible to the
/// identities a custodian granted them to, never exportable, read-only,
/// and under the same break glass.
/// Ownership, grants and the export flag live in the database, which is
/// untrusted: changed there behind Keyhold's back, they are refused, not
/// obeyed.
#[test]
fn owners_and_export_flags_changed_in_the_database_are_refused() {
    let k = start();
    let mut alice = Conn::open(&k, "alice");
    let mut bob = Conn::open(&k, "bob");
    let mine = uid_of(ok(&alice.one((1, 4), op::CREATE, create_aes(vec![]))));
    let p = create_aes(vec![attr("Extractable", Ttlv::boolean(0, false))]);
    let stays = uid_of(ok(&alice.one((1, 4), op::CREATE, p)));
    ok(&alice.one((1, 4), op::GET, uid(&mine)));
    failed(&bob.one((1, 4), op::GET, uid(&mine)), 0x0C);
    let db = k.env.data().join("keyhold.db");
    common::sqlite(
        &db,
        &format!(
            "UPDATE objects SET owner = 'bob' WHERE uid = '{mine}'; \
             UPDATE objects SET exportable = 1 WHERE uid = '{stays}';"
        ),
    );
    eventually("the changed rows refused", || {
        let m = status(&bob.one((1, 4), op::GET, uid(&mine)));
        assert_ne!(m.0, 0, "bob got a key the database said was his");
        m.1 == Some(0x100) && m.2.contains("does not verify")
    });
    let m = failed(&alice.one((1, 4), op::GET, uid(&stays)), 0x100);
    assert!(m.contains("does not verify"), "{m}");
    // Nor does Locate list them to their new owner.
    let found = bob.one((1, 4), op::LOCATE, vec![]);
    assert!(!uids(ok(&found)).contains(&mine));
    // (the log is written by a thread of its own)
    eventually("the refusal in the log", || {
        common::read(&k.server.log).contains(&format!("object {mine} does not verify"))
    });
}

#[test]
fn xks_keys_are_visible_over_kmip_but_never_leave() {
    let k = start();
    k.env.run_ok(&["store", "create", "/apps"]);
    k.env.run_ok(&["key", "create", "/apps", "db-key"]);
    let x = "xks:/apps/db-key";
    let mut alice = Conn::open(&k, "alice");
    let mut bob = Conn::open(&k, "bob");
    // Nobody owns it over KMIP: refused and not located until granted.
    failed(&alice.one((2, 0), op::GET_ATTRIBUTES, uid(x)), 0x0C);
    let found = uids(ok(&alice.one((2, 0), op::LOCATE, vec![])));
    assert!(!found.contains(&x.to_owned()), "{found:?}");
    // A custodian grants it to alice.
    let out = k.env.run_ok(&["kmip", "grant", x, "alice"]);
    assert!(out.contains("never exportable"), "{out}");
    let out = k
        .env
        .cmd(&["kmip", "grant", "xks:/apps/no-such-key", "alice"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let m = String::from_utf8_lossy(&out.stderr);
    assert!(m.contains("no-such-key"), "{m}");
    let found = uids(ok(&alice.one(
        (1, 4),
        op::LOCATE,
        vec![Ttlv::structure(
            t::ATTRIBUTE,
            vec![
                Ttlv::text(t::ATTRIBUTE_NAME, "Object Group"),
                Ttlv::text(t::ATTRIBUTE_VALUE, "/apps"),
            ],
        )],
    )));
    assert_eq!(found, vec![x.to_owned()]);
    let found = uids(ok(&alice.one(
        (1, 4),
        op::LOCATE,
        vec![name_attr("db-key")],
    )));
    assert_eq!(found, vec![x.to_owned()]);
    assert_eq!(state_of(&mut alice, (1, 4), x), 2, "Active");
    let attrs = format!("{:?}", ok(&alice.one((2, 0), op::GET_ATTRIBUTES, uid(x))));
    for want in [
        "CryptographicLength Integer(256)",
        "CryptographicAlgorithm Enumeration(0x3)",
        "NameValue TextString(\"db-key\")",
        "NeverExtractable Boolean(true)",
    ] {
        assert!(attrs.contains(want), "{want} in {attrs}");
    }
    an_xks_key_stays_in_and_read_only(&mut alice, x);
    grants_are_the_custodians(&k, &mut alice, &mut bob, x);
    // Lifecycle and break glass from the custodian show at once.
    k.env.run_ok(&["key", "deactivate", "/apps", "db-key"]);
    assert_eq!(state_of(&mut alice, (1, 4), x), 3, "Deactivated");
    k.env.run_ok(&["store", "disable", "/apps"]);
    let attrs = format!("{:?}", ok(&alice.one((2, 0), op::GET_ATTRIBUTES, uid(x))));
    assert!(attrs.contains("break glass"), "{attrs}");
    k.env.run_ok(&["kmip", "ungrant", x, "alice"]);
    failed(&alice.one((2, 0), op::GET_ATTRIBUTES, uid(x)), 0x0C);
    // The refused exports are on record, with who asked.
    assert_refused_gets_on_record(&k.env, x, "alice", 2);
}

/// An XKS key's material never leaves, it is no KMIP working key, and it
/// is read-only.
fn an_xks_key_stays_in_and_read_only(alice: &mut Conn, x: &str) {
    // Its material never leaves, in any version, wrapped or not.
    let m = failed(&alice.one((2, 0), op::GET, uid(x)), 0x17); // Not Extractable
    assert!(m.contains("not exportable"), "{m}");
    failed(&alice.one((1, 0), op::GET, uid(x)), 0x0C);
    // Not a KMIP working key either, and read-only.
    let mut p = uid(x);
    p.push(Ttlv::bytes(t::DATA, b"x".to_vec()));
    let m = failed(&alice.one((2, 0), op::ENCRYPT, p), 0x0C);
    assert!(m.contains("XKS API only"), "{m}");
    for operation in [op::DESTROY, op::ACTIVATE, op::REKEY] {
        let m = failed(&alice.one((2, 0), operation, uid(x)), 0x0C);
        assert!(m.contains("keyhold key"), "{m}");
    }
    let mut p = uid(x);
    p.push(Ttlv::structure(
        t::REVOCATION_REASON,
        vec![Ttlv::enumeration(t::REVOCATION_REASON_CODE, 1)],
    ));
    failed(&alice.one((2, 0), op::REVOKE, p), 0x0C);
}

/// Only a custodian grants an XKS key: a grant written into the database
/// is refused.
fn grants_are_the_custodians(k: &Kmip, alice: &mut Conn, bob: &mut Conn, x: &str) {
    // Bob was not granted it.
    let m = failed(&bob.one((2, 0), op::GET_ATTRIBUTES, uid(x)), 0x0C);
    assert!(m.contains("not granted"), "{m}");
    // Nor does granting it to him in the database work: the set of grants
    // is sealed; the one written outside Keyhold is refused (alice's too).
    common::sqlite(
        &k.env.data().join("keyhold.db"),
        &format!(
            "UPDATE meta SET value = CAST('[\"alice\",\"bob\"]' AS BLOB) WHERE name = 'kmip-grant:{x}'"
        ),
    );
    eventually("the forged grant refused", || {
        let r = bob.one((2, 0), op::GET_ATTRIBUTES, uid(x));
        assert_ne!(
            status(&r).0,
            0,
            "bob saw a key granted to him in the database"
        );
        status(&alice.one((2, 0), op::GET_ATTRIBUTES, uid(x))).0 != 0
    });
    k.env.run_ok(&["kmip", "grant", x, "alice"]);
    ok(&alice.one((2, 0), op::GET_ATTRIBUTES, uid(x)));
    failed(&bob.one((2, 0), op::GET_ATTRIBUTES, uid(x)), 0x0C);
}

/// Query lists exactly the operations a client's version has and Keyhold
/// serves (and only those are served to it); Obtain Lease renews the lease
/// a Get grants, for an Active object, and never during a lockdown.
#[test]
fn query_lists_each_versions_operations_and_leases_renew() {
    let k = start();
    let mut alice = Conn::open(&k, "alice");
    let listed = |c: &mut Conn, v: (i32, i32)| -> Vec<u32> {
        let q = vec![Ttlv::enumeration(t::QUERY_FUNCTION, 1)];
        ok(&c.one(v, op::QUERY, q))
            .children(t::OPERATION)
            .map(|o| match o.value {
                Value::Enumeration(e) => e,
                _ => panic!("an Operation is an Enumeration"),
            })
            .collect()
    };
    let (v10, v14, v20) = (
        listed(&mut alice, (1, 0)),
        listed(&mut alice, (1, 4)),
        listed(&mut alice, (2, 0)),
    );
    for o in [op::CHECK, op::OBTAIN_LEASE, op::ADD_ATTRIBUTE, op::GET] {
        assert!(
            v10.contains(&o) && v14.contains(&o) && v20.contains(&o),
            "{o:#x}"
        );
    }
    for o in [op::DISCOVER_VERSIONS, op::ENCRYPT, op::RNG_RETRIEVE] {
        assert!(!v10.contains(&o) && v14.contains(&o), "{o:#x}");
    }
    let set_attribute = keyhold_kmip::enums::operation2::SET_ATTRIBUTE;
    assert!(!v14.contains(&set_attribute) && v20.contains(&set_attribute));
    // What a version lacks is not served to it.
    let mut p = uid("whatever");
    p.push(Ttlv::bytes(t::DATA, b"x".to_vec()));
    failed(&alice.one((1, 0), op::ENCRYPT, p), 0x05);

    // Obtain Lease.
    let key = uid_of(ok(&alice.one((1, 4), op::CREATE, create_aes(vec![]))));
    failed(&alice.one((1, 4), op::OBTAIN_LEASE, uid(&key)), 0x0C); // Pre-Active
    ok(&alice.one((1, 4), op::ACTIVATE, uid(&key)));
    for v in [(1, 0), (1, 4), (2, 1)] {
        let lease = alice.one(v, op::OBTAIN_LEASE, uid(&key));
        let l = ok(&lease);
        assert_eq!(l.child(t::LEASE_TIME).unwrap().value, Value::Interval(3600));
        assert!(l.child(t::LAST_CHANGE_DATE).is_some());
        assert_eq!(uid_of(l), key);
    }
    k.env.run_ok(&["lockdown"]);
    failed(&alice.one((1, 4), op::OBTAIN_LEASE, uid(&key)), 0x0C);
    k.env.run_ok(&["unlock"]);
    ok(&alice.one((1, 4), op::OBTAIN_LEASE, uid(&key)));
    let mut bob = Conn::open(&k, "bob");
    failed(&bob.one((1, 4), op::OBTAIN_LEASE, uid(&key)), 0x0C);
}

/// A KMIP object that has made 2^32 AES-GCM encryptions with IVs the
/// server drew at random encrypts no more that way (NIST SP 800-38D 8.3);
/// IVs the client chooses are its own business.
#[test]
fn server_made_gcm_ivs_stop_at_the_bound() {
    use keyhold_storage::prelude::*;
    let k = start();
    let mut c = Conn::open(&k, "alice");
    let id = uid_of(ok(&c.one((1, 4), op::CREATE, create_aes(vec![]))));
    ok(&c.one((1, 4), op::ACTIVATE, uid(&id)));
    let enc = |c: &mut Conn, iv: Option<&[u8]>| {
        let mut p = uid(&id);
        p.push(Ttlv::structure(
            t::CRYPTOGRAPHIC_PARAMETERS,
            vec![Ttlv::enumeration(t::BLOCK_CIPHER_MODE, 9)], // GCM
        ));
        p.push(Ttlv::bytes(t::DATA, b"x".to_vec()));
        if let Some(iv) = iv {
            p.push(Ttlv::bytes(t::IV_COUNTER_NONCE, iv.to_vec()));
        }
        c.one((1, 4), op::ENCRYPT, p)
    };
    keyhold_storage::SqliteStorage::open(&k.env.data().join("keyhold.db"))
        .unwrap()
        .reserve_count(&format!("object {id}"), keyhold_service::gcm_budget::LIMIT)
        .unwrap();
    let m = failed(&enc(&mut c, None), 0x0C);
    assert!(m.contains("2^32"), "{m}");
    ok(&enc(&mut c, Some(&[7u8; 12])));
}

/// KMIP Destroy crypto-shreds: no file in the data directory keeps any
/// piece of the object's wrapped material (database or WAL), while the
/// server holding both open goes on serving.
#[test]
fn destroyed_objects_leave_no_copy_in_the_data_directory() {
    use keyhold_storage::prelude::*;
    let k = start();
    let mut c = Conn::open(&k, "alice");
    let make = |c: &mut Conn| {
        let id = uid_of(ok(&c.one((1, 4), op::CREATE, create_aes(vec![]))));
        ok(&c.one((1, 4), op::ACTIVATE, uid(&id)));
        id
    };
    let (gone, kept) = (make(&mut c), make(&mut c));
    let material = |id: &str| {
        keyhold_storage::SqliteStorage::open(&k.env.data().join("keyhold.db"))
            .unwrap()
            .object_material(id)
            .unwrap()
            .expect("material")
    };
    let secret = material(&gone);
    assert!(!files_holding(&k.env.data(), &secret).is_empty());
    let mut p = uid(&gone);
    p.push(Ttlv::structure(
        t::REVOCATION_REASON,
        vec![Ttlv::enumeration(t::REVOCATION_REASON_CODE, 6)],
    ));
    ok(&c.one((1, 4), op::REVOKE, p));
    ok(&c.one((1, 4), op::DESTROY, uid(&gone)));
    assert_eq!(files_holding(&k.env.data(), &secret), Vec::<PathBuf>::new());
    let mut p = uid(&kept);
    p.push(Ttlv::bytes(t::DATA, b"still here".to_vec()));
    ok(&c.one((1, 4), op::ENCRYPT, p));
    assert!(!files_holding(&k.env.data(), &material(&kept)).is_empty());

    // What is left of a destroyed object (its attributes) stays for the
    // retention period, then is purged; live objects are never touched.
    ok(&c.one((1, 4), op::GET_ATTRIBUTES, uid(&gone)));
    let none = k
        .env
        .json(&["kmip", "purge-destroyed", "--older-than", "1d"]);
    assert_eq!(none["purged"], serde_json::json!([]), "{none}");
    let purged = k
        .env
        .json(&["kmip", "purge-destroyed", "--older-than", "0s"]);
    assert_eq!(
        purged["purged"],
        serde_json::json!([gone.clone()]),
        "{purged}"
    );
    eventually("the server forgets the purged object", || {
        status(&c.one((1, 4), op::GET_ATTRIBUTES, uid(&gone))).1 == Some(0x01)
    });
    ok(&c.one((1, 4), op::GET_ATTRIBUTES, uid(&kept)));
    let q = k
        .env
        .json(&["audit", "query", "--operation", "kmip purge-destroyed"]);
    assert_eq!(q.as_array().unwrap().len(), 2, "{q}");
}
