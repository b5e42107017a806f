//! The Azure Managed HSM external key manager (EKM) proxy API, version
//! 0.1-preview: `info`, `metadata`, `wrapkey` and `unwrapkey` over mutual
//! TLS, translated onto the key service (which holds every rule). A key
//! store serves it once bound with `keyhold store api /s azure-ekm …`
//! ([`keyhold_service::StoreApi`]); its path prefix routes requests to it
//! and its client certificate (subject common name and CAs) is the only
//! access control Azure offers.

pub mod api;
pub mod error;
pub mod route;

pub use api::{AzureApi, AzureConfig, ClientCheck, Peer};
pub use error::{Code, EkmError};
