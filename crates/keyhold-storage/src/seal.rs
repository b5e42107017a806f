//! Sealed rows: storage is untrusted, so every row that grants or limits
//! power (key stores, keys, key versions, managed objects, policies) carries
//! a MAC over its canonical encoding, bound to the row's identity, under a
//! key only the key service holds (derived from the root of trust).
//!
//! The backends compute the seal in the same transaction that writes the
//! row and check it on every read once a [`RowSealer`] is installed
//! ([`crate::RowSealing::set_row_sealer`]). A row that does not verify (written
//! or changed outside Keyhold) is refused: a lookup fails with
//! [`Error::Integrity`], a listing leaves it out, and the sealer counts and
//! reports it. Nothing here knows the key.
//!
//! A policy's absence grants power too, so the set of policy scopes is
//! sealed as well, in one more row of `policies` ([`POLICY_INDEX_SCOPE`]).

use keyhold_core::{
    Error, Key, KeyId, KeyStore, ManagedObject, Result, StorePrefix, Timestamp, VersionFlag,
    WrappedKeyVersion,
};

/// Computes and checks row seals; implemented by the key service.
pub trait RowSealer: Send + Sync + 'static {
    /// The seal of a row's canonical encoding.
    fn seal(&self, row: &[u8]) -> Vec<u8>;
    /// Whether `seal` is the seal of `row` (in constant time).
    fn verify(&self, row: &[u8], seal: &[u8]) -> bool;
    /// Called once per refused row: counted, logged and reported.
    fn refused(&self, what: &str);
}

/// The `policies` row that seals the set of policy scopes (never a scope
/// of a policy: those start with `store ` or `key `).
pub const POLICY_INDEX_SCOPE: &str = "#index";

/// A length-prefixed, typed encoding: distinct rows never encode alike.
struct Canon(Vec<u8>);

