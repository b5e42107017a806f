//! The software root of trust: a 256-bit master key kept in its own file.
//!
//! The file is JSON, mode 0600, in one of two kinds:
//! * `plain`: the master key, base64. Protect it like an HSM backup.
//! * `sealed`: the master key encrypted (AES-256-GCM) under a key derived
//!   from an operator passphrase with Argon2id, or in FIPS mode with
//!   PBKDF2-HMAC-SHA-256 (an approved KDF). Keyhold needs the passphrase at
//!   every start. [`SoftwareRoot::reseal`] moves a file from one KDF to the
//!   other.
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
    #[serde(default, skip_serializing_if = "is_zero")]
    m_cost_kib: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    t_cost: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    p_cost: u32,
    /// PBKDF2's iteration count.
    #[serde(default, skip_serializing_if = "is_zero")]
    iterations: u32,
    salt: String,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// How a passphrase becomes the key that seals the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassphraseKdf {
    /// Argon2id (memory-hard; the default build's choice).
    Argon2id,
    /// PBKDF2-HMAC-SHA-256, approved (FIPS mode's choice).
    Pbkdf2Sha256,
}

impl PassphraseKdf {
    /// The KDF new sealed roots get in this build.
    pub fn for_this_build() -> Self {
        if keyhold_crypto::fips::enabled() {
            PassphraseKdf::Pbkdf2Sha256
        } else {
            PassphraseKdf::Argon2id
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PassphraseKdf::Argon2id => "argon2id",
            PassphraseKdf::Pbkdf2Sha256 => "pbkdf2-hmac-sha256",
        }
    }

    fn params(self) -> Result<KdfParams> {
        let salt = B64.encode(random_secret(16).map_err(root_err)?.expose());
        Ok(match self {
            PassphraseKdf::Argon2id => KdfParams {
                alg: self.name().into(),
                m_cost_kib: ARGON2_M_KIB,
                t_cost: ARGON2_T,
                p_cost: ARGON2_P,
                iterations: 0,
                salt,
            },
            PassphraseKdf::Pbkdf2Sha256 => KdfParams {
                alg: self.name().into(),
                m_cost_kib: 0,
                t_cost: 0,
                p_cost: 0,
                iterations: keyhold_crypto::fips::PBKDF2_ITERATIONS,
                salt,
            },
        })
    }
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

/// The key a passphrase gives under `p`. FIPS mode refuses Argon2id unless
/// `migrating` (`keyhold root reseal`, which moves the file to PBKDF2).
fn derive_passphrase_key(pass: &SecretString, p: &KdfParams, migrating: bool) -> Result<Aes256Key> {
    let salt = B64.decode(&p.salt).map_err(root_err)?;
    if p.alg == PassphraseKdf::Pbkdf2Sha256.name() {
        if p.iterations < 100_000 || salt.len() < 16 {
            return Err(root_err(
                "the root file's PBKDF2 parameters are too weak (at least 100000 iterations and a 16-byte salt)",
            ));
        }
        let mut out = Zeroizing::new([0u8; 32]);
        keyhold_crypto::pbkdf2_hmac_sha256(
            pass.expose_secret().as_bytes(),
            &salt,
            p.iterations,
            out.as_mut(),
        )
        .map_err(root_err)?;
        return Aes256Key::from_bytes(out.as_ref()).map_err(root_err);
    }
    if p.alg != PassphraseKdf::Argon2id.name() {
        return Err(root_err(format!("unsupported KDF {:?}", p.alg)));
    }
    if !migrating {
        keyhold_crypto::fips::check(keyhold_crypto::fips::Use::Argon2id).map_err(|e| {
            root_err(format!(
                "the root of trust is sealed with Argon2id; {e}. Run `keyhold root reseal --kdf pbkdf2` (it asks for the passphrase) to move it to PBKDF2-HMAC-SHA-256"
            ))
        })?;
    }
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
        let master = Self::read_master(path, passphrase, false)?;
        Self::from_master(&master)
    }

    /// Seals the root file at `path` again under the same passphrase with
    /// `kdf`, replacing the file atomically (a new file, fsynced, renamed
    /// over the old one): the master key, and so every wrapped value, stays
    /// the same. Returns the KDF the file had.
    pub fn reseal(path: &Path, passphrase: &SecretString, kdf: PassphraseKdf) -> Result<String> {
        let before = read_root_file(path)?
            .kdf
            .map(|k| k.alg)
            .ok_or_else(|| root_err("the root of trust is not sealed: nothing to reseal"))?;
        let master = Self::read_master(path, Some(passphrase), true)?;
        let id = Self::from_master(&master)?.id;
        let tmp = path.with_extension("key.reseal");
        let _ = std::fs::remove_file(&tmp);
        let json = Self::file_json(&master, Some(passphrase), kdf)?;
        write_private_file(&tmp, &json)?;
        if Self::read_master(&tmp, Some(passphrase), true)
            .and_then(|m| Self::from_master(&m))
            .map(|r| r.id)
            .ok()
            != Some(id)
        {
            let _ = std::fs::remove_file(&tmp);
            return Err(root_err(
                "the resealed root file did not open to the same root",
            ));
        }
        std::fs::rename(&tmp, path)
            .map_err(|e| root_err(format!("cannot replace {}: {e}", path.display())))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(before)
    }

