//! The rules of managed objects (KMIP keys and secrets, and XKS keys seen
//! through KMIP): their state machine with activation and deactivation
//! dates, what a use needs (state, type, usage mask, protect and process
//! dates, usage limits) and when material may leave (exportability).
//!
//! Objects keep their attributes under the names KMIP gives them; the
//! constants below are those names. A refusal says why in a [`Refusal`]
//! (front-ends map it to their protocol's error) and in words.

use keyhold_core::{AttrValue, ManagedObject, ObjectState};

/// Attribute names the rules read and write.
pub mod attr {
    pub const ACTIVATION_DATE: &str = "Activation Date";
    pub const DEACTIVATION_DATE: &str = "Deactivation Date";
    pub const USAGE_MASK: &str = "Cryptographic Usage Mask";
    pub const PROTECT_STOP_DATE: &str = "Protect Stop Date";
    pub const PROCESS_START_DATE: &str = "Process Start Date";
    pub const USAGE_LIMITS: &str = "Usage Limits";
    pub const SENSITIVE: &str = "Sensitive";
    pub const COMPROMISE_DATE: &str = "Compromise Date";
    pub const COMPROMISE_OCCURRENCE_DATE: &str = "Compromise Occurrence Date";
    pub const DESTROY_DATE: &str = "Destroy Date";
}

/// The fields of the Usage Limits structure, by their KMIP tags.
pub mod usage_limits_field {
    pub const COUNT: u32 = 0x420096;
    pub const TOTAL: u32 = 0x420097;
    pub const UNIT: u32 = 0x420098;
    /// Unit value: a use is a whole operation (else a byte).
    pub const UNIT_OBJECT: i64 = 2;
}

/// Cryptographic Usage Mask bits.
pub mod usage {
    pub const SIGN: i32 = 0x01;
    pub const VERIFY: i32 = 0x02;
    pub const ENCRYPT: i32 = 0x04;
    pub const DECRYPT: i32 = 0x08;
    pub const WRAP_KEY: i32 = 0x10;
    pub const MAC_GENERATE: i32 = 0x80;
    pub const MAC_VERIFY: i32 = 0x100;
}

/// KMIP Object Types the rules tell apart.
pub const CERTIFICATE: u32 = 1;
pub const SYMMETRIC_KEY: u32 = 2;
pub const PUBLIC_KEY: u32 = 3;
pub const PRIVATE_KEY: u32 = 4;

/// Why a rule refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The object's state (with its dates) does not allow it.
    WrongState,
    /// A symmetric key is needed.
    NotSymmetric,
    /// The object's usage mask does not allow it.
    UsageMask,
    /// Protecting (encrypting, making MACs) past the Protect Stop Date.
    PastProtectStop,
    /// Processing (decrypting, verifying) before the Process Start Date.
    BeforeProcessStart,
    /// The object's Usage Limits are used up.
    UsageLimits,
    /// The material was destroyed.
    Destroyed,
    /// The material is Sensitive: never returned.
    Sensitive,
    /// The material is not exportable.
    NotExtractable,
    /// Exportability only ever narrows: a non-exportable object stays so.
    ExportabilityNarrowsOnly,
}

/// A refusal and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub why: Refusal,
    pub message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn refuse(why: Refusal, message: String) -> Refused {
    Refused { why, message }
}

/// What an object is used for: its usage-mask bit and, in words, what it
/// does ("… can `what`").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purpose {
    pub mask: i32,
    pub what: &'static str,
}

impl Purpose {
    pub const ENCRYPT: Purpose = Purpose {
        mask: usage::ENCRYPT,
        what: "encrypt",
    };
    pub const DECRYPT: Purpose = Purpose {
        mask: usage::DECRYPT,
        what: "decrypt",
    };
    pub const MAC_GENERATE: Purpose = Purpose {
        mask: usage::MAC_GENERATE,
        what: "make MACs",
    };
    pub const MAC_VERIFY: Purpose = Purpose {
        mask: usage::MAC_VERIFY,
        what: "verify MACs",
    };
    pub const WRAP_KEY: Purpose = Purpose {
        mask: usage::WRAP_KEY,
        what: "wrap keys",
    };
    pub const SIGN: Purpose = Purpose {
        mask: usage::SIGN,
        what: "sign",
    };
    pub const VERIFY: Purpose = Purpose {
        mask: usage::VERIFY,
        what: "verify signatures",
    };

