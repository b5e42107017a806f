//! Key lifecycle operations: transitions, dates, destruction, rotation
//! schedules, versions and usage.

use keyhold_core::{Key, Usage, VersionFlag};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{key_id, store_prefix, time, AdminOps, KeyView, OpError, OpResult};

/// The dates a key activates and deactivates by itself: RFC 3339 UTC
/// times, or `none` to clear one; an absent field stays as it is.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetDates {
    #[serde(default)]
    pub activate_at: Option<String>,
    #[serde(default)]
    pub deactivate_at: Option<String>,
}

/// Destruction (crypto-shredding): after a waiting period of `days` (7 to
/// 30, default 30), or at once with `now` and the key id again in `confirm`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Destroy {
    #[serde(default)]
    pub days: Option<u32>,
    #[serde(default)]
    pub now: bool,
    #[serde(default)]
    pub confirm: Option<String>,
}

/// Automatic rotation every `period_s` seconds (at least a day), or none.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRotation {
    pub period_s: Option<i64>,
}

/// The lowest version that still decrypts (older ones are retired).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetMinDecryptVersion {
    pub version: u32,
}

/// Which operations a key allows: `ENCRYPT`, `DECRYPT` (none: empty).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetUsage {
    pub usage: Vec<String>,
}

/// How one version may be used: `good`, `compromised` (decryption
/// refused) or `compromised-allowed` (allowed by override, reported).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetVersionFlag {
    pub flag: String,
}

/// One version of a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VersionView {
    pub version: u32,
    pub created_at: String,
    /// GOOD, COMPROMISED, COMPROMISED_ALLOWED, RETIRED or DESTROYED.
    pub status: String,
    pub current: bool,
}

/// What trimming a key's retired versions did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TrimmedView {
    pub shredded_versions: u64,
}

/// A lifecycle action on a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAction {
    Activate,
    Deactivate,
    Compromise,
    CancelDestroy,
}

impl KeyAction {
    pub const ALL: [KeyAction; 4] = [
        KeyAction::Activate,
        KeyAction::Deactivate,
        KeyAction::Compromise,
        KeyAction::CancelDestroy,
    ];

    /// The action's name, as in the path and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            KeyAction::Activate => "activate",
            KeyAction::Deactivate => "deactivate",
            KeyAction::Compromise => "compromise",
            KeyAction::CancelDestroy => "cancel-destroy",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == s)
    }
}

fn time_or_none(what: &'static str, s: &str) -> OpResult<Option<i64>> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    keyhold_core::time::parse_rfc3339(s)
        .map(Some)
        .ok_or_else(|| {
            OpError::new(
                400,
                format!("{what}: {s:?} is not an RFC 3339 UTC time like 2027-01-31T00:00:00Z"),
            )
        })
}

impl AdminOps {
    /// A key after a change servers must apply, with its confirmation.
    pub(crate) fn changed(&self, k: Key) -> OpResult<KeyView> {
        let in_force = Some(self.in_force()?);
        Ok(KeyView {
            in_force,
            ..KeyView::of(&k)
        })
    }

    pub fn key_action(&self, store: &str, key: &str, action: KeyAction) -> OpResult<KeyView> {
        let (p, id) = (store_prefix(store)?, key_id(key)?);
        let k = match action {
            KeyAction::Activate => self.service.activate_key(&p, &id)?,
            KeyAction::Deactivate => self.service.deactivate_key(&p, &id)?,
            KeyAction::Compromise => self.service.compromise_key(&p, &id)?,
            KeyAction::CancelDestroy => self.service.cancel_destroy(&p, &id)?,
        };
        self.changed(k)
    }

    pub fn destroy_key(&self, store: &str, key: &str, req: &Destroy) -> OpResult<KeyView> {
        let (p, id) = (store_prefix(store)?, key_id(key)?);
        let k = if req.now {
            if req.confirm.as_deref() != Some(id.as_str()) {
                return Err(OpError::new(
                    400,
                    format!(
                        "destroying now cannot be undone: repeat the key id with --confirm {id}"
                    ),
                ));
            }
            self.service.destroy_now(&p, &id)?
        } else {
            self.service
                .schedule_destroy(&p, &id, req.days.unwrap_or(30))?
        };
        self.changed(k)
    }

