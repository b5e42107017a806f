//! The barrier between Keyhold's key service and its storage: [`Barrier`]
//! wraps key versions and credential secrets under the root of trust
//! ([`keyhold_root::RootOfTrust`]), binding each wrapped blob to what it is
//! (store, key id, version), so a blob moved to another row fails to unwrap.
//!
//! Nothing here logs, and nothing returns key material except as
//! zeroizing types.

use keyhold_core::{Error, KeyId, Result, StorePrefix, WrappedItem};
use keyhold_crypto::{Aes256Key, SecretBytes, AES256_KEY_LEN};
use keyhold_root::RootOfTrust;
use std::sync::Arc;

/// Name of the meta record holding the root check value.
const ROOT_CHECK_META: &str = "root_check";
const ROOT_CHECK_CONTEXT: &[u8] = b"keyhold/root-check/v1";
/// The meta record holding the health-check test key, and its wrap context.
pub const HEALTH_KEY_META: &str = "health_key";
pub const HEALTH_KEY_CONTEXT: &[u8] = b"keyhold/health-key/v1";
/// The audit MAC key, wrapped under the root of trust.
pub const AUDIT_KEY_META: &str = "audit_key";
pub const AUDIT_KEY_CONTEXT: &[u8] = b"keyhold/audit-key/v1";

/// The wrap context (authenticated, must match on unwrap) of a stored
/// wrapped value; `None` for a meta value that is not wrapped.
pub fn wrap_context(item: &WrappedItem) -> Option<Vec<u8>> {
    match item {
        WrappedItem::KeyVersion { store, id, version } => Some(key_context(store, id, *version)),
        WrappedItem::Credential {
            store,
            access_key_id,
        } => Some(credential_context(store, access_key_id)),
        WrappedItem::Meta { name } => match name.as_str() {
            ROOT_CHECK_META => Some(ROOT_CHECK_CONTEXT.to_vec()),
            HEALTH_KEY_META => Some(HEALTH_KEY_CONTEXT.to_vec()),
            AUDIT_KEY_META => Some(AUDIT_KEY_CONTEXT.to_vec()),
            _ => None,
        },
        WrappedItem::Object { uid } => Some(object_context(uid)),
    }
}
const ROOT_CHECK_PLAINTEXT: &[u8] = b"keyhold root of trust check value";

/// Everything written below the barrier is wrapped under the root of trust.
#[derive(Clone)]
pub struct Barrier {
    root: Arc<dyn RootOfTrust>,
}

fn key_context(store: &StorePrefix, id: &KeyId, version: u32) -> Vec<u8> {
    let mut c = Vec::with_capacity(64);
    c.extend_from_slice(b"keyhold/key-version/v1\0");
    c.extend_from_slice(store.as_str().as_bytes());
    c.push(0);
    c.extend_from_slice(id.as_str().as_bytes());
    c.push(0);
    c.extend_from_slice(&version.to_be_bytes());
    c
}

fn object_context(uid: &str) -> Vec<u8> {
    let mut c = Vec::with_capacity(64);
    c.extend_from_slice(b"keyhold/object/v1\0");
    c.extend_from_slice(uid.as_bytes());
    c
}

fn credential_context(store: &StorePrefix, access_key_id: &str) -> Vec<u8> {
    let mut c = Vec::with_capacity(64);
    c.extend_from_slice(b"keyhold/credential/v1\0");
    c.extend_from_slice(store.as_str().as_bytes());
    c.push(0);
    c.extend_from_slice(access_key_id.as_bytes());
    c
}

impl Barrier {
    pub fn new(root: Arc<dyn RootOfTrust>) -> Self {
        Self { root }
    }

    pub fn root(&self) -> &Arc<dyn RootOfTrust> {
        &self.root
    }

    /// Checks that this root of trust is the one the database was made with,
    /// recording a check value on first use. `get`/`put` read and write the
    /// database's meta table.
    pub fn verify_root(
        &self,
        get: impl Fn(&str) -> Result<Option<Vec<u8>>>,
        put_if_absent: impl Fn(&str, &[u8]) -> Result<Vec<u8>>,
    ) -> Result<()> {
        let stored = match get(ROOT_CHECK_META)? {
            Some(v) => v,
            None => {
                let w = self.root.wrap(ROOT_CHECK_CONTEXT, ROOT_CHECK_PLAINTEXT)?;
                put_if_absent(ROOT_CHECK_META, &w)?
            }
        };
        match self.root.unwrap_with_each(ROOT_CHECK_CONTEXT, &stored) {
            Ok(p) if p.expose() == ROOT_CHECK_PLAINTEXT => Ok(()),
            Ok(_) | Err(Error::UnwrapFailed) => Err(Error::RootOfTrust(
                "this root of trust is not the one this database was created with".into(),
            )),
            Err(e) => Err(e),
        }
    }

