//! Lifecycle and break-glass commands: activate, deactivate, compromise,
//! destroy (scheduled or now), rotation schedules, retired and compromised
//! versions, lockdown.
//!
//! Each is a typed operation of the admin API (see `typed/`). A command
//! that changes what keys may do (break glass and its reversal, lifecycle
//! transitions) returns only once every running server on the data
//! directory has applied it: from then on no request is served under the
//! old rules (`keyhold_server::admin_ops`).

use clap::Subcommand;
use keyhold_core::time::{parse_duration, parse_rfc3339};
use keyhold_core::{KeyState, Lifecycle, Timestamp};

/// Lifecycle options of `key create`.
#[derive(clap::Args, Debug, Default)]
pub(crate) struct CreateLifecycle {
    /// Create the key PRE_ACTIVE: unusable until `key activate` or --activate-at.
    #[arg(long)]
    pre_active: bool,
    /// With --pre-active: the key becomes ACTIVE at this time (RFC 3339 UTC).
    #[arg(long, requires = "pre_active")]
    pub activate_at: Option<String>,
    /// The key becomes DEACTIVATED (decrypt only) at this time (RFC 3339 UTC).
    #[arg(long)]
    pub deactivate_at: Option<String>,
    /// Rotate automatically every PERIOD (e.g. 90d; at least 1d).
    #[arg(long)]
    rotation_period: Option<String>,
}

impl CreateLifecycle {
    pub(crate) fn lifecycle(&self) -> Result<Lifecycle, String> {
        Ok(Lifecycle {
            state: if self.pre_active {
                KeyState::PreActive
            } else {
                KeyState::Active
            },
            activate_at: self.activate_at.as_deref().map(time).transpose()?,
            deactivate_at: self.deactivate_at.as_deref().map(time).transpose()?,
            rotation_period: self.rotation_period.as_deref().map(period).transpose()?,
            ..Lifecycle::default()
        })
    }
}

fn time(s: &str) -> Result<Timestamp, String> {
    parse_rfc3339(s)
        .ok_or_else(|| format!("{s:?} is not an RFC 3339 UTC time like 2027-01-31T00:00:00Z"))
}

pub(crate) fn period(s: &str) -> Result<i64, String> {
    parse_duration(s).ok_or_else(|| format!("{s:?} is not a duration like 90d, 12h or 3600s"))
}

#[derive(Subcommand, Debug)]
pub(crate) enum LifecycleCmd {
    /// PRE_ACTIVE → ACTIVE.
    Activate { prefix: String, key_id: String },
    /// DEACTIVATED: decrypt only from now on.
    Deactivate { prefix: String, key_id: String },
    /// COMPROMISED: decrypt only, and every use is reported.
    Compromise { prefix: String, key_id: String },
    /// Set or clear (`none`) the dates on which the key activates or deactivates by itself.
    SetDates {
        prefix: String,
        key_id: String,
        /// RFC 3339 UTC time, or `none`.
        #[arg(long)]
        activate_at: Option<String>,
        /// RFC 3339 UTC time, or `none`.
        #[arg(long)]
        deactivate_at: Option<String>,
    },
    /// Schedule destruction (crypto-shredding) after a waiting period; the key
    /// is refused meanwhile. `--now` destroys at once and needs `--confirm KEY_ID`.
    Destroy {
        prefix: String,
        key_id: String,
        /// Waiting period in days (7–30).
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// Destroy now, without a waiting period.
        #[arg(long)]
        now: bool,
        /// With --now: the key id again, to confirm.
        #[arg(long)]
        confirm: Option<String>,
    },
    /// Cancel a scheduled destruction.
    CancelDestroy { prefix: String, key_id: String },
    /// Rotate automatically every PERIOD (e.g. 90d), or `off`.
    SetRotation {
        prefix: String,
        key_id: String,
        #[arg(long)]
        period: String,
    },
    /// Retire the versions below VERSION: their ciphertext no longer decrypts.
    SetMinDecryptVersion {
        prefix: String,
        key_id: String,
        version: u32,
    },
    /// Crypto-shred the retired versions (below the minimum decryption version).
    TrimVersions { prefix: String, key_id: String },
    /// List a key's versions.
    Versions { prefix: String, key_id: String },
    /// Mark one version: `compromised` (decrypt refused), `compromised-allowed`
    /// (decrypt allowed by override, reported) or `good`.
    FlagVersion {
        prefix: String,
        key_id: String,
        #[arg(long)]
        version: u32,
        #[arg(long, value_parser = ["compromised", "compromised-allowed", "good"])]
        flag: String,
    },
}
