//! `keyhold kmip`: client certificates, grants and status of the KMIP
//! front-end.

use crate::admin::{e, write_file, Ctx};
use crate::cmdio::outln;
use crate::output;
use clap::Subcommand;
use keyhold_core::{AttrValue, ObjectAttr};
use keyhold_server::config::KMIP_CA_DIR;
use keyhold_server::tls::StoredCa;
use keyhold_service::client_certs::ClientCertRecord;
use keyhold_service::objects::GRANT_ATTR;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The common name of the CA `client-cert issue` keeps in the data dir.
const CA_NAME: &str = "Keyhold KMIP client CA";

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

pub(crate) fn run(ctx: &Ctx, cmd: &KmipCmd) -> Result<(), String> {
    match cmd {
        KmipCmd::ClientCert(ClientCertCmd::Issue {
            name,
            out,
            days,
            key_type,
        }) => issue(ctx, name, out.as_ref(), *days, *key_type),
        KmipCmd::ClientCert(ClientCertCmd::List) => list_certs(ctx),
        KmipCmd::ClientCert(ClientCertCmd::Revoke { name_or_serial }) => {
            revoke_certs(ctx, name_or_serial)
        }
        KmipCmd::Status => status(ctx),
        KmipCmd::Grant { uid, identity } => grant(ctx, uid, identity, true),
        KmipCmd::Ungrant { uid, identity } => grant(ctx, uid, identity, false),
        KmipCmd::PurgeDestroyed { older_than } => {
            let secs = keyhold_core::time::parse_duration(older_than).ok_or_else(|| {
                format!("{older_than:?} is not a duration like 90d, 12h or 3600s")
            })?;
            let purged = ctx.service.purge_destroyed_objects(secs).map_err(e)?;
            if ctx.json {
                crate::output::json(&serde_json::json!({ "purged": purged }));
            } else {
                outln!("{} destroyed object(s) purged", purged.len());
            }
            Ok(())
        }
    }
}

fn issue(
    ctx: &Ctx,
    name: &str,
    out: Option<&PathBuf>,
    days: u32,
    key_type: keyhold_server::tls::KeyType,
) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control() || c == '/') {
        return Err("the client name must be 1 to 64 printable characters without '/'".into());
    }
    let dir = ctx.data_dir.join(KMIP_CA_DIR);
    keyhold_server::data_dir::create_private_dir(&dir).map_err(e)?;
    let key_path = dir.join("ca.key");
    let ca = if key_path.exists() {
        let pem = zeroize::Zeroizing::new(
            std::fs::read_to_string(&key_path)
                .map_err(|err| format!("cannot read {}: {err}", key_path.display()))?,
        );
        StoredCa::load(CA_NAME, &pem).map_err(e)?
    } else {
        let (ca, cert_pem, key_pem) = StoredCa::create(CA_NAME).map_err(e)?;
        let key_pem = zeroize::Zeroizing::new(key_pem);
        write_file(&key_path, key_pem.as_bytes(), 0o600)?;
        write_file(&dir.join("ca.pem"), cert_pem.as_bytes(), 0o644)?;
        ca
    };
    let (issued, serial) = ca.issue_client_for(name, days, key_type).map_err(e)?;
    let now = keyhold_core::now();
    let not_after = now + i64::from(days) * 86_400;
    ctx.service
        .record_client_cert(&ClientCertRecord {
            name: name.to_owned(),
            serial: serial.clone(),
            not_after,
            issued_at: now,
            revoked_at: None,
        })
        .map_err(e)?;
    let out = out.cloned().unwrap_or_else(|| PathBuf::from("."));
    let (cert, key) = (
        out.join(format!("{name}.pem")),
        out.join(format!("{name}.key")),
    );
    crate::cmdio::write_output(&cert, issued.cert_pem.as_bytes(), 0o644)?;
    let key_pem = zeroize::Zeroizing::new(issued.key_pem);
    crate::cmdio::write_output(&key, key_pem.as_bytes(), 0o600)?;
    let server_ca = ctx.data_dir.join("tls").join("ca.pem");
    if ctx.json {
        output::json(&json!({
            "identity": name,
            "serial": serial,
            "not_after": output::time(not_after),
            "certificate": cert,
            "key": key,
            "client_ca": dir.join("ca.pem"),
            "server_ca": server_ca,
        }));
    } else {
        outln!(
            "Issued a KMIP client certificate for identity {name:?} (serial {serial}, valid until {})",
            output::time(not_after)
        );
        outln!("  certificate: {}", cert.display());
        outln!("  key:         {}", key.display());
        outln!("  trust the server with: {}", server_ca.display());
    }
    Ok(())
}

fn cert_json(r: &ClientCertRecord, now: i64) -> serde_json::Value {
    json!({
        "identity": r.name,
        "serial": r.serial,
        "issued_at": output::time(r.issued_at),
        "not_after": (r.not_after != 0).then(|| output::time(r.not_after)),
        "revoked_at": r.revoked_at.map(output::time),
        "status": r.status(now),
    })
}

