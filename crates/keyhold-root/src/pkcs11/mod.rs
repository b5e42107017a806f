//! A root of trust in an HSM, through PKCS#11 (any v2.40 module; SoftHSMv2
//! in tests).
//!
//! This is the only module that touches PKCS#11. It uses the `cryptoki`
//! crate (which fences the C calls); everything here is safe Rust and every
//! PKCS#11 type stays inside this module. What it offers:
//!
//! * [`Pkcs11Root`], a [`RootOfTrust`](crate::RootOfTrust) whose
//!   key-encryption key (KEK) is an AES-256 key inside the token: sensitive,
//!   never extractable. Wrapping is AES-GCM *inside the HSM* (C_Encrypt with
//!   CKM_AES_GCM, the wrap context as AAD), so the key database alone is useless.
//! * A session pool with a hard maximum, one login per token, and dead
//!   sessions discarded rather than reused.
//! * Recovery: a token that stops answering gets its module re-initialised
//!   (at most once a second) without a restart; failover tokens holding the
//!   same KEK take over while it is away.
//!
//! Calls into the module block; callers must keep them off async worker
//! threads. The user PIN comes from a file or an environment variable,
//! never the command line, and is never logged.

mod config;
mod module;
mod pool;
mod root;
mod token;

pub use config::{FailoverToken, PinSource, Pkcs11Config};
pub use root::{HsmStatus, Pkcs11Root};
