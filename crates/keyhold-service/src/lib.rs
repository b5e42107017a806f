//! The key service: the one core every front-end (XKS, KMIP, the admin
//! API) calls. A key use is one call ([`KeyService::encrypt`],
//! [`KeyService::decrypt`], [`KeyService::describe`]) that returns its
//! result with the facts for the audit record; [`KeyService::placement`]
//! says whether a request may wait (an HSM, a database) and so belongs on
//! a blocking thread.
//!
//! It owns the lifecycle rules (which key may be used for what, in which
//! state), the credential store of each key store, and the in-memory caches
//! that keep the request path off the database. Key material only ever
//! enters it through the [`Barrier`]; caches hold it in zeroizing types.
//!
//! Caches are invalidated as a whole whenever storage reports a change
//! (this process's own writes, or the admin CLI's writes to the same data
//! directory), so a disable takes effect within one refresh interval.

pub mod api_tokens;
mod audit_broker;
pub mod backup;
mod cache;
pub mod client_certs;
pub mod gcm_budget;
mod health;
pub mod integrity;
mod key_use;
mod lifecycle;
pub mod object_rules;
pub mod objects;
pub mod policy;
pub mod rates;
mod rewrap;
pub mod rotation;
mod service;
pub mod store_apis;
mod xks_grants;

pub use audit_broker::{AuditBroker, AuditTicket};
pub use health::{EkmReport, HealthReport, HealthStatus};
pub use key_use::{
    scheme_fits, EncryptOptions, GcmInput, KeyDescription, KeyUse, NotRun, Placement, Sealed,
    Signed, Touches, Unwrapped, UseFacts, Used, WrapAlg, Wrapped,
};
pub use lifecycle::{next_state, DueReport, Transition, MAX_DESTROY_DAYS, MIN_DESTROY_DAYS};
pub use service::{
    CredentialEntry, CredentialInfo, KeyService, LiveStatus, NewCredential, UsageEnforcement,
};
pub(crate) use service::{KeyHandle, Operation};
pub use store_apis::{AzureEkmBinding, CseBinding, DkeBinding, StoreApi, StoreApis};

pub use keyhold_storage::VersionInfo;
pub use rewrap::{rewrap_all, verify_all, RewrapReport};
