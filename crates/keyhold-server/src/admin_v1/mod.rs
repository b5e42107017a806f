//! The typed admin API, `/v1/…`: key stores, their credentials and keys,
//! and the lockdown, as JSON resources. Every call but the OpenAPI document
//! carries a bearer token; the token's role decides what it may do (the
//! same roles as the CLI's), and every authenticated call is recorded in
//! the audit log's admin chain, refused ones included.
//!
//! The OpenAPI document is generated from the handlers below (their
//! `#[utoipa::path]` attributes and the views' schemas), served at
//! `GET /v1/openapi.json` without a token, and checked in as
//! `docs/openapi.json` (a test fails when they differ).

use hyper::{Method, StatusCode};
use keyhold_service::api_tokens::Access;
use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa::OpenApi;

mod handlers;

use handlers::*;
pub use handlers::{openapi_json, ApiDoc};

use crate::admin_ops::{AdminOps, KeyAction, LockdownView, OpError, OpResult};

/// The typed API's paths start with this.
pub const PREFIX: &str = "/v1/";
/// Where the OpenAPI document is served.
pub const OPENAPI_PATH: &str = "/v1/openapi.json";

/// One resource operation, with its path parameters (decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    OpenApi,
    ListStores,
    CreateStore,
    GetStore(String),
    SetStoreStatus(String),
    /// Which cloud API serves a store.
    SetStoreApi(String),
    ListCredentials(String),
    AddCredential(String),
    RemoveCredential(String, String),
    ListKeys(String),
    CreateKey(String),
    CreateKeys(String),
    ImportHsmKey(String),
    GetKey(String, String),
    SetKeyStatus(String, String),
    RotateKey(String, String),
    /// activate, deactivate, compromise, cancel-destroy.
    KeyAction(String, String, KeyAction),
    DestroyKey(String, String),
    SetKeyDates(String, String),
    SetRotation(String, String),
    SetMinDecryptVersion(String, String),
    SetUsage(String, String),
    ListVersions(String, String),
    /// A key pair's public key (`?version=N`).
    GetPublicKey(String, String),
    TrimVersions(String, String),
    SetVersionFlag(String, String, u32),
    Status,
    Whoami,
    CreateBackup,
    VerifyBackup,
    AuditVerify,
    AuditQuery,
    AuditExport,
    KmipStatus,
    ListClientCerts,
    IssueClientCert,
    RevokeClientCerts(String),
    /// Grant (true) or take back an object's use by an identity.
    SetGrant(String, String, bool),
    PurgeDestroyed,
    ListTokens,
    CreateToken,
    RevokeToken(String),
    ListPolicies,
    ValidatePolicy,
    /// A store's policy, or (with a key id) a key's.
    GetPolicy(String, Option<String>),
    SetPolicy(String, Option<String>),
    RemovePolicy(String, Option<String>),
    TestPolicy(String, Option<String>),
    GetLockdown,
    SetLockdown,
}

/// Why a request matched no route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoRoute {
    NotFound,
    MethodNotAllowed,
}

