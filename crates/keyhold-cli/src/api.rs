//! The admin commands over the admin API: the server side records every
//! call (and every refusal) in the audit log; the client side
//! (`keyhold --server URL …`) sends a command's typed operation and prints
//! its answer.
//!
//! Local use of the CLI on the data directory needs the root of trust (the
//! root key file and its passphrase, or the HSM PIN) and may do everything:
//! it is the custodians' way to bootstrap and to recover. Everyone else
//! goes through the API with a token and gets exactly its role.

use crate::admin_cmd::AdminCmd;
use crate::local::CommandEnv;
use crate::{Cli, Command};
use keyhold_server::admin_api::{AdminExecutor, Client, Method};
use keyhold_server::data_dir::DataDir;
use keyhold_service::api_tokens::AdminIdentity;
use keyhold_service::KeyService;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Records the admin API's calls in the audit log's admin chain, for the
/// server (which runs each call as a typed operation).
pub(crate) struct Executor {
    service: Arc<KeyService>,
    data_dir: DataDir,
    refusals: parking_lot::Mutex<keyhold_audit::RefusalBudget>,
}

/// Requests without a valid token: at most this many records a second (see
/// [`keyhold_audit::RefusalBudget`]).
const REFUSALS_RECORDED_PER_SEC: u32 = 10;

impl Executor {
    pub(crate) fn new(service: Arc<KeyService>, data_dir: DataDir) -> Self {
        Self {
            service,
            data_dir,
            refusals: parking_lot::Mutex::new(keyhold_audit::RefusalBudget::new(
                REFUSALS_RECORDED_PER_SEC,
            )),
        }
    }

    fn ctx(&self, actor: String) -> CommandEnv {
        CommandEnv {
            service: self.service.clone(),
            json: false,
            data_dir: self.data_dir.path.clone(),
            actor: Some(actor),
            frontend: "admin",
        }
    }

    fn record(&self, ctx: &CommandEnv, words: &[String], outcome: &Result<(), String>) {
        if let Err(err) = crate::audit_cmd::record_admin(ctx, &self.data_dir, words, outcome) {
            tracing::error!(error = %err, "admin API: cannot write the audit record");
        }
    }
}

impl AdminExecutor for Executor {
    fn record_call(
        &self,
        who: &AdminIdentity,
        peer: SocketAddr,
        frontend: &'static str,
        what: &str,
        outcome: Result<(), String>,
    ) {
        let mut ctx = self.ctx(format!("{} from {}", who.actor(), peer.ip()));
        ctx.frontend = frontend;
        let words: Vec<String> = what.split(' ').map(str::to_owned).collect();
        self.record(&ctx, &words, &outcome);
    }

    fn refused(&self, peer: SocketAddr, why: &str) {
        let Some(skipped) = self.refusals.lock().admit(std::time::Instant::now()) else {
            return;
        };
        let why = match skipped {
            0 => why.to_owned(),
            n => format!("{why} ({n} more refusals before this one were not recorded: over {REFUSALS_RECORDED_PER_SEC}/s)"),
        };
        let ctx = self.ctx(format!("unauthenticated from {}", peer.ip()));
        self.record(&ctx, &["authenticate".to_owned()], &Err(why));
    }
}

/// Where the client finds the server and its credentials.
#[derive(clap::Args, Debug, Clone, Default)]
pub(crate) struct RemoteArgs {
    /// Run the command on a server's admin API (https://HOST:PORT) instead
    /// of on a local data directory.
    #[arg(long, global = true, env = "KEYHOLD_SERVER")]
    pub server: Option<String>,
    /// CA certificate that signed the server's certificate (its DATA/tls/ca.pem).
    #[arg(long, global = true, env = "KEYHOLD_SERVER_CA")]
    pub server_ca: Option<PathBuf>,
    /// File holding the admin token (else KEYHOLD_ADMIN_TOKEN).
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
}

fn token(args: &RemoteArgs) -> Result<zeroize::Zeroizing<String>, String> {
    let t = match &args.token_file {
        Some(f) => zeroize::Zeroizing::new(
            std::fs::read_to_string(f)
                .map_err(|err| format!("cannot read token file {}: {err}", f.display()))?,
        ),
        None => zeroize::Zeroizing::new(std::env::var("KEYHOLD_ADMIN_TOKEN").unwrap_or_default()),
    };
    let t = zeroize::Zeroizing::new(t.trim().to_owned());
    if t.is_empty() {
        return Err("the admin API needs a token: KEYHOLD_ADMIN_TOKEN or --token-file".into());
    }
    Ok(t)
}

