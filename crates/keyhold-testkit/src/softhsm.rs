//! SoftHSMv2 for tests: a token directory of its own (SOFTHSM2_CONF), tokens
//! made with softhsm2-util and keys written with pkcs11-tool.

use std::path::{Path, PathBuf};
use std::process::Command;

pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

pub struct SoftHsm {
    pub dir: PathBuf,
    pub conf: PathBuf,
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Default for SoftHsm {
    fn default() -> Self {
        Self::new()
    }
}

impl SoftHsm {
    /// A fresh token directory under a new temporary directory (kept for
    /// the life of the test process: the module may still read it).
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap().keep();
        std::fs::create_dir_all(dir.join("tokens")).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}/tokens\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.display()
            ),
        )
        .unwrap();
        Self { dir, conf }
    }

    /// Initialises a token; returns its directory (what to move away to
    /// make the token disappear).
    pub fn add_token(&self, label: &str, pin: &str) -> PathBuf {
        let before = self.token_dirs();
        run(
            Command::new("softhsm2-util")
                .args([
                    "--init-token",
                    "--free",
                    "--label",
                    label,
                    "--pin",
                    pin,
                    "--so-pin",
                    "8765-so-pin",
                ])
                .env("SOFTHSM2_CONF", &self.conf),
            "softhsm2-util (install softhsm2)",
        );
        self.token_dirs()
            .into_iter()
            .find(|d| !before.contains(d))
            .expect("a new token directory")
    }

    fn token_dirs(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.dir.join("tokens"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }

    /// Writes a sensitive, non-extractable AES key with known bytes (the way
    /// an HSM cluster's members come to hold the same key).
    pub fn write_aes_key(&self, token: &str, pin: &str, label: &str, key: &[u8; 32]) {
        let file = self.dir.join(format!("{label}.bin"));
        std::fs::write(&file, key).unwrap();
        run(
            Command::new("pkcs11-tool")
                .args([
                    "--module",
                    MODULE,
                    "--token-label",
                    token,
                    "--login",
                    "--pin",
                    pin,
                ])
                .args(["--write-object"])
                .arg(&file)
                .args([
                    "--type",
                    "secrkey",
                    "--key-type",
                    "AES:32",
                    "--label",
                    label,
                    "--sensitive",
                    "--usage-decrypt",
                ])
                .env("SOFTHSM2_CONF", &self.conf),
            "pkcs11-tool (install opensc)",
        );
        std::fs::remove_file(&file).unwrap();
    }
}

/// Moves a token's directory out of the token directory (the token is
/// "removed"); moving it back returns it.
pub fn take_away(dir: &Path) -> PathBuf {
    let tokens = dir.parent().expect("token directory");
    let away = tokens
        .with_file_name("away")
        .join(dir.file_name().expect("token directory name"));
    std::fs::create_dir_all(away.parent().unwrap()).unwrap();
    std::fs::rename(dir, &away).unwrap();
    away
}
