//! XKS errors: each has the specification's `errorName` and HTTP status.

use hyper::StatusCode;

/// An XKS error as the specification names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorName {
    ValidationException,
    InvalidStateException,
    InvalidCiphertextException,
    InvalidKeyUsageException,
    AuthenticationFailedException,
    AccessDeniedException,
    KeyNotFoundException,
    InvalidUriPathException,
    ThrottlingException,
    UnsupportedOperationException,
    DependencyTimeoutException,
    InternalException,
}

impl ErrorName {
    /// Every error name, in the specification's order.
    pub const ALL: [ErrorName; 12] = [
        ErrorName::ValidationException,
        ErrorName::InvalidStateException,
        ErrorName::InvalidCiphertextException,
        ErrorName::InvalidKeyUsageException,
        ErrorName::AuthenticationFailedException,
        ErrorName::AccessDeniedException,
        ErrorName::KeyNotFoundException,
        ErrorName::InvalidUriPathException,
        ErrorName::ThrottlingException,
        ErrorName::UnsupportedOperationException,
        ErrorName::DependencyTimeoutException,
        ErrorName::InternalException,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorName::ValidationException => "ValidationException",
            ErrorName::InvalidStateException => "InvalidStateException",
            ErrorName::InvalidCiphertextException => "InvalidCiphertextException",
            ErrorName::InvalidKeyUsageException => "InvalidKeyUsageException",
            ErrorName::AuthenticationFailedException => "AuthenticationFailedException",
            ErrorName::AccessDeniedException => "AccessDeniedException",
            ErrorName::KeyNotFoundException => "KeyNotFoundException",
            ErrorName::InvalidUriPathException => "InvalidUriPathException",
            ErrorName::ThrottlingException => "ThrottlingException",
            ErrorName::UnsupportedOperationException => "UnsupportedOperationException",
            ErrorName::DependencyTimeoutException => "DependencyTimeoutException",
            ErrorName::InternalException => "InternalException",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorName::ValidationException
            | ErrorName::InvalidStateException
            | ErrorName::InvalidCiphertextException
            | ErrorName::InvalidKeyUsageException => StatusCode::BAD_REQUEST,
            ErrorName::AuthenticationFailedException => StatusCode::UNAUTHORIZED,
            ErrorName::AccessDeniedException => StatusCode::FORBIDDEN,
            ErrorName::KeyNotFoundException | ErrorName::InvalidUriPathException => {
                StatusCode::NOT_FOUND
            }
            ErrorName::ThrottlingException => StatusCode::TOO_MANY_REQUESTS,
            ErrorName::UnsupportedOperationException => StatusCode::NOT_IMPLEMENTED,
            ErrorName::DependencyTimeoutException => StatusCode::SERVICE_UNAVAILABLE,
            ErrorName::InternalException => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error answer: name plus a message for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XksError {
    pub name: ErrorName,
    pub message: String,
    /// HTTP status override (413 for oversized bodies); normally `name.status()`.
    pub status: Option<StatusCode>,
}

impl XksError {
    pub fn new(name: ErrorName, message: impl Into<String>) -> Self {
        Self {
            name,
            message: message.into(),
            status: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status.unwrap_or_else(|| self.name.status())
    }

    /// The JSON body: `errorMessage` is printable ASCII, under 512 characters.
    pub fn body(&self) -> Vec<u8> {
        let mut msg: String = self
            .message
            .chars()
            .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
            .collect();
        msg.truncate(500);
        serde_json::to_vec(&serde_json::json!({
            "errorName": self.name.as_str(),
            "errorMessage": msg,
        }))
        .unwrap_or_default()
    }
}

impl From<keyhold_core::Error> for XksError {
    fn from(e: keyhold_core::Error) -> Self {
        use keyhold_core::Error as E;
        let name = match &e {
            E::Invalid { .. } => ErrorName::ValidationException,
            E::KeyNotFound { .. } => ErrorName::KeyNotFoundException,
            E::StoreNotFound(_) => ErrorName::InvalidUriPathException,
            E::InvalidState(_) => ErrorName::InvalidStateException,
            E::KeyUsage(_) => ErrorName::InvalidKeyUsageException,
            E::AccessDenied { .. } => ErrorName::AccessDeniedException,
            E::InvalidCiphertext => ErrorName::InvalidCiphertextException,
            E::StoreExists(_) | E::KeyExists { .. } | E::CredentialNotFound(_) => {
                ErrorName::ValidationException
            }
            E::DependencyTimeout(_) => ErrorName::DependencyTimeoutException,
            E::RootOfTrust(_)
            | E::UnwrapFailed
            | E::Storage(_)
            | E::Integrity(_)
            | E::Internal(_)
            | E::ObjectNotFound(_)
            | E::Conflict(_) => ErrorName::InternalException,
        };
        let message = match name {
            // Do not leak internals to the network; the log has the detail.
            ErrorName::InternalException => {
                tracing::error!(error = %e, "internal error serving XKS request");
                "internal error in the key manager".to_owned()
            }
            ErrorName::DependencyTimeoutException => {
                tracing::warn!(error = %e, "dependency timed out serving XKS request");
                "the key manager's storage did not answer in time; retry".to_owned()
            }
            // The rule's own words, as the policy gave them.
            _ => match e {
                E::AccessDenied { why, .. } => why,
                E::InvalidCiphertext => "the ciphertext, IV, tag, additional authenticated data or ciphertext metadata is corrupted, missing or otherwise invalid".to_owned(),
                e => e.to_string(),
            },
        };
        XksError::new(name, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's table of errors (XKS Proxy API, "Errors"):
    /// every name Keyhold answers is one of them, with its status, and
    /// every one of them can be answered.
    const SPEC_ERRORS: [(&str, u16); 12] = [
        ("ValidationException", 400),
        ("InvalidStateException", 400),
        ("InvalidCiphertextException", 400),
        ("InvalidKeyUsageException", 400),
        ("AuthenticationFailedException", 401),
        ("AccessDeniedException", 403),
        ("KeyNotFoundException", 404),
        ("InvalidUriPathException", 404),
        ("ThrottlingException", 429),
        ("UnsupportedOperationException", 501),
        ("DependencyTimeoutException", 503),
        ("InternalException", 500),
    ];

    #[test]
    fn error_names_and_statuses_are_the_specifications() {
        let ours: Vec<(&str, u16)> = ErrorName::ALL
            .iter()
            .map(|n| (n.as_str(), n.status().as_u16()))
            .collect();
        assert_eq!(ours, SPEC_ERRORS);
    }

    #[test]
    fn core_errors_map_to_spec_names() {
        use keyhold_core::Error as E;
        let cases = [
            (
                E::KeyNotFound {
                    store: "/a".into(),
                    key: "k".into(),
                },
                "KeyNotFoundException",
                404,
            ),
            (
                E::StoreNotFound("/a".into()),
                "InvalidUriPathException",
                404,
            ),
            (E::InvalidState("x".into()), "InvalidStateException", 400),
            (E::KeyUsage("x".into()), "InvalidKeyUsageException", 400),
            (E::InvalidCiphertext, "InvalidCiphertextException", 400),
            (E::invalid("x", "y"), "ValidationException", 400),
            (
                E::DependencyTimeout("busy".into()),
                "DependencyTimeoutException",
                503,
            ),
            (E::Storage("disk on fire".into()), "InternalException", 500),
            (E::RootOfTrust("r".into()), "InternalException", 500),
            (E::UnwrapFailed, "InternalException", 500),
            (
                E::Integrity("disk on fire".into()),
                "InternalException",
                500,
            ),
            (E::Internal("disk on fire".into()), "InternalException", 500),
            (E::ObjectNotFound("u".into()), "InternalException", 500),
            (E::Conflict("u".into()), "InternalException", 500),
            (
                E::AccessDenied {
                    rule: Some("r1".into()),
                    why: "denied by r1".into(),
                },
                "AccessDeniedException",
                403,
            ),
            (E::StoreExists("/a".into()), "ValidationException", 400),
            (
                E::KeyExists {
                    store: "/a".into(),
                    key: "k".into(),
                },
                "ValidationException",
                400,
            ),
            (
                E::CredentialNotFound("AK".into()),
                "ValidationException",
                400,
            ),
        ];
        for (e, name, status) in cases {
            let x = XksError::from(e);
            assert_eq!((x.name.as_str(), x.status().as_u16()), (name, status));
            assert!(!x.message.contains("disk on fire"));
        }
    }

    #[test]
    fn body_is_sanitised() {
        let e = XksError::new(
            ErrorName::ValidationException,
            format!("bad\u{1}{}", "x".repeat(900)),
        );
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        let m = v["errorMessage"].as_str().unwrap();
        assert!(m.len() < 512);
        assert!(m.starts_with("bad?"));
        assert_eq!(v["errorName"], "ValidationException");
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
    }
}
