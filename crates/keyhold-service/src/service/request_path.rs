//! The request path's reads, through generation-checked caches, and
//! dropping what a change made stale.

use super::*;

impl KeyService {
    /// Drops every cached entry.
    pub fn invalidate(&self) {
        self.keys.clear();
        self.objects.clear();
        self.creds.clear();
        self.stores.clear();
        self.policies.clear();
        self.note_any_policies();
    }

    /// Drops what a change of `scope` may have made stale; false when that
    /// was everything.
    pub(super) fn forget(&self, scope: &ChangeScope) -> bool {
        match scope {
            ChangeScope::All => {
                self.invalidate();
                self.load_revoked_certs();
                self.load_store_apis();
                return false;
            }
            ChangeScope::Key { store, id } => {
                self.keys.clear_key(&(store.clone(), id.clone()));
            }
            ChangeScope::Object(uid) => {
                self.objects.clear_key(uid);
                self.materials.clear_key(uid);
                self.private_keys.clear_key(uid);
            }
            // A store's status is in each of its keys' handles, and its
            // credentials lead to it.
            ChangeScope::Store(prefix) => {
                self.stores.clear_key(prefix);
                self.keys.clear_where(|(s, _), _| s == prefix);
                self.creds
                    .clear_where(|_, c| c.as_ref().is_some_and(|c| c.store.as_str() == prefix));
            }
            ChangeScope::Credential(akid) => self.creds.clear_key(akid),
            // Policies are in the handles of the keys they govern.
            // The sealed index of policy scopes changes with every policy,
            // whose own change is announced too.
            ChangeScope::Policy(name) if name == keyhold_storage::POLICY_INDEX_SCOPE => {
                self.note_any_policies();
            }
            ChangeScope::Policy(name) => {
                self.policies.clear_key(name);
                match name.split_once(' ') {
                    Some(("store", p)) => self.keys.clear_where(|(s, _), _| s == p),
                    Some(("key", rest)) => match rest.split_once(' ') {
                        Some((p, k)) => self.keys.clear_key(&(p.to_owned(), k.to_owned())),
                        None => self.keys.clear(),
                    },
                    _ => self.keys.clear(),
                }
                self.note_any_policies();
            }
            // Read where used, not cached: the break-glass epoch, lockdown
            // (read by every refresh), admin tokens.
            ChangeScope::Meta(name)
                if name == crate::lifecycle::EPOCH_META
                    || name == LOCKDOWN_META
                    || name.starts_with(crate::api_tokens::TOKEN_META_PREFIX) => {}
            ChangeScope::Meta(name)
                if name.starts_with(crate::client_certs::CERT_META_PREFIX)
                    || name == crate::client_certs::REVOKED_LIST_META =>
            {
                self.load_revoked_certs();
            }
            ChangeScope::Meta(name)
                if name.starts_with(crate::store_apis::STORE_API_META_PREFIX) =>
            {
                self.load_store_apis();
            }
            ChangeScope::Meta(_) => return self.forget(&ChangeScope::All),
        }
        true
    }

    /// After a write by this process: drops what it touched, here, at once
    /// (the periodic refresh handles everyone else's writes; on storage that
    /// says what changed, only what they touched too).
    pub(crate) fn after_write(&self, scope: ChangeScope) {
        self.forget(&scope);
    }

    // ----- request path -------------------------------------------------

    /// Looks up a key store by its URI prefix (cached).
    pub fn store_by_prefix(&self, prefix: &str) -> Result<Option<KeyStore>> {
        if let Some(s) = self.stores.get(prefix).filter(|_| self.cache_valid()) {
            return Ok(s);
        }
        let g = self.stores.generation();
        let found = match StorePrefix::parse(prefix) {
            Ok(p) if p.as_str() == prefix => self.storage.get_store(&p)?,
            _ => None,
        };
        self.stores.insert(g, prefix.to_owned(), found.clone());
        Ok(found)
    }

    /// Resolves an access key id to its store and secret (cached).
    pub fn credential(&self, access_key_id: &str) -> Result<Option<Arc<CredentialEntry>>> {
        if let Some(c) = self.creds.get(access_key_id).filter(|_| self.cache_valid()) {
            return Ok(c);
        }
        if validate_access_key_id(access_key_id).is_err() {
            return Ok(None);
        }
        let g = self.creds.generation();
        let entry = match self.storage.get_credential(access_key_id)? {
            None => None,
            Some(c) => {
                let secret =
                    self.barrier
                        .unwrap_secret(&c.store, &c.access_key_id, &c.wrapped_secret)?;
                Some(Arc::new(CredentialEntry {
                    store: c.store,
                    secret,
                    signing_keys: Mutex::new(Vec::new()),
                }))
            }
        };
        self.creds
            .insert(g, access_key_id.to_owned(), entry.clone());
        Ok(entry)
    }