    /// Protecting (encrypting, making MACs) rather than processing.
    fn protects(self) -> bool {
        self.mask & (usage::ENCRYPT | usage::MAC_GENERATE | usage::SIGN) != 0
    }
}

fn date(o: &ManagedObject, name: &str) -> Option<i64> {
    match o.attr(name) {
        Some(AttrValue::DateTime(t)) => Some(*t),
        _ => None,
    }
}

/// The state an object is in at `now`, its activation and deactivation
/// dates taken into account.
pub fn effective_state(o: &ManagedObject, now: i64) -> ObjectState {
    let mut s = o.state;
    if s == ObjectState::PreActive && date(o, attr::ACTIVATION_DATE).is_some_and(|t| t <= now) {
        s = ObjectState::Active;
    }
    if s == ObjectState::Active && date(o, attr::DEACTIVATION_DATE).is_some_and(|t| t <= now) {
        s = ObjectState::Deactivated;
    }
    s
}

/// A refusal for an object in the wrong state: "object U is STATE: `what`".
pub fn wrong_state(o: &ManagedObject, now: i64, what: &str) -> Refused {
    refuse(
        Refusal::WrongState,
        format!(
            "object {} is {}: {what}",
            o.uid,
            effective_state(o, now).name()
        ),
    )
}

/// Whether the object is Active now (`what`: what only an Active object may).
pub fn check_active(o: &ManagedObject, now: i64, what: &str) -> Result<(), Refused> {
    if effective_state(o, now) != ObjectState::Active {
        return Err(wrong_state(o, now, what));
    }
    Ok(())
}

/// Whether the symmetric key `o` may be used for `p` now: Active, its
/// usage mask allowing it, protecting before the Protect Stop Date and
/// processing from the Process Start Date.
pub fn check_use(o: &ManagedObject, p: Purpose, now: i64) -> Result<(), Refused> {
    check_active(o, now, &format!("only an Active key can {}", p.what))?;
    if o.object_type != SYMMETRIC_KEY {
        return Err(refuse(
            Refusal::NotSymmetric,
            format!("object {} is not a symmetric key", o.uid),
        ));
    }
    check_use_rules(o, p, now)
}

/// Whether the private or public key `o` may be used for `p` now: the
/// private key of a pair signs and decrypts, the public key (or a
/// certificate) verifies and encrypts; then as for symmetric keys. Signing,
/// decrypting and encrypting need an Active key; a Deactivated public key
/// still verifies what was signed before.
pub fn check_asymmetric_use(o: &ManagedObject, p: Purpose, now: i64) -> Result<(), Refused> {
    let private = p.mask & (usage::SIGN | usage::DECRYPT) != 0;
    let fits = if private {
        o.object_type == PRIVATE_KEY
    } else {
        matches!(o.object_type, PUBLIC_KEY | CERTIFICATE)
    };
    if !fits {
        let want = if private {
            "a private key"
        } else {
            "a public key or certificate"
        };
        return Err(refuse(
            Refusal::NotSymmetric,
            format!("object {} is not {want}: it cannot {}", o.uid, p.what),
        ));
    }
    if private || p.protects() {
        check_active(o, now, &format!("only an Active key can {}", p.what))?;
    } else if !matches!(
        effective_state(o, now),
        ObjectState::Active | ObjectState::Deactivated
    ) {
        return Err(wrong_state(o, now, &format!("it cannot {}", p.what)));
    }
    check_use_rules(o, p, now)
}

/// The usage mask and the protect and process dates.
fn check_use_rules(o: &ManagedObject, p: Purpose, now: i64) -> Result<(), Refused> {
    let uid = &o.uid;
    let what = p.what;
    if let Some(AttrValue::Int(m)) = o.attr(attr::USAGE_MASK) {
        if m & p.mask == 0 {
            return Err(refuse(
                Refusal::UsageMask,
                format!("the usage mask of object {uid} does not allow it to {what}"),
            ));
        }
    }
    if p.protects() && date(o, attr::PROTECT_STOP_DATE).is_some_and(|t| t <= now) {
        return Err(refuse(
            Refusal::PastProtectStop,
            format!("object {uid} is past its Protect Stop Date: it can no longer {what}"),
        ));
    }
    if !p.protects() && date(o, attr::PROCESS_START_DATE).is_some_and(|t| t > now) {
        return Err(refuse(
            Refusal::BeforeProcessStart,
            format!("object {uid} is before its Process Start Date: it cannot {what} yet"),
        ));
    }
    Ok(())
}

