//! The web console over real HTTPS, driven by curl with a cookie jar as a
//! browser would be: sign-in with a token, the session cookie's flags, the
//! security headers, changes through the same routes, roles and audit as
//! the admin API (recorded as `frontend: console`), and the refusals —
//! no CSRF token, another site, a revoked token, an auditor's change.

mod common;

use common::*;
use std::path::PathBuf;
use std::process::Command;

/// A browser: curl with its own cookie jar, never following redirects.
struct Browser {
    jar: tempfile::TempDir,
    base: String,
    ca: PathBuf,
}

#[derive(Debug)]
struct Page {
    status: u16,
    headers: String,
    body: String,
}

impl Page {
    fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }

    /// The CSRF token of the page's forms.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no CSRF field in {}", self.body));
        let rest = &self.body[at + 19..];
        rest[..rest.find('"').unwrap()].to_owned()
    }
}

impl Browser {
    fn new(base: &str, ca: PathBuf) -> Self {
        Self {
            jar: tempfile::tempdir().unwrap(),
            base: base.to_owned(),
            ca,
        }
    }

    fn request(&self, method: &str, path: &str, form: &[(&str, &str)], extra: &[&str]) -> Page {
        let jar = self.jar.path().join("cookies");
        let headers = self.jar.path().join("headers");
        let mut c = Command::new("curl");
        c.args(["-sS", "--max-time", "20", "-X", method])
            .arg("--cacert")
            .arg(&self.ca)
            .arg("-b")
            .arg(&jar)
            .arg("-c")
            .arg(&jar)
            .arg("-D")
            .arg(&headers)
            .args(["-w", "\n%{http_code}"])
            .args(extra);
        for (k, v) in form {
            c.arg("--data-urlencode").arg(format!("{k}={v}"));
        }
        let o = c
            .arg(format!("{}{path}", self.base))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        let status = code.trim().parse().unwrap_or(0);
        assert_ne!(
            status,
            0,
            "curl {path}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Page {
            status,
            headers: std::fs::read_to_string(headers).unwrap_or_default(),
            body: body.to_owned(),
        }
    }

    fn get(&self, path: &str) -> Page {
        self.request("GET", path, &[], &[])
    }

    fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        self.request("POST", path, form, &[])
    }

    fn sign_in(&self, token: &str) -> Page {
        self.post("/ui/login", &[("token", token)])
    }
}