    /// Resolves a key of a store for use (cached). Unknown → `KeyNotFound`.
    pub(crate) fn key_handle(&self, store: &StorePrefix, id: &str) -> Result<Arc<KeyHandle>> {
        let ck = (store.as_str().to_owned(), id.to_owned());
        if let Some(h) = self.keys.get(&ck).filter(|_| self.cache_valid()) {
            return Ok(h);
        }
        let not_found = || Error::KeyNotFound {
            store: store.display().to_owned(),
            key: id.to_owned(),
        };
        let key_id = KeyId::parse(id).map_err(|_| not_found())?;
        let g = self.keys.generation();
        let store_rec = self
            .storage
            .get_store(store)?
            .ok_or_else(|| Error::StoreNotFound(store.display().to_owned()))?;
        let key = self
            .storage
            .get_key(store, &key_id)?
            .ok_or_else(not_found)?;
        let (current, current_flag) = if key.lifecycle.state == KeyState::Destroyed {
            (None, VersionFlag::Good)
        } else {
            let (m, f) = self.load_version(&key, key.current_version)?;
            (Some(Arc::new(m)), f)
        };
        let policies = self.policies_for(store, id)?;
        let h = Arc::new(KeyHandle {
            store_status: store_rec.status,
            current,
            current_flag,
            versions: Mutex::new(Vec::new()),
            policies,
            key,
            gcm: std::sync::OnceLock::new(),
        });
        self.keys.insert(g, ck, h.clone());
        Ok(h)
    }

    pub(super) fn load_version(
        &self,
        key: &Key,
        version: u32,
    ) -> Result<(KeyMaterial, VersionFlag)> {
        let wv = self
            .storage
            .get_key_version(&key.store, &key.id, version)?
            .ok_or(Error::InvalidCiphertext)?;
        if let Some(label) = &key.hsm_label {
            // No material outside the HSM: each version is a key in it.
            let root = self.barrier.root().clone();
            let label = hsm_version_label(label, version);
            let m = if key.key_type.is_asymmetric() {
                let public = self.hsm()?.public_key(&label)?;
                KeyMaterial::HsmPair {
                    root,
                    label,
                    public,
                }
            } else {
                KeyMaterial::Hsm { root, label }
            };
            return Ok((m, wv.flag));
        }
        if wv.wrapped.is_empty() {
            return Err(Error::InvalidState(format!(
                "version {version} of key {} was destroyed",
                key.id
            )));
        }
        if key.key_type.is_asymmetric() {
            let der =
                self.barrier
                    .unwrap_key_bytes(&key.store, &key.id, wv.version, &wv.wrapped)?;
            let k = keyhold_crypto::asym::PrivateKey::parse(der.expose())
                .ok()
                .filter(|k| pair_kind(key.key_type) == Some(k.kind()))
                .ok_or_else(|| {
                    Error::Integrity(format!(
                        "version {version} of key {} is not a {} private key",
                        key.id, key.key_type
                    ))
                })?;
            return Ok((KeyMaterial::Pair(k), wv.flag));
        }
        let m = self
            .barrier
            .unwrap_key(&key.store, &key.id, wv.version, &wv.wrapped)?;
        Ok((KeyMaterial::Software(m), wv.flag))
    }

    /// The key material of `version` of a resolved key, for decryption. An
    /// unknown version is an invalid ciphertext; a retired one (below the
    /// minimum decryption version) or one marked compromised is refused
    /// (InvalidState). A compromised version whose use was explicitly allowed
    /// comes back with its flag, for the caller to report.
    pub(crate) fn key_version(
        &self,
        h: &KeyHandle,
        version: u32,
    ) -> Result<(Arc<KeyMaterial>, VersionFlag)> {
        if version == 0 || version > h.key.current_version {
            return Err(Error::InvalidCiphertext);
        }
        let min = h.key.lifecycle.min_decrypt_version;
        if version < min {
            return Err(Error::InvalidState(format!(
                "version {version} of key {} is retired (minimum decryption version {min})",
                h.key.id
            )));
        }
        let (k, flag) = if version == h.key.current_version {
            (h.current_material()?.clone(), h.current_flag)
        } else {
            // One statement: the lock is released before loading.
            let cached = h
                .versions
                .lock()
                .iter()
                .find(|(v, ..)| *v == version)
                .map(|(_, k, f)| (k.clone(), *f));
            match cached {
                Some(c) => c,
                None => {
                    let (m, f) = self.load_version(&h.key, version)?;
                    let k = Arc::new(m);
                    let mut vs = h.versions.lock();
                    if vs.len() >= 64 {
                        vs.clear();
                    }
                    vs.push((version, k.clone(), f));
                    (k, f)
                }
            }
        };
        if flag == VersionFlag::Compromised {
            return Err(Error::InvalidState(format!(
                "version {version} of key {} is marked compromised",
                h.key.id
            )));
        }
        Ok((k, flag))
    }
}
