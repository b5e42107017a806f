//! `keyhold-bench`: a load generator for the XKS API.
//!
//! It signs every request with SigV4 itself (as AWS KMS does), keeps N
//! HTTPS keep-alive connections busy for T seconds (closed loop), or sends
//! at a fixed total rate (open loop: latency is measured from the moment a
//! request was *due*, so a stalled server cannot hide queueing), and prints
//! requests/s and p50/p99/p99.9 latency. `--cold N` instead measures N cold
//! requests: new TCP connection + TLS handshake + one request each.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use keyhold_xks::sigv4::{Signer, XKS_SERVICE};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

mod kmip;

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum Op {
    Encrypt,
    Decrypt,
    Metadata,
    Health,
    /// KMIP: Create + Get + Destroy of an AES-256 key (each counted).
    KmipCycle,
    /// KMIP: Encrypt 32 bytes with AES-256-GCM under one key.
    KmipEncrypt,
    /// KMIP: Create an AES-256 key (key creation rate).
    KmipCreate,
    /// KMIP: Locate by Name, one of 20 named keys made at the start (run it
    /// after kmip-cycle to see Locate beside many destroyed objects).
    KmipLocate,
    /// KMIP: Sign 32 bytes with an RSA-2048 key (PSS, SHA-256).
    KmipSignRsa,
    /// KMIP: Sign 32 bytes with a P-256 key (ECDSA, SHA-256).
    KmipSignEc,
    /// KMIP: Sign 32 bytes with an Ed25519 key (pure EdDSA).
    KmipSignEd25519,
    /// KMIP: Decrypt an RSA-2048 OAEP (SHA-256) ciphertext.
    KmipDecryptOaep,
    /// Azure EKM: wrapkey of 32 bytes with A256KW (--url up to the path
    /// prefix, --client-cert and --client-key as Managed HSM's).
    AzureWrap,
    /// Azure EKM: unwrapkey of one A256KW value made at the start.
    AzureUnwrap,
    /// Google Workspace CSE: wrap of a 32-byte data key (--url up to the
    /// KACLS path, --authn-token and --authz-token files: the same tokens
    /// every time, as a user's session sends them).
    CseWrap,
    /// Google Workspace CSE: unwrap of one wrapped key made at the start.
    CseUnwrap,
}

impl Op {
    fn azure(self) -> bool {
        matches!(self, Op::AzureWrap | Op::AzureUnwrap)
    }

    fn cse(self) -> bool {
        matches!(self, Op::CseWrap | Op::CseUnwrap)
    }
}

#[derive(Parser, Debug)]
#[command(name = "keyhold-bench", about = "Load generator for Keyhold's XKS API")]
struct Args {
    /// Base URL up to and including /kms/xks/v1, e.g. https://localhost:8443/demo/kms/xks/v1
    #[arg(long, default_value = "")]
    url: String,
    /// KMIP mode: the KMIP listener (e.g. 127.0.0.1:5696), with --op kmip-cycle,
    /// kmip-create or kmip-encrypt, --client-cert, --client-key and --cacert.
    #[arg(long)]
    kmip: Option<String>,
    /// KMIP client certificate (PEM).
    #[arg(long)]
    client_cert: Option<std::path::PathBuf>,
    /// KMIP client key (PEM).
    #[arg(long)]
    client_key: Option<std::path::PathBuf>,
    /// External key id (with --key-count: the stem of KEY-000001…).
    #[arg(long, default_value = "demo-key")]
    key_id: String,
    /// Spread requests over this many keys named KEY_ID-000001….
    #[arg(long)]
    key_count: Option<u32>,
    /// JSON file with access_key_id and secret_access_key (as `keyhold store credential add --json` prints).
    #[arg(long)]
    credential: Option<std::path::PathBuf>,
    #[arg(long, env = "XKS_ACCESS_KEY_ID")]
    access_key_id: Option<String>,
    #[arg(long, env = "XKS_SECRET_ACCESS_KEY", hide_env_values = true)]
    secret_access_key: Option<String>,
    /// CA certificate (PEM) that signed the server certificate.
    #[arg(long)]
    cacert: Option<std::path::PathBuf>,
    #[arg(long, value_enum, default_value = "encrypt")]
    op: Op,
    /// Concurrent keep-alive connections.
    #[arg(long, short = 'c', default_value_t = 32)]
    connections: usize,
    /// KMIP: operations per request message (Batch Count), each a batch
    /// item with its Unique Batch Item ID; throughput counts operations.
    /// For the repeated operations (kmip-encrypt, kmip-sign-*,
    /// kmip-decrypt-oaep).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    batch: u32,
    /// Seconds to run (after a one-second warm-up).
    #[arg(long, short = 'd', default_value_t = 10.0)]
    duration: f64,
    /// Total requests per second (open loop); default: as fast as possible.
    #[arg(long)]
    rate: Option<f64>,
    /// Plaintext size in bytes (32 = a data key).
    #[arg(long, default_value_t = 32)]
    plaintext_bytes: usize,
    /// AAD size in bytes.
    #[arg(long, default_value_t = 64)]
    aad_bytes: usize,
    /// Measure this many cold requests (new TCP + TLS + request) instead.
    #[arg(long)]
    cold: Option<usize>,
    /// Runtime worker threads (default: number of CPUs).
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// CSE: a file with the user's authentication token.
    #[arg(long)]
    authn_token: Option<std::path::PathBuf>,
    /// CSE: a file with Google's authorization token (role writer: it
    /// wraps and unwraps).
    #[arg(long)]
    authz_token: Option<std::path::PathBuf>,
}

