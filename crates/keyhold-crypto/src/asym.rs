//! Asymmetric keys: RSA (2048, 3072, 4096 bits), ECDSA on P-256, P-384 and
//! P-521, and Ed25519 — generation, the DER forms keys travel in, signing
//! and verification, and RSA-OAEP. Everything is aws-lc-rs; this module only
//! chooses its algorithms and converts between encodings. RSA signatures
//! with SHA-1 (PSS; PKCS#1 v1.5 signing) and RSA-OAEP whose MGF1 hash
//! differs from the message's, which aws-lc-rs has no API for, are AWS-LC's
//! own through the `evp` module.
//!
//! Private keys are DER: PKCS#1 `RSAPrivateKey` for RSA, PKCS#8 for EC and
//! Ed25519 (either form is accepted for RSA). Public keys are DER: PKCS#1
//! `RSAPublicKey` for RSA, X.509 `SubjectPublicKeyInfo` for EC and Ed25519
//! (either form is accepted for RSA). Private keys only ever leave in
//! [`SecretBytes`].

use crate::{CryptoError, SecretBytes};
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{
    KeyPair as RsaKeyPair, KeySize, OaepAlgorithm, OaepPrivateDecryptingKey,
    OaepPublicEncryptingKey, PrivateDecryptingKey, PublicEncryptingKey, PublicKey as RsaPublicKey,
    OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OAEP_SHA384_MGF1SHA384, OAEP_SHA512_MGF1SHA512,
};
use aws_lc_rs::signature::{self as sig, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};

/// The kinds of key pair Keyhold makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairKind {
    /// RSA with a modulus of 2048, 3072 or 4096 bits.
    Rsa(u32),
    EcP256,
    EcP384,
    EcP521,
    Ed25519,
}

impl PairKind {
    /// The key's size in bits, as KMIP's Cryptographic Length counts it.
    pub fn bits(self) -> u32 {
        match self {
            Self::Rsa(b) => b,
            Self::EcP256 | Self::Ed25519 => 256,
            Self::EcP384 => 384,
            Self::EcP521 => 521,
        }
    }
}

/// A new key pair: the private key (PKCS#1 for RSA, PKCS#8 otherwise) and
/// the public key (PKCS#1 for RSA, SubjectPublicKeyInfo otherwise).
pub struct NewPair {
    pub private: SecretBytes,
    pub public: Vec<u8>,
}

/// Hash functions of signatures and OAEP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

/// Signature schemes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignScheme {
    /// RSASSA-PKCS1-v1_5.
    RsaPkcs1(Hash),
    /// RSASSA-PSS with MGF1 of the same hash and a salt as long as the hash.
    RsaPss(Hash),
    /// RSASSA-PSS with MGF1 of the same hash and the longest salt the key
    /// allows (modulus bytes − hash bytes − 2).
    RsaPssMaxSalt(Hash),
    /// ECDSA, the signature DER-encoded (X9.62).
    Ecdsa(Hash),
    Ed25519,
}

fn failed<E>(_: E) -> CryptoError {
    CryptoError::Failed
}

/// Generates a key pair.
pub fn generate(kind: PairKind) -> Result<NewPair, CryptoError> {
    match kind {
        PairKind::Rsa(bits) => {
            let size = match bits {
                2048 => KeySize::Rsa2048,
                3072 => KeySize::Rsa3072,
                4096 => KeySize::Rsa4096,
                _ => return Err(CryptoError::InvalidKeyLength),
            };
            let kp = RsaKeyPair::generate(size).map_err(failed)?;
            let pkcs8: Pkcs8V1Der<'static> = kp.as_der().map_err(failed)?;
            Ok(NewPair {
                private: rsa_private_to_pkcs1(pkcs8.as_ref())?,
                public: kp.public_key().as_ref().to_vec(),
            })
        }
        PairKind::EcP256 | PairKind::EcP384 | PairKind::EcP521 => {
            let alg = ec_signing(kind)?;
            let kp = EcdsaKeyPair::generate(alg).map_err(failed)?;
            let pkcs8 = kp.to_pkcs8v1().map_err(failed)?;
            let spki: PublicKeyX509Der<'static> = kp.public_key().as_der().map_err(failed)?;
            Ok(NewPair {
                private: SecretBytes::new(pkcs8.as_ref().to_vec()),
                public: spki.as_ref().to_vec(),
            })
        }
        PairKind::Ed25519 => {
            let kp = Ed25519KeyPair::generate().map_err(failed)?;
            let pkcs8 = kp.to_pkcs8v1().map_err(failed)?;
            let spki: PublicKeyX509Der<'static> = kp.public_key().as_der().map_err(failed)?;
            Ok(NewPair {
                private: SecretBytes::new(pkcs8.as_ref().to_vec()),
                public: spki.as_ref().to_vec(),
            })
        }
    }
}

fn ec_signing(kind: PairKind) -> Result<&'static sig::EcdsaSigningAlgorithm, CryptoError> {
    Ok(match kind {
        PairKind::EcP256 => &sig::ECDSA_P256_SHA256_ASN1_SIGNING,
        PairKind::EcP384 => &sig::ECDSA_P384_SHA384_ASN1_SIGNING,
        PairKind::EcP521 => &sig::ECDSA_P521_SHA512_ASN1_SIGNING,
        _ => return Err(CryptoError::Failed),
    })
}