fn decode(segment: &str) -> Option<String> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// The route of `method` on `path` (which starts with [`PREFIX`]).
pub fn route(method: &Method, path: &str) -> Result<Route, NoRoute> {
    let rest = path.strip_prefix(PREFIX).ok_or(NoRoute::NotFound)?;
    let segs: Vec<String> = rest
        .split('/')
        .map(decode)
        .collect::<Option<_>>()
        .ok_or(NoRoute::NotFound)?;
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let m = method.clone();
    let allowed = |r: Route, ok: bool| {
        if ok {
            Ok(r)
        } else {
            Err(NoRoute::MethodNotAllowed)
        }
    };
    let (get, post, patch, put, delete) = (
        m == Method::GET,
        m == Method::POST,
        m == Method::PATCH,
        m == Method::PUT,
        m == Method::DELETE,
    );
    let s = |i: usize| segs[i].to_owned();
    // A store's or key's policy: read, set, removed.
    let policy = |store: String, key: Option<String>| match m {
        Method::GET => Ok(Route::GetPolicy(store, key)),
        Method::PUT => Ok(Route::SetPolicy(store, key)),
        Method::DELETE => Ok(Route::RemovePolicy(store, key)),
        _ => Err(NoRoute::MethodNotAllowed),
    };
    match segs.as_slice() {
        ["openapi.json"] => allowed(Route::OpenApi, get),
        ["stores"] if post => Ok(Route::CreateStore),
        ["stores"] => allowed(Route::ListStores, get),
        ["stores", _] if patch => Ok(Route::SetStoreStatus(s(1))),
        ["stores", _] => allowed(Route::GetStore(s(1)), get),
        ["stores", _, "api"] => allowed(Route::SetStoreApi(s(1)), put),
        ["stores", _, "credentials"] if post => Ok(Route::AddCredential(s(1))),
        ["stores", _, "credentials"] => allowed(Route::ListCredentials(s(1)), get),
        ["stores", _, "credentials", _] => allowed(Route::RemoveCredential(s(1), s(3)), delete),
        ["status"] => allowed(Route::Status, get),
        ["whoami"] => allowed(Route::Whoami, get),
        ["backups"] => allowed(Route::CreateBackup, post),
        ["backups", "verify"] => allowed(Route::VerifyBackup, post),
        ["audit", "verify"] => allowed(Route::AuditVerify, post),
        ["audit", "query"] => allowed(Route::AuditQuery, post),
        ["audit", "export"] => allowed(Route::AuditExport, post),
        ["kmip", "status"] => allowed(Route::KmipStatus, get),
        ["kmip", "client-certs"] if post => Ok(Route::IssueClientCert),
        ["kmip", "client-certs"] => allowed(Route::ListClientCerts, get),
        ["kmip", "client-certs", _] => allowed(Route::RevokeClientCerts(s(2)), delete),
        ["kmip", "objects", _, "grants", _] => match m {
            Method::PUT => Ok(Route::SetGrant(s(2), s(4), true)),
            Method::DELETE => Ok(Route::SetGrant(s(2), s(4), false)),
            _ => Err(NoRoute::MethodNotAllowed),
        },
        ["kmip", "purge-destroyed"] => allowed(Route::PurgeDestroyed, post),
        ["tokens"] if post => Ok(Route::CreateToken),
        ["tokens"] => allowed(Route::ListTokens, get),
        ["tokens", _] => allowed(Route::RevokeToken(s(1)), delete),
        ["policies"] => allowed(Route::ListPolicies, get),
        ["policies", "validate"] => allowed(Route::ValidatePolicy, post),
        ["stores", _, "policy"] => policy(s(1), None),
        ["stores", _, "keys", _, "policy"] => policy(s(1), Some(s(3))),
        ["stores", _, "policy", "test"] => allowed(Route::TestPolicy(s(1), None), post),
        ["stores", _, "keys", _, "policy", "test"] => {
            allowed(Route::TestPolicy(s(1), Some(s(3))), post)
        }
        ["stores", _, "hsm-keys"] => allowed(Route::ImportHsmKey(s(1)), post),
        ["stores", _, "keys"] if post => Ok(Route::CreateKey(s(1))),
        ["stores", _, "keys"] => allowed(Route::ListKeys(s(1)), get),
        ["stores", _, "keys", "batch"] if post => Ok(Route::CreateKeys(s(1))),
        ["stores", _, "keys", _] if patch => Ok(Route::SetKeyStatus(s(1), s(3))),
        ["stores", _, "keys", _] => allowed(Route::GetKey(s(1), s(3)), get),
        ["stores", _, "keys", _, "rotate"] => allowed(Route::RotateKey(s(1), s(3)), post),
        ["stores", _, "keys", _, "destroy"] => allowed(Route::DestroyKey(s(1), s(3)), post),
        ["stores", _, "keys", _, "dates"] => allowed(Route::SetKeyDates(s(1), s(3)), put),
        ["stores", _, "keys", _, "rotation"] => allowed(Route::SetRotation(s(1), s(3)), put),
        ["stores", _, "keys", _, "min-decrypt-version"] => {
            allowed(Route::SetMinDecryptVersion(s(1), s(3)), put)
        }
        ["stores", _, "keys", _, "usage"] => allowed(Route::SetUsage(s(1), s(3)), put),
        ["stores", _, "keys", _, "versions"] => allowed(Route::ListVersions(s(1), s(3)), get),
        ["stores", _, "keys", _, "public-key"] => allowed(Route::GetPublicKey(s(1), s(3)), get),
        ["stores", _, "keys", _, "trim-versions"] => allowed(Route::TrimVersions(s(1), s(3)), post),
        ["stores", _, "keys", _, "versions", v, "flag"] => match v.parse() {
            Ok(v) => allowed(Route::SetVersionFlag(s(1), s(3), v), put),
            Err(_) => Err(NoRoute::NotFound),
        },
        ["stores", _, "keys", _, action] => match KeyAction::parse(action) {
            Some(a) => allowed(Route::KeyAction(s(1), s(3), a), post),
            None => Err(NoRoute::NotFound),
        },
        ["lockdown"] if get => Ok(Route::GetLockdown),
        ["lockdown"] => allowed(Route::SetLockdown, put),
        _ => Err(NoRoute::NotFound),
    }
}

