//! Moving every wrapped value from one root of trust to another (software
//! root → HSM, say), one durable compare-and-swap per value.
//!
//! It can be interrupted at any point and run again: a value still wrapped
//! by the old root is re-wrapped; one already wrapped by the new root is
//! left alone; a value neither root can unwrap stops the run with an error
//! and is not touched. Nothing is ever deleted, so no key can be lost.

use keyhold_barrier::wrap_context;
use keyhold_core::{Error, Result};
use keyhold_root::RootOfTrust;
use keyhold_storage::Maintenance;

/// What a re-wrap run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RewrapReport {
    /// Values re-wrapped by this run.
    pub rewrapped: usize,
    /// Values that were already under the new root (an earlier, interrupted run).
    pub already: usize,
}

/// Re-wraps every wrapped value of `storage` from `from` to `to`, then checks
/// that every value unwraps under `to`.
pub fn rewrap_all(
    storage: &dyn Maintenance,
    from: &dyn RootOfTrust,
    to: &dyn RootOfTrust,
    mut progress: impl FnMut(usize, usize),
) -> Result<RewrapReport> {
    // Only values under a wrapping context are re-wrapped (and counted in
    // the progress): other metadata is not wrapped at all.
    let items: Vec<_> = storage
        .wrapped_items()?
        .into_iter()
        .filter_map(|(item, blob)| wrap_context(&item).map(|ctx| (item, blob, ctx)))
        .collect();
    let total = items.len();
    let mut report = RewrapReport::default();
    for (n, (item, blob, ctx)) in items.iter().enumerate() {
        let blob = blob.as_slice();
        match from.unwrap(ctx, blob) {
            Ok(plain) => {
                let new = to.wrap(ctx, plain.expose())?;
                // Prove the new blob before it replaces the old one.
                if to.unwrap(ctx, &new)?.expose() != plain.expose() {
                    return Err(Error::RootOfTrust(format!(
                        "re-wrapped value of {item:?} does not unwrap"
                    )));
                }
                if !storage.replace_wrapped(item, blob, &new)? {
                    return Err(Error::InvalidState(format!(
                        "{item:?} changed during the re-wrap; run it again with the server stopped"
                    )));
                }
                report.rewrapped += 1;
            }
            Err(_) if to.unwrap(ctx, blob).is_ok() => report.already += 1,
            Err(e) => {
                return Err(Error::RootOfTrust(format!(
                    "{item:?} unwraps under neither root of trust: {e}"
                )))
            }
        }
        progress(n + 1, total);
    }
    // Everything must now be readable with the new root alone.
    for (item, blob) in storage.wrapped_items()? {
        if let Some(ctx) = wrap_context(&item) {
            to.unwrap(&ctx, &blob).map_err(|e| {
                Error::RootOfTrust(format!("after the re-wrap, {item:?} does not unwrap: {e}"))
            })?;
        }
    }
    Ok(report)
}

/// Checks that every wrapped value of `storage` unwraps under `root`;
/// names the first that does not.
pub fn verify_all(storage: &dyn Maintenance, root: &dyn RootOfTrust) -> Result<usize> {
    let mut n = 0;
    for (item, blob) in storage.wrapped_items()? {
        if let Some(ctx) = wrap_context(&item) {
            root.unwrap(&ctx, &blob).map_err(|e| {
                Error::RootOfTrust(format!(
                    "{item:?} does not unwrap under the current root of trust ({e}): \
                     it is still under an older one; run `keyhold root rotate` again"
                ))
            })?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyService;
    use keyhold_core::{KeyId, StorePrefix, Usage};
    use keyhold_root::SoftwareRoot;
    use keyhold_storage::{SqliteStorage, Storage};
    use std::sync::Arc;

    #[test]
    fn rewrap_moves_everything_and_is_rerunnable() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("k.db");
        let a = Arc::new(SoftwareRoot::create(&dir.path().join("a"), None).unwrap());
        let b = Arc::new(SoftwareRoot::create(&dir.path().join("b"), None).unwrap());
        let storage: Arc<dyn Storage> = Arc::new(SqliteStorage::open(&db).unwrap());
        let svc = KeyService::open(storage.clone(), a.clone()).unwrap();
        let p = StorePrefix::parse("/t").unwrap();
        svc.create_store(&p, "").unwrap();
        svc.add_credential(&p).unwrap();
        for i in 0..5 {
            svc.create_key(&p, &KeyId::parse(&format!("k{i}")).unwrap(), Usage::BOTH)
                .unwrap();
        }
        svc.rotate_key(&p, &KeyId::parse("k0").unwrap()).unwrap();
        drop(svc);
        // Half a run: re-wrap only some values, as if the process died.
        let items: Vec<_> = storage
            .wrapped_items()
            .unwrap()
            .into_iter()
            .filter(|(item, _)| wrap_context(item).is_some())
            .collect();
        for (item, blob) in items.iter().take(4) {
            let ctx = wrap_context(item).unwrap();
            let new = b
                .wrap(&ctx, a.unwrap(&ctx, blob).unwrap().expose())
                .unwrap();
            storage.replace_wrapped(item, blob, &new).unwrap();
        }
        let mut last = (0, 0);
        let r = rewrap_all(storage.as_ref(), a.as_ref(), b.as_ref(), |n, t| {
            last = (n, t)
        })
        .unwrap();
        assert_eq!(r.already, 4);
        assert_eq!(r.rewrapped + r.already, items.len());
        // Progress counts exactly the values that are wrapped.
        assert_eq!(last, (items.len(), items.len()));
        let again = rewrap_all(storage.as_ref(), a.as_ref(), b.as_ref(), |_, _| {}).unwrap();
        assert_eq!((again.rewrapped, again.already), (0, items.len()));
        // The new root opens everything; the old one no longer does.
        let svc = KeyService::open(storage.clone(), b.clone()).unwrap();
        for i in 0..5 {
            let h = svc.key_handle(&p, &format!("k{i}")).unwrap();
            svc.key_version(&h, 1).unwrap();
        }
        assert!(KeyService::open(storage, a).is_err());
    }
}
