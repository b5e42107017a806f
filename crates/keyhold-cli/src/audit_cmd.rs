//! `keyhold audit verify|query|export`, and the record every admin command
//! leaves in the `admin` chain.

use crate::admin::{e, Ctx};
use crate::cmdio::{errln, outln};
use crate::output;
use clap::Subcommand;
use keyhold_audit::{Filter, Record};
use keyhold_core::time::parse_rfc3339;
use keyhold_server::config::AuditSection;
use keyhold_server::{Config, DataDir};
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
    /// xks, kmip or admin.
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
    fn filter(&self) -> Result<Filter, String> {
        let t = |s: &Option<String>| -> Result<Option<i64>, String> {
            s.as_deref()
                .map(|v| {
                    parse_rfc3339(v)
                        .map(|t| t * 1000)
                        .ok_or_else(|| format!("{v:?} is not an RFC 3339 UTC time"))
                })
                .transpose()
        };
        Ok(Filter {
            store: self.store.clone(),
            key: self.key.clone(),
            principal: self.principal.clone(),
            operation: self.operation.clone(),
            result: self.result.clone(),
            kms_request_id: self.kms_request_id.clone(),
            frontend: self.frontend.clone(),
            since_ms: t(&self.since)?,
            until_ms: t(&self.until)?,
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

/// How far a node's shipped copy may lag behind its checkpoints.
const SHIPPING_GRACE_MS: i64 = 30_000;

/// The chains every node copied to shared storage (none on SQLite).
fn shipped(ctx: &Ctx) -> Result<Vec<(String, Vec<String>)>, String> {
    if ctx.service.shared_storage() {
        ctx.service.audit_store().shipped_audit().map_err(e)
    } else {
        Ok(Vec::new())
    }
}

/// The data directory's audit settings (from its keyhold.toml when there).
pub(crate) fn section(dd: &DataDir) -> Result<AuditSection, String> {
    let mut s = if dd.config().exists() {
        Config::load(&dd.config()).map_err(e)?.audit
    } else {
        AuditSection::default()
    };
    if s.dir.is_relative() {
        s.dir = dd.path.join(&s.dir);
    }
    if let Some(p) = &mut s.checkpoint_file {
        if p.is_relative() {
            *p = dd.path.join(&*p);
        }
    }
    Ok(s)
}

pub(crate) fn run(ctx: &Ctx, dd: &DataDir, cmd: &AuditCmd) -> Result<(), String> {
    let sec = section(dd)?;
    match cmd {
        AuditCmd::Verify { checkpoint_file } => {
            let key = ctx.service.audit_key().map_err(e)?;
            let mut cps = ctx.service.audit_store().audit_checkpoints().map_err(e)?;
            if let Some(f) = checkpoint_file {
                let text = crate::cmdio::read_input(f)?;
                cps.extend(keyhold_server::audit::parse_checkpoints(
                    &String::from_utf8_lossy(&text),
                ));
            }
            if let Some(f) = sec.checkpoint_file.as_ref().filter(|f| f.exists()) {
                cps.extend(keyhold_server::audit::read_checkpoint_file(f).map_err(e)?);
            }
            // Other nodes' chains are checked from the copies they shipped
            // to the shared database (or from a shared audit directory).
            // Their newest checkpoints may be ahead of what they shipped
            // (copies go out every second): those are left out.
            let node = dd.node_name(ctx.service.shared_storage()).map_err(e)?;
            let shipped = shipped(ctx)?;
            let recent = keyhold_audit::now_ms() - SHIPPING_GRACE_MS;
            cps.retain(|c| {
                keyhold_server::audit::is_local_chain(&c.chain, node.as_deref())
                    || sec.dir.join(&c.chain).is_dir()
                    || (shipped.iter().any(|(n, _)| *n == c.chain) && c.ts_ms < recent)
            });
            let r = keyhold_audit::verify_with(&sec.dir, &shipped, &key, &cps);
            if ctx.json {
                output::json(&json!({
                    "ok": r.ok(),
                    "chains": r.chains.iter().map(|(c, n, first, last)| json!({
                        "chain": c, "records": n, "first_seq": first, "last_seq": last,
                    })).collect::<Vec<_>>(),
                    "checkpoints_checked": r.checkpoints_checked,
                    "problems": r.problems,
                    "warnings": r.warnings,
                }));
            } else {
                for (c, n, first, last) in &r.chains {
                    outln!("chain {c}: {n} records ({first}..{last})");
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
                    if r.ok() && r.warnings.is_empty() {
                        "audit log verified: intact"
                    } else if r.ok() {
                        "audit log verified: intact, but see the warnings: records may be missing after an unclean stop"
                    } else {
                        "audit log verification FAILED"
                    }
                );
            }
            if !r.ok() {
                return Err(format!("{} problem(s) found", r.problems.len()));
            }
        }
        AuditCmd::Query { filter, limit } => {
            let key = ctx.service.audit_key().map_err(e)?;
            let checked =
                keyhold_audit::query(&sec.dir, &shipped(ctx)?, &key, &filter.filter()?, *limit);
            let forged = checked.iter().filter(|(_, ok)| !ok).count();
            if ctx.json {
                // Every record says whether its MAC holds.
                output::json(&json!(checked
                    .iter()
                    .map(|(r, ok)| {
                        let mut v = json!(r);
                        v["verified"] = json!(ok);
                        v
                    })
                    .collect::<Vec<_>>()));
            } else {
                let recs: Vec<&keyhold_audit::Record> = checked.iter().map(|(r, _)| r).collect();
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
                        "KMS REQUEST ID",
                    ],
                    &recs
                        .iter()
                        .map(|r| {
                            let o = |v: &Option<String>| v.clone().unwrap_or_default();
                            vec![
                                output::time(r.ts_ms / 1000),
                                r.chain.clone(),
                                r.seq.to_string(),
                                r.operation.clone(),
                                r.result.clone(),
                                o(&r.store),
                                o(&r.key),
                                r.key_version.map(|v| v.to_string()).unwrap_or_default(),
                                o(&r.actor),
                                o(&r.principal),
                                o(&r.kms_request_id),
                            ]
                        })
                        .zip(&checked)
                        .map(|(mut row, (_, ok))| {
                            if !ok {
                                row[3] = format!("NOT VERIFIED: {}", row[3]);
                            }
                            row
                        })
                        .collect::<Vec<_>>(),
                );
            }
            if forged > 0 {
                errln!(
                    "warning: {forged} record(s) above do not verify (altered or forged): keyhold audit verify says where"
                );
            }
        }
        AuditCmd::Export { filter, out } => {
            let f = filter.filter()?;
            // For the admin API the export is collected, then sent back.
            let mut collected = Vec::new();
            let mut w: Box<dyn Write> = match out {
                Some(_) if crate::cmdio::is_remote() => Box::new(&mut collected),
                Some(p) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(p).map_err(|err| format!("{}: {err}", p.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(crate::cmdio::Stdout)),
            };
            let key = ctx.service.audit_key().map_err(e)?;
            let mut n = 0u64;
            let mut left_out = 0u64;
            let mut failed = None;
            keyhold_audit::read_all(&sec.dir, &shipped(ctx)?, &key, |r, line, authentic| {
                if failed.is_none() && f.matches(r) {
                    // A record whose MAC does not hold is not exported as
                    // if it were genuine.
                    if !authentic {
                        left_out += 1;
                        return;
                    }
                    n += 1;
                    if let Err(err) = writeln!(w, "{line}") {
                        failed = Some(err);
                    }
                }
            });
            if let Some(err) = failed {
                return Err(err.to_string());
            }
            w.flush().map_err(e)?;
            drop(w);
            if let Some(p) = out.as_ref().filter(|_| crate::cmdio::is_remote()) {
                crate::cmdio::write_output(p, &collected, 0o600)?;
            }
            if out.is_some() {
                errln!("exported {n} records");
            }
            if left_out > 0 {
                return Err(format!(
                    "{left_out} record(s) that do not verify (altered or forged) were left out of the export: keyhold audit verify says where"
                ));
            }
        }
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
    ctx: &Ctx,
    dd: &DataDir,
    words: &[String],
    outcome: &Result<(), String>,
) -> Result<(), String> {
    let sec = section(dd)?;
    let node = dd.node_name(ctx.service.shared_storage()).map_err(e)?;
    let mut w =
        keyhold_server::audit::admin_writer(&ctx.service, &sec, node.as_deref()).map_err(e)?;
    let target = crate::command_target(words);
    let (store, key) = (target.store, target.key);
    let rec = Record {
        ts_ms: keyhold_audit::now_ms(),
        frontend: "admin".into(),
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
