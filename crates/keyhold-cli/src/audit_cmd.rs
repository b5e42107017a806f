//! `keyhold audit verify|query|export`, and the record every admin command
//! leaves in the `admin` chain.

use crate::cmdio::{errln, outln};
use crate::local::{e, CommandEnv};
use crate::output;
use crate::typed::{view, Typed};
use clap::Subcommand;
use keyhold_audit::Record;
use keyhold_server::admin_ops::{AuditExportView, AuditVerifyView};
use keyhold_server::admin_v1::Route;
use keyhold_server::DataDir;
use serde_json::json;
use std::io::Write;

#[derive(clap::Args, Debug, Default)]
pub(crate) struct FilterArgs {
    #[arg(long)]
    store: Option<String>,
    #[arg(long)]
    key: Option<String>,
    /// Who made the call: the awsPrincipalArn of an XKS call, the client
    /// identity (certificate common name) of a KMIP one.
    #[arg(long)]
    principal: Option<String>,
    /// Encrypt, Decrypt, GetKeyMetadata, GetHealthStatus, a KMIP operation
    /// (Create, Get, ...), or an admin command.
    #[arg(long)]
    operation: Option<String>,
    /// OK, an error name, or `error` for every failure.
    #[arg(long)]
    result: Option<String>,
    #[arg(long)]
    kms_request_id: Option<String>,
    /// xks, kmip, azure-ekm, ms-dke, google-cse, admin or console.
    #[arg(long)]
    frontend: Option<String>,
    /// From this time (RFC 3339 UTC).
    #[arg(long)]
    since: Option<String>,
    /// Before this time (RFC 3339 UTC).
    #[arg(long)]
    until: Option<String>,
}

impl FilterArgs {
    /// The filter as the typed API takes it.
    fn body(&self) -> serde_json::Value {
        json!({
            "store": self.store,
            "key": self.key,
            "principal": self.principal,
            "operation": self.operation,
            "result": self.result,
            "kms_request_id": self.kms_request_id,
            "frontend": self.frontend,
            "since": self.since,
            "until": self.until,
        })
    }
}

