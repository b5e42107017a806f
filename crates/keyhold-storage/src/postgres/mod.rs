//! The PostgreSQL backend: several Keyhold nodes on one database cluster.
//!
//! The [`Storage`] trait is synchronous; this backend runs `tokio-postgres`
//! on a small runtime of its own and waits for each call. Connections come
//! from a pool (broken ones are replaced, so a promoted replica behind a
//! multi-host URL with `target_session_attrs=read-write` is found again).
//!
//! Changes made by any node are announced with `NOTIFY` by triggers, which
//! PostgreSQL delivers only once the transaction committed; a listening
//! connection turns them into a new [`Backend::change_token`](crate::Backend::change_token). As a safety
//! net the token also moves every `cache_ttl`. While the database is
//! unreachable the token holds still (nodes keep serving what they have
//! cached) for at most `max_staleness`.

use crate::prelude::*;
use crate::seal::{
    self, key_ok, object_ok, store_ok, version_ok, RowSealer, SealedKey, SealedObject, VersionRow,
};
use crate::{
    now_ms, Cell, ChangeScope, NodeInfo, Snapshot, TableDump, VersionInfo, SNAPSHOT_TABLES,
};
use deadpool_postgres::GenericClient;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use keyhold_core::{
    now, AuditCheckpoint, Error, Key, KeyId, KeyState, KeyStore, KeyType, Lifecycle, ManagedObject,
    ObjectState, Result, Status, StorePrefix, StoredCredential, Timestamp, Usage, VersionFlag,
    WrappedItem, WrappedKeyVersion,
};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{AsyncMessage, Row};

type Sealer = Option<Arc<dyn RowSealer>>;
type Params = Vec<Box<dyn ToSql + Send + Sync>>;

macro_rules! params {
    ($($p:expr),* $(,)?) => {{
        let v: Params = vec![$(Box::new($p)),*];
        v
    }};
}

type Tls = tokio_postgres_rustls::MakeRustlsConnect;

/// Runs `$body` (an async block body returning `Result`) with a pooled
/// connection named `$c`, on the database runtime, and waits for it.
macro_rules! with_conn {
    ($s:expr, $c:ident => $body:block) => {{
        let pool = $s.pool.clone();
        let target = $s.target.clone();
        $s.block(async move {
            #[allow(unused_mut)]
            let mut $c = pool.get().await.map_err(|e| {
                Error::DependencyTimeout(format!("cannot reach the database {target}: {e}"))
            })?;
            $body
        })
    }};
}

mod changes;
mod keys;
mod maintenance;
mod meta;
mod objects;
mod rows;
mod schema;
mod sealing;
mod stores;
#[cfg(test)]
mod tests;

use changes::*;
use meta::*;
use rows::*;
use schema::*;

/// Settings of the PostgreSQL backend besides its URL.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connections in the pool.
    pub pool_size: usize,
    /// Longest wait for one storage call (connecting included).
    pub op_timeout: Duration,
    /// Caches are dropped at least this often, notifications or not.
    pub cache_ttl: Duration,
    /// While the database is unreachable, cached keys keep serving for at
    /// most this long (zero: not at all).
    pub max_staleness: Duration,
    /// PEM file of the CA that signed the database server's certificate:
    /// turns on TLS (verified) to the database.
    pub tls_ca: Option<PathBuf>,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            pool_size: 16,
            op_timeout: Duration::from_secs(5),
            cache_ttl: Duration::from_secs(60),
            max_staleness: Duration::from_secs(300),
            tls_ca: None,
        }
    }
}

/// Changes remembered for [`Backend::changes_since`](crate::Backend::changes_since); a node further behind
/// than this drops everything.
pub const CHANGE_LOG_LEN: usize = 4096;

/// PostgreSQL storage shared by several nodes.
pub struct PostgresStorage {
    rt: Option<tokio::runtime::Runtime>,
    pool: Pool,
    changes: Arc<Changes>,
    opts: PgOptions,
    /// Redacted URL, for messages.
    target: String,
    /// Seals rows written and checks rows read (see [`crate::seal`]).
    sealer: seal::SealerSlot,
}

