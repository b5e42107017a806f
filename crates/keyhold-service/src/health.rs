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

/// The result of a deep health check.
#[derive(Debug, Clone)]
pub struct HealthReport {
    pub root_id: String,
    pub root_model: String,
    pub status: HealthStatus,
    /// Why the status is not ACTIVE (never secret).
    pub detail: Option<String>,
}