/// An RSA private key in PKCS#1, from PKCS#1 or PKCS#8 DER (checked).
pub fn rsa_private_to_pkcs1(der: &[u8]) -> Result<SecretBytes, CryptoError> {
    if RsaKeyPair::from_der(der).is_ok() {
        return Ok(SecretBytes::new(der.to_vec()));
    }
    RsaKeyPair::from_pkcs8(der).map_err(failed)?;
    let info = pkcs8::PrivateKeyInfo::try_from(der).map_err(failed)?;
    Ok(SecretBytes::new(info.private_key.to_vec()))
}

/// An RSA private key in PKCS#8, from PKCS#1 or PKCS#8 DER (checked).
pub fn rsa_private_to_pkcs8(der: &[u8]) -> Result<SecretBytes, CryptoError> {
    let kp = RsaKeyPair::from_der(der)
        .or_else(|_| RsaKeyPair::from_pkcs8(der))
        .map_err(failed)?;
    let pkcs8: Pkcs8V1Der<'static> = kp.as_der().map_err(failed)?;
    Ok(SecretBytes::new(pkcs8.as_ref().to_vec()))
}

/// An RSA public key in PKCS#1, from PKCS#1 or SubjectPublicKeyInfo DER.
pub fn rsa_public_to_pkcs1(der: &[u8]) -> Result<Vec<u8>, CryptoError> {
    Ok(RsaPublicKey::from_der(der)
        .map_err(failed)?
        .as_ref()
        .to_vec())
}

/// An RSA public key as SubjectPublicKeyInfo, from PKCS#1 or SPKI DER.
pub fn rsa_public_to_spki(der: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let k = RsaPublicKey::from_der(der).map_err(failed)?;
    let spki: PublicKeyX509Der<'static> = k.as_der().map_err(failed)?;
    Ok(spki.as_ref().to_vec())
}

/// The size in bits of an RSA key (private or public, any accepted form).
pub fn rsa_bits(der: &[u8]) -> Result<u32, CryptoError> {
    if let Ok(k) = RsaPublicKey::from_der(der) {
        return Ok((k.modulus_len() * 8) as u32);
    }
    let kp = RsaKeyPair::from_der(der)
        .or_else(|_| RsaKeyPair::from_pkcs8(der))
        .map_err(failed)?;
    Ok((kp.public_modulus_len() * 8) as u32)
}

/// A private key parsed once, to sign or decrypt with many times (parsing
/// and checking an RSA key costs more than a signature).
pub struct PrivateKey(Parsed);

enum Parsed {
    Rsa {
        pair: RsaKeyPair,
        oaep: OaepPrivateDecryptingKey,
    },
    Ec(EcdsaKeyPair, Hash),
    Ed25519(Ed25519KeyPair),
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKey(..)")
    }
}

impl PrivateKey {
    /// Parses and checks a private key (see the module's forms).
    pub fn parse(der: &[u8]) -> Result<Self, CryptoError> {
        // RSA, PKCS#1 or PKCS#8: parsed (and checked) once for signing; the
        // decrypting key is built from the pair's own PKCS#8.
        if let Ok(pair) = RsaKeyPair::from_der(der).or_else(|_| RsaKeyPair::from_pkcs8(der)) {
            let pkcs8: Pkcs8V1Der<'static> = pair.as_der().map_err(failed)?;
            let dk = PrivateDecryptingKey::from_pkcs8(pkcs8.as_ref()).map_err(failed)?;
            let oaep = OaepPrivateDecryptingKey::new(dk).map_err(failed)?;
            return Ok(Self(Parsed::Rsa { pair, oaep }));
        }
        for (alg, h) in [
            (&sig::ECDSA_P256_SHA256_ASN1_SIGNING, Hash::Sha256),
            (&sig::ECDSA_P384_SHA384_ASN1_SIGNING, Hash::Sha384),
            (&sig::ECDSA_P521_SHA512_ASN1_SIGNING, Hash::Sha512),
        ] {
            // PKCS#8, or SEC1's ECPrivateKey (RFC 5915).
            if let Ok(k) = EcdsaKeyPair::from_pkcs8(alg, der)
                .or_else(|_| EcdsaKeyPair::from_private_key_der(alg, der))
            {
                return Ok(Self(Parsed::Ec(k, h)));
            }
        }
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map(|k| Self(Parsed::Ed25519(k)))
            .map_err(failed)
    }

