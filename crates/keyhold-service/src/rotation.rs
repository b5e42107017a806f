//! Root of trust rotation, online: a new software root is made and kept in
//! the database wrapped under the current one ([`ROOT_NEXT_META`]) — or,
//! for an HSM root, a new KEK is made in the HSM and the row names it —
//! while every value is re-wrapped under it. Each process holding the current
//! root finds it there (at start and on every change it sees), unwraps
//! with both, and wraps new values under the new one, so servers keep
//! serving throughout; `keyhold root rotate` then makes the new root the
//! data directory's and retires the old one, which a custodian destroys.
//! From then on no copy of the database, its WAL or a backup made before
//! can be unwrapped.

use keyhold_core::{Error, Result};
use keyhold_crypto::SecretBytes;
use keyhold_root::{EkmHealth, HsmKeys, RootInfo, RootOfTrust, SoftwareRoot};
use keyhold_storage::Storage;
use parking_lot::RwLock;
use std::sync::Arc;

/// The meta row holding the next root's master key, wrapped under the
/// current root, while a rotation is under way.
pub const ROOT_NEXT_META: &str = "root-next";
/// Wrapping context of that row.
pub const ROOT_NEXT_CONTEXT: &[u8] = b"keyhold/root-next/v1";

/// What the rotation row names as the next root: a software root's master
/// key, or (prefixed by [`KEK_PREFIX`]) the label of a new KEK in the same
/// HSM.
enum NextRoot {
    Software(SecretBytes),
    HsmKek(String),
}

/// Marks a rotation row that names an HSM KEK rather than holding a key.
const KEK_PREFIX: &[u8] = b"keyhold pkcs11 kek:";

fn decode(payload: SecretBytes) -> Result<NextRoot> {
    match payload.expose().strip_prefix(KEK_PREFIX) {
        Some(label) => String::from_utf8(label.to_vec())
            .map(NextRoot::HsmKek)
            .map_err(|_| Error::Internal("the rotation row names an invalid KEK label".into())),
        None => Ok(NextRoot::Software(payload)),
    }
}

/// The root of trust as the key service uses it: the data directory's
/// root, and during a rotation the next one too (new values are wrapped
/// under the next; values under either unwrap).
pub struct RotatingRoot {
    current: Arc<dyn RootOfTrust>,
    /// The next root, and what identifies it (`software ID` or `kek LABEL`).
    next: RwLock<Option<(String, Arc<dyn RootOfTrust>)>>,
}

impl RotatingRoot {
    pub fn new(current: Arc<dyn RootOfTrust>) -> Self {
        Self {
            current,
            next: RwLock::new(None),
        }
    }

    /// Reads the rotation row: a rotation under way makes the next root
    /// known here. A row this root cannot unwrap (left by a finished
    /// rotation, seen by the new root) changes nothing.
    pub fn load_next(&self, storage: &dyn Storage) -> Result<bool> {
        let Some(w) = storage.get_meta(ROOT_NEXT_META)? else {
            return Ok(false);
        };
        let payload = match self.current.unwrap(ROOT_NEXT_CONTEXT, &w) {
            Ok(m) => m,
            Err(Error::UnwrapFailed) => return Ok(false),
            Err(e) => return Err(e),
        };
        let next = decode(payload)?;
        let name = match &next {
            NextRoot::Software(m) => {
                format!("software {}", SoftwareRoot::from_master(m)?.info().id)
            }
            NextRoot::HsmKek(label) => format!("kek {label}"),
        };
        if self.next.read().as_ref().map(|(n, _)| n) == Some(&name) {
            return Ok(true);
        }
        let next: Arc<dyn RootOfTrust> = match next {
            NextRoot::Software(m) => Arc::new(SoftwareRoot::from_master(&m)?),
            NextRoot::HsmKek(label) => self.current.with_kek(&label)?,
        };
        tracing::info!(next = %name, "a root of trust rotation is under way: new values are wrapped under the next root");
        *self.next.write() = Some((name, next));
        Ok(true)
    }

    /// The next root, if a rotation is under way.
    pub fn next(&self) -> Option<Arc<dyn RootOfTrust>> {
        self.next.read().as_ref().map(|(_, r)| r.clone())
    }
}

