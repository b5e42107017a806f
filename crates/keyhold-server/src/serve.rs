//! The listener: accept loop, TLS handshake, HTTP/1.1 and HTTP/2, graceful
//! shutdown, and the background task that notices configuration changes
//! (keys, stores, credentials) made by the admin CLI.

use crate::config::Config;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use keyhold_service::KeyService;
use keyhold_xks::{XksApi, XksConfig};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How often the server checks storage for changes made elsewhere.
pub const REFRESH_INTERVAL: Duration = Duration::from_millis(20);
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot open the audit log: {0}")]
    Audit(String),
    #[error("KMIP: {0}")]
    Kmip(String),
    #[error("{0}")]
    Nodes(String),
    #[error("FIPS mode: {0}")]
    Fips(String),
}

/// In FIPS mode: the module must report FIPS mode (its self-tests passed)
/// and the configuration must not ask for what FIPS mode does not allow.
fn fips_start(config: &Config) -> Result<(), ServeError> {
    let status = keyhold_crypto::fips::status();
    tracing::info!(
        fips_build = status.build,
        module_fips_mode = status.module_fips_mode,
        "{}",
        status.line()
    );
    keyhold_crypto::fips::startup_check().map_err(ServeError::Fips)?;
    if keyhold_crypto::fips::enabled() && config.insecure_http {
        return Err(ServeError::Fips(
            "insecure_http serves the XKS API without TLS; FIPS mode serves it over TLS only"
                .into(),
        ));
    }
    Ok(())
}

fn xks_config(c: &Config) -> XksConfig {
    let mut x = XksConfig::default();
    if let Some(b) = c.xks.max_body_bytes {
        x.body.max_bytes = b;
    }
    if let Some(f) = c.xks.fleet_size {
        x.fleet_size = f;
    }
    if let Some(v) = &c.xks.vendor {
        x.vendor = v.clone();
    }
    x.store_quota_rps = c.xks.store_quota_rps;
    if let Some(t) = c.xks.hsm_timeout_ms {
        x.hsm_timeout = std::time::Duration::from_millis(t.max(1));
    }
    x.body.deadline = c.xks.request_timeout();
    if let Some(mb) = c.xks.body_pool_mb {
        x.body.pool = Arc::new(keyhold_xks::body::BytePool::new(mb << 20));
    }
    x
}

/// Starts the periodic cache refresh on its own thread (it does blocking
/// storage I/O). After each refresh that saw a change, the break-glass epoch
/// is acknowledged (see [`crate::presence`]); scheduled key tasks (rotation,
/// destruction) run every [`DUE_INTERVAL`]. It stops when the service is
/// dropped elsewhere.
fn spawn_refresher(
    service: &Arc<KeyService>,
    presence: Option<Arc<crate::presence::Presence>>,
    destroyed_retention_days: u64,
) {
    let weak = Arc::downgrade(service);
    std::thread::Builder::new()
        .name("keyhold-refresh".into())
        .spawn(move || {
            let mut last_due = std::time::Instant::now();
            // The first purge comes one interval after start.
            let mut last_purge = std::time::Instant::now();
            // The first pass acknowledges what is in force at start.
            let mut changed = true;
            loop {
                let Some(s) = weak.upgrade() else { return };
                if changed {
                    if let (Some(p), Ok(epoch)) = (&presence, s.epoch()) {
                        p.ack(epoch);
                    }
                }
                if last_due.elapsed() >= DUE_INTERVAL {
                    last_due = std::time::Instant::now();
                    match s.run_due() {
                        Ok(r) if r.destroyed.len() + r.rotated.len() > 0 => {
                            tracing::info!(
                                destroyed = r.destroyed.len(),
                                rotated = r.rotated.len(),
                                "scheduled key tasks done"
                            );
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "cannot run scheduled key tasks"),
                    }
                    if destroyed_retention_days > 0 && last_purge.elapsed() >= PURGE_INTERVAL {
                        last_purge = std::time::Instant::now();
                        let keep = i64::try_from(destroyed_retention_days)
                            .unwrap_or(i64::MAX / 86_400)
                            .saturating_mul(86_400);
                        match s.purge_destroyed_objects(keep) {
                            Ok(p) if !p.is_empty() => tracing::info!(
                                purged = p.len(),
                                retention_days = destroyed_retention_days,
                                "destroyed KMIP objects past their retention purged"
                            ),
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot purge destroyed KMIP objects")
                            }
                        }
                    }
                }
                drop(s);
                std::thread::sleep(REFRESH_INTERVAL);
                let Some(s) = weak.upgrade() else { return };
                changed = match s.refresh() {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot check storage for changes");
                        false
                    }
                };
            }
        })
        .expect("spawn refresh thread");
}

