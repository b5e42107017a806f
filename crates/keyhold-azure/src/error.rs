//! The EKM proxy API's errors: `{"code": …, "message": …}` with a non-200
//! status. Codes stay stable (Managed HSM copies them into its diagnostics
//! unchanged) and messages never hold key material.

use hyper::StatusCode;

/// The `code` strings Keyhold answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 400: a bad parameter, encoding or size; a value that does not unwrap.
    BadRequest,
    /// 400: the `api-version` query parameter names a version we lack.
    UnsupportedApiVersion,
    /// 400: an `alg` we do not know, or one not of the key's type.
    UnsupportedAlgorithm,
    /// 401: no client certificate, or not the one this key store allows.
    Unauthorized,
    /// 403: a secondary-authorization policy refused.
    Forbidden,
    /// 403: the key (or its store) is disabled, not active, destroyed, or
    /// everything is locked down.
    KeyDisabled,
    /// 403: the key may not do this (usage, type, state).
    OperationNotAllowed,
    /// 404: no such key.
    KeyNotFound,
    /// 404: no key store serves Azure at this path.
    NotFound,
    /// 405: not POST.
    MethodNotAllowed,
    /// 408: the HSM or the database did not answer in time.
    RequestTimeout,
    /// 500.
    InternalServerError,
    /// 503: the HSM cannot be reached.
    ServiceUnavailable,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BadRequest => "BadRequest",
            Code::UnsupportedApiVersion => "UnsupportedApiVersion",
            Code::UnsupportedAlgorithm => "UnsupportedAlgorithm",
            Code::Unauthorized => "Unauthorized",
            Code::Forbidden => "Forbidden",
            Code::KeyDisabled => "KeyDisabled",
            Code::OperationNotAllowed => "OperationNotAllowed",
            Code::KeyNotFound => "KeyNotFound",
            Code::NotFound => "NotFound",
            Code::MethodNotAllowed => "MethodNotAllowed",
            Code::RequestTimeout => "RequestTimeout",
            Code::InternalServerError => "InternalServerError",
            Code::ServiceUnavailable => "ServiceUnavailable",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Code::BadRequest | Code::UnsupportedApiVersion | Code::UnsupportedAlgorithm => {
                StatusCode::BAD_REQUEST
            }
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::Forbidden | Code::KeyDisabled | Code::OperationNotAllowed => {
                StatusCode::FORBIDDEN
            }
            Code::KeyNotFound | Code::NotFound => StatusCode::NOT_FOUND,
            Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Code::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Code::InternalServerError => StatusCode::INTERNAL_SERVER_ERROR,
            Code::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// An error answer (a ProxyError).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EkmError {
    pub code: Code,
    pub message: String,
}

impl EkmError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(Code::BadRequest, message)
    }

    /// The JSON body.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "code": self.code.as_str(),
            "message": self.message,
        }))
        .unwrap_or_default()
    }
}

impl From<keyhold_core::Error> for EkmError {
    fn from(e: keyhold_core::Error) -> Self {
        use keyhold_core::Error as E;
        let code = match &e {
            E::Invalid { what: "alg", .. } => Code::UnsupportedAlgorithm,
            E::Invalid { .. } | E::InvalidCiphertext => Code::BadRequest,
            E::KeyNotFound { .. } => Code::KeyNotFound,
            E::StoreNotFound(_) => Code::NotFound,
            E::InvalidState(_) => Code::KeyDisabled,
            E::KeyUsage(_) => Code::OperationNotAllowed,
            E::AccessDenied { .. } => Code::Forbidden,
            E::DependencyTimeout(_) => Code::RequestTimeout,
            E::RootOfTrust(_) => Code::ServiceUnavailable,
            E::StoreExists(_)
            | E::KeyExists { .. }
            | E::CredentialNotFound(_)
            | E::UnwrapFailed
            | E::Storage(_)
            | E::Integrity(_)
            | E::Internal(_)
            | E::ObjectNotFound(_)
            | E::Conflict(_) => Code::InternalServerError,
        };
        let message = match code {
            // Internals stay in the server's log.
            Code::InternalServerError => {
                tracing::error!(error = %e, "internal error serving an Azure EKM request");
                "internal error in the key manager".to_owned()
            }
            Code::ServiceUnavailable => {
                tracing::error!(error = %e, "HSM error serving an Azure EKM request");
                "the key manager's HSM cannot be used now; retry".to_owned()
            }
            Code::RequestTimeout => "the key manager's storage or HSM did not answer in time; retry".to_owned(),
            _ => match e {
                E::AccessDenied { why, .. } => why,
                E::InvalidCiphertext => {
                    "the wrapped value does not unwrap with this key (corrupted, or wrapped by another key or algorithm)".to_owned()
                }
                E::Invalid { why, .. } => why,
                e => e.to_string(),
            },
        };
        EkmError::new(code, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_proxy_errors_without_internals() {
        let e: EkmError = keyhold_core::Error::Storage("db password=x".into()).into();
        assert_eq!(e.code.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(body["code"], "InternalServerError");
        assert!(!body["message"].as_str().unwrap().contains("password"));
        let e: EkmError = keyhold_core::Error::InvalidState("key k is disabled".into()).into();
        assert_eq!(
            (e.code.as_str(), e.code.status().as_u16()),
            ("KeyDisabled", 403)
        );
        let e: EkmError = keyhold_core::Error::invalid("alg", "A256KW is not…").into();
        assert_eq!(
            (e.code.as_str(), e.code.status().as_u16()),
            ("UnsupportedAlgorithm", 400)
        );
    }
}
