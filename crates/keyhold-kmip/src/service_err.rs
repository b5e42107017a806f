//! The key service's errors as KMIP Result Reasons: one exhaustive mapping
//! (a new error variant does not compile until it is mapped here), tested
//! as a table.

use crate::enums::Reason;
use crate::message::KmipError;
use keyhold_core::Error;
use keyhold_service::object_rules::{Refusal, Refused};

/// Maps a refusal of the managed-object rules to its KMIP Result Reason.
pub(crate) fn refused(r: Refused) -> KmipError {
    let reason = match r.why {
        Refusal::WrongState | Refusal::BeforeProcessStart => Reason::WrongKeyLifecycleState,
        Refusal::NotSymmetric => Reason::IllegalOperation,
        Refusal::UsageMask => Reason::IncompatibleCryptographicUsageMask,
        Refusal::PastProtectStop => Reason::PastProtectStopDate,
        Refusal::UsageLimits | Refusal::ExportabilityNarrowsOnly => Reason::PermissionDenied,
        Refusal::Destroyed => Reason::ObjectDestroyed,
        Refusal::Sensitive => Reason::Sensitive,
        Refusal::NotExtractable => Reason::NotExtractable,
    };
    KmipError::new(reason, r.message)
}

/// Maps a key service error to the KMIP failure a client receives. Internal
/// details (storage, root of trust) go to the log, not the wire.
pub(crate) fn service_err(e: Error) -> KmipError {
    match e {
        Error::ObjectNotFound(uid) => {
            KmipError::new(Reason::ObjectNotFound, format!("object {uid} not found"))
        }
        // XKS keys seen over KMIP are objects too.
        Error::KeyNotFound { store, key } => KmipError::new(
            Reason::ObjectNotFound,
            format!("key {key} not found in key store {store}"),
        ),
        Error::StoreNotFound(s) => {
            KmipError::new(Reason::ItemNotFound, format!("key store {s} not found"))
        }
        Error::CredentialNotFound(c) => {
            KmipError::new(Reason::ItemNotFound, format!("credential {c} not found"))
        }
        Error::StoreExists(s) => KmipError::new(
            Reason::IllegalOperation,
            format!("key store {s} already exists"),
        ),
        Error::KeyExists { store, key } => KmipError::new(
            Reason::IllegalOperation,
            format!("key {key} already exists in key store {store}"),
        ),
        Error::InvalidState(m) => KmipError::new(Reason::PermissionDenied, m),
        Error::AccessDenied { why, .. } => KmipError::new(Reason::PermissionDenied, why),
        Error::KeyUsage(m) => KmipError::new(Reason::IncompatibleCryptographicUsageMask, m),
        Error::InvalidCiphertext => KmipError::new(
            Reason::CryptographicFailure,
            "the ciphertext, IV, tag or authenticated data is invalid",
        ),
        Error::Invalid { what, why } => KmipError::invalid_field(format!("{what}: {why}")),
        Error::Conflict(m) => KmipError::new(
            Reason::GeneralFailure,
            format!("{m} was changed by another request; retry"),
        ),
        Error::UnwrapFailed | Error::RootOfTrust(_) => {
            tracing::warn!(error = %e_text(&e), "KMIP request failed at the root of trust");
            KmipError::new(
                Reason::GeneralFailure,
                "the root of trust could not unwrap the object",
            )
        }
        Error::DependencyTimeout(m) => {
            KmipError::new(Reason::GeneralFailure, format!("dependency timed out: {m}"))
        }
        Error::Integrity(m) => {
            tracing::error!(error = %m, "KMIP request refused: a stored row does not verify");
            KmipError::new(
                Reason::GeneralFailure,
                "a stored record does not verify (changed outside Keyhold); refused",
            )
        }
        Error::Storage(_) | Error::Internal(_) => {
            tracing::warn!(error = %e_text(&e), "KMIP request failed inside Keyhold");
            KmipError::new(Reason::GeneralFailure, "internal error")
        }
    }
}

