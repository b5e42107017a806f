//! `keyhold admin token …` (who may use the admin API, with which role) and
//! `keyhold status` (what an operator checks).

use crate::admin::{e, Ctx};
use crate::cmdio::outln;
use crate::output;
use clap::Subcommand;
use keyhold_service::admin::Role;
use secrecy::ExposeSecret;
use serde_json::json;

#[derive(Subcommand, Debug)]
pub(crate) enum AdminCmd {
    /// Bearer tokens of the admin API.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Name the caller and its role (over the admin API: the token's).
    Whoami,
}

#[derive(Subcommand, Debug)]
pub(crate) enum TokenCmd {
    /// Make a token; it is printed once and kept nowhere (only its digest is stored).
    Create {
        name: String,
        /// custodian (lifecycle, policies, break glass, tokens), auditor
        /// (audit log and metadata, read only) or operator (status, metrics).
        #[arg(long)]
        role: String,
        /// Expire after this long (e.g. 90d, 12h); default: never.
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// List tokens (names, roles, expiry; never secrets).
    List,
    /// Revoke a token by name or id: refused from the next request on.
    Revoke { name: String },
}

pub(crate) fn run(ctx: &Ctx, cmd: &AdminCmd) -> Result<(), String> {
    let svc = &ctx.service;
    match cmd {
        AdminCmd::Whoami => {
            let who = ctx
                .actor
                .clone()
                .unwrap_or_else(|| format!("local ({})", crate::audit_cmd::local_actor()));
            if ctx.json {
                output::json(&json!({ "actor": who }));
            } else {
                outln!("{who}");
            }
        }
        AdminCmd::Token(TokenCmd::Create {
            name,
            role,
            expires_in,
        }) => {
            let role = Role::parse(role).map_err(e)?;
            let expires_ms = match expires_in {
                None => None,
                Some(d) => {
                    let secs = keyhold_core::time::parse_duration(d)
                        .filter(|s| *s > 0)
                        .ok_or_else(|| format!("--expires-in {d}: use e.g. 90d, 12h, 30m"))?;
                    Some((keyhold_core::now() + secs) * 1000)
                }
            };
            let (t, secret) = svc.create_admin_token(name, role, expires_ms).map_err(e)?;
            if ctx.json {
                output::json(&json!({
                    "name": t.name,
                    "id": t.id,
                    "role": t.role.as_str(),
                    "expires": t.expires_ms.map(|m| output::time(m / 1000)),
                    "token": secret.expose_secret(),
                }));
            } else {
                outln!("{}", secret.expose_secret());
                crate::cmdio::errln!(
                    "Admin token {:?} ({}) made: it is shown once. Give it to the client as KEYHOLD_ADMIN_TOKEN or --token-file.",
                    t.name,
                    t.role.as_str()
                );
            }
        }
        AdminCmd::Token(TokenCmd::List) => {
            let tokens = svc.admin_tokens().map_err(e)?;
            let genuine = tokens
                .iter()
                .map(|t| svc.admin_token_is_genuine(t))
                .collect::<Result<Vec<bool>, _>>()
                .map_err(e)?;
            if ctx.json {
                output::json(&json!(tokens
                    .iter()
                    .zip(&genuine)
                    .map(|(t, ok)| json!({
                        "name": t.name,
                        "id": t.id,
                        "role": t.role.as_str(),
                        "created": output::time(t.created_ms / 1000),
                        "expires": t.expires_ms.map(|m| output::time(m / 1000)),
                        "genuine": ok,
                    }))
                    .collect::<Vec<_>>()));
            } else {
                output::table(
                    &["NAME", "ROLE", "ID", "CREATED", "EXPIRES", "ROW"],
                    &tokens
                        .iter()
                        .zip(&genuine)
                        .map(|(t, ok)| {
                            vec![
                                t.name.clone(),
                                t.role.as_str().to_owned(),
                                t.id.clone(),
                                output::time(t.created_ms / 1000),
                                t.expires_ms
                                    .map(|m| output::time(m / 1000))
                                    .unwrap_or_else(|| "never".into()),
                                if *ok {
                                    "ok".to_owned()
                                } else {
                                    "NOT GENUINE (refused; revoke it)".to_owned()
                                },
                            ]
                        })
                        .collect::<Vec<_>>(),
                );
            }
        }
        AdminCmd::Token(TokenCmd::Revoke { name }) => {
            let t = svc.revoke_admin_token(name).map_err(e)?;
            outln!("Revoked admin token {:?} ({}).", t.name, t.role.as_str());
        }
    }
    Ok(())
}

/// `keyhold status`: health of the roots of trust and storage, lockdown,
/// keys by state, live servers on shared storage.
pub(crate) fn status(ctx: &Ctx) -> Result<(), String> {
    let svc = &ctx.service;
    let health = svc.health();
    let counts = svc.key_state_counts().map_err(e)?;
    let mut by_state = std::collections::BTreeMap::<String, u64>::new();
    for (_, state, status, n) in &counts {
        *by_state.entry(format!("{state}/{status}")).or_default() += n;
    }
    let nodes = if svc.shared_storage() {
        let since =
            keyhold_core::now() * 1000 - keyhold_server::presence::NODE_TTL.as_millis() as i64;
        Some(svc.nodes().live_nodes(since).map_err(e)?.len())
    } else {
        None
    };
    // Every row that grants or limits power, checked against its seal.
    let refused = svc.scan_integrity().map_err(e)?;
    let now_ms = keyhold_core::now() * 1000;
    let servers = keyhold_server::presence::running_servers(&ctx.data_dir);
    let servers_json: Vec<_> = servers
        .iter()
        .map(|s| {
            json!({
                "pid": s.pid,
                "version": s.version,
                "started_at": output::time(s.started_ms / 1000),
                "uptime_s": (now_ms - s.started_ms).max(0) / 1000,
                "listeners": s.listeners.iter().map(|(what, addr)| (what.clone(), json!(addr)))
                    .collect::<serde_json::Map<_, _>>(),
            })
        })
        .collect();
    let v = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "health": health.status().as_str(),
        "ekms": health.ekms.iter().map(|r| json!({
            "id": r.id, "model": r.model, "status": r.status.as_str(), "detail": r.detail,
        })).collect::<Vec<_>>(),
        "lockdown": svc.is_locked_down(),
        "integrity": {"genuine": refused.is_empty(), "refused": refused},
        "keys": by_state,
        "live_servers": nodes,
        "servers": servers_json,
    });
    if ctx.json {
        output::json(&v);
        return Ok(());
    }
    outln!("version    {}", env!("CARGO_PKG_VERSION"));
    outln!("health     {}", health.status().as_str());
    for r in &health.ekms {
        outln!(
            "  {} ({}): {}{}",
            r.id,
            r.model,
            r.status.as_str(),
            r.detail
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        );
    }
    outln!(
        "lockdown   {}",
        if svc.is_locked_down() { "ON" } else { "off" }
    );
    if refused.is_empty() {
        outln!("integrity  every stored row verifies");
    } else {
        outln!(
            "integrity  {} stored rows NOT GENUINE (changed outside Keyhold; refused):",
            refused.len()
        );
        for r in &refused {
            outln!("  {r}");
        }
    }
    match servers.len() {
        0 => outln!("servers    none running on {}", ctx.data_dir.display()),
        n => outln!("servers    {n} running on {}", ctx.data_dir.display()),
    }
    for s in &servers {
        let listeners: Vec<String> = s
            .listeners
            .iter()
            .map(|(what, addr)| format!("{what} {addr}"))
            .collect();
        outln!(
            "  pid {}  up {}  {}",
            s.pid,
            output::duration((now_ms - s.started_ms).max(0) / 1000),
            if listeners.is_empty() {
                "(starting)".to_owned()
            } else {
                listeners.join(", ")
            }
        );
    }
    if let Some(n) = nodes {
        outln!("nodes      {n} live on the shared database (every host)");
    }
    outln!("keys       {}", by_state.values().sum::<u64>());
    for (state, n) in &by_state {
        outln!("  {state}: {n}");
    }
    Ok(())
}
