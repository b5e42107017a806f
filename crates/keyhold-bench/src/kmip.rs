//! KMIP mode: persistent mutual-TLS connections, each a closed loop of
//! request messages (TTLV), for Create+Get+Destroy cycles, Create, Encrypt
//! or Locate.

use crate::{fail, report, Args, Op};
use keyhold_kmip::message::Version;
use keyhold_kmip::tags as t;
use keyhold_kmip::ttlv::{Limits, Ttlv, Value};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

type Conn = TlsStream<TcpStream>;

fn request(items: Vec<(u32, Vec<Ttlv>)>) -> Vec<u8> {
    keyhold_kmip::message::request(Version::new(1, 4), items).encode()
}

fn attr(name: &str, value: Value) -> Ttlv {
    Ttlv::structure(
        t::ATTRIBUTE,
        vec![
            Ttlv::text(t::ATTRIBUTE_NAME, name),
            Ttlv::new(t::ATTRIBUTE_VALUE, value),
        ],
    )
}

fn create_aes() -> Vec<u8> {
    create_aes_with(vec![])
}

fn create_aes_with(mut extra: Vec<Ttlv>) -> Vec<u8> {
    let mut attrs = vec![
        attr("Cryptographic Algorithm", Value::Enumeration(3)),
        attr("Cryptographic Length", Value::Integer(256)),
        attr("Cryptographic Usage Mask", Value::Integer(4 | 8)),
    ];
    attrs.append(&mut extra);
    request(vec![(
        0x01,
        vec![
            Ttlv::enumeration(t::OBJECT_TYPE, 2),
            Ttlv::structure(t::TEMPLATE_ATTRIBUTE, attrs),
        ],
    )])
}

/// The names kmip-locate gives its keys (this run's own, so that runs
/// against one server do not find each other's).
fn locate_name(i: u32) -> String {
    format!("bench-locate-{}-{i}", std::process::id())
}

/// A Name attribute (uninterpreted text).
fn name(n: &str) -> Ttlv {
    attr(
        "Name",
        Value::Structure(vec![
            Ttlv::text(t::NAME_VALUE, n),
            Ttlv::enumeration(t::NAME_TYPE, 1),
        ]),
    )
}

fn with_uid(op: u32, uid: &str, extra: Vec<Ttlv>) -> Vec<u8> {
    request(vec![(op, payload_with_uid(uid, extra))])
}

fn payload_with_uid(uid: &str, mut extra: Vec<Ttlv>) -> Vec<Ttlv> {
    let mut p = vec![Ttlv::text(t::UNIQUE_IDENTIFIER, uid)];
    p.append(&mut extra);
    p
}

/// A request message of `n` copies of one operation, each batch item with
/// its Unique Batch Item ID (KMIP requires one when there are several).
fn batched(op: u32, payload: Vec<Ttlv>, n: u32) -> Vec<u8> {
    if n == 1 {
        return request(vec![(op, payload)]);
    }
    let mut msg =
        keyhold_kmip::message::request(Version::new(1, 4), vec![(op, payload); n as usize]);
    if let Value::Structure(parts) = &mut msg.value {
        let items = parts.iter_mut().filter(|p| p.tag == t::BATCH_ITEM);
        for (i, item) in items.enumerate() {
            if let Value::Structure(fields) = &mut item.value {
                let id = Ttlv::bytes(t::UNIQUE_BATCH_ITEM_ID, (i as u32).to_be_bytes().to_vec());
                fields.insert(1, id);
            }
        }
    }
    msg.encode()
}