/// `cfg`, once FIPS mode has checked it is FIPS-compliant (every listener's
/// configuration goes through here).
fn fips_checked(
    what: &str,
    cfg: Arc<rustls::ServerConfig>,
) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    keyhold_crypto::fips::check_tls(what, cfg.fips())
        .map_err(|e| ServeError::Tls(crate::tls::TlsError::Config(e)))?;
    Ok(cfg)
}

/// The KMIP listener's TLS: the server certificate, and client
/// certificates required from the KMIP client CA.
fn kmip_tls(
    config: &Config,
    service: &Arc<KeyService>,
    certs: Arc<crate::tls::CertSource>,
) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    let k = &config.kmip;
    let ca = k.client_ca.clone().unwrap_or_else(|| {
        config
            .data_dir
            .join(crate::config::KMIP_CA_DIR)
            .join("ca.pem")
    });
    let mut roots = rustls::RootCertStore::empty();
    for c in crate::tls::load_certs(&ca).map_err(|e| {
        ServeError::Kmip(format!(
            "{e} (make one with `keyhold kmip client-cert issue NAME`, or set kmip.client_ca)"
        ))
    })? {
        roots
            .add(c)
            .map_err(|e| ServeError::Kmip(format!("KMIP client CA {}: {e}", ca.display())))?;
    }
    keyhold_kmip::server::tls_config(
        Arc::new(keyhold_crypto::fips::tls_provider()),
        certs,
        roots,
        {
            // Revocations reach every server through storage; the check
            // reads this server's copy (no storage call in a handshake).
            let weak = Arc::downgrade(service);
            Arc::new(move |serial: &str| weak.upgrade().is_some_and(|s| s.is_cert_revoked(serial)))
        },
    )
    .map_err(ServeError::Kmip)
    .and_then(|c| fips_checked("the KMIP listener", c))
}

/// How often scheduled key tasks are looked for.
pub const DUE_INTERVAL: Duration = Duration::from_secs(10);
/// How often destroyed KMIP objects past their retention are purged.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(3600);

/// How often certificate files are looked at for changes (SIGHUP: at once).
pub const CERT_RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// The certificate sources of the listeners: the `[tls]` pair (XKS, admin
/// API, and KMIP unless it has its own), and KMIP's own pair if set.
/// (the `[tls]` pair, the pair KMIP uses)
type CertSources = (
    Option<Arc<crate::tls::CertSource>>,
    Option<Arc<crate::tls::CertSource>>,
);

fn cert_sources(config: &Config) -> Result<CertSources, ServeError> {
    let main = match (&config.tls.cert, &config.tls.key) {
        (Some(c), Some(k)) => Some(crate::tls::CertSource::load(c, k)?),
        _ => None,
    };
    let kmip = match (&config.kmip.cert, &config.kmip.key) {
        (Some(c), Some(k)) if Some(c) != config.tls.cert.as_ref() => {
            Some(crate::tls::CertSource::load(c, k).map_err(|e| ServeError::Kmip(e.to_string()))?)
        }
        _ => main.clone(),
    };
    Ok((main, kmip))
}

/// Reads the certificate files again when they change, and at once on
/// SIGHUP: each new handshake then gets the new pair, connections already
/// open keep theirs. A pair that does not load is reported and the old one
/// kept (a renewal tool writing the certificate before the key, say).
fn spawn_cert_reloader(sources: Vec<Arc<crate::tls::CertSource>>) {
    tokio::spawn(async move {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "no SIGHUP handler: certificates reload on change only");
                None
            }
        };
        let mut tick = tokio::time::interval(CERT_RELOAD_INTERVAL);
        loop {
            let force = tokio::select! {
                _ = tick.tick() => false,
                Some(()) = async { match &mut hup { Some(h) => h.recv().await, None => None } } => true,
            };
            for s in &sources {
                match s.reload_if_changed(force) {
                    Ok(true) => {
                        tracing::info!(cert = %s.cert_path().display(), "TLS certificate reloaded")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "TLS certificate not reloaded: the previous one stays in use")
                    }
                }
            }
        }
    });
}

