//! Commands that are typed operations of the admin API (`/v1/…`): stores,
//! their credentials and keys, the lockdown. Each runs the same typed
//! operation whether the CLI works on the data directory (locally) or
//! through the admin API (`--server`), and prints its typed answer the
//! same way. Commands with options the typed API does not take (several
//! keys at once, HSM keys, lifecycle dates) keep their own path.

use crate::admin::{CredentialCmd, KeyCmd, StoreCmd};
use crate::admin_cmd::{AdminCmd, TokenCmd};
use crate::cmdio::{errln, outln};
use crate::kmip_cmd::{ClientCertCmd, KmipCmd};
use crate::lifecycle_cmd::LifecycleCmd;
use crate::output;
use crate::policy_cmd::{PolicyCmd, ScopeArgs};
use crate::Command;
use keyhold_server::admin_ops::{
    AdminOps, CredentialView, InForceView, KeyAction, KeyView, KeysMade, LockdownView,
    NewCredentialView, NewTokenView, PolicyCheck, PolicyDecision, PolicyRemoved, PolicySummary,
    PolicyView, StatusView, StoreView, TokenView, TrimmedView, VersionView, MAX_LIST,
};
use keyhold_server::admin_v1::{self, Route};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

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
    uri_path: String,
    output: Option<std::path::PathBuf>,
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
            } => Typed::with(
                Route::CreateStore,
                json!({ "prefix": prefix, "description": description }),
            ),
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
    usage: &str,
    lifecycle: &crate::lifecycle_cmd::CreateLifecycle,
    extra: Value,
) -> Result<Value, String> {
    let l = lifecycle.lifecycle()?;
    let usage: Vec<&str> = usage.split(',').map(str::trim).collect();
    let mut body = json!({
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
            usage,
            count: 1,
            protection,
            hsm_label,
            lifecycle,
        } => {
            let extra =
                json!({ "key_id": key_id, "protection": protection, "hsm_label": hsm_label });
            match create_body(usage, lifecycle, extra) {
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
            usage,
            count,
            lifecycle,
            ..
        } => match create_body(
            usage,
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
            let usage: Vec<&str> = usage.split(',').map(str::trim).collect();
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
pub(crate) fn run_local(ctx: &crate::admin::Ctx, t: &Typed) -> Result<(), String> {
    let ops = AdminOps::new(ctx.service.clone(), &ctx.data_dir);
    let body = match &t.body {
        Some(b) => serde_json::to_vec(b).map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    let (_, v) = admin_v1::run(&ops, &t.route, &t.query, &body).map_err(|e| t.error(e.error))?;
    render(ctx.json, t, v)
}

pub(crate) fn view<T: DeserializeOwned>(v: Value) -> Result<T, String> {
    serde_json::from_value(v).map_err(|e| format!("unexpected answer: {e}"))
}

/// Prints the answer `v` of `route` as the command prints it.
pub(crate) fn render(json: bool, t: &Typed, v: Value) -> Result<(), String> {
    match &t.route {
        Route::ListStores => print_stores(json, &view::<Vec<StoreView>>(v)?),
        Route::GetStore(_) | Route::CreateStore | Route::SetStoreStatus(_) => {
            let s: StoreView = view(v)?;
            in_force(s.in_force.as_ref());
            print_stores(json, std::slice::from_ref(&s));
        }
        Route::ListKeys(_) => print_keys(json, &view::<Vec<KeyView>>(v)?),
        Route::CreateKeys(_) => {
            let m: KeysMade = view(v)?;
            if m.created > 1000 && !json {
                outln!("Created {} keys; the first 1000:", m.created);
            }
            print_keys(json, &m.keys);
        }
        r if r.answers_one_key() => {
            let k: KeyView = view(v)?;
            in_force(k.in_force.as_ref());
            if let Some(note) = &k.usage_note {
                errln!("{note}");
            }
            print_keys(json, std::slice::from_ref(&k));
        }
        Route::ListVersions(..) => print_versions(json, &view::<Vec<VersionView>>(v)?),
        Route::TrimVersions(..) => {
            let t: TrimmedView = view(v)?;
            if json {
                output::json(&json!({ "shredded_versions": t.shredded_versions }));
            } else {
                outln!("crypto-shredded {} retired version(s)", t.shredded_versions);
            }
        }
        Route::ListCredentials(_) => print_credentials(json, &view::<Vec<CredentialView>>(v)?),
        Route::AddCredential(_) => match &t.kms_config {
            Some(k) => write_kms_config(k, &view(v)?)?,
            None => print_new_credential(json, &view(v)?),
        },
        Route::RemoveCredential(_, akid) => {
            if json {
                output::json(&json!({ "removed": akid }));
            } else {
                outln!("Removed {akid}");
            }
        }
        _ => return render_admin(json, t, v),
    }
    Ok(())
}

/// The answers of break glass, policies, status and tokens.
fn render_admin(json: bool, t: &Typed, v: Value) -> Result<(), String> {
    match &t.route {
        Route::SetLockdown | Route::GetLockdown => {
            let l: LockdownView = view(v)?;
            in_force(l.in_force.as_ref());
            if json {
                output::json(&json!({ "lockdown": l.lockdown }));
            } else if l.lockdown {
                outln!("LOCKDOWN: every key is refused on every front-end until `keyhold unlock`");
            } else {
                outln!("lockdown lifted");
            }
        }
        Route::ListPolicies
        | Route::GetPolicy(..)
        | Route::SetPolicy(..)
        | Route::RemovePolicy(..)
        | Route::ValidatePolicy
        | Route::TestPolicy(..) => render_policy(json, t, v)?,
        Route::Status => print_status(json, &view(v)?),
        Route::KmipStatus
        | Route::ListClientCerts
        | Route::IssueClientCert
        | Route::RevokeClientCerts(_)
        | Route::SetGrant(..)
        | Route::PurgeDestroyed => crate::kmip_cmd::render(json, t, v)?,
        Route::AuditVerify | Route::AuditQuery | Route::AuditExport => {
            crate::audit_cmd::render(json, t, v)?
        }
        Route::CreateBackup | Route::VerifyBackup => crate::backup_cmd::render(json, t, v)?,
        Route::ListTokens => print_tokens(json, &view::<Vec<TokenView>>(v)?),
        Route::CreateToken => {
            let t: NewTokenView = view(v)?;
            if json {
                output::json(&json!({
                    "name": t.name, "id": t.id, "role": t.role, "expires": t.expires, "token": t.token,
                }));
            } else {
                outln!("{}", t.token);
                errln!(
                    "Admin token {:?} ({}) made: it is shown once. Give it to the client as KEYHOLD_ADMIN_TOKEN or --token-file.",
                    t.name,
                    t.role
                );
            }
        }
        Route::RevokeToken(_) => {
            let t: TokenView = view(v)?;
            outln!("Revoked admin token {:?} ({}).", t.name, t.role);
        }
        // Anything else (the OpenAPI document): as it came.
        _ => output::json(&v),
    }
    Ok(())
}

fn render_policy(json: bool, t: &Typed, v: Value) -> Result<(), String> {
    match &t.route {
        Route::GetPolicy(..) => outln!("{}", view::<PolicyView>(v)?.text.trim_end()),
        Route::SetPolicy(..) => {
            let p: PolicyView = view(v)?;
            in_force(p.in_force.as_ref());
            outln!("policy of {} set: {} rule(s)", p.scope, p.rules);
        }
        Route::RemovePolicy(..) => {
            let p: PolicyRemoved = view(v)?;
            in_force(Some(&p.in_force));
            outln!("policy of {} removed", p.scope);
        }
        Route::ValidatePolicy => {
            let c: PolicyCheck = view(v)?;
            let file = t.file.as_deref().unwrap_or("policy");
            outln!("{file}: valid, {} rule(s)", c.rules);
        }
        Route::TestPolicy(..) => {
            let d: PolicyDecision = view(v)?;
            if json {
                output::json(
                    &json!({ "decision": d.decision, "rule": d.rule, "reason": d.reason }),
                );
            } else {
                outln!("{}: {}", d.decision, d.reason);
            }
        }
        _ => print_policies(json, &view::<Vec<PolicySummary>>(v)?),
    }
    Ok(())
}

/// Says how running servers confirmed a change.
pub(crate) fn in_force(f: Option<&InForceView>) {
    let Some(f) = f else { return };
    if f.servers > 0 {
        errln!(
            "in force on {} running server(s) after {:.1} ms",
            f.servers,
            f.elapsed_us as f64 / 1e3
        );
    }
    for w in &f.waited_out {
        errln!(
            "  node {} did not answer (its last heartbeat was at {}): waited until its lease ran out; it serves nothing cached since",
            w.node,
            w.last_heartbeat
        );
    }
}

/// The JSON of views as the commands print it (without confirmations).
pub(crate) fn listed<T: serde::Serialize>(items: &[T]) -> Value {
    let mut v = serde_json::to_value(items).unwrap_or_default();
    if let Value::Array(a) = &mut v {
        for item in a {
            if let Value::Object(o) = item {
                o.remove("in_force");
            }
        }
    }
    v
}

pub(crate) fn print_stores(json: bool, stores: &[StoreView]) {
    if json {
        output::json(&listed(stores));
        return;
    }
    output::table(
        &[
            "PREFIX",
            "URI PATH",
            "STATUS",
            "KEYS",
            "CREDENTIALS",
            "DESCRIPTION",
        ],
        &stores
            .iter()
            .map(|s| {
                vec![
                    s.prefix.clone(),
                    s.uri_path.clone(),
                    status_text(s.status),
                    s.keys.to_string(),
                    s.credentials.to_string(),
                    s.description.clone(),
                ]
            })
            .collect::<Vec<_>>(),
    );
}

fn status_text(s: keyhold_server::admin_ops::StatusName) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The state column: lifecycle state, and a scheduled destruction.
fn state_cell(k: &KeyView) -> String {
    match &k.destroy_at {
        Some(t) if k.state != "DESTROYED" => format!("{} (destroy at {t})", k.state),
        _ => k.state.clone(),
    }
}

pub(crate) fn print_keys(json: bool, keys: &[KeyView]) {
    if json {
        output::json(&listed(keys));
        return;
    }
    output::table(
        &[
            "STORE",
            "KEY ID",
            "STATUS",
            "STATE",
            "USAGE",
            "VERSION",
            "PROTECTION",
            "UPDATED",
        ],
        &keys
            .iter()
            .map(|k| {
                vec![
                    k.store.clone(),
                    k.key_id.clone(),
                    status_text(k.status),
                    state_cell(k),
                    if k.usage.is_empty() {
                        "NONE".to_owned()
                    } else {
                        k.usage.join(",")
                    },
                    k.current_version.to_string(),
                    k.protection.clone(),
                    k.updated_at.clone(),
                ]
            })
            .collect::<Vec<_>>(),
    );
}

fn print_versions(json: bool, vs: &[VersionView]) {
    if json {
        output::json(&listed(vs));
        return;
    }
    output::table(
        &["VERSION", "CREATED", "STATUS"],
        &vs.iter()
            .map(|v| {
                vec![
                    format!("{}{}", v.version, if v.current { " (current)" } else { "" }),
                    v.created_at.clone(),
                    v.status.clone(),
                ]
            })
            .collect::<Vec<_>>(),
    );
}

fn print_policies(json: bool, all: &[PolicySummary]) {
    if json {
        output::json(&json!(all.iter().map(|p| &p.scope).collect::<Vec<_>>()));
        return;
    }
    output::table(
        &["SCOPE", "RULES"],
        &all.iter()
            .map(|p| {
                vec![
                    p.scope.clone(),
                    p.rules.map_or_else(|| "INVALID".into(), |n| n.to_string()),
                ]
            })
            .collect::<Vec<_>>(),
    );
}

fn print_tokens(json: bool, tokens: &[TokenView]) {
    if json {
        output::json(&listed(tokens));
        return;
    }
    output::table(
        &["NAME", "ROLE", "ID", "CREATED", "EXPIRES", "ROW"],
        &tokens
            .iter()
            .map(|t| {
                vec![
                    t.name.clone(),
                    t.role.clone(),
                    t.id.clone(),
                    t.created.clone(),
                    t.expires.clone().unwrap_or_else(|| "never".into()),
                    if t.genuine {
                        "ok".to_owned()
                    } else {
                        "NOT GENUINE (refused; revoke it)".to_owned()
                    },
                ]
            })
            .collect::<Vec<_>>(),
    );
}

fn print_status(json: bool, s: &StatusView) {
    if json {
        let mut v = serde_json::to_value(s).unwrap_or_default();
        if let Value::Object(o) = &mut v {
            o.remove("data_dir");
        }
        output::json(&v);
        return;
    }
    outln!("version    {}", s.version);
    outln!("health     {}", s.health);
    for r in &s.ekms {
        let detail = r
            .detail
            .as_deref()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
        outln!("  {} ({}): {}{detail}", r.id, r.model, r.status);
    }
    outln!("lockdown   {}", if s.lockdown { "ON" } else { "off" });
    if s.integrity.genuine {
        outln!("integrity  every stored row verifies");
    } else {
        outln!(
            "integrity  {} stored rows NOT GENUINE (changed outside Keyhold; refused):",
            s.integrity.refused.len()
        );
        for r in &s.integrity.refused {
            outln!("  {r}");
        }
    }
    match s.servers.len() {
        0 => outln!("servers    none running on {}", s.data_dir),
        n => outln!("servers    {n} running on {}", s.data_dir),
    }
    for srv in &s.servers {
        let listeners: Vec<String> = srv
            .listeners
            .iter()
            .map(|(what, addr)| format!("{what} {addr}"))
            .collect();
        outln!(
            "  pid {}  up {}  {}",
            srv.pid,
            output::duration(srv.uptime_s),
            if listeners.is_empty() {
                "(starting)".to_owned()
            } else {
                listeners.join(", ")
            }
        );
    }
    if let Some(n) = s.live_servers {
        outln!("nodes      {n} live on the shared database (every host)");
    }
    outln!("keys       {}", s.keys.values().sum::<u64>());
    for (state, n) in &s.keys {
        outln!("  {state}: {n}");
    }
}

fn print_credentials(json: bool, list: &[CredentialView]) {
    if json {
        output::json(&listed(list));
        return;
    }
    output::table(
        &["ACCESS KEY ID", "STORE", "CREATED"],
        &list
            .iter()
            .map(|c| {
                vec![
                    c.access_key_id.clone(),
                    c.store.clone(),
                    c.created_at.clone(),
                ]
            })
            .collect::<Vec<_>>(),
    );
}

/// The file the AWS KMS console imports for an external key store.
fn write_kms_config(k: &KmsConfig, c: &NewCredentialView) -> Result<(), String> {
    let text = zeroize::Zeroizing::new(
        serde_json::to_string_pretty(&json!({
            "XksProxyUriPath": k.uri_path,
            "XksProxyAuthenticationCredential": {
                "AccessKeyId": c.access_key_id,
                "RawSecretAccessKey": c.secret_access_key,
            }
        }))
        .map_err(|e| e.to_string())?,
    );
    match &k.output {
        Some(path) => {
            crate::cmdio::write_output(path, format!("{}\n", text.as_str()).as_bytes(), 0o600)?;
            errln!(
                "Wrote {} with new credential {} for {}",
                path.display(),
                c.access_key_id,
                k.uri_path
            );
        }
        None => outln!("{}", text.as_str()),
    }
    Ok(())
}

fn print_new_credential(json: bool, c: &NewCredentialView) {
    if json {
        output::json(&json!({
            "store": c.store,
            "access_key_id": c.access_key_id,
            "secret_access_key": c.secret_access_key,
        }));
    } else {
        outln!("Access key id:     {}", c.access_key_id);
        outln!("Secret access key: {}", c.secret_access_key);
        outln!("The secret is shown only now. Store it safely.");
    }
}