/// Sends one request; returns the first batch item's payload if every
/// batch item succeeded.
async fn call(c: &mut Conn, req: &[u8]) -> Result<Ttlv, String> {
    c.write_all(req).await.map_err(|e| e.to_string())?;
    let mut h = [0u8; 8];
    c.read_exact(&mut h).await.map_err(|e| e.to_string())?;
    let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize;
    let mut buf = vec![0u8; 8 + len];
    buf[..8].copy_from_slice(&h);
    c.read_exact(&mut buf[8..])
        .await
        .map_err(|e| e.to_string())?;
    let r = Ttlv::decode(&buf, &Limits::default()).map_err(|e| e.to_string())?;
    let mut first = None;
    for item in r.children(t::BATCH_ITEM) {
        match item.child(t::RESULT_STATUS).map(|s| &s.value) {
            Some(Value::Enumeration(0)) => {}
            _ => {
                return Err(format!(
                    "operation failed: {:?}",
                    item.child(t::RESULT_MESSAGE).map(|m| &m.value)
                ))
            }
        }
        first.get_or_insert(item);
    }
    first
        .ok_or("no batch item")?
        .child(t::RESPONSE_PAYLOAD)
        .cloned()
        .ok_or_else(|| "no payload".into())
}

fn uid_of(p: &Ttlv) -> Result<String, String> {
    match p.child(t::UNIQUE_IDENTIFIER).map(|u| &u.value) {
        Some(Value::TextString(s)) => Ok(s.clone()),
        _ => Err("no Unique Identifier".into()),
    }
}

