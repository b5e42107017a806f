//! One custodian, one switch, every cloud: a server serving AWS XKS, Azure
//! Managed HSM (EKM), Microsoft DKE and Google Workspace CSE from four key
//! stores. `keyhold lockdown` refuses every API on its next request, and
//! `store disable` refuses that store's cloud alone; after `unlock` and
//! `store enable` all serve again. The one audit log holds the calls of
//! all four kinds, and verifies.

mod common;

use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use base64::Engine;
use common::idp::*;
use common::*;
use keyhold_server::tls::LocalCa;
use serde_json::json;
use std::process::Command;

const TENANT: &str = "00000000-0000-0000-0000-000000000001";
const DRIVE: &str = "gsuitecse-tokenissuer-drive@system.gserviceaccount.com";
const CN: &str = "test.managedhsmclient.azure.net";

#[test]
fn lockdown_and_store_disable_reach_every_cloud() {
    let env = Env::new();
    let dir = env.dir.path();
    // Azure's client PKI; the IdPs of DKE users, CSE users and Google.
    let ca = LocalCa::new("Managed HSM client CA").unwrap();
    let hsm = ca.issue_client(CN).unwrap();
    let (azure_ca, hsm_cert, hsm_key) = (
        dir.join("az-ca.pem"),
        dir.join("hsm.pem"),
        dir.join("hsm.key"),
    );
    std::fs::write(&azure_ca, ca.cert_pem()).unwrap();
    std::fs::write(&hsm_cert, hsm.cert_pem).unwrap();
    std::fs::write(&hsm_key, hsm.key_pem).unwrap();
    let idps: Vec<Idp> = ["entra", "users", "google"]
        .iter()
        .map(|n| start_idp_in(dir, n))
        .collect();
    let (entra, users, google) = (&idps[0], &idps[1], &idps[2]);

    for (store, args) in [
        ("/demo", vec![]),
        (
            "/az",
            vec![
                "--api",
                "azure-ekm",
                "--path-prefix",
                "/pfx",
                "--client-cn",
                CN,
                "--client-ca",
                azure_ca.to_str().unwrap(),
            ],
        ),
    ] {
        let mut a = vec!["store", "create", store];
        a.extend(args);
        env.run_ok(&a);
    }
    let cred = env.add_credential("/demo");
    env.run_ok(&["key", "create", "/demo", "k"]);
    env.run_ok(&["key", "create", "/az", "k"]);
    env.run_ok(&["store", "create", "/dke"]);
    env.run_ok(&[
        "key",
        "create",
        "/dke",
        "k",
        "--type",
        "rsa-2048",
        "--usage",
        "ENCRYPT,DECRYPT",
    ]);
    env.run_ok(&["store", "create", "/cse"]);
    env.run_ok(&["key", "create", "/cse", "kek"]);
    let server = env.serve(&[
        "--azure-listen",
        "127.0.0.1:0",
        "--hyok-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    let (az_port, hyok_port) = (env.listener_port("azure-ekm"), env.listener_port("hyok"));
    let hyok = format!("https://localhost:{hyok_port}");
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
        &hyok,
        "--jwks-url",
        &format!("https://localhost:{}/keys", entra.port),
        "--jwks-ca",
        entra.ca.to_str().unwrap(),
        "--allow",
        "@contoso.test",
    ]);
    let kacls = format!("{hyok}/cse");
    bind_cse(&env, &kacls, users, google, &[]);
    let data_ca = env.ca();
    let now = keyhold_core::now();

    // One call per cloud; each answers its HTTP status.
    let xks = || demo_encrypt(&server, &cred, "k", b"data key").status;
    let azure = || {
        let out = Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(&data_ca)
            .arg("--cert").arg(&hsm_cert).arg("--key").arg(&hsm_key)
            .args(["-H", "Content-Type: application/json", "--data-binary"])
            .arg(json!({"request_context": {"correlation_id": "c", "pool_name": "p"}, "alg": "A256KW",
                "value": B64URL.encode([9u8; 32])}).to_string())
            .arg(format!("https://localhost:{az_port}/pfx/k/wrapkey?api-version=0.1-preview"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .parse::<u16>()
            .unwrap_or(0)
    };
    let dke_token = entra.mint(
        &json!({"iss": format!("https://sts.windows.net/{TENANT}/"), "aud": hyok,
        "upn": "alice@contoso.test", "exp": now + 3600}),
    );
    let dke = || {
        let k = call(&data_ca, "GET", &format!("{hyok}/dke/k"), None, None);
        if k.status != 200 {
            return k.status;
        }
        // Any 256-byte value reaches the key; a wrong one is a 400, a
        // refused key a 403.
        let kid = k.json()["key"]["kid"].as_str().unwrap().to_owned();
        call(
            &data_ca,
            "POST",
            &format!("{kid}/decrypt"),
            Some(&dke_token),
            Some(&json!({"alg": "RSA-OAEP-256", "value": B64.encode([1u8; 256])}).to_string()),
        )
        .status
    };
    let authn = users.mint(&json!({"iss": "https://idp.test", "aud": "test-client", "email": "bob@example.com", "exp": now + 3600}));
    let authz = google.mint(&json!({"iss": DRIVE, "aud": "cse-authorization", "email": "bob@example.com", "role": "writer",
        "resource_name": "//drive/files/1", "kacls_url": kacls, "exp": now + 3600}));
    let cse = || {
        call(&data_ca, "POST", &format!("{kacls}/wrap"), None,
            Some(&json!({"authentication": authn, "authorization": authz, "key": B64.encode([5u8; 32])}).to_string())).status
    };
    let all = || [xks(), azure(), dke(), cse()];
    // Serving: XKS, Azure and CSE answer 200; DKE's made-up value a 400
    // (the key was used, the value did not decrypt).
    assert_eq!(all(), [200, 200, 400, 200]);

    env.run_ok(&["lockdown"]);
    let locked = all();
    assert_eq!(locked[0], 400, "XKS: InvalidStateException");
    assert_eq!(&locked[1..], &[403, 403, 403], "Azure, DKE, CSE refuse");
    env.run_ok(&["unlock"]);
    assert_eq!(all(), [200, 200, 400, 200]);

    // A store disabled refuses its own cloud only.
    for (store, i) in [("/az", 1), ("/dke", 2), ("/cse", 3)] {
        env.run_ok(&["store", "disable", store]);
        let a = all();
        assert_eq!(a[i], 403, "{store}: {a:?}");
        env.run_ok(&["store", "enable", store]);
    }
    assert_eq!(all(), [200, 200, 400, 200]);

    // One audit log, every cloud, intact.
    let records = env.json(&["audit", "query", "--limit", "10000"]);
    let fronts: std::collections::BTreeSet<String> = records
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["frontend"].as_str().map(str::to_owned))
        .collect();
    for f in ["xks", "azure-ekm", "ms-dke", "google-cse", "admin"] {
        assert!(fronts.contains(f), "{f} missing from {fronts:?}");
    }
    env.run_ok(&["audit", "verify"]);
}
