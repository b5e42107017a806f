//! URI routing: `[/<prefix>]/kms/xks/v1/keys/<externalKeyId>/{metadata|encrypt|decrypt}`
//! and `[/<prefix>]/kms/xks/v1/health`.

use keyhold_core::{is_key_id_str, MAX_KEY_ID_LEN, MAX_URI_PATH_LEN};

/// Which XKS operation a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Metadata,
    Encrypt,
    Decrypt,
    Health,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Metadata => "GetKeyMetadata",
            Op::Encrypt => "Encrypt",
            Op::Decrypt => "Decrypt",
            Op::Health => "GetHealthStatus",
        }
    }
}

/// A parsed API path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route<'a> {
    /// `""` or `/tenant-a`.
    pub prefix: &'a str,
    pub op: Op,
    /// Empty for health.
    pub key_id: &'a str,
}

const ROOT: &str = "/kms/xks/v1/";

/// Parses a request path; `None` means InvalidUriPathException.
pub fn parse(path: &str) -> Option<Route<'_>> {
    let idx = path.find(ROOT)?;
    let prefix = &path[..idx];
    if prefix.len() + ROOT.len() - 1 > MAX_URI_PATH_LEN {
        return None;
    }
    let rest = &path[idx + ROOT.len()..];
    if rest == "health" {
        return Some(Route {
            prefix,
            op: Op::Health,
            key_id: "",
        });
    }
    let rest = rest.strip_prefix("keys/")?;
    let (key_id, op) = rest.rsplit_once('/')?;
    let op = match op {
        "metadata" => Op::Metadata,
        "encrypt" => Op::Encrypt,
        "decrypt" => Op::Decrypt,
        _ => return None,
    };
    if key_id.is_empty() || key_id.len() > MAX_KEY_ID_LEN || !is_key_id_str(key_id) {
        return None;
    }
    Some(Route { prefix, op, key_id })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn paths() {
        assert_eq!(
            parse("/kms/xks/v1/health"),
            Some(Route {
                prefix: "",
                op: Op::Health,
                key_id: ""
            })
        );
        assert_eq!(
            parse("/a/b/kms/xks/v1/keys/k-1.x_y/encrypt"),
            Some(Route {
                prefix: "/a/b",
                op: Op::Encrypt,
                key_id: "k-1.x_y"
            })
        );
        assert_eq!(
            parse("/p/kms/xks/v1/keys/k/metadata").unwrap().op,
            Op::Metadata
        );
        assert_eq!(
            parse("/p/kms/xks/v1/keys/k/decrypt").unwrap().op,
            Op::Decrypt
        );
        assert_eq!(parse("/p/kms/xks/v1/keys/k/sign"), None);
        assert_eq!(parse("/p/kms/xks/v1/keys/a/b/encrypt"), None);
        assert_eq!(parse("/p/kms/xks/v1/keys//encrypt"), None);
        assert_eq!(parse("/p/kms/xks/v2/health"), None);
        assert_eq!(parse("/p/kms/xks/v1/health/"), None);
        assert_eq!(parse("/ping"), None);
        assert_eq!(
            parse(&format!("/p/kms/xks/v1/keys/{}/encrypt", "k".repeat(129))),
            None
        );
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,300}") {
            if let Some(r) = parse(&s) {
                prop_assert!(s.starts_with(r.prefix));
            }
        }
    }
}