fn tls_connector(ca: Option<&PathBuf>) -> Result<Tls> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).map_err(|e| {
            Error::invalid(
                "storage.tls_ca",
                format!("cannot read {}: {e}", ca.display()),
            )
        })?;
        for c in rustls_pemfile::certs(&mut pem.as_slice()) {
            let c = c.map_err(|e| Error::invalid("storage.tls_ca", e.to_string()))?;
            roots
                .add(c)
                .map_err(|e| Error::invalid("storage.tls_ca", e.to_string()))?;
        }
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(keyhold_crypto::fips::tls_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Internal(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    keyhold_crypto::fips::check_tls("the PostgreSQL client", config.fips())
        .map_err(Error::Internal)?;
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{}@{}", &url[..s + 3], user, &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

impl PostgresStorage {
    /// Connects to `url` (a libpq-style URL or key=value string, several
    /// hosts allowed), migrates the schema and starts listening for
    /// changes. Fails if the database cannot be reached within the
    /// operation timeout.
    pub fn connect(url: &str, opts: PgOptions) -> Result<Self> {
        let mut cfg: tokio_postgres::Config = url
            .parse()
            .map_err(|e| Error::invalid("storage.url", format!("{}: {e}", redact(url))))?;
        cfg.keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .connect_timeout(opts.op_timeout);
        if cfg.get_application_name().is_none() {
            cfg.application_name("keyhold");
        }
        if opts.tls_ca.is_some() && cfg.get_ssl_mode() == tokio_postgres::config::SslMode::Prefer {
            cfg.ssl_mode(tokio_postgres::config::SslMode::Require);
        }
        let tls = tls_connector(opts.tls_ca.as_ref())?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("keyhold-pg")
            .enable_all()
            .build()
            .map_err(|e| Error::Internal(format!("cannot start the database runtime: {e}")))?;
        let mgr = Manager::from_config(
            cfg.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(opts.pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(opts.op_timeout))
            .create_timeout(Some(opts.op_timeout))
            .build()
            .map_err(|e| Error::Internal(format!("database pool: {e}")))?;
        let changes = Arc::new(Changes::default());
        let s = Self {
            rt: Some(rt),
            pool,
            changes: changes.clone(),
            opts: opts.clone(),
            target: redact(url),
            sealer: seal::SealerSlot::default(),
        };
        s.migrate()?;
        let handle = s.runtime().handle().clone();
        handle.spawn(listen_loop(cfg, tls, changes.clone()));
        handle.spawn(tick_loop(changes, opts));
        Ok(s)
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().expect("runtime lives until drop")
    }

    /// Runs `f` on the database runtime and waits for it (at most the
    /// operation timeout). Safe to call from any thread, async ones too.
    fn block<T: Send + 'static>(
        &self,
        f: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let limit = self.opts.op_timeout;
        self.runtime().spawn(async move {
            let r = match tokio::time::timeout(limit, f).await {
                Ok(r) => r,
                Err(_) => Err(Error::DependencyTimeout(format!(
                    "the database did not answer within {} ms",
                    limit.as_millis()
                ))),
            };
            let _ = tx.send(r);
        });
        rx.recv_timeout(limit + Duration::from_secs(1))
            .unwrap_or_else(|_| {
                Err(Error::DependencyTimeout(
                    "the database did not answer".into(),
                ))
            })
    }

    fn migrate(&self) -> Result<()> {
        with_conn!(self, c => {
            let tx = c.transaction().await.map_err(pg_err)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await
                .map_err(pg_err)?;
            tx.batch_execute("CREATE TABLE IF NOT EXISTS keyhold_schema (version BIGINT NOT NULL)")
                .await
                .map_err(pg_err)?;
            let current: i64 = match tx
                .query_opt("SELECT version FROM keyhold_schema", &[])
                .await
                .map_err(pg_err)?
            {
                Some(r) => col(&r, 0)?,
                None => {
                    tx.execute("INSERT INTO keyhold_schema(version) VALUES (0)", &[])
                        .await
                        .map_err(pg_err)?;
                    0
                }
            };
            if current as usize > MIGRATIONS.len() {
                return Err(Error::Storage(format!(
                    "database schema version {current} is newer than this Keyhold ({})",
                    MIGRATIONS.len()
                )));
            }
            for (i, m) in MIGRATIONS.iter().enumerate().skip(current as usize) {
                tx.batch_execute(m).await.map_err(pg_err)?;
                tx.execute("UPDATE keyhold_schema SET version = $1", &[&((i + 1) as i64)])
                    .await
                    .map_err(pg_err)?;
            }
            tx.commit().await.map_err(pg_err)
        })
    }

    /// Runs one statement and returns the rows it changed.
    fn exec(&self, sql: &'static str, params: Vec<Box<dyn ToSql + Send + Sync>>) -> Result<u64> {
        with_conn!(self, c => {
            let st = c.prepare_cached(sql).await.map_err(pg_err)?;
            let p: Vec<&(dyn ToSql + Sync)> = params
                .iter()
                .map(|b| b.as_ref() as &(dyn ToSql + Sync))
                .collect();
            c.execute(&st, &p).await.map_err(pg_err)
        })
    }

    /// Runs one query and maps its rows.
    fn rows<T: Send + 'static>(
        &self,
        sql: String,
        params: Vec<Box<dyn ToSql + Send + Sync>>,
        map: fn(&Row) -> Result<T>,
    ) -> Result<Vec<T>> {
        with_conn!(self, c => {
            let st = c.prepare_cached(&sql).await.map_err(pg_err)?;
            let p: Vec<&(dyn ToSql + Sync)> = params
                .iter()
                .map(|b| b.as_ref() as &(dyn ToSql + Sync))
                .collect();
            c.query(&st, &p)
                .await
                .map_err(pg_err)?
                .iter()
                .map(map)
                .collect()
        })
    }

    /// The first row of [`Self::rows`], if any.
    fn row<T: Send + 'static>(
        &self,
        sql: String,
        params: Vec<Box<dyn ToSql + Send + Sync>>,
        map: fn(&Row) -> Result<T>,
    ) -> Result<Option<T>> {
        Ok(self.rows(sql, params, map)?.into_iter().next())
    }
}

impl Drop for PostgresStorage {
    fn drop(&mut self) {
        // Dropping a runtime inside another one's context panics; let its
        // threads end on their own.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
