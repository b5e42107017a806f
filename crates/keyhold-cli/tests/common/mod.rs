//! Test harness: runs the real `keyhold` binary (init, admin commands,
//! serve on a free loopback port) and talks to it with the real `curl
//! --aws-sigv4` client.

#![allow(dead_code)]

pub(crate) mod hsm;
pub(crate) mod idp;
pub(crate) mod kmip;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_keyhold");

/// A data directory made with `keyhold init`.
pub(crate) struct Env {
    pub dir: tempfile::TempDir,
    pub extra_env: Vec<(String, String)>,
}

pub(crate) struct Cred {
    pub akid: String,
    pub secret: String,
}

impl Env {
    pub(crate) fn new() -> Self {
        Self::with_init_args(&[], vec![])
    }

    pub(crate) fn with_init_args(args: &[&str], extra_env: Vec<(String, String)>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let env = Env { dir, extra_env };
        let mut a = vec!["init", "--listen", "127.0.0.1:0"];
        a.extend_from_slice(args);
        env.run_ok(&a);
        env
    }

    pub(crate) fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--data-dir").arg(self.data()).args(args);
        c.env_remove("KEYHOLD_PASSPHRASE");
        for (k, v) in &self.extra_env {
            c.env(k, v);
        }
        c.stdin(Stdio::null());
        c
    }

    /// Runs an admin command, which must succeed; returns stdout.
    pub(crate) fn run_ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().expect("run keyhold");
        assert!(
            out.status.success(),
            "keyhold {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf8")
    }

    /// Runs an admin command with `--json` and parses its output.
    pub(crate) fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.run_ok(&a)).expect("json output")
    }

    pub(crate) fn add_credential(&self, prefix: &str) -> Cred {
        let v = self.json(&["store", "credential", "add", prefix]);
        Cred {
            akid: v["access_key_id"].as_str().unwrap().to_owned(),
            secret: v["secret_access_key"].as_str().unwrap().to_owned(),
        }
    }

    /// The port of a running server's listener `name` (`kmip`, `admin`,
    /// `azure-ekm`, `hyok`…), as `keyhold serve` prints it.
    pub(crate) fn listener_port(&self, name: &str) -> u16 {
        let out = self.dir.path().join("serve.stdout");
        let line = format!("keyhold {name} on 127.0.0.1:");
        let mut port = 0;
        eventually(&format!("the {name} listener"), || {
            port = std::fs::read_to_string(&out)
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix(line.as_str()))
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            port != 0
        });
        port
    }

    pub(crate) fn ca(&self) -> PathBuf {
        self.data().join("tls/ca.pem")
    }

    pub(crate) fn config(&self) -> PathBuf {
        self.data().join("keyhold.toml")
    }

    /// Starts `keyhold serve`; waits until it is listening.
    pub(crate) fn serve(&self, extra: &[&str]) -> Server {
        let log = self.dir.path().join(format!(
            "serve-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let mut a = vec!["serve"];
        a.extend_from_slice(extra);
        let mut child = self
            .cmd(&a)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn keyhold serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = match lines.next() {
            Some(Ok(l)) => l,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "server did not start: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        let Some(url) = line
            .strip_prefix("keyhold listening on ")
            .map(str::to_owned)
        else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("unexpected first line {line:?}");
        };
        // Keep draining stdout so the server never blocks on it.
        let out_path = self.dir.path().join("serve.stdout");
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(out_path)
                .unwrap();
            for l in lines.map_while(Result::ok) {
                let _ = writeln!(f, "{l}");
            }
        });
        let port = url.rsplit(':').next().unwrap().parse().unwrap();
        let base = url.replace("127.0.0.1", "localhost");
        Server {
            child,
            base,
            port,
            log,
            ca: self.ca(),
        }
    }
}

pub(crate) struct Server {
    pub child: Child,
    /// `https://localhost:PORT` (or http://).
    pub base: String,
    pub port: u16,
    pub log: PathBuf,
    pub ca: PathBuf,
}

impl Server {
    /// A copy for another thread that talks to the same server (dropping it
    /// does not stop the server).
    pub(crate) fn detached(&self) -> Server {
        Server {
            child: Command::new("true").spawn().expect("spawn true"),
            base: self.base.clone(),
            port: self.port,
            log: self.log.clone(),
            ca: self.ca.clone(),
        }
    }
}

impl Server {
    /// Stops the server as an operator would (SIGTERM) and waits for it to
    /// exit: it drains its connections and writes a final audit
    /// checkpoint, so what it did is all on disk when this returns.
    pub(crate) fn terminate(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub(crate) struct Resp {
    pub status: u16,
    pub body: String,
    /// What curl itself printed on standard error.
    pub curl_err: String,
}

impl Resp {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
    pub(crate) fn error_name(&self) -> String {
        self.json()["errorName"].as_str().unwrap_or("").to_owned()
    }
    #[track_caller]
    pub(crate) fn assert_error(&self, status: u16, name: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.error_name(), name, "{self:?}");
        let msg = self.json()["errorMessage"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        assert!(!msg.is_empty() && msg.len() < 512, "{self:?}");
        assert!(msg.bytes().all(|b| (0x20..=0x7e).contains(&b)));
    }
}

/// A `curl` invocation.
pub(crate) struct Curl<'a> {
    pub server: &'a Server,
    pub cred: Option<&'a Cred>,
    pub extra: Vec<String>,
    pub method: &'a str,
}

impl<'a> Curl<'a> {
    pub(crate) fn new(server: &'a Server, cred: &'a Cred) -> Self {
        Self {
            server,
            cred: Some(cred),
            extra: vec![],
            method: "POST",
        }
    }

