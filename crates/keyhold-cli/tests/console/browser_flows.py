"""The console's flows in a real browser: headless Chromium (Debian's
chromium and chromium-driver) driven over WebDriver by Selenium, against a
real Keyhold server. Each page is checked by axe-core (no serious or
critical violations) and photographed.

Arguments: console base URL, XKS base URL, custodian token, auditor token,
the server certificate (PEM; Chromium trusts exactly its key), the CA
(for curl), the screenshot directory, axe.min.js.
"""

import base64
import hashlib
import json
import os
import subprocess
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.support.ui import WebDriverWait

(base, xks, custodian, auditor, server_cert, ca, shots, axe_path) = sys.argv[1:9]
os.environ["SE_OFFLINE"] = "true"  # never let Selenium fetch a driver
AXE = open(axe_path, encoding="utf-8").read()


def spki_hash(pem_path):
    """Base64 SHA-256 of the certificate's public key: the one key Chromium trusts."""
    pub = subprocess.run(["openssl", "x509", "-in", pem_path, "-pubkey", "-noout"],
                         check=True, capture_output=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub,
                         check=True, capture_output=True).stdout
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def browser():
    o = webdriver.ChromeOptions()
    o.binary_location = "/usr/bin/chromium"
    for a in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1280,800",
              "--ignore-certificate-errors-spki-list=" + spki_hash(server_cert)]:
        o.add_argument(a)
    return webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=o)


def fail(what):
    print("FAIL: " + what, file=sys.stderr)
    sys.exit(1)


def check(cond, what):
    if not cond:
        fail(what)


def accessible(d, name):
    """axe-core on the current page: no serious or critical violations."""
    d.execute_script(AXE)
    result = d.execute_async_script(
        "var done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']}).then(done, function (e) { done({error: String(e)}); });")
    check("error" not in result, f"axe failed on {name}: {result}")
    bad = [v for v in result["violations"] if v["impact"] in ("serious", "critical")]
    check(not bad, f"accessibility violations on {name}: " +
          json.dumps([(v["id"], v["impact"], v["help"]) for v in bad]))


def shot(d, name):
    d.save_screenshot(os.path.join(shots, name + ".png"))


def visit(d, path, name=None):
    d.get(base + path)
    if name:
        accessible(d, name)
        shot(d, name)


def sign_in(d, token):
    visit(d, "/ui/login")
    d.find_element(By.ID, "token").send_keys(token)
    submit(d, "/ui/login")
    check("Overview" in d.find_element(By.TAG_NAME, "h1").text, "signed in: " + d.page_source[:1200])


def mark_page(d):
    """Marks the current document: the next one will not carry the mark."""
    d.execute_script("window.__keyholdOld = true;")


def wait_for_next_page(d):
    """Waits until a new document has replaced the marked one and loaded.
    While the browser navigates, a script may fail (no document yet):
    that is "not yet", never an error."""
    def loaded(drv):
        try:
            return drv.execute_script(
                "return window.__keyholdOld !== true && document.readyState === 'complete';")
        except WebDriverException:
            return False
    WebDriverWait(d, 60).until(loaded)


def submit(d, form_action):
    """Sends a form and waits for the page that answers it."""
    mark_page(d)
    d.find_element(By.CSS_SELECTOR, f"form[action='{form_action}'] button[type=submit]").click()
    wait_for_next_page(d)


def xks_encrypt(akid, secret, key):
    body = json.dumps({
        "requestMetadata": {"awsPrincipalArn": "arn:aws:iam::123456789012:user/console-test",
                            "kmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/k",
                            "kmsOperation": "Encrypt", "kmsRequestId": "console-flow-1"},
        "plaintext": base64.b64encode(b"console").decode(), "encryptionAlgorithm": "AES_GCM"})
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "20", "--cacert", ca, "-w", "\n%{http_code}",
         "--aws-sigv4", "aws:amz:us-east-1:kms-xks-proxy", "--user", f"{akid}:{secret}",
         "-H", "Content-Type: application/json", "--data", body,
         f"{xks}/web/kms/xks/v1/keys/{key}/encrypt"],
        capture_output=True, text=True)
    text, code = out.stdout.rsplit("\n", 1)
    return int(code), text


