//! `keyhold-siege`: clients that never authenticate and hold what they can,
//! for measuring what they cost the XKS listener (scripts/dos.sh).
//!
//! - `--slow N`: N HTTP/1.1 connections over TLS, each sending the headers
//!   of a POST that announces a body larger than it will send, then
//!   `--slow-body-kib` of it, then nothing more; when the server closes
//!   one, it connects again.
//! - `--h2 N --h2-streams M`: N HTTP/2 connections, each opening M streams
//!   that send 16 KiB of a body and stall; a refused or reset stream is
//!   opened again, a closed connection reconnects.
//!
//! Source addresses (`--source`, repeatable) are used in turn, so that a
//! per-address cap can be measured apart from the global one. Every few
//! seconds, and at the end, it prints how many connections and streams
//! are held and how many were refused or closed.

use bytes::Bytes;
use clap::Parser;
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

#[derive(Parser, Debug)]
#[command(
    name = "keyhold-siege",
    about = "Unauthenticated clients that hold connections"
)]
struct Args {
    /// The XKS listener, e.g. 127.0.0.1:8443.
    #[arg(long)]
    addr: SocketAddr,
    /// CA certificate (PEM) of the server.
    #[arg(long)]
    cacert: std::path::PathBuf,
    /// Name the server's certificate has.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Path to POST to.
    #[arg(long, default_value = "/demo/kms/xks/v1/keys/demo-key/encrypt")]
    path: String,
    /// Slow HTTP/1.1 clients.
    #[arg(long, default_value_t = 1000)]
    slow: usize,
    /// What each slow client sends of its body before stalling, in KiB.
    #[arg(long, default_value_t = 250)]
    slow_body_kib: usize,
    /// HTTP/2 connections.
    #[arg(long, default_value_t = 20)]
    h2: usize,
    /// Stalled streams wanted on each HTTP/2 connection.
    #[arg(long, default_value_t = 250)]
    h2_streams: usize,
    /// Source addresses to connect from, in turn (default: the system's choice).
    #[arg(long)]
    source: Vec<IpAddr>,
    /// Seconds to keep it up.
    #[arg(long, default_value_t = 30.0)]
    seconds: f64,
}

#[derive(Default)]
struct Counts {
    slow_open: AtomicU64,
    slow_connects: AtomicU64,
    slow_closed: AtomicU64,
    slow_refused: AtomicU64,
    h2_open: AtomicU64,
    h2_streams: AtomicU64,
    h2_stream_ends: AtomicU64,
    h2_refused: AtomicU64,
}

impl Counts {
    fn line(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "slow: {} open ({} connects, {} closed by the server, {} refused) | h2: {} connections, {} streams held ({} ended by the server, {} connections refused)",
            g(&self.slow_open),
            g(&self.slow_connects),
            g(&self.slow_closed),
            g(&self.slow_refused),
            g(&self.h2_open),
            g(&self.h2_streams),
            g(&self.h2_stream_ends),
            g(&self.h2_refused),
        )
    }
}

struct Ctx {
    args: Args,
    tls_h1: tokio_rustls::TlsConnector,
    tls_h2: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
    counts: Counts,
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("keyhold-siege: {msg}");
    std::process::exit(2)
}

