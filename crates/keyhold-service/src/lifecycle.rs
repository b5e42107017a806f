//! Key lifecycle administration: the state machine (NIST SP 800-57 / KMIP
//! states), scheduled destruction with a waiting period, crypto-shredding,
//! rotation schedules, retired and compromised versions, and lockdown.
//!
//! Every transition is one storage write; the caches are dropped after it
//! (and other processes notice through the storage change token).

use crate::service::{KeyService, LOCKDOWN_META};
use keyhold_core::{Error, Key, KeyId, KeyState, Result, StorePrefix, Timestamp, VersionFlag};

/// The counter of restricting changes (see [`KeyService::bump_epoch`]).
pub(crate) const EPOCH_META: &str = "break_glass_epoch";

/// Waiting period before a scheduled destruction, in days (as AWS KMS).
pub const MIN_DESTROY_DAYS: u32 = 7;
pub const MAX_DESTROY_DAYS: u32 = 30;

/// A lifecycle transition an operator (or a KMIP client) asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Activate,
    Deactivate,
    Compromise,
    Destroy,
}

/// The state after `t` from `from`, or why it is not allowed.
///
/// | from \ to   | Activate | Deactivate | Compromise | Destroy |
/// |-------------|----------|------------|------------|---------|
/// | PRE_ACTIVE  | ACTIVE   | DEACTIVATED| COMPROMISED| yes     |
/// | ACTIVE      | –        | DEACTIVATED| COMPROMISED| yes     |
/// | DEACTIVATED | –        | –          | COMPROMISED| yes     |
/// | COMPROMISED | –        | –          | –          | yes     |
/// | DESTROYED   | –        | –          | –          | –       |
pub fn next_state(from: KeyState, t: Transition) -> Result<KeyState> {
    use KeyState::*;
    let to = match (from, t) {
        (PreActive, Transition::Activate) => Active,
        (PreActive | Active, Transition::Deactivate) => Deactivated,
        (PreActive | Active | Deactivated, Transition::Compromise) => Compromised,
        (PreActive | Active | Deactivated | Compromised, Transition::Destroy) => Destroyed,
        _ => {
            return Err(Error::InvalidState(format!(
                "a {from} key cannot be {}",
                match t {
                    Transition::Activate => "activated",
                    Transition::Deactivate => "deactivated",
                    Transition::Compromise => "marked compromised",
                    Transition::Destroy => "destroyed",
                }
            )))
        }
    };
    Ok(to)
}

/// What a due-task run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DueReport {
    pub destroyed: Vec<(StorePrefix, KeyId)>,
    pub rotated: Vec<(StorePrefix, KeyId)>,
    pub failed: Vec<(StorePrefix, KeyId, String)>,
}

impl KeyService {
    fn transition(&self, prefix: &StorePrefix, id: &KeyId, t: Transition) -> Result<Key> {
        let mut key = self.get_key(prefix, id)?;
        let now = self.now();
        if key.lifecycle.pending_destruction() && t != Transition::Destroy {
            return Err(Error::InvalidState(format!(
                "key {id} is scheduled for destruction; cancel that first"
            )));
        }
        // Dates already passed count: an active-by-date key is ACTIVE.
        let from = key.lifecycle.state_at(now);
        let to = next_state(from, t)?;
        let l = &mut key.lifecycle;
        l.state = to;
        match t {
            Transition::Activate => l.activate_at = None,
            Transition::Deactivate => {
                if from == KeyState::Active && l.deactivate_at.is_some_and(|d| d <= now) {
                    // Already deactivated by date: keep the date.
                } else {
                    l.deactivate_at = Some(now);
                }
                l.next_rotation_at = None;
            }
            Transition::Compromise => {
                l.compromised_at = Some(now);
                l.next_rotation_at = None;
            }
            Transition::Destroy => unreachable!("destroy goes through destroy_now"),
        }
        self.storage()
            .set_key_lifecycle(prefix, id, &key.lifecycle)?;
        self.after_write(crate::service::key_scope(prefix, id));
        Ok(key)
    }

    /// PRE_ACTIVE → ACTIVE.
    pub fn activate_key(&self, prefix: &StorePrefix, id: &KeyId) -> Result<Key> {
        self.transition(prefix, id, Transition::Activate)
    }

    /// ACTIVE (or PRE_ACTIVE) → DEACTIVATED: decrypt only from now on.
    pub fn deactivate_key(&self, prefix: &StorePrefix, id: &KeyId) -> Result<Key> {
        self.transition(prefix, id, Transition::Deactivate)
    }

