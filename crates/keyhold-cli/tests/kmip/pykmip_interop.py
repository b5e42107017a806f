"""Interoperability check of Keyhold's KMIP server with PyKMIP's ProxyKmipClient.

Usage: pykmip_interop.py HOST PORT CERT KEY CA VERSION (1.2, 1.4, 2.0 ...)
Exits non-zero with a message on the first mismatch.
"""
import hashlib
import hmac
import os
import sys

from kmip.core import enums
from kmip.pie import exceptions, objects
from kmip.pie.client import ProxyKmipClient

host, port, cert, key, ca, version = sys.argv[1:7]
kv = {
    "1.0": enums.KMIPVersion.KMIP_1_0,
    "1.1": enums.KMIPVersion.KMIP_1_1,
    "1.2": enums.KMIPVersion.KMIP_1_2,
    "1.3": enums.KMIPVersion.KMIP_1_3,
    "1.4": enums.KMIPVersion.KMIP_1_4,
    "2.0": enums.KMIPVersion.KMIP_2_0,
}[version]
tag = version.replace(".", "_")


def check(cond, what):
    if not cond:
        print(f"FAIL ({version}): {what}", file=sys.stderr)
        sys.exit(1)


def expect_failure(reason, fn, *args, **kw):
    try:
        fn(*args, **kw)
    except exceptions.KmipOperationFailure as e:
        check(e.reason == reason, f"{fn.__name__}: reason {e.reason}, wanted {reason}")
        return
    check(False, f"{fn.__name__} succeeded but should fail with {reason}")


