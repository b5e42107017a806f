//! `keyhold backup create|verify|restore`: encrypted, authenticated
//! snapshots of the database (either backend), taken online.

use crate::cmdio::outln;
use crate::local::{e, HsmArgs, JoinArgs};
use crate::output;
use crate::typed::{view, Typed};
use clap::Subcommand;
use keyhold_root::{RootOfTrust, SoftwareRoot};
use keyhold_server::admin_ops::{BackupMade, BackupView};
use keyhold_server::admin_v1::Route;
use keyhold_server::data_dir::DataDir;
use keyhold_service::backup;
use secrecy::SecretString;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub(crate) enum BackupCmd {
    /// Write a consistent, encrypted snapshot of keys, stores, credentials,
    /// policies, KMIP objects and audit checkpoints. Traffic goes on.
    Create { file: PathBuf },
    /// Check a backup with this data directory's root of trust.
    Verify { file: PathBuf },
    /// Make a new data directory (and database) from a backup.
    Restore(Box<RestoreArgs>),
}

/// `keyhold backup restore`: a new data directory from a backup.
#[derive(clap::Args)]
pub(crate) struct RestoreArgs {
    pub file: PathBuf,
    #[command(flatten)]
    pub hsm: HsmArgs,
    #[command(flatten)]
    pub join: JoinArgs,
    /// Address the restored server will listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: String,
}

fn summary(rows: &BTreeMap<String, usize>) -> String {
    let n = |t: &str| rows.get(t).copied().unwrap_or(0);
    format!(
        "{} key store(s), {} key(s) with {} version(s), {} credential(s), {} policy(ies), {} KMIP object(s), {} audit checkpoint(s)",
        n("stores"),
        n("keys"),
        n("key_versions"),
        n("credentials"),
        n("policies"),
        n("objects"),
        n("audit_checkpoints")
    )
}

fn print(
    json: bool,
    what: &str,
    file: &Path,
    created_ms: i64,
    backend: &str,
    rows: &BTreeMap<String, usize>,
) {
    if json {
        output::json(&json!({
            "file": file,
            "created_ms": created_ms,
            "backend": backend,
            "rows": rows,
        }));
    } else {
        outln!("{what} {}: {}", file.display(), summary(rows));
    }
}

/// The typed operation of `backup create` and `backup verify` (restore
/// makes a data directory, so it is not one).
pub(crate) fn typed(cmd: &BackupCmd) -> Option<Result<Typed, String>> {
    Some(match cmd {
        BackupCmd::Create { file } => {
            if file.exists() {
                return Some(Err(format!("cannot create {}: it exists", file.display())));
            }
            let mut t = Typed::new(Route::CreateBackup);
            t.out = Some(file.clone());
            Ok(t)
        }
        BackupCmd::Verify { file } => crate::cmdio::read_input(file).map(|bytes| {
            let mut t = Typed::with(
                Route::VerifyBackup,
                json!({ "data": keyhold_server::admin_api::b64(&bytes) }),
            );
            t.out = Some(file.clone());
            t
        }),
        BackupCmd::Restore(_) => return None,
    })
}

/// Writes a backup just made (next to its final name, then renamed into
/// place, so an interrupted write never looks complete), or says what a
/// verified one holds.
pub(crate) fn render(json: bool, t: &Typed, v: serde_json::Value) -> Result<(), String> {
    let file = t.out.clone().unwrap_or_default();
    if t.route == Route::CreateBackup {
        let made: BackupMade = view(v)?;
        let bytes = zeroize::Zeroizing::new(
            keyhold_server::admin_api::unb64(&made.data)
                .map_err(|_| "the backup came back damaged (not base64)".to_owned())?,
        );
        let tmp = file.with_extension("partial");
        crate::local::write_file(&tmp, &bytes, 0o600)?;
        std::fs::rename(&tmp, &file)
            .map_err(|err| format!("cannot write {}: {err}", file.display()))?;
        let b = &made.backup;
        print(json, "wrote", &file, b.created_ms, &b.backend, &b.rows);
    } else {
        let b: BackupView = view(v)?;
        print(json, "verified", &file, b.created_ms, &b.backend, &b.rows);
    }
    Ok(())
}

