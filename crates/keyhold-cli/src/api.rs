//! The admin commands over the admin API: which role may run which
//! command, the server side that runs them for an authenticated caller
//! (and audits who did it), and the client side (`keyhold --server URL …`).
//!
//! Local use of the CLI on the data directory needs the root of trust (the
//! root key file and its passphrase, or the HSM PIN) and may do everything:
//! it is the custodians' way to bootstrap and to recover. Everyone else
//! goes through the API with a token and gets exactly its role.

use crate::admin::{CredentialCmd, Ctx, KeyCmd, StoreCmd};
use crate::admin_cmd::{AdminCmd, TokenCmd};
use crate::backup_cmd::BackupCmd;
use crate::kmip_cmd::{ClientCertCmd, KmipCmd};
use crate::lifecycle_cmd::LifecycleCmd;
use crate::policy_cmd::PolicyCmd;
use crate::{Cli, Command};
use clap::Parser;
use keyhold_server::admin_api::{
    b64, decode_inputs, AdminExecutor, AdminRequest, AdminResponse, Client, Method, Outcome,
    OutputFile,
};
use keyhold_server::data_dir::DataDir;
use keyhold_service::admin::{Access, AdminIdentity};
use keyhold_service::KeyService;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What `cmd` needs over the API; `None`: only locally, with the root of
/// trust (it makes or opens data directories, or talks to the HSM).
pub(crate) fn access(cmd: &Command) -> Option<Access> {
    use Access::*;
    Some(match cmd {
        Command::Init { .. }
        | Command::Serve { .. }
        | Command::Hsm(_)
        | Command::Root(_)
        | Command::Doctor(_)
        | Command::Completions { .. }
        | Command::ManPages { .. }
        | Command::Backup(BackupCmd::Restore(_)) => return None,
        Command::Status => Status,
        Command::Admin(AdminCmd::Whoami) => Status,
        Command::Admin(AdminCmd::Token(TokenCmd::List)) => Read,
        Command::Admin(AdminCmd::Token(_)) => Change,
        Command::Store(StoreCmd::List | StoreCmd::Show { .. })
        | Command::Store(StoreCmd::Credential(CredentialCmd::List { .. })) => Read,
        Command::Store(_) => Change,
        Command::Key(
            KeyCmd::List { .. }
            | KeyCmd::Show { .. }
            | KeyCmd::Lifecycle(LifecycleCmd::Versions { .. }),
        ) => Read,
        Command::Key(_) => Change,
        Command::Policy(
            PolicyCmd::Show { .. }
            | PolicyCmd::List
            | PolicyCmd::Test { .. }
            | PolicyCmd::Validate { .. },
        ) => Read,
        Command::Policy(_) => Change,
        Command::Audit(_) => Audit,
        Command::Kmip(KmipCmd::Status) => Status,
        Command::Kmip(KmipCmd::ClientCert(ClientCertCmd::List)) => Read,
        Command::Kmip(_) => Change,
        Command::Backup(_) => Change,
        Command::Lockdown | Command::Unlock => Change,
    })
}

/// Files `cmd` reads (sent with the request) and writes (accepted back).
fn files(cmd: &Command) -> (Vec<PathBuf>, Vec<PathBuf>) {
    match cmd {
        Command::Backup(BackupCmd::Verify { file }) => (vec![file.clone()], vec![]),
        Command::Backup(BackupCmd::Create { file }) => (vec![], vec![file.clone()]),
        _ => (vec![], vec![]),
    }
}

/// Runs admin commands inside the server for the admin API.
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

    fn ctx(&self, json: bool, actor: String) -> Ctx {
        Ctx {
            service: self.service.clone(),
            json,
            data_dir: self.data_dir.path.clone(),
            actor: Some(actor),
        }
    }

    fn record(&self, ctx: &Ctx, words: &[String], outcome: &Result<(), String>) {
        if let Err(err) = crate::audit_cmd::record_admin(ctx, &self.data_dir, words, outcome) {
            tracing::error!(error = %err, "admin API: cannot write the audit record");
        }
    }
}