    pub(crate) fn arg(mut self, a: &str) -> Self {
        self.extra.push(a.to_owned());
        self
    }

    /// Sends `body` to `path`, signed with SigV4 by curl itself.
    pub(crate) fn send(&self, path: &str, body: &str) -> Resp {
        let dir = tempfile::tempdir().unwrap();
        let body_file = dir.path().join("body.json");
        std::fs::write(&body_file, body).unwrap();
        let out_file = dir.path().join("out");
        let mut c = Command::new("curl");
        c.args(["-sS", "--max-time", "20", "-X", self.method]);
        c.arg("--cacert").arg(&self.server.ca);
        if let Some(cred) = self.cred {
            c.args(["--aws-sigv4", "aws:amz:us-east-1:kms-xks-proxy"]);
            c.arg("--user")
                .arg(format!("{}:{}", cred.akid, cred.secret));
        }
        c.args(["-H", "Content-Type: application/json"]);
        if self.method == "POST" {
            c.arg("--data-binary")
                .arg(format!("@{}", body_file.display()));
        }
        c.arg("-o").arg(&out_file);
        c.args(["-w", "%{http_code}"]);
        c.args(&self.extra);
        c.arg(format!("{}{}", self.server.base, path));
        let out = c.output().expect("run curl");
        let status: u16 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        Resp {
            status,
            body: std::fs::read_to_string(&out_file).unwrap_or_default(),
            curl_err: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

pub(crate) fn meta(op: &str) -> serde_json::Value {
    serde_json::json!({
        "awsPrincipalArn": "arn:aws:iam::123456789012:user/Alice",
        "kmsKeyArn": "arn:aws:kms:us-east-2:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "kmsOperation": op,
        "kmsRequestId": "4112f4d6-db54-4af4-ae30-c55a22a8dfae",
        "kmsViaService": "ebs"
    })
}

/// XKS Encrypt of `pt` (AAD "ctx") with key `key` of store /demo.
pub(crate) fn demo_encrypt(server: &Server, cred: &Cred, key: &str, pt: &[u8]) -> Resp {
    let body = serde_json::json!({
        "requestMetadata": meta("Encrypt"), "plaintext": b64(pt),
        "additionalAuthenticatedData": b64(b"ctx"), "encryptionAlgorithm": "AES_GCM",
    });
    Curl::new(server, cred).send(
        &format!("/demo/kms/xks/v1/keys/{key}/encrypt"),
        &body.to_string(),
    )
}

/// XKS Decrypt of what [`demo_encrypt`] answered (`enc`).
pub(crate) fn demo_decrypt(
    server: &Server,
    cred: &Cred,
    key: &str,
    enc: &serde_json::Value,
) -> Resp {
    let body = serde_json::json!({
        "requestMetadata": meta("Decrypt"), "ciphertext": enc["ciphertext"],
        "ciphertextMetadata": enc["ciphertextMetadata"], "initializationVector": enc["initializationVector"],
        "authenticationTag": enc["authenticationTag"], "additionalAuthenticatedData": b64(b"ctx"),
        "encryptionAlgorithm": "AES_GCM",
    });
    Curl::new(server, cred).send(
        &format!("/demo/kms/xks/v1/keys/{key}/decrypt"),
        &body.to_string(),
    )
}

pub(crate) fn b64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

pub(crate) fn unb64(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// Waits until `f` holds (the server applies admin changes within ~100 ms).
/// The bound, 30 s, only catches what never happens: no loaded machine
/// comes near it for anything a test waits for.
#[track_caller]
pub(crate) fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for: {what}");
}

pub(crate) fn read(p: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned()
}

/// The files under `dir` that still hold any 16-byte piece of `secret`
/// (crypto-shredding checks: the database, its WAL, anything else).
#[allow(dead_code)]
pub(crate) fn files_holding(dir: &Path, secret: &[u8]) -> Vec<PathBuf> {
    assert!(secret.len() >= 16, "too short to look for");
    let pieces: Vec<&[u8]> = secret.chunks_exact(16).collect();
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                if pieces
                    .iter()
                    .any(|piece| bytes.windows(16).any(|w| w == *piece))
                {
                    found.push(p);
                }
            }
        }
    }
    found
}

/// Runs SQL statements straight on a SQLite database file, as someone with
/// write access to it (but not the root of trust) would: Python's sqlite3,
/// an independent client (WAL-safe beside a running server).
pub(crate) fn sqlite(db: &Path, sql: &str) {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1], timeout=30)\nc.executescript(sys.argv[2])\nc.commit()\nc.close()",
        ])
        .arg(db)
        .arg(sql)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "sqlite3 {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