/// An object's Usage Limits: the uses left (the Count, else the Total)
/// and whether a use is a whole operation rather than a byte. None when
/// the object has no limits.
pub fn usage_limits(o: &ManagedObject) -> Option<(i64, bool)> {
    let Some(AttrValue::Struct(fields)) = o.attr(attr::USAGE_LIMITS) else {
        return None;
    };
    let get = |tag: u32| {
        fields.iter().find_map(|(t, v)| match (*t == tag, v) {
            (true, AttrValue::Long(n)) => Some(*n),
            (true, AttrValue::Int(n)) => Some(i64::from(*n)),
            (true, AttrValue::Enum(n)) => Some(i64::from(*n)),
            _ => None,
        })
    };
    let total = get(usage_limits_field::TOTAL)?;
    let left = get(usage_limits_field::COUNT).unwrap_or(total);
    Some((
        left,
        get(usage_limits_field::UNIT) == Some(usage_limits_field::UNIT_OBJECT),
    ))
}

/// Counts a use of `data_len` bytes against the object's Usage Limits:
/// refused past them; true when the object changed (and must be saved).
pub fn charge_usage(o: &mut ManagedObject, data_len: usize) -> Result<bool, Refused> {
    let Some((left, per_object)) = usage_limits(o) else {
        return Ok(false);
    };
    let need = if per_object { 1 } else { data_len as i64 };
    if need > left {
        return Err(refuse(
            Refusal::UsageLimits,
            format!(
                "object {} has used up its Usage Limits ({left} left, {need} asked)",
                o.uid
            ),
        ));
    }
    let Some(AttrValue::Struct(fields)) = o.attr(attr::USAGE_LIMITS) else {
        return Ok(false);
    };
    let mut next: Vec<(u32, AttrValue)> = fields
        .iter()
        .filter(|(tag, _)| *tag != usage_limits_field::COUNT)
        .cloned()
        .collect();
    next.push((usage_limits_field::COUNT, AttrValue::Long(left - need)));
    o.set_attr(attr::USAGE_LIMITS, AttrValue::Struct(next));
    Ok(true)
}

/// Whether the object would allow the usage mask `mask` and `uses` more
/// uses (KMIP Check).
pub fn check_allows(
    o: &ManagedObject,
    mask: Option<i32>,
    uses: Option<i64>,
) -> Result<(), Refused> {
    let uid = &o.uid;
    if let Some(want) = mask {
        let have = match o.attr(attr::USAGE_MASK) {
            Some(AttrValue::Int(m)) => *m,
            _ => 0,
        };
        if have & want != want {
            return Err(refuse(
                Refusal::UsageMask,
                format!("the usage mask of object {uid} does not allow {want:#x}"),
            ));
        }
    }
    if let Some(n) = uses {
        if usage_limits(o).is_some_and(|(left, _)| n > left) {
            return Err(refuse(
                Refusal::UsageLimits,
                format!("object {uid} has fewer than {n} uses left"),
            ));
        }
    }
    Ok(())
}

/// Whether the object's material may leave Keyhold now: not destroyed,
/// not Sensitive, exportable.
pub fn check_export(o: &ManagedObject, now: i64) -> Result<(), Refused> {
    let uid = &o.uid;
    if effective_state(o, now).is_destroyed() || !o.has_material {
        return Err(refuse(
            Refusal::Destroyed,
            format!("object {uid} is destroyed: its material is gone"),
        ));
    }
    if o.attr(attr::SENSITIVE) == Some(&AttrValue::Bool(true)) {
        return Err(refuse(
            Refusal::Sensitive,
            format!("object {uid} is sensitive: its material is never returned"),
        ));
    }
    if !o.exportable {
        return Err(refuse(
            Refusal::NotExtractable,
            format!("object {uid} is not exportable: its key material never leaves Keyhold"),
        ));
    }
    Ok(())
}

/// Sets whether the material may leave (`creating`: the object is being
/// made, and may start either way). Once not exportable, an object stays
/// so; a Sensitive object is not exportable.
pub fn set_exportable(
    o: &mut ManagedObject,
    exportable: bool,
    creating: bool,
) -> Result<(), Refused> {
    if exportable && !o.exportable && !creating {
        return Err(refuse(
            Refusal::ExportabilityNarrowsOnly,
            "a non-extractable object cannot be made extractable".into(),
        ));
    }
    o.exportable = exportable;
    Ok(())
}

