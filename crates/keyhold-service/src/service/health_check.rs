//! The deep health check and the integrity scan.

use super::*;

impl KeyService {
    /// Deep health check (cached for a short time).
    pub fn health(&self) -> HealthReport {
        if let Some((at, r)) = self.health.lock().as_ref() {
            if at.elapsed() < HEALTH_CACHE_TTL {
                return r.clone();
            }
        }
        // The service's own check (storage, unwrap, AES-GCM round trip),
        // then each HSM token's own round trip on its health key.
        let deep = self.deep_check();
        if let Err(e) = &deep {
            tracing::warn!(error = %e, "deep health check failed");
        }
        let tokens = self.barrier.root().ekm_health();
        let ekms = if tokens.is_empty() {
            let info = self.barrier.root().info();
            vec![EkmReport {
                id: info.id,
                model: info.model,
                status: match &deep {
                    Ok(()) => HealthStatus::Active,
                    // The database is unreachable but cached keys still
                    // serve (for at most the backend's maximum staleness).
                    Err(Error::DependencyTimeout(_) | Error::Storage(_)) if self.keys.len() > 0 => {
                        HealthStatus::Degraded
                    }
                    Err(_) => HealthStatus::Unavailable,
                },
                detail: deep.as_ref().err().map(|e| e.to_string()),
            }]
        } else {
            tokens
                .into_iter()
                .map(|t| {
                    // A token that works while the service cannot serve
                    // (its storage is down, say) is DEGRADED.
                    let (status, detail) = match (t.error, &deep) {
                        (Some(e), _) => (HealthStatus::Unavailable, Some(e)),
                        (None, Err(e)) => (HealthStatus::Degraded, Some(e.to_string())),
                        (None, Ok(())) => (HealthStatus::Active, None),
                    };
                    EkmReport {
                        id: t.id,
                        model: t.model,
                        status,
                        detail,
                    }
                })
                .collect()
        };
        let mut r = HealthReport { ekms };
        self.note_integrity(&mut r);
        *self.health.lock() = Some((Instant::now(), r.clone()));
        r
    }

    /// Stored rows refused lately (changed outside Keyhold) make an ACTIVE
    /// report DEGRADED, saying so, for [`INTEGRITY_REPORT_WINDOW`] after
    /// the last one.
    pub(super) fn note_integrity(&self, r: &mut HealthReport) {
        let Some(last) = self.row_key.last_failure_ms() else {
            return;
        };
        let now_ms = self.clock.now() * 1000;
        if now_ms - last > INTEGRITY_REPORT_WINDOW.as_millis() as i64 {
            return;
        }
        let detail = format!(
            "{} stored rows refused since start: changed outside Keyhold (latest: {})",
            self.integrity_failures(),
            self.row_key
                .recent_failures()
                .last()
                .map_or("", String::as_str)
        );
        for e in &mut r.ekms {
            if e.status == HealthStatus::Active {
                e.status = HealthStatus::Degraded;
                e.detail = Some(detail.clone());
            }
        }
    }

    /// Every row that grants or limits power, read and checked now
    /// (stores, keys, KMIP objects, policies, lockdown, admin tokens):
    /// those refused, by name.
    pub fn scan_integrity(&self) -> Result<Vec<String>> {
        self.row_key.forget_recent();
        let before = self.integrity_failures();
        let st = &self.storage;
        for store in st.list_stores()? {
            let mut after: Option<KeyId> = None;
            loop {
                let page = st.list_keys(&store.prefix, after.as_ref(), 1000)?;
                let Some(last) = page.last() else { break };
                after = Some(last.id.clone());
            }
        }
        st.list_objects()?;
        match st.list_policies() {
            Ok(_) | Err(Error::Integrity(_)) => {}
            Err(e) => return Err(e),
        }
        Self::read_lockdown(&self.row_key, &**st)?;
        for t in self.admin_tokens()? {
            if !self.admin_token_is_genuine(&t)? {
                self.row_key.report(&format!("admin token {}", t.name));
            }
        }
        if self.integrity_failures() == before {
            return Ok(Vec::new());
        }
        Ok(self.row_key.recent_failures())
    }

    pub(super) fn deep_check(&self) -> Result<()> {
        self.storage.ping()?;
        let w = self
            .storage
            .get_meta(HEALTH_KEY_META)?
            .ok_or_else(|| Error::Internal("health test key missing".into()))?;
        let m = self.barrier.root().unwrap(HEALTH_KEY_CONTEXT, &w)?;
        let k = Aes256Key::from_bytes(m.expose()).map_err(|e| Error::Internal(e.to_string()))?;
        let probe = random_secret(32).map_err(|e| Error::Internal(e.to_string()))?;
        let mut buf = probe.expose().to_vec();
        let (iv, tag) = k
            .seal_in_place(b"keyhold health", &mut buf)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let back = k
            .open(&iv, b"keyhold health", &buf, &tag)
            .map_err(|_| Error::Internal("health round trip failed".into()))?;
        if back.expose() != probe.expose() {
            return Err(Error::Internal("health round trip mismatch".into()));
        }
        Ok(())
    }
}
