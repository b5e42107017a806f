//! Every admin command that works on an open data directory is a typed
//! operation of the admin API (`/v1/…`): a route, a query and a JSON body.
//! It runs the same way whether the CLI works on the data directory
//! (locally) or through the admin API (`--server`), and its typed answer
//! is printed the same way (`render.rs`).

use crate::admin_cmd::{AdminCmd, TokenCmd};
use crate::kmip_cmd::{ClientCertCmd, KmipCmd};
use crate::lifecycle_cmd::LifecycleCmd;
use crate::local::{CredentialCmd, KeyCmd, StoreCmd};
use crate::policy_cmd::{PolicyCmd, ScopeArgs};
use crate::Command;
use keyhold_server::admin_ops::{AdminOps, KeyAction, MAX_LIST};
use keyhold_server::admin_v1::{self, Route};
use serde_json::{json, Value};

mod render;
pub(crate) use render::{in_force, listed, print_keys, render, view};

/// What a command that is a typed operation says if it reaches another path.
pub(crate) const NOT_TYPED: &str = "internal error: a typed operation ran as a command";

/// A command as a typed operation: its route, query and JSON body.
pub(crate) struct Typed {
    pub route: Route,
    pub query: String,
    pub body: Option<Value>,
    /// The file the request was read from, which names its errors.
    pub file: Option<String>,
    /// A new credential is printed as the file the AWS KMS console imports
    /// (written to this path when there is one).
    pub kms_config: Option<KmsConfig>,
    /// A client certificate issued is written to NAME.pem and NAME.key here.
    pub cert_dir: Option<std::path::PathBuf>,
    /// Where an export goes (standard output when absent).
    pub out: Option<std::path::PathBuf>,
}

/// Where `store kms-config` puts the file AWS KMS imports.
pub(crate) struct KmsConfig {
    pub(super) uri_path: String,
    pub(super) output: Option<std::path::PathBuf>,
}

impl Typed {
    pub(crate) fn new(route: Route) -> Self {
        Self {
            route,
            query: String::new(),
            body: None,
            file: None,
            kms_config: None,
            cert_dir: None,
            out: None,
        }
    }

    pub(crate) fn with(route: Route, body: Value) -> Self {
        Self {
            body: Some(body),
            ..Self::new(route)
        }
    }

    /// An error of the operation, named by its file when it has one.
    pub(crate) fn error(&self, e: String) -> String {
        match &self.file {
            Some(f) => format!("{f}: {e}"),
            None => e,
        }
    }

    /// The path (with its query) a client requests.
    pub(crate) fn path(&self) -> (keyhold_server::admin_api::Method, String) {
        let (m, p) = self.route.request();
        if self.query.is_empty() {
            (m, p)
        } else {
            (m, format!("{p}?{}", self.query))
        }
    }
}

fn status(enable: bool) -> Value {
    json!({ "status": if enable { "ENABLED" } else { "DISABLED" } })
}