    pub fn set_key_dates(&self, store: &str, key: &str, req: &SetDates) -> OpResult<KeyView> {
        let a = req
            .activate_at
            .as_deref()
            .map(|s| time_or_none("activate_at", s))
            .transpose()?;
        let d = req
            .deactivate_at
            .as_deref()
            .map(|s| time_or_none("deactivate_at", s))
            .transpose()?;
        if a.is_none() && d.is_none() {
            return Err(OpError::new(
                400,
                "give --activate-at and/or --deactivate-at",
            ));
        }
        let (p, id) = (store_prefix(store)?, key_id(key)?);
        let k = self.service.set_key_dates(&p, &id, a, d)?;
        self.changed(k)
    }

    pub fn set_rotation(&self, store: &str, key: &str, req: &SetRotation) -> OpResult<KeyView> {
        let (p, id) = (store_prefix(store)?, key_id(key)?);
        let k = self.service.set_rotation_period(&p, &id, req.period_s)?;
        Ok(KeyView::of(&k))
    }

    pub fn set_min_decrypt_version(
        &self,
        store: &str,
        key: &str,
        req: &SetMinDecryptVersion,
    ) -> OpResult<KeyView> {
        let (p, id) = (store_prefix(store)?, key_id(key)?);
        let k = self.service.set_min_decrypt_version(&p, &id, req.version)?;
        self.changed(k)
    }

    pub fn trim_versions(&self, store: &str, key: &str) -> OpResult<TrimmedView> {
        let (p, id) = (store_prefix(store)?, key_id(key)?);
        Ok(TrimmedView {
            shredded_versions: self.service.trim_versions(&p, &id)?,
        })
    }

    pub fn key_versions(&self, store: &str, key: &str) -> OpResult<Vec<VersionView>> {
        let (p, id) = (store_prefix(store)?, key_id(key)?);
        let vs = self.service.key_versions(&p, &id)?;
        let k = self.service.get_key(&p, &id)?;
        let status = |v: &keyhold_service::VersionInfo| {
            if !v.has_material && k.hsm_label.is_none() {
                "DESTROYED"
            } else if v.version < k.lifecycle.min_decrypt_version {
                "RETIRED"
            } else {
                match v.flag {
                    VersionFlag::Good => "GOOD",
                    VersionFlag::Compromised => "COMPROMISED",
                    VersionFlag::CompromisedAllowed => "COMPROMISED_ALLOWED",
                }
            }
        };
        Ok(vs
            .iter()
            .map(|v| VersionView {
                version: v.version,
                created_at: time(v.created_at),
                status: status(v).to_owned(),
                current: v.version == k.current_version,
            })
            .collect())
    }

    pub fn set_version_flag(
        &self,
        store: &str,
        key: &str,
        version: u32,
        req: &SetVersionFlag,
    ) -> OpResult<KeyView> {
        let flag = match req.flag.as_str() {
            "compromised" => VersionFlag::Compromised,
            "compromised-allowed" => VersionFlag::CompromisedAllowed,
            "good" => VersionFlag::Good,
            other => {
                return Err(OpError::new(
                    400,
                    format!("flag {other:?}: use good, compromised or compromised-allowed"),
                ))
            }
        };
        let (p, id) = (store_prefix(store)?, key_id(key)?);
        self.service.set_version_flag(&p, &id, version, flag)?;
        let k = self.service.get_key(&p, &id)?;
        self.changed(k)
    }

    /// Sets a key's usage; the answer's `usage_note` says what the HSM
    /// token did about an HSM-resident key.
    pub fn set_usage(&self, store: &str, key: &str, req: &SetUsage) -> OpResult<KeyView> {
        let (p, id) = (store_prefix(store)?, key_id(key)?);
        let usage = Usage::parse(&req.usage.join(","))?;
        let enforced = self.service.set_key_usage(&p, &id, usage)?;
        let k = self.service.get_key(&p, &id)?;
        let mut v = self.changed(k)?;
        v.usage_note = match enforced {
            keyhold_service::UsageEnforcement::Keyhold => None,
            keyhold_service::UsageEnforcement::KeyholdAndToken => {
                Some("the key's attributes in the HSM token now allow the same usage".into())
            }
            keyhold_service::UsageEnforcement::KeyholdOnlyTokenRefused => Some(
                "warning: the HSM token would not change the key's attributes: Keyhold alone enforces this usage".into(),
            ),
        };
        Ok(v)
    }
}