with ProxyKmipClient(hostname=host, port=int(port), cert=cert, key=key, ca=ca,
                     kmip_version=kv) as c:
    # Create, get, attributes, activate, locate by name.
    name = f"interop-aes-{tag}"
    uid = c.create(enums.CryptographicAlgorithm.AES, 256, name=name,
                   cryptographic_usage_mask=[enums.CryptographicUsageMask.ENCRYPT,
                                             enums.CryptographicUsageMask.DECRYPT])
    check(isinstance(uid, str) and uid, "create returns a unique identifier")
    k = c.get(uid)
    check(isinstance(k, objects.SymmetricKey), "get returns a symmetric key")
    check(len(k.value) == 32 and k.cryptographic_length == 256, "AES-256 key material")
    _, attrs = c.get_attributes(uid, ["State", "Cryptographic Algorithm", "Name"])
    got = {a.attribute_name.value: a.attribute_value for a in attrs}
    check(got["State"].value == enums.State.PRE_ACTIVE, f"new key is PreActive: {got}")
    check(got["Cryptographic Algorithm"].value == enums.CryptographicAlgorithm.AES, "algorithm")
    names = c.get_attribute_list(uid)
    check("Cryptographic Length" in names and "Name" in names, f"attribute list: {names}")
    c.activate(uid)
    _, attrs = c.get_attributes(uid, ["State"])
    check(attrs[0].attribute_value.value == enums.State.ACTIVE, "activated key is Active")
    found = c.locate(attributes=[
        c.attribute_factory.create_attribute(enums.AttributeType.NAME, name)])
    check(found == [uid], f"locate by name finds the key: {found}")

    # Encrypt / decrypt: AES-CBC with PKCS#5 padding and a given IV.
    params = {
        "cryptographic_algorithm": enums.CryptographicAlgorithm.AES,
        "block_cipher_mode": enums.BlockCipherMode.CBC,
        "padding_method": enums.PaddingMethod.PKCS5,
    }
    iv = os.urandom(16)
    ct, _ = c.encrypt(b"attack at dawn", uid=uid, cryptographic_parameters=params,
                      iv_counter_nonce=iv)
    check(len(ct) == 16, "CBC ciphertext is one padded block")
    pt = c.decrypt(ct, uid=uid, cryptographic_parameters=params, iv_counter_nonce=iv)
    check(pt == b"attack at dawn", "CBC round trip")
    # The server makes the IV when asked to.
    ct2, iv2 = c.encrypt(b"x" * 40, uid=uid, cryptographic_parameters=dict(params, random_iv=True))
    check(iv2 is not None and len(iv2) == 16, "server-made IV returned")
    check(c.decrypt(ct2, uid=uid, cryptographic_parameters=params, iv_counter_nonce=iv2)
          == b"x" * 40, "CBC round trip with a server IV")

    # HMAC: the server's MAC equals one computed from the fetched key.
    muid = c.create(enums.CryptographicAlgorithm.HMAC_SHA256, 256,
                    cryptographic_usage_mask=[enums.CryptographicUsageMask.MAC_GENERATE,
                                              enums.CryptographicUsageMask.MAC_VERIFY])
    c.activate(muid)
    _, mac = c.mac(b"message", uid=muid, algorithm=enums.CryptographicAlgorithm.HMAC_SHA256)
    mkey = c.get(muid).value
    check(mac == hmac.new(mkey, b"message", hashlib.sha256).digest(), "HMAC-SHA256 matches")

    # Register a key and a secret, and fetch them back.
    raw = os.urandom(16)
    ruid = c.register(objects.SymmetricKey(enums.CryptographicAlgorithm.AES, 128, raw,
                                           name=f"interop-reg-{tag}"))
    check(c.get(ruid).value == raw, "registered key comes back")
    # Get the registered key wrapped (NIST key wrap, no encoding) under a
    # key-wrapping key, and unwrap it here with an independent library.
    wk = c.create(enums.CryptographicAlgorithm.AES, 256,
                  cryptographic_usage_mask=[enums.CryptographicUsageMask.WRAP_KEY,
                                            enums.CryptographicUsageMask.UNWRAP_KEY])
    c.activate(wk)
    wrapped = c.get(ruid, key_wrapping_specification={
        "wrapping_method": enums.WrappingMethod.ENCRYPT,
        "encryption_key_information": {
            "unique_identifier": wk,
            "cryptographic_parameters": {
                "block_cipher_mode": enums.BlockCipherMode.NIST_KEY_WRAP},
        },
        "encoding_option": enums.EncodingOption.NO_ENCODING,
    })
    from cryptography.hazmat.primitives.keywrap import aes_key_unwrap
    check(wrapped.value != raw and len(wrapped.value) == 24, "the key comes back wrapped")
    check(aes_key_unwrap(c.get(wk).value, wrapped.value) == raw, "it unwraps to the key")
    # A key that may not wrap cannot be used to wrap.
    expect_failure(enums.ResultReason.INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK
                   if version.startswith("2") else enums.ResultReason.ILLEGAL_OPERATION,
                   c.get, ruid, key_wrapping_specification={
                       "wrapping_method": enums.WrappingMethod.ENCRYPT,
                       "encryption_key_information": {"unique_identifier": muid}})
    secret = os.urandom(96)
    suid = c.register(objects.SecretData(secret, enums.SecretDataType.PASSWORD))
    s = c.get(suid)
    check(isinstance(s, objects.SecretData) and s.value == secret, "96-byte secret data")

    # An RSA key pair: signatures and RSA-OAEP, each checked with an
    # independent library (pyca/cryptography) on the public key Keyhold gives.
    import base64
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding as apad
    U = enums.CryptographicUsageMask
    pub, priv = c.create_key_pair(
        enums.CryptographicAlgorithm.RSA, 2048,
        public_name=f"interop-rsa-pub-{tag}", public_usage_mask=[U.VERIFY, U.ENCRYPT],
        private_name=f"interop-rsa-priv-{tag}", private_usage_mask=[U.SIGN, U.DECRYPT])
    c.activate(pub)
    c.activate(priv)
    pk = c.get(pub)
    check(isinstance(pk, objects.PublicKey)
          and pk.key_format_type == enums.KeyFormatType.PKCS_1, f"public key in PKCS#1: {pk}")
    pem = (b"-----BEGIN RSA PUBLIC KEY-----\n" + base64.encodebytes(pk.value)
           + b"-----END RSA PUBLIC KEY-----\n")
    rsa_pub = serialization.load_pem_public_key(pem)
    check(rsa_pub.key_size == 2048, "a 2048-bit RSA public key")
    sp = {"cryptographic_algorithm": enums.CryptographicAlgorithm.RSA,
          "padding_method": enums.PaddingMethod.PSS,
          "hashing_algorithm": enums.HashingAlgorithm.SHA_256}
    sig = c.sign(b"message", uid=priv, cryptographic_parameters=sp)
    rsa_pub.verify(sig, b"message", apad.PSS(mgf=apad.MGF1(hashes.SHA256()), salt_length=32),
                   hashes.SHA256())
    check(c.signature_verify(b"message", sig, uid=pub, cryptographic_parameters=sp)
          == enums.ValidityIndicator.VALID, "the server verifies its signature")
    check(c.signature_verify(b"massage", sig, uid=pub, cryptographic_parameters=sp)
          == enums.ValidityIndicator.INVALID, "a changed message does not verify")
    # RSA-PSS with SHA-1 (legacy signers): signed and verified by the server,
    # checked by pyca/cryptography; a FIPS build refuses new SHA-1 signatures.
    s1 = dict(sp, hashing_algorithm=enums.HashingAlgorithm.SHA_1)
    if os.environ.get("KEYHOLD_FIPS"):
        expect_failure(enums.ResultReason.FEATURE_NOT_SUPPORTED,
                       c.sign, b"legacy", uid=priv, cryptographic_parameters=s1)
    else:
        sig1 = c.sign(b"legacy", uid=priv, cryptographic_parameters=s1)
        rsa_pub.verify(sig1, b"legacy", apad.PSS(mgf=apad.MGF1(hashes.SHA1()), salt_length=20),
                       hashes.SHA1())
        check(c.signature_verify(b"legacy", sig1, uid=pub, cryptographic_parameters=s1)
              == enums.ValidityIndicator.VALID, "the server verifies its PSS-SHA-1 signature")
        check(c.signature_verify(b"message", sig, uid=pub, cryptographic_parameters=s1)
              == enums.ValidityIndicator.INVALID, "a PSS-SHA-256 signature is not PSS-SHA-1's")
    p1 = dict(sp, padding_method=enums.PaddingMethod.PKCS1v15)
    sig = c.sign(b"message", uid=priv, cryptographic_parameters=p1)
    rsa_pub.verify(sig, b"message", apad.PKCS1v15(), hashes.SHA256())
    op = {"cryptographic_algorithm": enums.CryptographicAlgorithm.RSA,
          "padding_method": enums.PaddingMethod.OAEP,
          "hashing_algorithm": enums.HashingAlgorithm.SHA_256}
    ct = rsa_pub.encrypt(b"wrapped secret", apad.OAEP(mgf=apad.MGF1(hashes.SHA256()),
                                                       algorithm=hashes.SHA256(), label=None))
    check(c.decrypt(ct, uid=priv, cryptographic_parameters=op) == b"wrapped secret",
          "the server decrypts RSA-OAEP made here")
    ct2, _ = c.encrypt(b"and back", uid=pub, cryptographic_parameters=op)
    check(c.decrypt(ct2, uid=priv, cryptographic_parameters=op) == b"and back",
          "RSA-OAEP round trip on the server")
    # The public key cannot sign; the private key signs only when Active.
    expect_failure(enums.ResultReason.ILLEGAL_OPERATION,
                   c.sign, b"m", uid=pub, cryptographic_parameters=sp)
    c.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, priv)
    expect_failure(enums.ResultReason.WRONG_KEY_LIFECYCLE_STATE
                   if version.startswith("2") else enums.ResultReason.PERMISSION_DENIED,
                   c.sign, b"m", uid=priv, cryptographic_parameters=sp)
    c.destroy(priv)
    c.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, pub)
    c.destroy(pub)

    if version.startswith("2"):
        # Ed25519 (KMIP 2.0): a pure EdDSA signature, checked by
        # pyca/cryptography on the public key Keyhold gives.
        epub, epriv = c.create_key_pair(
            enums.CryptographicAlgorithm.ED25519, 256,
            public_usage_mask=[U.VERIFY], private_usage_mask=[U.SIGN])
        c.activate(epub)
        c.activate(epriv)
        ek = c.get(epub)
        check(ek.key_format_type == enums.KeyFormatType.X_509, f"Ed25519 public key in X.509: {ek}")
        ed_pub = serialization.load_der_public_key(ek.value)
        ep = {"cryptographic_algorithm": enums.CryptographicAlgorithm.ED25519}
        sig = c.sign(b"message", uid=epriv, cryptographic_parameters=ep)
        ed_pub.verify(sig, b"message")
        check(c.signature_verify(b"message", sig, uid=epub, cryptographic_parameters=ep)
              == enums.ValidityIndicator.VALID, "the server verifies its Ed25519 signature")

    # Revoke and destroy; a destroyed key's material is gone.
    c.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, uid)
    _, attrs = c.get_attributes(uid, ["State"])
    check(attrs[0].attribute_value.value == enums.State.DEACTIVATED, "revoked key is Deactivated")
    try:
        c.encrypt(b"no", uid=uid, cryptographic_parameters=params, iv_counter_nonce=iv)
        check(False, "encrypt with a revoked key succeeded")
    except exceptions.KmipOperationFailure:
        pass
    c.destroy(uid)
    c.destroy(ruid)
    try:
        c.get(uid)
        check(False, "get of a destroyed key succeeded")
    except exceptions.KmipOperationFailure:
        pass
    _, attrs = c.get_attributes(uid, ["State"])
    check(attrs[0].attribute_value.value == enums.State.DESTROYED, "destroyed key says so")

    # An unknown id.
    expect_failure(enums.ResultReason.OBJECT_NOT_FOUND if version.startswith("2")
                   else enums.ResultReason.ITEM_NOT_FOUND, c.get, "no-such-object")

print(f"OK PyKMIP {version}")
