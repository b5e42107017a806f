//! `keyhold policy …`: secondary authorization rules per key store or key.

use crate::admin::{e, key_id, prefix, Ctx};
use crate::cmdio::outln;
use crate::output;
use clap::Subcommand;
use keyhold_service::policy::{decide_all, Decision, Policy, PolicyRequest, PolicyScope};
use serde_json::json;

#[derive(clap::Args, Debug)]
pub(crate) struct ScopeArgs {
    /// The key store (XKS path prefix).
    #[arg(long)]
    store: String,
    /// One key of the store (default: the whole store).
    #[arg(long)]
    key: Option<String>,
}

impl ScopeArgs {
    fn scope(&self) -> Result<PolicyScope, String> {
        let p = prefix(&self.store)?;
        Ok(match &self.key {
            Some(k) => PolicyScope::Key(p, key_id(k)?.to_string()),
            None => PolicyScope::Store(p),
        })
    }
}

#[derive(Subcommand, Debug)]
pub(crate) enum PolicyCmd {
    /// Set a policy from a TOML file (validated first; applied to running
    /// servers before the command returns).
    Set {
        #[command(flatten)]
        scope: ScopeArgs,
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// Check a policy file without applying it.
    Validate {
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// Print a scope's policy.
    Show {
        #[command(flatten)]
        scope: ScopeArgs,
    },
    /// Remove a scope's policy (its requests are then allowed, unless the store's policy says otherwise).
    Remove {
        #[command(flatten)]
        scope: ScopeArgs,
    },
    /// List the scopes that have a policy.
    List,
    /// Evaluate a sample request against the store's and key's policies.
    Test {
        #[command(flatten)]
        scope: ScopeArgs,
        #[arg(long)]
        principal: Option<String>,
        #[arg(long)]
        kms_key_arn: Option<String>,
        #[arg(long)]
        kms_operation: Option<String>,
        #[arg(long)]
        via_service: Option<String>,
        #[arg(long)]
        source_vpc: Option<String>,
        #[arg(long)]
        source_vpce: Option<String>,
    },
}

fn read(path: &std::path::Path) -> Result<String, String> {
    let bytes = crate::cmdio::read_input(path)?;
    String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8 text", path.display()))
}

pub(crate) fn run(ctx: &Ctx, cmd: &PolicyCmd) -> Result<(), String> {
    let svc = &ctx.service;
    match cmd {
        PolicyCmd::Set { scope, file } => {
            let p = svc
                .set_policy(&scope.scope()?, &read(file)?)
                .map_err(|err| format!("{}: {err}", file.display()))?;
            crate::lifecycle_cmd::in_force(ctx)?;
            outln!(
                "policy of {} set: {} rule(s)",
                scope.scope()?.name(),
                p.rules.len()
            );
        }
        PolicyCmd::Validate { file } => {
            let p =
                Policy::parse(&read(file)?).map_err(|err| format!("{}: {err}", file.display()))?;
            outln!("{}: valid, {} rule(s)", file.display(), p.rules.len());
        }
        PolicyCmd::Show { scope } => match svc.policy_text(&scope.scope()?).map_err(e)? {
            Some(t) => outln!("{}", t.trim_end()),
            None => return Err(format!("{} has no policy", scope.scope()?.name())),
        },
        PolicyCmd::Remove { scope } => {
            if !svc.remove_policy(&scope.scope()?).map_err(e)? {
                return Err(format!("{} has no policy", scope.scope()?.name()));
            }
            crate::lifecycle_cmd::in_force(ctx)?;
            outln!("policy of {} removed", scope.scope()?.name());
        }
        PolicyCmd::List => {
            let all = svc.list_policies().map_err(e)?;
            if ctx.json {
                output::json(&json!(all.iter().map(|(s, _)| s).collect::<Vec<_>>()));
            } else {
                output::table(
                    &["SCOPE", "RULES"],
                    &all.iter()
                        .map(|(s, t)| {
                            vec![
                                s.clone(),
                                Policy::parse(t)
                                    .map(|p| p.rules.len().to_string())
                                    .unwrap_or_else(|_| "INVALID".into()),
                            ]
                        })
                        .collect::<Vec<_>>(),
                );
            }
        }
        PolicyCmd::Test {
            scope,
            principal,
            kms_key_arn,
            kms_operation,
            via_service,
            source_vpc,
            source_vpce,
        } => {
            let store = prefix(&scope.store)?;
            let mut policies = Vec::new();
            let mut scopes = vec![PolicyScope::Store(store.clone())];
            if let Some(k) = &scope.key {
                scopes.push(PolicyScope::Key(store.clone(), key_id(k)?.to_string()));
            }
            for s in scopes {
                if let Some(t) = svc.policy_text(&s).map_err(e)? {
                    policies.push(Policy::parse(&t).map_err(e)?);
                }
            }
            let req = PolicyRequest {
                principal: principal.as_deref(),
                kms_key_arn: kms_key_arn.as_deref(),
                kms_operation: kms_operation.as_deref(),
                via_service: via_service.as_deref(),
                source_vpc: source_vpc.as_deref(),
                source_vpce: source_vpce.as_deref(),
            };
            let (decision, rule, why) = match decide_all(policies.iter(), &req) {
                Decision::NoPolicy => ("ALLOW", None, "no policy applies".to_owned()),
                Decision::Allow(r) => (
                    "ALLOW",
                    r.clone(),
                    match r {
                        Some(r) => format!("allowed by rule {r:?}"),
                        None => "no deny rule matches".into(),
                    },
                ),
                Decision::Deny { rule, why } => ("DENY", rule, why),
            };
            if ctx.json {
                output::json(&json!({"decision": decision, "rule": rule, "reason": why}));
            } else {
                outln!("{decision}: {why}");
            }
        }
    }
    Ok(())
}
