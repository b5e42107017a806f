//! Throw-away identity providers for the DKE and CSE tests
//! (tests/clouds/idp.py: PyJWT, JWKS on loopback HTTPS) and curl calls
//! that keep status, headers and body.

use keyhold_server::tls::LocalCa;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The throw-away identity provider.
pub(crate) struct Idp {
    pub(crate) child: Child,
    pub(crate) port: u16,
    pub(crate) ca: PathBuf,
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clouds")
        .join(name)
}

/// An identity provider of its own in `dir/name`.
pub(crate) fn start_idp_in(dir: &Path, name: &str) -> Idp {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    start_idp(&d)
}

pub(crate) fn start_idp(dir: &Path) -> Idp {
    let ca = LocalCa::new("Test IdP CA").unwrap();
    let issued = ca.issue_server(&["localhost"]).unwrap();
    let (cert, key, ca_path) = (
        dir.join("idp.pem"),
        dir.join("idp.key"),
        dir.join("idp-ca.pem"),
    );
    std::fs::write(&cert, issued.cert_pem).unwrap();
    std::fs::write(&key, issued.key_pem).unwrap();
    std::fs::write(&ca_path, ca.cert_pem()).unwrap();
    let mut child = Command::new("python3")
        .arg(script("idp.py"))
        .arg(&cert)
        .arg(&key)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 idp.py");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().parse().expect("the IdP's port");
    Idp {
        child,
        port,
        ca: ca_path,
    }
}

impl Idp {
    pub(crate) fn post(&self, path: &str, body: serde_json::Value) -> String {
        let out = Command::new("curl")
            .args(["-sS", "--fail", "--cacert"])
            .arg(&self.ca)
            .args(["-H", "Content-Type: application/json", "--data-binary"])
            .arg(body.to_string())
            .arg(format!("https://localhost:{}{path}", self.port))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A token with exactly these claims, signed by the current key.
    pub(crate) fn mint(&self, claims: &serde_json::Value) -> String {
        self.post("/mint", json!({ "claims": claims }))
    }
}

pub(crate) fn rand_suffix() -> String {
    let mut b = [0u8; 6];
    keyhold_crypto::fill_random(&mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: String,
    pub(crate) headers: String,
}

impl Answer {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// One request with curl: method, URL, optional bearer token and body.
pub(crate) fn call(
    ca: &Path,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Answer {
    let dir = tempfile::tempdir().unwrap();
    let hdr = dir.path().join("h");
    let mut c = Command::new("curl");
    c.args(["-sS", "-X", method, "--cacert"])
        .arg(ca)
        .arg("-D")
        .arg(&hdr)
        .args(["-w", "\n%{http_code}"]);
    if let Some(t) = token {
        c.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    if let Some(b) = body {
        c.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    let out = c.arg(url).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    Answer {
        status: status.trim().parse().unwrap_or(0),
        body: body.to_owned(),
        headers: std::fs::read_to_string(&hdr).unwrap_or_default(),
    }
}

/// Binds store /cse of `env` as a KACLS at `kacls_url` (KEK `kek`), whose
/// users' tokens `users` signs (issuer https://idp.test, audience
/// test-client) and Google's `google`; `extra` adds options.
pub(crate) fn bind_cse(
    env: &super::Env,
    kacls_url: &str,
    users: &Idp,
    google: &Idp,
    extra: &[&str],
) {
    let ujwks = format!("https://localhost:{}/keys", users.port);
    let gjwks = format!("https://localhost:{}/keys", google.port);
    let mut args = vec![
        "store",
        "api",
        "/cse",
        "google-cse",
        "--path-prefix",
        "/cse",
        "--kacls-url",
        kacls_url,
        "--kek",
        "kek",
        "--issuer",
        "https://idp.test",
        "--audience",
        "test-client",
        "--jwks-url",
        &ujwks,
        "--jwks-ca",
        users.ca.to_str().unwrap(),
        "--authz-jwks-url",
        &gjwks,
        "--authz-jwks-ca",
        google.ca.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    env.run_ok(&args);
}