    /// Any live state → COMPROMISED: decrypt only, reported on every use.
    pub fn compromise_key(&self, prefix: &StorePrefix, id: &KeyId) -> Result<Key> {
        self.transition(prefix, id, Transition::Compromise)
    }

    /// Sets (or clears) the dates on which a key activates and deactivates
    /// by itself. Activation dates only apply to PRE_ACTIVE keys.
    pub fn set_key_dates(
        &self,
        prefix: &StorePrefix,
        id: &KeyId,
        activate_at: Option<Option<Timestamp>>,
        deactivate_at: Option<Option<Timestamp>>,
    ) -> Result<Key> {
        let mut key = self.get_key(prefix, id)?;
        let now = self.now();
        let l = &mut key.lifecycle;
        if let Some(a) = activate_at {
            let state = l.state_at(now);
            if a.is_some() && state != KeyState::PreActive {
                return Err(Error::InvalidState(format!(
                    "key {id} is {state}: only a PRE_ACTIVE key takes an activation date"
                )));
            }
            l.activate_at = a;
        }
        if let Some(d) = deactivate_at {
            if matches!(l.state, KeyState::Destroyed | KeyState::Compromised) {
                return Err(Error::InvalidState(format!("key {id} is {}", l.state)));
            }
            l.deactivate_at = d;
        }
        if let (Some(a), Some(d)) = (l.activate_at, l.deactivate_at) {
            if d <= a {
                return Err(Error::invalid(
                    "deactivation date",
                    "must be after the activation date",
                ));
            }
        }
        self.storage()
            .set_key_lifecycle(prefix, id, &key.lifecycle)?;
        self.after_write(crate::service::key_scope(prefix, id));
        Ok(key)
    }

    /// Schedules destruction in `days` (7–30); the key is refused meanwhile,
    /// and [`KeyService::cancel_destroy`] brings it back as it was.
    pub fn schedule_destroy(&self, prefix: &StorePrefix, id: &KeyId, days: u32) -> Result<Key> {
        if !(MIN_DESTROY_DAYS..=MAX_DESTROY_DAYS).contains(&days) {
            return Err(Error::invalid(
                "waiting period",
                format!("must be {MIN_DESTROY_DAYS} to {MAX_DESTROY_DAYS} days (or destroy --now)"),
            ));
        }
        let mut key = self.get_key(prefix, id)?;
        next_state(key.lifecycle.state, Transition::Destroy)?;
        if key.lifecycle.pending_destruction() {
            return Err(Error::InvalidState(format!(
                "key {id} is already scheduled for destruction"
            )));
        }
        key.lifecycle.destroy_at = Some(self.now() + i64::from(days) * 86_400);
        self.storage()
            .set_key_lifecycle(prefix, id, &key.lifecycle)?;
        self.after_write(crate::service::key_scope(prefix, id));
        Ok(key)
    }

    /// Cancels a scheduled destruction.
    pub fn cancel_destroy(&self, prefix: &StorePrefix, id: &KeyId) -> Result<Key> {
        let mut key = self.get_key(prefix, id)?;
        if !key.lifecycle.pending_destruction() {
            return Err(Error::InvalidState(format!(
                "key {id} is not scheduled for destruction"
            )));
        }
        key.lifecycle.destroy_at = None;
        self.storage()
            .set_key_lifecycle(prefix, id, &key.lifecycle)?;
        self.after_write(crate::service::key_scope(prefix, id));
        Ok(key)
    }

    /// Crypto-shredding now: every version's wrapped material is erased from
    /// storage (and the caches); an HSM-resident key is destroyed in the HSM.
    pub fn destroy_now(&self, prefix: &StorePrefix, id: &KeyId) -> Result<Key> {
        let key = match self.get_key(prefix, id) {
            // A row changed outside Keyhold: destroying only takes power
            // away, so it is allowed, but nothing the row says is trusted
            // (an HSM label in it could name another key): only the
            // wrapped material in the database is shredded.
            Err(Error::Integrity(why)) => {
                tracing::warn!(target: "keyhold::audit", action = "destroy", store = %prefix, key = %id, %why, "destroying a key whose row does not verify");
                self.storage()
                    .destroy_key_material(prefix, id, self.now())?;
                self.after_write(crate::service::key_scope(prefix, id));
                self.storage().purge_erased_copies()?;
                return self.get_key(prefix, id);
            }
            r => r?,
        };
        next_state(key.lifecycle.state, Transition::Destroy)?;
        if let Some(label) = &key.hsm_label {
            let hsm = self.hsm()?;
            for v in 1..=key.current_version {
                hsm.destroy_key(&crate::service::hsm_version_label(label, v))?;
            }
        }
        self.storage()
            .destroy_key_material(prefix, id, self.now())?;
        self.after_write(crate::service::key_scope(prefix, id));
        self.storage().purge_erased_copies()?;
        tracing::warn!(target: "keyhold::audit", action = "destroy", store = %prefix, key = %id, "key destroyed (crypto-shredded)");
        self.get_key(prefix, id)
    }

