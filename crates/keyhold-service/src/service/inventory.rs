//! Administration of key stores, their credentials and keys: creating,
//! listing, changing and rotating them.

use super::*;

/// A new, enabled key at version 1.
pub(super) fn new_key(
    prefix: &StorePrefix,
    id: &KeyId,
    (key_type, usage): (KeyType, Usage),
    t: Timestamp,
    hsm_label: Option<String>,
) -> Key {
    Key {
        key_type,
        store: prefix.clone(),
        id: id.clone(),
        status: Status::Enabled,
        usage,
        current_version: 1,
        created_at: t,
        updated_at: t,
        hsm_label,
        lifecycle: Lifecycle::default(),
    }
}

/// Refuses a lifecycle a new key cannot start in.
pub(super) fn check_new_lifecycle(l: &Lifecycle) -> Result<()> {
    if !matches!(l.state, KeyState::Active | KeyState::PreActive) {
        return Err(Error::invalid("state", "a new key is ACTIVE or PRE_ACTIVE"));
    }
    if l.activate_at.is_some() && l.state != KeyState::PreActive {
        return Err(Error::invalid(
            "activation date",
            "only a PRE_ACTIVE key takes an activation date",
        ));
    }
    if let (Some(a), Some(d)) = (l.activate_at, l.deactivate_at) {
        if d <= a {
            return Err(Error::invalid(
                "deactivation date",
                "must be after the activation date",
            ));
        }
    }
    if l.rotation_period.is_some_and(|p| p < 86_400) {
        return Err(Error::invalid(
            "rotation period",
            "must be at least one day",
        ));
    }
    Ok(())
}

impl KeyService {
    pub fn create_store(&self, prefix: &StorePrefix, description: &str) -> Result<KeyStore> {
        let s = KeyStore {
            prefix: prefix.clone(),
            status: Status::Enabled,
            description: description.to_owned(),
            created_at: now(),
        };
        self.storage.create_store(&s)?;
        self.after_write(ChangeScope::Store(prefix.as_str().to_owned()));
        Ok(s)
    }

    pub fn get_store(&self, prefix: &StorePrefix) -> Result<KeyStore> {
        self.storage
            .get_store(prefix)?
            .ok_or_else(|| Error::StoreNotFound(prefix.display().to_owned()))
    }

    pub fn list_stores(&self) -> Result<Vec<KeyStore>> {
        self.storage.list_stores()
    }

    pub fn set_store_status(&self, prefix: &StorePrefix, status: Status) -> Result<()> {
        self.storage.set_store_status(prefix, status)?;
        self.after_write(ChangeScope::Store(prefix.as_str().to_owned()));
        Ok(())
    }

    /// Generates a new credential for a store. The secret is returned once.
    pub fn add_credential(&self, prefix: &StorePrefix) -> Result<NewCredential> {
        let raw = random_secret(ACCESS_KEY_ID_LEN).map_err(|e| Error::Internal(e.to_string()))?;
        // 256 is a multiple of 32: reducing mod 32 gives no bias.
        let akid: String = raw
            .expose()
            .iter()
            .map(|b| ACCESS_KEY_ID_ALPHABET[(*b % 32) as usize] as char)
            .collect();
        let secret = random_secret(32).map_err(|e| Error::Internal(e.to_string()))?;
        let secret_text = SecretBytes::new(B64.encode(secret.expose()).into_bytes());
        self.import_credential(prefix, &akid, &secret_text)?;
        Ok(NewCredential {
            store: prefix.clone(),
            access_key_id: akid,
            secret_access_key: secret_text,
        })
    }

    /// Adds a credential chosen by the operator, after checking the spec's rules.
    pub fn import_credential(
        &self,
        prefix: &StorePrefix,
        access_key_id: &str,
        secret: &SecretBytes,
    ) -> Result<()> {
        validate_access_key_id(access_key_id)?;
        let s = std::str::from_utf8(secret.expose())
            .map_err(|_| Error::invalid("secret access key", "must be ASCII"))?;
        validate_secret_access_key(s)?;
        if self.storage.get_credential(access_key_id)?.is_some() {
            return Err(Error::invalid("access key id", "already in use"));
        }
        let wrapped = self
            .barrier
            .wrap_secret(prefix, access_key_id, secret.expose())?;
        self.storage.add_credential(&StoredCredential {
            access_key_id: access_key_id.to_owned(),
            store: prefix.clone(),
            wrapped_secret: wrapped,
            created_at: now(),
        })?;
        self.after_write(ChangeScope::Credential(access_key_id.to_owned()));
        Ok(())
    }