impl Canon {
    fn new(kind: &str) -> Self {
        let mut c = Canon(Vec::with_capacity(128));
        c.0.extend_from_slice(b"keyhold row v1\0");
        c.s(kind);
        c
    }
    fn s(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }
    fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.0.push(b's');
        self.0.extend_from_slice(&(v.len() as u64).to_be_bytes());
        self.0.extend_from_slice(v);
        self
    }
    fn i(&mut self, v: i64) -> &mut Self {
        self.0.push(b'i');
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn oi(&mut self, v: Option<i64>) -> &mut Self {
        match v {
            Some(v) => self.i(v),
            None => {
                self.0.push(b'n');
                self
            }
        }
    }
    fn os(&mut self, v: Option<&str>) -> &mut Self {
        match v {
            Some(v) => self.s(v),
            None => {
                self.0.push(b'n');
                self
            }
        }
    }
    fn done(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

/// A key's row. Destructured field by field, so that a new field cannot
/// be left out of the seal unnoticed.
pub(crate) fn key_row(k: &Key) -> Vec<u8> {
    let Key {
        store,
        id,
        status,
        usage,
        current_version,
        created_at,
        updated_at,
        hsm_label,
        lifecycle,
        key_type,
    } = k;
    let keyhold_core::Lifecycle {
        state,
        activate_at,
        deactivate_at,
        destroy_at,
        compromised_at,
        rotation_period,
        next_rotation_at,
        min_decrypt_version,
    } = lifecycle;
    let mut c = Canon::new("key");
    c.s(store.as_str())
        .s(id.as_str())
        .s(status.as_str())
        .i(usage.to_bits())
        .i((*current_version).into())
        .i(*created_at)
        .i(*updated_at)
        .os(hsm_label.as_deref())
        .s(state.as_str())
        .oi(*activate_at)
        .oi(*deactivate_at)
        .oi(*destroy_at)
        .oi(*compromised_at)
        .oi(*rotation_period)
        .oi(*next_rotation_at)
        .i((*min_decrypt_version).into());
    // Added after the first sealed rows: an AES-256 key's row encodes as
    // it did before key types, so that its seal still verifies.
    if key_type.is_asymmetric() {
        c.s("key type").s(key_type.spec());
    }
    c.done()
}

/// A key store's row.
pub(crate) fn store_row(s: &KeyStore) -> Vec<u8> {
    let KeyStore {
        prefix,
        status,
        description,
        created_at,
    } = s;
    Canon::new("store")
        .s(prefix.as_str())
        .s(status.as_str())
        .s(description)
        .i(*created_at)
        .done()
}

/// A key version's row (its material is bound by its wrap context; this
/// seals its flag and whether it still has material).
pub(crate) fn version_row(
    store: &StorePrefix,
    id: &KeyId,
    version: u32,
    flag: VersionFlag,
    created_at: Timestamp,
    has_material: bool,
) -> Vec<u8> {
    Canon::new("key version")
        .s(store.as_str())
        .s(id.as_str())
        .i(version.into())
        .i(flag.to_i64())
        .i(created_at)
        .i(has_material.into())
        .done()
}

/// A managed object's row; `attrs` is the attributes' text as stored.
pub(crate) fn object_row(o: &ManagedObject, attrs: &str) -> Vec<u8> {
    let ManagedObject {
        uid,
        object_type,
        owner,
        state,
        exportable,
        attrs: _,
        has_material,
        rev,
    } = o;
    Canon::new("object")
        .s(uid)
        .i((*object_type).into())
        .s(owner)
        .i(*state as i64)
        .i((*exportable).into())
        .s(attrs)
        .i((*has_material).into())
        .i(*rev as i64)
        .done()
}

/// A policy's row.
pub(crate) fn policy_row(scope: &str, body: &str) -> Vec<u8> {
    Canon::new("policy").s(scope).s(body).done()
}

/// The set of policy scopes (sorted), as sealed in the index row; its body
/// is the scopes, one per line.
pub(crate) fn policy_index_body(scopes: &[String]) -> String {
    let mut s: Vec<&str> = scopes.iter().map(String::as_str).collect();
    s.sort_unstable();
    s.join("\n")
}

/// A key row read with its seal.
pub(crate) type SealedKey = (Key, Option<Vec<u8>>);
/// A key store's row read with its seal.
pub(crate) type SealedStore = (KeyStore, Option<Vec<u8>>);
/// An object row read with its attributes' text and its seal.
pub(crate) type SealedObject = (ManagedObject, String, Option<Vec<u8>>);
/// A version row read for sealing: (version, created_at, flag, has
/// material, seal).
pub(crate) type VersionRow = (u32, Timestamp, VersionFlag, bool, Option<Vec<u8>>);

/// Whether a key row read with its seal verifies (reported if not).
pub(crate) fn key_ok(s: Option<&dyn RowSealer>, (k, sealed): &SealedKey) -> bool {
    check(
        s,
        || key_row(k),
        sealed.as_deref(),
        || format!("key {}/{}", k.store, k.id),
    )
}

/// Whether a key store's row read with its seal verifies.
pub(crate) fn store_ok(s: Option<&dyn RowSealer>, (st, sealed): &SealedStore) -> bool {
    check(
        s,
        || store_row(st),
        sealed.as_deref(),
        || format!("key store {}", st.prefix),
    )
}

/// Whether an object's row read with its seal verifies.
pub(crate) fn object_ok(s: Option<&dyn RowSealer>, (o, attrs, sealed): &SealedObject) -> bool {
    check(
        s,
        || object_row(o, attrs),
        sealed.as_deref(),
        || format!("object {}", o.uid),
    )
}

/// Whether a key version's row read with its seal verifies.
pub(crate) fn version_ok(
    s: Option<&dyn RowSealer>,
    prefix: &StorePrefix,
    id: &KeyId,
    (version, created_at, flag, has_material, sealed): &VersionRow,
) -> bool {
    check(
        s,
        || version_row(prefix, id, *version, *flag, *created_at, *has_material),
        sealed.as_deref(),
        || format!("version {version} of key {prefix}/{id}"),
    )
}

/// The policies among `rows` (scope, body, seal: every row of the table),
/// each checked, and the sealed index checked to name exactly their scopes.
pub(crate) fn checked_policies(
    sealer: Option<&dyn RowSealer>,
    rows: Vec<(String, String, Option<Vec<u8>>)>,
) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut index = None;
    for (scope, body, sealed) in rows {
        if scope == POLICY_INDEX_SCOPE {
            index = Some((body, sealed));
            continue;
        }
        if !check(
            sealer,
            || policy_row(&scope, &body),
            sealed.as_deref(),
            || format!("the policy of {scope}"),
        ) {
            return Err(refused(format!("the policy of {scope}")));
        }
        out.push((scope, body));
    }
    if let Some(s) = sealer {
        let scopes: Vec<String> = out.iter().map(|(s, _)| s.clone()).collect();
        let want = policy_index_body(&scopes);
        let ok = index.as_ref().is_some_and(|(body, sealed)| {
            *body == want
                && sealed
                    .as_deref()
                    .is_some_and(|x| s.verify(&policy_row(POLICY_INDEX_SCOPE, body), x))
        });
        if !ok {
            s.refused("the set of policies");
            return Err(refused("the set of policies".into()));
        }
    }
    Ok(out)
}

/// The index row of a set of policy scopes: its body and its seal.
pub(crate) fn policy_index(sealer: &dyn RowSealer, scopes: &[String]) -> (String, Vec<u8>) {
    let body = policy_index_body(scopes);
    let sealed = sealer.seal(&policy_row(POLICY_INDEX_SCOPE, &body));
    (body, sealed)
}

/// Checks one row: `Ok(true)` when it verifies (or no sealer is
/// installed), `Ok(false)` (reported) when it does not.
pub(crate) fn check(
    sealer: Option<&dyn RowSealer>,
    row: impl FnOnce() -> Vec<u8>,
    seal: Option<&[u8]>,
    what: impl FnOnce() -> String,
) -> bool {
    let Some(sealer) = sealer else {
        return true;
    };
    if seal.is_some_and(|s| sealer.verify(&row(), s)) {
        return true;
    }
    sealer.refused(&what());
    false
}

/// The error a lookup of a refused row returns.
pub(crate) fn refused(what: String) -> Error {
    Error::Integrity(format!(
        "{what} does not verify: it was written or changed outside Keyhold; refused"
    ))
}

/// The installed sealer, if any (shared by both backends).
#[derive(Default)]
pub(crate) struct SealerSlot(parking_lot::RwLock<Option<std::sync::Arc<dyn RowSealer>>>);

impl SealerSlot {
    pub(crate) fn set(&self, s: std::sync::Arc<dyn RowSealer>) {
        *self.0.write() = Some(s);
    }
    pub(crate) fn get(&self) -> Option<std::sync::Arc<dyn RowSealer>> {
        self.0.read().clone()
    }
    /// The seal of `row` (`None` without a sealer: the row stays unsealed).
    pub(crate) fn seal(&self, row: impl FnOnce() -> Vec<u8>) -> Option<Vec<u8>> {
        self.0.read().as_ref().map(|s| s.seal(&row()))
    }

    /// The seal of a new key version's row.
    pub(crate) fn version_seal(
        &self,
        prefix: &StorePrefix,
        id: &KeyId,
        v: &WrappedKeyVersion,
    ) -> Option<Vec<u8>> {
        self.seal(|| {
            version_row(
                prefix,
                id,
                v.version,
                v.flag,
                v.created_at,
                !v.wrapped.is_empty(),
            )
        })
    }

    /// The keys of a listing whose rows verify (the others are reported).
    pub(crate) fn keys(&self, rows: Vec<SealedKey>) -> Vec<Key> {
        let s = self.get();
        rows.into_iter()
            .filter(|r| key_ok(s.as_deref(), r))
            .map(|r| r.0)
            .collect()
    }

    /// The objects of a listing whose rows verify (the others are reported).
    pub(crate) fn objects(&self, rows: Vec<SealedObject>) -> Vec<ManagedObject> {
        let s = self.get();
        rows.into_iter()
            .filter(|r| object_ok(s.as_deref(), r))
            .map(|r| r.0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_are_unambiguous() {
        // Moving bytes from one field to the next changes the encoding.
        assert_ne!(policy_row("ab", "c"), policy_row("a", "bc"));
        assert_ne!(policy_row("a", ""), store_row_like("a"));
        let mut a = Canon::new("x");
        a.oi(None).i(0);
        let mut b = Canon::new("x");
        b.i(0).oi(None);
        assert_ne!(a.done(), b.done());
    }

    fn store_row_like(s: &str) -> Vec<u8> {
        Canon::new("store").s(s).done()
    }

    #[test]
    fn the_index_is_order_free() {
        let a = policy_index_body(&["key /a k".into(), "store /a".into()]);
        let b = policy_index_body(&["store /a".into(), "key /a k".into()]);
        assert_eq!(a, b);
    }
}
