//! Google Workspace client-side encryption end to end: the real `keyhold`
//! binary as the KACLS of a key store bound with `keyhold store api …
//! google-cse`; two throw-away identity providers (tests/clouds/idp.py)
//! play the customer's IdP (authentication tokens) and Google's token
//! issuer (authorization tokens, `aud` cse-authorization); curl plays
//! Google's client following the KACLS reference: status, CORS, wrap,
//! unwrap, digest, privileged wrap and unwrap, and every check of the
//! reference's list with its structured error.

mod common;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::idp::*;
use common::*;
use serde_json::{json, Value};
use std::process::Command;

const DRIVE: &str = "gsuitecse-tokenissuer-drive@system.gserviceaccount.com";
const MIGRATION: &str = "apps-security-cse-kaclscommunication@system.gserviceaccount.com";
const RESOURCE: &str = "//googleapis.com/drive/files/abc";

struct Kacls<'a> {
    base: String,
    ca: std::path::PathBuf,
    users: &'a Idp,
    google: &'a Idp,
}

impl Kacls<'_> {
    fn authn(&self, email: &str, extra: Value) -> String {
        let now = keyhold_core::now();
        let mut c = json!({"iss": "https://idp.test", "aud": "test-client", "email": email,
            "iat": now, "exp": now + 600});
        merge(&mut c, extra);
        self.users.mint(&c)
    }

    fn authz(&self, email: &str, role: &str, extra: Value) -> String {
        let now = keyhold_core::now();
        let mut c = json!({"iss": DRIVE, "aud": "cse-authorization", "email": email,
            "role": role, "resource_name": RESOURCE, "perimeter_id": "",
            "kacls_url": format!("{}", self.base), "iat": now, "exp": now + 600,
            "jti": format!("authz-{}", rand_suffix())});
        merge(&mut c, extra);
        self.google.mint(&c)
    }

    fn post(&self, method: &str, body: Value) -> Answer {
        call(
            &self.ca,
            "POST",
            &format!("{}/{method}", self.base),
            None,
            Some(&body.to_string()),
        )
    }

    fn wrap(&self, key: &[u8], email: &str) -> Answer {
        self.post(
            "wrap",
            json!({"authentication": self.authn(email, json!({})),
                "authorization": self.authz(email, "writer", json!({})),
                "key": B64.encode(key), "reason": "{client:'drive' op:'create'}"}),
        )
    }

    fn unwrap(&self, wrapped: &str, authn: String, authz: String) -> Answer {
        self.post(
            "unwrap",
            json!({"authentication": authn, "authorization": authz,
                "wrapped_key": wrapped, "reason": "{client:'drive' op:'read'}"}),
        )
    }
}

fn merge(c: &mut Value, extra: Value) {
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
}