fn e_text(e: &Error) -> String {
    e.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every refusal of the object rules and the reason a client sees.
    #[test]
    fn every_object_refusal_has_its_reason() {
        let table = [
            (Refusal::WrongState, Reason::WrongKeyLifecycleState),
            (Refusal::BeforeProcessStart, Reason::WrongKeyLifecycleState),
            (Refusal::NotSymmetric, Reason::IllegalOperation),
            (
                Refusal::UsageMask,
                Reason::IncompatibleCryptographicUsageMask,
            ),
            (Refusal::PastProtectStop, Reason::PastProtectStopDate),
            (Refusal::UsageLimits, Reason::PermissionDenied),
            (Refusal::ExportabilityNarrowsOnly, Reason::PermissionDenied),
            (Refusal::Destroyed, Reason::ObjectDestroyed),
            (Refusal::Sensitive, Reason::Sensitive),
            (Refusal::NotExtractable, Reason::NotExtractable),
        ];
        for (why, reason) in table {
            let e = refused(Refused {
                why,
                message: "object u: why".into(),
            });
            assert_eq!(e.reason, reason, "{why:?}");
            assert_eq!(e.message, "object u: why");
        }
    }

    /// Every error the service returns, the reason a client sees, and what
    /// the message must (or must not) say.
    #[test]
    fn every_service_error_has_its_reason() {
        let table: Vec<(Error, Reason, &str)> = vec![
            (
                Error::ObjectNotFound("u".into()),
                Reason::ObjectNotFound,
                "object u",
            ),
            (
                Error::KeyNotFound {
                    store: "/s".into(),
                    key: "k".into(),
                },
                Reason::ObjectNotFound,
                "key k",
            ),
            (
                Error::StoreNotFound("/s".into()),
                Reason::ItemNotFound,
                "/s",
            ),
            (
                Error::CredentialNotFound("AK".into()),
                Reason::ItemNotFound,
                "AK",
            ),
            (
                Error::StoreExists("/s".into()),
                Reason::IllegalOperation,
                "exists",
            ),
            (
                Error::KeyExists {
                    store: "/s".into(),
                    key: "k".into(),
                },
                Reason::IllegalOperation,
                "exists",
            ),
            (
                Error::InvalidState("disabled".into()),
                Reason::PermissionDenied,
                "disabled",
            ),
            (
                Error::AccessDenied {
                    rule: None,
                    why: "policy".into(),
                },
                Reason::PermissionDenied,
                "policy",
            ),
            (
                Error::KeyUsage("no encrypt".into()),
                Reason::IncompatibleCryptographicUsageMask,
                "no encrypt",
            ),
            (
                Error::InvalidCiphertext,
                Reason::CryptographicFailure,
                "invalid",
            ),
            (
                Error::invalid("attr", "bad"),
                Reason::InvalidField,
                "attr: bad",
            ),
            (
                Error::Conflict("object u".into()),
                Reason::GeneralFailure,
                "retry",
            ),
            (Error::UnwrapFailed, Reason::GeneralFailure, "root of trust"),
            (
                Error::RootOfTrust("pin".into()),
                Reason::GeneralFailure,
                "root of trust",
            ),
            (
                Error::DependencyTimeout("db".into()),
                Reason::GeneralFailure,
                "timed out",
            ),
            (
                Error::Integrity("x".into()),
                Reason::GeneralFailure,
                "does not verify",
            ),
            (
                Error::Storage("disk on fire".into()),
                Reason::GeneralFailure,
                "internal error",
            ),
            (
                Error::Internal("bug 42".into()),
                Reason::GeneralFailure,
                "internal error",
            ),
        ];
        for (e, reason, says) in table {
            let what = e.to_string();
            let k = service_err(e);
            assert_eq!(k.reason, reason, "{what}");
            assert!(k.message.contains(says), "{what}: {}", k.message);
            // Internals stay in the log.
            for secret in ["disk on fire", "bug 42", "pin"] {
                assert!(!k.message.contains(secret), "{what}: {}", k.message);
            }
        }
    }
}