/// Whether the activation date may still be set: only before activation
/// (or while the object is being made).
pub fn check_activation_date_change(
    o: &ManagedObject,
    now: i64,
    creating: bool,
) -> Result<(), Refused> {
    if !creating && o.state != ObjectState::PreActive {
        return Err(wrong_state(
            o,
            now,
            "the activation date can only change before activation",
        ));
    }
    Ok(())
}

/// PreActive → Active, now.
pub fn activate(o: &mut ManagedObject, now: i64) -> Result<(), Refused> {
    if effective_state(o, now) != ObjectState::PreActive {
        return Err(wrong_state(
            o,
            now,
            "only a PreActive object can be activated",
        ));
    }
    o.state = ObjectState::Active;
    o.set_attr(attr::ACTIVATION_DATE, AttrValue::DateTime(now));
    Ok(())
}

/// Revocation: a compromise (that occurred at `compromised_at`) from any
/// state but destroyed; otherwise PreActive or Active → Deactivated.
pub fn revoke(o: &mut ManagedObject, compromised_at: Option<i64>, now: i64) -> Result<(), Refused> {
    let state = effective_state(o, now);
    if state.is_destroyed() {
        return Err(wrong_state(o, now, "it cannot be revoked"));
    }
    if let Some(occurred) = compromised_at {
        o.state = ObjectState::Compromised;
        o.set_attr(attr::COMPROMISE_DATE, AttrValue::DateTime(now));
        o.set_attr(
            attr::COMPROMISE_OCCURRENCE_DATE,
            AttrValue::DateTime(occurred),
        );
        return Ok(());
    }
    match state {
        ObjectState::Active | ObjectState::PreActive => {
            o.state = ObjectState::Deactivated;
            o.set_attr(attr::DEACTIVATION_DATE, AttrValue::DateTime(now));
            Ok(())
        }
        _ => Err(wrong_state(
            o,
            now,
            "it is no longer active; only a compromise can be recorded now",
        )),
    }
}

