//! The software root of trust: a 256-bit master key kept in its own file.
//!
//! The file is JSON, mode 0600, in one of two kinds:
//! * `plain`: the master key, base64. Protect it like an HSM backup.
//! * `sealed`: the master key encrypted (AES-256-GCM) under a key derived
//!   from an operator passphrase with Argon2id. Keyhold needs the passphrase
//!   at every start.
//!
//! The key-encryption key is derived from the master key with HKDF-SHA256,
//! so the master key itself never encrypts data.

use crate::{RootInfo, RootOfTrust};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use keyhold_core::{Error, Result};
use keyhold_crypto::{hkdf_sha256, random_secret, sha256, Aes256Key, SecretBytes};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use zeroize::Zeroizing;

const FORMAT: &str = "keyhold-root/1";
/// Format byte of blobs wrapped by the software root.
const WRAP_FORMAT_V1: u8 = 1;

/// Argon2id cost for sealing the root under a passphrase.
const ARGON2_M_KIB: u32 = 65536;
const ARGON2_T: u32 = 3;
const ARGON2_P: u32 = 1;

/// How the root key file protects the master key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootFileKind {
    Plain,
    Sealed,
}

#[derive(Serialize, Deserialize)]
struct RootFile {
    format: String,
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kdf: Option<KdfParams>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed_key: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct KdfParams {
    alg: String,
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
    salt: String,
}

/// A software root of trust: AES-256-GCM under a KEK derived from the master key.
pub struct SoftwareRoot {
    kek: Aes256Key,
    id: String,
}

impl std::fmt::Debug for SoftwareRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftwareRoot")
            .field("id", &self.id)
            .finish()
    }
}

fn root_err(e: impl std::fmt::Display) -> Error {
    Error::RootOfTrust(e.to_string())
}

fn derive_passphrase_key(pass: &SecretString, p: &KdfParams) -> Result<Aes256Key> {
    if p.alg != "argon2id" {
        return Err(root_err(format!("unsupported KDF {:?}", p.alg)));
    }
    let salt = B64.decode(&p.salt).map_err(root_err)?;
    let params =
        argon2::Params::new(p.m_cost_kib, p.t_cost, p.p_cost, Some(32)).map_err(root_err)?;
    let a2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    a2.hash_password_into(pass.expose_secret().as_bytes(), &salt, out.as_mut())
        .map_err(root_err)?;
    Aes256Key::from_bytes(out.as_ref()).map_err(root_err)
}

impl SoftwareRoot {
    /// Generates a new master key and writes it to `path` (which must not
    /// exist), plain or sealed under `passphrase`.
    pub fn create(path: &Path, passphrase: Option<&SecretString>) -> Result<Self> {
        if passphrase.is_some_and(|p| p.expose_secret().chars().count() < 12) {
            return Err(Error::invalid(
                "passphrase",
                "must be at least 12 characters",
            ));
        }
        let master = random_secret(32).map_err(root_err)?;
        Self::write_file(path, &master, passphrase)
    }

    /// Reads the kind of a root file without unsealing it.
    pub fn file_kind(path: &Path) -> Result<RootFileKind> {
        let file = read_root_file(path)?;
        match file.kind.as_str() {
            "plain" => Ok(RootFileKind::Plain),
            "sealed" => Ok(RootFileKind::Sealed),
            k => Err(root_err(format!("unknown root file kind {k:?}"))),
        }
    }

    /// Loads the root from `path`; a sealed root needs its passphrase.
    pub fn load(path: &Path, passphrase: Option<&SecretString>) -> Result<Self> {
        check_private_file(path)?;
        let file = read_root_file(path)?;
        let master = match file.kind.as_str() {
            "plain" => {
                let k = file.key.ok_or_else(|| root_err("root file has no key"))?;
                SecretBytes::new(B64.decode(k.as_bytes()).map_err(root_err)?)
            }
            "sealed" => {
                let pass = passphrase.ok_or_else(|| {
                    root_err("the root of trust is sealed: a passphrase is required (KEYHOLD_PASSPHRASE or --passphrase-file)")
                })?;
                let kdf = file
                    .kdf
                    .ok_or_else(|| root_err("sealed root file has no kdf"))?;
                let sealed = B64
                    .decode(file.sealed_key.unwrap_or_default())
                    .map_err(root_err)?;
                let pk = derive_passphrase_key(pass, &kdf)?;
                pk.open_combined(FORMAT.as_bytes(), &sealed)
                    .map_err(|_| root_err("wrong passphrase, or the root file is damaged"))?
            }
            k => return Err(root_err(format!("unknown root file kind {k:?}"))),
        };
        if master.len() != 32 {
            return Err(root_err("master key must be 256 bits"));
        }
        Self::from_master(&master)
    }

    /// Writes a root file for `master` (a new root that was made elsewhere,
    /// e.g. during a root rotation) to `path`, which must not exist.
    pub fn write_file(
        path: &Path,
        master: &SecretBytes,
        passphrase: Option<&SecretString>,
    ) -> Result<Self> {
        let file = match passphrase {
            None => RootFile {
                format: FORMAT.into(),
                kind: "plain".into(),
                key: Some(B64.encode(master.expose())),
                kdf: None,
                sealed_key: None,
            },
            Some(pass) => {
                let salt = random_secret(16).map_err(root_err)?;
                let kdf = KdfParams {
                    alg: "argon2id".into(),
                    m_cost_kib: ARGON2_M_KIB,
                    t_cost: ARGON2_T,
                    p_cost: ARGON2_P,
                    salt: B64.encode(salt.expose()),
                };
                let pk = derive_passphrase_key(pass, &kdf)?;
                let sealed = pk
                    .seal_combined(FORMAT.as_bytes(), master.expose())
                    .map_err(root_err)?;
                RootFile {
                    format: FORMAT.into(),
                    kind: "sealed".into(),
                    key: None,
                    kdf: Some(kdf),
                    sealed_key: Some(B64.encode(sealed)),
                }
            }
        };
        let json = Zeroizing::new(serde_json::to_vec_pretty(&file).map_err(root_err)?);
        write_private_file(path, &json)?;
        Self::from_master(master)
    }

