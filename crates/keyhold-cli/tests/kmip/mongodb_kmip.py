"""MongoDB's KMIP client (libmongocrypt, through pymongo's ClientEncryption
and pymongocrypt) against Keyhold, in both of its modes:
- data keys wrapped under a KMIP Secret Data object (Register, Activate, Get);
- delegated encryption (Create, Activate, Encrypt, Decrypt).
No MongoDB server: the key vault collection is stood in for by a dict.
Prints "OK mongodb" when both round trips hold.

Usage: mongodb_kmip.py PORT CLIENT_CERT_AND_KEY_PEM CA_PEM
"""

import sys

import bson
from bson.binary import STANDARD
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient
from pymongo.encryption import Algorithm, ClientEncryption

port, cert_key, ca = sys.argv[1:4]
KMS = {"kmip": {"endpoint": f"localhost:{port}"}}
TLS = {"kmip": {"tlsCAFile": ca, "tlsCertificateKeyFile": cert_key}}
OPTS = CodecOptions(uuid_representation=STANDARD)
VAULT = {}


def stand_in_vault(ce):
    """Points the key vault callbacks at VAULT (no MongoDB)."""

    def insert_data_key(data_key):
        doc = RawBSONDocument(data_key)
        VAULT[bytes(doc["_id"])] = bytes(data_key)
        return doc["_id"]

    def fetch_keys(filter):
        f = bson.decode(filter)
        ids, names = set(), set()

        def walk(x):
            if isinstance(x, dict):
                for k, v in x.items():
                    if k == "_id" and isinstance(v, dict) and "$in" in v:
                        ids.update(bytes(i) for i in v["$in"])
                    elif k == "keyAltNames" and isinstance(v, dict) and "$in" in v:
                        names.update(v["$in"])
                    else:
                        walk(v)
            elif isinstance(x, list):
                for v in x:
                    walk(v)

        walk(f)
        for raw in VAULT.values():
            d = bson.decode(raw)
            if bytes(d["_id"]) in ids or names & set(d.get("keyAltNames", [])):
                yield raw

    ce._io_callbacks.insert_data_key = insert_data_key
    ce._io_callbacks.fetch_keys = fetch_keys


def client_encryption():
    never = MongoClient("mongodb://127.0.0.1:1", connect=False, serverSelectionTimeoutMS=1)
    ce = ClientEncryption(KMS, "keyvault.datakeys", never, OPTS, kms_tls_options=TLS)
    stand_in_vault(ce)
    return ce


def round_trip(master_key, value, algorithm):
    ce = client_encryption()
    kid = ce.create_data_key("kmip", master_key=master_key)
    ct = ce.encrypt(value, algorithm, key_id=kid)
    ce.close()
    # A fresh client has no cached data key: it asks Keyhold again.
    ce = client_encryption()
    back = ce.decrypt(ct)
    ce.close()
    assert back == value, (back, value)


round_trip({}, "secret data mode", Algorithm.AEAD_AES_256_CBC_HMAC_SHA_512_Deterministic)
round_trip({"delegated": True}, "delegated mode", Algorithm.AEAD_AES_256_CBC_HMAC_SHA_512_Random)
print("OK mongodb")