/// The structured error: `code` repeats the status; a message says why.
fn assert_error(a: &Answer, status: u16) {
    assert_eq!(a.status, status, "{a:?}");
    let v = a.json();
    assert_eq!(v["code"], status, "{a:?}");
    assert!(
        v["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{a:?}"
    );
}

/// Google's resource key hash, computed here with Python's hmac.
fn expected_hash(dek: &[u8], resource: &str, perimeter: &str) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import base64,hmac,hashlib,sys; k=bytes.fromhex(sys.argv[1]); \
             print(base64.b64encode(hmac.new(k, ('ResourceKeyDigest:'+sys.argv[2]+':'+sys.argv[3]).encode(), hashlib.sha256).digest()).decode())",
            &dek.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            resource,
            perimeter,
        ])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn google_workspace_wraps_and_unwraps_through_the_kacls() {
    let env = Env::new();
    let users = start_idp_in(env.dir.path(), "users");
    let google = start_idp_in(env.dir.path(), "google");
    let (_server, base) = kacls_server(&env);
    bind_cse(
        &env,
        &base,
        &users,
        &google,
        &[
            "--allow-domain",
            "example.com",
            "--privileged",
            "admin@example.com",
        ],
    );
    let k = Kacls {
        base: base.clone(),
        ca: env.ca(),
        users: &users,
        google: &google,
    };

    // status, and CORS for Google's pages.
    let s = call(&k.ca, "GET", &format!("{base}/status"), None, None);
    assert_eq!(s.status, 200, "{s:?}");
    let sv = s.json();
    assert_eq!(sv["server_type"], "KACLS");
    assert_eq!(sv["vendor_id"], "Keyhold");
    assert!(sv["operations_supported"]
        .as_array()
        .unwrap()
        .contains(&json!("unwrap")));
    let pre = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-D",
            "-",
            "-X",
            "OPTIONS",
            "--cacert",
        ])
        .arg(&k.ca)
        .args([
            "-H",
            "Origin: https://client-side-encryption.google.com",
            "-H",
            "Access-Control-Request-Method: POST",
        ])
        .arg(format!("{base}/wrap"))
        .output()
        .unwrap();
    let pre = String::from_utf8_lossy(&pre.stdout).to_ascii_lowercase();
    assert!(
        pre.contains("access-control-allow-origin: https://client-side-encryption.google.com"),
        "{pre}"
    );
    assert!(
        pre.contains("access-control-allow-methods:") && pre.contains("post"),
        "{pre}"
    );

    // wrap as a writer (the two tokens' addresses differ in case only),
    // unwrap as a reader: the same key.
    let dek: Vec<u8> = (0u8..32).collect();
    let w = k.post(
        "wrap",
        json!({"authentication": k.authn("alice@example.com", json!({})),
            "authorization": k.authz("Alice@Example.com", "writer", json!({})),
            "key": B64.encode(&dek), "reason": "{client:'drive' op:'create'}"}),
    );
    assert_eq!(w.status, 200, "{w:?}");
    let wrapped = w.json()["wrapped_key"].as_str().unwrap().to_owned();
    assert!(B64.decode(&wrapped).unwrap().len() < 1024);
    let u = k.unwrap(
        &wrapped,
        k.authn("alice@example.com", json!({})),
        k.authz("alice@example.com", "reader", json!({})),
    );
    assert_eq!(u.status, 200, "{u:?}");
    assert_eq!(B64.decode(u.json()["key"].as_str().unwrap()).unwrap(), dek);
    // A writer may unwrap too; an upgrader may wrap.
    assert_eq!(
        k.unwrap(
            &wrapped,
            k.authn("alice@example.com", json!({})),
            k.authz("alice@example.com", "writer", json!({}))
        )
        .status,
        200
    );
    let up = k.post("wrap", json!({"authentication": k.authn("alice@example.com", json!({})),
        "authorization": k.authz("alice@example.com", "upgrader", json!({})), "key": B64.encode(&dek)}));
    assert_eq!(up.status, 200, "{up:?}");
    // Google's pages get CORS headers on answers too.
    let cors = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-D", "-", "--cacert"])
        .arg(&k.ca)
        .args(["-H", "Origin: https://client-side-encryption.google.com", "-H", "Content-Type: application/json", "--data-binary"])
        .arg(json!({"authentication": k.authn("alice@example.com", json!({})), "authorization": k.authz("alice@example.com", "reader", json!({})), "wrapped_key": wrapped}).to_string())
        .arg(format!("{base}/unwrap"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&cors.stdout)
        .to_ascii_lowercase()
        .contains("access-control-allow-origin: https://client-side-encryption.google.com"));

    // digest: the resource key hash, for a migration verifier.
    let d = k.post("digest", json!({"authorization": k.google.mint(&{
        let now = keyhold_core::now();
        json!({"iss": MIGRATION, "aud": "cse-authorization", "email": "alice@example.com", "role": "verifier",
            "resource_name": RESOURCE, "kacls_url": base, "iat": now, "exp": now + 600})
    }), "wrapped_key": wrapped, "reason": "migration check"}));
    assert_eq!(d.status, 200, "{d:?}");
    assert_eq!(
        d.json()["resource_key_hash"],
        expected_hash(&dek, RESOURCE, "")
    );

    // privilegedwrap and privilegedunwrap, for an administrator only.
    let pw = k.post("privilegedwrap", json!({"authentication": k.authn("admin@example.com", json!({})),
        "key": B64.encode(b"import-key-0123456789abcdef"), "resource_name": "//googleapis.com/drive/files/imported",
        "perimeter_id": "", "reason": "import"}));
    assert_eq!(pw.status, 200, "{pw:?}");
    let pwk = pw.json()["wrapped_key"].as_str().unwrap().to_owned();
    let pu = k.post("privilegedunwrap", json!({"authentication": k.authn("admin@example.com", json!({})),
        "wrapped_key": pwk, "resource_name": "//googleapis.com/drive/files/imported", "reason": "takeout"}));
    assert_eq!(pu.status, 200, "{pu:?}");
    assert_eq!(
        B64.decode(pu.json()["key"].as_str().unwrap()).unwrap(),
        b"import-key-0123456789abcdef"
    );
    assert_error(&k.post("privilegedunwrap", json!({"authentication": k.authn("alice@example.com", json!({})),
        "wrapped_key": pwk, "resource_name": "//googleapis.com/drive/files/imported", "reason": "takeout"})), 403);
    // privileged unwrap for another resource than the wrap's: refused.
    assert_error(&k.post("privilegedunwrap", json!({"authentication": k.authn("admin@example.com", json!({})),
        "wrapped_key": pwk, "resource_name": "//googleapis.com/drive/files/other", "reason": "takeout"})), 403);

    // ---- the reference's checks, each with its status ----
    let alice_n = || k.authn("alice@example.com", json!({}));
    let reader = |extra: Value| k.authz("alice@example.com", "reader", extra);
    // Another user in the authorization token: 403.
    assert_error(
        &k.unwrap(
            &wrapped,
            alice_n(),
            k.authz("bob@example.com", "reader", json!({})),
        ),
        403,
    );
    // google_email in the authentication token counts first.
    assert_eq!(
        k.unwrap(
            &wrapped,
            k.authn(
                "alice@idp-alias.test",
                json!({"google_email": "alice@example.com"})
            ),
            reader(json!({}))
        )
        .status,
        200
    );
    // A reader may not wrap.
    assert_error(&k.post("wrap", json!({"authentication": alice_n(), "authorization": reader(json!({})), "key": B64.encode(&dek)})), 403);
    // Another KACLS's URL.
    assert_error(
        &k.unwrap(
            &wrapped,
            alice_n(),
            reader(json!({"kacls_url": "https://rogue.example/cse"})),
        ),
        403,
    );
    // Expired authorization, wrong audiences, unknown signer, a user-IdP
    // token passed as Google's: 401.
    let now = keyhold_core::now();
    assert_error(
        &k.unwrap(&wrapped, alice_n(), reader(json!({"exp": now - 3600}))),
        401,
    );
    assert_error(
        &k.unwrap(
            &wrapped,
            alice_n(),
            reader(json!({"aud": "something-else"})),
        ),
        401,
    );
    assert_error(
        &k.unwrap(
            &wrapped,
            k.authn("alice@example.com", json!({"aud": "other-client"})),
            reader(json!({})),
        ),
        401,
    );
    let unknown_kid = k.google.post("/mint", json!({"kid": "nope", "claims": {"iss": DRIVE, "aud": "cse-authorization",
        "email": "alice@example.com", "role": "reader", "resource_name": RESOURCE, "kacls_url": base, "exp": now + 600}}));
    assert_error(&k.unwrap(&wrapped, alice_n(), unknown_kid), 401);
    let forged = k.users.mint(
        &json!({"iss": DRIVE, "aud": "cse-authorization", "email": "alice@example.com",
        "role": "reader", "resource_name": RESOURCE, "kacls_url": base, "exp": now + 600}),
    );
    assert_error(&k.unwrap(&wrapped, alice_n(), forged), 401);
    assert_error(&k.unwrap(&wrapped, alice_n(), "not.a.token".into()), 401);
    // Guests: refused (not allowed by this binding).
    assert_error(
        &k.unwrap(
            &wrapped,
            alice_n(),
            reader(json!({"email_type": "google-visitor"})),
        ),
        403,
    );
    // The perimeter: a user outside example.com.
    assert_error(
        &k.unwrap(
            &wrapped,
            k.authn("carol@other.test", json!({})),
            k.authz("carol@other.test", "reader", json!({})),
        ),
        403,
    );
    // Delegation claims that do not agree.
    assert_error(
        &k.unwrap(
            &wrapped,
            k.authn(
                "alice@example.com",
                json!({"delegated_to": "svc@example.com", "resource_name": RESOURCE}),
            ),
            reader(json!({"delegated_to": "other@example.com"})),
        ),
        403,
    );
    // Another resource: 403; a damaged wrapped key: 400.
    assert_error(
        &k.unwrap(
            &wrapped,
            alice_n(),
            reader(json!({"resource_name": "//googleapis.com/drive/files/xyz"})),
        ),
        403,
    );
    let mut bad = B64.decode(&wrapped).unwrap();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert_error(
        &k.unwrap(&B64.encode(&bad), alice_n(), reader(json!({}))),
        400,
    );
    assert_error(
        &k.unwrap("bm90IGEgd3JhcHBlZCBrZXk=", alice_n(), reader(json!({}))),
        400,
    );
    // Sizes: a key over 128 bytes, a reason over 1 KB.
    assert_error(&k.wrap(&[7u8; 129], "alice@example.com"), 400);
    assert_error(
        &k.post(
            "unwrap",
            json!({"authentication": alice_n(), "authorization": reader(json!({})),
        "wrapped_key": wrapped, "reason": "x".repeat(1025)}),
        ),
        400,
    );
    assert_error(
        &k.post(
            "unwrap",
            json!({"authorization": reader(json!({})), "wrapped_key": wrapped}),
        ),
        401,
    );
    assert_error(
        &call(
            &k.ca,
            "POST",
            &format!("{base}/unwrap"),
            None,
            Some("{not json"),
        ),
        400,
    );
    // Methods not served, and GET on a POST method.
    assert_error(&k.post("privatekeyencrypt", json!({})), 501);
    assert_error(
        &call(&k.ca, "GET", &format!("{base}/wrap"), None, None),
        405,
    );

    // A policy on the KEK by resource: nothing under hr-* is wrapped.
    let pol = env.dir.path().join("p.toml");
    std::fs::write(&pol, "[[rule]]\nname = \"no-hr\"\neffect = \"deny\"\nresource = [\"//googleapis.com/drive/files/hr-*\"]\n").unwrap();
    env.run_ok(&[
        "policy",
        "set",
        "--store",
        "/cse",
        "--key",
        "kek",
        "--file",
        pol.to_str().unwrap(),
    ]);
    let hr = k.post("wrap", json!({"authentication": alice_n(),
        "authorization": k.authz("alice@example.com", "writer", json!({"resource_name": "//googleapis.com/drive/files/hr-1"})),
        "key": B64.encode(&dek)}));
    assert_error(&hr, 403);
    assert_eq!(k.wrap(&dek, "alice@example.com").status, 200);
    env.run_ok(&["policy", "remove", "--store", "/cse", "--key", "kek"]);

    // The KEK rotates: new wraps use version 2, older values still open.
    env.run_ok(&["key", "rotate", "/cse", "kek"]);
    let w2 = k.wrap(&dek, "alice@example.com");
    assert_eq!(w2.status, 200);
    let w2 = w2.json()["wrapped_key"].as_str().unwrap().to_owned();
    assert_eq!(&B64.decode(&w2).unwrap()[3..7], &2u32.to_be_bytes());
    assert_eq!(k.unwrap(&wrapped, alice_n(), reader(json!({}))).status, 200);
    assert_eq!(k.unwrap(&w2, alice_n(), reader(json!({}))).status, 200);
    // Break glass: the KEK, then the store.
    env.run_ok(&["key", "disable", "/cse", "kek"]);
    assert_error(&k.unwrap(&wrapped, alice_n(), reader(json!({}))), 403);
    env.run_ok(&["key", "enable", "/cse", "kek"]);
    env.run_ok(&["store", "disable", "/cse"]);
    assert_error(&k.wrap(&dek, "alice@example.com"), 403);
    env.run_ok(&["store", "enable", "/cse"]);
    assert_eq!(k.unwrap(&wrapped, alice_n(), reader(json!({}))).status, 200);

    // The audit log: every call, the user, the resource and the reason;
    // never a key.
    let records = env.json(&[
        "audit",
        "query",
        "--frontend",
        "google-cse",
        "--limit",
        "1000",
    ]);
    let records = records.as_array().unwrap();
    let r = records
        .iter()
        .find(|r| r["operation"] == "wrap" && r["result"] == "OK")
        .expect("a wrap");
    assert_eq!(r["actor"], "alice@example.com");
    assert_eq!(r["store"], "/cse");
    assert!(
        r["context"]
            .as_str()
            .unwrap()
            .contains(&format!("resource={RESOURCE}")),
        "{r}"
    );
    assert!(
        r["context"]
            .as_str()
            .unwrap()
            .contains("reason={client:'drive' op:'create'}"),
        "{r}"
    );
    assert!(records
        .iter()
        .any(|r| r["operation"] == "privilegedunwrap" && r["actor"] == "admin@example.com"));
    assert!(records.iter().any(|r| r["result"] == "Unauthenticated"));
    assert!(records.iter().any(|r| r["result"] == "PermissionDenied"));
    let all = serde_json::to_string(records).unwrap();
    assert!(!all.contains(&B64.encode(&dek)), "no key in the audit log");
    let listed = env.json(&["store", "show", "/cse"]);
    assert_eq!(listed[0]["api"], "google-cse");
    assert_eq!(listed[0]["google_cse"]["kacls_url"], base.as_str());
}

