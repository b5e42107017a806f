//! The random-IV bound of AES-GCM on the real server: a key version whose
//! count (kept in the database) nears 2^32 is rotated by the server's
//! scheduled tasks, one that reaches it is refused until then, and a KMIP
//! object at the bound encrypts no more with server-made IVs. The counts
//! are set directly in the database (SQLite shares it) instead of making
//! four billion requests.

mod common;

use common::*;
use keyhold_service::gcm_budget::{BLOCK, LIMIT};
use keyhold_storage::prelude::*;
use keyhold_storage::SqliteStorage;
use serde_json::json;

fn encrypt(server: &Server, cred: &Cred, key: &str) -> Resp {
    let body = json!({
        "requestMetadata": meta("Encrypt"), "plaintext": b64(b"data key"),
        "encryptionAlgorithm": "AES_GCM",
    });
    Curl::new(server, cred).send(
        &format!("/demo/kms/xks/v1/keys/{key}/encrypt"),
        &body.to_string(),
    )
}

fn current_version(env: &Env, key: &str) -> u64 {
    env.json(&["key", "show", "/demo", key])[0]["current_version"]
        .as_u64()
        .unwrap()
}

#[test]
fn keys_near_the_random_iv_bound_rotate_and_never_cross_it() {
    let env = Env::new();
    env.run_ok(&["store", "create", "/demo"]);
    let cred = env.add_credential("/demo");
    env.run_ok(&["key", "create", "/demo", "busy"]);
    env.run_ok(&["key", "create", "/demo", "spent"]);
    let db = SqliteStorage::open(&env.data().join("keyhold.db")).unwrap();
    // "busy" has one block left before the bound (past half of it);
    // "spent" has none left.
    db.reserve_count("key /demo/busy version 1", LIMIT - BLOCK)
        .unwrap();
    db.reserve_count("key /demo/spent version 1", LIMIT)
        .unwrap();
    let server = env.serve(&[]);

    let first = encrypt(&server, &cred, "busy");
    assert_eq!(first.status, 200, "{first:?}");
    let refused = encrypt(&server, &cred, "spent");
    refused.assert_error(400, "InvalidStateException");
    assert!(refused.json()["errorMessage"]
        .as_str()
        .unwrap()
        .contains("2^32"));

    // Both are rotated by the scheduled tasks; the new versions encrypt,
    // and what the old one made still decrypts.
    eventually("busy and spent are rotated", || {
        current_version(&env, "busy") == 2 && current_version(&env, "spent") == 2
    });
    let again = encrypt(&server, &cred, "busy");
    assert_eq!(
        unb64(again.json()["ciphertextMetadata"].as_str().unwrap()),
        vec![1, 0, 0, 0, 2]
    );
    assert_eq!(encrypt(&server, &cred, "spent").status, 200);
    let body = json!({
        "requestMetadata": meta("Decrypt"),
        "ciphertext": first.json()["ciphertext"],
        "ciphertextMetadata": first.json()["ciphertextMetadata"],
        "initializationVector": first.json()["initializationVector"],
        "authenticationTag": first.json()["authenticationTag"],
        "encryptionAlgorithm": "AES_GCM",
    });
    let dec =
        Curl::new(&server, &cred).send("/demo/kms/xks/v1/keys/busy/decrypt", &body.to_string());
    assert_eq!(dec.status, 200, "{dec:?}");
    assert_eq!(
        unb64(dec.json()["plaintext"].as_str().unwrap()),
        b"data key"
    );
    // The audit log names the rotation's reason in the server log.
    eventually("the rotation is logged", || {
        read(&server.log).contains("past 2^31 AES-GCM encryptions")
    });
}