    /// Sets (or with `None`, clears) automatic rotation every `period`
    /// seconds, counted from the current version's creation.
    pub fn set_rotation_period(
        &self,
        prefix: &StorePrefix,
        id: &KeyId,
        period: Option<i64>,
    ) -> Result<Key> {
        let mut key = self.get_key(prefix, id)?;
        if let Some(p) = period {
            if p < 86_400 {
                return Err(Error::invalid(
                    "rotation period",
                    "must be at least one day",
                ));
            }
        }
        let current = self
            .storage()
            .get_key_version(prefix, id, key.current_version)?
            .map(|v| v.created_at)
            .unwrap_or(key.created_at);
        key.lifecycle.rotation_period = period;
        key.lifecycle.next_rotation_at = period.map(|p| current + p);
        self.storage()
            .set_key_lifecycle(prefix, id, &key.lifecycle)?;
        self.after_write(crate::service::key_scope(prefix, id));
        Ok(key)
    }

    /// Retires every version below `min`: they no longer decrypt. The
    /// versions from `min` up must still have their material.
    pub fn set_min_decrypt_version(
        &self,
        prefix: &StorePrefix,
        id: &KeyId,
        min: u32,
    ) -> Result<Key> {
        let mut key = self.get_key(prefix, id)?;
        if min == 0 || min > key.current_version {
            return Err(Error::invalid(
                "minimum decryption version",
                format!("must be 1 to {} (the current version)", key.current_version),
            ));
        }
        let versions = self.storage().list_key_versions(prefix, id)?;
        if key.hsm_label.is_none() && versions.iter().any(|v| v.version >= min && !v.has_material) {
            return Err(Error::InvalidState(format!(
                "versions of key {id} from {min} up were already destroyed"
            )));
        }
        key.lifecycle.min_decrypt_version = min;
        self.storage()
            .set_key_lifecycle(prefix, id, &key.lifecycle)?;
        self.after_write(crate::service::key_scope(prefix, id));
        Ok(key)
    }

    /// Crypto-shreds the retired versions (below the minimum decryption
    /// version); returns how many were erased.
    pub fn trim_versions(&self, prefix: &StorePrefix, id: &KeyId) -> Result<u64> {
        let key = self.get_key(prefix, id)?;
        if let Some(label) = &key.hsm_label {
            // The HSM's keys first: absent ones count as destroyed, so a
            // second run finishes what an interrupted one began.
            let hsm = self.hsm()?;
            for v in 1..key.lifecycle.min_decrypt_version {
                hsm.destroy_key(&crate::service::hsm_version_label(label, v))?;
            }
        }
        let n =
            self.storage()
                .shred_versions_below(prefix, id, key.lifecycle.min_decrypt_version)?;
        self.after_write(crate::service::key_scope(prefix, id));
        if n > 0 {
            self.storage().purge_erased_copies()?;
        }
        Ok(n)
    }

    /// Marks one version compromised (decrypt refused), or compromised but
    /// allowed by explicit override (decrypt reported), or good again.
    pub fn set_version_flag(
        &self,
        prefix: &StorePrefix,
        id: &KeyId,
        version: u32,
        flag: VersionFlag,
    ) -> Result<()> {
        self.get_key(prefix, id)?;
        self.storage().set_version_flag(prefix, id, version, flag)?;
        self.after_write(crate::service::key_scope(prefix, id));
        Ok(())
    }

    /// `keyhold lockdown` / `keyhold unlock`: every key refused on every
    /// front-end, or not.
    pub fn set_lockdown(&self, on: bool) -> Result<()> {
        let v = self.row_key.lockdown_value(on, self.now());
        self.storage().set_meta(LOCKDOWN_META, Some(&v))?;
        self.set_locked_down(on);
        self.after_write(keyhold_storage::ChangeScope::Meta(LOCKDOWN_META.into()));
        Ok(())
    }