    /// The public key as an X.509 SubjectPublicKeyInfo (DER), for every
    /// kind of key.
    pub fn public_spki(&self) -> Result<Vec<u8>, CryptoError> {
        let der: PublicKeyX509Der<'static> = match &self.0 {
            Parsed::Rsa { pair, .. } => pair.public_key().as_der().map_err(failed)?,
            Parsed::Ec(k, _) => k.public_key().as_der().map_err(failed)?,
            Parsed::Ed25519(k) => k.public_key().as_der().map_err(failed)?,
        };
        Ok(der.as_ref().to_vec())
    }

    /// The kind of key it is.
    pub fn kind(&self) -> PairKind {
        match &self.0 {
            Parsed::Rsa { pair, .. } => PairKind::Rsa((pair.public_modulus_len() * 8) as u32),
            Parsed::Ec(_, Hash::Sha384) => PairKind::EcP384,
            Parsed::Ec(_, Hash::Sha512) => PairKind::EcP521,
            Parsed::Ec(..) => PairKind::EcP256,
            Parsed::Ed25519(_) => PairKind::Ed25519,
        }
    }

    /// The key's size in bits.
    pub fn bits(&self) -> u32 {
        match &self.0 {
            Parsed::Rsa { pair, .. } => (pair.public_modulus_len() * 8) as u32,
            Parsed::Ec(_, Hash::Sha384) => 384,
            Parsed::Ec(_, Hash::Sha512) => 521,
            Parsed::Ec(..) | Parsed::Ed25519(_) => 256,
        }
    }

    /// Signs `msg`; the scheme must be one of the key's.
    pub fn sign(&self, scheme: SignScheme, msg: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match (&self.0, scheme) {
            // SHA-1 (legacy signers): AWS-LC through the `evp` module.
            (
                Parsed::Rsa { .. },
                SignScheme::RsaPkcs1(Hash::Sha1)
                | SignScheme::RsaPss(Hash::Sha1)
                | SignScheme::RsaPssMaxSalt(Hash::Sha1),
            ) => {
                let salt = match scheme {
                    SignScheme::RsaPkcs1(_) => None,
                    _ => Some(pss_salt(scheme, self.bits())),
                };
                let pkcs1 = self.rsa_pkcs1()?;
                let d = digest(Hash::Sha1, msg);
                crate::evp::sign_digest(pkcs1.expose(), Hash::Sha1, salt, &d)
            }
            (
                Parsed::Rsa { pair, .. },
                SignScheme::RsaPkcs1(_) | SignScheme::RsaPss(_) | SignScheme::RsaPssMaxSalt(_),
            ) => {
                let mut out = vec![0u8; pair.public_modulus_len()];
                pair.sign(rsa_signing(scheme)?, &SystemRandom::new(), msg, &mut out)
                    .map_err(failed)?;
                Ok(out)
            }
            // The curve fixes the hash (P-256 with SHA-256, and so on).
            (Parsed::Ec(k, own), SignScheme::Ecdsa(h)) if *own == h => {
                let s = k.sign(&SystemRandom::new(), msg).map_err(failed)?;
                Ok(s.as_ref().to_vec())
            }
            (Parsed::Ed25519(k), SignScheme::Ed25519) => Ok(k.sign(msg).as_ref().to_vec()),
            _ => Err(CryptoError::Failed),
        }
    }

    /// RSA-OAEP decryption (MGF1 with the same hash).
    pub fn oaep_decrypt(
        &self,
        h: Hash,
        ciphertext: &[u8],
        label: Option<&[u8]>,
    ) -> Result<SecretBytes, CryptoError> {
        self.oaep_decrypt_mgf1(h, h, ciphertext, label)
    }

    /// RSA-OAEP decryption with `h` for the message and `mgf1` for the mask
    /// generation function.
    pub fn oaep_decrypt_mgf1(
        &self,
        h: Hash,
        mgf1: Hash,
        ciphertext: &[u8],
        label: Option<&[u8]>,
    ) -> Result<SecretBytes, CryptoError> {
        let Parsed::Rsa { oaep, .. } = &self.0 else {
            return Err(CryptoError::Failed);
        };
        if mgf1 != h {
            let pkcs1 = self.rsa_pkcs1()?;
            return crate::evp::oaep_decrypt(pkcs1.expose(), h, mgf1, ciphertext, label);
        }
        let mut out = vec![0u8; oaep.min_output_size()];
        let n = oaep
            .decrypt(self::oaep(h), ciphertext, &mut out, label)
            .map_err(|_| CryptoError::AuthenticationFailed)?
            .len();
        out.truncate(n);
        Ok(SecretBytes::new(out))
    }
}

impl PrivateKey {
    /// An RSA key's PKCS#1 form (for the `evp` module).
    fn rsa_pkcs1(&self) -> Result<SecretBytes, CryptoError> {
        let Parsed::Rsa { pair, .. } = &self.0 else {
            return Err(CryptoError::Failed);
        };
        let pkcs8: Pkcs8V1Der<'static> = pair.as_der().map_err(failed)?;
        let info = pkcs8::PrivateKeyInfo::try_from(pkcs8.as_ref()).map_err(failed)?;
        Ok(SecretBytes::new(info.private_key.to_vec()))
    }

    /// RSAES-PKCS1-v1_5 decryption (S/MIME's `RSA/ECB/PKCS1Padding`): a
    /// value that does not decrypt is `AuthenticationFailed`, nothing more
    /// said (the implementation is constant-time).
    pub fn pkcs1_decrypt(&self, ciphertext: &[u8]) -> Result<SecretBytes, CryptoError> {
        use aws_lc_rs::rsa::Pkcs1PrivateDecryptingKey;
        let Parsed::Rsa { pair, .. } = &self.0 else {
            return Err(CryptoError::Failed);
        };
        let pkcs8: Pkcs8V1Der<'static> = pair.as_der().map_err(failed)?;
        let dk = PrivateDecryptingKey::from_pkcs8(pkcs8.as_ref()).map_err(failed)?;
        let k = Pkcs1PrivateDecryptingKey::new(dk).map_err(failed)?;
        let mut out = zeroize::Zeroizing::new(vec![0u8; k.min_output_size()]);
        let n = k
            .decrypt(ciphertext, &mut out)
            .map_err(|_| CryptoError::AuthenticationFailed)?
            .len();
        out.truncate(n);
        Ok(SecretBytes::new(std::mem::take(&mut *out)))
    }

