//! Which KMIP client identities may see an XKS key (`keyhold kmip grant
//! xks:/STORE/KEY IDENTITY`): a sealed set per key, kept as metadata, so
//! that a grant written into the database outside Keyhold is refused, not
//! obeyed (see [`crate::integrity`]).

use crate::KeyService;
use keyhold_core::Result;

/// The metadata name of the grants of the XKS key whose KMIP identifier is
/// `uid` (`xks:/STORE/KEY`).
fn meta_name(uid: &str) -> String {
    format!("{META_PREFIX}{uid}")
}

/// What every grant's metadata name starts with.
pub(crate) const META_PREFIX: &str = "kmip-grant:";

impl KeyService {
    /// The identities granted the XKS key `uid` (none when its stored set
    /// does not verify: reported).
    pub fn xks_key_grants(&self, uid: &str) -> Result<Vec<String>> {
        let name = meta_name(uid);
        let Some(v) = self.storage().get_meta(&name)? else {
            return Ok(Vec::new());
        };
        match self.row_key.open_list(&name, &v) {
            Some(ids) => Ok(ids),
            None => {
                self.row_key.report(&format!("the KMIP grants of {uid}"));
                Ok(Vec::new())
            }
        }
    }

    /// Replaces the identities granted the XKS key `uid` (none: removed).
    pub fn set_xks_key_grants(&self, uid: &str, ids: &[String]) -> Result<()> {
        let name = meta_name(uid);
        let value = (!ids.is_empty()).then(|| self.row_key.seal_list(&name, ids));
        self.storage().set_meta(&name, value.as_deref())?;
        self.invalidate();
        Ok(())
    }

    /// The KMIP identifiers of every XKS key granted to anyone.
    pub fn xks_keys_granted(&self) -> Result<Vec<String>> {
        Ok(self
            .storage()
            .list_meta(META_PREFIX)?
            .into_iter()
            .map(|(name, _)| name[META_PREFIX.len()..].to_owned())
            .collect())
    }

    /// Seals the grants written before sealed rows (a JSON list each), as
    /// they stand: run once, when the database's rows are sealed.
    pub(crate) fn seal_legacy_xks_grants(&self) -> Result<()> {
        for (name, v) in self.storage().list_meta(META_PREFIX)? {
            if self.row_key.open_list(&name, &v).is_some() {
                continue;
            }
            if let Ok(ids) = serde_json::from_slice::<Vec<String>>(&v) {
                let sealed = self.row_key.seal_list(&name, &ids);
                self.storage().set_meta(&name, Some(&sealed))?;
            }
        }
        Ok(())
    }
}