fn connector(args: &Args) -> TlsConnector {
    let (Some(cert), Some(key), Some(ca)) = (&args.client_cert, &args.client_key, &args.cacert)
    else {
        fail("KMIP mode needs --client-cert, --client-key and --cacert")
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap_or_else(|e| fail(e)) {
        roots
            .add(c.unwrap_or_else(|e| fail(e)))
            .unwrap_or_else(|e| fail(e));
    }
    let chain: Vec<_> = CertificateDer::pem_file_iter(cert)
        .unwrap_or_else(|e| fail(e))
        .map(|c| c.unwrap_or_else(|e| fail(e)))
        .collect();
    let key = PrivateKeyDer::from_pem_file(key).unwrap_or_else(|e| fail(e));
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap_or_else(|e| fail(e))
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap_or_else(|e| fail(e));
    TlsConnector::from(Arc::new(cfg))
}

async fn connect(addr: &str, tls: &TlsConnector) -> Conn {
    let tcp = TcpStream::connect(addr).await.unwrap_or_else(|e| fail(e));
    let _ = tcp.set_nodelay(true);
    tls.connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .unwrap_or_else(|e| fail(format!("KMIP TLS: {e}")))
}

pub(crate) async fn run(args: Args) {
    let addr = args.kmip.clone().expect("kmip mode");
    let tls = connector(&args);
    let repeated = matches!(
        args.op,
        Op::KmipEncrypt
            | Op::KmipSignRsa
            | Op::KmipSignEc
            | Op::KmipSignEd25519
            | Op::KmipDecryptOaep
    );
    if args.batch > 1 && !repeated {
        fail("--batch is for kmip-encrypt, kmip-sign-* and kmip-decrypt-oaep");
    }
    let work = Arc::new(Work::prepare(&args, &addr, &tls).await);
    let errors = Arc::new(AtomicU64::new(0));
    let cycles = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let warm_end = start + Duration::from_secs(1);
    let end = warm_end + Duration::from_secs_f64(args.duration);
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let (addr, tls, work) = (addr.clone(), tls.clone(), work.clone());
        let (errors, cycles) = (errors.clone(), cycles.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = connect(&addr, &tls).await;
            let mut lat = Vec::new();
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let measured = now >= warm_end;
                let mut timed = |t0: Instant| {
                    if measured {
                        lat.push(t0.elapsed().as_micros() as u32);
                    }
                };
                match work.once(&mut c, &mut timed).await {
                    Ok(cycle) => {
                        if cycle && measured {
                            cycles.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("keyhold-bench: first KMIP error: {e}");
                        }
                        c = connect(&addr, &tls).await;
                    }
                }
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    let label = match args.op {
        Op::KmipCycle => "KMIP operations (Create, Get, Destroy each counted)",
        Op::KmipCreate => "KMIP Create (AES-256 keys made)",
        Op::KmipLocate => "KMIP Locate by Name",
        Op::KmipSignRsa => "KMIP Sign (RSA-2048, PSS, SHA-256)",
        Op::KmipSignEc => "KMIP Sign (P-256, ECDSA, SHA-256)",
        Op::KmipSignEd25519 => "KMIP Sign (Ed25519)",
        Op::KmipDecryptOaep => "KMIP Decrypt (RSA-2048, OAEP, SHA-256)",
        _ => "KMIP Encrypt",
    };
    let label = match args.batch {
        1 => label.to_owned(),
        n => format!("{label}, {n} operations per request message (each counted)"),
    };
    report(
        &args,
        &label,
        all,
        args.duration,
        errors.load(Ordering::Relaxed),
    );
    if args.op == Op::KmipCycle {
        let n = cycles.load(Ordering::Relaxed) as f64 / args.duration;
        if args.json {
            eprintln!("  cycles: {n:.0} Create+Get+Destroy cycles/s");
        } else {
            println!("  cycles: {n:.0} Create+Get+Destroy cycles/s");
        }
    }
}

/// What each connection sends: Encrypt with one key, Locate by one name,
/// or Create (then Get and Destroy, unless only Create is measured).
struct Work {
    /// One request sent over and over (Encrypt, Sign, Decrypt).
    repeat: Option<Vec<u8>>,
    locate: Option<Vec<u8>>,
    create: Vec<u8>,
    create_only: bool,
    /// Operations in each repeated request message.
    batch: u32,
}

impl Work {
    /// Makes what the operation needs first (an active key to encrypt
    /// with, 20 named keys to locate among).
    async fn prepare(args: &Args, addr: &str, tls: &TlsConnector) -> Self {
        let encrypt_key = if args.op == Op::KmipEncrypt {
            let mut c = connect(addr, tls).await;
            let uid = uid_of(
                &call(&mut c, &create_aes())
                    .await
                    .unwrap_or_else(|e| fail(e)),
            )
            .unwrap_or_else(|e| fail(e));
            call(&mut c, &with_uid(0x12, &uid, vec![]))
                .await
                .unwrap_or_else(|e| fail(e));
            Some(uid)
        } else if args.op == Op::KmipLocate {
            // 20 named keys, so that a Locate by one name finds one of them.
            let mut c = connect(addr, tls).await;
            for i in 0..20 {
                call(&mut c, &create_aes_with(vec![name(&locate_name(i))]))
                    .await
                    .unwrap_or_else(|e| fail(e));
            }
            None
        } else if matches!(
            args.op,
            Op::KmipCycle
                | Op::KmipCreate
                | Op::KmipSignRsa
                | Op::KmipSignEc
                | Op::KmipSignEd25519
                | Op::KmipDecryptOaep
        ) {
            None
        } else {
            fail("KMIP mode runs --op kmip-cycle, kmip-create, kmip-encrypt, kmip-locate, kmip-sign-rsa, kmip-sign-ec, kmip-sign-ed25519 or kmip-decrypt-oaep")
        };
        let data = vec![0x5au8; args.plaintext_bytes];
        let asymmetric = match args.op {
            Op::KmipSignRsa | Op::KmipSignEc | Op::KmipSignEd25519 | Op::KmipDecryptOaep => {
                Some(asymmetric_request(args, addr, tls).await)
            }
            _ => None,
        };
        Self {
            repeat: encrypt_key
                .map(|k| {
                    let payload = payload_with_uid(&k, vec![Ttlv::bytes(t::DATA, data)]);
                    batched(0x1F, payload, args.batch)
                })
                .or(asymmetric),
            batch: args.batch,
            locate: (args.op == Op::KmipLocate)
                .then(|| request(vec![(0x08, vec![name(&locate_name(7))])])),
            create: create_aes(),
            create_only: args.op == Op::KmipCreate,
        }
    }

    /// One unit of work; `timed` takes the start of each request. Whether
    /// a Create+Get+Destroy cycle completed.
    async fn once(&self, c: &mut Conn, timed: &mut impl FnMut(Instant)) -> Result<bool, String> {
        if let Some(req) = &self.repeat {
            let t0 = Instant::now();
            call(c, req).await?;
            // Each operation of the batch took the message's time.
            for _ in 0..self.batch {
                timed(t0);
            }
            return Ok(false);
        }
        if let Some(req) = &self.locate {
            let t0 = Instant::now();
            let found = call(c, req).await?;
            timed(t0);
            return match found.children(t::UNIQUE_IDENTIFIER).count() {
                1 => Ok(false),
                n => Err(format!("Locate found {n} keys, not 1")),
            };
        }
        let t0 = Instant::now();
        let uid = uid_of(&call(c, &self.create).await?)?;
        timed(t0);
        if self.create_only {
            return Ok(false);
        }
        let t0 = Instant::now();
        call(c, &with_uid(0x0A, &uid, vec![])).await?;
        timed(t0);
        let t0 = Instant::now();
        call(c, &with_uid(0x14, &uid, vec![])).await?;
        timed(t0);
        Ok(true)
    }
}

/// Makes an Active key pair for an asymmetric operation and returns the
/// request to repeat: a Sign of 32 bytes, or a Decrypt of an RSA-OAEP
/// ciphertext the server made once with the public key.
async fn asymmetric_request(args: &Args, addr: &str, tls: &TlsConnector) -> Vec<u8> {
    let (alg, len) = match args.op {
        Op::KmipSignEc => (0x1A, 256),      // EC, P-256
        Op::KmipSignEd25519 => (0x37, 256), // Ed25519
        _ => (0x04, 2048),                  // RSA
    };
    let mut c = connect(addr, tls).await;
    let made = call(
        &mut c,
        &request(vec![(
            0x02,
            vec![
                Ttlv::structure(
                    t::COMMON_TEMPLATE_ATTRIBUTE,
                    vec![
                        attr("Cryptographic Algorithm", Value::Enumeration(alg)),
                        attr("Cryptographic Length", Value::Integer(len)),
                    ],
                ),
                Ttlv::structure(
                    t::PRIVATE_KEY_TEMPLATE_ATTRIBUTE,
                    vec![attr(
                        "Cryptographic Usage Mask",
                        Value::Integer(0x01 | 0x08),
                    )],
                ),
                Ttlv::structure(
                    t::PUBLIC_KEY_TEMPLATE_ATTRIBUTE,
                    vec![attr(
                        "Cryptographic Usage Mask",
                        Value::Integer(0x02 | 0x04),
                    )],
                ),
            ],
        )]),
    )
    .await
    .unwrap_or_else(|e| fail(e));
    let text = |tag| match made.child(tag).map(|v| &v.value) {
        Some(Value::TextString(u)) => u.clone(),
        _ => fail("Create Key Pair answered no identifiers"),
    };
    let (private, public) = (
        text(t::PRIVATE_KEY_UNIQUE_IDENTIFIER),
        text(t::PUBLIC_KEY_UNIQUE_IDENTIFIER),
    );
    for u in [&private, &public] {
        call(&mut c, &with_uid(0x12, u, vec![]))
            .await
            .unwrap_or_else(|e| fail(e));
    }
    let params = |padding: u32| {
        let p = match alg {
            0x04 => vec![
                Ttlv::enumeration(t::HASHING_ALGORITHM, 0x06), // SHA-256
                Ttlv::enumeration(t::PADDING_METHOD, padding),
            ],
            0x37 => vec![Ttlv::enumeration(t::CRYPTOGRAPHIC_ALGORITHM, 0x37)], // Ed25519
            _ => vec![
                Ttlv::enumeration(t::HASHING_ALGORITHM, 0x06),
                Ttlv::enumeration(t::CRYPTOGRAPHIC_ALGORITHM, 0x06), // ECDSA
            ],
        };
        Ttlv::structure(t::CRYPTOGRAPHIC_PARAMETERS, p)
    };
    let data = Ttlv::bytes(t::DATA, vec![0x5a; 32]);
    if args.op != Op::KmipDecryptOaep {
        let sign = payload_with_uid(&private, vec![params(0x0A), data]); // PSS for RSA
        return batched(0x21, sign, args.batch);
    }
    let enc = call(&mut c, &with_uid(0x1F, &public, vec![params(0x02), data]))
        .await
        .unwrap_or_else(|e| fail(e));
    let Some(ct) = enc.child(t::DATA).cloned() else {
        fail("the OAEP encryption answered no data")
    };
    batched(
        0x20,
        payload_with_uid(&private, vec![params(0x02), ct]),
        args.batch,
    )
}
