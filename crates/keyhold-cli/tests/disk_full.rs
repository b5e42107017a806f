//! A full disk, for real: data directories on a small tmpfs. Health says
//! UNAVAILABLE (never a 500) while the audit log cannot be written, key
//! use is refused, and both come back by themselves once space is freed;
//! an `init` or `restore` that runs out of space leaves nothing behind.

mod common;

use common::*;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of `size`, unmounted on drop. Needs root (CI runs as root);
/// elsewhere the test says it is skipped.
struct Tmpfs(PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI runs as root and must be able to mount a tmpfs"
            );
            eprintln!("skipped: cannot mount a tmpfs (not root)");
            return None;
        }
        Some(Self(dir.path().to_owned(), dir))
    }

    /// Writes a file until the file system is full.
    fn fill(&self) -> PathBuf {
        let p = self.0.join("filler");
        let mut f = std::fs::File::create(&p).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).and_then(|()| f.flush()).is_ok() {}
        // The last partial block too.
        while f.write_all(&[0u8; 512]).is_ok() {}
        p
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn health(server: &Server, cred: &Cred) -> Resp {
    Curl::new(server, cred).send(
        "/demo/kms/xks/v1/health",
        &json!({"requestMetadata": meta("CreateCustomKeyStore")}).to_string(),
    )
}

fn statuses(r: &Resp) -> Vec<String> {
    r.json()["ekmFleetDetails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["healthStatus"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_full_disk_makes_health_unavailable_and_both_recover_by_themselves() {
    let Some(fs) = Tmpfs::mount("16m") else {
        return;
    };
    let env = Env {
        dir: tempfile::tempdir_in(&fs.0).unwrap(),
        extra_env: vec![],
    };
    env.run_ok(&["init", "--listen", "127.0.0.1:0"]);
    // No low-disk warning on a 16 MiB volume.
    let cfg = read(&env.config()) + "\n[audit]\nmin_free_mb = 0\n";
    std::fs::write(env.config(), cfg).unwrap();
    env.run_ok(&["store", "create", "/demo"]);
    let cred = env.add_credential("/demo");
    env.run_ok(&["key", "create", "/demo", "k"]);
    let server = env.serve(&[]);
    assert_eq!(demo_encrypt(&server, &cred, "k", b"before").status, 200);
    let h = health(&server, &cred);
    assert_eq!(h.status, 200, "{h:?}");
    assert_eq!(statuses(&h), ["ACTIVE"]);

    let filler = fs.fill();
    // The log's last page may still have room for a few records.
    eventually("health UNAVAILABLE on a full disk", || {
        let h = health(&server, &cred);
        assert_eq!(h.status, 200, "{h:?}");
        statuses(&h) == ["UNAVAILABLE"]
    });
    // Refused: no key use goes unrecorded (a smaller record might still
    // fit where the health record did not: then it is served, recorded).
    eventually("Encrypt refused on a full disk", || {
        let r = demo_encrypt(&server, &cred, "k", b"during");
        if r.status == 200 {
            return false;
        }
        r.assert_error(500, "InternalException");
        true
    });

    std::fs::remove_file(filler).unwrap();
    eventually("health back to ACTIVE once space is freed", || {
        let h = health(&server, &cred);
        h.status == 200 && statuses(&h) == ["ACTIVE"]
    });
    assert_eq!(demo_encrypt(&server, &cred, "k", b"after").status, 200);
    server.terminate();
    let v = env.json(&["audit", "verify"]);
    assert_eq!(v["ok"], true, "{v}");
}

fn assert_gone(p: &Path, what: &str, out: &std::process::Output) {
    assert!(!out.status.success(), "{what} succeeded on a full disk");
    assert!(
        !p.exists(),
        "{what} left {} behind: {:?}; it said: {}",
        p.display(),
        std::fs::read_dir(p).map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>()),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn init_and_restore_that_run_out_of_space_leave_nothing_behind() {
    // A backup to restore, made on an ordinary disk.
    let src = Env::new();
    src.run_ok(&["store", "create", "/demo"]);
    for i in 0..50 {
        src.run_ok(&["key", "create", "/demo", &format!("k{i}")]);
    }
    let backup = src.dir.path().join("b.backup");
    src.run_ok(&["backup", "create", backup.to_str().unwrap()]);
    let root = src.data().join("root.key");

    let Some(fs) = Tmpfs::mount("1m") else {
        return;
    };
    // Room for some files, not for a whole data directory.
    let filler = fs.fill();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len.saturating_sub(48 * 1024)).unwrap();
    drop(f);

    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env_remove("KEYHOLD_DATA_DIR")
            .env_remove("KEYHOLD_PASSPHRASE")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let dd = fs.0.join("node");
    let out = run(&[
        "--data-dir",
        dd.to_str().unwrap(),
        "init",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_gone(&dd, "init", &out);
    let out = run(&[
        "--data-dir",
        dd.to_str().unwrap(),
        "backup",
        "restore",
        backup.to_str().unwrap(),
        "--root-key",
        root.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_gone(&dd, "restore", &out);
    // A directory that existed keeps what it had, and nothing more.
    std::fs::create_dir(&dd).unwrap();
    std::fs::write(dd.join("mine.txt"), b"x").unwrap();
    let out = run(&[
        "--data-dir",
        dd.to_str().unwrap(),
        "init",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!out.status.success());
    let left: Vec<_> = std::fs::read_dir(&dd)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, ["mine.txt"]);
}