impl AdminExecutor for Executor {
    fn execute(&self, who: &AdminIdentity, peer: SocketAddr, req: AdminRequest) -> Outcome {
        let actor = format!("{} from {}", who.actor(), peer.ip());
        let ctx = self.ctx(req.json, actor);
        // Every authenticated call is recorded, the ones refused here too.
        let bad = |msg: String| {
            self.record(&ctx, &req.args, &Err(format!("refused: {msg}")));
            Outcome::BadRequest(msg)
        };
        // Global options are the client's: none reaches the server, first
        // or anywhere else (clap would take them after the command too).
        const GLOBAL: [&str; 6] = [
            "--data-dir",
            "--config",
            "--passphrase-file",
            "--server",
            "--server-ca",
            "--token-file",
        ];
        let global = req.args.iter().any(|a| {
            GLOBAL
                .iter()
                .any(|g| a == g || a.strip_prefix(g).is_some_and(|r| r.starts_with('=')))
        });
        if global || req.args.first().is_some_and(|a| a.starts_with('-')) {
            return bad(
                "global options (--data-dir, --config, --server, …) are not sent to the server; args start with the command".into(),
            );
        }
        let argv = std::iter::once("keyhold".to_owned()).chain(req.args.iter().cloned());
        let cli = match Cli::try_parse_from(argv) {
            Ok(c) => c,
            Err(err) => return bad(err.to_string()),
        };
        // How refusals name the command.
        let what = req
            .args
            .iter()
            .take(2)
            .cloned()
            .collect::<Vec<_>>()
            .join(" ");
        let Some(need) = access(&cli.command) else {
            let msg = format!(
                "`{what}` is not available over the admin API: run it on the server's host with the root of trust"
            );
            self.record(&ctx, &req.args, &Err(format!("refused: {msg}")));
            return Outcome::BadRequest(msg);
        };
        if !need.allows(who.role) {
            let msg = need.denied(&what, who);
            self.record(&ctx, &req.args, &Err(msg.clone()));
            return Outcome::Forbidden(msg);
        }
        let inputs = match decode_inputs(&req) {
            Ok(i) => i,
            Err(err) => {
                self.record(&ctx, &req.args, &Err(format!("refused: {err}")));
                return Outcome::BadRequest(err);
            }
        };
        let (r, captured) = crate::cmdio::capture(inputs, || {
            crate::run_admin(&ctx, &self.data_dir, &cli.command)
        });
        self.record(&ctx, &req.args, &r);
        Outcome::Ran(AdminResponse {
            ok: r.is_ok(),
            stdout: captured.stdout,
            stderr: captured.stderr,
            error: r.err(),
            outputs: captured
                .outputs
                .into_iter()
                .map(|(k, (data, mode))| {
                    (
                        k,
                        OutputFile {
                            data: b64(&data),
                            mode,
                        },
                    )
                })
                .collect(),
        })
    }

    fn record_call(
        &self,
        who: &AdminIdentity,
        peer: SocketAddr,
        what: &str,
        outcome: Result<(), String>,
    ) {
        let ctx = self.ctx(false, format!("{} from {}", who.actor(), peer.ip()));
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
        let ctx = self.ctx(false, format!("unauthenticated from {}", peer.ip()));
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

/// `keyhold --server URL COMMAND…`: runs COMMAND on the server, prints its
/// output and writes the files it named.
pub(crate) fn run_remote(cli: &Cli, words: &[String]) -> Result<(), String> {
    let args = &cli.remote;
    let url = args.server.as_deref().expect("called with --server");
    if access(&cli.command).is_none() {
        return Err("this command runs only on the server's host, with the root of trust (not with --server)".into());
    }
    let client = Client::new(url, args.server_ca.as_deref())?;
    let token = token(args)?;
    if matches!(cli.command, Command::Admin(AdminCmd::Whoami)) {
        let (status, v) = client.call(&token, Method::GET, "/admin/v1/whoami", None::<&()>)?;
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
    }
    if let Some(t) = crate::typed::of(&cli.command) {
        let t = t?;
        let (method, path) = t.path();
        let (status, v) = client.call(&token, method, &path, t.body.as_ref())?;
        if !status.is_success() {
            return Err(t.error(api_error(status.as_u16(), &v)));
        }
        return crate::typed::render(cli.json, &t, v);
    }
    let (inputs, outputs) = files(&cli.command);
    let mut req = AdminRequest {
        args: words.to_vec(),
        json: cli.json,
        ..Default::default()
    };
    for p in inputs {
        let bytes =
            std::fs::read(&p).map_err(|err| format!("cannot read {}: {err}", p.display()))?;
        req.inputs
            .insert(p.to_string_lossy().into_owned(), b64(&bytes));
    }
    let (status, v) = client.call(&token, Method::POST, "/admin/v1/command", Some(&req))?;
    if !status.is_success() {
        return Err(api_error(status.as_u16(), &v));
    }
    let resp: AdminResponse =
        serde_json::from_value(v).map_err(|err| format!("unexpected answer: {err}"))?;
    print!("{}", resp.stdout);
    eprint!("{}", resp.stderr);
    for (path, f) in &resp.outputs {
        // Only the files this command named: the server cannot make the
        // client write anywhere else.
        let p = Path::new(path);
        if !outputs.iter().any(|o| o == p) {
            return Err(format!(
                "the server sent a file that was not asked for: {path}"
            ));
        }
        let data = keyhold_server::admin_api::unb64(&f.data)
            .map_err(|err| format!("the server sent {path}: {err}"))?;
        crate::admin::write_file(p, &data, f.mode & 0o644)?;
    }
    match resp.error {
        Some(err) if !resp.ok => Err(err),
        _ => Ok(()),
    }
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
    use keyhold_service::admin::Role;

    fn cmd(args: &[&str]) -> Command {
        Cli::try_parse_from(std::iter::once("keyhold").chain(args.iter().copied()))
            .unwrap()
            .command
    }

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
        for (args, want) in table {
            let a = access(&cmd(args)).unwrap();
            let got = [Role::Operator, Role::Auditor, Role::Custodian].map(|r| a.allows(r));
            assert_eq!(&got, want, "{args:?}");
        }
        for local in [
            &["init"][..],
            &["serve"],
            &["hsm", "status"],
            &["backup", "restore", "f", "--root-key", "r"],
        ] {
            assert!(access(&cmd(local)).is_none(), "{local:?}");
        }
    }
}