#[derive(Subcommand, Debug)]
pub(crate) enum AuditCmd {
    /// Check every chain's MACs and order, and compare with the checkpoints
    /// kept in the key database (and in --checkpoint-file). Exit status 1
    /// with the places found when anything was altered, removed or reordered.
    Verify {
        /// A checkpoint file kept elsewhere (audit.checkpoint_file).
        #[arg(long)]
        checkpoint_file: Option<std::path::PathBuf>,
    },
    /// Show the records that match, oldest first.
    Query {
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many (the newest).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Write matching records as JSON lines (for a SIEM), MACs included.
    Export {
        #[command(flatten)]
        filter: FilterArgs,
        /// Output file (default: standard output).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
}

/// The typed operation of an audit command.
pub(crate) fn typed(cmd: &AuditCmd) -> Result<Typed, String> {
    Ok(match cmd {
        AuditCmd::Verify { checkpoint_file } => {
            let checkpoints = match checkpoint_file {
                Some(f) => {
                    Some(String::from_utf8_lossy(&crate::cmdio::read_input(f)?).into_owned())
                }
                None => None,
            };
            Typed::with(Route::AuditVerify, json!({ "checkpoints": checkpoints }))
        }
        AuditCmd::Query { filter, limit } => {
            let mut body = filter.body();
            body["limit"] = json!(limit);
            Typed::with(Route::AuditQuery, body)
        }
        AuditCmd::Export { filter, out } => {
            if let Some(o) = out.as_ref().filter(|o| o.exists()) {
                return Err(format!("cannot create {}: it exists", o.display()));
            }
            let mut t = Typed::with(Route::AuditExport, filter.body());
            t.out = out.clone();
            t
        }
    })
}

/// Prints the typed answer of an audit command.
pub(crate) fn render(json: bool, t: &Typed, v: serde_json::Value) -> Result<(), String> {
    match &t.route {
        Route::AuditVerify => print_verify(json, &view(v)?),
        Route::AuditQuery => print_query(json, v),
        _ => write_export(t.out.as_deref(), &view(v)?),
    }
}

fn print_verify(json: bool, r: &AuditVerifyView) -> Result<(), String> {
    if json {
        output::json(&serde_json::to_value(r).unwrap_or_default());
    } else {
        for c in &r.chains {
            outln!(
                "chain {}: {} records ({}..{})",
                c.chain,
                c.records,
                c.first_seq,
                c.last_seq
            );
        }
        outln!("{} checkpoints compared", r.checkpoints_checked);
        for w in &r.warnings {
            outln!("WARNING: {w}");
        }
        for p in &r.problems {
            outln!("PROBLEM: {p}");
        }
        outln!(
            "{}",
            if r.ok && r.warnings.is_empty() {
                "audit log verified: intact"
            } else if r.ok {
                "audit log verified: intact, but see the warnings: records may be missing after an unclean stop"
            } else {
                "audit log verification FAILED"
            }
        );
    }
    if !r.ok {
        return Err(format!("{} problem(s) found", r.problems.len()));
    }
    Ok(())
}

fn print_query(json: bool, v: serde_json::Value) -> Result<(), String> {
    let records: Vec<serde_json::Value> = view(v)?;
    let forged = records.iter().filter(|r| r["verified"] == false).count();
    if json {
        output::json(&json!(records));
    } else {
        let rows: Vec<Vec<String>> = records
            .iter()
            .map(|r| {
                let s = |k: &str| r[k].as_str().unwrap_or("").to_owned();
                let n = |k: &str| r[k].as_u64().map(|v| v.to_string()).unwrap_or_default();
                let op = if r["verified"] == false {
                    format!("NOT VERIFIED: {}", s("operation"))
                } else {
                    s("operation")
                };
                vec![
                    output::time(r["ts_ms"].as_i64().unwrap_or(0) / 1000),
                    s("chain"),
                    n("seq"),
                    op,
                    s("result"),
                    s("store"),
                    s("key"),
                    n("key_version"),
                    s("actor"),
                    s("principal"),
                    // AWS's request id, or another cloud's (Azure's
                    // correlation id, a token id).
                    if s("kms_request_id").is_empty() {
                        s("request_id")
                    } else {
                        s("kms_request_id")
                    },
                ]
            })
            .collect();
        output::table(
            &[
                "TIME",
                "CHAIN",
                "SEQ",
                "OPERATION",
                "RESULT",
                "STORE",
                "KEY",
                "VER",
                "ACTOR",
                "PRINCIPAL",
                "REQUEST ID",
            ],
            &rows,
        );
    }
    if forged > 0 {
        errln!(
            "warning: {forged} record(s) above do not verify (altered or forged): keyhold audit verify says where"
        );
    }
    Ok(())
}

fn write_export(out: Option<&std::path::Path>, x: &AuditExportView) -> Result<(), String> {
    let mut text = String::new();
    for l in &x.lines {
        text.push_str(l);
        text.push('\n');
    }
    match out {
        Some(p) => {
            crate::cmdio::write_output(p, text.as_bytes(), 0o600)?;
            errln!("exported {} records", x.lines.len());
        }
        None => {
            let mut w = std::io::stdout().lock();
            w.write_all(text.as_bytes()).map_err(e)?;
            w.flush().map_err(e)?;
        }
    }
    if x.left_out > 0 {
        return Err(format!(
            "{} record(s) that do not verify (altered or forged) were left out of the export: keyhold audit verify says where",
            x.left_out
        ));
    }
    Ok(())
}

/// Who runs this command: the invoking user (through sudo when used).
/// The local user running the CLI (who holds the root of trust).
pub(crate) fn local_actor() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_default();
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .unwrap_or_default();
    format!("{user} (uid {uid})")
}

/// Records an admin command in the `admin` chain: the command words (never
/// secrets: the CLI takes none on its command line), the store and key it
/// names, and its outcome.
pub(crate) fn record_admin(
    ctx: &CommandEnv,
    dd: &DataDir,
    words: &[String],
    outcome: &Result<(), String>,
) -> Result<(), String> {
    let sec = dd.audit_section()?;
    let node = dd.node_name(ctx.service.shared_storage()).map_err(e)?;
    let mut w =
        keyhold_server::audit::admin_writer(&ctx.service, &sec, node.as_deref()).map_err(e)?;
    let target = crate::command_target(words);
    let (store, key) = (target.store, target.key);
    let rec = Record {
        ts_ms: keyhold_audit::now_ms(),
        frontend: ctx.frontend.into(),
        operation: target.path.join(" "),
        result: match outcome {
            Ok(()) => "OK",
            Err(err) if err.starts_with("access denied") => "AccessDenied",
            Err(_) => "ERROR",
        }
        .into(),
        store,
        key,
        actor: Some(ctx.actor.clone().unwrap_or_else(local_actor)),
        detail: Some(match outcome {
            Ok(()) => words.join(" "),
            Err(err) => format!("{}: {err}", words.join(" ")),
        }),
        ..Record::default()
    };
    w.append(std::slice::from_ref(&rec))?;
    // The record is in the log: a checkpoint that cannot reach the
    // database (a failover under way) does not make the command fail.
    if let Err(why) = w.close() {
        eprintln!(
            "warning: the command's audit record is written, but its checkpoint is not: {why}"
        );
    }
    // On shared storage the record is copied at once: the other nodes see
    // it even when no server runs on this one.
    if let Some(n) = node {
        keyhold_server::audit::ship_once(
            &*ctx.service.audit_store(),
            &sec.dir,
            &n,
            &mut Default::default(),
        )
        .map_err(e)?;
    }
    Ok(())
}