    /// Signs `digest`, the hash of a message made elsewhere (S/MIME signs
    /// the hash of its signed attributes): RSA PKCS#1 v1.5 or PSS (salt as
    /// long as the hash); the digest's length must be the hash's.
    pub fn sign_digest(&self, scheme: SignScheme, digest: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let (Parsed::Rsa { pair, .. }, SignScheme::RsaPkcs1(h) | SignScheme::RsaPss(h)) =
            (&self.0, scheme)
        else {
            return Err(CryptoError::Failed);
        };
        let alg = match h {
            Hash::Sha1 => &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
            Hash::Sha256 => &aws_lc_rs::digest::SHA256,
            Hash::Sha384 => &aws_lc_rs::digest::SHA384,
            Hash::Sha512 => &aws_lc_rs::digest::SHA512,
        };
        if digest.len() != hash_len(h) {
            return Err(CryptoError::Failed);
        }
        let d = aws_lc_rs::digest::Digest::import_less_safe(digest, alg).map_err(failed)?;
        let mut out = vec![0u8; pair.public_modulus_len()];
        pair.sign_digest(rsa_signing(scheme)?, &d, &mut out)
            .map_err(failed)?;
        Ok(out)
    }
}

/// DER of a SEQUENCE of unsigned INTEGERs (big-endian magnitudes)./// DER of a SEQUENCE of unsigned INTEGERs (big-endian magnitudes).
fn der_uint_sequence(values: &[&[u8]]) -> Result<Vec<u8>, CryptoError> {
    use pkcs8::der::{asn1::UintRef, Encode, Header, Tag};
    let mut body = Vec::new();
    for v in values {
        UintRef::new(v)
            .and_then(|u| u.encode_to_vec(&mut body))
            .map_err(failed)?;
    }
    let len = pkcs8::der::Length::try_from(body.len()).map_err(failed)?;
    let mut out = Vec::with_capacity(body.len() + 8);
    Header::new(Tag::Sequence, len)
        .and_then(|h| h.encode_to_vec(&mut out))
        .map_err(failed)?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// An RSA public key as SubjectPublicKeyInfo, from its modulus and public
/// exponent (big-endian, as PKCS#11's CKA_MODULUS and CKA_PUBLIC_EXPONENT).
pub fn rsa_spki_from_parts(modulus: &[u8], exponent: &[u8]) -> Result<Vec<u8>, CryptoError> {
    rsa_public_to_spki(&der_uint_sequence(&[modulus, exponent])?)
}

/// The length of a public point of a curve (uncompressed EC point, or an
/// Ed25519 key), and the curve's OID (`None`: the algorithm is the curve).
fn curve_facts(kind: PairKind) -> Result<(usize, Option<&'static str>), CryptoError> {
    Ok(match kind {
        PairKind::EcP256 => (65, Some("1.2.840.10045.3.1.7")),
        PairKind::EcP384 => (97, Some("1.3.132.0.34")),
        PairKind::EcP521 => (133, Some("1.3.132.0.35")),
        PairKind::Ed25519 => (32, None),
        PairKind::Rsa(_) => return Err(CryptoError::Failed),
    })
}

/// The DER of a curve's name as PKCS#11 wants it in CKA_EC_PARAMS (the
/// named curve's OID; id-Ed25519 for Ed25519).
pub fn curve_params_der(kind: PairKind) -> Result<Vec<u8>, CryptoError> {
    use pkcs8::der::{asn1::ObjectIdentifier, Encode};
    let oid = curve_facts(kind)?.1.unwrap_or(ED25519_OID);
    ObjectIdentifier::new(oid)
        .map_err(failed)?
        .to_der()
        .map_err(failed)
}

const ED25519_OID: &str = "1.3.101.112";

/// An EC or Ed25519 public key as SubjectPublicKeyInfo, from its point as
/// PKCS#11's CKA_EC_POINT gives it (raw, or in a DER OCTET STRING).
pub fn ec_spki_from_point(kind: PairKind, point: &[u8]) -> Result<Vec<u8>, CryptoError> {
    use pkcs8::der::asn1::{AnyRef, BitStringRef, ObjectIdentifier, OctetStringRef};
    use pkcs8::der::{Decode, Encode};
    let (len, curve) = curve_facts(kind)?;
    let point = if point.len() == len {
        point
    } else {
        let inner = OctetStringRef::from_der(point).map_err(failed)?;
        if inner.as_bytes().len() != len {
            return Err(CryptoError::Failed);
        }
        inner.as_bytes()
    };
    let curve = curve
        .map(ObjectIdentifier::new)
        .transpose()
        .map_err(failed)?;
    let algorithm = pkcs8::spki::AlgorithmIdentifierRef {
        oid: ObjectIdentifier::new(if curve.is_some() {
            "1.2.840.10045.2.1"
        } else {
            ED25519_OID
        })
        .map_err(failed)?,
        parameters: curve.as_ref().map(AnyRef::from),
    };
    pkcs8::spki::SubjectPublicKeyInfoRef {
        algorithm,
        subject_public_key: BitStringRef::from_bytes(point).map_err(failed)?,
    }
    .to_der()
    .map_err(failed)
}

/// An ECDSA signature as X9.62 DER (what Keyhold's ECDSA signatures are),
/// from the fixed-length `r || s` PKCS#11's CKM_ECDSA returns.
pub fn ecdsa_raw_to_der(raw: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return Err(CryptoError::Failed);
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    der_uint_sequence(&[r, s])
}

/// The unsigned INTEGERs of a DER SEQUENCE (at most `max` of them), as
/// big-endian magnitudes.
fn der_uints(der: &[u8], max: usize) -> Result<Vec<Vec<u8>>, CryptoError> {
    use pkcs8::der::{asn1::UintRef, Decode, Reader, SliceReader};
    let mut r = SliceReader::new(der).map_err(failed)?;
    r.sequence(|r| {
        let mut out = Vec::new();
        while !r.is_finished() && out.len() < max {
            out.push(UintRef::decode(r)?.as_bytes().to_vec());
        }
        Ok(out)
    })
    .map_err(failed)
}

/// An RSA public key's modulus and public exponent (big-endian), from
/// PKCS#1 or SubjectPublicKeyInfo DER (KMIP's Transparent RSA Public Key).
pub fn rsa_public_parts(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), CryptoError> {
    let pkcs1 = rsa_public_to_pkcs1(der)?;
    let mut v = der_uints(&pkcs1, 2)?;
    let (Some(e), Some(n)) = (v.pop(), v.pop()) else {
        return Err(CryptoError::Failed);
    };
    Ok((n, e))
}

/// An RSA private key's values in PKCS#1 order — modulus, public exponent,
/// private exponent, p, q, d mod (p-1), d mod (q-1), q⁻¹ mod p — from
/// PKCS#1 or PKCS#8 DER (KMIP's Transparent RSA Private Key).
pub fn rsa_private_parts(der: &[u8]) -> Result<Vec<SecretBytes>, CryptoError> {
    let pkcs1 = rsa_private_to_pkcs1(der)?;
    // The first INTEGER is the version (0 for two primes).
    let v = der_uints(pkcs1.expose(), 9)?;
    if v.len() != 9 {
        return Err(CryptoError::Failed);
    }
    Ok(v.into_iter().skip(1).map(SecretBytes::new).collect())
}

/// An EC public key's point (uncompressed) from its SubjectPublicKeyInfo.
pub fn ec_public_point(spki: &[u8]) -> Result<Vec<u8>, CryptoError> {
    spki_key_bits(spki)
}

/// An EC private key's scalar (big-endian), from PKCS#8 or SEC1 DER
/// (KMIP's Transparent EC Private Key).
pub fn ec_private_scalar(der: &[u8]) -> Result<SecretBytes, CryptoError> {
    use pkcs8::der::{asn1::OctetStringRef, asn1::UintRef, Decode, Reader, SliceReader};
    let sec1 = match pkcs8::PrivateKeyInfo::try_from(der) {
        Ok(info) => info.private_key,
        Err(_) => der,
    };
    let mut r = SliceReader::new(sec1).map_err(failed)?;
    let d = r
        .sequence(|r| {
            UintRef::decode(r)?;
            let d = OctetStringRef::decode(r)?.as_bytes().to_vec();
            // The optional parameters and public key that follow.
            r.read_slice(r.remaining_len())?;
            Ok(d)
        })
        .map_err(failed)?;
    Ok(SecretBytes::new(d))
}

/// A public key (SubjectPublicKeyInfo DER) as PEM (`-----BEGIN PUBLIC KEY-----`).
pub fn public_key_pem(spki: &[u8]) -> Result<String, CryptoError> {
    pkcs8::der::pem::encode_string("PUBLIC KEY", pkcs8::der::pem::LineEnding::LF, spki)
        .map_err(failed)
}

/// Signs `msg` with a private key (see the module's forms).
pub fn sign(private: &[u8], scheme: SignScheme, msg: &[u8]) -> Result<Vec<u8>, CryptoError> {
    PrivateKey::parse(private)?.sign(scheme, msg)
}

/// Whether `signature` is `scheme`'s signature of `msg` under a public key
/// (see the module's forms).
pub fn verify(
    public: &[u8],
    scheme: SignScheme,
    msg: &[u8],
    signature: &[u8],
) -> Result<bool, CryptoError> {
    if let SignScheme::RsaPss(Hash::Sha1) | SignScheme::RsaPssMaxSalt(Hash::Sha1) = scheme {
        let key = rsa_public_to_pkcs1(public)?;
        let salt = pss_salt(scheme, rsa_bits(&key)?);
        let d = digest(Hash::Sha1, msg);
        return crate::evp::pss_verify_digest(&key, Hash::Sha1, salt, &d, signature);
    }
    let (alg, key): (&'static dyn sig::VerificationAlgorithm, Vec<u8>) = match scheme {
        SignScheme::RsaPkcs1(_) | SignScheme::RsaPss(_) | SignScheme::RsaPssMaxSalt(_) => {
            (rsa_verification(scheme)?, rsa_public_to_pkcs1(public)?)
        }
        SignScheme::Ecdsa(h) => {
            let alg: &'static dyn sig::VerificationAlgorithm = match h {
                Hash::Sha256 => &sig::ECDSA_P256_SHA256_ASN1,
                Hash::Sha384 => &sig::ECDSA_P384_SHA384_ASN1,
                Hash::Sha512 => &sig::ECDSA_P521_SHA512_ASN1,
                Hash::Sha1 => return Err(CryptoError::Failed),
            };
            (alg, spki_key_bits(public)?)
        }
        SignScheme::Ed25519 => (&sig::ED25519, spki_key_bits(public)?),
    };
    Ok(sig::UnparsedPublicKey::new(alg, &key)
        .verify(msg, signature)
        .is_ok())
}