fn list_certs(ctx: &Ctx) -> Result<(), String> {
    let now = keyhold_core::now();
    let certs = ctx.service.client_certs().map_err(e)?;
    if ctx.json {
        output::json(&json!(certs
            .iter()
            .map(|r| cert_json(r, now))
            .collect::<Vec<_>>()));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = certs
        .iter()
        .map(|r| {
            vec![
                if r.name.is_empty() {
                    "(issued elsewhere)".into()
                } else {
                    r.name.clone()
                },
                r.serial.clone(),
                if r.not_after == 0 {
                    "-".into()
                } else {
                    output::time(r.not_after)
                },
                r.status(now).to_owned(),
            ]
        })
        .collect();
    output::table(&["IDENTITY", "SERIAL", "NOT AFTER", "STATUS"], &rows);
    Ok(())
}

fn revoke_certs(ctx: &Ctx, who: &str) -> Result<(), String> {
    let revoked = ctx.service.revoke_client_certs(who).map_err(e)?;
    // In force on every server (refused handshakes, closed connections)
    // before this returns.
    crate::lifecycle_cmd::in_force(ctx)?;
    let now = keyhold_core::now();
    if ctx.json {
        output::json(&json!(revoked
            .iter()
            .map(|r| cert_json(r, now))
            .collect::<Vec<_>>()));
    } else if revoked.is_empty() {
        outln!("Nothing to revoke: every certificate for {who:?} was revoked already");
    } else {
        for r in &revoked {
            outln!("Revoked serial {} ({})", r.serial, r.name);
        }
    }
    Ok(())
}

fn status(ctx: &Ctx) -> Result<(), String> {
    let objects = ctx.service.list_objects().map_err(e)?;
    let mut counts: BTreeMap<(String, &'static str, &'static str), u64> = BTreeMap::new();
    for o in &objects {
        let ty = match o.object_type {
            2 => "SymmetricKey",
            7 => "SecretData",
            _ => "Other",
        };
        *counts
            .entry((o.owner.clone(), ty, o.state.name()))
            .or_default() += 1;
    }
    let ca = ctx.data_dir.join(KMIP_CA_DIR).join("ca.pem");
    // The listener's own counters exist only inside a running server: this
    // command shows them when it runs there (through the admin API).
    let live = ctx.service.live_status("kmip");
    if ctx.json {
        let rows: Vec<_> = counts
            .iter()
            .map(|((owner, ty, state), n)| json!({"owner": owner, "type": ty, "state": state, "count": n}))
            .collect();
        output::json(&json!({
            "objects": objects.len(),
            "client_ca": ca.exists().then_some(ca),
            "by_owner": rows,
            "listener": live,
        }));
        return Ok(());
    }
    match &live {
        Some(l) => {
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
                output::table(&["CLIENT", "OPEN", "CONNECTIONS", "MESSAGES", "LAST SEEN"], &clients);
            }
        }
        None => outln!(
            "Listener:     not in this process (run `keyhold --server URL kmip status` for a running server's)"
        ),
    }
    outln!("KMIP objects: {}", objects.len());
    outln!(
        "Client CA:    {}",
        if ca.exists() {
            ca.display().to_string()
        } else {
            "none yet (keyhold kmip client-cert issue NAME makes one)".into()
        }
    );
    if !counts.is_empty() {
        let rows: Vec<Vec<String>> = counts
            .iter()
            .map(|((owner, ty, state), n)| {
                vec![
                    owner.clone(),
                    ty.to_string(),
                    state.to_string(),
                    n.to_string(),
                ]
            })
            .collect();
        output::table(&["OWNER", "TYPE", "STATE", "COUNT"], &rows);
    }
    Ok(())
}

fn grant(ctx: &Ctx, uid: &str, identity: &str, add: bool) -> Result<(), String> {
    if keyhold_kmip::xks_keys::is_xks_uid(uid) {
        let changed =
            keyhold_kmip::xks_keys::set_grant(&ctx.service, uid, identity, add).map_err(e)?;
        if !changed {
            outln!("nothing to change");
            return Ok(());
        }
        crate::lifecycle_cmd::in_force(ctx)?;
        outln!(
            "{} {identity:?} {} XKS key {uid} (attributes only: XKS keys are never exportable)",
            if add { "granted" } else { "ungranted" },
            if add { "the attributes of" } else { "from" }
        );
        return Ok(());
    }
    for _ in 0..5 {
        let mut o = ctx.service.object(uid).map_err(e)?;
        let has = o
            .attrs
            .iter()
            .any(|a| a.name == GRANT_ATTR && a.value == AttrValue::Text(identity.into()));
        if has == add {
            outln!("nothing to change");
            return Ok(());
        }
        if add {
            o.attrs.push(ObjectAttr {
                name: GRANT_ATTR.into(),
                value: AttrValue::Text(identity.into()),
            });
        } else {
            o.attrs
                .retain(|a| !(a.name == GRANT_ATTR && a.value == AttrValue::Text(identity.into())));
        }
        match ctx.service.update_object(&o) {
            Ok(()) => {
                // Running servers cache objects: wait until they see it.
                crate::lifecycle_cmd::in_force(ctx)?;
                outln!(
                    "{} {identity:?} {} object {uid}",
                    if add { "granted" } else { "ungranted" },
                    if add { "use of" } else { "from" }
                );
                return Ok(());
            }
            Err(keyhold_core::Error::Conflict(_)) => continue,
            Err(err) => return Err(e(err)),
        }
    }
    Err("the object kept changing; try again".into())
}
