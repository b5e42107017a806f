//! How KMIP sees a stored object: its effective state, its attribute view
//! (stored plus server-computed attributes), and access rules.

use crate::attrs::{self, Attr};
use crate::message::{KmipError, Version};
use crate::ttlv::Ttlv;
use keyhold_core::{AttrValue, ManagedObject};

pub use keyhold_service::object_rules::attr::{ACTIVATION_DATE, DEACTIVATION_DATE, USAGE_MASK};
pub const NAME: &str = Attr::Name.name();
pub const ALGORITHM: &str = Attr::CryptographicAlgorithm.name();
pub const LENGTH: &str = Attr::CryptographicLength.name();
pub const PARAMETERS: &str = Attr::CryptographicParameters.name();
pub const LAST_CHANGE: &str = Attr::LastChangeDate.name();
pub const INITIAL_DATE: &str = Attr::InitialDate.name();

pub use keyhold_service::object_rules::effective_state;

pub fn int_attr(o: &ManagedObject, name: &str) -> Option<i32> {
    match o.attr(name) {
        Some(AttrValue::Int(v)) => Some(*v),
        _ => None,
    }
}

pub fn enum_attr(o: &ManagedObject, name: &str) -> Option<u32> {
    match o.attr(name) {
        Some(AttrValue::Enum(v)) => Some(*v),
        _ => None,
    }
}

/// The text of each Name attribute.
pub fn names(o: &ManagedObject) -> impl Iterator<Item = &str> {
    o.attrs_named(NAME).filter_map(|v| match v {
        AttrValue::Struct(items) => items.iter().find_map(|(tag, v)| match (tag, v) {
            (&crate::tags::NAME_VALUE, AttrValue::Text(s)) => Some(s.as_str()),
            _ => None,
        }),
        _ => None,
    })
}

/// Protection Storage Mask bit: software storage.
const PROTECTION_SOFTWARE: i32 = 0x1;

/// Every attribute of the object as (name, value), server-computed ones
/// first, in a stable order.
pub fn view(o: &ManagedObject, now: i64) -> Vec<(String, AttrValue)> {
    let mut v = vec![
        (
            Attr::UniqueIdentifier.name().to_owned(),
            AttrValue::Text(o.uid.clone()),
        ),
        (
            Attr::ObjectType.name().to_owned(),
            AttrValue::Enum(o.object_type),
        ),
        (
            Attr::State.name().to_owned(),
            AttrValue::Enum(effective_state(o, now) as u32),
        ),
    ];
    for a in &o.attrs {
        v.push((a.name.clone(), a.value.clone()));
    }
    if o.attr(Attr::Extractable.name()).is_none() {
        v.push((
            Attr::Extractable.name().to_owned(),
            AttrValue::Bool(o.exportable),
        ));
    }
    if o.attr(Attr::Sensitive.name()).is_none() {
        v.push((Attr::Sensitive.name().to_owned(), AttrValue::Bool(false)));
    }
    v.push((
        Attr::ShortUniqueIdentifier.name().to_owned(),
        AttrValue::Bytes(keyhold_crypto::sha256(&[o.uid.as_bytes()]).to_vec()),
    ));
    // Where the material is kept: wrapped under the root of trust and used
    // in software (KMIP 2.x Protection Storage Mask bit Software).
    if o.has_material && o.attr(Attr::ProtectionStorageMask.name()).is_none() {
        v.push((
            Attr::ProtectionStorageMask.name().to_owned(),
            AttrValue::Int(PROTECTION_SOFTWARE),
        ));
    }
    // Only said of an object without a key value (KMIP 1.2 §3.48).
    if !o.has_material {
        v.push((
            Attr::KeyValuePresent.name().to_owned(),
            AttrValue::Bool(false),
        ));
    }
    v
}

/// Renders the requested attributes (all when `wanted` is empty) for
/// `version`, with 1.x indexes among equal names.
pub fn render_view(o: &ManagedObject, now: i64, wanted: &[String], version: Version) -> Vec<Ttlv> {
    let all = view(o, now);
    let mut out = Vec::new();
    let mut emit = |name: &str| {
        for (index, (n, v)) in all.iter().filter(|(n, _)| n == name).enumerate() {
            if let Some(t) = attrs::render(n, index, v, version) {
                out.push(t);
            }
        }
    };
    if wanted.is_empty() {
        let mut seen: Vec<&str> = Vec::new();
        for (n, _) in &all {
            if !seen.contains(&n.as_str()) {
                seen.push(n);
            }
        }
        for n in seen {
            emit(n);
        }
    } else {
        for n in wanted {
            emit(n);
        }
    }
    out
}

/// The names of the attributes the object has, for Get Attribute List.
pub fn attribute_names(o: &ManagedObject, now: i64) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for (n, _) in view(o, now) {
        if !seen.contains(&n) {
            seen.push(n);
        }
    }
    seen
}

/// A failure for an object in the wrong state for an operation.
pub fn wrong_state(o: &ManagedObject, now: i64, what: &str) -> KmipError {
    crate::service_err::refused(keyhold_service::object_rules::wrong_state(o, now, what))
}
