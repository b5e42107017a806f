//! Bearer tokens from identity providers (Microsoft Entra ID for DKE, a
//! customer's IdP and Google for Workspace CSE).
//!
//! An [`Issuer`] says which `iss` and `aud` a token must carry and where
//! the issuer's JWK set is (an HTTPS URL, verified against the system's CAs
//! or a pinned CA). The [`Verifier`] fetches each JWK set once and keeps it
//! for a TTL, fetches it again at once when a token names a key it does not
//! hold (the issuer rotated its keys; at most every `refresh_floor`, so a
//! stream of made-up key ids cannot make it hammer the IdP), keeps serving
//! the last good set while the IdP cannot be reached, and remembers each
//! verified token until it expires: a repeated token costs a hash and a map
//! lookup, not a second signature check. The signature, time, issuer and
//! audience checks are `keyhold_crypto::jwt`'s.

mod fetch;

use keyhold_crypto::jwt::{self, Expect, Jwks, JwtError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use fetch::{https_request, FetchError};

/// A token issuer Keyhold trusts for one purpose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issuer {
    /// Accepted `iss` values.
    pub issuers: Vec<String>,
    /// Accepted `aud` values (one must be in the token).
    pub audiences: Vec<String>,
    /// Where its JWK set is: `https://…`.
    pub jwks_url: String,
    /// The CA (PEM) the JWK set's server must chain to; absent: the
    /// system's CAs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_ca_pem: Option<String>,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error(transparent)]
    Token(#[from] JwtError),
    /// The issuer's keys could not be had (and none were held).
    #[error("the identity provider's keys cannot be fetched: {0}")]
    KeysUnavailable(String),
}

/// Settings of a [`Verifier`].
#[derive(Debug, Clone, Copy)]
pub struct VerifierConfig {
    /// A JWK set is fetched again after this long.
    pub jwks_ttl: Duration,
    /// A token naming an unknown key fetches the set again, at most this
    /// often per set.
    pub refresh_floor: Duration,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// Verified tokens remembered at most.
    pub max_tokens: usize,
    /// Longest a JWK set fetch may take.
    pub fetch_timeout: Duration,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        Self {
            jwks_ttl: Duration::from_secs(3600),
            refresh_floor: Duration::from_secs(10),
            leeway: Duration::from_secs(300),
            max_tokens: 20_000,
            fetch_timeout: Duration::from_secs(5),
        }
    }
}

struct HeldKeys {
    jwks: Arc<Jwks>,
    fetched: Instant,
}

#[derive(Default)]
struct SetState {
    held: Option<HeldKeys>,
    /// When a fetch was last tried (successful or not).
    tried: Option<Instant>,
    /// When a token naming an unknown key last made it fetch.
    refreshed: Option<Instant>,
}

/// What a verifier has done, for metrics and tests.
#[derive(Debug, Default)]
struct Stats {
    signature_checks: AtomicU64,
    cache_hits: AtomicU64,
    fetches: AtomicU64,
}

/// A snapshot of [`Verifier::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VerifierStats {
    /// Tokens whose signature was checked.
    pub signature_checks: u64,
    /// Tokens answered from the cache of verified tokens.
    pub cache_hits: u64,
    /// JWK set fetches tried.
    pub fetches: u64,
}

/// A verified token's claims, and when it stops being valid.
struct Remembered {
    claims: Arc<Map<String, Value>>,
    /// Unix seconds (`exp`).
    exp: i64,
}

/// Verifies bearer tokens; shared by every request of a front-end.
pub struct Verifier {
    config: VerifierConfig,
    stats: Stats,
    sets: parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Mutex<SetState>>>>,
    tokens: parking_lot::Mutex<HashMap<[u8; 32], Remembered>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").finish_non_exhaustive()
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Default for Verifier {
    fn default() -> Self {
        Self::new(VerifierConfig::default())
    }
}

impl Verifier {
    pub fn new(config: VerifierConfig) -> Self {
        Self {
            config,
            stats: Stats::default(),
            sets: Default::default(),
            tokens: Default::default(),
        }
    }

    /// What it has done so far.
    pub fn stats(&self) -> VerifierStats {
        VerifierStats {
            signature_checks: self.stats.signature_checks.load(Ordering::Relaxed),
            cache_hits: self.stats.cache_hits.load(Ordering::Relaxed),
            fetches: self.stats.fetches.load(Ordering::Relaxed),
        }
    }

