//! `keyhold root …`: rotating the root of trust, destroying retired roots,
//! moving a software root into an HSM. Each runs on the data directory with
//! the root of trust in hand and is audited like every admin command.

use crate::{audited_with_root, local, passphrase, Cli, KdfArg};
use keyhold_root::{PassphraseKdf, SoftwareRoot};
use keyhold_server::data_dir::DataDir;

/// Reports re-wrapping progress at most every two seconds, and at the end.
fn progress() -> impl FnMut(usize, usize) {
    let mut last = std::time::Instant::now();
    move |n, total| {
        if last.elapsed().as_secs() >= 2 || n == total {
            eprintln!("re-wrapped {n}/{total}");
            last = std::time::Instant::now();
        }
    }
}

/// `keyhold root rotate`.
pub(crate) fn rotate(cli: &Cli, dd: DataDir, kek_label: Option<&str>) -> Result<(), String> {
    let r = audited_with_root(cli, dd, |dd, pass| {
        dd.rotate_root(pass, kek_label, progress())
            .map_err(|e| e.to_string())
    })?;
    if cli.json {
        println!(
            "{}",
            serde_json::json!({
                "old_root": r.old_id, "new_root": r.new_id,
                "rewrapped": r.rewrap.rewrapped, "already": r.rewrap.already,
                "retired": r.retired, "servers_confirmed": r.servers,
            })
        );
    } else {
        println!(
            "The root of trust is now {}: {} values re-wrapped ({} were already); {} running server(s) switched without a restart.",
            r.new_id, r.rewrap.rewrapped, r.rewrap.already, r.servers
        );
        match &r.retired {
            Some(f) if f.starts_with("KEK ") => println!(
                "The old {} is kept: {f}. Copy root.pkcs11.toml to every other node's data directory (or set its kek_label and retired_kek_labels); then run `keyhold root destroy-retired`. From then on backups made before this rotation cannot be restored.",
                r.old_id
            ),
            Some(f) => println!(
                "The old root {} is kept as {f}. Escrow the new root.key now; copy it to every other node's data directory; then run `keyhold root destroy-retired` and destroy every other copy of the old root. From then on backups made before this rotation cannot be restored.",
                r.old_id
            ),
            None => {}
        }
    }
    Ok(())
}

/// `keyhold root destroy-retired`.
pub(crate) fn destroy_retired(cli: &Cli, dd: DataDir) -> Result<(), String> {
    let gone = audited_with_root(cli, dd, |dd, pass| {
        dd.destroy_retired_roots(pass).map_err(|e| e.to_string())
    })?;
    for f in &gone {
        println!("destroyed {f}");
    }
    println!(
        "{} retired root(s) destroyed here. Escrowed copies, other nodes' files and backups of the data directory are yours to destroy.",
        gone.len()
    );
    Ok(())
}

/// `keyhold root migrate-to-hsm`.
pub(crate) fn migrate_to_hsm(cli: &Cli, dd: DataDir, hsm: &local::HsmArgs) -> Result<(), String> {
    let cfg = hsm.config()?;
    let sealed = dd.root_is_sealed().map_err(|e| e.to_string())?;
    let pass = passphrase(cli.passphrase_file.as_ref(), sealed, false)?;
    let (report, retired) = dd
        .migrate_to_hsm(cfg.as_ref(), pass.as_ref(), progress())
        .map_err(|e| e.to_string())?;
    println!(
        "The root of trust is now the HSM: {} values re-wrapped ({} were already).",
        report.rewrapped, report.already
    );
    println!(
        "The old software root is kept as {}: destroy it (and backups that hold it) once you are satisfied.",
        retired.display()
    );
    Ok(())
}

/// `keyhold root reseal --kdf …`: the same root, sealed under the same
/// passphrase with another KDF (how a sealed root moves to FIPS mode).
pub(crate) fn reseal(cli: &Cli, dd: DataDir, kdf: KdfArg) -> Result<(), String> {
    let kdf = match kdf {
        KdfArg::Pbkdf2 => PassphraseKdf::Pbkdf2Sha256,
        KdfArg::Argon2id => PassphraseKdf::Argon2id,
    };
    if let (PassphraseKdf::Argon2id, Err(e)) = (
        kdf,
        keyhold_crypto::fips::check(keyhold_crypto::fips::Use::Argon2id),
    ) {
        return Err(e.to_string());
    }
    if !dd.root().exists() || !dd.root_is_sealed().map_err(|e| e.to_string())? {
        return Err(
            "only a software root sealed under a passphrase (keyhold init --sealed) is resealed"
                .into(),
        );
    }
    let before = audited_with_root(cli, dd.clone(), |dd, pass| {
        let pass = pass.ok_or("a passphrase is needed")?;
        SoftwareRoot::reseal(&dd.root(), pass, kdf).map_err(|e| e.to_string())
    })?;
    if cli.json {
        println!("{}", serde_json::json!({"kdf": kdf.name(), "was": before}));
    } else {
        println!(
            "root.key is now sealed with {} (it was {before}); the root and its passphrase are unchanged. Copy it to every other node's data directory and escrow it again.",
            kdf.name()
        );
    }
    Ok(())
}
