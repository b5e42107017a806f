//! The key model shared by every layer of Keyhold.
//!
//! A *key store* is one tenant: in XKS terms, one path prefix with its own
//! SigV4 credentials and its own set of keys. A *key* has an external id, a
//! type (AES-256, or an RSA, EC or Ed25519 key pair), a status, a usage set
//! and one or more *versions* of key material.
//!
//! This crate holds names, rules and records only. It never holds key
//! material: versions appear here only in wrapped form.

pub mod error;
pub mod model;
pub mod names;
pub mod object;
pub mod time;

pub use error::{Error, Result};
pub use model::*;
pub use names::*;
pub use object::{AttrValue, ManagedObject, ObjectAttr, ObjectState, GRANT_ATTR};
pub use time::{Clock, ManualClock, SystemClock};
