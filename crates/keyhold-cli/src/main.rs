//! `keyhold`: the server (`keyhold serve`) and the key custodians' admin
//! commands, which work directly on the data directory. The server notices
//! their changes within a tenth of a second, without a restart.

mod admin_cmd;
mod api;
mod audit_cmd;
mod backup_cmd;
mod cmdio;
mod doctor;
mod kmip_cmd;
mod lifecycle_cmd;
mod local;
mod output;
mod policy_cmd;
mod root_cmd;
mod typed;

use clap::{Parser, Subcommand};
use keyhold_server::data_dir::DataDir;
use keyhold_server::Config;
use secrecy::SecretString;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "keyhold", version, long_version = long_version(), about = "Keyhold: hold your own key")]
pub(crate) struct Cli {
    /// Data directory (holds keyhold.db, root.key, tls/ and keyhold.toml).
    #[arg(
        long,
        global = true,
        env = "KEYHOLD_DATA_DIR",
        default_value = "keyhold-data"
    )]
    data_dir: PathBuf,
    /// Take the data directory from this config file instead.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// File holding the passphrase of a sealed root of trust (else KEYHOLD_PASSPHRASE, else a prompt).
    #[arg(long, global = true)]
    passphrase_file: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    remote: api::RemoteArgs,
    #[command(subcommand)]
    command: Command,
}

/// `--version`: the version, and whether this is a FIPS build whose module
/// reports FIPS mode.
fn long_version() -> String {
    format!(
        "{}\n{}",
        env!("CARGO_PKG_VERSION"),
        keyhold_crypto::fips::status().line()
    )
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Create a data directory: root of trust, database, TLS certificate, config.
    Init {
        /// Seal the root of trust under a passphrase (Argon2id; in FIPS mode
        /// PBKDF2-HMAC-SHA-256).
        #[arg(long)]
        sealed: bool,
        /// Address the server will listen on.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: String,
        /// Extra DNS names / IP addresses for the local server certificate.
        #[arg(long = "tls-name")]
        tls_names: Vec<String>,
        /// Key of the local CA and server certificate: ECDSA P-256, or
        /// RSA-3072 for clients that cannot do ECDSA (some KMIP clients).
        #[arg(long, value_enum, default_value = "ecdsa")]
        tls_key_type: keyhold_server::tls::KeyType,
        #[command(flatten)]
        hsm: local::HsmArgs,
        #[command(flatten)]
        join: local::JoinArgs,
    },
    /// Run the server.
    Serve(ServeArgs),
    /// Health, lockdown, keys by state, live servers.
    Status,
    /// Check, from this machine, what AWS KMS needs of this server: the
    /// certificate (chain, name, expiry), how it listens, the clock, and
    /// every key store called with its credential through the public name.
    Doctor(doctor::DoctorArgs),
    /// The admin API's tokens and roles.
    #[command(subcommand)]
    Admin(admin_cmd::AdminCmd),
    /// Key stores (XKS path prefixes) and their credentials.
    #[command(subcommand)]
    Store(local::StoreCmd),
    /// Keys of a key store.
    #[command(subcommand)]
    Key(local::KeyCmd),
    /// The HSM root of trust (PKCS#11).
    #[command(subcommand)]
    Hsm(local::HsmCmd),
    /// The root of trust of the data directory.
    #[command(subcommand)]
    Root(RootCmd),
    /// Secondary authorization: who may use keys, by the request's metadata.
    #[command(subcommand)]
    Policy(policy_cmd::PolicyCmd),
    /// The tamper-evident audit log: verify, query, export.
    #[command(subcommand)]
    Audit(audit_cmd::AuditCmd),
    /// The KMIP front-end: client certificates, grants, status.
    #[command(subcommand)]
    Kmip(kmip_cmd::KmipCmd),
    /// Encrypted backups of the database, and restores from them.
    #[command(subcommand)]
    Backup(backup_cmd::BackupCmd),
    /// Break glass: refuse every key on every front-end until `keyhold unlock`.
    Lockdown,
    /// Lift a lockdown.
    Unlock,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (keyhold.1, keyhold-store.1, ...) into DIR.
    #[command(hide = true)]
    ManPages { dir: PathBuf },
}