struct Target {
    host: String,
    port: u16,
    authority: String,
    base_path: String,
    tls: Option<tokio_rustls::TlsConnector>,
    server_name: ServerName<'static>,
}

struct Shared {
    args: Args,
    target: Target,
    signer: Signer,
    plaintext_b64: String,
    aad_b64: String,
    ids: AtomicU64,
    errors: AtomicU64,
    decrypt_body: Option<serde_json::Value>,
    /// Azure: the A256KW value `azure-unwrap` sends (CSE: the wrapped key).
    wrapped: Option<String>,
    /// CSE: the authentication and authorization tokens.
    tokens: (String, String),
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

pub(crate) fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("keyhold-bench: {msg}");
    std::process::exit(2)
}

fn now_secs() -> i64 {
    keyhold_core::now()
}

impl Shared {
    fn key_for(&self, n: u64) -> String {
        match self.args.key_count {
            Some(c) if c > 0 => format!("{}-{:06}", self.args.key_id, n % c as u64 + 1),
            _ => self.args.key_id.clone(),
        }
    }

    fn build(&self, op: Op) -> Request<Full<Bytes>> {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        let key = self.key_for(n);
        let meta = serde_json::json!({
            "awsPrincipalArn": "arn:aws:iam::111122223333:role/bench",
            "kmsKeyArn": "arn:aws:kms:us-east-1:111122223333:key/bench",
            "kmsOperation": match op { Op::Encrypt => "GenerateDataKey", Op::Decrypt => "Decrypt", Op::Metadata => "DescribeKey", _ => "KmsHealthCheck" },
            "kmsRequestId": format!("bench-{n}"),
        });
        let (path, body) = match op {
            Op::AzureWrap | Op::AzureUnwrap => {
                let (name, value) = match op {
                    Op::AzureWrap => ("wrapkey", self.plaintext_b64.clone()),
                    _ => ("unwrapkey", self.wrapped.clone().unwrap_or_default()),
                };
                let body = serde_json::json!({
                    "request_context": {"request_id": format!("bench-{n}"), "correlation_id": format!("bench-{n}"), "pool_name": "bench"},
                    "alg": "A256KW",
                    "value": value,
                });
                return Request::post(format!(
                    "{}/{key}/{name}?api-version=0.1-preview",
                    self.target.base_path
                ))
                .header("host", &self.target.authority)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(
                    serde_json::to_vec(&body).unwrap_or_default(),
                )))
                .unwrap_or_else(|e| fail(e));
            }
            Op::CseWrap | Op::CseUnwrap => {
                let (name, body) = match op {
                    Op::CseWrap => (
                        "wrap",
                        serde_json::json!({
                            "authentication": self.tokens.0, "authorization": self.tokens.1,
                            "key": B64.encode([0x5au8; 32]), "reason": "bench",
                        }),
                    ),
                    _ => (
                        "unwrap",
                        serde_json::json!({
                            "authentication": self.tokens.0, "authorization": self.tokens.1,
                            "wrapped_key": self.wrapped.clone().unwrap_or_default(), "reason": "bench",
                        }),
                    ),
                };
                return Request::post(format!("{}/{name}", self.target.base_path))
                    .header("host", &self.target.authority)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(
                        serde_json::to_vec(&body).unwrap_or_default(),
                    )))
                    .unwrap_or_else(|e| fail(e));
            }
            Op::Encrypt => (
                format!("{}/keys/{key}/encrypt", self.target.base_path),
                serde_json::json!({
                    "requestMetadata": meta,
                    "plaintext": self.plaintext_b64,
                    "additionalAuthenticatedData": self.aad_b64,
                    "encryptionAlgorithm": "AES_GCM",
                    "ciphertextDataIntegrityValueAlgorithm": "SHA_256",
                }),
            ),
            Op::Decrypt => {
                let mut b = self.decrypt_body.clone().unwrap_or_default();
                b["requestMetadata"] = meta;
                (
                    format!(
                        "{}/keys/{}/decrypt",
                        self.target.base_path, self.args.key_id
                    ),
                    b,
                )
            }
            Op::Metadata => (
                format!("{}/keys/{key}/metadata", self.target.base_path),
                serde_json::json!({ "requestMetadata": meta }),
            ),
            _ => (
                format!("{}/health", self.target.base_path),
                serde_json::json!({ "requestMetadata": meta }),
            ),
        };
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let (date, auth) = self.signer.sign(
            "POST",
            &self.target.authority,
            &path,
            Some("application/json"),
            &body,
            now_secs(),
        );
        Request::post(path)
            .header("host", &self.target.authority)
            .header("content-type", "application/json")
            .header("x-amz-date", date)
            .header("authorization", auth)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_else(|e| fail(e))
    }
}