/// A path segment, percent-encoded where it must be (a store prefix's
/// inner slashes).
fn seg(s: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.');
    percent_encoding::utf8_percent_encode(s.trim_start_matches('/'), SEGMENT).to_string()
}

/// The policy of a store, or of one of its keys.
fn policy_path(s: &str, k: Option<&str>) -> String {
    match k {
        Some(k) => format!("stores/{}/keys/{}/policy", seg(s), seg(k)),
        None => format!("stores/{}/policy", seg(s)),
    }
}

/// A key's sub-resource `sub`.
fn key_sub(m: Method, s: &str, k: &str, sub: &str) -> (Method, String) {
    (m, format!("stores/{}/keys/{}/{sub}", seg(s), seg(k)))
}

impl Route {
    /// The method and path that name this route: what a client sends
    /// ([`route`] reads it back).
    pub fn request(&self) -> (Method, String) {
        let (m, p) = match self {
            Route::OpenApi => (Method::GET, "openapi.json".to_owned()),
            Route::ListStores => (Method::GET, "stores".into()),
            Route::CreateStore => (Method::POST, "stores".into()),
            Route::GetStore(s) => (Method::GET, format!("stores/{}", seg(s))),
            Route::SetStoreStatus(s) => (Method::PATCH, format!("stores/{}", seg(s))),
            Route::SetStoreApi(s) => (Method::PUT, format!("stores/{}/api", seg(s))),
            Route::ListCredentials(s) => (Method::GET, format!("stores/{}/credentials", seg(s))),
            Route::AddCredential(s) => (Method::POST, format!("stores/{}/credentials", seg(s))),
            Route::RemoveCredential(s, a) => (
                Method::DELETE,
                format!("stores/{}/credentials/{}", seg(s), seg(a)),
            ),
            Route::ListKeys(s) => (Method::GET, format!("stores/{}/keys", seg(s))),
            Route::CreateKey(s) => (Method::POST, format!("stores/{}/keys", seg(s))),
            Route::ImportHsmKey(s) => (Method::POST, format!("stores/{}/hsm-keys", seg(s))),
            Route::CreateKeys(s) => (Method::POST, format!("stores/{}/keys/batch", seg(s))),
            Route::GetKey(s, k) => (Method::GET, format!("stores/{}/keys/{}", seg(s), seg(k))),
            Route::SetKeyStatus(s, k) => {
                (Method::PATCH, format!("stores/{}/keys/{}", seg(s), seg(k)))
            }
            Route::RotateKey(s, k) => (
                Method::POST,
                format!("stores/{}/keys/{}/rotate", seg(s), seg(k)),
            ),
            Route::KeyAction(s, k, a) => (
                Method::POST,
                format!("stores/{}/keys/{}/{}", seg(s), seg(k), a.name()),
            ),
            Route::DestroyKey(s, k) => key_sub(Method::POST, s, k, "destroy"),
            Route::SetKeyDates(s, k) => key_sub(Method::PUT, s, k, "dates"),
            Route::SetRotation(s, k) => key_sub(Method::PUT, s, k, "rotation"),
            Route::SetMinDecryptVersion(s, k) => key_sub(Method::PUT, s, k, "min-decrypt-version"),
            Route::SetUsage(s, k) => key_sub(Method::PUT, s, k, "usage"),
            Route::ListVersions(s, k) => key_sub(Method::GET, s, k, "versions"),
            Route::GetPublicKey(s, k) => key_sub(Method::GET, s, k, "public-key"),
            Route::TrimVersions(s, k) => key_sub(Method::POST, s, k, "trim-versions"),
            Route::SetVersionFlag(s, k, v) => {
                key_sub(Method::PUT, s, k, &format!("versions/{v}/flag"))
            }
            Route::Status => (Method::GET, "status".into()),
            Route::Whoami => (Method::GET, "whoami".into()),
            Route::CreateBackup => (Method::POST, "backups".into()),
            Route::VerifyBackup => (Method::POST, "backups/verify".into()),
            Route::AuditVerify => (Method::POST, "audit/verify".into()),
            Route::AuditQuery => (Method::POST, "audit/query".into()),
            Route::AuditExport => (Method::POST, "audit/export".into()),
            Route::KmipStatus => (Method::GET, "kmip/status".into()),
            Route::ListClientCerts => (Method::GET, "kmip/client-certs".into()),
            Route::IssueClientCert => (Method::POST, "kmip/client-certs".into()),
            Route::RevokeClientCerts(n) => {
                (Method::DELETE, format!("kmip/client-certs/{}", seg(n)))
            }
            Route::SetGrant(uid, who, grant) => (
                if *grant { Method::PUT } else { Method::DELETE },
                format!("kmip/objects/{}/grants/{}", seg(uid), seg(who)),
            ),
            Route::PurgeDestroyed => (Method::POST, "kmip/purge-destroyed".into()),
            Route::ListTokens => (Method::GET, "tokens".into()),
            Route::CreateToken => (Method::POST, "tokens".into()),
            Route::RevokeToken(n) => (Method::DELETE, format!("tokens/{}", seg(n))),
            Route::ListPolicies => (Method::GET, "policies".into()),
            Route::ValidatePolicy => (Method::POST, "policies/validate".into()),
            Route::GetPolicy(s, k) => (Method::GET, policy_path(s, k.as_deref())),
            Route::SetPolicy(s, k) => (Method::PUT, policy_path(s, k.as_deref())),
            Route::RemovePolicy(s, k) => (Method::DELETE, policy_path(s, k.as_deref())),
            Route::TestPolicy(s, k) => (
                Method::POST,
                format!("{}/test", policy_path(s, k.as_deref())),
            ),
            Route::GetLockdown => (Method::GET, "lockdown".into()),
            Route::SetLockdown => (Method::PUT, "lockdown".into()),
        };
        (m, format!("{PREFIX}{p}"))
    }