/// Binds a listener (XKS, metrics, admin, KMIP); port 0 picks a free one,
/// and the address really bound comes back.
async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ServeError> {
    let bind_err = |source| ServeError::Bind { addr, source };
    let l = TcpListener::bind(addr).await.map_err(bind_err)?;
    let bound = l.local_addr().map_err(bind_err)?;
    Ok((l, bound))
}

/// Serves until `shutdown` completes, then drains connections.
/// `on_listening` is called with the bound address (port 0 picks a free one).
pub async fn serve(
    config: &Config,
    service: Arc<KeyService>,
    admin: Option<Arc<dyn crate::admin_api::AdminExecutor>>,
    on_listening: impl FnOnce(SocketAddr, bool),
    also_bound: impl Fn(&'static str, SocketAddr),
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    fips_start(config)?;
    let (main_certs, kmip_certs) = cert_sources(config)?;
    let tls = xks_tls(config, &main_certs, &kmip_certs)?;
    let (listener, addr) = bind(config.listen).await?;
    let presence = join_nodes(config, &service)?;
    let mut xks = xks_config(config);
    if config.xks.fleet_size.is_none() {
        xks.live_fleet = presence.as_ref().and_then(|p| p.fleet());
    }
    spawn_refresher(
        &service,
        presence.clone(),
        config.kmip.destroyed_retention_days,
    );
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut listeners = vec![("xks".to_owned(), format!("{scheme}://{addr}"))];
    let api = XksApi::new(service.clone(), xks);
    start_audit(config, &service)?;
    let api = Arc::new(api);
    let builder = Arc::new(xks_http(config));
    let limits = xks_conn_limits(config);
    let conns = crate::conn::ConnLimiter::new(limits);
    let graceful = GracefulShutdown::new();
    tracing::info!(%addr, tls = tls.is_some(), mtls = config.tls.client_ca.is_some(), "keyhold listening");
    on_listening(addr, tls.is_some());
    if let Some(maddr) = config.metrics.listen {
        let (l, bound) = bind(maddr).await?;
        tracing::info!(addr = %bound, "metrics on http://{bound}/metrics");
        also_bound("metrics", bound);
        listeners.push(("metrics".into(), format!("http://{bound}/metrics")));
        tokio::spawn(crate::metrics::serve_metrics(
            l,
            api.clone(),
            service.clone(),
            config.metrics.require_token,
            conns.clone(),
        ));
    }
    if let (Some(aaddr), Some(exec)) = (config.admin.listen, admin) {
        let (name, bound, url) =
            start_admin(config, aaddr, &service, exec, tls.is_some(), &main_certs).await?;
        also_bound(name, bound);
        listeners.push((name.into(), url));
    }
    if let Some(kaddr) = config.kmip.listen {
        let certs = kmip_certs.clone().expect("validated");
        let (name, bound) = start_kmip(config, kaddr, &service, certs).await?;
        also_bound(name, bound);
        listeners.push((name.into(), bound.to_string()));
    }
    if let Some(zaddr) = config.azure_ekm.listen {
        let (name, bound) = start_azure(config, zaddr, &service, &main_certs).await?;
        also_bound(name, bound);
        listeners.push((name.into(), format!("https://{bound}")));
    }
    if let Some(haddr) = config.hyok.listen {
        let (name, bound) = start_hyok(config, haddr, &service, &main_certs).await?;
        also_bound(name, bound);
        listeners.push((name.into(), format!("https://{bound}")));
    }
    if let Some(p) = &presence {
        p.set_listeners(listeners);
    }

    let conn = XksConnection {
        api,
        builder,
        tls,
        idle: limits.idle,
    };
    accept_until(&listener, &conns, &conn, &graceful, shutdown).await;
    drop(listener);
    if let Some(p) = &presence {
        p.deregister();
    }
    tracing::info!("shutting down: draining connections");
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the grace period");
    }
    Ok(())
}

