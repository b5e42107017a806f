//! Secondary authorization: rules on who may use a key, by the request
//! metadata AWS KMS sends (principal, KMS key ARN, KMS operation, the AWS
//! service acting on the caller's behalf, source VPC and VPC endpoint), and
//! by what the other clouds' tokens say: the user's address as principal
//! (`*@example.com` for a domain), their groups or app roles (`group`:
//! matches when one of them does), the resource (`resource`: Google's
//! resource name, DKE's key URL) and the method as `kms_operation`.
//!
//! A policy (TOML) is a list of rules. A rule matches when every condition
//! it names matches (each condition is a list of patterns, `*` matching any
//! run of characters and `?` any one); a condition on a field the request
//! lacks does not match. Deny wins: a matching `deny` rule refuses; else a
//! matching `allow` rule allows; a policy with allow rules refuses what none
//! of them allows; a policy with only deny rules allows the rest. No policy
//! means allow. Policies attach to a key store or to one key; both apply.
//!
//! ```toml
//! [[rule]]
//! name = "prod-roles"
//! effect = "allow"
//! principal = ["arn:aws:iam::123456789012:role/*"]
//! kms_operation = ["Encrypt", "Decrypt", "GenerateDataKey*"]
//!
//! [[rule]]
//! name = "no-s3"
//! effect = "deny"
//! via_service = ["s3"]
//! ```

use keyhold_core::{Error, Result};
use serde::Deserialize;

/// What a policy looks at in a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolicyRequest<'a> {
    pub principal: Option<&'a str>,
    pub kms_key_arn: Option<&'a str>,
    pub kms_operation: Option<&'a str>,
    pub via_service: Option<&'a str>,
    pub source_vpc: Option<&'a str>,
    pub source_vpce: Option<&'a str>,
    /// The caller's groups or app roles (DKE's token), if any.
    pub groups: &'a [String],
    /// The resource the request is for (Google's resource name).
    pub resource: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    pub effect: Effect,
    #[serde(default)]
    pub principal: Option<Vec<String>>,
    #[serde(default)]
    pub kms_key_arn: Option<Vec<String>>,
    #[serde(default)]
    pub kms_operation: Option<Vec<String>>,
    #[serde(default)]
    pub via_service: Option<Vec<String>>,
    #[serde(default)]
    pub source_vpc: Option<Vec<String>>,
    #[serde(default)]
    pub source_vpce: Option<Vec<String>>,
    /// One of the caller's groups or app roles.
    #[serde(default)]
    pub group: Option<Vec<String>>,
    #[serde(default)]
    pub resource: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default, rename = "rule")]
    pub rules: Vec<Rule>,
}

/// The outcome of evaluating policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No policy applies.
    NoPolicy,
    /// Allowed by this rule (or, with only deny rules, by none matching).
    Allow(Option<String>),
    /// Refused: by this deny rule, or because no allow rule matched.
    Deny { rule: Option<String>, why: String },
}

/// `*` matches any run of characters, `?` any one; everything else itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    if pattern.is_ascii() && text.is_ascii() {
        glob_units(pattern.as_bytes(), text.as_bytes())
    } else {
        let p: Vec<char> = pattern.chars().collect();
        let t: Vec<char> = text.chars().collect();
        glob_units(&p, &t)
    }
}