    /// Whether the answer is one key ([`crate::admin_ops::KeyView`]).
    pub fn answers_one_key(&self) -> bool {
        matches!(
            self,
            Route::GetKey(..)
                | Route::CreateKey(_)
                | Route::ImportHsmKey(_)
                | Route::SetKeyStatus(..)
                | Route::RotateKey(..)
                | Route::KeyAction(..)
                | Route::DestroyKey(..)
                | Route::SetKeyDates(..)
                | Route::SetRotation(..)
                | Route::SetMinDecryptVersion(..)
                | Route::SetUsage(..)
                | Route::SetVersionFlag(..)
        )
    }

    /// What the caller's role must allow.
    pub fn access(&self) -> Access {
        match self {
            Route::OpenApi
            | Route::GetLockdown
            | Route::Status
            | Route::KmipStatus
            | Route::Whoami => Access::Status,
            Route::ListStores
            | Route::GetStore(_)
            | Route::ListCredentials(_)
            | Route::ListKeys(_)
            | Route::GetKey(..)
            | Route::ListVersions(..)
            | Route::GetPublicKey(..)
            | Route::ListTokens
            | Route::ListClientCerts
            | Route::ListPolicies
            | Route::ValidatePolicy
            | Route::GetPolicy(..)
            | Route::TestPolicy(..) => Access::Read,
            Route::AuditVerify | Route::AuditQuery | Route::AuditExport => Access::Audit,
            // Everything else changes something.
            _ => Access::Change,
        }
    }