async fn connect(s: &Shared) -> std::io::Result<Sender> {
    let tcp = TcpStream::connect((s.target.host.as_str(), s.target.port)).await?;
    tcp.set_nodelay(true)?;
    let io_err = |e: hyper::Error| std::io::Error::other(e.to_string());
    match &s.target.tls {
        Some(c) => {
            let tls = c.connect(s.target.server_name.clone(), tcp).await?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(io_err)?;
            tokio::spawn(conn);
            Ok(sender)
        }
        None => {
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(io_err)?;
            tokio::spawn(conn);
            Ok(sender)
        }
    }
}

async fn send(sender: &mut Sender, req: Request<Full<Bytes>>) -> Result<(u16, Bytes), String> {
    sender.ready().await.map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// One connection's loop; returns latencies in microseconds.
async fn worker(
    s: Arc<Shared>,
    idx: usize,
    start: Instant,
    warm_end: Instant,
    end: Instant,
) -> (Vec<u32>, Vec<u32>) {
    let mut lat = Vec::with_capacity(1 << 16);
    let mut lags = Vec::new();
    let mut sender = match connect(&s).await {
        Ok(x) => x,
        Err(e) => fail(format!("connect: {e}")),
    };
    let interval = s
        .args
        .rate
        .map(|r| Duration::from_secs_f64(s.args.connections as f64 / r));
    let mut due = start
        + interval
            .map(|i| i.mul_f64(idx as f64 / s.args.connections as f64))
            .unwrap_or_default();
    loop {
        if let Some(i) = interval {
            let now = Instant::now();
            if due > now {
                tokio::time::sleep_until(due.into()).await;
            }
            due += i;
        }
        // Latency runs from the moment the request is sent. In fixed-rate mode
        // the lag behind schedule is recorded too: a server that stalls makes
        // the client fall behind, and that shows up there rather than hiding.
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        if let Some(i) = interval {
            let scheduled = due - i;
            if t0 >= warm_end {
                lags.push(
                    t0.saturating_duration_since(scheduled)
                        .as_micros()
                        .min(u32::MAX as u128) as u32,
                );
            }
        }
        let req = s.build(s.args.op);
        match send(&mut sender, req).await {
            Ok((200, _)) => {}
            Ok((st, body)) => {
                if s.errors.fetch_add(1, Ordering::Relaxed) < 3 {
                    eprintln!("HTTP {st}: {}", String::from_utf8_lossy(&body));
                }
            }
            Err(e) => {
                s.errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("request failed: {e}; reconnecting");
                sender = match connect(&s).await {
                    Ok(x) => x,
                    Err(e) => fail(format!("reconnect: {e}")),
                };
                continue;
            }
        }
        let done = Instant::now();
        if t0 >= warm_end {
            lat.push(done.duration_since(t0).as_micros().min(u32::MAX as u128) as u32);
        }
    }
    (lat, lags)
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

pub(crate) fn report(args: &Args, label: &str, mut lat: Vec<u32>, secs: f64, errors: u64) {
    lat.sort_unstable();
    let n = lat.len();
    let rps = n as f64 / secs;
    let (p50, p99, p999, max) = (
        pct(&lat, 50.0),
        pct(&lat, 99.0),
        pct(&lat, 99.9),
        pct(&lat, 100.0),
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "mode": label, "op": format!("{:?}", args.op).to_lowercase(),
                "connections": args.connections, "rate": args.rate,
                "requests": n, "errors": errors, "seconds": secs, "requests_per_sec": rps,
                "latency_ms": {"p50": p50, "p99": p99, "p99_9": p999, "max": max},
            })
        );
    } else {
        println!(
            "{label}: op={:?} connections={} rate={} requests={n} errors={errors} time={secs:.1}s",
            args.op,
            args.connections,
            args.rate
                .map(|r| r.to_string())
                .unwrap_or_else(|| "max".into()),
        );
        println!("  throughput: {rps:.0} requests/s");
        println!("  latency ms: p50={p50:.3} p99={p99:.3} p99.9={p999:.3} max={max:.3}");
    }
}