    /// The root of a 256-bit master key.
    pub fn from_master(master: &SecretBytes) -> Result<Self> {
        if master.len() != 32 {
            return Err(root_err("master key must be 256 bits"));
        }
        let mut kek = Zeroizing::new([0u8; 32]);
        hkdf_sha256(master.expose(), b"keyhold", b"keyhold/kek/v1", kek.as_mut())
            .map_err(root_err)?;
        // A public fingerprint of the master key, safe to show.
        let fp = sha256(&[b"keyhold/root-id/v1", master.expose()]);
        let id = format!("software-root-{}", hex8(&fp));
        Ok(Self {
            kek: Aes256Key::from_bytes(kek.as_ref()).map_err(root_err)?,
            id,
        })
    }
}

fn hex8(b: &[u8]) -> String {
    b[..4].iter().map(|x| format!("{x:02x}")).collect()
}

fn read_root_file(path: &Path) -> Result<RootFile> {
    let bytes = Zeroizing::new(
        std::fs::read(path)
            .map_err(|e| root_err(format!("cannot read root key file {}: {e}", path.display())))?,
    );
    let file: RootFile =
        serde_json::from_slice(&bytes).map_err(|_| root_err("root key file is not valid"))?;
    if file.format != FORMAT {
        return Err(root_err(format!(
            "unsupported root file format {:?}",
            file.format
        )));
    }
    Ok(file)
}

/// Refuses a root file that others can read.
fn check_private_file(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path)
            .map_err(|e| root_err(format!("cannot read root key file {}: {e}", path.display())))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(root_err(format!(
                "root key file {} has mode {mode:o}; it must be 0600",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Writes a new file readable only by its owner, and fsyncs it.
pub(crate) fn write_private_file(path: &Path, data: &[u8]) -> Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| root_err(format!("cannot create {}: {e}", path.display())))?;
    f.write_all(data).map_err(root_err)?;
    f.sync_all().map_err(root_err)?;
    Ok(())
}

impl RootOfTrust for SoftwareRoot {
    fn wrap(&self, context: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let sealed = self
            .kek
            .seal_combined(context, plaintext)
            .map_err(root_err)?;
        let mut out = Vec::with_capacity(1 + sealed.len());
        out.push(WRAP_FORMAT_V1);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn unwrap(&self, context: &[u8], wrapped: &[u8]) -> Result<SecretBytes> {
        match wrapped.split_first() {
            Some((&WRAP_FORMAT_V1, rest)) => self
                .kek
                .open_combined(context, rest)
                .map_err(|_| Error::UnwrapFailed),
            _ => Err(root_err("unknown wrapped-key format")),
        }
    }

    fn info(&self) -> RootInfo {
        RootInfo {
            id: self.id.clone(),
            model: format!(
                "Keyhold software root of trust {} (AES-256-GCM, HKDF-SHA256)",
                env!("CARGO_PKG_VERSION")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_root_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("root.key");
        let r = SoftwareRoot::create(&p, None).unwrap();
        let w = r.wrap(b"ctx", b"secret").unwrap();
        let r2 = SoftwareRoot::load(&p, None).unwrap();
        assert_eq!(r2.unwrap(b"ctx", &w).unwrap().expose(), b"secret");
        assert!(r2.unwrap(b"other", &w).is_err());
        assert_eq!(r.info().id, r2.info().id);
        assert_eq!(SoftwareRoot::file_kind(&p).unwrap(), RootFileKind::Plain);
        // Never overwrite an existing root.
        assert!(SoftwareRoot::create(&p, None).is_err());
    }

    #[test]
    fn sealed_root_needs_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("root.key");
        let pass = SecretString::from("correct horse battery staple");
        let r = SoftwareRoot::create(&p, Some(&pass)).unwrap();
        let w = r.wrap(b"c", b"x").unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(!text.contains("\"key\""));
        assert!(SoftwareRoot::load(&p, None).is_err());
        assert!(SoftwareRoot::load(&p, Some(&SecretString::from("wrong passphrase!"))).is_err());
        let r2 = SoftwareRoot::load(&p, Some(&pass)).unwrap();
        assert_eq!(r2.unwrap(b"c", &w).unwrap().expose(), b"x");
        assert!(
            SoftwareRoot::create(&dir.path().join("b"), Some(&SecretString::from("short")))
                .is_err()
        );
    }

    #[test]
    fn refuses_world_readable_root() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("root.key");
        SoftwareRoot::create(&p, None).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(SoftwareRoot::load(&p, None).is_err());
    }

    #[test]
    fn another_root_cannot_unwrap() {
        let dir = tempfile::tempdir().unwrap();
        let a = SoftwareRoot::create(&dir.path().join("a"), None).unwrap();
        let b = SoftwareRoot::create(&dir.path().join("b"), None).unwrap();
        let w = a.wrap(b"c", b"x").unwrap();
        assert!(b.unwrap(b"c", &w).is_err());
    }
}
