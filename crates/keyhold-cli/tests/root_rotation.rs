//! Rotating the software root of trust online: a server under load keeps
//! answering every request while every value is re-wrapped; afterwards the
//! old root opens nothing of the data directory, a backup made before
//! cannot be restored with the new root, and the retired root is destroyed
//! on a custodian's command.

mod common;

use common::*;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

#[test]
fn the_root_rotates_online_and_old_copies_become_useless() {
    let env = Env::new();
    env.run_ok(&["store", "create", "/demo"]);
    let cred = Arc::new(env.add_credential("/demo"));
    for k in ["k1", "k2", "k3"] {
        env.run_ok(&["key", "create", "/demo", k]);
    }
    env.run_ok(&["store", "credential", "add", "/demo"]);
    let before = env.dir.path().join("before.backup");
    env.run_ok(&["backup", "create", before.to_str().unwrap()]);
    let old_root = env.dir.path().join("old-root-copy.key");
    std::fs::copy(env.data().join("root.key"), &old_root).unwrap();

    let server = env.serve(&[]);
    let made = demo_encrypt(&server, &cred, "k1", b"before the rotation");
    assert_eq!(made.status, 200);
    let made = made.json();

    it_rotates_under_traffic(&env, &server, &cred);
    everything_is_served_after(&env, server, &cred, &made);
    old_copies_open_nothing(&env, &old_root, &before);
    the_retired_root_is_destroyed_on_command(&env, &cred, &made);
}

/// Traffic on every key, with cache misses (new keys made meanwhile),
/// for the whole rotation.
fn it_rotates_under_traffic(env: &Env, server: &Server, cred: &Arc<Cred>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, bad) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (s, cred, stop, ok, bad) = (
            server.detached(),
            cred.clone(),
            stop.clone(),
            ok.clone(),
            bad.clone(),
        );
        std::thread::spawn(move || {
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) || i < 30 {
                let k = ["k1", "k2", "k3"][i % 3];
                let r = demo_encrypt(&s, &cred, k, b"during");
                if r.status == 200 {
                    ok.fetch_add(1, Ordering::SeqCst);
                } else {
                    eprintln!("failed during the rotation: {r:?}");
                    bad.fetch_add(1, Ordering::SeqCst);
                }
                i += 1;
            }
        })
    };
    let out = env.cmd(&["root", "rotate"]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("1 running server(s) switched"), "{said}");
    env.run_ok(&["key", "create", "/demo", "after"]);
    stop.store(true, Ordering::SeqCst);
    load.join().unwrap();
    assert_eq!(
        bad.load(Ordering::SeqCst),
        0,
        "requests failed during the rotation"
    );
    assert!(ok.load(Ordering::SeqCst) >= 30);
}

/// The running server, and a restarted one, use everything.
fn everything_is_served_after(env: &Env, server: Server, cred: &Cred, made: &serde_json::Value) {
    assert_eq!(demo_decrypt(&server, cred, "k1", made).status, 200);
    assert_eq!(demo_encrypt(&server, cred, "after", b"x").status, 200);
    server.terminate();
    let server = env.serve(&[]);
    let r = demo_decrypt(&server, cred, "k1", made);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(demo_encrypt(&server, cred, "after", b"x").status, 200);
    drop(server);
    env.run_ok(&["audit", "verify"]);
}

/// The old root opens nothing of the data directory now.
fn old_copies_open_nothing(env: &Env, old_root: &Path, before: &Path) {
    let copy = tempfile::tempdir().unwrap();
    let d2 = copy.path().join("data");
    let cp = std::process::Command::new("cp")
        .args(["-a", env.data().to_str().unwrap(), d2.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(cp.success());
    std::fs::copy(old_root, d2.join("root.key")).unwrap();
    let o = std::process::Command::new(BIN)
        .args(["--data-dir", d2.to_str().unwrap(), "key", "list", "/demo"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not the one this database was created with"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // A backup made before the rotation: not with the new root.
    let restored = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(BIN)
        .args([
            "--data-dir",
            restored.path().join("r").to_str().unwrap(),
            "backup",
            "restore",
            before.to_str().unwrap(),
            "--root-key",
            env.data().join("root.key").to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        !o.status.success(),
        "an old backup restored with the new root"
    );
}

/// The retired root, destroyed on command; the directory still works.
fn the_retired_root_is_destroyed_on_command(env: &Env, cred: &Cred, made: &serde_json::Value) {
    let retired: Vec<_> = std::fs::read_dir(env.data())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("root.key.retired-")
        })
        .collect();
    assert_eq!(retired.len(), 1);
    let said = env.run_ok(&["root", "destroy-retired"]);
    assert!(said.contains("1 retired root(s) destroyed"), "{said}");
    assert!(!retired[0].path().exists());
    env.run_ok(&["key", "list", "/demo"]);
    let q = env.json(&["audit", "query", "--operation", "root rotate"]);
    assert_eq!(q.as_array().unwrap().len(), 1, "{q}");
    // Running it again with nothing under way rotates again (a new root).
    env.run_ok(&["root", "rotate"]);
    env.run_ok(&["root", "destroy-retired"]);
    let server = env.serve(&[]);
    assert_eq!(demo_decrypt(&server, cred, "k1", made).status, 200);
}