/// The XKS listener's TLS (none with `insecure_http`), and the reloader
/// of every certificate on SIGHUP and on change.
fn xks_tls(
    config: &Config,
    main_certs: &Option<Arc<crate::tls::CertSource>>,
    kmip_certs: &Option<Arc<crate::tls::CertSource>>,
) -> Result<Option<tokio_rustls::TlsAcceptor>, ServeError> {
    let tls = if config.insecure_http {
        tracing::warn!("serving plain HTTP (insecure_http): for local testing only");
        None
    } else {
        Some(tokio_rustls::TlsAcceptor::from(fips_checked(
            "the XKS listener",
            crate::tls::server_config(
                main_certs.clone().expect("validated"),
                config.tls.client_ca.as_deref(),
                config.tls.client_subject.as_deref(),
            )?,
        )?))
    };
    let mut all: Vec<_> = main_certs.iter().cloned().collect();
    if let Some(k) = kmip_certs {
        if !all.iter().any(|m| Arc::ptr_eq(m, k)) {
            all.push(k.clone());
        }
    }
    spawn_cert_reloader(all);
    Ok(tls)
}

/// Registers this server with the data directory (or the shared
/// database's node list, under a lease).
fn join_nodes(
    config: &Config,
    service: &Arc<KeyService>,
) -> Result<Option<Arc<crate::presence::Presence>>, ServeError> {
    match crate::presence::Presence::register(
        &config.data_dir,
        &service.nodes(),
        config.storage.lease(),
    ) {
        Ok(p) => {
            // On shared storage, cached keys serve only under the lease.
            if let Some(until) = p.lease_until() {
                service.set_lease(until);
            }
            Ok(Some(Arc::new(p)))
        }
        // On shared storage a node that is not in the node list would
        // serve outside every lease and break-glass wait: it does not start.
        Err(e) if service.shared_storage() => Err(ServeError::Nodes(format!(
            "cannot join the database's node list ({e}): not starting, since break glass could not reach this node"
        ))),
        Err(e) => {
            tracing::warn!(error = %e, "cannot register with the data directory; break-glass commands will not wait for this server");
            Ok(None)
        }
    }
}

/// Opens the audit log and attaches it to the key service's broker (and
/// ships it to the shared database on several nodes).
fn start_audit(config: &Config, service: &Arc<KeyService>) -> Result<(), ServeError> {
    if !config.audit.enabled {
        tracing::warn!("the audit log is off (audit.enabled = false): key use is not recorded");
        return Ok(());
    }
    let node = crate::data_dir::DataDir::new(config.data_dir.clone())
        .node_name(service.shared_storage())
        .map_err(|e| ServeError::Audit(e.to_string()))?;
    let log = crate::audit::start_server_log(service, &config.audit, node.as_deref())
        .map_err(|e| ServeError::Audit(e.to_string()))?;
    if let Some(n) = node {
        crate::audit::spawn_shipper(service, config.audit.dir.clone(), n);
    }
    if !service.audit().attach(log) {
        tracing::warn!("the key service records into the audit log it already had");
    }
    Ok(())
}

/// The XKS listener's HTTP settings. What one client can hold before it
/// authenticates: headers within the request deadline (the body's is the
/// XKS API's; HTTP/1.1 keep-alive waits for the next request under it
/// too), an 8 KiB read buffer (measured by scripts/dos.sh: 64 KiB let
/// 1,000 slow clients pin about 100 MiB more), few streams and small
/// flow-control windows on HTTP/2, and header blocks of sane size.
fn xks_http(config: &Config) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.xks.request_timeout())
        .max_buf_size(8 * 1024)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(config.xks.http2_max_streams.unwrap_or(32).max(1))
        .initial_stream_window_size(64 * 1024)
        .initial_connection_window_size(256 * 1024)
        .max_header_list_size(64 * 1024)
        .max_send_buf_size(64 * 1024);
    builder
}

/// The XKS listener's connection limits, within the open-file limit
/// (raised as far as allowed), keeping descriptors for the database, the
/// audit log and the other listeners.
fn xks_conn_limits(config: &Config) -> crate::conn::ConnLimits {
    let nofile = crate::conn::raise_open_file_limit();
    let mut limits = config.xks.conn_limits();
    if let Some(n) = nofile {
        let room = (n as usize).saturating_sub(256).max(64);
        if limits.max_connections > room {
            tracing::warn!(
                configured = limits.max_connections,
                open_file_limit = n,
                "xks.max_connections lowered to fit the open-file limit (raise LimitNOFILE)"
            );
            limits.max_connections = room;
        }
    }
    limits
}