#[derive(Subcommand)]
pub(crate) enum RootCmd {
    /// Move from the software root to a KEK in an HSM, re-wrapping every key.
    /// Stop the server first. Safe to interrupt and run again (without options).
    MigrateToHsm {
        #[command(flatten)]
        hsm: local::HsmArgs,
    },
    /// Replace the root of trust with a new one, online.
    ///
    /// A software root: a new root.key; the old one is kept as
    /// root.key.retired-TIME until destroyed. An HSM root: a new KEK in the
    /// HSM (made now, or with failover tokens provisioned in each with the
    /// HSM's tools and named by --kek-label); the old KEK stays in the HSM,
    /// reserved, until destroyed. Running servers keep serving; every value
    /// is re-wrapped under the new root. Once the old one (and every copy of
    /// it) is destroyed, no older copy of the database, its WAL or a backup
    /// can be unwrapped. Safe to interrupt and run again.
    Rotate {
        /// HSM roots: the new KEK's label (default: the current one's base
        /// and the time, e.g. keyhold-kek-r1764936000).
        #[arg(long)]
        kek_label: Option<String>,
    },
    /// Destroy the roots retired by `rotate` (or `migrate-to-hsm`) here.
    ///
    /// Checks first that every value unwraps under the current root.
    DestroyRetired,
    /// Seal the software root again, with the same passphrase and root, under
    /// another passphrase KDF: `pbkdf2` (PBKDF2-HMAC-SHA-256, approved: what
    /// FIPS mode needs) or `argon2id` (the default build's). Replaces
    /// root.key atomically; copy it to the other nodes and escrow it again.
    Reseal {
        #[arg(long, value_enum)]
        kdf: KdfArg,
    },
}

/// A passphrase KDF, as `root reseal --kdf` names it.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum KdfArg {
    Pbkdf2,
    Argon2id,
}

/// Resolves the passphrase for a sealed root, if one is needed.
pub(crate) fn passphrase(
    cli_file: Option<&PathBuf>,
    needed: bool,
    confirm: bool,
) -> Result<Option<SecretString>, String> {
    if !needed {
        return Ok(None);
    }
    if let Some(f) = cli_file {
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(f)
                .map_err(|e| format!("cannot read passphrase file {}: {e}", f.display()))?,
        );
        return Ok(Some(SecretString::from(
            text.trim_end_matches(['\r', '\n']).to_owned(),
        )));
    }
    if let Ok(p) = std::env::var("KEYHOLD_PASSPHRASE") {
        return Ok(Some(SecretString::from(p)));
    }
    let p = rpassword::prompt_password("Passphrase for the root of trust: ").map_err(|e| {
        format!("a passphrase is needed (KEYHOLD_PASSPHRASE or --passphrase-file): {e}")
    })?;
    if confirm {
        let again =
            rpassword::prompt_password("Repeat the passphrase: ").map_err(|e| e.to_string())?;
        if again != p {
            return Err("the passphrases differ".into());
        }
    }
    Ok(Some(SecretString::from(p)))
}

fn data_dir(cli: &Cli) -> Result<DataDir, String> {
    match &cli.config {
        Some(c) => {
            let c = Config::load(c).map_err(|e| e.to_string())?;
            Ok(DataDir::new(c.data_dir).with_storage(c.storage))
        }
        None => DataDir::load(cli.data_dir.clone()).map_err(|e| e.to_string()),
    }
}

fn init_logging(format: &str) -> tracing_appender::non_blocking::WorkerGuard {
    use tracing_subscriber::EnvFilter;
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let filter = EnvFilter::try_from_env("KEYHOLD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(true);
    if format == "json" {
        b.json().flatten_event(true).init();
    } else {
        b.init();
    }
    guard
}

/// `keyhold serve`: each address overrides the config's.
#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Listen address (overrides the config; port 0 picks a free port).
    #[arg(long)]
    listen: Option<String>,
    /// Serve plain HTTP instead of HTTPS. For local testing only.
    #[arg(long)]
    insecure_http: bool,
    /// Prometheus endpoint address (overrides metrics.listen).
    #[arg(long)]
    metrics_listen: Option<String>,
    /// KMIP listener address (overrides kmip.listen; mutual TLS).
    #[arg(long)]
    kmip_listen: Option<String>,
    /// Admin API address (overrides admin.listen; HTTPS, bearer tokens).
    #[arg(long)]
    admin_listen: Option<String>,
    /// Azure EKM proxy API address (overrides azure_ekm.listen; TLS 1.3,
    /// client certificates as each Azure key store says).
    #[arg(long)]
    azure_listen: Option<String>,
    /// Microsoft DKE listener address (overrides hyok.listen; HTTPS,
    /// Entra ID bearer tokens).
    #[arg(long)]
    hyok_listen: Option<String>,
}