/// A KACLS with a store /cse (KEK `kek`, token-signing key `jwt`) served
/// on its own hold-your-own-key listener: (server, its KACLS URL).
fn kacls_server(env: &Env) -> (Server, String) {
    env.run_ok(&["store", "create", "/cse"]);
    env.run_ok(&["key", "create", "/cse", "kek"]);
    env.run_ok(&[
        "key",
        "create",
        "/cse",
        "jwt",
        "--type",
        "rsa-2048",
        "--usage",
        "SIGN,VERIFY",
    ]);
    let server = env.serve(&[
        "--hyok-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    let port = env.listener_port("hyok");
    (server, format!("https://localhost:{port}/cse"))
}

fn bind(env: &Env, base: &str, users: &Idp, google: &Idp, peer: &str, peer_ca: &std::path::Path) {
    bind_cse(
        env,
        base,
        users,
        google,
        &[
            "--migration-peer",
            peer,
            "--peer-ca",
            peer_ca.to_str().unwrap(),
            "--signing-key",
            "jwt",
        ],
    );
}

/// Google's migration from KACLS 1 to KACLS 2, as the reference describes
/// it: `rewrap` on KACLS 2 makes a token of its own (signed by its signing
/// key, published at its /certs), calls KACLS 1's privilegedunwrap, which
/// fetches KACLS 2's keys to check it, and wraps the key again under its
/// own KEK; the new value unwraps on KACLS 2 to the same key, with the
/// same resource key hash.
#[test]
fn keys_migrate_from_one_kacls_to_another() {
    let one = Env::new();
    let two = Env::new();
    let idps = one.dir.path().join("idps");
    let (users, google) = (start_idp_in(&idps, "users"), start_idp_in(&idps, "google"));
    let (_s1, base1) = kacls_server(&one);
    let (_s2, base2) = kacls_server(&two);
    bind(&one, &base1, &users, &google, &base2, &two.ca());
    bind(&two, &base2, &users, &google, &base1, &one.ca());
    let k1 = Kacls {
        base: base1.clone(),
        ca: one.ca(),
        users: &users,
        google: &google,
    };
    let k2 = Kacls {
        base: base2.clone(),
        ca: two.ca(),
        users: &users,
        google: &google,
    };

    let dek = b"a data key of thirty-two bytes!!".to_vec();
    let w = k1.wrap(&dek, "alice@example.com");
    assert_eq!(w.status, 200, "{w:?}");
    let old = w.json()["wrapped_key"].as_str().unwrap().to_owned();

    // KACLS 2 publishes its token keys.
    let certs = call(&k2.ca, "GET", &format!("{base2}/certs"), None, None).json();
    assert_eq!(certs["keys"][0]["kid"], "jwt-v1", "{certs}");
    assert_eq!(certs["keys"][0]["kty"], "RSA");

    let migrator = |kacls: &str| {
        let now = keyhold_core::now();
        google.mint(&json!({"iss": MIGRATION, "aud": "cse-authorization", "email": "alice@example.com",
            "role": "migrator", "resource_name": RESOURCE, "kacls_url": kacls, "iat": now, "exp": now + 600}))
    };
    let r = k2.post(
        "rewrap",
        json!({"authorization": migrator(&base2), "original_kacls_url": base1,
        "wrapped_key": old, "reason": "migration"}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let new = r.json()["wrapped_key"].as_str().unwrap().to_owned();
    assert_eq!(
        r.json()["resource_key_hash"],
        expected_hash(&dek, RESOURCE, "")
    );
    assert_ne!(new, old);
    let u = k2.unwrap(
        &new,
        k2.authn("alice@example.com", json!({})),
        k2.authz("alice@example.com", "reader", json!({})),
    );
    assert_eq!(u.status, 200, "{u:?}");
    assert_eq!(B64.decode(u.json()["key"].as_str().unwrap()).unwrap(), dek);
    // KACLS 1 recorded who unwrapped: KACLS 2, by its token.
    let rec = one.json(&[
        "audit",
        "query",
        "--frontend",
        "google-cse",
        "--operation",
        "privilegedunwrap",
    ]);
    assert!(
        rec.as_array()
            .unwrap()
            .iter()
            .any(|r| r["actor"] == format!("kacls:{base2}") && r["result"] == "OK"),
        "{rec}"
    );

    // Only peers: another original KACLS is refused before any call, and
    // a migrator token for another KACLS too.
    assert_error(
        &k2.post(
            "rewrap",
            json!({"authorization": migrator(&base2),
        "original_kacls_url": "https://evil.example/cse", "wrapped_key": old}),
        ),
        403,
    );
    assert_error(
        &k2.post(
            "rewrap",
            json!({"authorization": migrator(&base1),
        "original_kacls_url": base1, "wrapped_key": old}),
        ),
        403,
    );
    // A writer may not rewrap.
    assert_error(
        &k2.post(
            "rewrap",
            json!({"authorization": k2.authz("alice@example.com", "writer", json!({})),
        "original_kacls_url": base1, "wrapped_key": old}),
        ),
        403,
    );
}

fn openssl(dir: &std::path::Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Gmail's S/MIME keys: an administrator wraps a private key with
/// `wrapprivatekey`; a user's client decrypts a message key (PKCS#1 v1.5,
/// and OAEP with SHA-256) and signs a digest with it, under Gmail's
/// authorization for that very public key (`spki_hash`); the privileged
/// decrypt checks the hash it is given. OpenSSL makes the key, encrypts
/// and verifies.
#[test]
fn gmail_private_keys_decrypt_and_sign() {
    let env = Env::new();
    let dir = env.dir.path().to_path_buf();
    let (users, google) = (start_idp_in(&dir, "users"), start_idp_in(&dir, "google"));
    let (_s, base) = kacls_server(&env);
    bind_cse(
        &env,
        &base,
        &users,
        &google,
        &["--privileged", "admin@example.com"],
    );
    let k = Kacls {
        base: base.clone(),
        ca: env.ca(),
        users: &users,
        google: &google,
    };
    openssl(
        &dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "smime.pem",
        ],
    );
    openssl(
        &dir,
        &["pkey", "-in", "smime.pem", "-pubout", "-out", "pub.pem"],
    );
    let spki = openssl(
        &dir,
        &["pkey", "-in", "smime.pem", "-pubout", "-outform", "DER"],
    );
    let spki_hash = B64.encode(keyhold_crypto::asym::digest(
        keyhold_crypto::asym::Hash::Sha256,
        &spki,
    ));
    let pem = std::fs::read_to_string(dir.join("smime.pem")).unwrap();

    let w = k.post(
        "wrapprivatekey",
        json!({"authentication": k.authn("admin@example.com", json!({})),
        "private_key": pem, "perimeter_id": ""}),
    );
    assert_eq!(w.status, 200, "{w:?}");
    let wrapped = w.json()["wrapped_private_key"].as_str().unwrap().to_owned();
    assert!(!wrapped.contains("PRIVATE"), "wrapped, not the PEM");
    // Only an administrator wraps private keys.
    assert_error(
        &k.post(
            "wrapprivatekey",
            json!({"authentication": k.authn("alice@example.com", json!({})), "private_key": pem}),
        ),
        403,
    );

    let gmail = |role: &str, spki: &str| {
        let now = keyhold_core::now();
        k.google.mint(&json!({"iss": "gsuitecse-tokenissuer-gmail@system.gserviceaccount.com", "aud": "cse-authorization",
            "email": "alice@example.com", "role": role, "kacls_url": base, "spki_hash": spki, "spki_hash_algorithm": "SHA-256",
            "resource_name": "//gmail.googleapis.com/gmail/users/alice@example.com/settings/cse/keypairs/1",
            "message_id": "<m1@example.com>", "iat": now, "exp": now + 600}))
    };
    // A message key, encrypted by OpenSSL with PKCS#1 v1.5 and with OAEP.
    std::fs::write(dir.join("dek"), b"message key 0123456789abcdef!!").unwrap();
    let ct_pkcs1 = openssl(
        &dir,
        &[
            "pkeyutl", "-encrypt", "-pubin", "-inkey", "pub.pem", "-in", "dek",
        ],
    );
    let ct_oaep = openssl(
        &dir,
        &[
            "pkeyutl",
            "-encrypt",
            "-pubin",
            "-inkey",
            "pub.pem",
            "-in",
            "dek",
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            "rsa_oaep_md:sha256",
            "-pkeyopt",
            "rsa_mgf1_md:sha256",
        ],
    );
    for (alg, ct) in [
        ("RSA/ECB/PKCS1Padding", &ct_pkcs1),
        ("RSA/ECB/OAEPwithSHA-256andMGF1Padding", &ct_oaep),
    ] {
        let d = k.post("privatekeydecrypt", json!({"authentication": k.authn("alice@example.com", json!({})),
            "authorization": gmail("decrypter", &spki_hash), "algorithm": alg,
            "encrypted_data_encryption_key": B64.encode(ct), "wrapped_private_key": wrapped, "reason": "read"}));
        assert_eq!(d.status, 200, "{alg}: {d:?}");
        assert_eq!(
            B64.decode(d.json()["data_encryption_key"].as_str().unwrap())
                .unwrap(),
            b"message key 0123456789abcdef!!"
        );
    }
    // A signature over the digest of the signed attributes, which OpenSSL
    // verifies as a signature of them.
    std::fs::write(dir.join("attrs"), b"signed attributes of an S/MIME message").unwrap();
    let digest = keyhold_crypto::asym::digest(
        keyhold_crypto::asym::Hash::Sha256,
        b"signed attributes of an S/MIME message",
    );
    let s = k.post("privatekeysign", json!({"authentication": k.authn("alice@example.com", json!({})),
        "authorization": gmail("signer", &spki_hash), "algorithm": "SHA256withRSA", "digest": B64.encode(&digest),
        "wrapped_private_key": wrapped, "reason": "send"}));
    assert_eq!(s.status, 200, "{s:?}");
    std::fs::write(
        dir.join("sig"),
        B64.decode(s.json()["signature"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    let v = Command::new("openssl")
        .current_dir(&dir)
        .args([
            "dgst",
            "-sha256",
            "-verify",
            "pub.pem",
            "-signature",
            "sig",
            "attrs",
        ])
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));

    // The authorization must be for this key, and the role for the method.
    let decrypt = |role: &str, spki: &str, alg: &str, ct: &[u8]| {
        k.post(
            "privatekeydecrypt",
            json!({"authentication": k.authn("alice@example.com", json!({})),
            "authorization": gmail(role, spki), "algorithm": alg,
            "encrypted_data_encryption_key": B64.encode(ct), "wrapped_private_key": wrapped}),
        )
    };
    let other = B64.encode([7u8; 32]);
    assert_error(
        &decrypt("decrypter", &other, "RSA/ECB/PKCS1Padding", &ct_pkcs1),
        403,
    );
    assert_error(
        &decrypt("signer", &spki_hash, "RSA/ECB/PKCS1Padding", &ct_pkcs1),
        403,
    );
    // Unknown algorithm, damaged ciphertext: 400.
    assert_error(
        &decrypt("decrypter", &spki_hash, "RSA/NONE/NoPadding", &ct_pkcs1),
        400,
    );
    let mut bad = ct_oaep.clone();
    bad[3] ^= 1;
    assert_error(
        &decrypt(
            "decrypter",
            &spki_hash,
            "RSA/ECB/OAEPwithSHA-256andMGF1Padding",
            &bad,
        ),
        400,
    );
    // The privileged decrypt (Gmail export) checks the hash it is given.
    let pd = |hash: &str| {
        k.post("privilegedprivatekeydecrypt", json!({"authentication": k.authn("admin@example.com", json!({})),
        "algorithm": "RSA/ECB/PKCS1Padding", "encrypted_data_encryption_key": B64.encode(&ct_pkcs1),
        "spki_hash": hash, "spki_hash_algorithm": "SHA-256", "wrapped_private_key": wrapped, "reason": "export"}))
    };
    assert_eq!(pd(&spki_hash).status, 200);
    assert_error(&pd(&other), 403);
}

/// `delegate`: a user's client asks for a short-lived token for a delegate
/// (`delegated_to`) and one resource; the KACLS signs it with its own key,
/// and accepts it as the delegate's authentication — only together with an
/// authorization naming the same delegate and resource.
#[test]
fn delegated_tokens_serve_their_delegate_and_resource_only() {
    let env = Env::new();
    let dir = env.dir.path().to_path_buf();
    let (users, google) = (start_idp_in(&dir, "users"), start_idp_in(&dir, "google"));
    let (_s, base) = kacls_server(&env);
    bind_cse(&env, &base, &users, &google, &["--signing-key", "jwt"]);
    let k = Kacls {
        base: base.clone(),
        ca: env.ca(),
        users: &users,
        google: &google,
    };
    let dek = [3u8; 32];
    let w = k.wrap(&dek, "alice@example.com");
    assert_eq!(w.status, 200, "{w:?}");
    let wrapped = w.json()["wrapped_key"].as_str().unwrap().to_owned();

    let delegating = json!({"delegated_to": "svc@example.com"});
    let d = k.post("delegate", json!({"authentication": k.authn("alice@example.com", json!({})),
        "authorization": k.authz("alice@example.com", "reader", delegating.clone()), "reason": "share"}));
    assert_eq!(d.status, 200, "{d:?}");
    let delegated = d.json()["delegated_authentication"]
        .as_str()
        .unwrap()
        .to_owned();
    // The delegate unwraps with it and a matching authorization.
    let u = k.unwrap(
        &wrapped,
        delegated.clone(),
        k.authz("alice@example.com", "reader", delegating.clone()),
    );
    assert_eq!(u.status, 200, "{u:?}");
    assert_eq!(B64.decode(u.json()["key"].as_str().unwrap()).unwrap(), dek);
    // Not without delegated_to in the authorization, not for another
    // delegate or another resource.
    assert_error(
        &k.unwrap(
            &wrapped,
            delegated.clone(),
            k.authz("alice@example.com", "reader", json!({})),
        ),
        403,
    );
    assert_error(
        &k.unwrap(
            &wrapped,
            delegated.clone(),
            k.authz(
                "alice@example.com",
                "reader",
                json!({"delegated_to": "other@example.com"}),
            ),
        ),
        403,
    );
    assert_error(
        &k.unwrap(
            &wrapped,
            delegated.clone(),
            k.authz(
                "alice@example.com",
                "reader",
                json!({"delegated_to": "svc@example.com", "resource_name": "//other"}),
            ),
        ),
        403,
    );
    // A delegation needs delegated_to; a tampered delegated token is refused.
    assert_error(
        &k.post(
            "delegate",
            json!({"authentication": k.authn("alice@example.com", json!({})),
        "authorization": k.authz("alice@example.com", "reader", json!({}))}),
        ),
        400,
    );
    // (A signature byte in the middle: the last base64url character
    // carries bits that decoding may drop.)
    let mid = delegated.len() - 20;
    let flip = if &delegated[mid..mid + 1] == "A" {
        "B"
    } else {
        "A"
    };
    let forged = format!("{}{flip}{}", &delegated[..mid], &delegated[mid + 1..]);
    assert_error(
        &k.unwrap(
            &wrapped,
            forged,
            k.authz("alice@example.com", "reader", delegating),
        ),
        401,
    );
}
