//! `keyhold admin token …` (who may use the admin API, with which role) and
//! `keyhold admin whoami`. Tokens and `keyhold status` run as typed
//! operations (see `typed/`).
use crate::cmdio::outln;
use crate::local::CommandEnv;
use crate::output;
use clap::Subcommand;
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

pub(crate) fn run(ctx: &CommandEnv, cmd: &AdminCmd) -> Result<(), String> {
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
        AdminCmd::Token(_) => return Err(crate::typed::NOT_TYPED.into()),
    }
    Ok(())
}