    /// The claims of `token` when `issuer` vouches for it.
    pub async fn verify(
        &self,
        token: &str,
        issuer: &Issuer,
    ) -> Result<Arc<Map<String, Value>>, IdError> {
        let id = token_id(token, issuer);
        let now = unix_now();
        if let Some(r) = self.tokens.lock().get(&id) {
            if r.exp > now - self.config.leeway.as_secs() as i64 {
                self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(r.claims.clone());
            }
        }
        // Cheap checks before any fetch: the token must parse.
        jwt::peek(token)?;
        let expect = Expect {
            issuers: &issuer.issuers,
            audiences: &issuer.audiences,
            leeway_s: self.config.leeway.as_secs(),
        };
        let keys = self.keys(issuer, false).await?;
        self.stats.signature_checks.fetch_add(1, Ordering::Relaxed);
        let claims = match jwt::verify(token, &keys, &expect) {
            Err(JwtError::UnknownKey(_)) => {
                let keys = self.keys(issuer, true).await?;
                jwt::verify(token, &keys, &expect)?
            }
            other => other?,
        };
        let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(now);
        let claims = Arc::new(claims);
        let mut t = self.tokens.lock();
        if t.len() >= self.config.max_tokens {
            let floor = now - self.config.leeway.as_secs() as i64;
            t.retain(|_, r| r.exp > floor);
            if t.len() >= self.config.max_tokens {
                t.clear();
            }
        }
        t.insert(
            id,
            Remembered {
                claims: claims.clone(),
                exp,
            },
        );
        Ok(claims)
    }

    /// The issuer's keys: held ones while fresh; else fetched (`refresh`:
    /// fetched again unless that was tried within the refresh floor).
    async fn keys(&self, issuer: &Issuer, refresh: bool) -> Result<Arc<Jwks>, IdError> {
        let slot_key = format!(
            "{}\0{}",
            issuer.jwks_url,
            issuer.jwks_ca_pem.as_deref().unwrap_or("")
        );
        let slot = self.sets.lock().entry(slot_key).or_default().clone();
        // One fetch per set at a time; the others wait for its result.
        let mut st = slot.lock().await;
        let fresh = st
            .held
            .as_ref()
            .is_some_and(|h| h.fetched.elapsed() < self.config.jwks_ttl);
        let floor = self.config.refresh_floor;
        let recently_tried = st.tried.is_some_and(|t| t.elapsed() < floor);
        let recently_refreshed = st.refreshed.is_some_and(|t| t.elapsed() < floor);
        let fetch = match (&st.held, refresh) {
            (None, _) => !recently_tried,
            (Some(_), false) => !fresh && !recently_tried,
            (Some(_), true) => !recently_refreshed,
        };
        if fetch && refresh {
            st.refreshed = Some(Instant::now());
        }
        if fetch {
            st.tried = Some(Instant::now());
            self.stats.fetches.fetch_add(1, Ordering::Relaxed);
            match fetch::get_jwks(issuer, self.config.fetch_timeout).await {
                Ok(jwks) => {
                    st.held = Some(HeldKeys {
                        jwks: Arc::new(jwks),
                        fetched: Instant::now(),
                    });
                }
                Err(e) => {
                    tracing::warn!(url = %issuer.jwks_url, error = %e, "cannot fetch the identity provider's JWK set");
                    if st.held.is_none() {
                        return Err(IdError::KeysUnavailable(e.to_string()));
                    }
                }
            }
        }
        match &st.held {
            Some(h) => Ok(h.jwks.clone()),
            None => Err(IdError::KeysUnavailable(
                "not fetched yet; retry shortly".into(),
            )),
        }
    }
}

/// A verified token's key in the cache: bound to the issuer settings it
/// was checked against.
fn token_id(token: &str, issuer: &Issuer) -> [u8; 32] {
    let mut m = Vec::with_capacity(token.len() + 256);
    for part in issuer.issuers.iter().chain(&issuer.audiences) {
        m.extend_from_slice(part.as_bytes());
        m.push(0);
    }
    m.extend_from_slice(issuer.jwks_url.as_bytes());
    m.push(0);
    m.extend_from_slice(token.as_bytes());
    let d = keyhold_crypto::asym::digest(keyhold_crypto::asym::Hash::Sha256, &m);
    let mut out = [0u8; 32];
    out.copy_from_slice(&d);
    out
}

/// A claim's text value.
pub fn claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    claims.get(name).and_then(Value::as_str)
}

/// A claim's text values (a string, or a list of strings).
pub fn claim_list(claims: &Map<String, Value>, name: &str) -> Vec<String> {
    match claims.get(name) {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}
