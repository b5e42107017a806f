//! XKS keys as KMIP sees them: the same keys under the same rules.
//!
//! An XKS key `KEY` of store `/STORE` is the read-only AES-256 Symmetric
//! Key object `xks:/STORE/KEY` (a key store's key pair: its Private Key
//! object), seen only by the client identities a
//! custodian granted it to (`keyhold kmip grant xks:/STORE/KEY IDENTITY`;
//! no KMIP identity ever created it, so none owns it). Such a client may
//! read its attributes and find it with Locate (its Object Group is the
//! store), but never have its material: XKS keys are not exportable, and
//! HSM-resident ones could not be. Its lifecycle stays with `keyhold key …`
//! (KMIP Activate, Revoke, Destroy and attribute changes are refused), and
//! what KMIP reports follows it at once: a disabled store or key, or
//! lockdown, shows in State and in every refusal.

use crate::attrs::Attr;
use crate::enums::{crypto_alg, object_type, usage_mask};
use crate::objects as obj;
use crate::tags as t;
use keyhold_core::{
    AttrValue, Error, KeyId, KeyState, KeyType, ManagedObject, ObjectAttr, ObjectState, Result,
    Status, StorePrefix,
};
use keyhold_service::objects::GRANT_ATTR;
use keyhold_service::KeyService;

/// What every XKS key's KMIP identifier starts with.
pub const PREFIX: &str = "xks:";

/// Protection Storage Mask bit: hardware (an HSM).
const PROTECTION_HARDWARE: i32 = 0x2;

pub fn is_xks_uid(uid: &str) -> bool {
    uid.starts_with(PREFIX)
}

/// The KMIP identifier of an XKS key.
pub fn uid_of(store: &StorePrefix, id: &KeyId) -> String {
    format!("{PREFIX}{store}/{id}")
}

/// The store and key an `xks:` identifier names (NotFound when it names
/// none that could exist).
fn parse(uid: &str) -> Result<(StorePrefix, KeyId)> {
    let not_found = || Error::ObjectNotFound(uid.to_owned());
    let rest = uid.strip_prefix(PREFIX).ok_or_else(not_found)?;
    let (store, id) = rest.rsplit_once('/').ok_or_else(not_found)?;
    let store = StorePrefix::parse(store).map_err(|_| not_found())?;
    let id = KeyId::parse(id).map_err(|_| not_found())?;
    Ok((store, id))
}

/// The identities granted the XKS key `uid`.
pub fn grants(service: &KeyService, uid: &str) -> Result<Vec<String>> {
    service.xks_key_grants(uid)
}

/// Grants (`add`) or takes back the XKS key `uid` from `identity`;
/// returns whether anything changed. The key must exist.
pub fn set_grant(service: &KeyService, uid: &str, identity: &str, add: bool) -> Result<bool> {
    let (store, id) = parse(uid)?;
    service.get_key(&store, &id)?;
    let mut ids = grants(service, uid)?;
    let had = ids.iter().any(|i| i == identity);
    if had == add {
        return Ok(false);
    }
    if add {
        ids.push(identity.to_owned());
    } else {
        ids.retain(|i| i != identity);
    }
    service.set_xks_key_grants(uid, &ids)?;
    Ok(true)
}