    pub fn remove_credential(&self, prefix: &StorePrefix, access_key_id: &str) -> Result<()> {
        self.storage.remove_credential(prefix, access_key_id)?;
        self.after_write(ChangeScope::Credential(access_key_id.to_owned()));
        Ok(())
    }

    pub fn list_credentials(&self, prefix: &StorePrefix) -> Result<Vec<CredentialInfo>> {
        Ok(self
            .storage
            .list_credentials(prefix)?
            .into_iter()
            .map(|c| CredentialInfo {
                access_key_id: c.access_key_id,
                store: c.store,
                created_at: c.created_at,
            })
            .collect())
    }

    /// Creates a key with fresh AES-256 material as version 1.
    pub fn create_key(&self, prefix: &StorePrefix, id: &KeyId, usage: Usage) -> Result<Key> {
        let mut keys = self.create_keys(prefix, std::slice::from_ref(id), usage)?;
        keys.pop()
            .ok_or_else(|| Error::Internal("no key created".into()))
    }

    /// Creates several keys in one transaction (all or none).
    pub fn create_keys(
        &self,
        prefix: &StorePrefix,
        ids: &[KeyId],
        usage: Usage,
    ) -> Result<Vec<Key>> {
        self.create_keys_with(prefix, ids, usage, &Lifecycle::default())
    }

    /// [`KeyService::create_keys`] in a given lifecycle (e.g. PRE_ACTIVE
    /// with an activation date, or with a rotation period), set atomically
    /// with the creation: a key never exists in a state it was not meant to.
    pub fn create_keys_with(
        &self,
        prefix: &StorePrefix,
        ids: &[KeyId],
        usage: Usage,
        lifecycle: &Lifecycle,
    ) -> Result<Vec<Key>> {
        self.create_keys_of(prefix, ids, KeyType::Aes256, usage, lifecycle)
    }

    /// [`KeyService::create_keys_with`] for keys of a given type: AES-256,
    /// or key pairs (RSA, EC, Ed25519) whose private keys are wrapped under
    /// the root of trust like any key. The usage must suit the type
    /// ([`KeyType::check_usage`]).
    pub fn create_keys_of(
        &self,
        prefix: &StorePrefix,
        ids: &[KeyId],
        key_type: KeyType,
        usage: Usage,
        lifecycle: &Lifecycle,
    ) -> Result<Vec<Key>> {
        key_type.check_usage(usage)?;
        check_new_lifecycle(lifecycle)?;
        let t = self.clock.now();
        let batch = ids
            .iter()
            .map(|id| {
                let mut key = new_key(prefix, id, (key_type, usage), t, None);
                key.lifecycle = lifecycle.clone();
                key.lifecycle.next_rotation_at = lifecycle.rotation_period.map(|p| t + p);
                let first = self.new_version(&key, 1)?;
                Ok((key, first))
            })
            .collect::<Result<Vec<_>>>()?;
        self.storage.create_keys(&batch)?;
        for id in ids {
            self.after_write(key_scope(prefix, id));
        }
        Ok(batch.into_iter().map(|(k, _)| k).collect())
    }

    /// Fresh material for `version` of `key`, of its type, wrapped: an
    /// AES-256 key, or a new key pair's private key (DER: PKCS#1 for RSA,
    /// PKCS#8 otherwise).
    pub(super) fn new_version(&self, key: &Key, version: u32) -> Result<WrappedKeyVersion> {
        let crypto = |e: keyhold_crypto::CryptoError| Error::Internal(e.to_string());
        let material = match pair_kind(key.key_type) {
            None => random_secret(AES256_KEY_LEN).map_err(crypto)?,
            Some(kind) => {
                keyhold_crypto::asym::generate(kind)
                    .map_err(crypto)?
                    .private
            }
        };
        Ok(WrappedKeyVersion {
            version,
            wrapped: self
                .barrier
                .wrap_key(&key.store, &key.id, version, &material)?,
            created_at: self.clock.now(),
            flag: VersionFlag::Good,
        })
    }

    pub fn get_key(&self, prefix: &StorePrefix, id: &KeyId) -> Result<Key> {
        self.storage
            .get_key(prefix, id)?
            .ok_or_else(|| Error::KeyNotFound {
                store: prefix.display().to_owned(),
                key: id.to_string(),
            })
    }

