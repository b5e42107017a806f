//! The per-request HSM timeout: an HSM that takes too long gets the client a
//! DependencyTimeoutException at the configured time, while requests that
//! do not need the HSM keep being served. The slow HSM is a test double
//! (SoftHSM is never slow on demand); the real-HSM failure tests are in
//! keyhold-hsm and keyhold-cli.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use keyhold_core::{KeyId, Result, StorePrefix, Usage};
use keyhold_crypto::SecretBytes;
use keyhold_root::{HsmKeys, RootInfo, RootOfTrust, SoftwareRoot};
use keyhold_service::KeyService;
use keyhold_storage::SqliteStorage;
use keyhold_xks::sigv4::{Signer, XKS_SERVICE};
use keyhold_xks::{XksApi, XksConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A software root that claims an HSM whose AES-GCM does not answer until
/// the test opens [`HSM_ANSWERS`]: the timeout, not a race with a sleep,
/// decides every request.
struct SlowHsm(SoftwareRoot);

static HSM_ANSWERS: (std::sync::Mutex<bool>, std::sync::Condvar) =
    (std::sync::Mutex::new(false), std::sync::Condvar::new());

/// Blocks until the test lets the HSM answer.
fn hsm_waits() {
    let (open, cv) = &HSM_ANSWERS;
    let mut g = open.lock().unwrap();
    while !*g {
        g = cv.wait(g).unwrap();
    }
}

/// Lets the HSM answer when dropped, so that a failing test still ends (the
/// runtime waits for its blocking threads).
struct LetHsmAnswer;

impl Drop for LetHsmAnswer {
    fn drop(&mut self) {
        let (open, cv) = &HSM_ANSWERS;
        *open.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
    }
}

impl RootOfTrust for SlowHsm {
    fn wrap(&self, context: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        self.0.wrap(context, plaintext)
    }
    fn unwrap(&self, context: &[u8], wrapped: &[u8]) -> Result<SecretBytes> {
        self.0.unwrap(context, wrapped)
    }
    fn info(&self) -> RootInfo {
        self.0.info()
    }
    fn blocks(&self) -> bool {
        true
    }
    fn hsm_keys(&self) -> Option<&dyn HsmKeys> {
        Some(self)
    }
}

impl HsmKeys for SlowHsm {
    fn generate_key(&self, _label: &str, _usage: keyhold_core::Usage) -> Result<()> {
        Ok(())
    }
    fn set_usage(&self, _label: &str, _usage: keyhold_core::Usage) -> Result<bool> {
        Ok(true)
    }
    fn check_key(&self, _label: &str) -> Result<()> {
        Ok(())
    }
    fn is_reserved(&self, _label: &str) -> bool {
        false
    }
    fn destroy_key(&self, _label: &str) -> Result<()> {
        Ok(())
    }
    fn encrypt(&self, _: &str, _: &[u8], p: &[u8]) -> Result<([u8; 12], Vec<u8>, [u8; 16])> {
        hsm_waits();
        Ok(([0; 12], p.to_vec(), [0; 16]))
    }
    fn decrypt(&self, _: &str, _: &[u8], _: &[u8], c: &[u8], _: &[u8]) -> Result<SecretBytes> {
        hsm_waits();
        Ok(SecretBytes::new(c.to_vec()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_hsm_answers_dependency_timeout_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let root = SlowHsm(SoftwareRoot::create(&dir.path().join("root.key"), None).unwrap());
    let storage = SqliteStorage::open(&dir.path().join("k.db")).unwrap();
    let svc = Arc::new(KeyService::open(Arc::new(storage), Arc::new(root)).unwrap());
    let p = StorePrefix::parse("/t").unwrap();
    svc.create_store(&p, "").unwrap();
    let cred = svc.add_credential(&p).unwrap();
    svc.create_hsm_key(&p, &KeyId::parse("slow").unwrap(), Usage::BOTH, None)
        .unwrap();
    svc.create_key(&p, &KeyId::parse("soft").unwrap(), Usage::BOTH)
        .unwrap();
    let config = XksConfig {
        hsm_timeout: Duration::from_millis(150),
        ..XksConfig::default()
    };
    let api = Arc::new(XksApi::new(svc, config));
    let signer = Signer::new(
        &cred.access_key_id,
        cred.secret_access_key.expose(),
        "eu-west-1",
        XKS_SERVICE,
    );
    let call = |key: &str| {
        let path = format!("/t/kms/xks/v1/keys/{key}/encrypt");
        let body = serde_json::json!({
            "requestMetadata": {"awsPrincipalArn": "arn:aws:iam::1:role/r", "kmsKeyArn": "arn:aws:kms:eu-west-1:1:key/k",
                "kmsOperation": "Encrypt", "kmsRequestId": "r1"},
            "plaintext": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            "encryptionAlgorithm": "AES_GCM",
        })
        .to_string();
        let (date, auth) = signer.sign(
            "POST",
            "xks.example.com",
            &path,
            Some("application/json"),
            body.as_bytes(),
            keyhold_core::now(),
        );
        let req = Request::post(&path)
            .header("host", "xks.example.com")
            .header("content-type", "application/json")
            .header("x-amz-date", date)
            .header("authorization", auth)
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let api = api.clone();
        async move {
            let resp = api.handle(req).await;
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            (status, v)
        }
    };

    let hsm = LetHsmAnswer;
    let t = Instant::now();
    let (status, v) = tokio::time::timeout(Duration::from_secs(30), call("slow"))
        .await
        .expect("the request hangs on the HSM");
    let took = t.elapsed();
    // The HSM has not answered: only the timeout can have ended it.
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["errorName"], "DependencyTimeoutException");
    assert!(took >= Duration::from_millis(150), "{took:?}");

    // Meanwhile, with the HSM still stuck, other requests are served.
    let (status, v) = call("soft").await;
    assert_eq!(status, 200, "{v}");
    drop(hsm);
}