/// The typed operation of `cmd`, when it is one (or why its arguments
/// make none).
pub(crate) fn of(cmd: &Command) -> Option<Result<Typed, String>> {
    if let Command::Key(KeyCmd::Lifecycle(l)) = cmd {
        return Some(lifecycle(l));
    }
    if let Command::Policy(p) = cmd {
        return Some(policy(p));
    }
    if let Command::Admin(AdminCmd::Token(t)) = cmd {
        return Some(token(t));
    }
    if let Command::Kmip(k) = cmd {
        return Some(kmip(k));
    }
    if let Command::Audit(a) = cmd {
        return Some(crate::audit_cmd::typed(a));
    }
    if let Command::Backup(b) = cmd {
        return crate::backup_cmd::typed(b);
    }
    Some(Ok(match cmd {
        Command::Store(s) => match s {
            StoreCmd::Create {
                prefix,
                description,
                api,
                azure,
            } => {
                let mut body = json!({ "prefix": prefix, "description": description });
                if let Some(api) = api {
                    match azure.body(api) {
                        Ok(b) => body["api"] = b,
                        Err(e) => return Some(Err(e)),
                    }
                }
                Typed::with(Route::CreateStore, body)
            }
            StoreCmd::Api { prefix, api, azure } => match azure.body(api) {
                Ok(b) => Typed::with(Route::SetStoreApi(prefix.clone()), b),
                Err(e) => return Some(Err(e)),
            },
            StoreCmd::List => Typed::new(Route::ListStores),
            StoreCmd::Show { prefix } => Typed::new(Route::GetStore(prefix.clone())),
            StoreCmd::Enable { prefix } => {
                Typed::with(Route::SetStoreStatus(prefix.clone()), status(true))
            }
            StoreCmd::Disable { prefix } => {
                Typed::with(Route::SetStoreStatus(prefix.clone()), status(false))
            }
            StoreCmd::Credential(CredentialCmd::Add { prefix }) => {
                Typed::new(Route::AddCredential(prefix.clone()))
            }
            StoreCmd::Credential(CredentialCmd::List { prefix }) => {
                Typed::new(Route::ListCredentials(prefix.clone()))
            }
            StoreCmd::Credential(CredentialCmd::Remove {
                prefix,
                access_key_id,
            }) => Typed::new(Route::RemoveCredential(
                prefix.clone(),
                access_key_id.clone(),
            )),
            StoreCmd::KmsConfig { prefix, output } => {
                let uri_path = match keyhold_core::StorePrefix::parse(prefix) {
                    Ok(p) => p.uri_path(),
                    Err(e) => return Some(Err(e.to_string())),
                };
                // Never overwritten, and no credential made for nothing.
                if let Some(o) = output.as_ref().filter(|o| o.exists()) {
                    return Some(Err(format!("cannot create {}: it exists", o.display())));
                }
                let mut t = Typed::new(Route::AddCredential(prefix.clone()));
                t.kms_config = Some(KmsConfig {
                    uri_path,
                    output: output.clone(),
                });
                t
            }
        },
        Command::Key(k) => return key(k),
        Command::Status => Typed::new(Route::Status),
        Command::Lockdown => Typed::with(Route::SetLockdown, json!({ "lockdown": true })),
        Command::Unlock => Typed::with(Route::SetLockdown, json!({ "lockdown": false })),
        _ => return None,
    }))
}

fn kmip(cmd: &KmipCmd) -> Result<Typed, String> {
    Ok(match cmd {
        KmipCmd::Status => Typed::new(Route::KmipStatus),
        KmipCmd::ClientCert(ClientCertCmd::List) => Typed::new(Route::ListClientCerts),
        KmipCmd::ClientCert(ClientCertCmd::Revoke { name_or_serial }) => {
            Typed::new(Route::RevokeClientCerts(name_or_serial.clone()))
        }
        KmipCmd::ClientCert(ClientCertCmd::Issue {
            name,
            out,
            days,
            key_type,
        }) => {
            let dir = out.clone().unwrap_or_else(|| std::path::PathBuf::from("."));
            // Never overwritten, and no certificate issued for nothing.
            for f in [format!("{name}.pem"), format!("{name}.key")] {
                let p = dir.join(f);
                if p.exists() {
                    return Err(format!("cannot create {}: it exists", p.display()));
                }
            }
            let key_type = match key_type {
                keyhold_server::tls::KeyType::Ecdsa => "ecdsa",
                keyhold_server::tls::KeyType::Rsa => "rsa",
            };
            let mut t = Typed::with(
                Route::IssueClientCert,
                json!({ "name": name, "days": days, "key_type": key_type }),
            );
            t.cert_dir = Some(dir);
            t
        }
        KmipCmd::Grant { uid, identity } => {
            Typed::new(Route::SetGrant(uid.clone(), identity.clone(), true))
        }
        KmipCmd::Ungrant { uid, identity } => {
            Typed::new(Route::SetGrant(uid.clone(), identity.clone(), false))
        }
        KmipCmd::PurgeDestroyed { older_than } => {
            let secs = keyhold_core::time::parse_duration(older_than).ok_or_else(|| {
                format!("{older_than:?} is not a duration like 90d, 12h or 3600s")
            })?;
            Typed::with(Route::PurgeDestroyed, json!({ "older_than_s": secs }))
        }
    })
}

fn token(cmd: &TokenCmd) -> Result<Typed, String> {
    Ok(match cmd {
        TokenCmd::Create {
            name,
            role,
            expires_in,
        } => {
            let expires_in_s = match expires_in {
                None => None,
                Some(d) => Some(
                    keyhold_core::time::parse_duration(d)
                        .filter(|s| *s > 0)
                        .ok_or_else(|| format!("--expires-in {d}: use e.g. 90d, 12h, 30m"))?,
                ),
            };
            Typed::with(
                Route::CreateToken,
                json!({ "name": name, "role": role, "expires_in_s": expires_in_s }),
            )
        }
        TokenCmd::List => Typed::new(Route::ListTokens),
        TokenCmd::Revoke { name } => Typed::new(Route::RevokeToken(name.clone())),
    })
}