fn target(args: &Args) -> Target {
    let uri: Uri = args
        .url
        .parse()
        .unwrap_or_else(|e| fail(format!("--url: {e}")));
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => fail("--url must start with https:// or http://"),
    };
    let host = uri
        .host()
        .unwrap_or_else(|| fail("--url has no host"))
        .to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tls = https.then(|| {
        let mut roots = rustls::RootCertStore::empty();
        let path = args
            .cacert
            .as_ref()
            .unwrap_or_else(|| fail("--cacert is required for https"));
        for c in CertificateDer::pem_file_iter(path).unwrap_or_else(|e| fail(e)) {
            roots
                .add(c.unwrap_or_else(|e| fail(e)))
                .unwrap_or_else(|e| fail(e));
        }
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| fail(e))
        .with_root_certificates(roots);
        let mut cfg = match (&args.client_cert, &args.client_key) {
            (Some(c), Some(k)) => {
                let certs = CertificateDer::pem_file_iter(c)
                    .unwrap_or_else(|e| fail(e))
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap_or_else(|e| fail(e));
                let key =
                    rustls::pki_types::PrivateKeyDer::from_pem_file(k).unwrap_or_else(|e| fail(e));
                cfg.with_client_auth_cert(certs, key)
                    .unwrap_or_else(|e| fail(e))
            }
            _ => cfg.with_no_client_auth(),
        };
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        // Cold-request measurements must pay for a full handshake.
        if args.cold.is_some() {
            cfg.resumption = rustls::client::Resumption::disabled();
        }
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
    });
    Target {
        server_name: ServerName::try_from(host.clone()).unwrap_or_else(|e| fail(e)),
        authority: uri.authority().map(|a| a.to_string()).unwrap_or_default(),
        base_path: uri.path().trim_end_matches('/').to_owned(),
        host,
        port,
        tls,
    }
}

fn credentials(args: &Args) -> (String, String) {
    if let Some(p) = &args.credential {
        let text =
            std::fs::read_to_string(p).unwrap_or_else(|e| fail(format!("{}: {e}", p.display())));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| fail(e));
        let get = |a: &str, b: &str| {
            v.get(a)
                .or_else(|| {
                    v.get("XksProxyAuthenticationCredential")
                        .and_then(|c| c.get(b))
                })
                .and_then(|x| x.as_str())
                .map(str::to_owned)
                .unwrap_or_else(|| fail(format!("{} has no {a}", p.display())))
        };
        return (
            get("access_key_id", "AccessKeyId"),
            get("secret_access_key", "RawSecretAccessKey"),
        );
    }
    match (&args.access_key_id, &args.secret_access_key) {
        (Some(a), Some(s)) => (a.clone(), s.clone()),
        _ => fail("give --credential FILE or --access-key-id and --secret-access-key"),
    }
}