/// aws-lc-rs's RSA signing encoding for a scheme.
fn rsa_signing(scheme: SignScheme) -> Result<&'static dyn sig::RsaEncoding, CryptoError> {
    use aws_lc_rs::rsa::RsaPssSaltLength::Max;
    Ok(match scheme {
        SignScheme::RsaPkcs1(Hash::Sha256) => &sig::RSA_PKCS1_SHA256,
        SignScheme::RsaPkcs1(Hash::Sha384) => &sig::RSA_PKCS1_SHA384,
        SignScheme::RsaPkcs1(Hash::Sha512) => &sig::RSA_PKCS1_SHA512,
        SignScheme::RsaPss(Hash::Sha256) => &sig::RSA_PSS_SHA256,
        SignScheme::RsaPss(Hash::Sha384) => &sig::RSA_PSS_SHA384,
        SignScheme::RsaPss(Hash::Sha512) => &sig::RSA_PSS_SHA512,
        SignScheme::RsaPssMaxSalt(Hash::Sha256) => {
            &const { sig::RSA_PSS_SHA256.with_pss_salt_length(Max) }
        }
        SignScheme::RsaPssMaxSalt(Hash::Sha384) => {
            &const { sig::RSA_PSS_SHA384.with_pss_salt_length(Max) }
        }
        SignScheme::RsaPssMaxSalt(Hash::Sha512) => {
            &const { sig::RSA_PSS_SHA512.with_pss_salt_length(Max) }
        }
        _ => return Err(CryptoError::Failed),
    })
}