fn serve(cli: &Cli, a: &ServeArgs) -> Result<(), String> {
    let listen = a.listen.as_ref();
    let insecure = a.insecure_http;
    let metrics_listen = a.metrics_listen.as_ref();
    let kmip_listen = a.kmip_listen.as_ref();
    let admin_listen = a.admin_listen.as_ref();
    let azure_listen = a.azure_listen.as_ref();
    let hyok_listen = a.hyok_listen.as_ref();
    let config_path = cli
        .config
        .clone()
        .unwrap_or_else(|| DataDir::new(cli.data_dir.clone()).config());
    let mut config = Config::load(&config_path).map_err(|e| e.to_string())?;
    if let Some(l) = listen {
        config.listen = l.parse().map_err(|e| format!("--listen {l}: {e}"))?;
    }
    if insecure {
        config.insecure_http = true;
    }
    if let Some(m) = metrics_listen {
        config.metrics.listen = Some(
            m.parse()
                .map_err(|e| format!("--metrics-listen {m}: {e}"))?,
        );
    }
    if let Some(k) = kmip_listen {
        config.kmip.listen = Some(k.parse().map_err(|e| format!("--kmip-listen {k}: {e}"))?);
    }
    if let Some(a) = admin_listen {
        config.admin.listen = Some(a.parse().map_err(|e| format!("--admin-listen {a}: {e}"))?);
    }
    if let Some(a) = azure_listen {
        config.azure_ekm.listen = Some(a.parse().map_err(|e| format!("--azure-listen {a}: {e}"))?);
    }
    if let Some(a) = hyok_listen {
        config.hyok.listen = Some(a.parse().map_err(|e| format!("--hyok-listen {a}: {e}"))?);
    }
    config.validate().map_err(|e| e.to_string())?;
    let _guard = init_logging(&config.log_format);
    let dd = DataDir::new(config.data_dir.clone()).with_storage(config.storage.clone());
    let sealed = dd.root_is_sealed().map_err(|e| e.to_string())?;
    let pass = passphrase(cli.passphrase_file.as_ref(), sealed, false)?;
    let service = std::sync::Arc::new(dd.open(pass.as_ref()).map_err(|e| e.to_string())?);
    drop(pass);
    let executor: std::sync::Arc<dyn keyhold_server::admin_api::AdminExecutor> =
        std::sync::Arc::new(api::Executor::new(service.clone(), dd.clone()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("keyhold-worker")
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
        };
        keyhold_server::serve::serve(
            &config,
            service,
            Some(executor),
            |addr, tls| {
                use std::io::Write;
                let scheme = if tls { "https" } else { "http" };
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "keyhold listening on {scheme}://{addr}");
                let _ = out.flush();
            },
            |what, addr| {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                let _ = match what {
                    "metrics" => writeln!(out, "keyhold metrics on http://{addr}/metrics"),
                    other => writeln!(out, "keyhold {other} on {addr}"),
                };
                let _ = out.flush();
            },
            shutdown,
        )
        .await
        .map_err(|e| e.to_string())
    })
}

/// The command words after the global options (what the audit record
/// names).
fn command_words() -> Vec<String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut start = 0;
    while let Some(a) = args.get(start) {
        match a.as_str() {
            "--data-dir" | "--config" | "--passphrase-file" | "--server" | "--server-ca"
            | "--token-file" => start += 2,
            "--json" => start += 1,
            x if [
                "--data-dir=",
                "--config=",
                "--passphrase-file=",
                "--server=",
                "--server-ca=",
                "--token-file=",
            ]
            .iter()
            .any(|p| x.starts_with(p)) =>
            {
                start += 1
            }
            _ => break,
        }
    }
    args[start.min(args.len())..].to_vec()
}

/// What a command line names, as the parser reads it (never guessed from
/// its words): the subcommand path (e.g. `key disable`), and the key store
/// and key it is about, if any.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Target {
    pub path: Vec<String>,
    pub store: Option<String>,
    pub key: Option<String>,
}

/// The [`Target`] of `words` (the command line after `keyhold` and its
/// global options). Words that do not parse name only their leading
/// subcommand words, and no store or key.
pub(crate) fn command_target(words: &[String]) -> Target {
    use clap::CommandFactory;
    let argv = std::iter::once("keyhold".to_owned()).chain(words.iter().cloned());
    match Cli::command().try_get_matches_from(argv) {
        Ok(m) => {
            let mut t = Target::default();
            let mut cur = &m;
            while let Some((name, sub)) = cur.subcommand() {
                t.path.push(name.to_owned());
                cur = sub;
            }
            let value = |ids: &[&str]| {
                ids.iter().find_map(|id| {
                    cur.try_get_one::<String>(id)
                        .ok()
                        .flatten()
                        .map(ToOwned::to_owned)
                })
            };
            t.store = value(&["prefix", "store"]);
            t.key = value(&["key_id", "key"]);
            t
        }
        Err(_) => Target {
            path: words
                .iter()
                .take_while(|w| !w.starts_with('-') && !w.starts_with('/'))
                .take(3)
                .cloned()
                .collect(),
            ..Target::default()
        },
    }
}

