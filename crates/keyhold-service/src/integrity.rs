//! Integrity of what storage holds: storage is untrusted.
//!
//! Every row that grants or limits power is sealed by a MAC under the *row
//! key*, derived from the audit key (which only the root of trust unwraps)
//! and never stored. The storage backends seal the rows they write and
//! refuse the rows that do not verify ([`keyhold_storage::RowSealer`]); the
//! service seals the few power-bearing metadata values itself (lockdown,
//! and the marker that says the database's rows are sealed).
//!
//! A database from before sealed rows is sealed once, when a key service
//! first opens it, unless the data directory says its rows were sealed
//! already (then an unsealed row is a row written outside Keyhold).

use keyhold_core::{Error, Result, Timestamp};
use keyhold_crypto::HmacKey;
use keyhold_storage::{RowSealer, Storage};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The meta entry whose sealed value says that every row is sealed.
pub const ROWS_SEALED_META: &str = "rows-sealed";

/// What the row key derivation signs (a new version: a new key).
const ROW_KEY_LABEL: &[u8] = b"keyhold row seal key v1";

/// The key of row seals, and the count of refused rows.
pub struct RowKey {
    key: HmacKey,
    failures: Arc<AtomicU64>,
    /// When the last row was refused (Unix ms; 0: never).
    last_failure_ms: std::sync::atomic::AtomicI64,
    /// What the last few refused rows were (for `keyhold status`).
    recent: parking_lot::Mutex<std::collections::VecDeque<String>>,
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Refused rows remembered by name.
const RECENT_KEPT: usize = 32;

impl RowKey {
    /// The row key derived from the audit key.
    pub fn derive(audit_key: &HmacKey, failures: Arc<AtomicU64>) -> Self {
        let k = zeroize::Zeroizing::new(audit_key.sign(ROW_KEY_LABEL));
        Self {
            key: HmacKey::new(&*k),
            failures,
            last_failure_ms: Default::default(),
            recent: Default::default(),
        }
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        self.key.sign_parts(parts)
    }

    /// The sealed value of the marker "rows are sealed".
    fn marker(&self) -> Vec<u8> {
        hex::encode(self.mac(&[b"keyhold rows sealed v1"])).into_bytes()
    }

    /// The stored form of the lockdown switch: always present once rows
    /// are sealed (an absent one is a deleted one).
    pub fn lockdown_value(&self, on: bool, at: Timestamp) -> Vec<u8> {
        let state = if on { "on" } else { "off" };
        let mac = self.mac(&[
            b"keyhold lockdown v1\0",
            state.as_bytes(),
            b"\0",
            at.to_string().as_bytes(),
        ]);
        format!("{state} {at} {}", hex::encode(mac)).into_bytes()
    }

    /// Reads the stored lockdown switch: `(locked, genuine)`. Anything
    /// that does not verify locks (fail closed).
    pub fn read_lockdown(&self, stored: Option<&[u8]>) -> (bool, bool) {
        let Some(v) = stored else {
            return (true, false);
        };
        let text = String::from_utf8_lossy(v);
        let mut parts = text.split(' ');
        let (Some(state), Some(at), Some(_mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return (true, false);
        };
        let Ok(at) = at.parse::<Timestamp>() else {
            return (true, false);
        };
        let on = match state {
            "on" => true,
            "off" => false,
            _ => return (true, false),
        };
        let genuine = keyhold_crypto::ct_eq(&self.lockdown_value(on, at), v);
        if genuine {
            (on, true)
        } else {
            (true, false)
        }
    }

    /// The sealed form of a set of names kept as one value (the revoked
    /// certificate serials, the identities an XKS key is granted to):
    /// JSON `{"items": [...], "mac": "..."}`, the MAC over `what` (which
    /// names the value, binding it to its place) and every item.
    pub fn seal_list(&self, what: &str, items: &[String]) -> Vec<u8> {
        let mut items = items.to_vec();
        items.sort_unstable();
        items.dedup();
        let mac = self.list_mac(what, &items);
        serde_json::to_vec(&serde_json::json!({"items": items, "mac": hex::encode(mac)}))
            .unwrap_or_default()
    }

    fn list_mac(&self, what: &str, items: &[String]) -> [u8; 32] {
        let mut parts: Vec<Vec<u8>> = vec![
            b"keyhold list v2\0".to_vec(),
            (what.len() as u64).to_be_bytes().to_vec(),
            what.as_bytes().to_vec(),
        ];
        for i in items {
            parts.push((i.len() as u64).to_be_bytes().to_vec());
            parts.push(i.as_bytes().to_vec());
        }
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        self.mac(&refs)
    }

    /// The names of a set sealed by [`Self::seal_list`]; `None` when it
    /// does not verify.
    pub fn open_list(&self, what: &str, stored: &[u8]) -> Option<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct Sealed {
            items: Vec<String>,
            mac: String,
        }
        let s: Sealed = serde_json::from_slice(stored).ok()?;
        let mut sorted = s.items.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted != s.items {
            return None;
        }
        let mac = hex::decode(&s.mac).ok()?;
        keyhold_crypto::ct_eq(&self.list_mac(what, &s.items), &mac).then_some(s.items)
    }

    /// Counts and reports one refused row or value.
    pub fn report(&self, what: &str) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.last_failure_ms.store(unix_ms(), Ordering::Relaxed);
        let mut r = self.recent.lock();
        if !r.iter().any(|w| w == what) {
            if r.len() == RECENT_KEPT {
                r.pop_front();
            }
            r.push_back(what.to_owned());
        }
        drop(r);
        tracing::error!(
            what,
            "{what} does not verify: it was written or changed outside Keyhold; refused"
        );
    }
}

