//! Microsoft Double Key Encryption end to end: the real `keyhold` binary
//! serves a key store bound with `keyhold store api … ms-dke` on its HTTPS
//! listener; a throw-away Entra ID (tests/clouds/idp.py: PyJWT, its JWK
//! set on loopback HTTPS) mints the users' tokens; Office is played by
//! Python `requests` (tests/clouds/dke_office.py: GET the key, encrypt
//! locally with RSA-OAEP-256, POST to kid + "/decrypt" without and with a
//! token) and curl plays every error case of the reference service.

mod common;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::idp::*;
use common::*;
use serde_json::json;
use std::process::Command;

const TENANT: &str = "00000000-0000-0000-0000-000000000001";

/// Entra ID (v1) tokens for a user, over these claims.
trait EntraTokens {
    fn token(&self, aud: &str, extra: serde_json::Value) -> String;
}

impl EntraTokens for Idp {
    /// A token with these claims over the defaults (Entra v1 style).
    fn token(&self, aud: &str, extra: serde_json::Value) -> String {
        let now = keyhold_core::now();
        let mut c = json!({
            "iss": format!("https://sts.windows.net/{TENANT}/"),
            "aud": aud, "tid": TENANT, "oid": "11111111-2222", "appid": "d3590ed6-52b3-4102-aeff-aad2292ab01c",
            "upn": "alice@contoso.test", "iat": now, "nbf": now - 5, "exp": now + 3600,
            "uti": format!("uti-{}", rand_suffix()),
        });
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        self.mint(&c)
    }
}

fn decrypt_body(ct_b64: &str) -> String {
    json!({"alg": "RSA-OAEP-256", "value": ct_b64}).to_string()
}