/// Restores into a data directory that does not exist yet: checks the
/// backup with the root of trust it was made under, creates the directory
/// with that root (and the storage named), then loads the snapshot.
pub(crate) fn restore(
    dd: DataDir,
    args: &RestoreArgs,
    pass: Option<&SecretString>,
    as_json: bool,
) -> Result<DataDir, String> {
    if dd.exists() {
        return Err(format!(
            "{} is already initialised: restore into a new data directory",
            dd.path.display()
        ));
    }
    let hsm = args.hsm.config()?;
    let (h, mut snap) = open_backup_file(args, hsm.as_ref(), pass)?;
    // The audit checkpoints describe the old node's logs, which the new
    // node does not have: it starts chains of its own. The heads are kept
    // beside it, for checking the old logs later.
    let heads = snap.take("audit_checkpoints");
    let dd = dd.with_storage(args.join.storage());
    let made = crate::local::NewDir::begin(&dd.path);
    crate::local::create_node(
        &dd,
        pass,
        hsm.as_ref(),
        args.join.root_key.as_deref(),
        &args.listen,
        &crate::local::TlsChoice::default(),
    )?;
    dd.open_storage()
        .and_then(|s| s.restore(&snap))
        .map_err(|err| format!("the restore failed (nothing is left of it): {err}"))?;
    // Opening checks that the restored database belongs to this root.
    let svc = dd.open(pass).map_err(e)?;
    // A key destroyed, disabled or scheduled for destruction after the
    // backup was made comes back as it was then: nothing restored serves
    // until a custodian has re-applied what changed since and lifted the
    // lockdown (`keyhold unlock`, an audited decision).
    svc.set_lockdown(true).map_err(e)?;
    let keys = restored_keys(&svc).map_err(e)?;
    let objects = svc.list_objects().map_err(e)?;
    if let Some(t) = heads {
        let f = dd.path.join("audit-heads-from-backup.json");
        let text = serde_json::to_string_pretty(&t).map_err(e)?;
        crate::local::write_file(&f, text.as_bytes(), 0o600)?;
    }
    made.keep();
    print_restored(args, &h, &keys, &objects, as_json);
    Ok(dd)
}

/// Opens the backup file with the root of trust it was made under.
fn open_backup_file(
    args: &RestoreArgs,
    hsm: Option<&keyhold_root::Pkcs11Config>,
    pass: Option<&SecretString>,
) -> Result<(backup::BackupHeader, backup::Snapshot), String> {
    let root: Box<dyn RootOfTrust> = match (hsm, &args.join.root_key) {
        (Some(cfg), None) => Box::new(keyhold_root::Pkcs11Root::open(cfg.clone(), false).map_err(e)?),
        (None, Some(f)) => Box::new(SoftwareRoot::load(f, pass).map_err(e)?),
        _ => {
            return Err(
                "name the root of trust the backup was made under: --root-key FILE, or the --hsm-* options"
                    .into(),
            )
        }
    };
    let bytes = crate::cmdio::read_input(&args.file)?;
    backup::open(&bytes, &*root).map_err(e)
}

/// Says what was restored, and that the node is in lockdown.
fn print_restored(
    args: &RestoreArgs,
    h: &backup::BackupHeader,
    keys: &[(String, String, String)],
    objects: &[keyhold_core::ManagedObject],
    as_json: bool,
) {
    let created = keyhold_core::time::format_rfc3339(h.created_ms / 1000);
    if as_json {
        output::json(&json!({
            "file": args.file,
            "created_ms": h.created_ms,
            "backend": h.backend,
            "rows": h.rows,
            "lockdown": true,
            "keys": keys.iter().map(|(store, id, state)| json!({
                "store": store, "key_id": id, "state": state,
            })).collect::<Vec<_>>(),
            "kmip_objects": objects.iter().map(|o| json!({
                "uid": o.uid, "state": o.state.name(),
            })).collect::<Vec<_>>(),
        }));
    } else {
        outln!("restored {}: {}", args.file.display(), summary(&h.rows));
        for (store, id, state) in keys {
            outln!("  key {store} {id}: {state}");
        }
        for o in objects {
            outln!("  KMIP object {}: {}", o.uid, o.state.name());
        }
        outln!(
            "The restored node is in LOCKDOWN: every key is refused on every front-end.\n\
             Keys destroyed, disabled or scheduled for destruction after the backup ({created})\n\
             are back as they were then. Re-apply those changes (the old node's `keyhold audit\n\
             export` lists them), then lift the lockdown with `keyhold unlock`."
        );
    }
}

/// Every restored key: store, id, and its state as the backup had it.
fn restored_keys(
    svc: &keyhold_service::KeyService,
) -> keyhold_core::Result<Vec<(String, String, String)>> {
    let mut out = Vec::new();
    for store in svc.list_stores()? {
        let mut after: Option<keyhold_core::KeyId> = None;
        loop {
            let page = svc.list_keys(&store.prefix, after.as_ref(), 1000)?;
            for k in &page {
                let mut state = format!(
                    "{} {}",
                    k.lifecycle.state_at(keyhold_core::now()).as_str(),
                    k.status.as_str()
                );
                if let Some(t) = k.lifecycle.destroy_at {
                    state.push_str(&format!(
                        ", destruction scheduled for {}",
                        keyhold_core::time::format_rfc3339(t)
                    ));
                }
                out.push((
                    store.prefix.display().to_owned(),
                    k.id.as_str().to_owned(),
                    state,
                ));
            }
            match page.last() {
                Some(k) if page.len() == 1000 => after = Some(k.id.clone()),
                _ => break,
            }
        }
    }
    Ok(out)
}
