"""An XKS client built from Python `requests` and botocore's SigV4 signer,
as an independent client of the XKS tests: health with and without the
required requestMetadata, a CDIV on a key that may not decrypt, an 8 MiB
body (which http.client sends whole before it reads the answer), and a
round trip. Prints "OK requests" when every check holds.

Usage: requests_client.py BASE_URL CA_FILE ACCESS_KEY_ID SECRET
"""

import base64
import json
import sys

import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

BASE, CA, AKID, SECRET = sys.argv[1:5]
API = BASE + "/demo/kms/xks/v1"
CREDS = Credentials(AKID, SECRET)
META = {
    "awsPrincipalArn": "arn:aws:iam::123456789012:user/Alice",
    "kmsKeyArn": "arn:aws:kms:us-east-2:123456789012:key/1234abcd",
    "kmsOperation": "Encrypt",
    "kmsRequestId": "requests-1",
}


def post(path, body):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    if isinstance(data, str):
        data = data.encode()
    req = AWSRequest(
        method="POST",
        url=API + path,
        data=data,
        headers={"Content-Type": "application/json"},
    )
    SigV4Auth(CREDS, "kms-xks-proxy", "us-west-2").add_auth(req)
    return requests.post(
        API + path, data=data, headers=dict(req.headers.items()), verify=CA, timeout=60
    )


def expect(r, status, name, what):
    assert r.status_code == status, f"{what}: {r.status_code} {r.text[:300]}"
    if name:
        body = r.json()
        assert body.get("errorName") == name, f"{what}: {body}"
        assert body.get("errorMessage"), f"{what}: {body}"


def main():
    ok = post("/health", {"requestMetadata": {"kmsRequestId": "h", "kmsOperation": "KmsHealthCheck"}})
    expect(ok, 200, None, "health")
    assert ok.json()["ekmFleetDetails"][0]["healthStatus"] == "ACTIVE", ok.text
    for body in ({}, {"requestMetadata": {}}, {"requestMetadata": {"kmsOperation": "KmsHealthCheck"}}):
        expect(post("/health", body), 400, "ValidationException", f"health with {body}")

    for aad in (None, base64.b64encode(b"context").decode()):
        body = {
            "requestMetadata": META,
            "plaintext": base64.b64encode(b"data key").decode(),
            "encryptionAlgorithm": "AES_GCM",
            "ciphertextDataIntegrityValueAlgorithm": "SHA_256",
        }
        if aad:
            body["additionalAuthenticatedData"] = aad
        r = post("/keys/enc-only/encrypt", body)
        expect(r, 400, "InvalidKeyUsageException", f"CDIV on an encrypt-only key (aad={aad})")
        assert "ciphertext" not in r.json()

    # Far over the limit: sent whole by http.client, answered readably.
    big = json.dumps({"requestMetadata": META, "plaintext": "A" * (8 << 20), "encryptionAlgorithm": "AES_GCM"})
    expect(post("/keys/k1/encrypt", big), 413, "ValidationException", "an 8 MiB body")

    # And the server still serves, on a new connection and the same session.
    enc = post(
        "/keys/k1/encrypt",
        {"requestMetadata": META, "plaintext": base64.b64encode(b"hello").decode(), "encryptionAlgorithm": "AES_GCM"},
    )
    expect(enc, 200, None, "encrypt")
    e = enc.json()
    dec = post(
        "/keys/k1/decrypt",
        {
            "requestMetadata": dict(META, kmsOperation="Decrypt"),
            "encryptionAlgorithm": "AES_GCM",
            "ciphertext": e["ciphertext"],
            "ciphertextMetadata": e["ciphertextMetadata"],
            "initializationVector": e["initializationVector"],
            "authenticationTag": e["authenticationTag"],
        },
    )
    expect(dec, 200, None, "decrypt")
    assert base64.b64decode(dec.json()["plaintext"]) == b"hello"
    print("OK requests")


main()
