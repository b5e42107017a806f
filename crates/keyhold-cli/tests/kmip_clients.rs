//! KMIP with the clients people use: PyKMIP over mutual TLS, the flows of
//! real client libraries, MongoDB client-side encryption, OpenSSL's 3DES,
//! clients limited to RSA certificates.

mod common;

use common::kmip::*;
use common::Env;
use keyhold_kmip::enums::{object_type, operation as op};
use keyhold_kmip::tags as t;
use keyhold_kmip::ttlv::{Ttlv, Value};
use std::path::Path;

#[test]
fn pykmip_interoperates_over_mutual_tls() {
    let k = start();
    let d = k.env.dir.path();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kmip/pykmip_interop.py");
    for v in ["1.2", "1.4", "2.0"] {
        let out = std::process::Command::new("python3")
            .arg(&script)
            .args(["127.0.0.1", &k.port.to_string()])
            .arg(d.join("alice.pem"))
            .arg(d.join("alice.key"))
            .arg(&k.server.ca)
            .arg(v)
            // A FIPS build refuses new SHA-1 signatures (verification stays).
            .env(
                "KEYHOLD_FIPS",
                if keyhold_crypto::fips::BUILD { "1" } else { "" },
            )
            .output()
            .expect("python3 runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains(&format!("OK PyKMIP {v}")),
            "PyKMIP {v}: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every operation was audited with the client's identity.
    let recs = k
        .env
        .json(&["audit", "query", "--frontend", "kmip", "--limit", "1000"]);
    let recs = recs.as_array().unwrap();
    assert!(recs.len() > 30, "{} KMIP audit records", recs.len());
    assert!(recs.iter().all(|r| r["actor"] == "alice"));
    // Found by the client's identity too.
    let by_principal = k
        .env
        .json(&["audit", "query", "--principal", "alice", "--limit", "1000"]);
    assert_eq!(by_principal.as_array().unwrap().len(), recs.len());
    for opname in [
        "Create", "Get", "Encrypt", "Decrypt", "MAC", "Register", "Revoke", "Destroy", "Locate",
    ] {
        assert!(
            recs.iter().any(|r| r["operation"] == opname),
            "no audit record of {opname}"
        );
    }
    k.env.run_ok(&["audit", "verify"]);
}

/// What the key manager's real clients do, message by message, as their
/// documentation and wire captures describe them.
#[test]
fn flows_of_real_clients() {
    let k = start();
    let mut c = Conn::open(&k, "alice");

    let key = mongodb_enterprise(&mut c);
    percona_server_for_mongodb(&mut c, &key);
    let sid = mongodb_client_side_encryption(&mut c);
    mysql_keyring(&mut c);
    pg_tde(&mut c);
    vmware_vsphere(&mut c);
    edb_tde(&mut c, &key);
    appliances_rename_and_rekey(&mut c, &key, &sid);
}

/// MongoDB Enterprise (KMIP 1.2 headers): Create, Activate, Get, then
/// poll State; Encrypt/Decrypt for its audit log.
fn mongodb_enterprise(c: &mut Conn) -> String {
    let v = (1, 2);
    let key = uid_of(ok(&c.one(
        v,
        op::CREATE,
        create_aes(vec![name_attr("mongodb-master")]),
    )));
    ok(&c.one(v, op::ACTIVATE, uid(&key)));
    ok(&c.one(v, op::GET, uid(&key)));
    assert_eq!(state_of(c, v, &key), 2, "Active");
    let mut p = uid(&key);
    p.push(Ttlv::bytes(t::DATA, b"audit line".to_vec()));
    let enc = c.one(v, op::ENCRYPT, p);
    let e = ok(&enc);
    let mut p = uid(&key);
    for tag in [
        t::DATA,
        t::IV_COUNTER_NONCE,
        t::AUTHENTICATED_ENCRYPTION_TAG,
    ] {
        p.push(e.child(tag).unwrap().clone());
    }
    assert_eq!(
        ok(&c.one(v, op::DECRYPT, p)).child(t::DATA).unwrap().value,
        Value::ByteString(b"audit line".to_vec())
    );

    key
}

/// Percona Server for MongoDB (always KMIP 1.0): the answer is 1.0 and
/// carries nothing 1.0 does not define (no Located Items).
fn percona_server_for_mongodb(c: &mut Conn, key: &str) {
    let v = (1, 0);
    let r = c
        .raw(&request(v, vec![(op::LOCATE, vec![name_attr("mongodb-master")])]).encode())
        .unwrap();
    let hv = r
        .child(t::RESPONSE_HEADER)
        .unwrap()
        .child(t::PROTOCOL_VERSION)
        .unwrap();
    assert_eq!(
        hv.child(t::PROTOCOL_VERSION_MINOR).unwrap().value,
        Value::Integer(0)
    );
    let item = r.child(t::BATCH_ITEM).unwrap();
    assert!(
        ok(item).child(t::LOCATED_ITEMS).is_none(),
        "1.0 has no Located Items"
    );
    assert_eq!(uids(ok(item)), vec![key.to_owned()]);
}

/// MongoDB client-side encryption: 96-byte Secret Data, registered and
/// fetched back.
fn mongodb_client_side_encryption(c: &mut Conn) -> String {
    let v = (1, 4);
    let secret = vec![7u8; 96];
    let reg = vec![
        Ttlv::enumeration(t::OBJECT_TYPE, object_type::SECRET_DATA),
        Ttlv::structure(t::TEMPLATE_ATTRIBUTE, vec![name_attr("csfle-local-key")]),
        Ttlv::structure(
            t::SECRET_DATA,
            vec![
                Ttlv::enumeration(t::SECRET_DATA_TYPE, 2),
                Ttlv::structure(
                    t::KEY_BLOCK,
                    vec![
                        Ttlv::enumeration(t::KEY_FORMAT_TYPE, 2),
                        Ttlv::structure(
                            t::KEY_VALUE,
                            vec![Ttlv::bytes(t::KEY_MATERIAL, secret.clone())],
                        ),
                    ],
                ),
            ],
        ),
    ];
    let sid = uid_of(ok(&c.one(v, op::REGISTER, reg)));
    let got = c.one(v, op::GET, uid(&sid));
    let kv = ok(&got)
        .child(t::SECRET_DATA)
        .unwrap()
        .child(t::KEY_BLOCK)
        .unwrap()
        .child(t::KEY_VALUE)
        .unwrap();
    assert_eq!(
        kv.child(t::KEY_MATERIAL).unwrap().value,
        Value::ByteString(secret)
    );

    sid
}

/// MySQL keyring (KMIP 1.1): server-made keys, found again by exact name.
fn mysql_keyring(c: &mut Conn) {
    let v = (1, 1);
    let mk = uid_of(ok(&c.one(
        v,
        op::CREATE,
        create_aes(vec![name_attr("mysql-key-1")]),
    )));
    let _other = uid_of(ok(&c.one(
        v,
        op::CREATE,
        create_aes(vec![name_attr("mysql-key-10")]),
    )));
    let found = c.one(v, op::LOCATE, vec![name_attr("mysql-key-1")]);
    assert_eq!(uids(ok(&found)), vec![mk], "exact name match only");
}

/// pg_tde via libkmip: Register with Name and Object Group, Locate by both.
fn pg_tde(c: &mut Conn) {
    let v = (1, 4);
    let group = Ttlv::structure(
        t::ATTRIBUTE,
        vec![
            Ttlv::text(t::ATTRIBUTE_NAME, "Object Group"),
            Ttlv::text(t::ATTRIBUTE_VALUE, "pg_tde"),
        ],
    );
    let reg = vec![
        Ttlv::enumeration(t::OBJECT_TYPE, object_type::SYMMETRIC_KEY),
        Ttlv::structure(
            t::TEMPLATE_ATTRIBUTE,
            vec![name_attr("tde-principal"), group.clone()],
        ),
        Ttlv::structure(
            t::SYMMETRIC_KEY,
            vec![Ttlv::structure(
                t::KEY_BLOCK,
                vec![
                    Ttlv::enumeration(t::KEY_FORMAT_TYPE, 1),
                    Ttlv::structure(
                        t::KEY_VALUE,
                        vec![Ttlv::bytes(t::KEY_MATERIAL, vec![1u8; 16])],
                    ),
                    Ttlv::enumeration(t::CRYPTOGRAPHIC_ALGORITHM, 3),
                    Ttlv::int(t::CRYPTOGRAPHIC_LENGTH, 128),
                ],
            )],
        ),
    ];
    let tde = uid_of(ok(&c.one(v, op::REGISTER, reg)));
    let found = c.one(v, op::LOCATE, vec![name_attr("tde-principal"), group]);
    assert_eq!(uids(ok(&found)), vec![tde.clone()]);
}

/// VMware vSphere (KMIP 1.1): Create AES-256, Get, Get Attributes, Activate.
fn vmware_vsphere(c: &mut Conn) {
    let v = (1, 1);
    let vs = uid_of(ok(&c.one(v, op::CREATE, create_aes(vec![]))));
    ok(&c.one(v, op::GET, uid(&vs)));
    let attrs = c.one(v, op::GET_ATTRIBUTES, uid(&vs));
    let names: Vec<String> = ok(&attrs)
        .children(t::ATTRIBUTE)
        .filter_map(|a| match &a.child(t::ATTRIBUTE_NAME)?.value {
            Value::TextString(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    assert!(names.contains(&"Cryptographic Length".to_owned()));
    // Nothing that KMIP 1.1 does not define (Extractable is 1.4, Short
    // Unique Identifier 2.0).
    assert!(
        !names
            .iter()
            .any(|n| n == "Extractable" || n == "Short Unique Identifier"),
        "{names:?}"
    );
    ok(&c.one(v, op::ACTIVATE, uid(&vs)));
}

/// EDB TDE (KMIP 2.1): Encrypt, then Decrypt with IV, ciphertext and tag
/// sent in one Data field.
fn edb_tde(c: &mut Conn, key: &str) {
    let v = (2, 1);
    let mut p = uid(key);
    p.push(Ttlv::bytes(t::DATA, b"data key".to_vec()));
    let enc = c.one(v, op::ENCRYPT, p);
    let e = ok(&enc);
    let mut joined = Vec::new();
    for tag in [
        t::IV_COUNTER_NONCE,
        t::DATA,
        t::AUTHENTICATED_ENCRYPTION_TAG,
    ] {
        let Value::ByteString(b) = &e.child(tag).unwrap().value else {
            panic!()
        };
        joined.extend_from_slice(b);
    }
    let mut p = uid(key);
    p.push(Ttlv::bytes(t::DATA, joined));
    assert_eq!(
        ok(&c.one(v, op::DECRYPT, p)).child(t::DATA).unwrap().value,
        Value::ByteString(b"data key".to_vec())
    );
}

/// Appliances: Register secret data, then Modify Attribute its name; a
/// Locate by the new name finds it, the old name no longer does.
fn appliances_rename_and_rekey(c: &mut Conn, key: &str, sid: &str) {
    let v = (1, 2);
    let mut p = uid(sid);
    p.push(name_attr("appliance-secret"));
    ok(&c.one(v, op::MODIFY_ATTRIBUTE, p));
    assert_eq!(
        uids(ok(&c.one(
            v,
            op::LOCATE,
            vec![name_attr("appliance-secret")]
        ))),
        vec![sid]
    );
    assert!(uids(ok(&c.one(
        v,
        op::LOCATE,
        vec![name_attr("csfle-local-key")]
    )))
    .is_empty());

    // Re-key: a new key takes the name; the old one links to it.
    let rk = c.one(v, op::REKEY, uid(key));
    let new = uid_of(ok(&rk));
    assert_ne!(new, key);
    assert_eq!(
        uids(ok(&c.one(v, op::LOCATE, vec![name_attr("mongodb-master")]))),
        vec![new.clone()]
    );
    let mut p = uid(key);
    p.push(Ttlv::text(t::ATTRIBUTE_NAME, "Link"));
    let links = c.one(v, op::GET_ATTRIBUTES, p);
    let link = ok(&links)
        .child(t::ATTRIBUTE)
        .unwrap()
        .child(t::ATTRIBUTE_VALUE)
        .unwrap();
    assert_eq!(
        link.child(t::LINKED_OBJECT_IDENTIFIER).unwrap().value,
        Value::TextString(new.clone())
    );
    assert_eq!(
        state_of(c, v, &new),
        2,
        "the replacement of an active key is active"
    );
}

/// Triple DES Encrypt/Decrypt (CBC and ECB, with and without PKCS#5
/// padding) on a registered key, checked against OpenSSL's own
/// des-ede3-cbc and des-ede3 (an independent implementation); in FIPS mode
/// encryption is refused and OpenSSL's ciphertexts still decrypt.
#[test]
fn triple_des_encrypts_as_openssl_does() {
    let k = start();
    let mut c = Conn::open(&k, "alice");
    let v = (1, 4);
    let key: Vec<u8> = (1u8..=24).collect();
    let reg = vec![
        Ttlv::enumeration(t::OBJECT_TYPE, object_type::SYMMETRIC_KEY),
        Ttlv::structure(
            t::TEMPLATE_ATTRIBUTE,
            vec![attr("Cryptographic Usage Mask", Ttlv::int(0, 4 | 8))],
        ),
        Ttlv::structure(
            t::SYMMETRIC_KEY,
            vec![Ttlv::structure(
                t::KEY_BLOCK,
                vec![
                    Ttlv::enumeration(t::KEY_FORMAT_TYPE, 1),
                    Ttlv::structure(
                        t::KEY_VALUE,
                        vec![Ttlv::bytes(t::KEY_MATERIAL, key.clone())],
                    ),
                    Ttlv::enumeration(t::CRYPTOGRAPHIC_ALGORITHM, 2), // Triple DES
                    Ttlv::int(t::CRYPTOGRAPHIC_LENGTH, 192),
                ],
            )],
        ),
    ];
    let id = uid_of(ok(&c.one(v, op::REGISTER, reg)));
    ok(&c.one(v, op::ACTIVATE, uid(&id)));
    let iv = b"8bytesIV".to_vec();
    let plain = b"legacy data, 3DES".to_vec();
    for (mode, cipher, with_iv) in [(1u32, "des-ede3-cbc", true), (2, "des-ede3", false)] {
        for padded in [true, false] {
            let data = if padded {
                plain.clone()
            } else {
                plain[..16].to_vec()
            };
            let mut params = vec![Ttlv::enumeration(t::BLOCK_CIPHER_MODE, mode)];
            if padded {
                params.push(Ttlv::enumeration(t::PADDING_METHOD, 3)); // PKCS5
            }
            // OpenSSL, from the same key, IV and data.
            let dir = tempfile::tempdir().unwrap();
            let input = dir.path().join("in");
            std::fs::write(&input, &data).unwrap();
            let mut cmd = std::process::Command::new("openssl");
            cmd.args(["enc", &format!("-{cipher}"), "-K", &hex(&key)]);
            if with_iv {
                cmd.args(["-iv", &hex(&iv)]);
            }
            if !padded {
                cmd.arg("-nopad");
            }
            cmd.arg("-in").arg(&input);
            let out = cmd.output().expect("openssl runs");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let ct = out.stdout;
            let mut p = uid(&id);
            p.push(Ttlv::structure(t::CRYPTOGRAPHIC_PARAMETERS, params.clone()));
            p.push(Ttlv::bytes(t::DATA, data.clone()));
            if with_iv {
                p.push(Ttlv::bytes(t::IV_COUNTER_NONCE, iv.clone()));
            }
            let enc = c.one(v, op::ENCRYPT, p);
            if keyhold_crypto::fips::BUILD {
                // FIPS mode: no Triple DES encryption (decryption stays).
                let m = failed(&enc, 0x08);
                assert!(m.contains("not allowed in FIPS mode"), "{m}");
            } else {
                let Value::ByteString(mine) = ok(&enc).child(t::DATA).unwrap().value.clone() else {
                    panic!("Data is bytes")
                };
                assert_eq!(mine, ct, "{cipher} padded={padded}");
            }
            // And back: OpenSSL's ciphertext decrypts.
            let mut p = uid(&id);
            p.push(Ttlv::structure(t::CRYPTOGRAPHIC_PARAMETERS, params));
            p.push(Ttlv::bytes(t::DATA, ct));
            if with_iv {
                p.push(Ttlv::bytes(t::IV_COUNTER_NONCE, iv.clone()));
            }
            let dec = c.one(v, op::DECRYPT, p);
            assert_eq!(
                ok(&dec).child(t::DATA).unwrap().value,
                Value::ByteString(data)
            );
        }
    }
}

/// For KMIP clients that cannot do ECDSA: a data directory made with
/// `--tls-key-type rsa` serves an RSA certificate chain, and client
/// certificates can have RSA keys; checked with OpenSSL limited to RSA
/// signatures both ways, in TLS 1.2 and 1.3, then with a KMIP request.
#[test]
fn rsa_certificates_for_clients_without_ecdsa() {
    let env = Env::with_init_args(&["--tls-key-type", "rsa"], vec![]);
    env.run_ok(&[
        "kmip",
        "client-cert",
        "issue",
        "legacy",
        "--key-type",
        "rsa",
        "--out",
        env.dir.path().to_str().unwrap(),
    ]);
    let k = serve_kmip(env);
    let d = k.env.dir.path();
    for version in ["-tls1_2", "-tls1_3"] {
        let out = std::process::Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{}", k.port)])
            .args(["-servername", "localhost", "-verify_return_error", "-brief"])
            .args(["-sigalgs", "RSA-PSS+SHA256:RSA+SHA256"])
            .args(["-client_sigalgs", "RSA-PSS+SHA256:RSA+SHA256", version])
            .arg("-CAfile")
            .arg(&k.server.ca)
            .arg("-cert")
            .arg(d.join("legacy.pem"))
            .arg("-key")
            .arg(d.join("legacy.key"))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && said.contains("Verification: OK"),
            "{version}: {said}"
        );
        assert!(said.contains("RSA"), "{version}: {said}");
    }
    let mut c = Conn::open(&k, "legacy");
    let q = vec![Ttlv::enumeration(t::QUERY_FUNCTION, 3)];
    ok(&c.one((1, 4), op::QUERY, q));
}

/// MongoDB's KMIP client (libmongocrypt via pymongo and pymongocrypt) in
/// both its modes: data keys under Secret Data, and delegated encryption.
/// Every object it makes is audited with its identity.
#[test]
fn mongodb_client_side_encryption_uses_keyhold() {
    let k = start();
    let d = k.env.dir.path();
    let both = d.join("alice-cert-and-key.pem");
    std::fs::write(
        &both,
        common::read(&d.join("alice.pem")) + &common::read(&d.join("alice.key")),
    )
    .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kmip/mongodb_kmip.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(k.port.to_string())
        .arg(&both)
        .arg(&k.server.ca)
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("OK mongodb"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ops: Vec<String> = k
        .env
        .json(&["audit", "query", "--principal", "alice", "--limit", "1000"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["operation"].as_str().unwrap_or("").to_owned())
        .collect();
    for op in [
        "Register", "Activate", "Get", "Create", "Encrypt", "Decrypt",
    ] {
        assert!(ops.iter().any(|o| o == op), "{op} not audited: {ops:?}");
    }
}