/// aws-lc-rs's RSA verification algorithm for a scheme (2048 to 8192 bits).
fn rsa_verification(
    scheme: SignScheme,
) -> Result<&'static dyn sig::VerificationAlgorithm, CryptoError> {
    use aws_lc_rs::rsa::RsaPssSaltLength::Max;
    Ok(match scheme {
        SignScheme::RsaPkcs1(Hash::Sha1) => &sig::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
        SignScheme::RsaPkcs1(Hash::Sha256) => &sig::RSA_PKCS1_2048_8192_SHA256,
        SignScheme::RsaPkcs1(Hash::Sha384) => &sig::RSA_PKCS1_2048_8192_SHA384,
        SignScheme::RsaPkcs1(Hash::Sha512) => &sig::RSA_PKCS1_2048_8192_SHA512,
        SignScheme::RsaPss(Hash::Sha256) => &sig::RSA_PSS_2048_8192_SHA256,
        SignScheme::RsaPss(Hash::Sha384) => &sig::RSA_PSS_2048_8192_SHA384,
        SignScheme::RsaPss(Hash::Sha512) => &sig::RSA_PSS_2048_8192_SHA512,
        SignScheme::RsaPssMaxSalt(Hash::Sha256) => {
            &const { sig::RSA_PSS_2048_8192_SHA256.with_pss_salt_length(Max) }
        }
        SignScheme::RsaPssMaxSalt(Hash::Sha384) => {
            &const { sig::RSA_PSS_2048_8192_SHA384.with_pss_salt_length(Max) }
        }
        SignScheme::RsaPssMaxSalt(Hash::Sha512) => {
            &const { sig::RSA_PSS_2048_8192_SHA512.with_pss_salt_length(Max) }
        }
        _ => return Err(CryptoError::Failed),
    })
}

/// The salt length, in bytes, of RSA-PSS with the longest salt for a key of
/// `bits` and hash `h`.
pub fn pss_max_salt(bits: u32, h: Hash) -> usize {
    let em_len = (bits as usize - 1).div_ceil(8);
    em_len.saturating_sub(hash_len(h) + 2)
}

/// The salt length of an RSA-PSS scheme for a key of `bits`.
fn pss_salt(scheme: SignScheme, bits: u32) -> usize {
    match scheme {
        SignScheme::RsaPssMaxSalt(h) => pss_max_salt(bits, h),
        SignScheme::RsaPss(h) => hash_len(h),
        _ => 0,
    }
}

/// The output length of a hash, in bytes.
pub fn hash_len(h: Hash) -> usize {
    match h {
        Hash::Sha1 => 20,
        Hash::Sha256 => 32,
        Hash::Sha384 => 48,
        Hash::Sha512 => 64,
    }
}

/// The digest of `data`.
pub fn digest(h: Hash, data: &[u8]) -> Vec<u8> {
    use aws_lc_rs::digest;
    let alg = match h {
        Hash::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
        Hash::Sha256 => &digest::SHA256,
        Hash::Sha384 => &digest::SHA384,
        Hash::Sha512 => &digest::SHA512,
    };
    digest::digest(alg, data).as_ref().to_vec()
}

/// The key bits of a SubjectPublicKeyInfo (an EC point, an Ed25519 key).
fn spki_key_bits(spki: &[u8]) -> Result<Vec<u8>, CryptoError> {
    use pkcs8::der::Decode;
    let info = pkcs8::spki::SubjectPublicKeyInfoRef::from_der(spki).map_err(failed)?;
    Ok(info.subject_public_key.raw_bytes().to_vec())
}

fn oaep(h: Hash) -> &'static OaepAlgorithm {
    match h {
        Hash::Sha1 => &OAEP_SHA1_MGF1SHA1,
        Hash::Sha256 => &OAEP_SHA256_MGF1SHA256,
        Hash::Sha384 => &OAEP_SHA384_MGF1SHA384,
        Hash::Sha512 => &OAEP_SHA512_MGF1SHA512,
    }
}

/// RSA-OAEP encryption (MGF1 with the same hash) under a public key.
pub fn oaep_encrypt(
    public: &[u8],
    h: Hash,
    plaintext: &[u8],
    label: Option<&[u8]>,
) -> Result<Vec<u8>, CryptoError> {
    oaep_encrypt_mgf1(public, h, h, plaintext, label)
}

