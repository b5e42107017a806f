//! Commands that are typed operations of the admin API (`/v1/…`): stores,
//! their credentials and keys, the lockdown. Each runs the same typed
//! operation whether the CLI works on the data directory (locally) or
//! through the admin API (`--server`), and prints its typed answer the
//! same way. Commands with options the typed API does not take (several
//! keys at once, HSM keys, lifecycle dates) keep their own path.

use crate::admin::{CredentialCmd, KeyCmd, StoreCmd};
use crate::cmdio::{errln, outln};
use crate::lifecycle_cmd::LifecycleCmd;
use crate::output;
use crate::Command;
use keyhold_server::admin_ops::{
    AdminOps, CredentialView, InForceView, KeyAction, KeyView, LockdownView, NewCredentialView,
    StoreView, TrimmedView, VersionView, MAX_LIST,
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
}

impl Typed {
    fn new(route: Route) -> Self {
        Self {
            route,
            query: String::new(),
            body: None,
        }
    }

    fn with(route: Route, body: Value) -> Self {
        Self {
            body: Some(body),
            ..Self::new(route)
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
            StoreCmd::KmsConfig { .. } => return None,
        },
        Command::Key(k) => key(k)?,
        Command::Lockdown => Typed::with(Route::SetLockdown, json!({ "lockdown": true })),
        Command::Unlock => Typed::with(Route::SetLockdown, json!({ "lockdown": false })),
        _ => return None,
    }))
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

fn key(cmd: &KeyCmd) -> Option<Typed> {
    Some(match cmd {
        KeyCmd::Create {
            prefix,
            key_id: Some(id),
            usage,
            count: 1,
            protection,
            hsm_label: None,
            lifecycle,
        } if protection == "software"
            && lifecycle.lifecycle().ok()? == keyhold_core::Lifecycle::default() =>
        {
            let usage: Vec<&str> = usage.split(',').map(str::trim).collect();
            Typed::with(
                Route::CreateKey(prefix.clone()),
                json!({ "key_id": id, "usage": usage }),
            )
        }
        KeyCmd::List {
            prefix,
            limit,
            after,
        } if *limit <= MAX_LIST => {
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
    })
}

/// Runs `t` on the data directory's key service and prints its answer.
pub(crate) fn run_local(ctx: &crate::admin::Ctx, t: &Typed) -> Result<(), String> {
    let ops = AdminOps::new(ctx.service.clone(), &ctx.data_dir);
    let body = match &t.body {
        Some(b) => serde_json::to_vec(b).map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    let (_, v) = admin_v1::run(&ops, &t.route, &t.query, &body).map_err(|e| e.error)?;
    render(ctx.json, &t.route, v)
}

fn view<T: DeserializeOwned>(v: Value) -> Result<T, String> {
    serde_json::from_value(v).map_err(|e| format!("unexpected answer: {e}"))
}

/// Prints the answer `v` of `route` as the command prints it.
pub(crate) fn render(json: bool, route: &Route, v: Value) -> Result<(), String> {
    match route {
        Route::ListStores => print_stores(json, &view::<Vec<StoreView>>(v)?),
        Route::GetStore(_) | Route::CreateStore | Route::SetStoreStatus(_) => {
            let s: StoreView = view(v)?;
            in_force(s.in_force.as_ref());
            print_stores(json, std::slice::from_ref(&s));
        }
        Route::ListKeys(_) => print_keys(json, &view::<Vec<KeyView>>(v)?),
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
        Route::AddCredential(_) => print_new_credential(json, &view(v)?),
        Route::RemoveCredential(_, akid) => {
            if json {
                output::json(&json!({ "removed": akid }));
            } else {
                outln!("Removed {akid}");
            }
        }
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
        // Anything else (the OpenAPI document): as it came.
        _ => output::json(&v),
    }
    Ok(())
}

/// Says how running servers confirmed a change.
fn in_force(f: Option<&InForceView>) {
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
fn listed<T: serde::Serialize>(items: &[T]) -> Value {
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
