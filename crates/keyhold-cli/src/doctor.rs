//! `keyhold doctor`: what can be checked from this machine before AWS KMS
//! is pointed at Keyhold, each finding with what to do about it.
//!
//! - the server's certificate: chain (against the system's CAs, or
//!   `--trust`), names (the public name), expiry, key;
//! - how it listens (AWS KMS connects to port 443, over IPv4 only);
//! - the clock (SigV4 allows five minutes);
//! - every key store, called as AWS KMS calls it: GetHealthStatus signed
//!   with the store's own credential, over TLS to the running server with
//!   the public name as SNI and Host, the certificate checked for that name.

use crate::cmdio::outln;
use crate::local::{e, CommandEnv};
use crate::output;
use keyhold_server::config::Config;
use keyhold_server::data_dir::DataDir;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::json;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where Debian keeps the system's trusted CAs.
const SYSTEM_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(clap::Args, Debug)]
pub(crate) struct DoctorArgs {
    /// The name AWS KMS will connect to (the external key store's proxy
    /// URI endpoint, without https://). Default: the certificate's first name.
    #[arg(long)]
    public_name: Option<String>,
    /// Check the certificate chain against these CAs (PEM) instead of the
    /// system's: for testing (AWS KMS trusts only public CAs).
    #[arg(long)]
    trust: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Level {
    Ok,
    Warn,
    Fail,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        }
    }
}

/// One finding: what was checked, its level, what was seen, what to do.
struct Finding {
    check: String,
    level: Level,
    seen: String,
    fix: Option<String>,
}

#[derive(Default)]
struct Report(Vec<Finding>);

impl Report {
    fn add(&mut self, check: &str, level: Level, seen: impl Into<String>, fix: Option<&str>) {
        self.0.push(Finding {
            check: check.to_owned(),
            level,
            seen: seen.into(),
            fix: fix.map(str::to_owned),
        });
    }
    fn ok(&mut self, check: &str, seen: impl Into<String>) {
        self.add(check, Level::Ok, seen, None);
    }
    fn worst(&self) -> Level {
        self.0.iter().map(|f| f.level).max().unwrap_or(Level::Ok)
    }
}

pub(crate) fn run(ctx: &CommandEnv, dd: &DataDir, args: &DoctorArgs) -> Result<(), String> {
    let mut r = Report::default();
    let config = Config::load(&dd.config()).map_err(e)?;
    let roots = load_roots(args.trust.as_deref().unwrap_or(Path::new(SYSTEM_CAS)))?;
    let name = check_certificate(&mut r, &config, args.public_name.as_deref(), &roots);
    check_listen(&mut r, &config);
    check_clock(&mut r);
    check_integrity(&mut r, ctx);
    check_stores(&mut r, ctx, dd, &config, name.as_deref(), &roots);
    print(ctx, &r);
    match r.worst() {
        Level::Fail => Err("some checks failed: see above".into()),
        _ => Ok(()),
    }
}

fn print(ctx: &CommandEnv, r: &Report) {
    if ctx.json {
        output::json(&json!(r
            .0
            .iter()
            .map(|f| json!({
                "check": f.check, "status": f.level.as_str(), "seen": f.seen, "fix": f.fix,
            }))
            .collect::<Vec<_>>()));
        return;
    }
    for f in &r.0 {
        outln!("[{:>4}] {}: {}", f.level.as_str(), f.check, f.seen);
        if let Some(fix) = &f.fix {
            outln!("       -> {fix}");
        }
    }
    let (w, x) = (
        r.0.iter().filter(|f| f.level == Level::Warn).count(),
        r.0.iter().filter(|f| f.level == Level::Fail).count(),
    );
    outln!("{} checks: {x} failed, {w} warnings", r.0.len());
}

fn load_roots(path: &Path) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|err| format!("cannot read the trusted CAs in {}: {err}", path.display()))?;
    for c in certs.flatten() {
        let _ = roots.add(c);
    }
    if roots.is_empty() {
        return Err(format!("no CA certificate in {}", path.display()));
    }
    Ok(roots)
}