#[test]
fn office_gets_the_public_key_and_decrypts_with_an_entra_token() {
    let env = Env::new();
    let idp = start_idp(env.dir.path());
    env.run_ok(&["store", "create", "/dke"]);
    env.run_ok(&[
        "key",
        "create",
        "/dke",
        "doc-key",
        "--type",
        "rsa-2048",
        "--usage",
        "ENCRYPT,DECRYPT",
    ]);
    env.run_ok(&["key", "create", "/dke", "ec-key", "--type", "ec-p256"]);
    env.run_ok(&["key", "create", "/dke", "aes-key"]);
    let _server = env.serve(&[
        "--hyok-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    let port = env.listener_port("hyok");
    let aud = format!("https://localhost:{port}");
    // Bound while the server runs (through the admin API).
    env.run_ok(&[
        "store",
        "api",
        "/dke",
        "ms-dke",
        "--path-prefix",
        "/dke",
        "--tenant",
        TENANT,
        "--audience",
        &aud,
        "--jwks-url",
        &format!("https://localhost:{}/keys", idp.port),
        "--jwks-ca",
        idp.ca.to_str().unwrap(),
        "--allow",
        "alice@contoso.test",
        "--allow",
        "@partner.test",
        "--allow-group",
        "g-finance",
    ]);
    let ca = env.ca();
    let key_url = format!("{aud}/dke/doc-key");

    // Office, played by Python requests.
    let alice = idp.token(&aud, json!({}));
    let out = Command::new("python3")
        .arg(script("dke_office.py"))
        .arg(&key_url)
        .arg(&ca)
        .arg(&alice)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["round_trip"], true, "{r}");
    assert_eq!(r["kid"], format!("{key_url}/1"));
    assert_eq!(r["key_bits"], 2048);
    let exp = r["cache"]["exp"].as_str().unwrap();
    assert_eq!(exp.len(), 19, "yyyy-MM-ddTHH:mm:ss: {exp}");
    // The challenge, as key_store_tester.ps1 checks it.
    assert_eq!(r["challenge"]["status"], 401);
    let www = r["challenge"]["www_authenticate"].as_str().unwrap();
    assert!(www.starts_with("Bearer "), "{www}");
    assert!(www.contains(&format!("resource=\"{aud}\"")), "{www}");
    assert!(www.contains(&format!("realm=\"{aud}\"")), "{www}");
    assert!(www.contains("authorization=\"https://login.windows.net/common/oauth2/authorize\""));
    assert_eq!(r["challenge"]["resource"], aud.as_str());
    assert_eq!(
        r["challenge"]["authorization"],
        "https://login.windows.net/common/oauth2/authorize"
    );
    let ct = r["ciphertext"].as_str().unwrap().to_owned();
    let decrypt_url = format!("{key_url}/1/decrypt");

    // Who may decrypt: a listed user, a user of a listed domain, a member
    // of a listed group; not anyone else (403, empty body).
    let ok = |t: &str| call(&ca, "POST", &decrypt_url, Some(t), Some(&decrypt_body(&ct)));
    assert_eq!(
        ok(&idp.token(&aud, json!({"upn": "Carol@Partner.test"}))).status,
        200
    );
    let member = idp.token(
        &aud,
        json!({"upn": "dave@else.test", "groups": ["g-other", "g-finance"]}),
    );
    assert_eq!(ok(&member).status, 200);
    let bob = ok(&idp.token(&aud, json!({"upn": "bob@contoso.test"})));
    assert_eq!((bob.status, bob.body.as_str()), (403, ""), "{bob:?}");
    // The email claim counts first.
    assert_eq!(
        ok(&idp.token(
            &aud,
            json!({"upn": "x@y.test", "email": "alice@contoso.test"})
        ))
        .status,
        200
    );
    // No email or upn: 400.
    assert_eq!(ok(&idp.token(&aud, json!({"upn": null}))).status, 400);

    // The IdP rotates its signing key: the first token under the new key
    // makes Keyhold fetch the JWK set again. (Before the made-up key ids
    // below: after one of those, the set is fetched again only once the
    // 10-second refresh floor has passed.)
    idp.post("/rotate", json!({}));
    assert_eq!(ok(&idp.token(&aud, json!({}))).status, 200);

    // Bad tokens: 401 with the challenge.
    let now = keyhold_core::now();
    for (why, t) in [
        ("another audience", idp.token("https://elsewhere.test", json!({}))),
        ("another tenant", idp.token(&aud, json!({"iss": "https://sts.windows.net/99999999-0000-0000-0000-000000000000/"}))),
        ("expired", idp.token(&aud, json!({"exp": now - 3600, "nbf": now - 7200}))),
        ("not yet valid", idp.token(&aud, json!({"nbf": now + 3600}))),
        ("unknown signer", idp.post("/mint", json!({"kid": "nope", "claims": {"iss": format!("https://sts.windows.net/{TENANT}/"), "aud": aud, "upn": "alice@contoso.test", "exp": now + 600}}))
),
        ("garbage", "not.a.token".to_owned()),
    ] {
        let a = ok(&t);
        assert_eq!(a.status, 401, "{why}: {a:?}");
        assert!(a.headers.to_ascii_lowercase().contains("www-authenticate: bearer"), "{why}");
    }
    // A token signed by a key its header does not name: 401.
    let a = call(
        &ca,
        "POST",
        &decrypt_url,
        Some(&format!("{}x", &alice[..alice.len() - 1])),
        Some(&decrypt_body(&ct)),
    );
    assert_eq!(a.status, 401, "{a:?}");

    // Bad requests: 400; missing keys and versions: 404; wrong methods: 405.
    let bad = |body: &str| call(&ca, "POST", &decrypt_url, Some(&alice), Some(body)).status;
    assert_eq!(
        bad(&json!({"alg": "RSA-OAEP", "value": ct}).to_string()),
        400
    );
    assert_eq!(bad(&json!({"alg": "RS256", "value": ct}).to_string()), 400);
    assert_eq!(
        bad(&json!({"alg": "RSA-OAEP-256", "value": "%%%"}).to_string()),
        400
    );
    assert_eq!(
        bad(&json!({"alg": "RSA-OAEP-256", "value": B64.encode([1u8; 255])}).to_string()),
        400
    );
    let mut flipped = B64.decode(&ct).unwrap();
    flipped[10] ^= 1;
    assert_eq!(bad(&decrypt_body(&B64.encode(&flipped))), 400);
    assert_eq!(bad("{not json"), 400);
    assert_eq!(
        call(&ca, "GET", &format!("{aud}/dke/no-such-key"), None, None).status,
        404
    );
    assert_eq!(
        call(
            &ca,
            "POST",
            &format!("{key_url}/9/decrypt"),
            Some(&alice),
            Some(&decrypt_body(&ct))
        )
        .status,
        404
    );
    assert_eq!(
        call(
            &ca,
            "POST",
            &format!("{aud}/dke/no-such-key/1/decrypt"),
            Some(&alice),
            Some(&decrypt_body(&ct))
        )
        .status,
        404
    );
    assert_eq!(
        call(&ca, "POST", &key_url, Some(&alice), Some("{}")).status,
        405
    );
    assert_eq!(call(&ca, "GET", &decrypt_url, None, None).status, 405);
    // Keys DKE cannot publish.
    assert_eq!(
        call(&ca, "GET", &format!("{aud}/dke/ec-key"), None, None).status,
        403
    );
    assert_eq!(
        call(&ca, "GET", &format!("{aud}/dke/aes-key"), None, None).status,
        403
    );
    // No store at this path.
    assert_eq!(
        call(&ca, "GET", &format!("{aud}/other/doc-key"), None, None).status,
        404
    );

    // Break glass: the key, then the store, refuse on the next request.
    env.run_ok(&["key", "disable", "/dke", "doc-key"]);
    assert_eq!(call(&ca, "GET", &key_url, None, None).status, 403);
    assert_eq!(ok(&alice).status, 403);
    env.run_ok(&["key", "enable", "/dke", "doc-key"]);
    assert_eq!(ok(&alice).status, 200);
    env.run_ok(&["store", "disable", "/dke"]);
    assert_eq!(ok(&alice).status, 403);
    assert_eq!(call(&ca, "GET", &key_url, None, None).status, 403);
    env.run_ok(&["store", "enable", "/dke"]);
    // A key policy on the user's address (secondary authorization).
    let pol = env.dir.path().join("p.toml");
    std::fs::write(
        &pol,
        "[[rule]]\nname = \"only-alice\"\neffect = \"allow\"\nprincipal = [\"alice@*\"]\n",
    )
    .unwrap();
    env.run_ok(&[
        "policy",
        "set",
        "--store",
        "/dke",
        "--key",
        "doc-key",
        "--file",
        pol.to_str().unwrap(),
    ]);
    assert_eq!(ok(&member).status, 403);
    assert_eq!(ok(&alice).status, 200);
    // A rule on the token's groups: members of g-finance only.
    std::fs::write(
        &pol,
        "[[rule]]\nname = \"finance\"\neffect = \"allow\"\ngroup = [\"g-fin*\"]\n",
    )
    .unwrap();
    env.run_ok(&[
        "policy",
        "set",
        "--store",
        "/dke",
        "--key",
        "doc-key",
        "--file",
        pol.to_str().unwrap(),
    ]);
    assert_eq!(ok(&member).status, 200);
    assert_eq!(ok(&alice).status, 403);
    env.run_ok(&["policy", "remove", "--store", "/dke", "--key", "doc-key"]);
    // A rotated key publishes its new version; the old one still decrypts.
    env.run_ok(&["key", "rotate", "/dke", "doc-key"]);
    let k = call(&ca, "GET", &key_url, None, None).json();
    assert_eq!(k["key"]["kid"], format!("{key_url}/2"));
    assert_eq!(ok(&alice).status, 200, "version 1 still decrypts");

    // The audit log: every call, the user, the token's facts; no plaintext.
    let records = env.json(&["audit", "query", "--frontend", "ms-dke", "--limit", "1000"]);
    let records = records.as_array().unwrap();
    let d = records
        .iter()
        .find(|r| {
            r["operation"] == "decrypt" && r["result"] == "OK" && r["actor"] == "alice@contoso.test"
        })
        .expect("alice's decrypt");
    assert_eq!(
        (
            d["store"].as_str(),
            d["key"].as_str(),
            d["key_version"].as_u64()
        ),
        (Some("/dke"), Some("doc-key"), Some(1))
    );
    assert!(
        d["context"]
            .as_str()
            .unwrap()
            .contains(&format!("tid={TENANT}")),
        "{d}"
    );
    assert!(d["request_id"].as_str().unwrap().starts_with("uti-"));
    assert!(records
        .iter()
        .any(|r| r["operation"] == "publickey" && r["result"] == "OK"));
    assert!(records
        .iter()
        .any(|r| r["result"] == "Forbidden" && r["actor"] == "bob@contoso.test"));
    assert!(records
        .iter()
        .any(|r| r["rule"] == "(no rule allows)" || r["result"] == "Forbidden"));
    // The store lists as ms-dke.
    let listed = env.json(&["store", "show", "/dke"]);
    assert_eq!(listed[0]["api"], "ms-dke", "{listed}");
    assert_eq!(listed[0]["ms_dke"]["audience"], aud.as_str());
}

#[test]
fn dke_bindings_are_checked() {
    let env = Env::new();
    env.run_ok(&["store", "create", "/d"]);
    let fails = |args: &[&str]| {
        let out = env.cmd(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = fails(&[
        "store", "api", "/d", "ms-dke", "--tenant", TENANT, "--allow", "a@b.test",
    ]);
    assert!(e.contains("audience"), "{e}");
    let e = fails(&[
        "store",
        "api",
        "/d",
        "ms-dke",
        "--tenant",
        TENANT,
        "--audience",
        "https://h.test",
    ]);
    assert!(e.contains("who may decrypt"), "{e}");
    let e = fails(&[
        "store",
        "api",
        "/d",
        "ms-dke",
        "--audience",
        "https://h.test",
        "--allow",
        "a@b.test",
    ]);
    assert!(e.contains("issuer"), "{e}");
    let e = fails(&[
        "store",
        "api",
        "/d",
        "ms-dke",
        "--tenant",
        TENANT,
        "--audience",
        "http://h.test",
        "--allow",
        "a@b.test",
    ]);
    assert!(e.contains("https"), "{e}");
    let e = fails(&[
        "store",
        "api",
        "/d",
        "ms-dke",
        "--tenant",
        TENANT,
        "--audience",
        "https://h.test",
        "--allow",
        "a@b.test",
        "--client-cn",
        "x",
    ]);
    assert!(e.contains("client certificate"), "{e}");
    env.run_ok(&[
        "store",
        "api",
        "/d",
        "ms-dke",
        "--tenant",
        TENANT,
        "--audience",
        "https://h.test",
        "--allow",
        "a@b.test",
    ]);
    let v = env.json(&["store", "show", "/d"]);
    assert_eq!(
        v[0]["ms_dke"]["jwks_url"],
        "https://login.microsoftonline.com/common/discovery/keys"
    );
    assert_eq!(
        v[0]["ms_dke"]["issuers"][0],
        format!("https://sts.windows.net/{TENANT}/")
    );
}