    /// The public key of `version` of a key pair (its current version when
    /// `None`), as an X.509 SubjectPublicKeyInfo (DER), with the version.
    /// Public keys are not secret: this is read whatever the key's status
    /// (but not once its material is destroyed).
    pub fn public_key(
        &self,
        prefix: &StorePrefix,
        id: &KeyId,
        version: Option<u32>,
    ) -> Result<(u32, Vec<u8>)> {
        let key = self.get_key(prefix, id)?;
        if !key.key_type.is_asymmetric() {
            return Err(Error::KeyUsage(format!(
                "key {id} is an AES-256 key: it has no public key"
            )));
        }
        if key.lifecycle.state == KeyState::Destroyed {
            return Err(Error::InvalidState(format!("key {id} is destroyed")));
        }
        let version = version.unwrap_or(key.current_version);
        if version == 0 || version > key.current_version {
            return Err(Error::invalid(
                "version",
                format!("key {id} has versions 1 to {}", key.current_version),
            ));
        }
        let (m, _) = self.load_version(&key, version)?;
        Ok((version, m.public_spki()?))
    }

    pub fn list_keys(
        &self,
        prefix: &StorePrefix,
        after: Option<&KeyId>,
        limit: usize,
    ) -> Result<Vec<Key>> {
        self.storage.list_keys(prefix, after, limit)
    }

    /// Disabled keys (break glass on a key), at most `limit`.
    pub fn disabled_keys(&self, limit: usize) -> Result<Vec<Key>> {
        self.storage.disabled_keys(limit)
    }

    pub fn count_keys(&self, prefix: &StorePrefix) -> Result<u64> {
        self.storage.count_keys(prefix)
    }

    pub fn set_key_status(&self, prefix: &StorePrefix, id: &KeyId, status: Status) -> Result<()> {
        self.storage.set_key_status(prefix, id, status)?;
        self.after_write(key_scope(prefix, id));
        Ok(())
    }

    /// Sets a key's usage. An HSM-resident key's versions get it in the
    /// token too (CKA_ENCRYPT, CKA_DECRYPT) where the token allows the
    /// change: the answer says whether it did.
    pub fn set_key_usage(
        &self,
        prefix: &StorePrefix,
        id: &KeyId,
        usage: Usage,
    ) -> Result<UsageEnforcement> {
        let key = self.get_key(prefix, id)?;
        key.key_type.check_usage(usage)?;
        self.storage.set_key_usage(prefix, id, usage)?;
        self.after_write(key_scope(prefix, id));
        let Some(base) = &key.hsm_label else {
            return Ok(UsageEnforcement::Keyhold);
        };
        let hsm = self.hsm()?;
        let mut all = true;
        for v in key.lifecycle.min_decrypt_version.max(1)..=key.current_version {
            all &= hsm.set_usage(&hsm_version_label(base, v), usage)?;
        }
        Ok(if all {
            UsageEnforcement::KeyholdAndToken
        } else {
            UsageEnforcement::KeyholdOnlyTokenRefused
        })
    }

    /// Creates a key whose material is generated in, and never leaves, the
    /// HSM of the root of trust (`label` defaults to `keyhold:<prefix>:<id>`).
    pub fn create_hsm_key(
        &self,
        prefix: &StorePrefix,
        id: &KeyId,
        usage: Usage,
        label: Option<&str>,
    ) -> Result<Key> {
        self.create_hsm_key_of(prefix, id, KeyType::Aes256, usage, label)
    }

    /// [`KeyService::create_hsm_key`] of a given type: an AES-256 key or a
    /// key pair generated in the HSM (C_GenerateKeyPair), whose private key
    /// signs or decrypts there and never leaves it.
    pub fn create_hsm_key_of(
        &self,
        prefix: &StorePrefix,
        id: &KeyId,
        key_type: KeyType,
        usage: Usage,
        label: Option<&str>,
    ) -> Result<Key> {
        key_type.check_usage(usage)?;
        let hsm = self.hsm()?;
        let label = label
            .map(str::to_owned)
            .unwrap_or_else(|| format!("keyhold:{}:{}", prefix.as_str(), id));
        match pair_kind(key_type) {
            None => hsm.generate_key(&label, usage)?,
            Some(kind) => hsm.generate_pair(&label, kind, usage)?,
        }
        self.record_hsm_key(prefix, id, (key_type, usage), label)
    }

