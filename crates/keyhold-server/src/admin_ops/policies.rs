//! Secondary-authorization policies of key stores and keys: set, show,
//! remove, list, validate, and test a sample request against them.

use keyhold_service::policy::{decide_all, Decision, Policy, PolicyRequest, PolicyScope};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{key_id, store_prefix, AdminOps, InForceView, OpError, OpResult};

/// A policy's TOML text.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyText {
    pub text: String,
}

/// A scope's policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PolicyView {
    /// `store /prefix` or `key /prefix KEY_ID`.
    pub scope: String,
    pub text: String,
    pub rules: usize,
    /// After a change: how running servers confirmed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_force: Option<InForceView>,
}

/// A scope that has a policy, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PolicySummary {
    pub scope: String,
    /// How many rules it has; absent when it does not parse.
    pub rules: Option<usize>,
}

/// A policy removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PolicyRemoved {
    pub scope: String,
    pub in_force: InForceView,
}

/// A policy that parses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PolicyCheck {
    pub rules: usize,
}

/// A sample request, as AWS KMS would send its metadata.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyTest {
    #[serde(default)]
    pub principal: Option<String>,
    #[serde(default)]
    pub kms_key_arn: Option<String>,
    #[serde(default)]
    pub kms_operation: Option<String>,
    #[serde(default)]
    pub via_service: Option<String>,
    #[serde(default)]
    pub source_vpc: Option<String>,
    #[serde(default)]
    pub source_vpce: Option<String>,
    /// The caller's groups or app roles (DKE tokens).
    #[serde(default)]
    pub groups: Vec<String>,
    /// The resource (Google's resource name).
    #[serde(default)]
    pub resource: Option<String>,
}

/// What the store's and key's policies decide about a sample request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PolicyDecision {
    /// ALLOW or DENY.
    pub decision: String,
    /// The rule that decided, if one did.
    pub rule: Option<String>,
    pub reason: String,
}

/// The scope of a store (and, with `key`, one of its keys).
pub fn policy_scope(store: &str, key: Option<&str>) -> OpResult<PolicyScope> {
    let p = store_prefix(store)?;
    Ok(match key {
        Some(k) => PolicyScope::Key(p, key_id(k)?.to_string()),
        None => PolicyScope::Store(p),
    })
}

fn none(scope: &PolicyScope) -> OpError {
    OpError::new(404, format!("{} has no policy", scope.name()))
}

impl AdminOps {
    pub fn list_policies(&self) -> OpResult<Vec<PolicySummary>> {
        Ok(self
            .service
            .list_policies()?
            .into_iter()
            .map(|(scope, text)| PolicySummary {
                rules: Policy::parse(&text).ok().map(|p| p.rules.len()),
                scope,
            })
            .collect())
    }

    pub fn get_policy(&self, store: &str, key: Option<&str>) -> OpResult<PolicyView> {
        let scope = policy_scope(store, key)?;
        let text = self
            .service
            .policy_text(&scope)?
            .ok_or_else(|| none(&scope))?;
        Ok(PolicyView {
            scope: scope.name(),
            rules: Policy::parse(&text).map(|p| p.rules.len()).unwrap_or(0),
            text,
            in_force: None,
        })
    }

    /// Sets a scope's policy after validating it; in force on every
    /// running server when it returns.
    pub fn set_policy(
        &self,
        store: &str,
        key: Option<&str>,
        req: &PolicyText,
    ) -> OpResult<PolicyView> {
        let scope = policy_scope(store, key)?;
        let p = self.service.set_policy(&scope, &req.text)?;
        Ok(PolicyView {
            scope: scope.name(),
            rules: p.rules.len(),
            text: req.text.clone(),
            in_force: Some(self.in_force()?),
        })
    }

    pub fn remove_policy(&self, store: &str, key: Option<&str>) -> OpResult<PolicyRemoved> {
        let scope = policy_scope(store, key)?;
        if !self.service.remove_policy(&scope)? {
            return Err(none(&scope));
        }
        Ok(PolicyRemoved {
            scope: scope.name(),
            in_force: self.in_force()?,
        })
    }

    pub fn validate_policy(&self, req: &PolicyText) -> OpResult<PolicyCheck> {
        let p = Policy::parse(&req.text)?;
        Ok(PolicyCheck {
            rules: p.rules.len(),
        })
    }

    /// Evaluates a sample request against the store's policy and, with
    /// `key`, the key's: deny wins, as on the request path.
    pub fn test_policy(
        &self,
        store: &str,
        key: Option<&str>,
        req: &PolicyTest,
    ) -> OpResult<PolicyDecision> {
        let p = store_prefix(store)?;
        let mut scopes = vec![PolicyScope::Store(p)];
        if key.is_some() {
            scopes.push(policy_scope(store, key)?);
        }
        let mut policies = Vec::new();
        for s in &scopes {
            if let Some(t) = self.service.policy_text(s)? {
                policies.push(Policy::parse(&t)?);
            }
        }
        let r = PolicyRequest {
            principal: req.principal.as_deref(),
            kms_key_arn: req.kms_key_arn.as_deref(),
            kms_operation: req.kms_operation.as_deref(),
            via_service: req.via_service.as_deref(),
            source_vpc: req.source_vpc.as_deref(),
            source_vpce: req.source_vpce.as_deref(),
            groups: &req.groups,
            resource: req.resource.as_deref(),
        };
        let (decision, rule, reason) = match decide_all(policies.iter(), &r) {
            Decision::NoPolicy => ("ALLOW", None, "no policy applies".to_owned()),
            Decision::Allow(rule) => {
                let reason = match &rule {
                    Some(r) => format!("allowed by rule {r:?}"),
                    None => "no deny rule matches".into(),
                };
                ("ALLOW", rule, reason)
            }
            Decision::Deny { rule, why } => ("DENY", rule, why),
        };
        Ok(PolicyDecision {
            decision: decision.into(),
            rule,
            reason,
        })
    }
}