fn tls(ca: &std::path::Path, alpn: &[u8]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap_or_else(|e| fail(e)) {
        roots
            .add(c.unwrap_or_else(|e| fail(e)))
            .unwrap_or_else(|e| fail(e));
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap_or_else(|e| fail(e))
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

async fn connect(
    ctx: &Ctx,
    n: usize,
    h2: bool,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let sock = if ctx.args.addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    if !ctx.args.source.is_empty() {
        sock.bind(SocketAddr::new(
            ctx.args.source[n % ctx.args.source.len()],
            0,
        ))?;
    }
    let tcp = tokio::time::timeout(Duration::from_secs(10), sock.connect(ctx.args.addr))
        .await
        .map_err(|_| std::io::Error::other("connect timed out"))??;
    let tls = if h2 { &ctx.tls_h2 } else { &ctx.tls_h1 };
    tokio::time::timeout(Duration::from_secs(10), tls.connect(ctx.name.clone(), tcp))
        .await
        .map_err(|_| std::io::Error::other("handshake timed out"))?
}

/// One slow HTTP/1.1 client, reconnecting until the end.
async fn slow_client(ctx: Arc<Ctx>, n: usize, end: Instant) {
    let body = vec![b'A'; ctx.args.slow_body_kib * 1024];
    while Instant::now() < end {
        let mut s = match connect(&ctx, n, false).await {
            Ok(s) => s,
            Err(_) => {
                ctx.counts.slow_refused.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        ctx.counts.slow_connects.fetch_add(1, Ordering::Relaxed);
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AKIDNOTREALNOTREALNOT/20261205/us-east-1/kms-xks-proxy/aws4_request, SignedHeaders=host, Signature=00\r\n\r\n",
            ctx.args.path,
            ctx.args.server_name,
            body.len() + 4096
        );
        if s.write_all(head.as_bytes()).await.is_err() || s.write_all(&body).await.is_err() {
            ctx.counts.slow_closed.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let _ = s.flush().await;
        ctx.counts.slow_open.fetch_add(1, Ordering::Relaxed);
        // Hold it until the server lets go, or the end.
        let mut buf = [0u8; 4096];
        let held = async {
            use tokio::io::AsyncReadExt;
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        let closed = tokio::select! {
            _ = held => true,
            _ = tokio::time::sleep_until(end.into()) => false,
        };
        ctx.counts.slow_open.fetch_sub(1, Ordering::Relaxed);
        if closed {
            ctx.counts.slow_closed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A request body fed from a channel: what is sent into it goes out, and
/// while the sender is held and silent the stream stalls.
struct Fed(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for Fed {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

/// One HTTP/2 connection holding as many stalled streams as it can.
async fn h2_client(ctx: Arc<Ctx>, n: usize, end: Instant) {
    while Instant::now() < end {
        let s = match connect(&ctx, n, true).await {
            Ok(s) => s,
            Err(_) => {
                ctx.counts.h2_refused.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let Ok((sender, conn)) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake::<_, Fed>(TokioIo::new(s))
            .await
        else {
            ctx.counts.h2_refused.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        ctx.counts.h2_open.fetch_add(1, Ordering::Relaxed);
        let conn_task = tokio::spawn(conn);
        let streams: Vec<_> = (0..ctx.args.h2_streams)
            .map(|_| {
                let (ctx, mut sender) = (ctx.clone(), sender.clone());
                tokio::spawn(async move {
                    while Instant::now() < end {
                        if sender.ready().await.is_err() {
                            return;
                        }
                        let (tx, rx) = tokio::sync::mpsc::channel(1);
                        let req = hyper::Request::post(format!(
                            "https://{}{}",
                            ctx.args.server_name, ctx.args.path
                        ))
                        .header("content-type", "application/json")
                        .header("content-length", (64 * 1024).to_string())
                        .body(Fed(rx))
                        .expect("request");
                        let _ = tx.try_send(Bytes::from(vec![b'A'; 16 * 1024]));
                        ctx.counts.h2_streams.fetch_add(1, Ordering::Relaxed);
                        let answered = tokio::select! {
                            r = sender.send_request(req) => { drop(r); true }
                            _ = tokio::time::sleep_until(end.into()) => false,
                        };
                        ctx.counts.h2_streams.fetch_sub(1, Ordering::Relaxed);
                        drop(tx);
                        if answered {
                            ctx.counts.h2_stream_ends.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for s in streams {
            let _ = s.await;
        }
        conn_task.abort();
        ctx.counts.h2_open.fetch_sub(1, Ordering::Relaxed);
    }
}

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(e));
    let name = ServerName::try_from(args.server_name.clone()).unwrap_or_else(|e| fail(e));
    let ctx = Arc::new(Ctx {
        tls_h1: tls(&args.cacert, b"http/1.1"),
        tls_h2: tls(&args.cacert, b"h2"),
        name,
        args,
        counts: Counts::default(),
    });
    rt.block_on(async move {
        let end = Instant::now() + Duration::from_secs_f64(ctx.args.seconds);
        let mut tasks = Vec::new();
        for i in 0..ctx.args.slow {
            tasks.push(tokio::spawn(slow_client(ctx.clone(), i, end)));
        }
        for i in 0..ctx.args.h2 {
            tasks.push(tokio::spawn(h2_client(ctx.clone(), i, end)));
        }
        let report = {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    println!("{}", ctx.counts.line());
                }
            })
        };
        for t in tasks {
            let _ = t.await;
        }
        report.abort();
        println!("final: {}", ctx.counts.line());
    });
}
