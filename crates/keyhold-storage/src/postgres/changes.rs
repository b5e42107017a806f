//! Seeing other nodes' changes: the LISTEN connection and the change log.

use super::*;

/// What the listening connection has seen.
#[derive(Default)]
pub(super) struct Changes {
    /// Moves on every notification, reconnection and TTL tick.
    pub(super) token: AtomicU64,
    /// The latest changes, with the token each one moved to.
    pub(super) log: parking_lot::Mutex<std::collections::VecDeque<(u64, ChangeScope)>>,
    /// Whether the listening connection is up.
    pub(super) up: AtomicBool,
    /// When it went down (ms), while it is down.
    pub(super) down_since_ms: AtomicI64,
}

impl Changes {
    /// Everything may have changed (reconnection, TTL tick, staleness).
    pub(super) fn bump(&self) {
        self.record(ChangeScope::All);
    }

    pub(super) fn record(&self, scope: ChangeScope) {
        let mut log = self.log.lock();
        let t = self.token.fetch_add(1, Ordering::SeqCst) + 1;
        log.push_back((t, scope));
        if log.len() > CHANGE_LOG_LEN {
            log.pop_front();
        }
    }

    /// The scope a notification payload names (what the triggers send).
    pub(super) fn parse(payload: &str) -> ChangeScope {
        if let Some(k) = payload.strip_prefix("k:") {
            if let Some((store, id)) = k.split_once('\u{1f}') {
                return ChangeScope::Key {
                    store: store.to_owned(),
                    id: id.to_owned(),
                };
            }
        }
        let one = |prefix: &str| payload.strip_prefix(prefix).map(str::to_owned);
        if let Some(uid) = one("o:") {
            return ChangeScope::Object(uid);
        }
        if let Some(p) = one("s:") {
            return ChangeScope::Store(p);
        }
        if let Some(a) = one("c:") {
            return ChangeScope::Credential(a);
        }
        if let Some(p) = one("p:") {
            return ChangeScope::Policy(p);
        }
        if let Some(m) = one("m:") {
            return ChangeScope::Meta(m);
        }
        ChangeScope::All
    }

    pub(super) fn since(&self, token: u64) -> Option<Vec<ChangeScope>> {
        let log = self.log.lock();
        let now = self.token.load(Ordering::SeqCst);
        if now == token {
            return Some(Vec::new());
        }
        // Every change after `token` must still be in the log.
        match log.front() {
            Some((first, _)) if *first <= token + 1 => Some(
                log.iter()
                    .filter(|(t, _)| *t > token)
                    .map(|(_, s)| s.clone())
                    .collect(),
            ),
            _ => None,
        }
    }
}

/// Keeps a connection that LISTENs for changes, reconnecting forever.
pub(super) async fn listen_loop(cfg: tokio_postgres::Config, tls: Tls, changes: Arc<Changes>) {
    loop {
        if let Ok((client, mut conn)) = cfg.connect(tls.clone()).await {
            let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
            let ch = changes.clone();
            tokio::spawn(async move {
                loop {
                    match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                        Some(Ok(AsyncMessage::Notification(n))) => {
                            ch.record(Changes::parse(n.payload()))
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => break,
                    }
                }
                let _ = done_tx.send(());
            });
            if client
                .batch_execute(&format!("LISTEN {CHANNEL}"))
                .await
                .is_ok()
            {
                // Changes may have been missed while not listening.
                changes.up.store(true, Ordering::SeqCst);
                changes.bump();
                let _ = done_rx.await;
            }
            drop(client);
        }
        if changes.up.swap(false, Ordering::SeqCst)
            || changes.down_since_ms.load(Ordering::SeqCst) == 0
        {
            changes.down_since_ms.store(now_ms(), Ordering::SeqCst);
            tracing::warn!("lost the connection that listens for database changes; reconnecting");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Moves the change token every `cache_ttl` while connected (the safety
/// net), and every second once the database has been unreachable for
/// longer than `max_staleness` (cached keys stop serving).
pub(super) async fn tick_loop(changes: Arc<Changes>, opts: PgOptions) {
    let mut last_tick = std::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if changes.up.load(Ordering::SeqCst) {
            changes.down_since_ms.store(0, Ordering::SeqCst);
            if last_tick.elapsed() >= opts.cache_ttl {
                last_tick = std::time::Instant::now();
                changes.bump();
            }
        } else {
            let since = changes.down_since_ms.load(Ordering::SeqCst);
            if since != 0 && now_ms() - since >= opts.max_staleness.as_millis() as i64 {
                changes.bump();
            }
        }
    }
}