fn verifier(
    roots: &rustls::RootCertStore,
) -> Result<Arc<rustls::client::WebPkiServerVerifier>, String> {
    rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots.clone()),
        Arc::new(keyhold_crypto::fips::tls_provider()),
    )
    .build()
    .map_err(e)
}

/// Checks the `[tls]` certificate; returns the name to call the server by.
fn check_certificate(
    r: &mut Report,
    config: &Config,
    public_name: Option<&str>,
    roots: &rustls::RootCertStore,
) -> Option<String> {
    const C: &str = "certificate";
    let chain = load_chain(r, config)?;
    let Ok((_, leaf)) = x509_parser::parse_x509_certificate(chain[0].as_ref()) else {
        r.add(C, Level::Fail, "the certificate does not parse", None);
        return None;
    };
    let names = dns_names(&leaf);
    let issuer = leaf.issuer().to_string();
    check_validity(r, &leaf);
    let name = public_name
        .map(str::to_owned)
        .or_else(|| names.first().cloned());
    let Some(name) = name else {
        r.add(
            "public name",
            Level::Fail,
            "the certificate names no DNS name",
            Some("get a certificate for the name AWS KMS will call (--public-name)"),
        );
        return None;
    };
    if issuer.contains("Keyhold local CA") {
        r.add(
            "certificate issuer",
            Level::Fail,
            format!("issued by Keyhold's own local CA ({issuer})"),
            Some("AWS KMS trusts public CAs only: get a certificate for the public name from one (the XKS specification lists them)"),
        );
    }
    check_chain(r, &chain, &name, &issuer, roots);
    Some(name)
}

/// The certificate chain the XKS listener serves, if it loads and goes
/// with its key (each failure reported).
fn load_chain(r: &mut Report, config: &Config) -> Option<Vec<CertificateDer<'static>>> {
    const C: &str = "certificate";
    if config.insecure_http {
        r.add(
            C,
            Level::Fail,
            "the server speaks plain HTTP (insecure_http)",
            Some("AWS KMS calls HTTPS only: remove insecure_http and set [tls] cert and key"),
        );
        return None;
    }
    let (Some(cert), Some(key)) = (&config.tls.cert, &config.tls.key) else {
        r.add(
            C,
            Level::Fail,
            "no [tls] cert and key",
            Some("set them in keyhold.toml"),
        );
        return None;
    };
    if let Err(err) = keyhold_server::tls::CertSource::load(cert, key) {
        r.add(
            C,
            Level::Fail,
            err.to_string(),
            Some("give the certificate chain and its own key"),
        );
        return None;
    }
    match keyhold_server::tls::load_certs(cert) {
        Ok(c) => Some(c),
        Err(err) => {
            r.add(C, Level::Fail, err.to_string(), None);
            None
        }
    }
}