    /// Marks that a restricting change (break glass, deactivation,
    /// destruction…) was committed; returns the epoch that servers must
    /// acknowledge for it to hold (see keyhold-server's presence module).
    pub fn bump_epoch(&self) -> Result<u64> {
        self.storage().bump_counter(EPOCH_META)
    }

    /// The break-glass epoch as stored now.
    pub fn epoch(&self) -> Result<u64> {
        Ok(self
            .storage()
            .get_meta(EPOCH_META)?
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// Carries out what is due at the service's time: destructions whose
    /// waiting period ended, and scheduled rotations. The server runs this
    /// periodically; it is safe to run from several processes (rotation is
    /// compare-and-set on the version number).
    pub fn run_due(&self) -> Result<DueReport> {
        let now = self.now();
        let mut report = DueReport::default();
        for key in self.storage().due_keys(now, 1_000)? {
            let (p, id) = (key.store.clone(), key.id.clone());
            let l = &key.lifecycle;
            let r = if l.pending_destruction() && l.destroy_at.is_some_and(|t| t <= now) {
                self.destroy_now(&p, &id).map(|_| {
                    report.destroyed.push((p.clone(), id.clone()));
                })
            } else if l.next_rotation_at.is_some_and(|t| t <= now) {
                self.rotate_key(&p, &id).map(|_| {
                    report.rotated.push((p.clone(), id.clone()));
                })
            } else {
                Ok(())
            };
            if let Err(e) = r {
                tracing::error!(store = %p, key = %id, error = %e, "scheduled key task failed");
                report.failed.push((p, id, e.to_string()));
            }
        }
        // Keys whose current version is past half its random-IV bound.
        for (store, key) in self.gcm.take_rotations() {
            let (Ok(p), Ok(id)) = (StorePrefix::parse(&store), KeyId::parse(&key)) else {
                continue;
            };
            match self.rotate_key(&p, &id) {
                Ok(_) => {
                    tracing::warn!(store = %p, key = %id, "rotated: the current version was past 2^31 AES-GCM encryptions with random IVs");
                    report.rotated.push((p, id));
                }
                Err(e) => {
                    tracing::error!(store = %p, key = %id, error = %e, "rotation for the AES-GCM bound failed");
                    report.failed.push((p, id, e.to_string()));
                }
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyhold_core::KeyState::*;

    #[test]
    fn every_transition_allowed_or_refused() {
        let all = [PreActive, Active, Deactivated, Compromised, Destroyed];
        let ts = [
            Transition::Activate,
            Transition::Deactivate,
            Transition::Compromise,
            Transition::Destroy,
        ];
        let expected = |from: KeyState, t: Transition| -> Option<KeyState> {
            match (from, t) {
                (PreActive, Transition::Activate) => Some(Active),
                (PreActive | Active, Transition::Deactivate) => Some(Deactivated),
                (Destroyed | Compromised, Transition::Compromise) => None,
                (_, Transition::Compromise) => Some(Compromised),
                (Destroyed, Transition::Destroy) => None,
                (_, Transition::Destroy) => Some(Destroyed),
                _ => None,
            }
        };
        let mut allowed = 0;
        for from in all {
            for t in ts {
                match (next_state(from, t), expected(from, t)) {
                    (Ok(to), Some(e)) => {
                        assert_eq!(to, e, "{from:?} {t:?}");
                        allowed += 1;
                    }
                    (Err(Error::InvalidState(m)), None) => assert!(m.contains(from.as_str())),
                    (r, e) => panic!("{from:?} {t:?}: got {r:?}, expected {e:?}"),
                }
            }
        }
        assert_eq!(allowed, 10);
    }

    use crate::{KeyService, Operation};
    use keyhold_core::{KeyId, Lifecycle, ManualClock, Status, StorePrefix, Usage};
    use keyhold_root::SoftwareRoot;
    use keyhold_storage::SqliteStorage;
    use std::sync::Arc;

    const T0: i64 = 1_800_000_000;

    fn service() -> (tempfile::TempDir, Arc<ManualClock>, KeyService, StorePrefix) {
        let dir = tempfile::tempdir().unwrap();
        let root = SoftwareRoot::create(&dir.path().join("root.key"), None).unwrap();
        let st = SqliteStorage::open(&dir.path().join("k.db")).unwrap();
        let clock = Arc::new(ManualClock::new(T0));
        let s = KeyService::open_with_clock(Arc::new(st), Arc::new(root), clock.clone()).unwrap();
        let p = StorePrefix::parse("/t").unwrap();
        s.create_store(&p, "").unwrap();
        (dir, clock, s, p)
    }

    fn can(s: &KeyService, p: &StorePrefix, id: &str, op: Operation) -> Result<()> {
        let h = s.key_handle(p, id)?;
        s.authorize(&h, op)
    }

    #[test]
    fn dates_activate_and_deactivate_on_their_own() {
        let (_d, clock, s, p) = service();
        let id = KeyId::parse("k").unwrap();
        let l = Lifecycle {
            state: PreActive,
            activate_at: Some(T0 + 100),
            deactivate_at: Some(T0 + 200),
            ..Lifecycle::default()
        };
        s.create_keys_with(&p, std::slice::from_ref(&id), Usage::BOTH, &l)
            .unwrap();
        assert!(matches!(
            can(&s, &p, "k", Operation::Encrypt),
            Err(Error::InvalidState(_))
        ));
        let h = s.key_handle(&p, "k").unwrap();
        assert_eq!(s.reported(&h).0, Status::Disabled);
        clock.set(T0 + 100);
        can(&s, &p, "k", Operation::Encrypt).unwrap();
        assert_eq!(s.reported(&h), (Status::Enabled, Usage::BOTH));
        clock.set(T0 + 200);
        assert!(matches!(
            can(&s, &p, "k", Operation::Encrypt),
            Err(Error::KeyUsage(_))
        ));
        can(&s, &p, "k", Operation::Decrypt).unwrap();
        let (st, u) = s.reported(&h);
        assert_eq!((st, u.encrypt, u.decrypt), (Status::Enabled, false, true));
        // An activation date belongs to PRE_ACTIVE keys only.
        assert!(s.set_key_dates(&p, &id, Some(Some(T0)), None).is_err());
    }

    #[test]
    fn transitions_through_the_service() {
        let (_d, _clock, s, p) = service();
        let id = KeyId::parse("k").unwrap();
        let l = Lifecycle {
            state: PreActive,
            ..Lifecycle::default()
        };
        s.create_keys_with(&p, std::slice::from_ref(&id), Usage::BOTH, &l)
            .unwrap();
        assert!(
            s.deactivate_key(&p, &id).is_ok(),
            "PRE_ACTIVE → DEACTIVATED"
        );
        assert!(s.activate_key(&p, &id).is_err(), "no way back");
        s.compromise_key(&p, &id).unwrap();
        assert!(s.compromise_key(&p, &id).is_err());
        assert!(matches!(
            can(&s, &p, "k", Operation::Encrypt),
            Err(Error::KeyUsage(_))
        ));
        can(&s, &p, "k", Operation::Decrypt).unwrap();
        assert_eq!(
            s.get_key(&p, &id).unwrap().lifecycle.compromised_at,
            Some(T0)
        );
        assert!(
            s.rotate_key(&p, &id).is_err(),
            "a compromised key does not rotate"
        );
    }

    #[test]
    fn destruction_waits_can_be_cancelled_and_shreds() {
        let (_d, clock, s, p) = service();
        let id = KeyId::parse("k").unwrap();
        s.create_key(&p, &id, Usage::BOTH).unwrap();
        assert!(s.schedule_destroy(&p, &id, 6).is_err());
        assert!(s.schedule_destroy(&p, &id, 31).is_err());
        s.schedule_destroy(&p, &id, 7).unwrap();
        assert!(s.schedule_destroy(&p, &id, 7).is_err());
        assert!(matches!(
            can(&s, &p, "k", Operation::Decrypt),
            Err(Error::InvalidState(m)) if m.contains("scheduled for destruction")
        ));
        assert!(s.deactivate_key(&p, &id).is_err(), "pending: cancel first");
        s.cancel_destroy(&p, &id).unwrap();
        can(&s, &p, "k", Operation::Encrypt).unwrap();
        assert!(s.cancel_destroy(&p, &id).is_err());

        s.schedule_destroy(&p, &id, 7).unwrap();
        clock.advance(7 * 86_400 - 1);
        assert!(s.run_due().unwrap().destroyed.is_empty());
        clock.advance(1);
        let r = s.run_due().unwrap();
        assert_eq!(r.destroyed, vec![(p.clone(), id.clone())]);
        let k = s.get_key(&p, &id).unwrap();
        assert_eq!(k.lifecycle.state, Destroyed);
        assert!(s
            .storage()
            .list_key_versions(&p, &id)
            .unwrap()
            .iter()
            .all(|v| !v.has_material));
        assert!(matches!(
            can(&s, &p, "k", Operation::Decrypt),
            Err(Error::InvalidState(m)) if m.contains("destroyed")
        ));
        assert!(s.cancel_destroy(&p, &id).is_err());
        assert!(s.destroy_now(&p, &id).is_err());
        assert!(s.run_due().unwrap().destroyed.is_empty());
    }

    #[test]
    fn rotation_schedule_retired_and_compromised_versions() {
        let (_d, clock, s, p) = service();
        let id = KeyId::parse("k").unwrap();
        s.create_key(&p, &id, Usage::BOTH).unwrap();
        assert!(s.set_rotation_period(&p, &id, Some(3600)).is_err());
        s.set_rotation_period(&p, &id, Some(90 * 86_400)).unwrap();
        // Encrypt under v1.
        let h = s.key_handle(&p, "k").unwrap();
        let (v, k) = h.current().unwrap();
        assert_eq!(v, 1);
        let mut ct = b"data key".to_vec();
        let (iv, tag) = k.seal(b"", &mut ct).unwrap();

        clock.advance(90 * 86_400);
        assert_eq!(s.run_due().unwrap().rotated.len(), 1);
        assert!(
            s.run_due().unwrap().rotated.is_empty(),
            "next one in 90 days"
        );
        let key = s.get_key(&p, &id).unwrap();
        assert_eq!(key.current_version, 2);
        assert_eq!(key.lifecycle.next_rotation_at, Some(T0 + 180 * 86_400));
        // v1 still decrypts after the rotation.
        let h = s.key_handle(&p, "k").unwrap();
        let (m, _) = s.key_version(&h, 1).unwrap();
        assert_eq!(m.open(&iv, b"", &ct, &tag).unwrap().expose(), b"data key");

        // Retire v1: refused with InvalidState; then shred it.
        s.set_min_decrypt_version(&p, &id, 2).unwrap();
        let h = s.key_handle(&p, "k").unwrap();
        assert!(
            matches!(s.key_version(&h, 1), Err(Error::InvalidState(m)) if m.contains("retired"))
        );
        assert!(s.set_min_decrypt_version(&p, &id, 3).is_err());
        assert_eq!(s.trim_versions(&p, &id).unwrap(), 1);
        s.set_min_decrypt_version(&p, &id, 1).unwrap_err();

        // A compromised version is refused, or allowed by override.
        s.rotate_key(&p, &id).unwrap();
        s.set_version_flag(&p, &id, 2, VersionFlag::Compromised)
            .unwrap();
        let h = s.key_handle(&p, "k").unwrap();
        assert!(
            matches!(s.key_version(&h, 2), Err(Error::InvalidState(m)) if m.contains("compromised"))
        );
        s.set_version_flag(&p, &id, 2, VersionFlag::CompromisedAllowed)
            .unwrap();
        let h = s.key_handle(&p, "k").unwrap();
        assert_eq!(
            s.key_version(&h, 2).unwrap().1,
            VersionFlag::CompromisedAllowed
        );
        // A compromised current version stops encryption.
        s.set_version_flag(&p, &id, 3, VersionFlag::Compromised)
            .unwrap();
        assert!(matches!(
            can(&s, &p, "k", Operation::Encrypt),
            Err(Error::KeyUsage(_))
        ));
    }

    #[test]
    fn lockdown_refuses_everything_but_metadata() {
        let (_d, _clock, s, p) = service();
        let id = KeyId::parse("k").unwrap();
        s.create_key(&p, &id, Usage::BOTH).unwrap();
        s.set_lockdown(true).unwrap();
        assert!(s.is_locked_down());
        for op in [Operation::Encrypt, Operation::Decrypt] {
            assert!(
                matches!(can(&s, &p, "k", op), Err(Error::InvalidState(m)) if m.contains("locked down"))
            );
        }
        can(&s, &p, "k", Operation::Metadata).unwrap();
        let h = s.key_handle(&p, "k").unwrap();
        assert_eq!(s.reported(&h).0, Status::Disabled);
        s.set_lockdown(false).unwrap();
        can(&s, &p, "k", Operation::Encrypt).unwrap();
        assert_eq!(s.bump_epoch().unwrap(), 1);
        assert_eq!(s.bump_epoch().unwrap(), 2);
        assert_eq!(s.epoch().unwrap(), 2);
    }
}
