//! How the typed answers are printed: tables for people, `--json` for
//! scripts, as the commands always printed them.

use super::{KmsConfig, Typed};
use crate::cmdio::{errln, outln};
use crate::output;
use keyhold_server::admin_ops::{
    CredentialView, InForceView, KeyView, KeysMade, LockdownView, NewCredentialView, NewTokenView,
    PolicyCheck, PolicyDecision, PolicyRemoved, PolicySummary, PolicyView, PublicKeyView,
    StatusView, StoreView, TokenView, TrimmedView, VersionView,
};
use keyhold_server::admin_v1::Route;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

pub(crate) fn view<T: DeserializeOwned>(v: Value) -> Result<T, String> {
    serde_json::from_value(v).map_err(|e| format!("unexpected answer: {e}"))
}

/// Prints the answer `v` of `route` as the command prints it.
pub(crate) fn render(json: bool, t: &Typed, v: Value) -> Result<(), String> {
    match &t.route {
        Route::ListStores => print_stores(json, &view::<Vec<StoreView>>(v)?),
        Route::GetStore(_)
        | Route::CreateStore
        | Route::SetStoreStatus(_)
        | Route::SetStoreApi(_) => {
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
        Route::GetPublicKey(..) => {
            let k: PublicKeyView = view(v)?;
            if json {
                output::json(&serde_json::to_value(&k).map_err(|e| e.to_string())?);
            } else {
                // The PEM alone: `keyhold key public-key … > key.pem`.
                print!("{}", k.public_key_pem);
            }
        }
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
            "API",
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
                    s.api.clone(),
                    // Where the cloud calls: Azure's path prefix, or XKS's
                    // URI path.
                    match (&s.azure_ekm, &s.ms_dke, &s.google_cse) {
                        (Some(a), _, _) => format!("{}/{{key}}/…", a.path_prefix),
                        (_, Some(d), _) => format!("{}/{{key}}", d.path_prefix),
                        (_, _, Some(c)) => format!("{}/{{method}}", c.path_prefix),
                        _ => s.uri_path.clone(),
                    },
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
            "TYPE",
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
                    k.key_spec.clone(),
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
    outln!(
        "fips       {}",
        match (s.fips.build, s.fips.module_fips_mode) {
            (true, true) => "FIPS mode (FIPS build, module in FIPS mode)",
            (true, false) => "FIPS build, but the module is NOT in FIPS mode",
            (false, _) => "off (not a FIPS build)",
        }
    );
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