/// The DNS names in a certificate's subject alternative names.
fn dns_names(leaf: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    leaf.subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Reports the certificate's validity dates against the clock.
fn check_validity(r: &mut Report, leaf: &x509_parser::certificate::X509Certificate<'_>) {
    const C: &str = "certificate";
    let now = keyhold_core::now();
    let not_after = leaf.validity().not_after.timestamp();
    let days_left = (not_after - now) / 86_400;
    if not_after <= now {
        r.add(
            C,
            Level::Fail,
            format!("expired {}", output::time(not_after)),
            Some("renew it (Keyhold reloads it by itself)"),
        );
    } else if days_left < 30 {
        r.add(
            C,
            Level::Warn,
            format!("expires in {days_left} days ({})", output::time(not_after)),
            Some("renew it soon (Keyhold reloads it by itself)"),
        );
    } else {
        r.ok(
            C,
            format!("valid until {} ({days_left} days)", output::time(not_after)),
        );
    }
    if leaf.validity().not_before.timestamp() > now {
        r.add(
            C,
            Level::Fail,
            "not valid yet",
            Some("check the clock, or the certificate's dates"),
        );
    }
}

/// Checks the chain as a client that trusts `roots` does, for `name`.
fn check_chain(
    r: &mut Report,
    chain: &[CertificateDer<'static>],
    name: &str,
    issuer: &str,
    roots: &rustls::RootCertStore,
) {
    let intermediates = &chain[1..];
    let verified = ServerName::try_from(name.to_owned())
        .map_err(e)
        .and_then(|sn| {
            verifier(roots)?
                .verify_server_cert(&chain[0], intermediates, &sn, &[], UnixTime::now())
                .map_err(e)
        });
    match verified {
        Ok(_) => r.ok(
            "certificate chain",
            format!("trusted for {name} ({} certificate(s) in the file; issuer {issuer})", chain.len()),
        ),
        Err(err) => r.add(
            "certificate chain",
            Level::Fail,
            format!("not trusted for {name}: {err}"),
            Some("the file must hold the leaf then every intermediate, from a public CA, for this name"),
        ),
    }
}

fn check_listen(r: &mut Report, config: &Config) {
    let a = config.listen;
    if a.port() != 443 {
        r.add("listen", Level::Warn, format!("{a}: not port 443"), Some("AWS KMS connects to 443 only: listen on 443, or map 443 to this port at the load balancer"));
    } else {
        r.ok("listen", a.to_string());
    }
    if a.ip().is_loopback() {
        r.add(
            "listen address",
            Level::Warn,
            format!("{} is reachable from this machine only", a.ip()),
            Some("listen on 0.0.0.0 (or the interface AWS or your load balancer reaches)"),
        );
    }
    if a.is_ipv6() && !a.ip().is_unspecified() {
        r.add(
            "listen address",
            Level::Warn,
            "IPv6 only",
            Some("AWS KMS does not connect over IPv6: listen on an IPv4 address"),
        );
    }
    if config.tls.client_ca.is_some() {
        r.add("mutual TLS", Level::Warn, "on", Some("AWS's guide marks mutual TLS for external key stores deprecated; SigV4 authenticates each request"));
    }
}

/// Every stored row that grants or limits power verifies against its seal.
fn check_integrity(r: &mut Report, ctx: &CommandEnv) {
    match ctx.service.scan_integrity() {
        Ok(bad) if bad.is_empty() => r.ok("stored rows", "every row verifies"),
        Ok(bad) => r.add(
            "stored rows",
            Level::Fail,
            format!(
                "{} rows NOT GENUINE (changed outside Keyhold; refused): {}",
                bad.len(),
                bad.join(", ")
            ),
            Some("find who can write to the database; restore the rows from a backup or re-create them through Keyhold"),
        ),
        Err(err) => r.add(
            "stored rows",
            Level::Warn,
            format!("cannot check: {err}"),
            None,
        ),
    }
}

fn check_clock(r: &mut Report) {
    let out = std::process::Command::new("timedatectl")
        .args(["show", "-p", "NTPSynchronized", "--value"])
        .output();
    match out.ok().filter(|o| o.status.success()).map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()) {
        Some(v) if v == "yes" => r.ok("clock", "synchronised (NTP)"),
        Some(v) => r.add("clock", Level::Warn, format!("NTP synchronised: {v}"), Some("SigV4 refuses requests more than 5 minutes off: keep the clock synchronised (systemd-timesyncd, chrony)")),
        None => r.add("clock", Level::Warn, "cannot tell whether it is synchronised (no timedatectl)", Some("SigV4 refuses requests more than 5 minutes off: keep the clock synchronised")),
    }
}

fn check_stores(
    r: &mut Report,
    ctx: &CommandEnv,
    dd: &DataDir,
    config: &Config,
    name: Option<&str>,
    roots: &rustls::RootCertStore,
) {
    let servers = keyhold_server::presence::running_servers(&dd.path);
    let Some(addr) = servers.iter().find_map(|s| {
        s.listeners
            .iter()
            .find(|(what, _)| what == "xks")
            .and_then(|(_, url)| url.rsplit("://").next())
            .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
    }) else {
        r.add(
            "server",
            Level::Warn,
            "no server is running on this data directory",
            Some("start it (keyhold serve), then run doctor again to call every key store"),
        );
        return;
    };
    r.ok("server", format!("running, XKS on {addr}"));
    let Some(name) = name else { return };
    let stores = match ctx.service.list_stores() {
        Ok(s) => s,
        Err(err) => {
            r.add("key stores", Level::Fail, err.to_string(), None);
            return;
        }
    };
    if stores.is_empty() {
        r.add(
            "key stores",
            Level::Warn,
            "none",
            Some("keyhold store create /tenant-a, then keyhold store kms-config /tenant-a"),
        );
    }
    for s in stores {
        let check = format!("key store {}", s.prefix);
        if s.status != keyhold_core::Status::Enabled {
            r.add(
                &check,
                Level::Warn,
                "disabled",
                Some("keyhold store enable, when AWS may use it"),
            );
            continue;
        }
        let creds = ctx.service.list_credentials(&s.prefix).unwrap_or_default();
        let Some(akid) = creds.first().map(|c| c.access_key_id.clone()) else {
            r.add(&check, Level::Fail, "no SigV4 credential", Some("keyhold store kms-config PREFIX --output kms.json makes one and the file KMS imports"));
            continue;
        };
        match call_health(ctx, config, addr, name, roots, &s.prefix, &akid) {
            Ok(h) => r.ok(
                &check,
                format!("GetHealthStatus through {name} with credential {akid}: {h}"),
            ),
            Err(err) => r.add(
                &check,
                Level::Fail,
                err,
                Some("see the server's log and `keyhold audit query --store PREFIX`"),
            ),
        }
    }
}

/// GetHealthStatus for one store, as AWS KMS sends it: signed with the
/// store's credential, SNI and Host the public name, over TLS to `addr`.
fn call_health(
    ctx: &CommandEnv,
    config: &Config,
    addr: std::net::SocketAddr,
    name: &str,
    roots: &rustls::RootCertStore,
    prefix: &keyhold_core::StorePrefix,
    akid: &str,
) -> Result<String, String> {
    let entry = ctx
        .service
        .credential(akid)
        .map_err(e)?
        .ok_or("the credential vanished")?;
    let path = format!(
        "{}/kms/xks/v1/health",
        prefix.uri_path().trim_end_matches("/kms/xks/v1")
    );
    let body =
        br#"{"requestMetadata":{"kmsRequestId":"keyhold-doctor","kmsOperation":"KmsHealthCheck"}}"#;
    let signer = keyhold_xks::sigv4::Signer::new(
        akid,
        entry.secret.expose(),
        "us-east-1",
        keyhold_xks::sigv4::XKS_SERVICE,
    );
    let (date, auth) = signer.sign(
        "POST",
        name,
        &path,
        Some("application/json"),
        body,
        keyhold_core::now(),
    );
    let mut tls_cfg =
        rustls::ClientConfig::builder_with_provider(Arc::new(keyhold_crypto::fips::tls_provider()))
            .with_safe_default_protocol_versions()
            .map_err(e)?
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
    tls_cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    if config.tls.client_ca.is_some() {
        return Err("mutual TLS is on: AWS presents its own client certificate, which doctor does not have (the rest was checked)".into());
    }
    let sn = ServerName::try_from(name.to_owned()).map_err(e)?;
    let conn = rustls::ClientConnection::new(Arc::new(tls_cfg), sn).map_err(e)?;
    let tcp = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|err| format!("cannot connect to {addr}: {err}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(e)?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {name}\r\nContent-Type: application/json\r\nX-Amz-Date: {date}\r\nAuthorization: {auth}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(req.as_bytes())
        .and_then(|()| s.write_all(body))
        .map_err(|err| format!("TLS to {addr} as {name} failed: {err}"))?;
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp);
    let status = text.split(' ').nth(1).unwrap_or("");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!(
            "answered {status}: {}",
            body.chars().take(200).collect::<String>()
        ));
    }
    let v: serde_json::Value =
        serde_json::from_str(body).map_err(|err| format!("not JSON: {err}"))?;
    let health: Vec<String> = v["ekmFleetDetails"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| d["healthStatus"].as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .unwrap_or_default();
    if health.iter().any(|h| h != "ACTIVE") {
        return Err(format!(
            "answered 200 but the key manager is {}",
            health.join(", ")
        ));
    }
    Ok(format!("200, {}", health.join(", ")))
}