/// Starts a rotation (or finds the one under way): the next root's master
/// key, kept in the database wrapped under `current`.
pub fn begin_rotation(storage: &dyn Storage, current: &dyn RootOfTrust) -> Result<SecretBytes> {
    if let Some(w) = storage.get_meta(ROOT_NEXT_META)? {
        return match decode(current.unwrap(ROOT_NEXT_CONTEXT, &w)?)? {
            NextRoot::Software(m) => Ok(m),
            NextRoot::HsmKek(l) => Err(Error::InvalidState(format!(
                "a rotation to the HSM KEK {l:?} is under way"
            ))),
        };
    }
    let master = keyhold_crypto::random_secret(32).map_err(|e| Error::Internal(e.to_string()))?;
    let w = current.wrap(ROOT_NEXT_CONTEXT, master.expose())?;
    let stored = storage.put_meta_if_absent(ROOT_NEXT_META, &w)?;
    // Another run got there first: use its key.
    current.unwrap(ROOT_NEXT_CONTEXT, &stored)
}

/// Starts the rotation of an HSM root to a new KEK labelled `label` (or
/// finds the one under way, whose label wins): returns the label, and
/// whether the rotation was begun now.
pub fn begin_kek_rotation(
    storage: &dyn Storage,
    current: &dyn RootOfTrust,
    label: &str,
) -> Result<(String, bool)> {
    let read = |w: &[u8]| -> Result<String> {
        match decode(current.unwrap(ROOT_NEXT_CONTEXT, w)?)? {
            NextRoot::HsmKek(l) => Ok(l),
            NextRoot::Software(_) => Err(Error::InvalidState(
                "a rotation to a software root is under way".into(),
            )),
        }
    };
    if let Some(w) = storage.get_meta(ROOT_NEXT_META)? {
        return Ok((read(&w)?, false));
    }
    let payload = [KEK_PREFIX, label.as_bytes()].concat();
    let w = current.wrap(ROOT_NEXT_CONTEXT, &payload)?;
    let stored = storage.put_meta_if_absent(ROOT_NEXT_META, &w)?;
    let l = read(&stored)?;
    let now = l == label && stored == w;
    Ok((l, now))
}

impl RootOfTrust for RotatingRoot {
    fn wrap(&self, context: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        match self.next() {
            Some(n) => n.wrap(context, plaintext),
            None => self.current.wrap(context, plaintext),
        }
    }

    fn unwrap(&self, context: &[u8], wrapped: &[u8]) -> Result<SecretBytes> {
        match self.next() {
            Some(n) => match n.unwrap(context, wrapped) {
                Ok(p) => Ok(p),
                Err(_) => self.current.unwrap(context, wrapped),
            },
            None => self.current.unwrap(context, wrapped),
        }
    }

    fn info(&self) -> RootInfo {
        self.current.info()
    }

    fn blocks(&self) -> bool {
        self.current.blocks()
    }

    fn unwrap_with_each(&self, context: &[u8], wrapped: &[u8]) -> Result<SecretBytes> {
        match self.next() {
            Some(n) => match n.unwrap(context, wrapped) {
                Ok(p) => Ok(p),
                Err(_) => self.current.unwrap_with_each(context, wrapped),
            },
            None => self.current.unwrap_with_each(context, wrapped),
        }
    }

    fn ekm_health(&self) -> Vec<EkmHealth> {
        self.current.ekm_health()
    }

    fn hsm_keys(&self) -> Option<&dyn HsmKeys> {
        self.current.hsm_keys()
    }

    fn with_kek(&self, label: &str) -> Result<Arc<dyn RootOfTrust>> {
        self.current.with_kek(label)
    }
}

impl crate::KeyService {
    /// Whether a rotation of this service's root of trust is under way
    /// (a rotation row that its root can unwrap).
    pub fn rotation_under_way(&self) -> Result<bool> {
        match self.storage().get_meta(ROOT_NEXT_META)? {
            None => Ok(false),
            Some(w) => Ok(self.barrier().root().unwrap(ROOT_NEXT_CONTEXT, &w).is_ok()),
        }
    }
}