/// A policy file's text, named by its path.
fn policy_text(file: &std::path::Path, route: Route) -> Result<Typed, String> {
    let bytes = crate::cmdio::read_input(file)?;
    let text =
        String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8 text", file.display()))?;
    let mut t = Typed::with(route, json!({ "text": text }));
    t.file = Some(file.display().to_string());
    Ok(t)
}

fn policy(cmd: &PolicyCmd) -> Result<Typed, String> {
    let scope = |s: &ScopeArgs| (s.store.clone(), s.key.clone());
    Ok(match cmd {
        PolicyCmd::Set { scope: s, file } => {
            let (p, k) = scope(s);
            policy_text(file, Route::SetPolicy(p, k))?
        }
        PolicyCmd::Validate { file } => policy_text(file, Route::ValidatePolicy)?,
        PolicyCmd::Show { scope: s } => {
            let (p, k) = scope(s);
            Typed::new(Route::GetPolicy(p, k))
        }
        PolicyCmd::Remove { scope: s } => {
            let (p, k) = scope(s);
            Typed::new(Route::RemovePolicy(p, k))
        }
        PolicyCmd::List => Typed::new(Route::ListPolicies),
        PolicyCmd::Test {
            scope: s,
            principal,
            kms_key_arn,
            kms_operation,
            via_service,
            source_vpc,
            source_vpce,
            group,
            resource,
        } => {
            let (p, k) = scope(s);
            Typed::with(
                Route::TestPolicy(p, k),
                json!({
                    "principal": principal,
                    "kms_key_arn": kms_key_arn,
                    "kms_operation": kms_operation,
                    "via_service": via_service,
                    "source_vpc": source_vpc,
                    "source_vpce": source_vpce,
                    "groups": group,
                    "resource": resource,
                }),
            )
        }
    })
}

fn lifecycle(cmd: &LifecycleCmd) -> Result<Typed, String> {
    use LifecycleCmd::*;
    let key = |p: &String, k: &String| (p.clone(), k.clone());
    let action = |p, k, a| Ok(Typed::new(Route::KeyAction(p, k, a)));
    match cmd {
        Activate { prefix, key_id } => {
            let (p, k) = key(prefix, key_id);
            action(p, k, KeyAction::Activate)
        }
        Deactivate { prefix, key_id } => {
            let (p, k) = key(prefix, key_id);
            action(p, k, KeyAction::Deactivate)
        }
        Compromise { prefix, key_id } => {
            let (p, k) = key(prefix, key_id);
            action(p, k, KeyAction::Compromise)
        }
        CancelDestroy { prefix, key_id } => {
            let (p, k) = key(prefix, key_id);
            action(p, k, KeyAction::CancelDestroy)
        }
        SetDates {
            prefix,
            key_id,
            activate_at,
            deactivate_at,
        } => Ok(Typed::with(
            Route::SetKeyDates(prefix.clone(), key_id.clone()),
            json!({ "activate_at": activate_at, "deactivate_at": deactivate_at }),
        )),
        Destroy {
            prefix,
            key_id,
            days,
            now,
            confirm,
        } => Ok(Typed::with(
            Route::DestroyKey(prefix.clone(), key_id.clone()),
            json!({ "days": days, "now": now, "confirm": confirm }),
        )),
        SetRotation {
            prefix,
            key_id,
            period,
        } => {
            let period_s = if period.eq_ignore_ascii_case("off") {
                None
            } else {
                Some(crate::lifecycle_cmd::period(period)?)
            };
            Ok(Typed::with(
                Route::SetRotation(prefix.clone(), key_id.clone()),
                json!({ "period_s": period_s }),
            ))
        }
        SetMinDecryptVersion {
            prefix,
            key_id,
            version,
        } => Ok(Typed::with(
            Route::SetMinDecryptVersion(prefix.clone(), key_id.clone()),
            json!({ "version": version }),
        )),
        TrimVersions { prefix, key_id } => Ok(Typed::new(Route::TrimVersions(
            prefix.clone(),
            key_id.clone(),
        ))),
        Versions { prefix, key_id } => Ok(Typed::new(Route::ListVersions(
            prefix.clone(),
            key_id.clone(),
        ))),
        FlagVersion {
            prefix,
            key_id,
            version,
            flag,
        } => Ok(Typed::with(
            Route::SetVersionFlag(prefix.clone(), key_id.clone(), *version),
            json!({ "flag": flag }),
        )),
    }
}