impl RowKey {
    /// When a row was last refused (Unix ms), if ever.
    pub fn last_failure_ms(&self) -> Option<i64> {
        Some(self.last_failure_ms.load(Ordering::Relaxed)).filter(|&t| t > 0)
    }

    /// Forgets which rows were refused lately (before a scan).
    pub fn forget_recent(&self) {
        self.recent.lock().clear();
    }

    /// The rows refused lately, by name (at most 32, oldest first).
    pub fn recent_failures(&self) -> Vec<String> {
        self.recent.lock().iter().cloned().collect()
    }
}

impl RowSealer for RowKey {
    fn seal(&self, row: &[u8]) -> Vec<u8> {
        self.mac(&[row]).to_vec()
    }

    fn verify(&self, row: &[u8], seal: &[u8]) -> bool {
        keyhold_crypto::ct_eq(&self.mac(&[row]), seal)
    }

    fn refused(&self, what: &str) {
        self.report(what);
    }
}

/// How a database's rows came to be trusted when a service opened it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealState {
    /// Sealed since before: rows are checked.
    Sealed,
    /// A database from before sealed rows: its rows (this many) were
    /// sealed now, as they stood.
    SealedNow(u64),
    /// The marker is missing or forged although rows were sealed before
    /// (the data directory says so, or rows carry seals): every unsealed
    /// row stays refused.
    MarkerTampered,
}

/// Installs the row key in `storage` and settles the database's seal state
/// (see [`SealState`]). `sealed_before`: the data directory records that
/// this database's rows were sealed already.
pub fn install(
    storage: &Arc<dyn Storage>,
    key: &Arc<RowKey>,
    sealed_before: bool,
    lockdown_meta: &str,
    now: Timestamp,
) -> Result<SealState> {
    storage.set_row_sealer(key.clone());
    let marker = key.marker();
    match storage.get_meta(ROWS_SEALED_META)? {
        Some(v) if keyhold_crypto::ct_eq(&v, &marker) => return Ok(SealState::Sealed),
        Some(_) => {
            key.report("the sealed-rows marker");
            return Ok(SealState::MarkerTampered);
        }
        None if sealed_before || storage.any_sealed_rows()? => {
            key.report("the sealed-rows marker (missing)");
            return Ok(SealState::MarkerTampered);
        }
        None => {}
    }
    // A database from before sealed rows (or a new one): seal what is there.
    let n = storage.seal_unsealed_rows()?;
    let locked = storage.get_meta(lockdown_meta)?.is_some();
    storage.set_meta(lockdown_meta, Some(&key.lockdown_value(locked, now)))?;
    let stored = storage.put_meta_if_absent(ROWS_SEALED_META, &marker)?;
    if stored != marker {
        return Err(Error::Integrity(
            "the sealed-rows marker changed while it was written".into(),
        ));
    }
    if n > 0 {
        tracing::warn!(
            rows = n,
            "sealed {n} rows written before sealed rows existed; from now on a row changed outside Keyhold is refused"
        );
    }
    Ok(SealState::SealedNow(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> RowKey {
        RowKey::derive(&HmacKey::new(&[7; 32]), Arc::default())
    }

    #[test]
    fn lockdown_values_verify_and_forgeries_lock() {
        let k = key();
        let off = k.lockdown_value(false, 5);
        assert_eq!(k.read_lockdown(Some(&off)), (false, true));
        let on = k.lockdown_value(true, 6);
        assert_eq!(k.read_lockdown(Some(&on)), (true, true));
        // Flipping the state without the key, deleting it, or garbage: locked.
        let forged = String::from_utf8(on.clone())
            .unwrap()
            .replacen("on", "off", 1);
        assert_eq!(k.read_lockdown(Some(forged.as_bytes())), (true, false));
        assert_eq!(k.read_lockdown(None), (true, false));
        assert_eq!(k.read_lockdown(Some(b"1700000000")), (true, false));
        // Another key's value does not verify.
        let other = RowKey::derive(&HmacKey::new(&[8; 32]), Arc::default());
        assert_eq!(other.read_lockdown(Some(&off)), (true, false));
    }

    #[test]
    fn sealed_lists_round_trip_and_refuse_changes() {
        let k = key();
        let v = k.seal_list("x", &["b".into(), "a".into()]);
        assert_eq!(k.open_list("x", &v), Some(vec!["a".into(), "b".into()]));
        assert_eq!(k.open_list("y", &v), None);
        let shorter = String::from_utf8(v).unwrap().replacen("\"a\",", "", 1);
        assert_eq!(k.open_list("x", shorter.as_bytes()), None);
        // Names with commas and spaces (certificate names) round-trip.
        let odd = vec!["CN=a, O=b".to_owned(), "c d".to_owned()];
        let v = k.seal_list("x", &odd);
        assert_eq!(k.open_list("x", &v), Some(odd));
        let empty = k.seal_list("x", &[]);
        assert_eq!(k.open_list("x", &empty), Some(vec![]));
    }

    #[test]
    fn seals_are_keyed() {
        let k = key();
        let s = k.seal(b"row");
        assert!(k.verify(b"row", &s));
        assert!(!k.verify(b"rox", &s));
        let other = RowKey::derive(&HmacKey::new(&[8; 32]), Arc::default());
        assert!(!other.verify(b"row", &s));
    }
}
