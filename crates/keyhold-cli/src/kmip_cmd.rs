//! `keyhold kmip`: client certificates, grants and status of the KMIP
//! front-end. Each command is a typed operation of the admin API (see
//! `typed/`); this module defines the commands and prints their answers.

use crate::cmdio::outln;
use crate::output;
use crate::typed::{in_force, listed, view, Typed};
use clap::Subcommand;
use keyhold_server::admin_ops::{
    ClientCertView, GrantView, IssuedCertView, KmipStatusView, PurgedView, RevokedCertsView,
};
use keyhold_server::admin_v1::Route;
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(Subcommand)]
pub(crate) enum KmipCmd {
    /// Client certificates for KMIP clients (mutual TLS).
    #[command(subcommand)]
    ClientCert(ClientCertCmd),
    /// KMIP objects by owner, type and state.
    Status,
    /// Let another client identity use an object ("*": every identity).
    /// An XKS key (`xks:/STORE/KEY-ID`) is granted for reading its
    /// attributes only: XKS keys never leave Keyhold.
    Grant { uid: String, identity: String },
    /// Take a grant back.
    Ungrant { uid: String, identity: String },
    /// Remove what is left of objects destroyed at least this long ago
    /// (servers do it hourly after `kmip.destroyed_retention_days`).
    PurgeDestroyed {
        /// e.g. 30d, 12h, 0s.
        #[arg(long)]
        older_than: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum ClientCertCmd {
    /// Issue a client certificate (subject CN=NAME, the client's identity)
    /// from the data directory's KMIP client CA, made on first use.
    Issue {
        name: String,
        /// Directory for NAME.pem and NAME.key (default: the current one).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Days it is valid (from now).
        #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
        days: u32,
        /// The client's key: ECDSA P-256, or RSA-3072 for clients that
        /// cannot sign with ECDSA.
        #[arg(long, value_enum, default_value = "ecdsa")]
        key_type: keyhold_server::tls::KeyType,
    },
    /// The certificates issued (and revoked): identity, serial, expiry, status.
    List,
    /// Refuse a certificate from the next handshake on, on every server,
    /// and close its open connections: by identity (every certificate
    /// issued for it) or by serial number (also one issued elsewhere).
    Revoke { name_or_serial: String },
}

/// Prints the typed answer of a `keyhold kmip` command (see `typed/`).
pub(crate) fn render(json: bool, t: &Typed, v: Value) -> Result<(), String> {
    match &t.route {
        Route::KmipStatus => print_status(json, &view(v)?),
        Route::ListClientCerts => print_certs(json, &view::<Vec<ClientCertView>>(v)?),
        Route::IssueClientCert => {
            let dir = t.cert_dir.clone().unwrap_or_else(|| PathBuf::from("."));
            write_issued(json, &dir, &view(v)?)?
        }
        Route::RevokeClientCerts(who) => {
            let r: RevokedCertsView = view(v)?;
            in_force(Some(&r.in_force));
            if json {
                output::json(&listed(&r.revoked));
            } else if r.revoked.is_empty() {
                outln!("Nothing to revoke: every certificate for {who:?} was revoked already");
            } else {
                for c in &r.revoked {
                    outln!("Revoked serial {} ({})", c.serial, c.identity);
                }
            }
        }
        Route::SetGrant(..) => print_grant(&view(v)?),
        _ => {
            let p: PurgedView = view(v)?;
            if json {
                output::json(&json!({ "purged": p.purged }));
            } else {
                outln!("{} destroyed object(s) purged", p.purged.len());
            }
        }
    }
    Ok(())
}

/// Writes a certificate just issued to DIR/NAME.pem and DIR/NAME.key (0600).
fn write_issued(json: bool, dir: &std::path::Path, c: &IssuedCertView) -> Result<(), String> {
    let (cert, key) = (
        dir.join(format!("{}.pem", c.identity)),
        dir.join(format!("{}.key", c.identity)),
    );
    crate::cmdio::write_output(&cert, c.certificate_pem.as_bytes(), 0o644)?;
    crate::cmdio::write_output(&key, c.key_pem.as_bytes(), 0o600)?;
    if json {
        output::json(&json!({
            "identity": c.identity,
            "serial": c.serial,
            "not_after": c.not_after,
            "certificate": cert,
            "key": key,
            "client_ca": c.client_ca,
            "server_ca": c.server_ca,
        }));
    } else {
        outln!(
            "Issued a KMIP client certificate for identity {:?} (serial {}, valid until {})",
            c.identity,
            c.serial,
            c.not_after
        );
        outln!("  certificate: {}", cert.display());
        outln!("  key:         {}", key.display());
        outln!("  trust the server with: {}", c.server_ca);
    }
    Ok(())
}

fn print_certs(json: bool, certs: &[ClientCertView]) {
    if json {
        output::json(&listed(certs));
        return;
    }
    let rows: Vec<Vec<String>> = certs
        .iter()
        .map(|r| {
            vec![
                if r.identity.is_empty() {
                    "(issued elsewhere)".into()
                } else {
                    r.identity.clone()
                },
                r.serial.clone(),
                r.not_after.clone().unwrap_or_else(|| "-".into()),
                r.status.clone(),
            ]
        })
        .collect();
    output::table(&["IDENTITY", "SERIAL", "NOT AFTER", "STATUS"], &rows);
}

fn print_grant(g: &GrantView) {
    if !g.changed {
        outln!("nothing to change");
        return;
    }
    in_force(g.in_force.as_ref());
    let (did, uid, who) = (
        if g.granted { "granted" } else { "ungranted" },
        &g.uid,
        &g.identity,
    );
    if g.xks_key {
        outln!(
            "{did} {who:?} {} XKS key {uid} (attributes only: XKS keys are never exportable)",
            if g.granted {
                "the attributes of"
            } else {
                "from"
            }
        );
    } else {
        outln!(
            "{did} {who:?} {} object {uid}",
            if g.granted { "use of" } else { "from" }
        );
    }
}

fn print_status(json: bool, s: &KmipStatusView) {
    if json {
        output::json(&json!({
            "objects": s.objects,
            "client_ca": s.client_ca,
            "by_owner": s.by_owner,
            "listener": s.listener,
        }));
        return;
    }
    match &s.listener {
        Some(l) => print_listener(l),
        None => outln!(
            "Listener:     not in this process (run `keyhold --server URL kmip status` for a running server's)"
        ),
    }
    outln!("KMIP objects: {}", s.objects);
    outln!(
        "Client CA:    {}",
        s.client_ca
            .clone()
            .unwrap_or_else(|| "none yet (keyhold kmip client-cert issue NAME makes one)".into())
    );
    if !s.by_owner.is_empty() {
        let rows: Vec<Vec<String>> = s
            .by_owner
            .iter()
            .map(|c| {
                vec![
                    c.owner.clone(),
                    c.kind.clone(),
                    c.state.clone(),
                    c.count.to_string(),
                ]
            })
            .collect();
        output::table(&["OWNER", "TYPE", "STATE", "COUNT"], &rows);
    }
}

fn print_listener(l: &Value) {
    outln!(
        "Listener:     {} ({} connections open, {} since start, {} refused handshakes, {} messages)",
        l["listen"].as_str().unwrap_or("?"),
        l["connections_open"],
        l["connections_total"],
        l["handshakes_refused"],
        l["messages"]
    );
    let clients: Vec<Vec<String>> = l["clients"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            vec![
                c["identity"].as_str().unwrap_or("").to_owned(),
                c["connections_open"].to_string(),
                c["connections"].to_string(),
                c["messages"].to_string(),
                c["last_seen"].as_str().unwrap_or("").to_owned(),
            ]
        })
        .collect();
    if !clients.is_empty() {
        output::table(
            &["CLIENT", "OPEN", "CONNECTIONS", "MESSAGES", "LAST SEEN"],
            &clients,
        );
    }
}
