//! Managed objects (the KMIP front-end's keys and secrets): stored with
//! their material wrapped under the root of trust, subject to the same
//! lockdown (break glass) as every other key.

use crate::KeyService;
use keyhold_core::{Error, ManagedObject, Result};
use keyhold_crypto::SecretBytes;
use std::sync::Arc;

pub use keyhold_core::GRANT_ATTR;

/// Whether the cached object is at least as new as the one just written.
fn newer_rev(have: &Arc<ManagedObject>, written: &Arc<ManagedObject>) -> bool {
    have.rev >= written.rev
}

impl KeyService {
    /// Stores a new object with `material` wrapped under the root of trust.
    /// The object is cached as written: a client's next request (a Get
    /// right after its Create) is answered without reading it back.
    pub fn create_object(&self, obj: &ManagedObject, material: &[u8]) -> Result<()> {
        let wrapped = self.barrier().wrap_object(&obj.uid, material)?;
        self.storage().create_object(obj, &wrapped)?;
        let mut stored = obj.clone();
        stored.rev = 1;
        self.objects
            .put_written(obj.uid.clone(), Arc::new(stored), newer_rev);
        self.materials.put_written(
            obj.uid.clone(),
            Arc::new(SecretBytes::new(material.to_vec())),
            |_, _| false,
        );
        Ok(())
    }

    /// The object's record (cached until the database changes).
    pub fn object(&self, uid: &str) -> Result<ManagedObject> {
        if let Some(o) = self.objects.get(uid).filter(|_| self.cache_valid()) {
            return Ok((*o).clone());
        }
        let generation = self.objects.generation();
        let o = self
            .storage()
            .get_object(uid)?
            .ok_or_else(|| Error::ObjectNotFound(uid.to_owned()))?;
        self.objects
            .insert(generation, uid.to_owned(), Arc::new(o.clone()));
        Ok(o)
    }

    /// The object's plaintext material, for use inside Keyhold or for an
    /// export the caller has already authorized. Refused in lockdown.
    pub fn object_material(&self, obj: &ManagedObject) -> Result<Arc<SecretBytes>> {
        self.refuse_in_lockdown()?;
        if !obj.has_material {
            return Err(Error::InvalidState(format!(
                "object {} has no material",
                obj.uid
            )));
        }
        if let Some(m) = self.materials.get(&obj.uid) {
            return Ok(m);
        }
        let generation = self.materials.generation();
        let wrapped = self
            .storage()
            .object_material(&obj.uid)?
            .ok_or_else(|| Error::InvalidState(format!("object {} has no material", obj.uid)))?;
        let m = Arc::new(self.barrier().unwrap_object(&obj.uid, &wrapped)?);
        self.materials
            .insert(generation, obj.uid.clone(), m.clone());
        Ok(m)
    }

    /// The object's private key, parsed by `parse` from its material the
    /// first time and kept parsed (signing or decrypting does not parse
    /// and check the key again). Refused in a lockdown like the material.
    pub fn private_key(
        &self,
        obj: &ManagedObject,
        parse: impl FnOnce(&SecretBytes) -> Result<keyhold_crypto::asym::PrivateKey>,
    ) -> Result<Arc<keyhold_crypto::asym::PrivateKey>> {
        self.refuse_in_lockdown()?;
        if !obj.has_material {
            return Err(Error::InvalidState(format!(
                "object {} has no material",
                obj.uid
            )));
        }
        if let Some(k) = self.private_keys.get(&obj.uid) {
            return Ok(k);
        }
        let generation = self.private_keys.generation();
        let k = Arc::new(parse(&*self.object_material(obj)?)?);
        self.private_keys
            .insert(generation, obj.uid.clone(), k.clone());
        Ok(k)
    }

    /// Writes the object back if nobody changed it since it was read; the
    /// cache then holds it as written (unless a newer revision got there
    /// first).
    pub fn update_object(&self, obj: &ManagedObject) -> Result<()> {
        if !obj.has_material {
            self.materials.clear_key(&obj.uid);
            self.private_keys.clear_key(&obj.uid);
        }
        self.objects.clear_key(&obj.uid);
        let r = self.storage().update_object(obj);
        match r {
            Ok(()) => {
                let mut stored = obj.clone();
                stored.rev += 1;
                self.objects
                    .put_written(obj.uid.clone(), Arc::new(stored), newer_rev);
            }
            // Again after the write, so no fill from before it survives.
            Err(_) => self.objects.clear_key(&obj.uid),
        }
        r
    }

    /// After an object's material was erased (KMIP Destroy): no older
    /// copy of it stays in the storage's own files (see
    /// [`keyhold_storage::Storage::purge_erased_copies`]).
    pub fn purge_erased_copies(&self) -> Result<()> {
        self.storage().purge_erased_copies()
    }

    /// Removes an object outright (a batch undoing its creation).
    pub fn delete_object(&self, uid: &str) -> Result<()> {
        self.materials.clear_key(uid);
        self.private_keys.clear_key(uid);
        self.objects.clear_key(uid);
        let r = self.storage().delete_object(uid);
        self.objects.clear_key(uid);
        r
    }

    pub fn list_objects(&self) -> Result<Vec<ManagedObject>> {
        self.storage().list_objects()
    }

    /// Removes what is left of objects destroyed at least `older_than`
    /// seconds ago (their attributes: the material went at destruction);
    /// returns their identifiers. Objects destroyed before Keyhold kept a
    /// Destroy Date are left alone.
    pub fn purge_destroyed_objects(&self, older_than: i64) -> Result<Vec<String>> {
        let cutoff = self.now().saturating_sub(older_than);
        let mut purged = Vec::new();
        for o in self.storage().list_objects()? {
            if !o.state.is_destroyed() {
                continue;
            }
            let destroyed_at = o.attrs_named("Destroy Date").find_map(|v| match v {
                keyhold_core::AttrValue::DateTime(t) => Some(*t),
                _ => None,
            });
            if destroyed_at.is_some_and(|t| t <= cutoff) {
                self.delete_object(&o.uid)?;
                purged.push(o.uid);
            }
        }
        Ok(purged)
    }

    /// The objects `identity` may see, oldest first, destroyed ones only
    /// when asked: read through the owner and shared-object indexes, so
    /// the cost follows what the identity has, not what the store holds.
    pub fn list_objects_for(
        &self,
        identity: &str,
        with_destroyed: bool,
    ) -> Result<Vec<ManagedObject>> {
        let mut v = self.storage().list_objects_for(identity, with_destroyed)?;
        v.retain(|o| Self::may_use_object(o, identity));
        Ok(v)
    }

    /// Whether `identity` may use the object: its owner, or an identity a
    /// custodian granted it to. An object without an owner (an XKS key seen
    /// through KMIP) is only its grantees'.
    pub fn may_use_object(obj: &ManagedObject, identity: &str) -> bool {
        (!obj.owner.is_empty() && obj.owner == identity)
            || obj.attrs_named(GRANT_ATTR).any(|v| match v {
                keyhold_core::AttrValue::Text(t) => t == identity || t == "*",
                _ => false,
            })
    }

    /// The break-glass check shared by every use of key material.
    pub fn refuse_in_lockdown(&self) -> Result<()> {
        if self.is_locked_down() {
            return Err(Error::InvalidState(
                "Keyhold is locked down: every key is refused until `keyhold unlock`".into(),
            ));
        }
        Ok(())
    }
}
