//! The AWS KMS External Key Store (XKS) proxy API, version 1.
//!
//! `POST [/<prefix>]/kms/xks/v1/keys/<id>/{metadata,encrypt,decrypt}` and
//! `POST [/<prefix>]/kms/xks/v1/health`, each SigV4-signed with one of the
//! prefix's credentials. This crate is a thin front-end: it parses and
//! validates the wire format, authenticates, builds the AAD exactly as the
//! specification says, and calls the key service. It never logs plaintext,
//! AAD or key material; it logs request metadata (with `kmsRequestId`),
//! outcome and latency for every call.

pub mod api;
pub mod body;
pub mod error;
pub mod metrics;
mod ops;
pub mod route;
pub mod sigv4;
pub mod wire;

pub use api::{XksApi, XksConfig};
pub use error::{ErrorName, XksError};
