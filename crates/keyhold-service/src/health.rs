//! The deep health check: storage reachable, root of trust able to unwrap,
//! and a real AES-GCM round trip on a dedicated test key (never a customer key).

/// Health of one external key manager, in XKS terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthStatus {
    Active,
    Degraded,
    Unavailable,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Active => "ACTIVE",
            HealthStatus::Degraded => "DEGRADED",
            HealthStatus::Unavailable => "UNAVAILABLE",
        }
    }
}

/// Health of one external key manager (the root of trust, or one HSM token).
#[derive(Debug, Clone)]
pub struct EkmReport {
    pub id: String,
    pub model: String,
    pub status: HealthStatus,
    /// Why the status is not ACTIVE (never secret).
    pub detail: Option<String>,
}

/// The result of a deep health check: one entry per external key manager.
#[derive(Debug, Clone)]
pub struct HealthReport {
    pub ekms: Vec<EkmReport>,
}

impl HealthReport {
    /// The best status of any entry: whether requests can be served at all.
    pub fn status(&self) -> HealthStatus {
        let has = |s| self.ekms.iter().any(|e| e.status == s);
        if has(HealthStatus::Active) {
            HealthStatus::Active
        } else if has(HealthStatus::Degraded) {
            HealthStatus::Degraded
        } else {
            HealthStatus::Unavailable
        }
    }
}
