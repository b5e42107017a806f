//! Test support shared by Keyhold's crates (`publish = false`, never a
//! dependency of a shipped binary):
//!
//! * [`pg`]: throwaway PostgreSQL clusters, primary and streaming replicas.
//! * [`softhsm`]: SoftHSMv2 token directories of their own.
//! * [`service`] (feature `service`): a key service on a fresh software root
//!   and in-memory SQLite.

pub mod pg;
#[cfg(feature = "service")]
pub mod service;
pub mod softhsm;

pub use pg::*;