/// Wildcard matching with backtracking to the last `*` (linear in
/// practice, never exponential).
fn glob_units<T: PartialEq + Copy + From<u8>>(p: &[T], t: &[T]) -> bool {
    let (star, any) = (T::from(b'*'), T::from(b'?'));
    let (mut pi, mut ti) = (0, 0);
    let mut back: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == any || (p[pi] != star && p[pi] == t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == star {
            back = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = back {
            pi = sp + 1;
            ti = st + 1;
            back = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == star)
}

fn cond(patterns: &Option<Vec<String>>, value: Option<&str>) -> bool {
    match patterns {
        None => true,
        Some(ps) => value.is_some_and(|v| ps.iter().any(|p| glob(p, v))),
    }
}

impl Rule {
    pub fn matches(&self, r: &PolicyRequest<'_>) -> bool {
        cond(&self.principal, r.principal)
            && cond(&self.kms_key_arn, r.kms_key_arn)
            && cond(&self.kms_operation, r.kms_operation)
            && cond(&self.via_service, r.via_service)
            && cond(&self.source_vpc, r.source_vpc)
            && cond(&self.source_vpce, r.source_vpce)
            && cond(&self.resource, r.resource)
            && match &self.group {
                None => true,
                Some(ps) => r.groups.iter().any(|g| ps.iter().any(|p| glob(p, g))),
            }
    }

    fn conditions(&self) -> [(&'static str, &Option<Vec<String>>); 8] {
        [
            ("principal", &self.principal),
            ("kms_key_arn", &self.kms_key_arn),
            ("kms_operation", &self.kms_operation),
            ("via_service", &self.via_service),
            ("source_vpc", &self.source_vpc),
            ("source_vpce", &self.source_vpce),
            ("group", &self.group),
            ("resource", &self.resource),
        ]
    }
}

impl Policy {
    /// Parses and validates a policy; errors name the rule and the field.
    pub fn parse(text: &str) -> Result<Self> {
        let p: Policy =
            toml::from_str(text).map_err(|e| Error::invalid("policy", e.to_string()))?;
        if p.rules.is_empty() {
            return Err(Error::invalid(
                "policy",
                "it has no [[rule]]; to remove a policy, use `keyhold policy remove`",
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, r) in p.rules.iter().enumerate() {
            let at = format!("rule {} ({:?})", i + 1, r.name);
            if r.name.trim().is_empty() || r.name.len() > 128 {
                return Err(Error::invalid(
                    "policy",
                    format!("rule {} needs a name of 1 to 128 characters", i + 1),
                ));
            }
            if !names.insert(r.name.as_str()) {
                return Err(Error::invalid(
                    "policy",
                    format!("{at}: the rule name is used twice"),
                ));
            }
            let conds = r.conditions();
            if conds.iter().all(|(_, c)| c.is_none()) {
                return Err(Error::invalid(
                    "policy",
                    format!("{at}: a rule needs at least one condition (principal, kms_key_arn, kms_operation, via_service, source_vpc, source_vpce, group, resource)"),
                ));
            }
            for (field, c) in conds {
                if let Some(ps) = c {
                    if ps.is_empty() {
                        return Err(Error::invalid(
                            "policy",
                            format!("{at}: {field} is an empty list (it would match nothing)"),
                        ));
                    }
                    if ps.iter().any(|p| p.is_empty() || p.len() > 2048) {
                        return Err(Error::invalid(
                            "policy",
                            format!("{at}: {field} has an empty or over-long pattern"),
                        ));
                    }
                }
            }
        }
        Ok(p)
    }

    /// This policy's decision on `r`.
    pub fn decide(&self, r: &PolicyRequest<'_>) -> Decision {
        if let Some(d) = self
            .rules
            .iter()
            .find(|x| x.effect == Effect::Deny && x.matches(r))
        {
            return Decision::Deny {
                rule: Some(d.name.clone()),
                why: format!("denied by rule {:?}", d.name),
            };
        }
        if let Some(a) = self
            .rules
            .iter()
            .find(|x| x.effect == Effect::Allow && x.matches(r))
        {
            return Decision::Allow(Some(a.name.clone()));
        }
        if self.rules.iter().any(|x| x.effect == Effect::Allow) {
            Decision::Deny {
                rule: None,
                why: "no rule allows this request".into(),
            }
        } else {
            Decision::Allow(None)
        }
    }
}

/// The combined decision of a store's and a key's policies (both apply;
/// deny wins).
pub fn decide_all<'p>(
    policies: impl IntoIterator<Item = &'p Policy>,
    r: &PolicyRequest<'_>,
) -> Decision {
    let mut out = Decision::NoPolicy;
    for p in policies {
        match p.decide(r) {
            d @ Decision::Deny { .. } => return d,
            Decision::Allow(rule) => {
                if !matches!(out, Decision::Allow(Some(_))) {
                    out = Decision::Allow(rule);
                }
            }
            Decision::NoPolicy => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_resources_are_conditions() {
        let p = Policy::parse(
            "[[rule]]\nname = \"finance\"\neffect = \"allow\"\ngroup = [\"finance-*\"]\nprincipal = [\"*@contoso.com\"]\n\n[[rule]]\nname = \"no-hr\"\neffect = \"deny\"\nresource = [\"//drive/files/hr-*\"]\n",
        )
        .unwrap();
        let groups = vec!["sales".to_owned(), "finance-readers".to_owned()];
        let r = |principal, groups: &'static [String], resource| PolicyRequest {
            principal: Some(principal),
            groups,
            resource,
            ..PolicyRequest::default()
        };
        let g: &'static [String] = Box::leak(groups.into_boxed_slice());
        assert!(p.rules[0].matches(&r("ann@contoso.com", g, None)));
        assert!(!p.rules[0].matches(&r("ann@contoso.com", &[], None)));
        assert!(!p.rules[0].matches(&r("ann@other.com", g, None)));
        assert!(p.rules[1].matches(&r("ann@contoso.com", g, Some("//drive/files/hr-1"))));
        assert!(!p.rules[1].matches(&r("ann@contoso.com", g, None)));
    }

    fn req<'a>(principal: &'a str, op: &'a str) -> PolicyRequest<'a> {
        PolicyRequest {
            principal: Some(principal),
            kms_operation: Some(op),
            ..PolicyRequest::default()
        }
    }

    #[test]
    fn globs() {
        assert!(glob(
            "arn:aws:iam::123456789012:role/*",
            "arn:aws:iam::123456789012:role/app"
        ));
        assert!(!glob(
            "arn:aws:iam::123456789012:role/*",
            "arn:aws:iam::123456789012:user/app"
        ));
        assert!(glob("GenerateDataKey*", "GenerateDataKeyWithoutPlaintext"));
        assert!(glob("a?c", "abc") && !glob("a?c", "ac"));
        assert!(glob("*", "") && glob("**a**", "xxa") && !glob("", "x"));
        assert!(glob("*b*b*", "abxxbx") && !glob("*b*b*", "ab"));
    }

    #[test]
    fn wildcard_principals_and_deny_over_allow() {
        let p = Policy::parse(
            r#"
[[rule]]
name = "roles"
effect = "allow"
principal = ["arn:aws:iam::123456789012:role/*"]

[[rule]]
name = "no-intern"
effect = "deny"
principal = ["arn:aws:iam::123456789012:role/intern*"]
"#,
        )
        .unwrap();
        assert_eq!(
            p.decide(&req("arn:aws:iam::123456789012:role/app", "Encrypt")),
            Decision::Allow(Some("roles".into()))
        );
        assert!(matches!(
            p.decide(&req("arn:aws:iam::123456789012:role/intern-7", "Encrypt")),
            Decision::Deny { rule: Some(r), .. } if r == "no-intern"
        ));
        assert!(matches!(
            p.decide(&req("arn:aws:iam::999999999999:role/app", "Encrypt")),
            Decision::Deny { rule: None, .. }
        ));
        // A condition on a field the request lacks does not match.
        assert!(matches!(
            p.decide(&PolicyRequest::default()),
            Decision::Deny { .. }
        ));
    }

    #[test]
    fn deny_only_policies_allow_the_rest_and_both_scopes_apply() {
        let store = Policy::parse(
            "[[rule]]\nname = \"no-s3\"\neffect = \"deny\"\nvia_service = [\"s3\"]\n",
        )
        .unwrap();
        let key = Policy::parse(
            "[[rule]]\nname = \"enc\"\neffect = \"allow\"\nkms_operation = [\"Encrypt\", \"GenerateDataKey*\"]\n",
        )
        .unwrap();
        let mut r = req("p", "Encrypt");
        assert_eq!(store.decide(&r), Decision::Allow(None));
        assert_eq!(
            decide_all([&store, &key], &r),
            Decision::Allow(Some("enc".into()))
        );
        r.via_service = Some("s3");
        assert!(
            matches!(decide_all([&store, &key], &r), Decision::Deny { rule: Some(x), .. } if x == "no-s3")
        );
        let r = req("p", "Decrypt");
        assert!(matches!(
            decide_all([&store, &key], &r),
            Decision::Deny { .. }
        ));
        assert_eq!(decide_all([], &r), Decision::NoPolicy);
    }

    #[test]
    fn malformed_policies_are_refused_with_clear_errors() {
        let bad = [
            ("", "no [[rule]]"),
            ("[[rule]]\nname = \"a\"\neffect = \"maybe\"\nprincipal = [\"x\"]\n", "effect"),
            ("[[rule]]\nname = \"a\"\neffect = \"allow\"\n", "at least one condition"),
            ("[[rule]]\nname = \"a\"\neffect = \"allow\"\nprincipal = []\n", "empty list"),
            ("[[rule]]\nname = \"a\"\neffect = \"allow\"\nprincipals = [\"x\"]\n", "principals"),
            (
                "[[rule]]\nname = \"a\"\neffect = \"allow\"\nprincipal = [\"x\"]\n[[rule]]\nname = \"a\"\neffect = \"deny\"\nprincipal = [\"y\"]\n",
                "used twice",
            ),
            ("[[rule]]\nname = \"\"\neffect = \"deny\"\nprincipal = [\"y\"]\n", "name"),
            ("not toml at all [", "policy"),
        ];
        for (text, want) in bad {
            let e = Policy::parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}

/// Where a policy applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyScope {
    Store(keyhold_core::StorePrefix),
    Key(keyhold_core::StorePrefix, String),
}

impl PolicyScope {
    /// The storage name of the scope.
    pub fn name(&self) -> String {
        match self {
            PolicyScope::Store(p) => format!("store {}", p.as_str()),
            PolicyScope::Key(p, k) => format!("key {} {k}", p.as_str()),
        }
    }
}

impl crate::KeyService {
    fn policy(&self, scope: String) -> Result<Option<std::sync::Arc<Policy>>> {
        if let Some(p) = self.policies.get(&scope).filter(|_| self.cache_valid()) {
            return Ok(p);
        }
        let g = self.policies.generation();
        let p = match self.storage().get_policy(&scope)? {
            None => None,
            // Stored policies were validated; one that no longer parses
            // refuses everything rather than allowing everything.
            Some(text) => Some(std::sync::Arc::new(Policy::parse(&text).map_err(|e| {
                Error::Internal(format!("the stored policy of {scope} is invalid: {e}"))
            })?)),
        };
        self.policies.insert(g, scope, p.clone());
        Ok(p)
    }

    /// The store's and the key's policies, for a key handle (empty when no
    /// policy exists anywhere).
    pub(crate) fn policies_for(
        &self,
        store: &keyhold_core::StorePrefix,
        key_id: &str,
    ) -> Result<Vec<std::sync::Arc<Policy>>> {
        if !self.any_policies.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(Vec::new());
        }
        let sp = self.policy(PolicyScope::Store(store.clone()).name())?;
        let kp = self.policy(PolicyScope::Key(store.clone(), key_id.to_owned()).name())?;
        Ok(sp.into_iter().chain(kp).collect())
    }

    /// Secondary authorization of a request on a key: the store's and the
    /// key's policies, held by its handle (none = allow). Returns the rule
    /// that allowed, or AccessDenied naming the rule that refused.
    pub(crate) fn check_policy(
        &self,
        h: &crate::KeyHandle,
        req: &PolicyRequest<'_>,
    ) -> Result<Option<String>> {
        if h.policies.is_empty() {
            return Ok(None);
        }
        match decide_all(h.policies.iter().map(|p| &**p), req) {
            Decision::NoPolicy => Ok(None),
            Decision::Allow(rule) => Ok(rule),
            Decision::Deny { rule, why } => Err(Error::AccessDenied { rule, why }),
        }
    }

    /// Sets a scope's policy after validating it.
    pub fn set_policy(&self, scope: &PolicyScope, text: &str) -> Result<Policy> {
        let p = Policy::parse(text)?;
        match scope {
            PolicyScope::Store(s) => {
                self.get_store(s)?;
            }
            PolicyScope::Key(s, k) => {
                let id = keyhold_core::KeyId::parse(k)?;
                self.get_key(s, &id)?;
            }
        }
        self.storage().set_policy(&scope.name(), Some(text))?;
        self.after_write(keyhold_storage::ChangeScope::Policy(scope.name()));
        Ok(p)
    }

    pub fn remove_policy(&self, scope: &PolicyScope) -> Result<bool> {
        let r = self.storage().set_policy(&scope.name(), None)?;
        self.after_write(keyhold_storage::ChangeScope::Policy(scope.name()));
        Ok(r)
    }

    pub fn policy_text(&self, scope: &PolicyScope) -> Result<Option<String>> {
        self.storage().get_policy(&scope.name())
    }

    /// Every policy: (scope name, text).
    pub fn list_policies(&self) -> Result<Vec<(String, String)>> {
        self.storage().list_policies()
    }
}