/// The body of a key creation: usage and lifecycle (checked here first,
/// as the command always did), plus `extra` fields.
fn create_body(
    (key_type, usage): (&str, &Option<String>),
    lifecycle: &crate::lifecycle_cmd::CreateLifecycle,
    extra: Value,
) -> Result<Value, String> {
    let l = lifecycle.lifecycle()?;
    let usage: Option<Vec<&str>> = usage
        .as_deref()
        .map(|u| u.split(',').map(str::trim).collect());
    let mut body = json!({
        "key_type": key_type,
        "usage": usage,
        "pre_active": l.state == keyhold_core::KeyState::PreActive,
        "activate_at": lifecycle.activate_at,
        "deactivate_at": lifecycle.deactivate_at,
        "rotation_period_s": l.rotation_period,
    });
    if let (Value::Object(b), Value::Object(x)) = (&mut body, extra) {
        b.extend(x);
    }
    Ok(body)
}

fn key(cmd: &KeyCmd) -> Option<Result<Typed, String>> {
    Some(Ok(match cmd {
        KeyCmd::Create {
            prefix,
            key_id,
            key_type,
            usage,
            count: 1,
            protection,
            hsm_label,
            lifecycle,
        } => {
            let extra =
                json!({ "key_id": key_id, "protection": protection, "hsm_label": hsm_label });
            match create_body((key_type, usage), lifecycle, extra) {
                Ok(b) => Typed::with(Route::CreateKey(prefix.clone()), b),
                Err(e) => return Some(Err(e)),
            }
        }
        KeyCmd::Create { protection, .. } if protection == "hsm" => {
            return Some(Err(
                "--count is for software keys; create HSM keys one at a time".into(),
            ))
        }
        // Several at once: in batches, in one request.
        KeyCmd::Create {
            prefix,
            key_id,
            key_type,
            usage,
            count,
            lifecycle,
            ..
        } => match create_body(
            (key_type, usage),
            lifecycle,
            json!({ "count": count, "key_id": key_id }),
        ) {
            Ok(b) => Typed::with(Route::CreateKeys(prefix.clone()), b),
            Err(e) => return Some(Err(e)),
        },
        KeyCmd::ImportHsm {
            prefix,
            label,
            key_id,
            usage,
        } => {
            let usage: Option<Vec<&str>> = usage
                .as_deref()
                .map(|u| u.split(',').map(str::trim).collect());
            Typed::with(
                Route::ImportHsmKey(prefix.clone()),
                json!({ "label": label, "key_id": key_id, "usage": usage }),
            )
        }
        KeyCmd::List {
            prefix,
            limit,
            after,
        } => {
            let limit = (*limit).min(MAX_LIST);
            let mut t = Typed::new(Route::ListKeys(prefix.clone()));
            t.query = format!("limit={limit}");
            if let Some(a) = after {
                t.query.push_str(&format!("&after={a}"));
            }
            t
        }
        KeyCmd::Show { prefix, key_id } => {
            Typed::new(Route::GetKey(prefix.clone(), key_id.clone()))
        }
        KeyCmd::PublicKey {
            prefix,
            key_id,
            version,
        } => Typed {
            query: version.map(|v| format!("version={v}")).unwrap_or_default(),
            ..Typed::new(Route::GetPublicKey(prefix.clone(), key_id.clone()))
        },
        KeyCmd::Enable { prefix, key_id } => Typed::with(
            Route::SetKeyStatus(prefix.clone(), key_id.clone()),
            status(true),
        ),
        KeyCmd::Disable { prefix, key_id } => Typed::with(
            Route::SetKeyStatus(prefix.clone(), key_id.clone()),
            status(false),
        ),
        KeyCmd::Rotate { prefix, key_id } => {
            Typed::new(Route::RotateKey(prefix.clone(), key_id.clone()))
        }
        KeyCmd::SetUsage {
            prefix,
            key_id,
            usage,
        } => {
            let usage: Vec<&str> = usage.split(',').map(str::trim).collect();
            Typed::with(
                Route::SetUsage(prefix.clone(), key_id.clone()),
                json!({ "usage": usage }),
            )
        }
        _ => return None,
    }))
}

/// Runs `t` on the data directory's key service and prints its answer.
pub(crate) fn run_local(ctx: &crate::local::CommandEnv, t: &Typed) -> Result<(), String> {
    let ops = AdminOps::new(ctx.service.clone(), &ctx.data_dir);
    let body = match &t.body {
        Some(b) => serde_json::to_vec(b).map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    let (_, v) = admin_v1::run(&ops, &t.route, &t.query, &body).map_err(|e| t.error(e.error))?;
    render(ctx.json, t, v)
}
