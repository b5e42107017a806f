//! The KMIP front-end of Keyhold (OASIS Key Management Interoperability
//! Protocol 1.0–2.1, TTLV over mutual TLS).
//!
//! Layers: [`ttlv`] (the binary encoding, hardened against hostile input),
//! [`message`] (headers, batches, versions), [`operation`] (the typed
//! operations), [`attrs`] (the one attribute table) and [`objects`] (how
//! KMIP attributes map onto stored managed objects), [`ops`] (the
//! operations over the key service, audited; streamed Encrypt/Decrypt keep
//! their state in `stream`), and [`server`] (the mTLS
//! listener).

pub mod attrs;
pub mod enums;
pub mod message;
pub mod names;
pub mod objects;
pub mod operation;
pub mod ops;
pub mod server;
mod service_err;
mod stream;
pub mod tags;
pub mod ttlv;
pub mod xks_keys;

pub use ops::{Client, Kmip};
