//! KMIP client certificates: a year by default (or as asked), revoked by
//! identity or serial at the handshake and on open connections, and a
//! revocation the database cannot undo.

mod common;

use common::eventually;
use common::kmip::*;
use keyhold_kmip::enums::operation as op;
use keyhold_kmip::tags as t;
use keyhold_kmip::ttlv::Ttlv;

/// Client certificates are valid for a year unless asked otherwise, are
/// listed with their expiry, and a revoked one is refused from the next
/// handshake on, its open connection closed at its next message, while
/// others go on.
#[test]
fn client_certificates_expire_and_can_be_revoked() {
    let k = start();
    let listed = k.env.json(&["kmip", "client-cert", "list"]);
    let rows = listed.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{listed}");
    let alice = rows.iter().find(|r| r["identity"] == "alice").unwrap();
    let bob_serial = rows.iter().find(|r| r["identity"] == "bob").unwrap()["serial"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(alice["status"], "valid");
    certificates_last_a_year_or_as_asked(&k, alice);
    revoked_certificates_lose_connections_and_handshakes(&k, alice);
    revoking_again_changes_nothing(&k);
    revocations_cannot_be_undone_in_the_database(&k, &bob_serial);
}

/// A year from now (not the year 4096), as the certificate itself says.
fn certificates_last_a_year_or_as_asked(k: &Kmip, alice: &serde_json::Value) {
    let year = |s: &str| s[..4].parse::<i32>().unwrap();
    let now_year = year(&keyhold_core::time::format_rfc3339(keyhold_core::now()));
    let not_after = alice["not_after"].as_str().unwrap();
    assert!(
        (now_year..=now_year + 1).contains(&year(not_after)),
        "{not_after}"
    );
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-enddate", "-serial", "-in"])
        .arg(k.env.dir.path().join("alice.pem"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(
        said.contains(&format!(" {}", year(not_after))),
        "{said} vs {not_after}"
    );
    assert!(
        said.contains(&format!("serial={}", alice["serial"].as_str().unwrap())),
        "{said}"
    );
    // --days.
    let short = k.env.json(&[
        "kmip",
        "client-cert",
        "issue",
        "carol",
        "--days",
        "30",
        "--out",
        k.env.dir.path().to_str().unwrap(),
    ]);
    assert_eq!(
        year(short["not_after"].as_str().unwrap()),
        year(&keyhold_core::time::format_rfc3339(
            keyhold_core::now() + 30 * 86_400
        ))
    );
}

/// Bob's open connection works, then bob is revoked.
fn revoked_certificates_lose_connections_and_handshakes(k: &Kmip, alice: &serde_json::Value) {
    let mut bob = Conn::open(k, "bob");
    let mut alice_conn = Conn::open(k, "alice");
    ok(&bob.one((1, 4), op::QUERY, query()));
    let r = k.env.json(&["kmip", "client-cert", "revoke", "bob"]);
    assert_eq!(r[0]["identity"], "bob");
    assert_eq!(r[0]["status"], "revoked");
    // His open connection: closed at the next message, no answer.
    assert!(
        bob.raw(&request((1, 4), vec![(op::QUERY, query())]).encode())
            .is_none(),
        "a revoked certificate's connection still answers"
    );
    // A new handshake is refused (in TLS 1.3 the client learns it at its
    // first read: the server checks the client's certificate last).
    assert!(refused(k, "bob"), "a revoked certificate was served");
    eventually("the handshake itself refused it", || {
        common::read(&k.server.log)
            .lines()
            .any(|l| l.contains("KMIP TLS handshake refused") && l.contains("Revoked"))
    });
    // Alice is untouched; then revoked by serial.
    ok(&alice_conn.one((1, 4), op::QUERY, query()));
    let serial = alice["serial"].as_str().unwrap().to_uppercase();
    k.env.run_ok(&["kmip", "client-cert", "revoke", &serial]);
    assert!(refused(k, "alice"));
    assert!(!refused(k, "carol"), "carol's certificate still works");
    let mut statuses: Vec<String> = k
        .env
        .json(&["kmip", "client-cert", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}={}",
                r["identity"].as_str().unwrap(),
                r["status"].as_str().unwrap()
            )
        })
        .collect();
    statuses.sort();
    assert_eq!(statuses, ["alice=revoked", "bob=revoked", "carol=valid"]);
}

/// Revoking again changes nothing; an unknown name is an error.
fn revoking_again_changes_nothing(k: &Kmip) {
    assert_eq!(
        k.env.json(&["kmip", "client-cert", "revoke", "bob"]),
        serde_json::json!([])
    );
    assert!(!k
        .env
        .cmd(&["kmip", "client-cert", "revoke", "nobody-here"])
        .output()
        .unwrap()
        .status
        .success());
}

/// The database is untrusted: deleting bob's revocation there does not
/// bring his certificate back; tampering with the sealed list of
/// revocations refuses every certificate until a custodian revokes again.
fn revocations_cannot_be_undone_in_the_database(k: &Kmip, bob_serial: &str) {
    let db = k.env.data().join("keyhold.db");
    common::sqlite(
        &db,
        "UPDATE meta SET value = CAST('{}' AS BLOB) WHERE name LIKE 'kmip-cert:%' AND value LIKE '%\"bob\"%'",
    );
    assert!(
        refused(k, "bob"),
        "a revocation deleted in the database was undone"
    );
    common::sqlite(&db, "DELETE FROM meta WHERE name = 'kmip-revoked'");
    eventually("every certificate refused", || refused(k, "carol"));
    k.env.run_ok(&["kmip", "client-cert", "revoke", bob_serial]);
    eventually("carol served again", || !refused(k, "carol"));
    assert!(refused(k, "bob") && refused(k, "alice"));
}

/// A Query for the server's information.
fn query() -> Vec<Ttlv> {
    vec![Ttlv::enumeration(t::QUERY_FUNCTION, 3)]
}

/// Whether `who`'s certificate is refused: at the handshake, or (in TLS
/// 1.3, where the client learns it at its first read) with no answer.
fn refused(k: &Kmip, who: &str) -> bool {
    let d = k.env.dir.path();
    match Conn::with(
        k.port,
        client_config(
            &k.server.ca,
            Some((&d.join(format!("{who}.pem")), &d.join(format!("{who}.key")))),
        ),
    ) {
        Err(_) => true,
        Ok(mut c) => c
            .raw(&request((1, 4), vec![(op::QUERY, query())]).encode())
            .is_none(),
    }
}
