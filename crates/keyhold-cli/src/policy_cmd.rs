//! `keyhold policy …`: secondary authorization rules per key store or key.
//! Each command is a typed operation of the admin API (see `typed/`).

use clap::Subcommand;

#[derive(clap::Args, Debug)]
pub(crate) struct ScopeArgs {
    /// The key store (XKS path prefix).
    #[arg(long)]
    pub store: String,
    /// One key of the store (default: the whole store).
    #[arg(long)]
    pub key: Option<String>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum PolicyCmd {
    /// Set a policy from a TOML file (validated first; applied to running
    /// servers before the command returns).
    Set {
        #[command(flatten)]
        scope: ScopeArgs,
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// Check a policy file without applying it.
    Validate {
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// Print a scope's policy.
    Show {
        #[command(flatten)]
        scope: ScopeArgs,
    },
    /// Remove a scope's policy (its requests are then allowed, unless the store's policy says otherwise).
    Remove {
        #[command(flatten)]
        scope: ScopeArgs,
    },
    /// List the scopes that have a policy.
    List,
    /// Evaluate a sample request against the store's and key's policies.
    Test {
        #[command(flatten)]
        scope: ScopeArgs,
        #[arg(long)]
        principal: Option<String>,
        #[arg(long)]
        kms_key_arn: Option<String>,
        #[arg(long)]
        kms_operation: Option<String>,
        #[arg(long)]
        via_service: Option<String>,
        #[arg(long)]
        source_vpc: Option<String>,
        #[arg(long)]
        source_vpce: Option<String>,
        /// A group or app role of the caller (repeat as needed).
        #[arg(long)]
        group: Vec<String>,
        /// The resource (Google's resource name).
        #[arg(long)]
        resource: Option<String>,
    },
}
