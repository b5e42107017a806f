//! The barrier between Keyhold's key service and its storage.
//!
//! * [`RootOfTrust`] is the seal: the one thing that can wrap and unwrap.
//!   The embedded default is [`SoftwareRoot`], a 256-bit master key in its own
//!   file (mode 0600, outside the database), optionally sealed under a
//!   passphrase with Argon2id. An HSM-backed root implements the same trait.
//! * [`Barrier`] wraps key versions and credential secrets under the root,
//!   binding each wrapped blob to what it is (store, key id, version), so a
//!   blob moved to another row fails to unwrap.
//!
//! Nothing here logs, and nothing returns key material except as
//! zeroizing types.

mod barrier;
mod software;

pub use barrier::{wrap_context, Barrier, HEALTH_KEY_CONTEXT, HEALTH_KEY_META};
pub use software::{RootFileKind, SoftwareRoot};

use keyhold_core::Result;
use keyhold_crypto::SecretBytes;

/// Describes a root of trust for health reports and operators.
#[derive(Debug, Clone)]
pub struct RootInfo {
    /// Stable identifier, e.g. `software-root-3f2a…`.
    pub id: String,
    /// Human-readable model, e.g. `Keyhold software root (AES-256-GCM)`.
    pub model: String,
}

/// The seal: wraps and unwraps secrets under a key-encryption key that never
/// leaves it. `context` is authenticated and must match on unwrap.
pub trait RootOfTrust: Send + Sync + 'static {
    fn wrap(&self, context: &[u8], plaintext: &[u8]) -> Result<Vec<u8>>;
    fn unwrap(&self, context: &[u8], wrapped: &[u8]) -> Result<SecretBytes>;
    fn info(&self) -> RootInfo;
    /// Whether wrap/unwrap may block for a while (device I/O): callers on an
    /// async runtime then move those calls to blocking threads.
    fn blocks(&self) -> bool {
        false
    }
}
