//! Managed objects: keys and secrets that clients fetch, register and use
//! by unique identifier (the KMIP front-end's objects).
//!
//! An object carries a lifecycle state, an owner (the client identity that
//! created it), whether its material may leave Keyhold, and a list of
//! attributes. Attributes are kept as a small typed tree so that the
//! protocol front-end defines their meaning and the layers below only store
//! them. The material itself never appears here: storage holds it wrapped
//! under the root of trust.

use serde::{Deserialize, Serialize};

/// The lifecycle states of a managed object (KMIP's numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectState {
    PreActive = 1,
    Active = 2,
    Deactivated = 3,
    Compromised = 4,
    Destroyed = 5,
    DestroyedCompromised = 6,
}

impl ObjectState {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::PreActive,
            2 => Self::Active,
            3 => Self::Deactivated,
            4 => Self::Compromised,
            5 => Self::Destroyed,
            6 => Self::DestroyedCompromised,
            _ => return None,
        })
    }

    pub fn is_destroyed(self) -> bool {
        matches!(self, Self::Destroyed | Self::DestroyedCompromised)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::PreActive => "PreActive",
            Self::Active => "Active",
            Self::Deactivated => "Deactivated",
            Self::Compromised => "Compromised",
            Self::Destroyed => "Destroyed",
            Self::DestroyedCompromised => "DestroyedCompromised",
        }
    }
}

/// An attribute value: a leaf, or a structure of tagged values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttrValue {
    Struct(Vec<(u32, AttrValue)>),
    Int(i32),
    Long(i64),
    BigInt(Vec<u8>),
    Enum(u32),
    Bool(bool),
    Text(String),
    Bytes(Vec<u8>),
    DateTime(i64),
    Interval(u32),
    DateTimeExt(i64),
}

/// One attribute instance: its name and value. Multi-instance attributes
/// (names, object groups, links, custom attributes) appear once per value,
/// in order; the instance index is the position among equal names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectAttr {
    pub name: String,
    pub value: AttrValue,
}

/// A managed object's record, without its material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedObject {
    pub uid: String,
    /// KMIP Object Type (2 symmetric key, 7 secret data, ...).
    pub object_type: u32,
    /// The identity (client certificate subject) that created it.
    pub owner: String,
    pub state: ObjectState,
    /// Whether Get may return the material (to its owner or a grantee).
    pub exportable: bool,
    pub attrs: Vec<ObjectAttr>,
    /// Whether wrapped material is still stored (false once destroyed).
    pub has_material: bool,
    /// Incremented by every update; updates name the revision they read.
    pub rev: u64,
}

/// Internal attribute naming an identity, besides the owner, that may use
/// an object. Set by custodians (`keyhold kmip grant`); never shown to
/// protocol clients. (The storage migrations that index shared objects
/// spell it out.)
pub const GRANT_ATTR: &str = "keyhold:grant";

impl ManagedObject {
    /// Whether a custodian granted the object to anyone besides its owner.
    pub fn is_shared(&self) -> bool {
        self.attrs.iter().any(|a| a.name == GRANT_ATTR)
    }

    /// The first value of the named attribute.
    pub fn attr(&self, name: &str) -> Option<&AttrValue> {
        self.attrs.iter().find(|a| a.name == name).map(|a| &a.value)
    }

    /// Every value of the named attribute, in index order.
    pub fn attrs_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a AttrValue> {
        self.attrs
            .iter()
            .filter(move |a| a.name == name)
            .map(|a| &a.value)
    }

    /// Sets a single-valued attribute (replacing any value).
    pub fn set_attr(&mut self, name: &str, value: AttrValue) {
        match self.attrs.iter_mut().find(|a| a.name == name) {
            Some(a) => a.value = value,
            None => self.attrs.push(ObjectAttr {
                name: name.to_owned(),
                value,
            }),
        }
    }

    /// Removes every value of the named attribute.
    pub fn remove_attr(&mut self, name: &str) {
        self.attrs.retain(|a| a.name != name);
    }
}
