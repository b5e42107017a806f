//! `https://{host}[/{path-prefix}]/{operation}?api-version=0.1-preview`:
//! the path prefix names the key store (each Azure key store has its own,
//! see [`keyhold_service::AzureEkmBinding`]), then `info` or
//! `{key-name}/metadata|wrapkey|unwrapkey`.

use crate::error::{Code, EkmError};
use keyhold_core::StorePrefix;
use keyhold_service::{AzureEkmBinding, StoreApi};

/// The one API version there is.
pub const API_VERSION: &str = "0.1-preview";

/// The operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Info,
    Metadata,
    WrapKey,
    UnwrapKey,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Info => "info",
            Op::Metadata => "metadata",
            Op::WrapKey => "wrapkey",
            Op::UnwrapKey => "unwrapkey",
        }
    }
}

/// A request's place: the key store whose prefix it starts with, the
/// operation and (but for `info`) the key name.
#[derive(Debug)]
pub struct Route<'a> {
    pub store: &'a StorePrefix,
    pub binding: &'a AzureEkmBinding,
    /// The operation and key name (empty for `info`), or why the rest of
    /// the path names none (answered once the caller is authenticated).
    pub target: Result<(Op, &'a str), EkmError>,
}

/// Whether a key name is one Azure may send: 1–64 of `A-Z a-z 0-9 -`.
pub fn valid_key_name(k: &str) -> bool {
    (1..=64).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Finds the key store whose path prefix `path` starts with (the longest
/// one), and what follows it. `None`: no Azure key store is there.
pub fn parse<'a>(path: &'a str, apis: &'a [(StorePrefix, StoreApi)]) -> Option<Route<'a>> {
    let (store, binding, rest) = apis
        .iter()
        .filter_map(|(p, api)| match api {
            StoreApi::AzureEkm(b) => path
                .strip_prefix(b.path_prefix.as_str())
                .and_then(|r| r.strip_prefix('/'))
                .map(|rest| (p, b, rest)),
            _ => None,
        })
        .max_by_key(|(_, b, _)| b.path_prefix.len())?;
    Some(Route {
        store,
        binding,
        target: target(rest),
    })
}

fn target(rest: &str) -> Result<(Op, &str), EkmError> {
    let bad = |m: String| Err(EkmError::new(Code::NotFound, m));
    let (key, op) = match rest.split_once('/') {
        None if rest.eq_ignore_ascii_case("info") => ("", Op::Info),
        None => return bad(format!("no EKM operation {:?}: use info", clip(rest))),
        Some((key, op)) => {
            let op = match op.to_ascii_lowercase().as_str() {
                "metadata" => Op::Metadata,
                "wrapkey" => Op::WrapKey,
                "unwrapkey" => Op::UnwrapKey,
                _ => {
                    return bad(format!(
                        "no EKM operation {:?}: use metadata, wrapkey or unwrapkey",
                        clip(op)
                    ))
                }
            };
            if !valid_key_name(key) {
                return Err(EkmError::bad(format!(
                    "key name {:?} is not 1 to 64 characters of A-Z a-z 0-9 -",
                    clip(key)
                )));
            }
            (key, op)
        }
    };
    Ok((op, key))
}

/// At most 80 characters of something the caller sent, for a message.
pub(crate) fn clip(s: &str) -> &str {
    match s.char_indices().nth(80) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The `api-version` query parameter, checked.
pub fn check_api_version(query: Option<&str>) -> Result<(), EkmError> {
    let v = query.and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "api-version")
            .map(|(_, v)| v)
    });
    match v {
        Some(API_VERSION) => Ok(()),
        Some(other) => Err(EkmError::new(
            Code::UnsupportedApiVersion,
            format!(
                "api-version {:?} is not supported: use {API_VERSION}",
                clip(other)
            ),
        )),
        None => Err(EkmError::bad(format!(
            "the api-version query parameter is required (api-version={API_VERSION})"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apis() -> Vec<(StorePrefix, StoreApi)> {
        let b = |p: &str| {
            StoreApi::AzureEkm(AzureEkmBinding {
                path_prefix: p.into(),
                client_cn: "c".into(),
                client_ca_pem: String::new(),
            })
        };
        vec![
            (StorePrefix::parse("/root").unwrap(), b("")),
            (StorePrefix::parse("/prod").unwrap(), b("/contoso/prod")),
            (StorePrefix::parse("/x").unwrap(), StoreApi::Xks),
        ]
    }

    #[test]
    fn routes_by_the_longest_prefix() {
        let a = apis();
        let r = parse("/contoso/prod/key-1/wrapkey", &a).unwrap();
        assert_eq!(r.store.as_str(), "/prod");
        assert_eq!(r.target.unwrap(), (Op::WrapKey, "key-1"));
        let r = parse("/contoso/prod/info", &a).unwrap();
        assert_eq!(
            (r.store.as_str(), r.target.unwrap()),
            ("/prod", (Op::Info, ""))
        );
        let r = parse("/k/unwrapKey", &a).unwrap();
        assert_eq!(
            (r.store.as_str(), r.target.unwrap()),
            ("/root", (Op::UnwrapKey, "k"))
        );
        let r = parse("/contoso/prod/K-9/metadata", &a).unwrap();
        assert_eq!(r.target.unwrap().1, "K-9");
        let code = |p: &str| parse(p, &a).unwrap().target.unwrap_err().code;
        assert_eq!(code("/contoso/prod/a_b/metadata"), Code::BadRequest);
        assert_eq!(
            code(&format!("/{}/metadata", "k".repeat(65))),
            Code::BadRequest
        );
        assert_eq!(code("/k/sign"), Code::NotFound);
        assert!(parse("/k/a/b/wrapkey", &a).unwrap().target.is_err());
        // With no store at the root, nothing else matches.
        assert!(parse("/other/info", &a[1..]).is_none());
    }

    #[test]
    fn api_version_is_required() {
        assert!(check_api_version(Some("api-version=0.1-preview")).is_ok());
        assert!(check_api_version(Some("x=1&api-version=0.1-preview")).is_ok());
        assert_eq!(
            check_api_version(Some("api-version=1.0")).unwrap_err().code,
            Code::UnsupportedApiVersion
        );
        assert_eq!(check_api_version(None).unwrap_err().code, Code::BadRequest);
    }

    proptest::proptest! {
        #[test]
        fn any_path_routes_or_not_without_panicking(path in "\\PC{0,200}") {
            let a = apis();
            let _ = parse(&path, &a);
            let _ = check_api_version(Some(&path));
        }
    }
}