    /// The KDF of a sealed root file (`None` for a plain one).
    pub fn file_kdf(path: &Path) -> Result<Option<String>> {
        Ok(read_root_file(path)?.kdf.map(|k| k.alg))
    }

    fn read_master(
        path: &Path,
        passphrase: Option<&SecretString>,
        migrating: bool,
    ) -> Result<SecretBytes> {
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
                let pk = derive_passphrase_key(pass, &kdf, migrating)?;
                pk.open_combined(FORMAT.as_bytes(), &sealed)
                    .map_err(|_| root_err("wrong passphrase, or the root file is damaged"))?
            }
            k => return Err(root_err(format!("unknown root file kind {k:?}"))),
        };
        if master.len() != 32 {
            return Err(root_err("master key must be 256 bits"));
        }
        Ok(master)
    }

    /// Writes a root file for `master` (a new root that was made elsewhere,
    /// e.g. during a root rotation) to `path`, which must not exist.
    pub fn write_file(
        path: &Path,
        master: &SecretBytes,
        passphrase: Option<&SecretString>,
    ) -> Result<Self> {
        let json = Self::file_json(master, passphrase, PassphraseKdf::for_this_build())?;
        write_private_file(path, &json)?;
        Self::from_master(master)
    }

    /// The root file for `master`, sealed under `passphrase` with `kdf`.
    fn file_json(
        master: &SecretBytes,
        passphrase: Option<&SecretString>,
        kdf: PassphraseKdf,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let file = match passphrase {
            None => RootFile {
                format: FORMAT.into(),
                kind: "plain".into(),
                key: Some(B64.encode(master.expose())),
                kdf: None,
                sealed_key: None,
            },
            Some(pass) => {
                let kdf = kdf.params()?;
                let pk = derive_passphrase_key(pass, &kdf, true)?;
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
        Ok(Zeroizing::new(
            serde_json::to_vec_pretty(&file).map_err(root_err)?,
        ))
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

    /// A sealed root moves between Argon2id and PBKDF2-HMAC-SHA-256 with
    /// the same passphrase and stays the same root; a wrong passphrase
    /// changes nothing. A new sealed root uses this build's KDF.
    #[test]
    fn reseal_moves_between_kdfs_and_keeps_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("root.key");
        let pass = SecretString::from("correct horse battery".to_owned());
        let root = SoftwareRoot::create(&p, Some(&pass)).unwrap();
        let id = root.info().id;
        let wrapped = root.wrap(b"ctx", b"value").unwrap();
        assert_eq!(
            SoftwareRoot::file_kdf(&p).unwrap().as_deref(),
            Some(PassphraseKdf::for_this_build().name())
        );
        let wrong = SecretString::from("wrong passphrase!!".to_owned());
        assert!(SoftwareRoot::reseal(&p, &wrong, PassphraseKdf::Pbkdf2Sha256).is_err());
        for kdf in [
            PassphraseKdf::Pbkdf2Sha256,
            PassphraseKdf::Argon2id,
            PassphraseKdf::Pbkdf2Sha256,
        ] {
            SoftwareRoot::reseal(&p, &pass, kdf).unwrap();
            assert_eq!(
                SoftwareRoot::file_kdf(&p).unwrap().as_deref(),
                Some(kdf.name())
            );
            let text = std::fs::read_to_string(&p).unwrap();
            assert_eq!(
                text.contains("iterations"),
                kdf == PassphraseKdf::Pbkdf2Sha256
            );
            if kdf == PassphraseKdf::Argon2id && keyhold_crypto::fips::enabled() {
                let e = SoftwareRoot::load(&p, Some(&pass)).unwrap_err().to_string();
                assert!(e.contains("root reseal --kdf pbkdf2"), "{e}");
                continue;
            }
            let again = SoftwareRoot::load(&p, Some(&pass)).unwrap();
            assert_eq!(again.info().id, id);
            assert_eq!(again.unwrap(b"ctx", &wrapped).unwrap().expose(), b"value");
        }
        assert!(!dir.path().join("root.key.reseal").exists());
        let plain = dir.path().join("plain.key");
        SoftwareRoot::create(&plain, None).unwrap();
        assert!(SoftwareRoot::reseal(&plain, &pass, PassphraseKdf::Pbkdf2Sha256).is_err());
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