    /// Adopts a key that already exists in the HSM under `label` (how keys
    /// move over from other XKS proxies): an AES-256 key, or a key pair
    /// whose private key is sensitive and never extractable (its type read
    /// from the token). `usage` defaults to the type's.
    pub fn import_hsm_key(
        &self,
        prefix: &StorePrefix,
        id: &KeyId,
        usage: Option<Usage>,
        label: &str,
    ) -> Result<Key> {
        let hsm = self.hsm()?;
        if hsm.is_reserved(label) {
            return Err(Error::invalid(
                "HSM key label",
                format!("{label:?} is Keyhold's own key (the root of trust's key-encryption key or its health key): it is never adopted as a customer key"),
            ));
        }
        let key_type = match hsm.check_key(label) {
            Ok(()) => KeyType::Aes256,
            Err(aes) => match hsm.pair_kind(label) {
                Ok(kind) => key_type_of(kind).ok_or(aes)?,
                // Neither: the AES answer, unless a private key is there.
                Err(pair) if pair.to_string().contains("no private key") => return Err(aes),
                Err(pair) => return Err(pair),
            },
        };
        let usage = match usage.or(key_type.default_usage()) {
            Some(u) => u,
            None => {
                return Err(Error::invalid(
                    "usage",
                    format!("the HSM key {label:?} is a {key_type} key: say its usage, ENCRYPT,DECRYPT (RSA-OAEP) or SIGN,VERIFY"),
                ))
            }
        };
        key_type.check_usage(usage)?;
        // The adopted key's attributes become its usage, where the token
        // lets them change.
        if !hsm.set_usage(label, usage)? {
            tracing::warn!(label, "the HSM token would not set the adopted key's usage attributes: Keyhold alone enforces its usage");
        }
        self.record_hsm_key(prefix, id, (key_type, usage), label.to_owned())
    }

    pub(crate) fn hsm(&self) -> Result<&dyn keyhold_root::HsmKeys> {
        self.barrier.root().hsm_keys().ok_or_else(|| {
            Error::invalid(
                "protection",
                "HSM-resident keys need an HSM root of trust (keyhold init --hsm-module …)",
            )
        })
    }

    pub(super) fn record_hsm_key(
        &self,
        prefix: &StorePrefix,
        id: &KeyId,
        type_and_usage: (KeyType, Usage),
        label: String,
    ) -> Result<Key> {
        let t = now();
        let key = new_key(prefix, id, type_and_usage, t, Some(label));
        // The version row records that version 1 exists; its material is in the HSM.
        let v = WrappedKeyVersion {
            version: 1,
            wrapped: Vec::new(),
            created_at: t,
            flag: VersionFlag::Good,
        };
        self.storage.create_keys(&[(key.clone(), v)])?;
        self.after_write(key_scope(prefix, id));
        Ok(key)
    }

    /// Adds a new version of fresh material and makes it current. Older
    /// versions stay available for decrypt. An HSM-resident key gets a new
    /// key in the HSM (see [`hsm_version_label`]).
    pub fn rotate_key(&self, prefix: &StorePrefix, id: &KeyId) -> Result<Key> {
        let key = self.get_key(prefix, id)?;
        if key.lifecycle.pending_destruction()
            || !matches!(key.lifecycle.state, KeyState::Active | KeyState::PreActive)
        {
            return Err(Error::InvalidState(format!(
                "key {id} is {}{}: only live keys rotate",
                key.lifecycle.state,
                if key.lifecycle.pending_destruction() {
                    " and scheduled for destruction"
                } else {
                    ""
                }
            )));
        }
        let next = key
            .current_version
            .checked_add(1)
            .ok_or_else(|| Error::InvalidState("key has too many versions".into()))?;
        let v = match &key.hsm_label {
            Some(base) => {
                let label = hsm_version_label(base, next);
                match pair_kind(key.key_type) {
                    None => self.hsm()?.generate_key(&label, key.usage)?,
                    Some(kind) => self.hsm()?.generate_pair(&label, kind, key.usage)?,
                }
                let v = WrappedKeyVersion {
                    version: next,
                    wrapped: Vec::new(),
                    created_at: now(),
                    flag: VersionFlag::Good,
                };
                if let Err(e) = self.storage.add_key_version(prefix, id, &v) {
                    // Not recorded: leave no orphan in the HSM.
                    let _ = self.hsm()?.destroy_key(&label);
                    return Err(e);
                }
                v
            }
            None => {
                let v = self.new_version(&key, next)?;
                self.storage.add_key_version(prefix, id, &v)?;
                v
            }
        };
        if let Some(p) = key.lifecycle.rotation_period {
            let mut l = key.lifecycle.clone();
            l.next_rotation_at = Some(v.created_at + p);
            self.storage.set_key_lifecycle(prefix, id, &l)?;
        }
        self.after_write(key_scope(prefix, id));
        self.get_key(prefix, id)
    }
}

/// The HSM label of `version` of an HSM-resident key whose first version
/// is `base`: `base` itself, then `base#v2`, `base#v3`… Rotation makes a new
/// non-extractable key in the HSM under the next label; storage keeps only
/// the version rows (no material).
pub(crate) fn hsm_version_label(base: &str, version: u32) -> String {
    if version <= 1 {
        base.to_owned()
    } else {
        format!("{base}#v{version}")
    }
}