/// Destruction of the material: from PreActive, Deactivated or
/// Compromised (an Active object is revoked first).
pub fn destroy(o: &mut ManagedObject, now: i64) -> Result<(), Refused> {
    o.state = match effective_state(o, now) {
        ObjectState::PreActive | ObjectState::Deactivated => ObjectState::Destroyed,
        ObjectState::Compromised => ObjectState::DestroyedCompromised,
        ObjectState::Active => return Err(wrong_state(o, now, "revoke it before destroying it")),
        _ => return Err(wrong_state(o, now, "it is already destroyed")),
    };
    o.has_material = false;
    o.set_attr(attr::DESTROY_DATE, AttrValue::DateTime(now));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn key(state: ObjectState) -> ManagedObject {
        ManagedObject {
            uid: "u1".into(),
            object_type: SYMMETRIC_KEY,
            owner: "alice".into(),
            state,
            exportable: true,
            attrs: vec![],
            has_material: true,
            rev: 0,
        }
    }

    #[test]
    fn dates_move_the_effective_state() {
        let mut o = key(ObjectState::PreActive);
        o.set_attr(attr::ACTIVATION_DATE, AttrValue::DateTime(NOW));
        o.set_attr(attr::DEACTIVATION_DATE, AttrValue::DateTime(NOW + 10));
        assert_eq!(effective_state(&o, NOW - 1), ObjectState::PreActive);
        assert_eq!(effective_state(&o, NOW), ObjectState::Active);
        assert_eq!(effective_state(&o, NOW + 10), ObjectState::Deactivated);
    }

    #[test]
    fn every_transition_from_every_state() {
        use ObjectState::*;
        let states = [
            PreActive,
            Active,
            Deactivated,
            Compromised,
            Destroyed,
            DestroyedCompromised,
        ];
        for s in states {
            let mut o = key(s);
            assert_eq!(activate(&mut o, NOW).is_ok(), s == PreActive, "{s:?}");
            let mut o = key(s);
            let r = revoke(&mut o, None, NOW);
            assert_eq!(r.is_ok(), matches!(s, PreActive | Active), "{s:?}");
            let mut o = key(s);
            assert_eq!(
                revoke(&mut o, Some(NOW - 5), NOW).is_ok(),
                !s.is_destroyed()
            );
            let mut o = key(s);
            let r = destroy(&mut o, NOW);
            assert_eq!(
                r.is_ok(),
                matches!(s, PreActive | Deactivated | Compromised)
            );
            match r {
                Ok(()) => {
                    assert!(o.state.is_destroyed() && !o.has_material);
                    assert_eq!(o.state == DestroyedCompromised, s == Compromised);
                }
                Err(e) => assert_eq!(e.why, Refusal::WrongState),
            }
        }
    }

    #[test]
    fn a_use_needs_state_mask_and_dates() {
        let mut o = key(ObjectState::Active);
        assert!(check_use(&o, Purpose::ENCRYPT, NOW).is_ok());
        o.set_attr(attr::USAGE_MASK, AttrValue::Int(usage::DECRYPT));
        let r = check_use(&o, Purpose::ENCRYPT, NOW).unwrap_err();
        assert_eq!(r.why, Refusal::UsageMask);
        assert!(check_use(&o, Purpose::DECRYPT, NOW).is_ok());

        o.set_attr(
            attr::USAGE_MASK,
            AttrValue::Int(usage::ENCRYPT | usage::DECRYPT),
        );
        o.set_attr(attr::PROTECT_STOP_DATE, AttrValue::DateTime(NOW));
        o.set_attr(attr::PROCESS_START_DATE, AttrValue::DateTime(NOW + 1));
        let r = check_use(&o, Purpose::ENCRYPT, NOW).unwrap_err();
        assert_eq!(r.why, Refusal::PastProtectStop);
        let r = check_use(&o, Purpose::DECRYPT, NOW).unwrap_err();
        assert_eq!(r.why, Refusal::BeforeProcessStart);
        assert!(check_use(&o, Purpose::DECRYPT, NOW + 1).is_ok());

        let mut secret = key(ObjectState::Active);
        secret.object_type = 7;
        let r = check_use(&secret, Purpose::ENCRYPT, NOW).unwrap_err();
        assert_eq!(r.why, Refusal::NotSymmetric);
        let r = check_use(&key(ObjectState::Deactivated), Purpose::DECRYPT, NOW).unwrap_err();
        assert_eq!(r.why, Refusal::WrongState);
        assert!(r.message.contains("is Deactivated"), "{r}");
    }

    #[test]
    fn usage_limits_count_down_and_stop() {
        use usage_limits_field::*;
        let mut o = key(ObjectState::Active);
        assert_eq!(charge_usage(&mut o, 100), Ok(false));
        o.set_attr(
            attr::USAGE_LIMITS,
            AttrValue::Struct(vec![
                (TOTAL, AttrValue::Long(10)),
                (UNIT, AttrValue::Enum(1)),
            ]),
        );
        assert_eq!(charge_usage(&mut o, 6), Ok(true));
        assert_eq!(usage_limits(&o), Some((4, false)));
        assert_eq!(
            check_allows(&o, None, Some(5)).unwrap_err().why,
            Refusal::UsageLimits
        );
        assert_eq!(
            charge_usage(&mut o, 5).unwrap_err().why,
            Refusal::UsageLimits
        );
        assert_eq!(charge_usage(&mut o, 4), Ok(true));
        assert_eq!(usage_limits(&o), Some((0, false)));
    }

    #[test]
    fn exportability_only_narrows() {
        let mut o = key(ObjectState::PreActive);
        set_exportable(&mut o, false, false).unwrap();
        let r = set_exportable(&mut o, true, false).unwrap_err();
        assert_eq!(r.why, Refusal::ExportabilityNarrowsOnly);
        set_exportable(&mut o, true, true).unwrap();
        assert!(o.exportable);
        assert!(check_activation_date_change(&o, NOW, false).is_ok());
        o.state = ObjectState::Active;
        assert!(check_activation_date_change(&o, NOW, false).is_err());
        assert!(check_activation_date_change(&o, NOW, true).is_ok());
    }

    #[test]
    fn material_leaves_only_when_exportable() {
        let mut o = key(ObjectState::Active);
        assert!(check_export(&o, NOW).is_ok());
        o.exportable = false;
        assert_eq!(
            check_export(&o, NOW).unwrap_err().why,
            Refusal::NotExtractable
        );
        o.set_attr(attr::SENSITIVE, AttrValue::Bool(true));
        assert_eq!(check_export(&o, NOW).unwrap_err().why, Refusal::Sensitive);
        o.has_material = false;
        assert_eq!(check_export(&o, NOW).unwrap_err().why, Refusal::Destroyed);
    }
}