/// Runs an admin command on the data directory and records it (who, what,
/// outcome) in the audit log's `admin` chain.
fn audited(cli: &Cli, dd: DataDir) -> Result<(), String> {
    let ctx = cli_ctx(cli, dd.clone())?;
    let r = run_admin(&ctx, &dd, &cli.command);
    if let Err(e) = audit_cmd::record_admin(&ctx, &dd, &command_words(), &r) {
        eprintln!("warning: this command could not be recorded in the audit log: {e}");
        return r.and(Err("the audit record was not written".into()));
    }
    r
}

/// Runs one admin command (locally, or in the server for the admin API).
pub(crate) fn run_admin(
    ctx: &local::CommandEnv,
    dd: &DataDir,
    cmd: &Command,
) -> Result<(), String> {
    // Typed operations run the way the admin API runs them.
    if let Some(t) = typed::of(cmd) {
        return typed::run_local(ctx, &t?);
    }
    match cmd {
        Command::Key(cmd) => local::key(ctx, cmd),
        Command::Admin(cmd) => admin_cmd::run(ctx, cmd),
        Command::Doctor(args) => doctor::run(ctx, dd, args),
        Command::Store(_)
        | Command::Lockdown
        | Command::Unlock
        | Command::Policy(_)
        | Command::Kmip(_)
        | Command::Audit(_)
        | Command::Backup(_)
        | Command::Status => Err(typed::NOT_TYPED.into()),
        Command::Init { .. }
        | Command::Serve(_)
        | Command::Hsm(_)
        | Command::Root(_)
        | Command::Completions { .. }
        | Command::ManPages { .. } => {
            Err("this command does not run on an open data directory".into())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = keyhold_crypto::fips::startup_check() {
        eprintln!("keyhold: {e}");
        return ExitCode::FAILURE;
    }
    if cli.remote.server.is_some() {
        return match api::run_remote(&cli) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("keyhold: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let r = match &cli.command {
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "keyhold",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::ManPages { dir } => man_pages(dir),
        Command::Init {
            sealed,
            listen,
            tls_names,
            tls_key_type,
            hsm,
            join,
        } => data_dir(&cli).and_then(|dd| {
            init(
                &cli,
                dd,
                InitArgs {
                    sealed: *sealed,
                    listen,
                    tls_names,
                    tls_key_type: *tls_key_type,
                    hsm,
                    join,
                },
            )
        }),
        Command::Serve(args) => serve(&cli, args),
        Command::Backup(backup_cmd::BackupCmd::Restore(args)) => {
            data_dir(&cli).and_then(|dd| restore(&cli, dd, args))
        }
        Command::Store(_)
        | Command::Backup(_)
        | Command::Key(_)
        | Command::Lockdown
        | Command::Unlock
        | Command::Policy(_)
        | Command::Kmip(_)
        | Command::Status
        | Command::Doctor(_)
        | Command::Admin(_)
        | Command::Audit(_) => data_dir(&cli).and_then(|dd| audited(&cli, dd)),
        Command::Hsm(cmd) => data_dir(&cli).and_then(|dd| local::hsm(&dd, cmd, cli.json)),
        Command::Root(RootCmd::Rotate { kek_label }) => {
            data_dir(&cli).and_then(|dd| root_cmd::rotate(&cli, dd, kek_label.as_deref()))
        }
        Command::Root(RootCmd::DestroyRetired) => {
            data_dir(&cli).and_then(|dd| root_cmd::destroy_retired(&cli, dd))
        }
        Command::Root(RootCmd::Reseal { kdf }) => {
            data_dir(&cli).and_then(|dd| root_cmd::reseal(&cli, dd, *kdf))
        }
        Command::Root(RootCmd::MigrateToHsm { hsm }) => {
            data_dir(&cli).and_then(|dd| root_cmd::migrate_to_hsm(&cli, dd, hsm))
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyhold: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `keyhold init`'s arguments.
struct InitArgs<'a> {
    sealed: bool,
    listen: &'a str,
    tls_names: &'a [String],
    tls_key_type: keyhold_server::tls::KeyType,
    hsm: &'a local::HsmArgs,
    join: &'a local::JoinArgs,
}

/// `keyhold init`: a new data directory (or a node joining shared storage).
fn init(cli: &Cli, dd: DataDir, a: InitArgs<'_>) -> Result<(), String> {
    let InitArgs {
        sealed,
        listen,
        tls_names,
        tls_key_type,
        hsm,
        join,
    } = a;
    let hsm = hsm.config()?;
    if hsm.is_some() && (sealed || join.root_key.is_some()) {
        return Err(
            "--sealed and --root-key are for the software root; an HSM root is protected by the HSM".into(),
        );
    }
    let dd = dd.with_storage(join.storage());
    let pass = match &join.root_key {
        Some(f) => {
            let sealed = keyhold_root::SoftwareRoot::file_kind(f).map_err(|e| e.to_string())?
                == keyhold_root::RootFileKind::Sealed;
            passphrase(cli.passphrase_file.as_ref(), sealed, false)?
        }
        None => passphrase(cli.passphrase_file.as_ref(), sealed, true)?,
    };
    local::init(
        &dd,
        pass.as_ref(),
        hsm.as_ref(),
        join.root_key.as_deref(),
        listen,
        &local::TlsChoice {
            names: tls_names,
            key_type: tls_key_type,
        },
        cli.json,
    )
}

/// `keyhold backup restore`: a new data directory from a backup; the
/// restore is the new node's first audited command.
fn restore(cli: &Cli, dd: DataDir, args: &backup_cmd::RestoreArgs) -> Result<(), String> {
    let sealed = match &args.join.root_key {
        Some(f) => {
            keyhold_root::SoftwareRoot::file_kind(f).map_err(|e| e.to_string())?
                == keyhold_root::RootFileKind::Sealed
        }
        None => false,
    };
    let pass = passphrase(cli.passphrase_file.as_ref(), sealed, false)?;
    let dd = backup_cmd::restore(dd, args, pass.as_ref(), cli.json)?;
    // The restore is the new node's first audited command.
    let ctx = ctx_with(cli, dd.clone(), pass.as_ref())?;
    audit_cmd::record_admin(&ctx, &dd, &command_words(), &Ok(()))
}

/// Writes `keyhold.1` and a page per subcommand (`keyhold-key-create.1`,
/// ...) into `dir`, from the same definitions as `--help`.
fn man_pages(dir: &std::path::Path) -> Result<(), String> {
    use clap::CommandFactory;
    fn write(dir: &std::path::Path, cmd: &clap::Command, name: &str) -> Result<(), String> {
        let cmd = cmd.clone().name(name.to_owned());
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd.clone())
            .render(&mut page)
            .map_err(|e| e.to_string())?;
        let f = dir.join(format!("{name}.1"));
        std::fs::write(&f, page).map_err(|e| format!("cannot write {}: {e}", f.display()))?;
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            write(dir, sub, &format!("{name}-{}", sub.get_name()))?;
        }
        Ok(())
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    write(dir, &Cli::command(), "keyhold")
}

fn cli_ctx(cli: &Cli, dd: DataDir) -> Result<local::CommandEnv, String> {
    let sealed = if dd.exists() {
        dd.root_is_sealed().map_err(|e| e.to_string())?
    } else {
        false
    };
    let pass = passphrase(cli.passphrase_file.as_ref(), sealed, false)?;
    ctx_with(cli, dd, pass.as_ref())
}

/// Runs a command that works on the root of trust itself (it opens the
/// root with the passphrase), then records it, with its outcome, in the
/// admin chain: the passphrase is asked for once.
fn audited_with_root<T>(
    cli: &Cli,
    dd: DataDir,
    run: impl FnOnce(&DataDir, Option<&SecretString>) -> Result<T, String>,
) -> Result<T, String> {
    let sealed = dd.root_is_sealed().map_err(|e| e.to_string())?;
    let pass = passphrase(cli.passphrase_file.as_ref(), sealed, false)?;
    let r = run(&dd, pass.as_ref());
    let ctx = ctx_with(cli, dd.clone(), pass.as_ref())?;
    audit_cmd::record_admin(
        &ctx,
        &dd,
        &command_words(),
        &r.as_ref().map(drop).map_err(Clone::clone),
    )?;
    r
}

/// The admin context of data directory `dd`, opened with `pass`.
fn ctx_with(
    cli: &Cli,
    dd: DataDir,
    pass: Option<&SecretString>,
) -> Result<local::CommandEnv, String> {
    let service = dd.open(pass).map_err(|e| e.to_string())?;
    Ok(local::CommandEnv {
        service: std::sync::Arc::new(service),
        actor: None,
        json: cli.json,
        data_dir: dd.path.clone(),
        frontend: "admin",
    })
}