    /// The operation as the CLI spells it, for the audit record (the
    /// same record whether a custodian used the CLI or the API). `body`
    /// completes what the path does not say.
    pub fn audit_words(&self, body: &[u8]) -> String {
        let field = |name: &str| {
            serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v.get(name).and_then(|f| f.as_str()).map(str::to_owned))
                .unwrap_or_else(|| "?".into())
        };
        let switch = || match field("status").as_str() {
            "ENABLED" => "enable",
            "DISABLED" => "disable",
            _ => "set-status",
        };
        let p = |s: &str| format!("/{}", s.trim_start_matches('/'));
        match self {
            Route::OpenApi => "api openapi".into(),
            Route::ListStores => "store list".into(),
            Route::CreateStore => format!("store create {}", p(&field("prefix"))),
            Route::GetStore(s) => format!("store show {}", p(s)),
            Route::SetStoreStatus(s) => format!("store {} {}", switch(), p(s)),
            Route::SetStoreApi(s) => format!("store api {} {}", p(s), field("api")),
            Route::ListCredentials(s) => format!("store credential list {}", p(s)),
            Route::AddCredential(s) => format!("store credential add {}", p(s)),
            Route::RemoveCredential(s, a) => format!("store credential remove {} {a}", p(s)),
            Route::ListKeys(s) => format!("key list {}", p(s)),
            Route::CreateKey(s) => match field("key_id").as_str() {
                "?" => format!("key create {}", p(s)),
                id => format!("key create {} {id}", p(s)),
            },
            Route::ImportHsmKey(s) => format!("key import-hsm {} --label {}", p(s), field("label")),
            Route::CreateKeys(s) => format!("key create {} --count (sent)", p(s)),
            Route::GetKey(s, k) => format!("key show {} {k}", p(s)),
            Route::SetKeyStatus(s, k) => format!("key {} {} {k}", switch(), p(s)),
            Route::RotateKey(s, k) => format!("key rotate {} {k}", p(s)),
            Route::KeyAction(s, k, a) => format!("key {} {} {k}", a.name(), p(s)),
            Route::DestroyKey(s, k) => format!("key destroy {} {k}", p(s)),
            Route::SetKeyDates(s, k) => format!("key set-dates {} {k}", p(s)),
            Route::SetRotation(s, k) => format!("key set-rotation {} {k}", p(s)),
            Route::SetMinDecryptVersion(s, k) => {
                format!("key set-min-decrypt-version {} {k}", p(s))
            }
            Route::SetUsage(s, k) => format!("key set-usage {} {k}", p(s)),
            Route::ListVersions(s, k) => format!("key versions {} {k}", p(s)),
            Route::GetPublicKey(s, k) => format!("key public-key {} {k}", p(s)),
            Route::TrimVersions(s, k) => format!("key trim-versions {} {k}", p(s)),
            Route::SetVersionFlag(s, k, _) => format!("key flag-version {} {k}", p(s)),
            Route::Status => "status".into(),
            Route::Whoami => "admin whoami".into(),
            Route::CreateBackup => "backup create (sent)".into(),
            Route::VerifyBackup => "backup verify (sent)".into(),
            Route::AuditVerify => "audit verify".into(),
            Route::AuditQuery => "audit query".into(),
            Route::AuditExport => "audit export".into(),
            Route::KmipStatus => "kmip status".into(),
            Route::ListClientCerts => "kmip client-cert list".into(),
            Route::IssueClientCert => format!("kmip client-cert issue {}", field("name")),
            Route::RevokeClientCerts(n) => format!("kmip client-cert revoke {n}"),
            Route::SetGrant(uid, who, true) => format!("kmip grant {uid} {who}"),
            Route::SetGrant(uid, who, false) => format!("kmip ungrant {uid} {who}"),
            Route::PurgeDestroyed => "kmip purge-destroyed".into(),
            Route::ListTokens => "admin token list".into(),
            Route::CreateToken => {
                let role = field("role");
                format!("admin token create {} --role {role}", field("name"))
            }
            Route::RevokeToken(n) => format!("admin token revoke {n}"),
            Route::ListPolicies => "policy list".into(),
            Route::ValidatePolicy => "policy validate --file (sent)".into(),
            Route::GetPolicy(s, k) => format!("policy show {}", scope_words(s, k)),
            Route::SetPolicy(s, k) => {
                format!("policy set {} --file (sent)", scope_words(s, k))
            }
            Route::RemovePolicy(s, k) => format!("policy remove {}", scope_words(s, k)),
            Route::TestPolicy(s, k) => format!("policy test {}", scope_words(s, k)),
            Route::GetLockdown => "lockdown show".into(),
            Route::SetLockdown => {
                let on = serde_json::from_slice::<LockdownView>(body).map(|l| l.lockdown);
                match on {
                    Ok(true) => "lockdown".into(),
                    Ok(false) => "unlock".into(),
                    Err(_) => "lockdown set".into(),
                }
            }
        }
    }
}

/// `--store /s [--key k]`, as the policy commands take a scope.
fn scope_words(s: &str, k: &Option<String>) -> String {
    let store = format!("--store /{}", s.trim_start_matches('/'));
    match k {
        Some(k) => format!("{store} --key {k}"),
        None => store,
    }
}

fn body<T: DeserializeOwned>(bytes: &[u8]) -> OpResult<T> {
    serde_json::from_slice(bytes).map_err(|e| OpError::new(400, format!("malformed request: {e}")))
}

/// A body that may be empty (then the defaults).
fn body_or_default<T: DeserializeOwned + Default>(bytes: &[u8]) -> OpResult<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    body(bytes)
}