/// Starts the admin API's listener: (name, address, URL).
async fn start_admin(
    config: &Config,
    addr: SocketAddr,
    service: &Arc<KeyService>,
    exec: Arc<dyn crate::admin_api::AdminExecutor>,
    tls: bool,
    main_certs: &Option<Arc<crate::tls::CertSource>>,
) -> Result<(&'static str, SocketAddr, String), ServeError> {
    let (l, bound) = bind(addr).await?;
    let admin_tls = if tls {
        let mut cfg =
            (*crate::tls::server_config(main_certs.clone().expect("validated"), None, None)?)
                .clone();
        // The admin API speaks HTTP/1.1 only.
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Some(tokio_rustls::TlsAcceptor::from(fips_checked(
            "the admin listener",
            Arc::new(cfg),
        )?))
    } else {
        None
    };
    tracing::info!(addr = %bound, tls = admin_tls.is_some(), "admin API listening");
    let scheme = if admin_tls.is_some() { "https" } else { "http" };
    let idle = config
        .admin
        .console_idle_timeout_s
        .map_or(crate::console::session::IDLE, |s| {
            std::time::Duration::from_secs(s.max(1))
        });
    tokio::spawn(crate::admin_api::serve_admin(
        l,
        admin_tls,
        service.clone(),
        exec,
        config.data_dir.clone(),
        idle,
    ));
    Ok(("admin", bound, format!("{scheme}://{bound}")))
}

/// Starts the Azure EKM listener (TLS 1.3; client certificates checked
/// against the key stores' bindings).
async fn start_azure(
    config: &Config,
    addr: SocketAddr,
    service: &Arc<KeyService>,
    main_certs: &Option<Arc<crate::tls::CertSource>>,
) -> Result<(&'static str, SocketAddr), ServeError> {
    let a = &config.azure_ekm;
    let certs = match (&a.cert, &a.key) {
        (Some(c), Some(k)) => {
            let s = crate::tls::CertSource::load(c, k)?;
            spawn_cert_reloader(vec![s.clone()]);
            s
        }
        _ => main_certs.clone().expect("validated"),
    };
    let trust = crate::azure::AzureTrust::new(service);
    let tls = tokio_rustls::TlsAcceptor::from(fips_checked(
        "the Azure EKM listener",
        crate::azure::server_config(certs, trust.clone())?,
    )?);
    let (l, bound) = bind(addr).await?;
    let mut ac = keyhold_azure::AzureConfig::default();
    if let Some(t) = a.hsm_timeout_ms {
        ac.hsm_timeout = Duration::from_millis(t.max(1));
    }
    if let Some(b) = a.max_body_bytes {
        ac.max_body_bytes = b.max(1024);
    }
    ac.body_deadline = config.xks.request_timeout();
    let api = Arc::new(keyhold_azure::AzureApi::new(service.clone(), ac, trust));
    let conns = crate::conn::ConnLimiter::new(config.xks.conn_limits());
    tracing::info!(addr = %bound, "Azure EKM proxy API listening (TLS 1.3, client certificates)");
    tokio::spawn(crate::azure::serve_azure(
        l,
        tls,
        api,
        conns,
        config.xks.request_timeout(),
    ));
    Ok(("azure-ekm", bound))
}

/// Starts the listener of Microsoft DKE (bearer tokens, no client
/// certificates).
async fn start_hyok(
    config: &Config,
    addr: SocketAddr,
    service: &Arc<KeyService>,
    main_certs: &Option<Arc<crate::tls::CertSource>>,
) -> Result<(&'static str, SocketAddr), ServeError> {
    let h = &config.hyok;
    let certs = match (&h.cert, &h.key) {
        (Some(c), Some(k)) => {
            let s = crate::tls::CertSource::load(c, k)?;
            spawn_cert_reloader(vec![s.clone()]);
            s
        }
        _ => main_certs.clone().expect("validated"),
    };
    let mut cfg = (*crate::tls::server_config(certs, None, None)?).clone();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tls =
        tokio_rustls::TlsAcceptor::from(fips_checked("the DKE and KACLS listener", Arc::new(cfg))?);
    let (l, bound) = bind(addr).await?;
    let mut dc = keyhold_dke::DkeConfig::default();
    if let Some(b) = h.max_body_bytes {
        dc.max_body_bytes = b.max(1024);
    }
    dc.body_deadline = config.xks.request_timeout();
    if let Some(t) = config.xks.hsm_timeout_ms {
        dc.hsm_timeout = Duration::from_millis(t.max(1));
    }
    let verifier = Arc::new(keyhold_identity::Verifier::default());
    let cc = keyhold_cse::CseConfig {
        body_deadline: dc.body_deadline,
        hsm_timeout: dc.hsm_timeout,
        ..keyhold_cse::CseConfig::default()
    };
    let apis = Arc::new(crate::hyok::HyokApis {
        dke: Arc::new(keyhold_dke::DkeApi::new(
            service.clone(),
            dc,
            verifier.clone(),
        )),
        cse: Arc::new(keyhold_cse::CseApi::new(service.clone(), cc, verifier)),
    });
    let conns = crate::conn::ConnLimiter::new(config.xks.conn_limits());
    tracing::info!(addr = %bound, "hold-your-own-key listener (Microsoft DKE, Google Workspace CSE)");
    tokio::spawn(crate::hyok::serve_hyok(
        l,
        tls,
        apis,
        conns,
        config.xks.request_timeout(),
    ));
    Ok(("hyok", bound))
}