    /// Wraps fresh key material for (store, key, version).
    pub fn wrap_key(
        &self,
        store: &StorePrefix,
        id: &KeyId,
        version: u32,
        material: &SecretBytes,
    ) -> Result<Vec<u8>> {
        self.root
            .wrap(&key_context(store, id, version), material.expose())
    }

    /// Unwraps a key version into a ready AES-256-GCM key.
    pub fn unwrap_key(
        &self,
        store: &StorePrefix,
        id: &KeyId,
        version: u32,
        wrapped: &[u8],
    ) -> Result<Aes256Key> {
        let m = self
            .root
            .unwrap(&key_context(store, id, version), wrapped)?;
        if m.len() != AES256_KEY_LEN {
            return Err(Error::RootOfTrust(
                "unwrapped key has the wrong length".into(),
            ));
        }
        Aes256Key::from_bytes(m.expose()).map_err(|e| Error::Internal(e.to_string()))
    }

    /// Unwraps a key version's material as it was wrapped (an asymmetric
    /// key's private key DER).
    pub fn unwrap_key_bytes(
        &self,
        store: &StorePrefix,
        id: &KeyId,
        version: u32,
        wrapped: &[u8],
    ) -> Result<SecretBytes> {
        self.root.unwrap(&key_context(store, id, version), wrapped)
    }

    /// Wraps a managed object's material (any length).
    pub fn wrap_object(&self, uid: &str, material: &[u8]) -> Result<Vec<u8>> {
        self.root.wrap(&object_context(uid), material)
    }

    pub fn unwrap_object(&self, uid: &str, wrapped: &[u8]) -> Result<SecretBytes> {
        self.root.unwrap(&object_context(uid), wrapped)
    }

    pub fn wrap_secret(&self, store: &StorePrefix, akid: &str, secret: &[u8]) -> Result<Vec<u8>> {
        self.root.wrap(&credential_context(store, akid), secret)
    }

    pub fn unwrap_secret(
        &self,
        store: &StorePrefix,
        akid: &str,
        wrapped: &[u8],
    ) -> Result<SecretBytes> {
        self.root.unwrap(&credential_context(store, akid), wrapped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyhold_root::SoftwareRoot;

    #[test]
    fn wrapped_key_is_bound_to_its_row() {
        let dir = tempfile::tempdir().unwrap();
        let root = SoftwareRoot::create(&dir.path().join("r"), None).unwrap();
        let b = Barrier::new(Arc::new(root));
        let s = StorePrefix::parse("/a").unwrap();
        let k = KeyId::parse("k").unwrap();
        let m = SecretBytes::new(vec![5u8; 32]);
        let w = b.wrap_key(&s, &k, 1, &m).unwrap();
        assert!(!w.windows(32).any(|x| x == [5u8; 32]));
        assert!(b.unwrap_key(&s, &k, 1, &w).is_ok());
        assert!(b.unwrap_key(&s, &k, 2, &w).is_err());
        assert!(b
            .unwrap_key(&s, &KeyId::parse("j").unwrap(), 1, &w)
            .is_err());
        assert!(b
            .unwrap_key(&StorePrefix::parse("/b").unwrap(), &k, 1, &w)
            .is_err());
    }

    #[test]
    fn root_check() {
        use std::cell::RefCell;
        let dir = tempfile::tempdir().unwrap();
        let a = Barrier::new(Arc::new(
            SoftwareRoot::create(&dir.path().join("a"), None).unwrap(),
        ));
        let other = Barrier::new(Arc::new(
            SoftwareRoot::create(&dir.path().join("b"), None).unwrap(),
        ));
        let meta: RefCell<Option<Vec<u8>>> = RefCell::new(None);
        let get = |_: &str| Ok(meta.borrow().clone());
        let put = |_: &str, v: &[u8]| {
            meta.borrow_mut().get_or_insert_with(|| v.to_vec());
            Ok(meta.borrow().clone().unwrap())
        };
        a.verify_root(get, put).unwrap();
        a.verify_root(get, put).unwrap();
        assert!(other.verify_root(get, put).is_err());
    }
}
