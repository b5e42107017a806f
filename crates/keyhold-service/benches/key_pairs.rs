//! Signatures and RSA-OAEP decryptions per second through the key service's
//! one key-use path (the checks, the policy, the version), with key pairs
//! in software and resident in an HSM (SoftHSMv2), on two threads.
//! Beside them, the same primitive alone in software (aws-lc-rs), to show
//! what the path costs. `cargo bench -p keyhold-service --bench key_pairs`.

use keyhold_core::{KeyId, KeyType, Lifecycle, StorePrefix, Usage};
use keyhold_crypto::asym::{self, Hash, PairKind, SignScheme};
use keyhold_root::{PinSource, Pkcs11Config, Pkcs11Root, RootOfTrust, SoftwareRoot};
use keyhold_service::policy::PolicyRequest;
use keyhold_service::{KeyService, KeyUse};
use keyhold_storage::SqliteStorage;
use keyhold_testkit::softhsm::{SoftHsm, MODULE};
use std::sync::Arc;
use std::time::{Duration, Instant};

const THREADS: usize = 2;
const RUN: Duration = Duration::from_secs(2);
const PIN: &str = "1357-bench-pin";

/// Operations per second of `op` on `THREADS` threads for `RUN`.
fn rate(op: impl Fn() + Sync) -> f64 {
    let t0 = Instant::now();
    let n: usize = std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                s.spawn(|| {
                    let mut n = 0;
                    while t0.elapsed() < RUN {
                        op();
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    n as f64 / t0.elapsed().as_secs_f64()
}

fn service(root: Arc<dyn RootOfTrust>, dir: &std::path::Path) -> KeyService {
    let st = SqliteStorage::open(&dir.join("k.db")).unwrap();
    KeyService::open(Arc::new(st), root).unwrap()
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let soft = service(
        Arc::new(SoftwareRoot::create(&dir.path().join("root.key"), None).unwrap()),
        dir.path(),
    );
    let hsm = SoftHsm::new();
    std::env::set_var("SOFTHSM2_CONF", &hsm.conf);
    std::env::set_var("KEYHOLD_BENCH_HSM_PIN", PIN);
    hsm.add_token("bench", PIN);
    let cfg = Pkcs11Config::new(
        MODULE.into(),
        "bench".into(),
        PinSource::Env("KEYHOLD_BENCH_HSM_PIN".into()),
    );
    let hdir = tempfile::tempdir().unwrap();
    let in_hsm = service(Arc::new(Pkcs11Root::open(cfg, true).unwrap()), hdir.path());
    let p = StorePrefix::parse("/bench").unwrap();
    soft.create_store(&p, "").unwrap();
    in_hsm.create_store(&p, "").unwrap();

    println!("{THREADS} threads, {RUN:?} each; operations per second");
    println!(
        "{:<28} {:>12} {:>14} {:>16}",
        "", "aws-lc-rs", "key service", "key service, HSM"
    );
    for (t, kind, scheme, usage) in [
        (
            KeyType::Rsa2048,
            PairKind::Rsa(2048),
            Some(SignScheme::RsaPss(Hash::Sha256)),
            Usage::SIGN_VERIFY,
        ),
        (
            KeyType::EcP256,
            PairKind::EcP256,
            Some(SignScheme::Ecdsa(Hash::Sha256)),
            Usage::SIGN_VERIFY,
        ),
        (
            KeyType::Ed25519,
            PairKind::Ed25519,
            Some(SignScheme::Ed25519),
            Usage::SIGN_VERIFY,
        ),
        (KeyType::Rsa2048, PairKind::Rsa(2048), None, Usage::BOTH),
    ] {
        let id = KeyId::parse(&format!("{}-{}", t.short(), usage.signs())).unwrap();
        soft.create_keys_of(
            &p,
            std::slice::from_ref(&id),
            t,
            usage,
            &Lifecycle::default(),
        )
        .unwrap();
        in_hsm.create_hsm_key_of(&p, &id, t, usage, None).unwrap();
        let u = KeyUse {
            store: &p,
            key: id.as_str(),
            context: PolicyRequest::default(),
        };
        let bare = asym::PrivateKey::parse(asym::generate(kind).unwrap().private.expose()).unwrap();
        let msg = [0x5au8; 32];
        let (what, figures) = match scheme {
            Some(scheme) => (
                format!("sign {}", t.short()),
                [
                    rate(|| {
                        bare.sign(scheme, &msg).unwrap();
                    }),
                    rate(|| {
                        soft.sign(&u, &msg, scheme).result.unwrap();
                    }),
                    rate(|| {
                        in_hsm.sign(&u, &msg, scheme).result.unwrap();
                    }),
                ],
            ),
            None => {
                // SHA-1: what SoftHSMv2 does in the token.
                let ct = |s: &KeyService| {
                    let spki = s.public_key(&p, &id, None).unwrap().1;
                    asym::oaep_encrypt(&spki, Hash::Sha1, &msg, None).unwrap()
                };
                let (soft_ct, hsm_ct) = (ct(&soft), ct(&in_hsm));
                let bare_ct =
                    asym::oaep_encrypt(&bare.public_spki().unwrap(), Hash::Sha1, &msg, None)
                        .unwrap();
                (
                    format!("decrypt {} OAEP", t.short()),
                    [
                        rate(|| {
                            bare.oaep_decrypt(Hash::Sha1, &bare_ct, None).unwrap();
                        }),
                        rate(|| {
                            soft.decrypt_oaep(&u, 1, &soft_ct, Hash::Sha1, None)
                                .result
                                .unwrap();
                        }),
                        rate(|| {
                            in_hsm
                                .decrypt_oaep(&u, 1, &hsm_ct, Hash::Sha1, None)
                                .result
                                .unwrap();
                        }),
                    ],
                )
            }
        };
        println!(
            "{what:<28} {:>12.0} {:>14.0} {:>16.0}",
            figures[0], figures[1], figures[2]
        );
    }
}