/// Starts the KMIP listener (mutual TLS), its counters shown by `kmip status`.
async fn start_kmip(
    config: &Config,
    addr: SocketAddr,
    service: &Arc<KeyService>,
    certs: Arc<crate::tls::CertSource>,
) -> Result<(&'static str, SocketAddr), ServeError> {
    let tls = kmip_tls(config, service, certs)?;
    let (l, bound) = bind(addr).await?;
    let mut kmip = keyhold_kmip::Kmip::new(service.clone());
    if let Some(m) = config.kmip.max_message_bytes {
        kmip = kmip.with_max_message(m);
    }
    tracing::info!(addr = %bound, "KMIP listening (mutual TLS)");
    let stats = Arc::new(keyhold_kmip::server::ListenerStats::default());
    let seen = stats.clone();
    service.register_live(
        "kmip",
        Box::new(move || {
            let s = seen.snapshot();
            serde_json::json!({
                "listen": bound.to_string(),
                "connections_open": s.connections_open,
                "connections_total": s.connections_total,
                "handshakes_refused": s.handshakes_refused,
                "messages": s.messages,
                "clients": s.clients.iter().map(|(id, c)| serde_json::json!({
                    "identity": id,
                    "connections_open": c.open,
                    "connections": c.connections,
                    "messages": c.messages,
                    "last_seen": keyhold_core::time::format_rfc3339(c.last_seen_ms / 1000),
                })).collect::<Vec<_>>(),
            })
        }),
    );
    tokio::spawn(keyhold_kmip::server::serve(l, tls, Arc::new(kmip), stats));
    Ok(("kmip", bound))
}

/// Accepts XKS connections (within the connection limits) until `shutdown`.
async fn accept_until(
    listener: &TcpListener,
    conns: &Arc<crate::conn::ConnLimiter>,
    conn: &XksConnection,
    graceful: &GracefulShutdown,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        // Over a cap: closed at once, before any TLS work.
        let Some(slot) = conns.admit(peer.ip()) else {
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(conn.clone().serve(tcp, peer, slot, graceful.watcher()));
    }
}

/// What serving one XKS connection needs.
#[derive(Clone)]
struct XksConnection {
    api: Arc<XksApi>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    idle: Duration,
}

impl XksConnection {
    /// Serves one accepted connection: TLS within its deadline, then HTTP
    /// until it closes, goes idle, or the server shuts down.
    async fn serve(
        self,
        tcp: tokio::net::TcpStream,
        peer: SocketAddr,
        slot: crate::conn::ConnSlot,
        watcher: hyper_util::server::graceful::Watcher,
    ) {
        let _slot = slot;
        let activity = crate::conn::Activity::new();
        let tcp = crate::conn::Watched::new(tcp, activity.clone());
        let api = self.api;
        let svc = service_fn(move |req| {
            let api = api.clone();
            async move { Ok::<_, Infallible>(api.handle(req).await) }
        });
        match self.tls {
            Some(acceptor) => {
                let stream =
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::info!(%peer, error = %e, "TLS handshake refused");
                            return;
                        }
                        Err(_) => {
                            tracing::info!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                let conn = self.builder.serve_connection(TokioIo::new(stream), svc);
                tokio::select! {
                    _ = watcher.watch(conn.into_owned()) => {}
                    _ = activity.idle_for(self.idle) => {}
                }
            }
            None => {
                let conn = self.builder.serve_connection(TokioIo::new(tcp), svc);
                tokio::select! {
                    _ = watcher.watch(conn.into_owned()) => {}
                    _ = activity.idle_for(self.idle) => {}
                }
            }
        }
    }
}
