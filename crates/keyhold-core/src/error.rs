//! The error type of the key service. Front-ends map each variant to their
//! own wire errors (for XKS: an error name and HTTP status).

/// What went wrong in the key service, in terms a front-end can map.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid {what}: {why}")]
    Invalid { what: &'static str, why: String },
    #[error("key store {0} not found")]
    StoreNotFound(String),
    #[error("key store {0} already exists")]
    StoreExists(String),
    #[error("key {key} not found in key store {store}")]
    KeyNotFound { store: String, key: String },
    #[error("key {key} already exists in key store {store}")]
    KeyExists { store: String, key: String },
    #[error("object {0} not found")]
    ObjectNotFound(String),
    /// Another writer changed the record first; the caller may retry.
    #[error("{0} was changed concurrently")]
    Conflict(String),
    #[error("credential {0} not found")]
    CredentialNotFound(String),
    #[error("{0}")]
    InvalidState(String),
    #[error("{0}")]
    KeyUsage(String),
    /// Secondary authorization refused the request (`rule`: the deny rule
    /// that decided, if one did).
    #[error("access denied: {why}")]
    AccessDenied { rule: Option<String>, why: String },
    #[error("the ciphertext, IV, tag, AAD or metadata is invalid")]
    InvalidCiphertext,
    #[error("root of trust: {0}")]
    RootOfTrust(String),
    /// A wrapped value failed authentication: another root of trust (or key)
    /// wrapped it, or it was damaged.
    #[error("unwrap failed: wrong root of trust or damaged data")]
    UnwrapFailed,
    #[error("storage: {0}")]
    Storage(String),
    /// A stored row does not verify: it was written or changed outside
    /// Keyhold. Never obeyed; counted and reported.
    #[error("integrity: {0}")]
    Integrity(String),
    /// A dependency (database, HSM) did not answer in time; retrying may work.
    #[error("dependency timed out: {0}")]
    DependencyTimeout(String),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(what: &'static str, why: impl Into<String>) -> Self {
        Error::Invalid {
            what,
            why: why.into(),
        }
    }
}
