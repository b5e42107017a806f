//! In-process cost of one XKS request: the full pipeline (route, SigV4
//! verification, JSON, key lookup, AES-GCM, CDIV, verify-by-decrypt, JSON
//! answer, audit line) without network or TLS. `cargo bench -p keyhold-xks`.

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use keyhold_core::{KeyId, StorePrefix, Usage};
use keyhold_root::SoftwareRoot;
use keyhold_service::KeyService;
use keyhold_storage::SqliteStorage;
use keyhold_xks::sigv4::{Signer, XKS_SERVICE};
use keyhold_xks::{XksApi, XksConfig};
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let root = SoftwareRoot::create(&dir.path().join("root.key"), None).unwrap();
    let storage = SqliteStorage::open(&dir.path().join("k.db")).unwrap();
    let svc = Arc::new(KeyService::open(Arc::new(storage), Arc::new(root)).unwrap());
    let p = StorePrefix::parse("/bench").unwrap();
    svc.create_store(&p, "").unwrap();
    let cred = svc.add_credential(&p).unwrap();
    svc.create_key(&p, &KeyId::parse("k").unwrap(), Usage::BOTH)
        .unwrap();
    let api = std::sync::Arc::new(XksApi::new(svc, XksConfig::default()));
    let signer = Signer::new(
        &cred.access_key_id,
        cred.secret_access_key.expose(),
        "us-east-1",
        XKS_SERVICE,
    );
    let body = serde_json::json!({
        "requestMetadata": {"awsPrincipalArn": "arn:aws:iam::1:role/b", "kmsKeyArn": "arn:aws:kms:us-east-1:1:key/b",
            "kmsOperation": "GenerateDataKey", "kmsRequestId": "r"},
        "plaintext": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        "additionalAuthenticatedData": "YWFkYWFkYWFkYWFkYWFkYWFkYWFkYWFkYWFkYWFkYWFkYWFkYWFkYWFkYWFkYWFk",
        "encryptionAlgorithm": "AES_GCM",
        "ciphertextDataIntegrityValueAlgorithm": "SHA_256",
    })
    .to_string();
    let path = "/bench/kms/xks/v1/keys/k/encrypt";
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let make = || {
        let (date, auth) = signer.sign(
            "POST",
            "xks.example.com",
            path,
            Some("application/json"),
            body.as_bytes(),
            keyhold_core::now(),
        );
        Request::post(path)
            .header("host", "xks.example.com")
            .header("content-type", "application/json")
            .header("x-amz-date", date)
            .header("authorization", auth)
            .body(Full::new(Bytes::from(body.clone())))
            .unwrap()
    };
    for (label, n) in [
        ("warm-up", 2_000u32),
        ("encrypt (32-byte data key, AAD, CDIV)", 50_000),
    ] {
        let reqs: Vec<_> = (0..n).map(|_| make()).collect();
        let t = Instant::now();
        rt.block_on(async {
            for r in reqs {
                let resp = api.handle(r).await;
                assert_eq!(resp.status(), 200);
            }
        });
        let el = t.elapsed();
        if label != "warm-up" {
            println!(
                "{label}: {n} requests in {:.2?}: {:.1} µs/request, {:.0} requests/s on one core",
                el,
                el.as_secs_f64() * 1e6 / n as f64,
                n as f64 / el.as_secs_f64()
            );
        }
    }
}