fn json<T: Serialize>(status: StatusCode, v: T) -> OpResult<(StatusCode, serde_json::Value)> {
    serde_json::to_value(v)
        .map(|v| (status, v))
        .map_err(|e| OpError::new(500, e.to_string()))
}

/// A query parameter's value.
fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Runs `route` (blocking: on a blocking thread).
pub fn run(
    ops: &AdminOps,
    route: &Route,
    query: &str,
    bytes: &[u8],
) -> OpResult<(StatusCode, serde_json::Value)> {
    use StatusCode as S;
    match route {
        Route::OpenApi => json(S::OK, ApiDoc::openapi()),
        Route::ListStores => json(S::OK, list_stores(ops)?),
        Route::CreateStore => json(S::CREATED, create_store(ops, body(bytes)?)?),
        Route::GetStore(s) => json(S::OK, get_store(ops, s)?),
        Route::SetStoreStatus(s) => json(S::OK, set_store_status(ops, s, body(bytes)?)?),
        Route::SetStoreApi(s) => json(S::OK, set_store_api(ops, s, body(bytes)?)?),
        Route::ListCredentials(s) => json(S::OK, list_credentials(ops, s)?),
        Route::AddCredential(s) => json(S::CREATED, add_credential(ops, s)?),
        Route::RemoveCredential(s, a) => {
            remove_credential(ops, s, a)?;
            Ok((S::NO_CONTENT, serde_json::Value::Null))
        }
        Route::ListKeys(s) => {
            let limit = match query_param(query, "limit") {
                None => None,
                Some(v) => Some(
                    v.parse()
                        .map_err(|_| OpError::new(400, "limit must be a whole number of keys"))?,
                ),
            };
            json(
                S::OK,
                list_keys(ops, s, query_param(query, "after"), limit)?,
            )
        }
        Route::CreateKey(s) => json(S::CREATED, create_key(ops, s, body(bytes)?)?),
        Route::ImportHsmKey(s) => json(S::CREATED, import_hsm_key(ops, s, body(bytes)?)?),
        Route::CreateKeys(s) => json(S::CREATED, create_keys(ops, s, body(bytes)?)?),
        Route::GetKey(s, k) => json(S::OK, get_key(ops, s, k)?),
        Route::SetKeyStatus(s, k) => json(S::OK, set_key_status(ops, s, k, body(bytes)?)?),
        Route::RotateKey(s, k) => json(S::OK, rotate_key(ops, s, k)?),
        Route::KeyAction(s, k, a) => json(S::OK, key_action(ops, s, k, *a)?),
        Route::DestroyKey(s, k) => json(S::OK, destroy_key(ops, s, k, body_or_default(bytes)?)?),
        Route::SetKeyDates(s, k) => json(S::OK, set_key_dates(ops, s, k, body(bytes)?)?),
        Route::SetRotation(s, k) => json(S::OK, set_rotation(ops, s, k, body(bytes)?)?),
        Route::SetMinDecryptVersion(s, k) => {
            json(S::OK, set_min_decrypt_version(ops, s, k, body(bytes)?)?)
        }
        Route::SetUsage(s, k) => json(S::OK, set_usage(ops, s, k, body(bytes)?)?),
        Route::ListVersions(s, k) => json(S::OK, list_versions(ops, s, k)?),
        Route::GetPublicKey(s, k) => {
            let version = match query_param(query, "version") {
                None => None,
                Some(v) => Some(v.parse().map_err(|_| {
                    OpError::new(400, "version must be a key version number (1, 2, …)")
                })?),
            };
            json(S::OK, public_key(ops, s, k, version)?)
        }
        Route::TrimVersions(s, k) => json(S::OK, trim_versions(ops, s, k)?),
        Route::SetVersionFlag(s, k, v) => {
            json(S::OK, set_version_flag(ops, s, k, *v, body(bytes)?)?)
        }
        Route::Status => json(S::OK, status(ops)?),
        // The caller is named by the HTTP layer, which knows it.
        Route::Whoami => Err(OpError::new(
            400,
            "whoami names the caller of the admin API",
        )),
        Route::CreateBackup => json(S::CREATED, create_backup(ops)?),
        Route::VerifyBackup => json(S::OK, verify_backup(ops, body(bytes)?)?),
        Route::AuditVerify => json(S::OK, audit_verify(ops, body_or_default(bytes)?)?),
        Route::AuditQuery => json(S::OK, audit_query(ops, body_or_default(bytes)?)?),
        Route::AuditExport => json(S::OK, audit_export(ops, body_or_default(bytes)?)?),
        Route::KmipStatus => json(S::OK, kmip_status(ops)?),
        Route::ListClientCerts => json(S::OK, list_client_certs(ops)?),
        Route::IssueClientCert => json(S::CREATED, issue_client_cert(ops, body(bytes)?)?),
        Route::RevokeClientCerts(n) => json(S::OK, revoke_client_certs(ops, n)?),
        Route::SetGrant(uid, who, true) => json(S::OK, grant(ops, uid, who)?),
        Route::SetGrant(uid, who, false) => json(S::OK, ungrant(ops, uid, who)?),
        Route::PurgeDestroyed => json(S::OK, purge_destroyed(ops, body(bytes)?)?),
        Route::ListTokens => json(S::OK, list_tokens(ops)?),
        Route::CreateToken => json(S::CREATED, create_token(ops, body(bytes)?)?),
        Route::RevokeToken(n) => json(S::OK, revoke_token(ops, n)?),
        Route::ListPolicies => json(S::OK, list_policies(ops)?),
        Route::ValidatePolicy => json(S::OK, validate_policy(ops, body(bytes)?)?),
        Route::GetPolicy(s, None) => json(S::OK, get_policy(ops, s)?),
        Route::GetPolicy(s, Some(k)) => json(S::OK, get_key_policy(ops, s, k)?),
        Route::SetPolicy(s, None) => json(S::OK, set_policy(ops, s, body(bytes)?)?),
        Route::SetPolicy(s, Some(k)) => json(S::OK, set_key_policy(ops, s, k, body(bytes)?)?),
        Route::RemovePolicy(s, None) => json(S::OK, remove_policy(ops, s)?),
        Route::RemovePolicy(s, Some(k)) => json(S::OK, remove_key_policy(ops, s, k)?),
        Route::TestPolicy(s, None) => json(S::OK, test_policy(ops, s, body_or_default(bytes)?)?),
        Route::TestPolicy(s, Some(k)) => {
            json(S::OK, test_key_policy(ops, s, k, body_or_default(bytes)?)?)
        }
        Route::GetLockdown => json(S::OK, get_lockdown(ops)?),
        Route::SetLockdown => json(S::OK, set_lockdown(ops, body(bytes)?)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_methods() {
        let r = |m: Method, p: &str| route(&m, p);
        assert_eq!(r(Method::GET, "/v1/stores"), Ok(Route::ListStores));
        assert_eq!(r(Method::POST, "/v1/stores"), Ok(Route::CreateStore));
        assert_eq!(
            r(Method::GET, "/v1/stores/a%2Fb/keys/k1"),
            Ok(Route::GetKey("a/b".into(), "k1".into()))
        );
        assert_eq!(
            r(Method::PATCH, "/v1/stores/demo/keys/k1"),
            Ok(Route::SetKeyStatus("demo".into(), "k1".into()))
        );
        assert_eq!(
            r(Method::DELETE, "/v1/stores/demo/credentials/AK"),
            Ok(Route::RemoveCredential("demo".into(), "AK".into()))
        );
        assert_eq!(
            r(Method::GET, "/v1/stores/demo/keys/k1/rotate"),
            Err(NoRoute::MethodNotAllowed)
        );
        assert_eq!(r(Method::PUT, "/v1/stores"), Err(NoRoute::MethodNotAllowed));
        assert_eq!(r(Method::GET, "/v1/nothing"), Err(NoRoute::NotFound));
        assert_eq!(r(Method::GET, "/v1/stores/%FF"), Err(NoRoute::NotFound));
        assert_eq!(r(Method::PUT, "/v1/lockdown"), Ok(Route::SetLockdown));
    }

    #[test]
    fn every_route_round_trips_through_its_request() {
        let (s, k) = ("a/b".to_owned(), "k.1".to_owned());
        let all = [
            Route::OpenApi,
            Route::ListStores,
            Route::CreateStore,
            Route::GetStore(s.clone()),
            Route::SetStoreStatus(s.clone()),
            Route::SetStoreApi(s.clone()),
            Route::ListCredentials(s.clone()),
            Route::AddCredential(s.clone()),
            Route::RemoveCredential(s.clone(), "AKID".into()),
            Route::ListKeys(s.clone()),
            Route::CreateKey(s.clone()),
            Route::ImportHsmKey(s.clone()),
            Route::CreateKeys(s.clone()),
            Route::GetKey(s.clone(), k.clone()),
            Route::SetKeyStatus(s.clone(), k.clone()),
            Route::RotateKey(s.clone(), k.clone()),
            Route::KeyAction(s.clone(), k.clone(), KeyAction::Activate),
            Route::KeyAction(s.clone(), k.clone(), KeyAction::Deactivate),
            Route::KeyAction(s.clone(), k.clone(), KeyAction::Compromise),
            Route::KeyAction(s.clone(), k.clone(), KeyAction::CancelDestroy),
            Route::DestroyKey(s.clone(), k.clone()),
            Route::SetKeyDates(s.clone(), k.clone()),
            Route::SetRotation(s.clone(), k.clone()),
            Route::SetMinDecryptVersion(s.clone(), k.clone()),
            Route::SetUsage(s.clone(), k.clone()),
            Route::ListVersions(s.clone(), k.clone()),
            Route::GetPublicKey(s.clone(), k.clone()),
            Route::TrimVersions(s.clone(), k.clone()),
            Route::SetVersionFlag(s.clone(), k.clone(), 3),
            Route::Status,
            Route::Whoami,
            Route::CreateBackup,
            Route::VerifyBackup,
            Route::AuditVerify,
            Route::AuditQuery,
            Route::AuditExport,
            Route::KmipStatus,
            Route::ListClientCerts,
            Route::IssueClientCert,
            Route::RevokeClientCerts("db1".into()),
            Route::SetGrant("xks:/a/b/k1".into(), "*".into(), true),
            Route::SetGrant("0193-uid".into(), "bob".into(), false),
            Route::PurgeDestroyed,
            Route::ListTokens,
            Route::CreateToken,
            Route::RevokeToken("alice".into()),
            Route::ListPolicies,
            Route::ValidatePolicy,
            Route::GetPolicy(s.clone(), None),
            Route::GetPolicy(s.clone(), Some(k.clone())),
            Route::SetPolicy(s.clone(), None),
            Route::SetPolicy(s.clone(), Some(k.clone())),
            Route::RemovePolicy(s.clone(), None),
            Route::RemovePolicy(s.clone(), Some(k.clone())),
            Route::TestPolicy(s.clone(), None),
            Route::TestPolicy(s.clone(), Some(k.clone())),
            Route::GetLockdown,
            Route::SetLockdown,
        ];
        for r in all {
            let (m, p) = r.request();
            assert_eq!(route(&m, &p), Ok(r.clone()), "{m} {p}");
        }
        // The root store ("/") has a path of its own too.
        let root = Route::GetStore("/".into());
        let (m, p) = root.request();
        assert_eq!(p, "/v1/stores/");
        assert_eq!(route(&m, &p), Ok(Route::GetStore(String::new())));
    }

    #[test]
    fn audit_records_name_the_cli_command() {
        let k = Route::SetKeyStatus("demo".into(), "k1".into());
        assert_eq!(
            k.audit_words(br#"{"status":"DISABLED"}"#),
            "key disable /demo k1"
        );
        assert_eq!(
            Route::CreateStore.audit_words(br#"{"prefix":"/p"}"#),
            "store create /p"
        );
        assert_eq!(
            Route::SetLockdown.audit_words(br#"{"lockdown":false}"#),
            "unlock"
        );
    }

    #[test]
    fn roles() {
        use keyhold_service::api_tokens::Role;
        let key = Route::GetKey("s".into(), "k".into());
        assert!(key.access().allows(Role::Auditor));
        assert!(!key.access().allows(Role::Operator));
        assert!(!Route::SetLockdown.access().allows(Role::Auditor));
        assert!(Route::GetLockdown.access().allows(Role::Operator));
    }

    /// The document in the repository is the one the code makes: change
    /// the API, then run `UPDATE_OPENAPI=1 cargo test -p keyhold-server
    /// openapi` and commit docs/openapi.json.
    #[test]
    fn openapi_document_is_checked_in() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        let made = openapi_json();
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(path, &made).unwrap();
        }
        let kept = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            kept == made,
            "docs/openapi.json differs from the API: run UPDATE_OPENAPI=1 cargo test -p keyhold-server openapi"
        );
        let v: serde_json::Value = serde_json::from_str(&made).unwrap();
        assert_eq!(v["openapi"].as_str().map(|s| &s[..2]), Some("3."));
        assert!(v["paths"]["/v1/stores/{store}/keys/{key}"]["patch"].is_object());
    }
}
