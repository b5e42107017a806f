//! The root of trust in an HSM: SoftHSMv2 with a fresh token per test, the
//! real `keyhold` binary, and curl --aws-sigv4.

mod common;

use common::hsm::*;
use common::*;
use keyhold_testkit::softhsm::MODULE;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;

#[test]
fn xks_with_an_hsm_root_of_trust() {
    let h = hsm_env();
    let env = &h.env;
    assert!(
        !env.data().join("root.key").exists(),
        "no software root next to an HSM root"
    );
    let desc = read(&env.data().join("root.pkcs11.toml"));
    assert!(
        desc.contains("keyhold-kek") && !desc.contains(PIN),
        "{desc}"
    );

    let st = env.json(&["hsm", "status"]);
    assert_eq!(st["wrap_round_trip"], "ok");
    assert_eq!(st["token_label"], "keyhold");
    assert_eq!(st["tokens"][0]["sessions_max"], 4);
    assert_eq!(st["tokens"][0]["health"], "ACTIVE");
    let keys = env.json(&["hsm", "list-keys"]);
    assert!(keys.as_array().unwrap().contains(&json!("keyhold-kek")));

    env.run_ok(&["store", "create", "/demo"]);
    let cred = env.add_credential("/demo");
    env.run_ok(&["key", "create", "/demo", "k1"]);
    let server = env.serve(&[]);

    let r = Curl::new(&server, &cred).send("/demo/kms/xks/v1/health", HEALTH);
    assert_eq!(r.status, 200, "{r:?}");
    let fleet = &r.json()["ekmFleetDetails"][0];
    assert_eq!(fleet["healthStatus"], "ACTIVE");
    assert!(
        fleet["model"].as_str().unwrap().contains("SoftHSM"),
        "{fleet}"
    );

    let body = json!({
        "requestMetadata": meta("Encrypt"),
        "plaintext": b64(b"data key under an HSM root"),
        "additionalAuthenticatedData": b64(b"aad"),
        "encryptionAlgorithm": "AES_GCM",
        "ciphertextDataIntegrityValueAlgorithm": "SHA_256",
    });
    let enc = Curl::new(&server, &cred).send("/demo/kms/xks/v1/keys/k1/encrypt", &body.to_string());
    assert_eq!(enc.status, 200, "{enc:?}");
    let enc = enc.json();
    let dec_body = json!({
        "requestMetadata": meta("Decrypt"),
        "ciphertext": enc["ciphertext"], "ciphertextMetadata": enc["ciphertextMetadata"],
        "initializationVector": enc["initializationVector"], "authenticationTag": enc["authenticationTag"],
        "additionalAuthenticatedData": b64(b"aad"), "encryptionAlgorithm": "AES_GCM",
    })
    .to_string();
    drop(server);

    // After a rotation and a restart, version 1 is unwrapped by the HSM
    // again, on a cache miss of a non-current version.
    env.run_ok(&["key", "rotate", "/demo", "k1"]);
    let server = env.serve(&[]);
    let dec = Curl::new(&server, &cred).send("/demo/kms/xks/v1/keys/k1/decrypt", &dec_body);
    assert_eq!(dec.status, 200, "{dec:?}");
    assert_eq!(
        unb64(dec.json()["plaintext"].as_str().unwrap()),
        b"data key under an HSM root"
    );
    drop(server);

    // A wrong PIN is a clear error at start-up, and the PIN is never printed.
    std::fs::write(&h.pin_file, "0000-wrong-pin\n").unwrap();
    let out = env.cmd(&["serve"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("PIN"), "{err}");
    assert!(!err.contains("0000-wrong-pin"), "{err}");
}

#[test]
fn the_database_is_useless_without_its_hsm() {
    let h = hsm_env();
    h.env.run_ok(&["store", "create", "/demo"]);
    h.env.run_ok(&["key", "create", "/demo", "k1"]);
    // Another token with the same label and PIN, and its own KEK.
    let other = softhsm_token("keyhold");
    let other_conf = &other.conf;
    let with_other_hsm = |args: &[&str]| {
        Command::new(BIN)
            .arg("--data-dir")
            .arg(h.env.data())
            .args(args)
            .env("SOFTHSM2_CONF", other_conf)
            .output()
            .unwrap()
    };
    let out = with_other_hsm(&["hsm", "init"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = with_other_hsm(&["key", "list", "/demo"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not the one"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn moving_to_the_hsm_survives_kill_9_at_any_point() {
    let mut env = Env::new();
    env.run_ok(&["store", "create", "/demo"]);
    let cred = env.add_credential("/demo");
    env.run_ok(&["key", "create", "/demo", "k", "--count", "1500"]);
    env.run_ok(&["key", "create", "/demo", "rot"]);
    env.run_ok(&["key", "rotate", "/demo", "rot"]);
    let sample = ["k-000001", "k-000750", "k-001500", "rot"];
    let encrypted = encrypt_samples(&env, &cred, &sample);
    let hsm = softhsm_token("keyhold");
    let conf = &hsm.conf;
    let pin_file = hsm.dir.join("pin");
    std::fs::write(&pin_file, PIN).unwrap();
    env.extra_env
        .push(("SOFTHSM2_CONF".into(), conf.display().to_string()));
    make_the_kek_beforehand(conf, &pin_file);
    let token = SavedToken::save(&hsm.dir, conf);
    let migrate_args = [
        "root",
        "migrate-to-hsm",
        "--hsm-module",
        MODULE,
        "--hsm-token-label",
        "keyhold",
        "--hsm-pin-file",
        pin_file.to_str().unwrap(),
    ];
    let kills = kill_the_migration_at_random(&env, &migrate_args, &token);
    eprintln!("migration killed {kills} times");
    if env.data().join("root.key").exists() {
        let out = if env.data().join("root.pkcs11.toml.pending").exists()
            || env.data().join("root.pkcs11.toml").exists()
        {
            env.run_ok(&["root", "migrate-to-hsm"])
        } else {
            env.run_ok(&migrate_args)
        };
        assert!(out.contains("now the HSM"), "{out}");
    }
    assert!(!env.data().join("root.key").exists());
    assert!(env.data().join("root.pkcs11.toml").exists());
    assert!(!env.data().join("root.pkcs11.toml.pending").exists());
    assert_eq!(env.json(&["hsm", "status"])["wrap_round_trip"], "ok");

    decrypts_every_sample(&env, &cred, &encrypted);
    let listed = env.json(&["key", "list", "/demo", "--limit", "5000"]);
    assert_eq!(listed.as_array().unwrap().len(), 1501);
}

/// XKS Encrypt of each sample key's own id; the ciphertexts.
fn encrypt_samples<'a>(
    env: &Env,
    cred: &Cred,
    sample: &[&'a str],
) -> Vec<(&'a str, serde_json::Value)> {
    let server = env.serve(&[]);
    let mut encrypted = Vec::new();
    for &id in sample {
        let body = json!({
            "requestMetadata": meta("Encrypt"), "plaintext": b64(id.as_bytes()),
            "encryptionAlgorithm": "AES_GCM",
        });
        let r = Curl::new(&server, cred).send(
            &format!("/demo/kms/xks/v1/keys/{id}/encrypt"),
            &body.to_string(),
        );
        assert_eq!(r.status, 200, "{r:?}");
        encrypted.push((id, r.json()));
    }
    encrypted
}

/// Create the KEK beforehand (through a throwaway data directory on the
/// same token): SoftHSM's file store is not itself crash-safe while it
/// writes a new object, and this test is about Keyhold's re-wrap, which
/// writes nothing to the token.
fn make_the_kek_beforehand(conf: &Path, pin_file: &Path) {
    let scratch = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(scratch.path().join("d"))
        .args([
            "init",
            "--hsm-module",
            MODULE,
            "--hsm-token-label",
            "keyhold",
            "--hsm-pin-file",
        ])
        .arg(pin_file)
        .env("SOFTHSM2_CONF", conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It says what it did: a key in the token, no root.key.
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("\"keyhold-kek\" in HSM token \"keyhold\"")
            && said.contains("root.pkcs11.toml")
            && !said.contains("root.key"),
        "{said}"
    );
}

/// SoftHSM rewrites its token file on every login, in place: a kill
/// during that write leaves SoftHSM unable to read its own token (a real
/// HSM is transactional). A migration writes no object to the token,
/// so the token as it is now is the token as it must stay: it is put
/// back whenever a kill broke SoftHSM's file, and only then.
struct SavedToken {
    tokens: PathBuf,
    saved: PathBuf,
    conf: PathBuf,
}

impl SavedToken {
    fn save(dir: &Path, conf: &Path) -> Self {
        let (tokens, saved) = (dir.join("tokens"), dir.join("tokens.saved"));
        copy_dir(&tokens, &saved);
        Self {
            tokens,
            saved,
            conf: conf.to_owned(),
        }
    }

    /// Puts the token back if SoftHSM can no longer read it.
    fn mend(&self) {
        let slots = Command::new("softhsm2-util")
            .arg("--show-slots")
            .env("SOFTHSM2_CONF", &self.conf)
            .output()
            .unwrap();
        let listed = String::from_utf8_lossy(&slots.stdout);
        if !listed
            .lines()
            .any(|l| l.trim() == "Label:            keyhold")
        {
            eprintln!("SoftHSM's token file was cut by the kill: put back");
            std::fs::remove_dir_all(&self.tokens).unwrap();
            copy_dir(&self.saved, &self.tokens);
        }
    }
}

/// Kills the migration at pseudo-random points, several times; how many
/// runs were killed.
fn kill_the_migration_at_random(env: &Env, migrate_args: &[&str], token: &SavedToken) -> u32 {
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let mut kills = 0;
    for round in 0..4 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = 15 + (seed >> 33) % 400;
        // Re-run without options once a migration is under way (its
        // settings are in the pending file); with them until then (a kill
        // can come before the pending file is written).
        let pending = env.data().join("root.pkcs11.toml.pending").exists();
        let args: Vec<&str> = if round == 0 || !pending {
            migrate_args.to_vec()
        } else {
            vec!["root", "migrate-to-hsm"]
        };
        let mut child = env
            .cmd(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
        token.mend();
        if env.data().join("root.pkcs11.toml.pending").exists() {
            // An interrupted move is refused, not half-used.
            let out = env
                .cmd(&["key", "list", "/demo", "--limit", "1"])
                .output()
                .unwrap();
            assert!(!out.status.success());
            assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted"));
        }
    }
    kills
}

/// Every sample's ciphertext decrypts to its id on a server of the moved
/// data directory.
fn decrypts_every_sample(env: &Env, cred: &Cred, encrypted: &[(&str, serde_json::Value)]) {
    let server = env.serve(&[]);
    for (id, enc) in encrypted {
        let body = json!({
            "requestMetadata": meta("Decrypt"), "ciphertext": enc["ciphertext"],
            "ciphertextMetadata": enc["ciphertextMetadata"], "initializationVector": enc["initializationVector"],
            "authenticationTag": enc["authenticationTag"], "encryptionAlgorithm": "AES_GCM",
        });
        let r = Curl::new(&server, cred).send(
            &format!("/demo/kms/xks/v1/keys/{id}/decrypt"),
            &body.to_string(),
        );
        assert_eq!(r.status, 200, "{id}: {r:?}");
        assert_eq!(
            unb64(r.json()["plaintext"].as_str().unwrap()),
            id.as_bytes()
        );
    }
}

/// Failure injection: the token disappears under a running server (its
/// directory is moved away) and comes back; the server is never restarted.
#[test]
fn xks_survives_the_hsm_going_away_and_coming_back() {
    let h = hsm_env();
    let env = &h.env;
    env.run_ok(&["store", "create", "/demo"]);
    let cred = env.add_credential("/demo");
    env.run_ok(&["key", "create", "/demo", "hk", "--protection", "hsm"]);
    env.run_ok(&["key", "create", "/demo", "soft"]);
    let server = env.serve(&[]);
    for key in ["hk", "soft"] {
        assert_eq!(encrypt(&server, &cred, key).status, 200);
    }
    assert_eq!(health(&server, &cred), "ACTIVE");

    let tokens = h.hsm.dir.join("tokens");
    let token = std::fs::read_dir(&tokens)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let away = h.hsm.dir.join("away");
    std::fs::rename(&token, &away).unwrap();

    // AES-GCM in the HSM fails with InternalException, quickly: a 500 (not
    // the 503 of xks.hsm_timeout_ms, 2 s) says the server answered before
    // its timeout; the bound here only catches a hang. A wrapped key
    // already unwrapped into the cache keeps serving.
    let t = std::time::Instant::now();
    encrypt(&server, &cred, "hk").assert_error(500, "InternalException");
    assert!(t.elapsed() < std::time::Duration::from_secs(15));
    assert_eq!(encrypt(&server, &cred, "soft").status, 200);
    eventually("health turns UNAVAILABLE", || {
        health(&server, &cred) == "UNAVAILABLE"
    });

    std::fs::rename(&away, &token).unwrap();
    eventually("the HSM key serves again", || {
        encrypt(&server, &cred, "hk").status == 200
    });
    eventually("health turns ACTIVE", || health(&server, &cred) == "ACTIVE");
    eventually("the re-initialisation is logged", || {
        read(&server.log).contains("re-initialised the PKCS#11 module")
    });
    let mut server = server;
    assert!(server.child.try_wait().unwrap().is_none(), "still running");
}

/// `keyhold root rotate` with an HSM root: a new KEK in the token, every
/// value re-wrapped online while the server serves (old ciphertext still
/// decrypts, no restart), the old KEK kept reserved until `root
/// destroy-retired` destroys it in the token; from then on a backup made
/// before the rotation cannot be opened.
#[test]
fn the_hsm_kek_rotates_online_and_the_old_one_is_destroyed() {
    let h = hsm_env();
    let env = &h.env;
    env.run_ok(&["store", "create", "/demo"]);
    let cred = env.add_credential("/demo");
    env.run_ok(&["key", "create", "/demo", "k1"]);
    let backup = env.dir.path().join("before.khb");
    env.run_ok(&["backup", "create", backup.to_str().unwrap()]);
    env.run_ok(&["backup", "verify", backup.to_str().unwrap()]);
    let server = env.serve(&[]);
    let enc = encrypt(&server, &cred, "k1");
    assert_eq!(enc.status, 200, "{enc:?}");
    let enc = enc.json();
    let decrypt = |server: &Server| {
        let body = json!({
            "requestMetadata": meta("Decrypt"),
            "ciphertext": enc["ciphertext"], "ciphertextMetadata": enc["ciphertextMetadata"],
            "initializationVector": enc["initializationVector"],
            "authenticationTag": enc["authenticationTag"], "encryptionAlgorithm": "AES_GCM",
        });
        Curl::new(server, &cred).send("/demo/kms/xks/v1/keys/k1/decrypt", &body.to_string())
    };

    failover_tokens_need_a_named_kek(env);
    let r = env.json(&["root", "rotate"]);
    let new_label = r["new_root"]
        .as_str()
        .unwrap()
        .strip_prefix("KEK ")
        .unwrap()
        .to_owned();
    assert!(new_label.starts_with("keyhold-kek-r"), "{r}");
    assert_eq!(r["old_root"], "KEK keyhold-kek");
    assert_eq!(r["servers_confirmed"], 1, "{r}");
    assert!(r["rewrapped"].as_u64().unwrap() >= 4, "{r}");
    let desc = read(&env.data().join("root.pkcs11.toml"));
    assert!(
        desc.contains(&format!("kek_label = \"{new_label}\"")),
        "{desc}"
    );
    assert!(
        desc.contains("retired_kek_labels = [\"keyhold-kek\"]"),
        "{desc}"
    );
    let keys = env.json(&["hsm", "list-keys"]);
    for l in ["keyhold-kek", new_label.as_str()] {
        assert!(keys.as_array().unwrap().contains(&json!(l)), "{keys}");
    }
    // The server switched without a restart: old ciphertext decrypts, new
    // keys are made under the new KEK, and it stays healthy.
    assert_eq!(decrypt(&server).status, 200);
    env.run_ok(&["key", "create", "/demo", "k2"]);
    assert_eq!(encrypt(&server, &cred, "k2").status, 200);
    assert_eq!(health(&server, &cred), "ACTIVE");
    // The retired KEK is reserved: it cannot be adopted as a customer key.
    let out = env
        .cmd(&["key", "import-hsm", "/demo", "--label", "keyhold-kek"])
        .output()
        .unwrap();
    assert!(!out.status.success());

    the_retired_kek_is_destroyed(env, &backup);
    // A restart reads the new configuration.
    drop(server);
    let server = env.serve(&[]);
    assert_eq!(decrypt(&server).status, 200);
    assert_eq!(health(&server, &cred), "ACTIVE");
    let st = env.json(&["hsm", "status"]);
    assert_eq!(st["wrap_round_trip"], "ok");
}

/// With failover tokens the new KEK must be provisioned in each with the
/// HSM's own tools, and named.
fn failover_tokens_need_a_named_kek(env: &Env) {
    let cfg_path = env.data().join("root.pkcs11.toml");
    let cfg = read(&cfg_path);
    std::fs::write(
        &cfg_path,
        format!("{cfg}\n[[failover]]\ntoken_label = \"keyhold-second\"\n"),
    )
    .unwrap();
    let out = env.cmd(&["root", "rotate"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--kek-label"), "{err}");
    std::fs::write(&cfg_path, cfg).unwrap();
}

/// `root destroy-retired` destroys the old KEK in the token; a backup from
/// before the rotation no longer opens.
fn the_retired_kek_is_destroyed(env: &Env, backup: &Path) {
    let out = env.run_ok(&["root", "destroy-retired"]);
    assert!(
        out.contains("destroyed KEK keyhold-kek in token keyhold"),
        "{out}"
    );
    let keys = env.json(&["hsm", "list-keys"]);
    assert!(
        !keys.as_array().unwrap().contains(&json!("keyhold-kek")),
        "{keys}"
    );
    assert!(!read(&env.data().join("root.pkcs11.toml")).contains("retired_kek_labels"));
    // A backup from before the rotation no longer opens.
    let out = env
        .cmd(&["backup", "verify", backup.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success(), "an old backup still opens");
}
