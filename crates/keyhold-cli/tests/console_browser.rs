//! The web console in a real browser: headless Chromium over WebDriver
//! (Debian's chromium and chromium-driver, driven by Selenium) runs the
//! custodian's and the auditor's flows against the real server, with curl
//! --aws-sigv4 as AWS KMS; axe-core checks every page. Screenshots land in
//! target/console-screenshots (a few are in docs/console/ for the README).

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

fn token(env: &Env, name: &str, role: &str) -> String {
    env.json(&["admin", "token", "create", name, "--role", role])["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn console_flows_in_headless_chromium() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let axe = here.join("tests/console/node_modules/axe-core/axe.min.js");
    assert!(
        axe.exists(),
        "axe-core is missing: run `npm ci --prefix {}` (scripts/test.sh does)",
        here.join("tests/console").display()
    );
    for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: apt-get install chromium chromium-driver (scripts/test.sh does)"
        );
    }
    let shots = here.join("../../target/console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();

    let env = Env::new();
    let alice = token(&env, "alice", "custodian");
    let ann = token(&env, "ann", "auditor");
    let server = env.serve(&["--admin-listen", "127.0.0.1:0"]);
    let out = env.dir.path().join("serve.stdout");
    let mut admin = String::new();
    eventually("admin listener", || {
        match read(&out)
            .lines()
            .find_map(|l| l.strip_prefix("keyhold admin on "))
        {
            Some(a) => {
                admin = a.replace("127.0.0.1", "localhost");
                true
            }
            None => false,
        }
    });
    let o = Command::new("python3")
        .arg(here.join("tests/console/browser_flows.py"))
        .arg(format!("https://{admin}"))
        .arg(&server.base)
        .arg(&alice)
        .arg(&ann)
        .arg(env.data().join("tls/server.pem"))
        .arg(env.ca())
        .arg(&shots)
        .arg(&axe)
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && text.contains("OK console flows"),
        "{text}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&o.stderr),
        read(&server.log)
    );
}
