//! SoftHSM for the integration tests: a token per test, a data directory
//! whose root of trust is in it, and the XKS calls the HSM tests share.

use super::*;
use keyhold_testkit::softhsm::{SoftHsm, MODULE};
use serde_json::json;

pub(crate) const PIN: &str = "2468-user-pin";

/// A SoftHSM token labelled `label` in a directory of its own (the same
/// helper as keyhold-hsm's tests).
pub(crate) fn softhsm_token(label: &str) -> SoftHsm {
    let h = SoftHsm::new();
    h.add_token(label, PIN);
    h
}

/// Copies a directory tree (SoftHSM's token store: a few small files).
pub(crate) fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

pub(crate) struct HsmEnv {
    pub(crate) env: Env,
    pub(crate) hsm: SoftHsm,
    pub(crate) pin_file: PathBuf,
}

pub(crate) fn hsm_env() -> HsmEnv {
    let hsm = softhsm_token("keyhold");
    let pin_file = hsm.dir.join("pin");
    std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();
    let env = Env::with_init_args(
        &[
            "--hsm-module",
            MODULE,
            "--hsm-token-label",
            "keyhold",
            "--hsm-pin-file",
            pin_file.to_str().unwrap(),
            "--hsm-max-sessions",
            "4",
        ],
        vec![("SOFTHSM2_CONF".into(), hsm.conf.display().to_string())],
    );
    HsmEnv { env, hsm, pin_file }
}

pub(crate) const HEALTH: &str =
    r#"{"requestMetadata":{"kmsRequestId":"h","kmsOperation":"KmsHealthCheck"}}"#;

pub(crate) fn encrypt_decrypt(
    server: &Server,
    cred: &Cred,
    key: &str,
    pt: &[u8],
) -> (serde_json::Value, Resp) {
    let body = json!({
        "requestMetadata": meta("Encrypt"), "plaintext": b64(pt),
        "additionalAuthenticatedData": b64(b"ctx"), "encryptionAlgorithm": "AES_GCM",
        "ciphertextDataIntegrityValueAlgorithm": "SHA_256",
    });
    let r = Curl::new(server, cred).send(
        &format!("/demo/kms/xks/v1/keys/{key}/encrypt"),
        &body.to_string(),
    );
    assert_eq!(r.status, 200, "{key}: {r:?}");
    let enc = r.json();
    let dec = json!({
        "requestMetadata": meta("Decrypt"), "ciphertext": enc["ciphertext"],
        "ciphertextMetadata": enc["ciphertextMetadata"], "initializationVector": enc["initializationVector"],
        "authenticationTag": enc["authenticationTag"], "additionalAuthenticatedData": b64(b"ctx"),
        "encryptionAlgorithm": "AES_GCM",
    });
    let d = Curl::new(server, cred).send(
        &format!("/demo/kms/xks/v1/keys/{key}/decrypt"),
        &dec.to_string(),
    );
    (dec, d)
}

pub(crate) fn encrypt(server: &Server, cred: &Cred, key: &str) -> Resp {
    let body = json!({
        "requestMetadata": meta("Encrypt"), "plaintext": b64(b"data key"),
        "encryptionAlgorithm": "AES_GCM",
    });
    Curl::new(server, cred).send(
        &format!("/demo/kms/xks/v1/keys/{key}/encrypt"),
        &body.to_string(),
    )
}

pub(crate) fn health(server: &Server, cred: &Cred) -> String {
    let r = Curl::new(server, cred).send("/demo/kms/xks/v1/health", HEALTH);
    assert_eq!(r.status, 200, "{r:?}");
    r.json()["ekmFleetDetails"][0]["healthStatus"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// OpenSC's pkcs11-tool, logged in to the "keyhold" token of the SoftHSM
/// configuration `conf`.
pub(crate) fn pkcs11_tool(conf: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new("pkcs11-tool")
        .args([
            "--module",
            MODULE,
            "--token-label",
            "keyhold",
            "--login",
            "--pin",
            PIN,
        ])
        .args(args)
        .env("SOFTHSM2_CONF", conf)
        .output()
        .unwrap()
}
