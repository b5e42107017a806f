"""Microsoft Office's side of Double Key Encryption, with Python requests.

    python3 dke_office.py KEY_URL CA TOKEN

Follows what Office (and Microsoft's key_store_tester.ps1) does: GET the
key URL, check the answer's shape (kty RSA, alg RS256, n standard base64,
e a number, kid under the same host, cache.exp), rebuild the public key,
RSA-OAEP-SHA-256 encrypt a 44-byte key blob locally, POST it to
kid + "/decrypt" first without a token (expecting 401 and the challenge),
then with the bearer token, and compare. Prints a JSON report.
"""
import base64, json, os, sys
from urllib.parse import urlparse
import requests
from cryptography.hazmat.primitives.asymmetric import rsa, padding
from cryptography.hazmat.primitives import hashes

url, ca, token = sys.argv[1], sys.argv[2], sys.argv[3]
s = requests.Session()
s.verify = ca
s.trust_env = False  # REQUESTS_CA_BUNDLE would override the CA given here
r = s.get(url)
r.raise_for_status()
k = r.json()["key"]
assert k["kty"] == "RSA", k
assert k["alg"] == "RS256", k
assert isinstance(k["e"], int), k
assert urlparse(k["kid"]).netloc == urlparse(url).netloc, k
assert k["kid"].startswith(url + "/"), k
n = int.from_bytes(base64.b64decode(k["n"], validate=True), "big")
pub = rsa.RSAPublicNumbers(k["e"], n).public_key()
blob = bytes.fromhex("2c00ffff2000100002100000") + os.urandom(32)
ct = pub.encrypt(blob, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None))
body = {"alg": "RSA-OAEP-256", "value": base64.b64encode(ct).decode()}
# Without a token: the challenge tells Office where to get one.
c = s.post(k["kid"] + "/decrypt", json=body)
challenge = {
    "status": c.status_code,
    "www_authenticate": c.headers.get("WWW-Authenticate", ""),
    "resource": c.headers.get("resource", ""),
    "authorization": c.headers.get("authorization", ""),
}
d = s.post(k["kid"] + "/decrypt", json=body, headers={"Authorization": "Bearer " + token})
ok = d.status_code == 200 and base64.b64decode(d.json()["value"]) == blob
print(json.dumps({
    "kid": k["kid"], "cache": r.json().get("cache"), "key_bits": n.bit_length(),
    "challenge": challenge, "decrypt_status": d.status_code, "round_trip": ok,
    "ciphertext": base64.b64encode(ct).decode(),
}))