async fn run(args: Args) {
    if args.kmip.is_some() {
        return kmip::run(args).await;
    }
    // Azure authenticates by client certificate, CSE by tokens: no SigV4.
    let (akid, secret) = if args.op.azure() || args.op.cse() {
        (String::new(), String::new())
    } else {
        credentials(&args)
    };
    let target = target(&args);
    let mut shared = Shared {
        signer: Signer::new(&akid, secret.as_bytes(), &args.region, XKS_SERVICE),
        plaintext_b64: if args.op.azure() {
            use base64::engine::general_purpose::URL_SAFE_NO_PAD;
            URL_SAFE_NO_PAD.encode(vec![0x5au8; args.plaintext_bytes.max(16) / 8 * 8])
        } else {
            B64.encode(vec![0x5au8; args.plaintext_bytes])
        },
        aad_b64: B64.encode(vec![0xa5u8; args.aad_bytes]),
        ids: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        decrypt_body: None,
        wrapped: None,
        tokens: Default::default(),
        target,
        args,
    };
    if shared.args.op.cse() {
        let read = |p: &Option<std::path::PathBuf>, what: &str| {
            let p = p
                .as_ref()
                .unwrap_or_else(|| fail(format!("--{what} FILE is required with a cse op")));
            std::fs::read_to_string(p)
                .unwrap_or_else(|e| fail(format!("{}: {e}", p.display())))
                .trim()
                .to_owned()
        };
        shared.tokens = (
            read(&shared.args.authn_token, "authn-token"),
            read(&shared.args.authz_token, "authz-token"),
        );
    }
    // An unwrap op unwraps one value wrapped at the start.
    let setup = match shared.args.op {
        Op::CseUnwrap => Some((Op::CseWrap, "wrapped_key")),
        Op::AzureUnwrap => Some((Op::AzureWrap, "value")),
        _ => None,
    };
    if let Some((wrap, field)) = setup {
        let r = setup_call(&shared, wrap).await;
        shared.wrapped = r[field].as_str().map(str::to_owned);
        shared.args.key_count = None;
    }
    if shared.args.op == Op::Decrypt {
        shared.decrypt_body = Some(decrypt_body(&shared).await);
        shared.args.key_count = None;
    }
    let s = Arc::new(shared);

    if let Some(n) = s.args.cold {
        return cold(&s, n).await;
    }

    let start = Instant::now();
    let warm_end = start + Duration::from_secs(1);
    let end = warm_end + Duration::from_secs_f64(s.args.duration);
    let tasks: Vec<_> = (0..s.args.connections)
        .map(|i| tokio::spawn(worker(s.clone(), i, start, warm_end, end)))
        .collect();
    let (mut all, mut lags) = (Vec::new(), Vec::new());
    for t in tasks {
        let (l, g) = t.await.unwrap_or_default();
        all.extend(l);
        lags.extend(g);
    }
    report(
        &s.args,
        "keep-alive",
        all,
        s.args.duration,
        s.errors.load(Ordering::Relaxed),
    );
    if s.args.rate.is_some() {
        lags.sort_unstable();
        let msg = format!(
            "  schedule lag ms (client behind the fixed rate): p50={:.3} p99={:.3} max={:.3}",
            pct(&lags, 50.0),
            pct(&lags, 99.0),
            pct(&lags, 100.0)
        );
        if s.args.json {
            eprintln!("{msg}");
        } else {
            println!("{msg}");
        }
    }
}

/// One request made before the run (its answer, which must be 200).
async fn setup_call(shared: &Shared, op: Op) -> serde_json::Value {
    let mut c = connect(shared).await.unwrap_or_else(|e| fail(e));
    let (st, body) = send(&mut c, shared.build(op))
        .await
        .unwrap_or_else(|e| fail(e));
    if st != 200 {
        fail(format!(
            "setup {op:?}: HTTP {st}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    serde_json::from_slice(&body).unwrap_or_else(|e| fail(e))
}

/// One ciphertext (made now) to decrypt over and over.
async fn decrypt_body(shared: &Shared) -> serde_json::Value {
    let mut c = connect(shared).await.unwrap_or_else(|e| fail(e));
    let req = shared.build(Op::Encrypt);
    let (st, body) = send(&mut c, req).await.unwrap_or_else(|e| fail(e));
    if st != 200 {
        fail(format!(
            "setup encrypt: HTTP {st}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    let r: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|e| fail(e));
    serde_json::json!({
        "ciphertext": r["ciphertext"], "initializationVector": r["initializationVector"],
        "authenticationTag": r["authenticationTag"], "ciphertextMetadata": r["ciphertextMetadata"],
        "additionalAuthenticatedData": shared.aad_b64, "encryptionAlgorithm": "AES_GCM",
    })
}

/// `--cold N`: N requests one after another, each on a new connection
/// (TCP and TLS handshakes included).
async fn cold(s: &Shared, n: usize) {
    let mut lat = Vec::with_capacity(n);
    let t = Instant::now();
    for _ in 0..n {
        let t0 = Instant::now();
        let mut c = connect(s).await.unwrap_or_else(|e| fail(e));
        let (st, body) = send(&mut c, s.build(s.args.op))
            .await
            .unwrap_or_else(|e| fail(e));
        if st != 200 {
            fail(format!("HTTP {st}: {}", String::from_utf8_lossy(&body)));
        }
        lat.push(t0.elapsed().as_micros() as u32);
    }
    report(
        &s.args,
        "cold requests (TCP + TLS handshake + request)",
        lat,
        t.elapsed().as_secs_f64(),
        0,
    );
}

fn main() {
    let args = Args::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(t) = args.threads {
        rt.worker_threads(t);
    }
    let rt = rt.enable_all().build().unwrap_or_else(|e| fail(e));
    rt.block_on(run(args));
}