/// The XKS key `uid` as a managed object.
pub fn object(service: &KeyService, uid: &str) -> Result<ManagedObject> {
    let (store, id) = parse(uid)?;
    let key = match service.get_key(&store, &id) {
        Err(Error::KeyNotFound { .. } | Error::StoreNotFound(_)) => {
            return Err(Error::ObjectNotFound(uid.to_owned()))
        }
        r => r?,
    };
    let store_status = service.get_store(&store)?.status;
    let now = service.now();
    let l = &key.lifecycle;
    let state = match l.state_at(now) {
        KeyState::PreActive => ObjectState::PreActive,
        KeyState::Active => ObjectState::Active,
        KeyState::Deactivated => ObjectState::Deactivated,
        KeyState::Compromised => ObjectState::Compromised,
        KeyState::Destroyed if l.compromised_at.is_some() => ObjectState::DestroyedCompromised,
        KeyState::Destroyed => ObjectState::Destroyed,
    };
    let mut mask = 0;
    if key.usage.encrypt {
        mask |= usage_mask::ENCRYPT;
    }
    if key.usage.decrypt {
        mask |= usage_mask::DECRYPT;
    }
    if key.usage.sign {
        mask |= usage_mask::SIGN;
    }
    if key.usage.verify {
        mask |= usage_mask::VERIFY;
    }
    let attr = |name: &str, value| ObjectAttr {
        name: name.to_owned(),
        value,
    };
    // A key pair shows as its private key (Ed25519 with no algorithm: KMIP
    // before 2.1 has no code for it).
    let (object_type, algorithm, length) = match key.key_type {
        KeyType::Aes256 => (object_type::SYMMETRIC_KEY, Some(crypto_alg::AES), 256),
        KeyType::Rsa2048 => (object_type::PRIVATE_KEY, Some(crypto_alg::RSA), 2048),
        KeyType::Rsa3072 => (object_type::PRIVATE_KEY, Some(crypto_alg::RSA), 3072),
        KeyType::Rsa4096 => (object_type::PRIVATE_KEY, Some(crypto_alg::RSA), 4096),
        KeyType::EcP256 => (object_type::PRIVATE_KEY, Some(crypto_alg::EC), 256),
        KeyType::EcP384 => (object_type::PRIVATE_KEY, Some(crypto_alg::EC), 384),
        KeyType::EcP521 => (object_type::PRIVATE_KEY, Some(crypto_alg::EC), 521),
        KeyType::Ed25519 => (object_type::PRIVATE_KEY, None, 256),
    };
    let mut attrs: Vec<ObjectAttr> = algorithm
        .map(|a| attr(obj::ALGORITHM, AttrValue::Enum(a)))
        .into_iter()
        .collect();
    attrs.extend([
        attr(obj::LENGTH, AttrValue::Int(length)),
        attr(obj::USAGE_MASK, AttrValue::Int(mask)),
        attr(
            obj::NAME,
            AttrValue::Struct(vec![
                (t::NAME_VALUE, AttrValue::Text(id.to_string())),
                // Uninterpreted Text String.
                (t::NAME_TYPE, AttrValue::Enum(1)),
            ]),
        ),
        attr(Attr::ObjectGroup.name(), AttrValue::Text(store.to_string())),
        attr(obj::INITIAL_DATE, AttrValue::DateTime(key.created_at)),
        attr(obj::LAST_CHANGE, AttrValue::DateTime(key.updated_at)),
        attr(Attr::NeverExtractable.name(), AttrValue::Bool(true)),
    ]);
    if key.hsm_label.is_some() {
        attrs.push(attr(
            Attr::ProtectionStorageMask.name(),
            AttrValue::Int(PROTECTION_HARDWARE),
        ));
    }
    if let Some(at) = l.compromised_at {
        attrs.push(attr(Attr::CompromiseDate.name(), AttrValue::DateTime(at)));
    }
    if key.status == Status::Disabled || store_status == Status::Disabled {
        // Break glass shows to KMIP clients as a comment: KMIP has no
        // "disabled" state, and every use is refused meanwhile.
        attrs.push(attr(
            Attr::Comment.name(),
            AttrValue::Text("disabled by a key custodian (break glass)".into()),
        ));
    }
    for g in grants(service, uid)? {
        attrs.push(attr(GRANT_ATTR, AttrValue::Text(g)));
    }
    Ok(ManagedObject {
        uid: uid.to_owned(),
        object_type,
        owner: String::new(),
        state,
        exportable: false,
        attrs,
        has_material: state != ObjectState::Destroyed && state != ObjectState::DestroyedCompromised,
        rev: 0,
    })
}

/// Every XKS key granted to anyone, as managed objects (for Locate).
pub fn granted_objects(service: &KeyService) -> Result<Vec<ManagedObject>> {
    let mut out = Vec::new();
    for uid in service.xks_keys_granted()? {
        let uid = uid.as_str();
        if !is_xks_uid(uid) {
            continue;
        }
        match object(service, uid) {
            Ok(o) => out.push(o),
            // A key removed since it was granted.
            Err(Error::ObjectNotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The refusal of any change to an XKS key over KMIP.
pub fn read_only(uid: &str) -> Error {
    Error::AccessDenied {
        rule: None,
        why: format!(
            "{uid} is an XKS key: KMIP may read its attributes; its lifecycle is managed with `keyhold key …`"
        ),
    }
}