d = browser()
try:
    # The custodian: sign in, a store, a credential (its secret shown
    # once), a key; XKS encrypts with them.
    visit(d, "/ui/login", "login")
    sign_in(d, custodian)
    accessible(d, "overview")
    visit(d, "/ui/stores")
    d.find_element(By.ID, "prefix").send_keys("/web")
    d.find_element(By.ID, "description").send_keys("made in the browser")
    submit(d, "/ui/stores")
    check("Key store /web" in d.find_element(By.TAG_NAME, "h1").text, "store page")
    d.find_element(By.ID, "key_id").send_keys("k1")
    submit(d, "/ui/stores/web/keys")
    check("Key k1" in d.find_element(By.TAG_NAME, "h1").text, "key page")
    accessible(d, "key")
    visit(d, "/ui/stores/web/credentials")
    submit(d, "/ui/stores/web/credentials")
    akid = d.find_element(By.ID, "access-key-id").text
    secret = d.find_element(By.ID, "secret-access-key").text
    check(len(akid) >= 20 and len(secret) >= 43, "a new credential")
    accessible(d, "new credential")
    code, text = xks_encrypt(akid, secret, "k1")
    check(code == 200 and "ciphertext" in text, f"XKS encrypt: {code} {text}")
    visit(d, "/ui/stores/web", "store")
    visit(d, "/ui/stores/web/credentials", "credentials")
    visit(d, "/ui/stores", "stores")
    visit(d, "/ui/", "overview")
    chart = d.find_element(By.CSS_SELECTOR, "figure.chart figcaption").text
    check(chart.startswith("xks: 1 requests"), "the XKS request in the charts: " + chart)

    # Break glass on the key: XKS refuses on the next request.
    visit(d, "/ui/stores/web/keys/k1")
    d.find_element(By.ID, "confirm-disable").click()
    submit(d, "/ui/stores/web/keys/k1/status")
    check("DISABLED" in d.page_source, "key disabled")
    code, text = xks_encrypt(akid, secret, "k1")
    check(code == 400 and "InvalidStateException" in text, f"disabled key: {code} {text}")
    visit(d, "/ui/stores/web/keys/k1", "key-disabled")

    # Lockdown, with its typed confirmation and its banner; then unlock.
    visit(d, "/ui/")
    d.find_element(By.ID, "confirm-lockdown").send_keys("LOCKDOWN")
    submit(d, "/ui/lockdown")
    visit(d, "/ui/stores")
    check("Lockdown is on" in d.page_source and "token alice" in d.page_source, "lockdown banner")
    accessible(d, "lockdown banner")
    shot(d, "lockdown")
    visit(d, "/ui/")
    submit(d, "/ui/lockdown")
    check("Lockdown is on" not in d.page_source, "lockdown lifted")

    # The other pages, each checked by axe-core too.
    for path, name in [("/ui/policies", "policies"), ("/ui/stores/web/policy", "policy"),
                       ("/ui/stores/web/api", "cloud-api"),
                       ("/ui/tokens", "tokens"), ("/ui/kmip", "kmip"), ("/ui/backups", "backups")]:
        visit(d, path, name)

    # Keyboard: the first Tab reaches the skip link, which is then visible.
    visit(d, "/ui/stores")
    d.find_element(By.TAG_NAME, "body").send_keys("\ue004")
    focused = d.switch_to.active_element
    check(focused.get_attribute("class") == "skip", "the skip link takes the first Tab")
    # A narrow window: nothing runs off the side.
    d.set_window_size(400, 800)
    visit(d, "/ui/stores/web")
    wide = d.execute_script("return document.documentElement.scrollWidth > window.innerWidth + 1")
    check(not wide, "the store page fits a 400-pixel window")
    shot(d, "narrow")
    d.set_window_size(1280, 800)
    submit(d, "/ui/logout")
    check("Sign in" in d.find_element(By.TAG_NAME, "h1").text, "signed out")

    # The auditor: no change offered, one refused, the audit search shows
    # the XKS request and the console's changes.
    sign_in(d, auditor)
    visit(d, "/ui/stores/web")
    check(not d.find_elements(By.CSS_SELECTOR, "form[action='/ui/stores/web/status']"),
          "no break glass offered to an auditor")
    check(not d.find_elements(By.CSS_SELECTOR, "form[action='/ui/stores/web/keys']"),
          "no key creation offered to an auditor")
    csrf = d.find_element(By.CSS_SELECTOR, "form.signout input[name=csrf]").get_attribute("value")
    mark_page(d)
    d.execute_script(
        "var f = document.createElement('form'); f.method = 'post';"
        "f.action = '/ui/stores/web/status';"
        "f.innerHTML = '<input name=csrf value=\"' + arguments[0] + '\"><input name=status value=DISABLED>';"
        "document.body.appendChild(f); f.submit();", csrf)
    wait_for_next_page(d)
    check("custodian role" in d.page_source, "the auditor's change is refused: " + d.page_source[:500])
    visit(d, "/ui/audit?frontend=xks", "audit")
    visit(d, "/ui/audit/verify", "audit verification")
    check("The audit log is intact." in d.page_source, "audit verification")
    visit(d, "/ui/audit?frontend=xks")
    check("console-test" in d.page_source or "Encrypt" in d.page_source, "the XKS request in the audit search")
    visit(d, "/ui/audit?frontend=console")
    for what in ["store create", "key create", "key disable", "lockdown", "unlock"]:
        check(what in d.page_source, f"{what} in the console's audit records")
    print("OK console flows")
finally:
    d.quit()
