//! A native KMIP client for the tests: mutual TLS to the real server, TTLV
//! requests built by hand, and what their answers hold.

use super::{Env, Server};
use keyhold_kmip::enums::{object_type, operation as op};
use keyhold_kmip::message::Version;
use keyhold_kmip::tags as t;
use keyhold_kmip::ttlv::{Limits, Ttlv, Value};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub(crate) struct Kmip {
    pub(crate) env: Env,
    pub(crate) server: Server,
    pub(crate) port: u16,
}

pub(crate) fn issue(env: &Env, name: &str) -> (PathBuf, PathBuf) {
    env.run_ok(&[
        "kmip",
        "client-cert",
        "issue",
        name,
        "--out",
        env.dir.path().to_str().unwrap(),
    ]);
    (
        env.dir.path().join(format!("{name}.pem")),
        env.dir.path().join(format!("{name}.key")),
    )
}

pub(crate) fn start() -> Kmip {
    let env = Env::new();
    issue(&env, "alice");
    issue(&env, "bob");
    serve_kmip(env)
}

/// Starts `env`'s server with a KMIP listener (and the admin API).
pub(crate) fn serve_kmip(env: Env) -> Kmip {
    let server = env.serve(&[
        "--kmip-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    let port = env.listener_port("kmip");
    Kmip { env, server, port }
}

/// A native KMIP client over TLS.
pub(crate) struct Conn {
    pub(crate) tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

pub(crate) fn client_config(ca: &Path, cert: Option<(&Path, &Path)>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    Arc::new(match cert {
        Some((c, k)) => b
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(c)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(k).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    })
}

impl Conn {
    pub(crate) fn open(k: &Kmip, who: &str) -> Conn {
        let d = k.env.dir.path();
        Self::with(
            k.port,
            client_config(
                &k.server.ca,
                Some((&d.join(format!("{who}.pem")), &d.join(format!("{who}.key")))),
            ),
        )
        .expect("connect")
    }

    pub(crate) fn with(port: u16, cfg: Arc<rustls::ClientConfig>) -> std::io::Result<Conn> {
        let sock = TcpStream::connect(("127.0.0.1", port))?;
        sock.set_read_timeout(Some(Duration::from_secs(10)))?;
        let conn =
            rustls::ClientConnection::new(cfg, ServerName::try_from("localhost").unwrap()).unwrap();
        let mut c = Conn {
            tls: rustls::StreamOwned::new(conn, sock),
        };
        // Drive the handshake now, so a refused certificate shows here.
        while c.tls.conn.is_handshaking() {
            c.tls.conn.complete_io(&mut c.tls.sock)?;
        }
        Ok(c)
    }

    /// Sends raw bytes; reads one response message (None: the server closed).
    pub(crate) fn raw(&mut self, bytes: &[u8]) -> Option<Ttlv> {
        self.tls.write_all(bytes).ok()?;
        self.tls.flush().ok()?;
        let mut h = [0u8; 8];
        self.tls.read_exact(&mut h).ok()?;
        let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize;
        let mut buf = h.to_vec();
        buf.resize(8 + len, 0);
        self.tls.read_exact(&mut buf[8..]).ok()?;
        Some(Ttlv::decode(&buf, &Limits::default()).expect("server response decodes"))
    }

    pub(crate) fn call(&mut self, version: (i32, i32), items: Vec<(u32, Vec<Ttlv>)>) -> Vec<Ttlv> {
        let resp = self
            .raw(&request(version, items).encode())
            .expect("a response");
        resp.children(t::BATCH_ITEM).cloned().collect()
    }

    pub(crate) fn one(&mut self, version: (i32, i32), operation: u32, payload: Vec<Ttlv>) -> Ttlv {
        self.call(version, vec![(operation, payload)]).remove(0)
    }
}

pub(crate) fn request(version: (i32, i32), items: Vec<(u32, Vec<Ttlv>)>) -> Ttlv {
    keyhold_kmip::message::request(Version::new(version.0, version.1), items)
}

pub(crate) fn status(item: &Ttlv) -> (u32, Option<u32>, String) {
    let e = |tag| match item.child(tag).map(|c| &c.value) {
        Some(Value::Enumeration(v)) => Some(*v),
        _ => None,
    };
    let msg = match item.child(t::RESULT_MESSAGE).map(|c| &c.value) {
        Some(Value::TextString(s)) => s.clone(),
        _ => String::new(),
    };
    (e(t::RESULT_STATUS).unwrap(), e(t::RESULT_REASON), msg)
}

pub(crate) fn ok(item: &Ttlv) -> &Ttlv {
    let (s, r, m) = status(item);
    assert_eq!(s, 0, "operation failed: reason {r:?}: {m}");
    item.child(t::RESPONSE_PAYLOAD).expect("payload")
}

pub(crate) fn failed(item: &Ttlv, reason: u32) -> String {
    let (s, r, m) = status(item);
    assert_eq!((s, r), (1, Some(reason)), "unexpected result: {m}");
    m
}

pub(crate) fn uid_of(payload: &Ttlv) -> String {
    match &payload.child(t::UNIQUE_IDENTIFIER).unwrap().value {
        Value::TextString(s) => s.clone(),
        v => panic!("uid is {v:?}"),
    }
}

pub(crate) fn attr(name: &str, value: Ttlv) -> Ttlv {
    Ttlv::structure(
        t::ATTRIBUTE,
        vec![
            Ttlv::text(t::ATTRIBUTE_NAME, name),
            Ttlv::new(t::ATTRIBUTE_VALUE, value.value),
        ],
    )
}

/// Create AES-256 in KMIP 1.4 (extra attributes allowed).
pub(crate) fn create_aes(extra: Vec<Ttlv>) -> Vec<Ttlv> {
    let mut attrs = vec![
        attr("Cryptographic Algorithm", Ttlv::enumeration(0, 3)),
        attr("Cryptographic Length", Ttlv::int(0, 256)),
        attr("Cryptographic Usage Mask", Ttlv::int(0, 4 | 8)),
    ];
    attrs.extend(extra);
    vec![
        Ttlv::enumeration(t::OBJECT_TYPE, object_type::SYMMETRIC_KEY),
        Ttlv::structure(t::TEMPLATE_ATTRIBUTE, attrs),
    ]
}

pub(crate) fn uid(u: &str) -> Vec<Ttlv> {
    vec![Ttlv::text(t::UNIQUE_IDENTIFIER, u)]
}

/// The audit log holds `n` KMIP Gets of `uid`, all by `actor`, all refused.
pub(crate) fn assert_refused_gets_on_record(env: &Env, uid: &str, actor: &str, n: usize) {
    let recs = env.json(&[
        "audit",
        "query",
        "--frontend",
        "kmip",
        "--key",
        uid,
        "--operation",
        "Get",
    ]);
    let recs = recs.as_array().unwrap();
    assert_eq!(recs.len(), n, "{recs:?}");
    assert!(recs
        .iter()
        .all(|r| r["actor"] == actor && r["result"] != "OK"));
}

pub(crate) fn name_attr(n: &str) -> Ttlv {
    Ttlv::structure(
        t::ATTRIBUTE,
        vec![
            Ttlv::text(t::ATTRIBUTE_NAME, "Name"),
            Ttlv::structure(
                t::ATTRIBUTE_VALUE,
                vec![
                    Ttlv::text(t::NAME_VALUE, n),
                    Ttlv::enumeration(t::NAME_TYPE, 1),
                ],
            ),
        ],
    )
}

pub(crate) fn uids(payload: &Ttlv) -> Vec<String> {
    payload
        .children(t::UNIQUE_IDENTIFIER)
        .map(|u| match &u.value {
            Value::TextString(s) => s.clone(),
            v => panic!("{v:?}"),
        })
        .collect()
}

pub(crate) fn state_of(c: &mut Conn, version: (i32, i32), u: &str) -> u32 {
    let mut p = uid(u);
    p.push(Ttlv::text(t::ATTRIBUTE_NAME, "State"));
    let r = c.one(version, op::GET_ATTRIBUTES, p);
    let a = ok(&r).child(t::ATTRIBUTE).expect("State attribute");
    match a.child(t::ATTRIBUTE_VALUE).map(|v| &v.value) {
        Some(Value::Enumeration(s)) => *s,
        v => panic!("{v:?}"),
    }
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