fn token(env: &Env, name: &str, role: &str) -> String {
    env.json(&["admin", "token", "create", name, "--role", role])["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn admin_address(env: &Env) -> String {
    let out = env.dir.path().join("serve.stdout");
    let mut addr = String::new();
    eventually("admin listener", || {
        match read(&out)
            .lines()
            .find_map(|l| l.strip_prefix("keyhold admin on "))
        {
            Some(a) => {
                addr = a.to_owned();
                true
            }
            None => false,
        }
    });
    addr
}

#[test]
fn the_console_signs_in_changes_through_the_api_and_refuses_what_it_must() {
    let env = Env::new();
    let alice = token(&env, "alice", "custodian");
    let ann = token(&env, "ann", "auditor");
    let _server = env.serve(&["--admin-listen", "127.0.0.1:0"]);
    let base = format!("https://{}", admin_address(&env)).replace("127.0.0.1", "localhost");
    let b = Browser::new(&base, env.ca());

    // Signed out: to the sign-in page, which carries the security headers.
    let p = b.get("/ui/");
    assert_eq!(p.status, 303);
    assert_eq!(p.header("location").as_deref(), Some("/ui/login"));
    let login = b.get("/ui/login");
    assert_eq!(login.status, 200);
    let csp = login.header("content-security-policy").unwrap();
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
    assert!(login.header("strict-transport-security").is_some());
    assert_eq!(
        login.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    assert_eq!(
        login.header("referrer-policy").as_deref(),
        Some("same-origin")
    );
    assert!(!login.body.contains("<script>"), "no inline script");
    // The assets come from the binary.
    let css = b.get("/ui/assets/console.css");
    assert_eq!(css.status, 200);
    assert!(css.header("content-type").unwrap().starts_with("text/css"));

    // A wrong token: refused, no session.
    let bad = b.sign_in("khadm_0000000000000000_wrong");
    assert_eq!(bad.status, 401);
    assert!(bad.body.contains("not valid"));
    assert_eq!(b.get("/ui/").status, 303);

    // The custodian signs in: a session cookie, HttpOnly, Secure, Strict.
    let p = b.sign_in(&alice);
    assert_eq!(p.status, 303, "{p:?}");
    let cookie = p.header("set-cookie").unwrap();
    for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/ui"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    assert!(!cookie.contains(&alice[6..]), "the token is not the cookie");
    let home = b.get("/ui/");
    assert_eq!(home.status, 200);
    assert!(home.body.contains("Overview") && home.body.contains("alice"));
    let csrf = home.csrf();

    // A store and a key, made through the console.
    let p = b.post(
        "/ui/stores",
        &[
            ("csrf", &csrf),
            ("prefix", "/web"),
            ("description", "from the console"),
        ],
    );
    assert_eq!(p.status, 303, "{}", p.body);
    assert_eq!(p.header("location").as_deref(), Some("/ui/stores/web"));
    let store = b.get("/ui/stores/web");
    assert!(store.body.contains("from the console"));
    let p = b.post(
        "/ui/stores/web/keys",
        &[
            ("csrf", &csrf),
            ("key_id", "k1"),
            ("key_type", "aes-256"),
            ("protection", "software"),
        ],
    );
    assert_eq!(p.status, 303, "{}", p.body);
    let key = b.get("/ui/stores/web/keys/k1");
    assert!(
        key.body.contains("AES_256") && key.body.contains("ENABLED"),
        "{}",
        key.body
    );
    // Dates and a rotation period at creation; a usage change.
    let p = b.post(
        "/ui/stores/web/keys",
        &[
            ("csrf", &csrf),
            ("key_id", "later"),
            ("key_type", "aes-256"),
            ("protection", "software"),
            ("activate_at", "2099-01-01T00:00:00Z"),
            ("rotation_days", "90"),
        ],
    );
    assert_eq!(p.status, 303, "{}", p.body);
    let later = b.get("/ui/stores/web/keys/later");
    assert!(
        later.body.contains("PRE_ACTIVE") && later.body.contains("Next rotation"),
        "{}",
        later.body
    );
    assert_eq!(
        b.post(
            "/ui/stores/web/keys/later/usage",
            &[("csrf", &csrf), ("usage", "decrypt")]
        )
        .status,
        303
    );
    assert!(b
        .get("/ui/stores/web/keys/later")
        .body
        .contains("<dd>DECRYPT</dd>"));

    // Search and paging: 150 more keys, found by the start of their id.
    env.run_ok(&["key", "create", "/web", "p", "--count", "150"]);
    let found = b.get("/ui/stores/web?q=p-00014");
    assert_eq!(found.status, 200, "{}", found.body);
    assert!(found.body.contains("p-000140") && found.body.contains("p-000149"));
    assert!(!found.body.contains("p-000139") && !found.body.contains("p-000150"));
    let first = b.get("/ui/stores/web");
    assert!(first.body.contains("Next page"));
    let next = b.get("/ui/stores/web?q=&after=p-000100");
    assert!(next.body.contains("p-000101") && !next.body.contains(">p-000100<"));
    assert_eq!(b.get("/ui/stores/web?q=bad%20id").status, 400);

    // A bad request says what is wrong.
    let p = b.post(
        "/ui/stores/web/keys",
        &[
            ("csrf", &csrf),
            ("key_id", "r1"),
            ("key_type", "rsa-2048"),
            ("protection", "software"),
        ],
    );
    assert_eq!(p.status, 400);
    assert!(p.body.contains("needs a usage"), "{}", p.body);
    // Break glass on the key (its box ticked), then back.
    let unticked = b.post(
        "/ui/stores/web/keys/k1/status",
        &[("csrf", &csrf), ("status", "DISABLED")],
    );
    assert_eq!(unticked.status, 400);
    assert!(unticked.body.contains("Tick the confirmation box"));
    assert_eq!(
        b.post(
            "/ui/stores/web/keys/k1/status",
            &[("csrf", &csrf), ("status", "DISABLED"), ("confirm", "yes")]
        )
        .status,
        303
    );
    assert!(b.get("/ui/stores/web/keys/k1").body.contains("DISABLED"));
    assert_eq!(
        b.post(
            "/ui/stores/web/keys/k1/status",
            &[("csrf", &csrf), ("status", "ENABLED")]
        )
        .status,
        303
    );

    // A disabled store is in the banner on every page, with who and when.
    assert_eq!(
        b.post(
            "/ui/stores/web/status",
            &[("csrf", &csrf), ("status", "DISABLED"), ("confirm", "yes")]
        )
        .status,
        303
    );
    let banner = b.get("/ui/tokens");
    assert!(
        banner.body.contains("Key store /web is disabled") && banner.body.contains("token alice"),
        "{}",
        banner.body
    );
    // So is a disabled key, with who and when.
    env.run_ok(&["key", "disable", "/web", "k1"]);
    let banner = b.get("/ui/policies");
    assert!(
        banner.body.contains("Key k1 of /web is disabled") && banner.body.contains("Set by"),
        "{}",
        banner.body
    );
    env.run_ok(&["key", "enable", "/web", "k1"]);
    assert_eq!(
        b.post(
            "/ui/stores/web/status",
            &[("csrf", &csrf), ("status", "ENABLED")]
        )
        .status,
        303
    );
    assert!(!b.get("/ui/tokens").body.contains("is disabled"));

    // The AWS console's key-store file: a new credential, downloaded once.
    let file = b.post("/ui/stores/web/kms-config", &[("csrf", &csrf)]);
    assert_eq!(file.status, 200, "{}", file.body);
    assert!(file
        .header("content-disposition")
        .unwrap()
        .starts_with("attachment"));
    assert_eq!(file.header("cache-control").as_deref(), Some("no-store"));
    let json: serde_json::Value = serde_json::from_str(&file.body).unwrap();
    assert_eq!(json["XksProxyUriPath"], "/web/kms/xks/v1");
    let akid = json["XksProxyAuthenticationCredential"]["AccessKeyId"]
        .as_str()
        .unwrap();
    let creds = b.get("/ui/stores/web/credentials");
    assert!(creds.body.contains(akid));
    assert!(!creds.body.contains(
        json["XksProxyAuthenticationCredential"]["RawSecretAccessKey"]
            .as_str()
            .unwrap()
    ));

    // Refused: no CSRF token, a wrong one, another site.
    assert_eq!(b.post("/ui/stores/web/keys/k1/rotate", &[]).status, 403);
    assert_eq!(
        b.post("/ui/stores/web/keys/k1/rotate", &[("csrf", "forged")])
            .status,
        403
    );
    let cross = b.request(
        "POST",
        "/ui/stores/web/keys/k1/rotate",
        &[("csrf", &csrf)],
        &["-H", "Origin: https://evil.example"],
    );
    assert_eq!(cross.status, 403);
    let cross = b.request(
        "POST",
        "/ui/stores/web/keys/k1/rotate",
        &[("csrf", &csrf)],
        &["-H", "Sec-Fetch-Site: cross-site"],
    );
    assert_eq!(cross.status, 403);
    assert!(b.get("/ui/stores/web/keys/k1").body.contains("(current)"));
    let versions = env.json(&["key", "versions", "/web", "k1"]);
    assert_eq!(versions.as_array().unwrap().len(), 1, "nothing was rotated");

    // Lifecycle: deactivate; compromise and destruction need the key id
    // typed; the history on the key's page comes from the audit log.
    let k = "/ui/stores/web/keys/k1";
    assert_eq!(
        b.post(&format!("{k}/rotate"), &[("csrf", &csrf)]).status,
        303
    );
    assert_eq!(
        b.post(&format!("{k}/retire"), &[("csrf", &csrf), ("version", "2")])
            .status,
        303
    );
    assert_eq!(b.post(&format!("{k}/trim"), &[("csrf", &csrf)]).status, 303);
    let page = b.get(k);
    assert!(
        page.body.contains("DESTROYED") || page.body.contains("RETIRED"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("key rotate") && page.body.contains("key trim-versions"),
        "history: {}",
        page.body
    );
    let p = b.post(
        &format!("{k}/compromise"),
        &[("csrf", &csrf), ("confirm", "k2")],
    );
    assert_eq!(p.status, 400);
    assert!(p.body.contains("Type the key id (k1)"));
    let p = b.post(
        &format!("{k}/destroy"),
        &[("csrf", &csrf), ("days", "7"), ("confirm", "nope")],
    );
    assert_eq!(p.status, 400, "{}", p.body);
    assert_eq!(
        b.post(
            &format!("{k}/destroy"),
            &[("csrf", &csrf), ("days", "7"), ("confirm", "k1")]
        )
        .status,
        303
    );
    assert!(b.get(k).body.contains("Destruction scheduled"));
    assert_eq!(
        b.post(&format!("{k}/cancel-destroy"), &[("csrf", &csrf)])
            .status,
        303
    );
    assert!(!b.get(k).body.contains("Destruction scheduled"));

    // Policies: a text that does not validate comes back with its message;
    // a good one is saved and tested.
    let bad = b.post(
        "/ui/stores/web/policy",
        &[("csrf", &csrf), ("text", "[[rule]]\nname = 1\n")],
    );
    assert_eq!(bad.status, 400);
    assert!(
        bad.body.contains("name = 1"),
        "the draft is kept: {}",
        bad.body
    );
    assert!(bad.body.contains("class=\"error\""));
    let good = "[[rule]]\nname = \"only-ebs\"\neffect = \"allow\"\nvia_service = [\"ebs\"]\n";
    assert_eq!(
        b.post("/ui/stores/web/policy", &[("csrf", &csrf), ("text", good)])
            .status,
        303
    );
    let t = b.get(
        "/ui/stores/web/policy/test?principal=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fr&via_service=ebs",
    );
    assert!(t.body.contains("only-ebs"), "{}", t.body);
    assert!(b.get("/ui/policies").body.contains("store /web"));
    env.run_ok(&["policy", "remove", "--store", "/web"]);

    // Admin tokens: made with the secret shown once, listed, revoked.
    let made = b.post(
        "/ui/tokens",
        &[
            ("csrf", &csrf),
            ("name", "carol"),
            ("role", "operator"),
            ("expires_days", "30"),
        ],
    );
    assert_eq!(made.status, 200);
    assert!(
        made.body.contains("id=\"new-token\">khadm_"),
        "{}",
        made.body
    );
    let listed = b.get("/ui/tokens");
    assert!(listed.body.contains("carol") && !listed.body.contains("new-token"));
    assert_eq!(
        b.post("/ui/tokens/carol/revoke", &[("csrf", &csrf)]).status,
        303
    );
    assert!(!b.get("/ui/tokens").body.contains("carol"));

    // KMIP: a client certificate issued as a download, listed, revoked.
    assert!(b.get("/ui/kmip").body.contains("Client certificates"));
    let pem = b.post(
        "/ui/kmip/client-certs",
        &[("csrf", &csrf), ("name", "db1"), ("days", "30")],
    );
    assert_eq!(pem.status, 200, "{}", pem.body);
    assert!(pem.body.contains("BEGIN CERTIFICATE") && pem.body.contains("PRIVATE KEY"));
    assert!(b.get("/ui/kmip").body.contains("db1"));
    assert_eq!(
        b.post("/ui/kmip/revoke", &[("csrf", &csrf), ("who", "db1")])
            .status,
        303
    );
    assert!(b.get("/ui/kmip").body.contains("revoked"));

    // A backup, downloaded; keyhold backup verify reads it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("console.backup");
    let got = b.request(
        "POST",
        "/ui/backups",
        &[("csrf", &csrf)],
        &["-o", file.to_str().unwrap()],
    );
    assert_eq!(got.status, 200);
    env.run_ok(&["backup", "verify", file.to_str().unwrap()]);

    // Lockdown: a typed confirmation, a banner on every page, then lifted.
    let p = b.post("/ui/lockdown", &[("csrf", &csrf), ("lockdown", "on")]);
    assert_eq!(p.status, 400);
    let p = b.post(
        "/ui/lockdown",
        &[("csrf", &csrf), ("lockdown", "on"), ("confirm", "LOCKDOWN")],
    );
    assert_eq!(p.status, 303, "{}", p.body);
    let banner = b.get("/ui/stores");
    assert!(banner.body.contains("Lockdown is on"), "{}", banner.body);
    assert!(banner.body.contains("token alice"), "{}", banner.body);
    assert_eq!(
        b.post("/ui/lockdown", &[("csrf", &csrf), ("lockdown", "off")])
            .status,
        303
    );
    assert!(!b.get("/ui/").body.contains("Lockdown is on"));

    // An auditor: offered no change, refused one, reads the audit log.
    let a = Browser::new(&base, env.ca());
    assert_eq!(a.sign_in(&ann).status, 303);
    let store = a.get("/ui/stores/web");
    assert!(!store.body.contains("Create a key"));
    assert!(!store.body.contains("Disable the store"));
    let refused = a.post(
        "/ui/stores/web/status",
        &[("csrf", &store.csrf()), ("status", "DISABLED")],
    );
    assert_eq!(refused.status, 403);
    assert!(refused.body.contains("custodian role"), "{}", refused.body);
    let audit = a.get("/ui/audit?frontend=console");
    assert_eq!(audit.status, 200);
    assert_eq!(
        a.get("/ui/audit?frontend=console&limit=2")
            .body
            .matches("<details>")
            .count(),
        2
    );
    assert_eq!(a.get("/ui/audit?limit=0").status, 400);
    for what in ["store create", "key create", "lockdown", "console sign-in"] {
        assert!(
            audit.body.contains(what),
            "{what} missing from {}",
            audit.body
        );
    }
    // Verification, and an export of the filtered records.
    assert!(a.get("/ui/").body.contains("Not verified from the console"));
    let v = a.get("/ui/audit/verify");
    assert!(v.body.contains("The audit log is intact."), "{}", v.body);
    let home = a.get("/ui/");
    assert!(
        home.body.contains("Last verified") && home.body.contains("intact"),
        "{}",
        home.body
    );
    let e = a.get("/ui/audit/export?frontend=console");
    assert_eq!(e.status, 200);
    assert!(e
        .header("content-disposition")
        .unwrap()
        .contains("attachment"));
    assert!(e.body.lines().count() > 5 && e.body.lines().all(|l| l.starts_with('{')));
    // The custodian has no audit page.
    assert_eq!(b.get("/ui/audit").status, 403);

    // Every change is in the audit log as the token, through the console.
    let recs = env.json(&["audit", "query", "--frontend", "console", "--limit", "100"]);
    let recs = recs.as_array().unwrap();
    assert!(recs.iter().any(|r| r["operation"] == "key create"
        && r["actor"].as_str().unwrap().contains("token alice")
        && r["result"] == "OK"));
    assert!(recs.iter().any(
        |r| r["result"] == "AccessDenied" && r["actor"].as_str().unwrap().contains("token ann")
    ));
    assert!(recs
        .iter()
        .any(|r| r["detail"].as_str().unwrap_or("").contains("CSRF")));

    // Sign-out ends the session.
    let p = a.post("/ui/logout", &[("csrf", &store.csrf())]);
    assert_eq!(p.status, 303);
    assert_eq!(a.get("/ui/stores").status, 303);

    // A revoked token ends its sessions on their next request.
    env.run_ok(&["admin", "token", "revoke", "alice"]);
    let p = b.get("/ui/stores");
    assert_eq!(p.status, 401);
    assert!(p.body.contains("revoked"), "{}", p.body);
    assert_eq!(b.get("/ui/").status, 303);

    // A forged session cookie is no session.
    let f = Browser::new(&base, env.ca());
    let p = f.request(
        "GET",
        "/ui/",
        &[],
        &["-H", "Cookie: keyhold_console=forged"],
    );
    assert_eq!(p.status, 303);
}

/// A session unused for longer than the idle timeout is over: the next
/// page asks for a sign-in, and a change is refused.
#[test]
fn an_idle_session_expires() {
    let env = Env::new();
    let mut config = read(&env.config());
    config.push_str("\n[admin]\nconsole_idle_timeout_s = 1\n");
    std::fs::write(env.config(), config).unwrap();
    let alice = token(&env, "alice", "custodian");
    let _server = env.serve(&["--admin-listen", "127.0.0.1:0"]);
    let base = format!("https://{}", admin_address(&env)).replace("127.0.0.1", "localhost");
    let b = Browser::new(&base, env.ca());
    assert_eq!(b.sign_in(&alice).status, 303);
    let csrf = b.get("/ui/").csrf();
    // Left alone past the timeout (each look below is itself a use, so
    // look rarely): the session ends.
    let started = std::time::Instant::now();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let p = b.post("/ui/stores", &[("csrf", &csrf), ("prefix", "/late")]);
        if p.status == 401 {
            assert!(p.body.contains("session is over"), "{}", p.body);
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the session never expired"
        );
    }
    assert_eq!(b.get("/ui/").status, 303);
    let stores = env.json(&["store", "list"]);
    assert!(!stores.to_string().contains("/late"));
}

#[test]
fn stores_show_the_cloud_they_serve() {
    let env = Env::new();
    let ca = keyhold_server::tls::LocalCa::new("Managed HSM client CA").unwrap();
    let ca_path = env.dir.path().join("az-ca.pem");
    std::fs::write(&ca_path, ca.cert_pem()).unwrap();
    env.run_ok(&[
        "store",
        "create",
        "/az",
        "--api",
        "azure-ekm",
        "--path-prefix",
        "/contoso/prod",
        "--client-cn",
        "contoso.managedhsmclient.azure.net",
        "--client-ca",
        ca_path.to_str().unwrap(),
    ]);
    env.run_ok(&["store", "create", "/aws"]);
    let ann = token(&env, "ann", "auditor");
    let _server = env.serve(&["--admin-listen", "127.0.0.1:0"]);
    let base = format!("https://{}", admin_address(&env)).replace("127.0.0.1", "localhost");
    let b = Browser::new(&base, env.ca());
    assert_eq!(b.sign_in(&ann).status, 303);
    let list = b.get("/ui/stores");
    assert!(
        list.body.contains("Azure Managed HSM (EKM)"),
        "{}",
        list.body
    );
    assert!(list.body.contains("AWS XKS"));
    let page = b.get("/ui/stores/az");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("/contoso/prod/{key}/…"), "{}", page.body);
    assert!(page.body.contains("contoso.managedhsmclient.azure.net"));
    assert!(!page.body.contains("XKS URI path"));
}

#[test]
fn a_custodian_binds_a_store_to_a_cloud_in_the_console() {
    let env = Env::new();
    let ca = keyhold_server::tls::LocalCa::new("Managed HSM client CA").unwrap();
    env.run_ok(&["store", "create", "/az"]);
    let alice = token(&env, "alice", "custodian");
    let ann = token(&env, "ann", "auditor");
    let _server = env.serve(&["--admin-listen", "127.0.0.1:0"]);
    let base = format!("https://{}", admin_address(&env)).replace("127.0.0.1", "localhost");

    // An auditor sees the page, not the form.
    let b = Browser::new(&base, env.ca());
    assert_eq!(b.sign_in(&ann).status, 303);
    let p = b.get("/ui/stores/az/api");
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(p.body.contains("AWS XKS") && !p.body.contains("Change the cloud API"));

    let b = Browser::new(&base, env.ca());
    assert_eq!(b.sign_in(&alice).status, 303);
    let p = b.get("/ui/stores/az/api");
    assert!(p.body.contains("Change the cloud API"), "{}", p.body);
    let csrf = p.csrf();
    let pem = ca.cert_pem();
    let r = b.post(
        "/ui/stores/az/api",
        &[
            ("csrf", &csrf),
            ("api", "azure-ekm"),
            ("path_prefix", "/contoso/prod"),
            ("client_cn", "contoso.managedhsmclient.azure.net"),
            ("client_ca_pem", &pem),
            // Fields of the other clouds are not sent.
            ("kacls_url", "https://ignored.example/cse"),
        ],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let v = env.json(&["store", "show", "/az"]);
    assert_eq!(v[0]["api"], "azure-ekm");
    assert_eq!(v[0]["azure_ekm"]["path_prefix"], "/contoso/prod");
    // A bad binding: refused with the API's words, nothing changed.
    let csrf = b.get("/ui/stores/az/api").csrf();
    let r = b.post(
        "/ui/stores/az/api",
        &[
            ("csrf", &csrf),
            ("api", "azure-ekm"),
            ("path_prefix", "no-slash"),
            ("client_cn", "x"),
            ("client_ca_pem", &pem),
        ],
    );
    let page = if r.status == 303 {
        b.get(r.header("location").as_deref().unwrap_or("/ui/"))
    } else {
        r
    };
    assert!(page.body.contains("path prefix"), "{}", page.body);
    assert_eq!(
        env.json(&["store", "show", "/az"])[0]["azure_ekm"]["path_prefix"],
        "/contoso/prod"
    );
    // The changes are in the audit log as the CLI's words, from the console.
    let rec = env.json(&["audit", "query", "--frontend", "console", "--limit", "100"]);
    assert!(
        rec.as_array()
            .unwrap()
            .iter()
            .any(|r| r["operation"] == "store api"
                && r["detail"] == "store api /az azure-ekm"
                && r["result"] == "OK"),
        "{rec}"
    );
}