/// RSA-OAEP encryption under a public key with `h` for the message and
/// `mgf1` for the mask generation function.
pub fn oaep_encrypt_mgf1(
    public: &[u8],
    h: Hash,
    mgf1: Hash,
    plaintext: &[u8],
    label: Option<&[u8]>,
) -> Result<Vec<u8>, CryptoError> {
    if mgf1 != h {
        return crate::evp::oaep_encrypt(&rsa_public_to_pkcs1(public)?, h, mgf1, plaintext, label);
    }
    let key = PublicEncryptingKey::from_der(&rsa_public_to_spki(public)?).map_err(failed)?;
    let key = OaepPublicEncryptingKey::new(key).map_err(failed)?;
    if plaintext.len() > key.max_plaintext_size(oaep(h)) {
        return Err(CryptoError::Failed);
    }
    let mut out = vec![0u8; key.ciphertext_size()];
    let n = key
        .encrypt(oaep(h), plaintext, &mut out, label)
        .map_err(failed)?
        .len();
    out.truncate(n);
    Ok(out)
}

/// RSA-OAEP decryption (MGF1 with the same hash) with a private key.
pub fn oaep_decrypt(
    private: &[u8],
    h: Hash,
    ciphertext: &[u8],
    label: Option<&[u8]>,
) -> Result<SecretBytes, CryptoError> {
    PrivateKey::parse(private)?.oaep_decrypt(h, ciphertext, label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkcs1_decryption_and_signatures_over_digests() {
        let p = generate(PairKind::Rsa(2048)).unwrap();
        let k = PrivateKey::parse(p.private.expose()).unwrap();
        // PKCS#1 v1.5 encryption with the public key (aws-lc-rs).
        let pubk = PublicEncryptingKey::from_der(&rsa_public_to_spki(&p.public).unwrap()).unwrap();
        let enc = aws_lc_rs::rsa::Pkcs1PublicEncryptingKey::new(pubk).unwrap();
        let mut ct = vec![0u8; enc.ciphertext_size()];
        let ct = enc.encrypt(b"a content key", &mut ct).unwrap().to_vec();
        assert_eq!(k.pkcs1_decrypt(&ct).unwrap().expose(), b"a content key");
        let mut bad = ct.clone();
        bad[7] ^= 1;
        assert!(k.pkcs1_decrypt(&bad).is_err());
        // A signature over a digest verifies as a signature of the message.
        for scheme in [
            SignScheme::RsaPkcs1(Hash::Sha256),
            SignScheme::RsaPss(Hash::Sha256),
        ] {
            let s = k
                .sign_digest(scheme, &digest(Hash::Sha256, b"signed attributes"))
                .unwrap();
            assert!(
                verify(&p.public, scheme, b"signed attributes", &s).unwrap(),
                "{scheme:?}"
            );
        }
        assert!(k
            .sign_digest(SignScheme::RsaPkcs1(Hash::Sha256), &[0; 20])
            .is_err());
    }

    #[test]
    fn every_kind_signs_and_verifies() {
        for (kind, scheme) in [
            (PairKind::Rsa(2048), SignScheme::RsaPss(Hash::Sha256)),
            (PairKind::Rsa(2048), SignScheme::RsaPkcs1(Hash::Sha384)),
            (PairKind::Rsa(3072), SignScheme::RsaPssMaxSalt(Hash::Sha256)),
            (PairKind::EcP256, SignScheme::Ecdsa(Hash::Sha256)),
            (PairKind::EcP384, SignScheme::Ecdsa(Hash::Sha384)),
            (PairKind::EcP521, SignScheme::Ecdsa(Hash::Sha512)),
            (PairKind::Ed25519, SignScheme::Ed25519),
        ] {
            let p = generate(kind).unwrap();
            let s = sign(p.private.expose(), scheme, b"message").unwrap();
            assert!(
                verify(&p.public, scheme, b"message", &s).unwrap(),
                "{kind:?}"
            );
            assert!(
                !verify(&p.public, scheme, b"massage", &s).unwrap(),
                "{kind:?}"
            );
            // The parsed key knows its kind and gives its public key as
            // SubjectPublicKeyInfo, which verifies too.
            let k = PrivateKey::parse(p.private.expose()).unwrap();
            assert_eq!(k.kind(), kind);
            let spki = k.public_spki().unwrap();
            assert!(verify(&spki, scheme, b"message", &s).unwrap(), "{kind:?}");
            let pem = public_key_pem(&spki).unwrap();
            assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
            assert!(pem.ends_with("-----END PUBLIC KEY-----\n"));
        }
    }

    /// The pieces a PKCS#11 token gives of a public key make the same
    /// SubjectPublicKeyInfo as the key itself.
    #[test]
    fn public_keys_from_token_parts() {
        use pkcs8::der::asn1::{OctetStringRef, UintRef};
        use pkcs8::der::{Decode, Encode, Reader, SliceReader};
        let rsa = generate(PairKind::Rsa(2048)).unwrap();
        let mut r = SliceReader::new(&rsa.public).unwrap();
        let (n, e) = r
            .sequence(|r| {
                let n = UintRef::decode(r)?.as_bytes().to_vec();
                let e = UintRef::decode(r)?.as_bytes().to_vec();
                Ok((n, e))
            })
            .unwrap();
        assert_eq!(
            rsa_spki_from_parts(&n, &e).unwrap(),
            rsa_public_to_spki(&rsa.public).unwrap()
        );
        for kind in [
            PairKind::EcP256,
            PairKind::EcP384,
            PairKind::EcP521,
            PairKind::Ed25519,
        ] {
            let p = generate(kind).unwrap();
            let point = spki_key_bits(&p.public).unwrap();
            assert_eq!(ec_spki_from_point(kind, &point).unwrap(), p.public);
            let wrapped = OctetStringRef::new(&point).unwrap().to_der().unwrap();
            assert_eq!(ec_spki_from_point(kind, &wrapped).unwrap(), p.public);
            assert!(ec_spki_from_point(kind, &point[1..]).is_err());
            assert!(!curve_params_der(kind).unwrap().is_empty());
        }
        // r || s to DER, checked by verification.
        let p = generate(PairKind::EcP256).unwrap();
        let k = EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, p.private.expose())
            .unwrap();
        let raw = k.sign(&SystemRandom::new(), b"m").unwrap();
        let der = ecdsa_raw_to_der(raw.as_ref()).unwrap();
        assert!(verify(&p.public, SignScheme::Ecdsa(Hash::Sha256), b"m", &der).unwrap());
    }

    #[test]
    fn transparent_parts_rebuild_the_keys() {
        let rsa = generate(PairKind::Rsa(2048)).unwrap();
        let (n, e) = rsa_public_parts(&rsa.public).unwrap();
        assert_eq!(e, vec![1, 0, 1]);
        assert_eq!(n.len(), 256);
        let spki = rsa_public_to_spki(&rsa.public).unwrap();
        assert_eq!(rsa_public_parts(&spki).unwrap(), (n.clone(), e.clone()));
        let parts = rsa_private_parts(rsa.private.expose()).unwrap();
        assert_eq!(parts.len(), 8);
        assert_eq!(parts[0].expose(), &n[..]);
        assert_eq!(parts[1].expose(), &e[..]);
        let pkcs8 = rsa_private_to_pkcs8(rsa.private.expose()).unwrap();
        assert_eq!(
            rsa_private_parts(pkcs8.expose()).unwrap()[2].expose(),
            parts[2].expose()
        );
        let ec = generate(PairKind::EcP256).unwrap();
        let point = ec_public_point(&ec.public).unwrap();
        assert_eq!(point.len(), 65);
        let d = ec_private_scalar(ec.private.expose()).unwrap();
        assert_eq!(d.len(), 32);
        // The scalar rebuilds the same key (aws-lc-rs from its big-endian bytes).
        let k = EcdsaKeyPair::from_private_key_der(&sig::ECDSA_P256_SHA256_ASN1_SIGNING, &{
            use aws_lc_rs::encoding::EcPrivateKeyRfc5915Der;
            let kp =
                EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_ASN1_SIGNING, ec.private.expose())
                    .unwrap();
            let sec1: EcPrivateKeyRfc5915Der<'static> = kp.private_key().as_der().unwrap();
            assert_eq!(
                ec_private_scalar(sec1.as_ref()).unwrap().expose(),
                d.expose()
            );
            sec1.as_ref().to_vec()
        })
        .unwrap();
        assert_eq!(k.public_key().as_ref(), &point[..]);
    }

    #[test]
    fn ec_private_keys_parse_from_sec1_too() {
        use aws_lc_rs::encoding::EcPrivateKeyRfc5915Der;
        let kp = EcdsaKeyPair::generate(&sig::ECDSA_P384_SHA384_ASN1_SIGNING).unwrap();
        let sec1: EcPrivateKeyRfc5915Der<'static> = kp.private_key().as_der().unwrap();
        let k = PrivateKey::parse(sec1.as_ref()).unwrap();
        assert_eq!(k.bits(), 384);
        let s = k.sign(SignScheme::Ecdsa(Hash::Sha384), b"m").unwrap();
        let spki: PublicKeyX509Der<'static> = kp.public_key().as_der().unwrap();
        assert!(verify(spki.as_ref(), SignScheme::Ecdsa(Hash::Sha384), b"m", &s).unwrap());
        assert!(
            k.sign(SignScheme::Ecdsa(Hash::Sha256), b"m").is_err(),
            "P-384 signs with SHA-384"
        );
    }

    #[test]
    fn rsa_forms_convert_both_ways() {
        let p = generate(PairKind::Rsa(2048)).unwrap();
        assert_eq!(rsa_bits(p.private.expose()).unwrap(), 2048);
        assert_eq!(rsa_bits(&p.public).unwrap(), 2048);
        let pkcs8 = rsa_private_to_pkcs8(p.private.expose()).unwrap();
        assert_eq!(rsa_private_to_pkcs1(pkcs8.expose()).unwrap(), p.private);
        let spki = rsa_public_to_spki(&p.public).unwrap();
        assert_eq!(rsa_public_to_pkcs1(&spki).unwrap(), p.public);
        // A signature under the PKCS#8 form verifies under the SPKI form.
        let s = sign(pkcs8.expose(), SignScheme::RsaPss(Hash::Sha512), b"m").unwrap();
        assert!(verify(&spki, SignScheme::RsaPss(Hash::Sha512), b"m", &s).unwrap());
    }

    #[test]
    fn oaep_round_trips_and_refuses_a_changed_ciphertext() {
        let p = generate(PairKind::Rsa(2048)).unwrap();
        for h in [Hash::Sha1, Hash::Sha256, Hash::Sha384, Hash::Sha512] {
            let mut c = oaep_encrypt(&p.public, h, b"secret", None).unwrap();
            assert_eq!(
                oaep_decrypt(p.private.expose(), h, &c, None)
                    .unwrap()
                    .expose(),
                b"secret"
            );
            c[10] ^= 1;
            assert!(oaep_decrypt(p.private.expose(), h, &c, None).is_err());
        }
    }

    #[test]
    fn garbage_keys_are_errors_not_panics() {
        assert!(sign(b"nope", SignScheme::Ed25519, b"m").is_err());
        assert!(verify(b"nope", SignScheme::Ecdsa(Hash::Sha256), b"m", b"s").is_err());
        assert!(oaep_decrypt(b"nope", Hash::Sha256, b"c", None).is_err());
        assert!(generate(PairKind::Rsa(1024)).is_err());
    }
}