/// `keyhold --server URL COMMAND…`: runs COMMAND's typed operation on the
/// server's admin API and prints its answer as the command does.
pub(crate) fn run_remote(cli: &Cli) -> Result<(), String> {
    let args = &cli.remote;
    let url = args.server.as_deref().expect("called with --server");
    let typed = match crate::typed::of(&cli.command) {
        Some(t) => Some(t?),
        None if matches!(cli.command, Command::Admin(AdminCmd::Whoami)) => None,
        None => return Err("this command runs only on the server's host, with the root of trust (not with --server)".into()),
    };
    let client = Client::new(url, args.server_ca.as_deref())?;
    let token = token(args)?;
    let Some(t) = typed else {
        let (status, v) = client.call(&token, Method::GET, "/v1/whoami", None::<&()>)?;
        if !status.is_success() {
            return Err(api_error(status.as_u16(), &v));
        }
        if cli.json {
            crate::output::json(&v);
        } else {
            println!(
                "{} ({})",
                v["name"].as_str().unwrap_or(""),
                v["role"].as_str().unwrap_or("")
            );
        }
        return Ok(());
    };
    let (method, path) = t.path();
    let (status, v) = client.call(&token, method, &path, t.body.as_ref())?;
    if !status.is_success() {
        return Err(t.error(api_error(status.as_u16(), &v)));
    }
    crate::typed::render(cli.json, &t, v)
}

fn api_error(status: u16, v: &serde_json::Value) -> String {
    format!(
        "admin API ({status}): {}",
        v["error"].as_str().unwrap_or("no reason given")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use keyhold_service::api_tokens::Role;

    fn cmd(args: &[&str]) -> Command {
        Cli::try_parse_from(std::iter::once("keyhold").chain(args.iter().copied()))
            .unwrap()
            .command
    }

    /// Every command the admin API runs is a typed operation, and the
    /// route's role rule gives each role exactly its commands.
    #[test]
    fn roles_get_exactly_their_commands() {
        let table: &[(&[&str], [bool; 3])] = &[
            // (command, [operator, auditor, custodian])
            (&["status"], [true, true, true]),
            (&["kmip", "status"], [true, true, true]),
            (&["kmip", "client-cert", "list"], [false, true, true]),
            (
                &["kmip", "client-cert", "revoke", "bob"],
                [false, false, true],
            ),
            (&["key", "list", "/t"], [false, true, true]),
            (&["key", "versions", "/t", "k"], [false, true, true]),
            (&["policy", "test", "--store", "/t"], [false, true, true]),
            (&["admin", "token", "list"], [false, true, true]),
            (&["audit", "verify"], [false, true, false]),
            (&["audit", "query"], [false, true, false]),
            (&["key", "disable", "/t", "k"], [false, false, true]),
            (
                &["key", "destroy", "/t", "k", "--days", "7"],
                [false, false, true],
            ),
            (&["store", "credential", "add", "/t"], [false, false, true]),
            (
                &["policy", "set", "--store", "/t", "--file", "p"],
                [false, false, true],
            ),
            (&["lockdown"], [false, false, true]),
            (
                &["admin", "token", "create", "x", "--role", "auditor"],
                [false, false, true],
            ),
            (&["backup", "create", "f"], [false, false, true]),
        ];
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("p");
        std::fs::write(&policy, "[[rule]]\nname = \"x\"\neffect = \"allow\"\n").unwrap();
        let backup = dir.path().join("f");
        for (args, want) in table {
            let args: Vec<&str> = args
                .iter()
                .map(|a| match *a {
                    "p" => policy.to_str().unwrap(),
                    "f" => backup.to_str().unwrap(),
                    a => a,
                })
                .collect();
            let t = crate::typed::of(&cmd(&args)).unwrap().unwrap();
            let a = t.route.access();
            let got = [Role::Operator, Role::Auditor, Role::Custodian].map(|r| a.allows(r));
            assert_eq!(&got, want, "{args:?}");
        }
        for local in [
            &["init"][..],
            &["serve"],
            &["hsm", "status"],
            &["backup", "restore", "f", "--root-key", "r"],
        ] {
            assert!(crate::typed::of(&cmd(local)).is_none(), "{local:?}");
        }
    }
}
