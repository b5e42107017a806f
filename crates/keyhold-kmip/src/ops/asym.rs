//! The asymmetric operations: Sign and Signature Verify (RSA PKCS#1 v1.5
//! and PSS, ECDSA), Encrypt and Decrypt with RSA-OAEP, and Hash. The key's
//! rules (type, state, usage mask, dates) are the service's
//! (`object_rules::check_asymmetric_use`); the crypto is keyhold-crypto's.

use super::crypt::crypto_fail;
use super::keypair::key_block_bytes;
use super::*;
use crate::enums::hashing;
use keyhold_crypto::asym::{self, Hash, SignScheme};

/// Validity Indicator values.
const VALID: u32 = 1;
const INVALID: u32 = 2;

/// Padding Method values of asymmetric operations.
const OAEP: u32 = 0x02;
const PKCS1_V1_5: u32 = 0x08;
const PSS: u32 = 0x0A;

/// Mask Generator: MGF1.
const MGF1: u32 = 1;

/// What an asymmetric operation's Cryptographic Parameters ask for.
#[derive(Debug, Default)]
struct AsymParams {
    algorithm: Option<u32>,
    padding: Option<u32>,
    hashing: Option<u32>,
    signature_algorithm: Option<u32>,
    salt: Option<i32>,
    mask_generator: Option<u32>,
    mask_hashing: Option<u32>,
    label: Option<Vec<u8>>,
}

impl Kmip {
    pub(super) fn sign(
        &self,
        ctx: &mut MessageState<'_>,
        p: &Ttlv,
    ) -> Result<Vec<Ttlv>, KmipError> {
        let uid = self.uid_arg(ctx, p)?;
        let mut o = self.load(ctx, &uid)?;
        rules::check_asymmetric_use(&o, Purpose::SIGN, ctx.now).map_err(refused)?;
        let data = sign_data(p)?;
        let key = self.private_key(&o)?;
        let scheme = sign_scheme(&o, &asym_params(&o, p)?, key.bits())?;
        fips_allows_signature(scheme, key.kind())?;
        self.consume_usage(ctx, &mut o, data.len())?;
        let signature = key
            .sign(scheme, data)
            .map_err(|_| crypto_fail("the signature could not be made with this key"))?;
        Ok(vec![
            Ttlv::text(t::UNIQUE_IDENTIFIER, uid),
            Ttlv::bytes(t::SIGNATURE_DATA, signature),
        ])
    }

    pub(super) fn signature_verify(
        &self,
        ctx: &mut MessageState<'_>,
        p: &Ttlv,
    ) -> Result<Vec<Ttlv>, KmipError> {
        let uid = self.uid_arg(ctx, p)?;
        let (o, key) = self.asymmetric_key(ctx, &uid, Purpose::VERIFY)?;
        let data = sign_data(p)?;
        let signature = bytes_of(p, t::SIGNATURE_DATA)?
            .ok_or_else(|| KmipError::missing("Signature Data is missing"))?;
        let params = asym_params(&o, p)?;
        let scheme = sign_scheme(&o, &params, key.bits)?;
        let verify = |scheme| {
            asym::verify(key.der.expose(), scheme, data, signature)
                .map_err(|_| crypto_fail("the key cannot verify signatures"))
        };
        let mut valid = verify(scheme)?;
        // No salt length named: a PSS signature may use either length
        // signers use (the hash's, or the longest the key allows).
        if let (false, SignScheme::RsaPss(h), None) = (valid, scheme, params.salt) {
            valid = verify(SignScheme::RsaPssMaxSalt(h))?;
        }
        Ok(vec![
            Ttlv::text(t::UNIQUE_IDENTIFIER, uid),
            Ttlv::enumeration(t::VALIDITY_INDICATOR, if valid { VALID } else { INVALID }),
        ])
    }

    /// RSA-OAEP Encrypt (public key) or Decrypt (private key).
    pub(super) fn asymmetric_crypt(
        &self,
        ctx: &mut MessageState<'_>,
        p: &Ttlv,
        mut o: ManagedObject,
        encrypt: bool,
    ) -> Result<Vec<Ttlv>, KmipError> {
        let purpose = if encrypt {
            Purpose::ENCRYPT
        } else {
            Purpose::DECRYPT
        };
        rules::check_asymmetric_use(&o, purpose, ctx.now).map_err(refused)?;
        let params = asym_params(&o, p)?;
        let (h, mgf1) = oaep_hash(&o, &params)?;
        let data = bytes_of(p, t::DATA)?.ok_or_else(|| KmipError::missing("Data is missing"))?;
        self.consume_usage(ctx, &mut o, data.len())?;
        let label = params.label.as_deref().filter(|l| !l.is_empty());
        let out = if encrypt {
            let key = self.key_of(&o)?;
            // FIPS mode: no new RSA ciphertexts under 2048 bits (decryption
            // of existing ones stays).
            if obj::enum_attr(&o, obj::ALGORITHM) == Some(crypto_alg::RSA) {
                super::cipher::fips_check(keyhold_crypto::fips::Use::RsaKeyBits(key.bits))?;
            }
            asym::oaep_encrypt_mgf1(key.der.expose(), h, mgf1, data, label).map_err(|_| {
                crypto_fail("the data cannot be encrypted with this key (too long?)")
            })?
        } else {
            self.private_key(&o)?
                .oaep_decrypt_mgf1(h, mgf1, data, label)
                .map_err(|_| crypto_fail("decryption failed"))?
                .expose()
                .to_vec()
        };
        Ok(vec![
            Ttlv::text(t::UNIQUE_IDENTIFIER, &o.uid),
            Ttlv::bytes(t::DATA, out),
        ])
    }

    /// Hash: the digest of the Data with the Hashing Algorithm asked for.
    pub(super) fn hash(&self, p: &Ttlv) -> Result<Vec<Ttlv>, KmipError> {
        let params = p
            .child(t::CRYPTOGRAPHIC_PARAMETERS)
            .ok_or_else(|| KmipError::missing("Cryptographic Parameters are missing"))?;
        let h = hash_of(
            enum_of(params, t::HASHING_ALGORITHM)?
                .ok_or_else(|| KmipError::missing("Hashing Algorithm is missing"))?,
        )?;
        let data = bytes_of(p, t::DATA)?.ok_or_else(|| KmipError::missing("Data is missing"))?;
        if data.len() > MAX_DATA {
            return Err(KmipError::invalid_field(format!(
                "Data is over {MAX_DATA} bytes"
            )));
        }
        Ok(vec![Ttlv::bytes(t::DATA, asym::digest(h, data))])
    }

    /// The object's key, when it may be used for `purpose` now.
    fn asymmetric_key(
        &self,
        ctx: &mut MessageState<'_>,
        uid: &str,
        purpose: Purpose,
    ) -> Result<(ManagedObject, KeyBytes), KmipError> {
        let o = self.load(ctx, uid)?;
        rules::check_asymmetric_use(&o, purpose, ctx.now).map_err(refused)?;
        let key = self.key_of(&o)?;
        Ok((o, key))
    }

    /// The object's private key, parsed once and kept by the key service.
    fn private_key(&self, o: &ManagedObject) -> Result<Arc<asym::PrivateKey>, KmipError> {
        let damaged = || keyhold_core::Error::Internal("the stored key is damaged".into());
        self.service
            .private_key(o, |m| {
                let holder = Ttlv::decode(m.expose(), &Limits::default()).map_err(|_| damaged())?;
                let (_, der) = key_block_bytes(&holder).ok_or_else(damaged)?;
                asym::PrivateKey::parse(der).map_err(|_| {
                    keyhold_core::Error::invalid(
                        "key",
                        "not an RSA, P-256/384/521 or Ed25519 private key Keyhold can use",
                    )
                })
            })
            .map_err(service_err)
    }

    /// The DER bytes of a private key, public key or certificate's public
    /// key, and the key's size in bits.
    fn key_of(&self, o: &ManagedObject) -> Result<KeyBytes, KmipError> {
        let material = self.material(o)?;
        let damaged = || KmipError::new(Reason::GeneralFailure, "the stored key is damaged");
        let holder = Ttlv::decode(material.expose(), &Limits::default()).map_err(|_| damaged())?;
        let der = if o.object_type == object_type::CERTIFICATE {
            let cert = bytes_of(&holder, t::CERTIFICATE_VALUE)?.ok_or_else(damaged)?;
            let (_, c) = x509_parser::parse_x509_certificate(cert)
                .map_err(|_| KmipError::invalid_field("the certificate does not parse as X.509"))?;
            keyhold_crypto::SecretBytes::new(c.public_key().raw.to_vec())
        } else {
            let block = holder.child(t::KEY_BLOCK).ok_or_else(damaged)?;
            match enum_of(block, t::KEY_FORMAT_TYPE)? {
                Some(
                    key_format::PKCS_1
                    | key_format::PKCS_8
                    | key_format::X_509
                    | key_format::EC_PRIVATE_KEY,
                ) => {}
                Some(f) => {
                    return Err(KmipError::new(
                        Reason::KeyFormatTypeNotSupported,
                        format!(
                        "keys in format {f:#x} cannot be used here (PKCS#1, PKCS#8, X.509 and ECPrivateKey can)"
                    ),
                    ))
                }
                None => return Err(damaged()),
            }
            let (_, bytes) = key_block_bytes(&holder).ok_or_else(damaged)?;
            keyhold_crypto::SecretBytes::new(bytes.to_vec())
        };
        let bits = obj::int_attr(o, obj::LENGTH)
            .map(|l| l as u32)
            .or_else(|| asym::rsa_bits(der.expose()).ok())
            .unwrap_or(0);
        Ok(KeyBytes { der, bits })
    }
}

/// A key's DER bytes (zeroized when dropped) and its size in bits.
struct KeyBytes {
    der: keyhold_crypto::SecretBytes,
    bits: u32,
}

/// The data a Sign or Signature Verify covers (Digested Data is not
/// offered: the server hashes the Data itself).
fn sign_data(p: &Ttlv) -> Result<&[u8], KmipError> {
    if p.child(t::DIGESTED_DATA).is_some() {
        return Err(KmipError::new(
            Reason::FeatureNotSupported,
            "Digested Data is not supported: send the Data and the server hashes it",
        ));
    }
    if p.child(t::INIT_INDICATOR).is_some() || p.child(t::CORRELATION_VALUE).is_some() {
        return Err(KmipError::new(
            Reason::FeatureNotSupported,
            "streamed Sign and Signature Verify are not supported",
        ));
    }
    let data = bytes_of(p, t::DATA)?.ok_or_else(|| KmipError::missing("Data is missing"))?;
    if data.len() > MAX_DATA {
        return Err(KmipError::invalid_field(format!(
            "Data is over {MAX_DATA} bytes"
        )));
    }
    Ok(data)
}

/// The request's Cryptographic Parameters, else the object's own.
fn asym_params(o: &ManagedObject, p: &Ttlv) -> Result<AsymParams, KmipError> {
    let from = |s: &Ttlv| -> Result<AsymParams, KmipError> {
        Ok(AsymParams {
            algorithm: enum_of(s, t::CRYPTOGRAPHIC_ALGORITHM)?,
            padding: enum_of(s, t::PADDING_METHOD)?,
            hashing: enum_of(s, t::HASHING_ALGORITHM)?,
            signature_algorithm: enum_of(s, t::DIGITAL_SIGNATURE_ALGORITHM)?,
            salt: int_of(s, t::SALT_LENGTH)?,
            mask_generator: enum_of(s, t::MASK_GENERATOR)?,
            mask_hashing: enum_of(s, t::MASK_GENERATOR_HASHING_ALGORITHM)?,
            label: bytes_of(s, t::P_SOURCE)?.map(<[u8]>::to_vec),
        })
    };
    if let Some(s) = p.child(t::CRYPTOGRAPHIC_PARAMETERS) {
        return from(s);
    }
    if let Some(v) = o.attr(obj::PARAMETERS) {
        return from(&Ttlv::new(t::CRYPTOGRAPHIC_PARAMETERS, attrs::to_value(v)));
    }
    Ok(AsymParams::default())
}

fn hash_of(h: u32) -> Result<Hash, KmipError> {
    Ok(match h {
        hashing::SHA_1 => Hash::Sha1,
        hashing::SHA_256 => Hash::Sha256,
        hashing::SHA_384 => Hash::Sha384,
        hashing::SHA_512 => Hash::Sha512,
        other => {
            return Err(KmipError::new(
                Reason::FeatureNotSupported,
                format!("hashing algorithm {other:#x} is not supported (SHA-1, SHA-256, SHA-384 and SHA-512 are)"),
            ))
        }
    })
}

/// The hash of the mask generation function (MGF1, the only one defined):
/// the one named, else the message's own (`h`).
fn mask_hash(params: &AsymParams, h: Hash) -> Result<Hash, KmipError> {
    if params.mask_generator.is_some_and(|m| m != MGF1) {
        return Err(KmipError::new(
            Reason::FeatureNotSupported,
            "only the MGF1 mask generator is supported",
        ));
    }
    params.mask_hashing.map_or(Ok(h), hash_of)
}

/// The signature scheme the object and the parameters ask for.
fn sign_scheme(o: &ManagedObject, params: &AsymParams, bits: u32) -> Result<SignScheme, KmipError> {
    let alg = params
        .algorithm
        .or_else(|| obj::enum_attr(o, obj::ALGORITHM))
        .unwrap_or(crypto_alg::RSA);
    // A Digital Signature Algorithm names the hash (and the padding).
    let (dsa_hash, dsa_pss) = match params.signature_algorithm {
        None => (None, false),
        Some(3) => (Some(Hash::Sha1), false),
        Some(5) => (Some(Hash::Sha256), false),
        Some(6) => (Some(Hash::Sha384), false),
        Some(7) => (Some(Hash::Sha512), false),
        Some(8) => (None, true),
        Some(0x0E) => (Some(Hash::Sha256), false),
        Some(0x0F) => (Some(Hash::Sha384), false),
        Some(0x10) => (Some(Hash::Sha512), false),
        Some(other) => {
            return Err(KmipError::new(
                Reason::FeatureNotSupported,
                format!("digital signature algorithm {other:#x} is not supported"),
            ))
        }
    };
    let h = match (dsa_hash, params.hashing) {
        (Some(h), _) => h,
        (None, Some(h)) => hash_of(h)?,
        (None, None) => Hash::Sha256,
    };
    match alg {
        crypto_alg::RSA => {
            let pss = dsa_pss || params.padding == Some(PSS);
            if !pss {
                return match params.padding {
                    None | Some(PKCS1_V1_5) => Ok(SignScheme::RsaPkcs1(h)),
                    Some(other) => Err(KmipError::new(
                        Reason::FeatureNotSupported,
                        format!("padding method {other:#x} does not sign (PSS and PKCS#1 v1.5 do)"),
                    )),
                };
            }
            if mask_hash(params, h)? != h {
                return Err(KmipError::new(
                    Reason::FeatureNotSupported,
                    "RSA-PSS with an MGF1 hash other than the message's is not supported",
                ));
            }
            match params.salt {
                None => Ok(SignScheme::RsaPss(h)),
                Some(s) if s as usize == asym::hash_len(h) => Ok(SignScheme::RsaPss(h)),
                Some(s) if bits > 0 && s as usize == asym::pss_max_salt(bits, h) => {
                    Ok(SignScheme::RsaPssMaxSalt(h))
                }
                Some(s) => Err(KmipError::new(
                    Reason::FeatureNotSupported,
                    format!(
                        "a PSS salt of {s} bytes is not supported (the hash's length, {}, or the longest the key allows, are)",
                        asym::hash_len(h)
                    ),
                )),
            }
        }
        crypto_alg::ECDSA | crypto_alg::EC => Ok(SignScheme::Ecdsa(h)),
        // Pure Ed25519 (RFC 8032): the hash is part of the scheme.
        crypto_alg::ED25519 => Ok(SignScheme::Ed25519),
        other => Err(KmipError::new(
            Reason::FeatureNotSupported,
            format!("algorithm {other:#x} does not sign here (RSA, ECDSA and Ed25519 do)"),
        )),
    }
}

/// The hashes of RSA-OAEP the parameters ask for, the message's and MGF1's
/// (SHA-1 when none is named, as PKCS#1 defines; MGF1 the message's unless
/// named).
fn oaep_hash(o: &ManagedObject, params: &AsymParams) -> Result<(Hash, Hash), KmipError> {
    let alg = params
        .algorithm
        .or_else(|| obj::enum_attr(o, obj::ALGORITHM))
        .unwrap_or(crypto_alg::RSA);
    if alg != crypto_alg::RSA {
        return Err(KmipError::new(
            Reason::FeatureNotSupported,
            "asymmetric encryption is offered for RSA keys only",
        ));
    }
    match params.padding {
        Some(OAEP) => {}
        None => {
            return Err(KmipError::missing(
                "name the padding method: RSA encryption is offered with OAEP",
            ))
        }
        Some(other) => {
            return Err(KmipError::new(
                Reason::FeatureNotSupported,
                format!("padding method {other:#x} is not supported for RSA encryption (OAEP is)"),
            ))
        }
    }
    let h = params
        .hashing
        .map(hash_of)
        .transpose()?
        .unwrap_or(Hash::Sha1);
    Ok((h, mask_hash(params, h)?))
}

/// FIPS mode's answer to a new signature: none with SHA-1, none with an
/// RSA key under 2048 bits.
fn fips_allows_signature(scheme: SignScheme, kind: asym::PairKind) -> Result<(), KmipError> {
    use keyhold_crypto::fips::Use;
    if let SignScheme::RsaPkcs1(Hash::Sha1)
    | SignScheme::RsaPss(Hash::Sha1)
    | SignScheme::RsaPssMaxSalt(Hash::Sha1)
    | SignScheme::Ecdsa(Hash::Sha1) = scheme
    {
        super::cipher::fips_check(Use::Sha1Signature)?;
    }
    if let asym::PairKind::Rsa(bits) = kind {
        super::cipher::fips_check(Use::RsaKeyBits(bits))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rsa_object() -> ManagedObject {
        let mut o = ManagedObject {
            uid: "k".into(),
            object_type: object_type::PRIVATE_KEY,
            owner: "o".into(),
            state: ObjectState::Active,
            exportable: true,
            attrs: Vec::new(),
            has_material: true,
            rev: 1,
        };
        o.set_attr(obj::ALGORITHM, AttrValue::Enum(crypto_alg::RSA));
        o
    }

    #[test]
    fn parameters_choose_the_scheme() {
        let o = rsa_object();
        let p = |padding, hashing, salt| AsymParams {
            padding,
            hashing,
            salt,
            ..AsymParams::default()
        };
        assert_eq!(
            sign_scheme(&o, &p(None, None, None), 2048).unwrap(),
            SignScheme::RsaPkcs1(Hash::Sha256)
        );
        assert_eq!(
            sign_scheme(&o, &p(Some(PSS), Some(hashing::SHA_256), Some(222)), 2048).unwrap(),
            SignScheme::RsaPssMaxSalt(Hash::Sha256)
        );
        assert_eq!(
            sign_scheme(&o, &p(Some(PSS), Some(hashing::SHA_512), Some(64)), 2048).unwrap(),
            SignScheme::RsaPss(Hash::Sha512)
        );
        assert!(sign_scheme(&o, &p(Some(PSS), Some(hashing::SHA_256), Some(20)), 2048).is_err());
        assert!(sign_scheme(&o, &p(Some(OAEP), None, None), 2048).is_err());
        let mixed = AsymParams {
            padding: Some(OAEP),
            hashing: Some(hashing::SHA_384),
            mask_hashing: Some(hashing::SHA_256),
            ..AsymParams::default()
        };
        assert_eq!(oaep_hash(&o, &mixed).unwrap(), (Hash::Sha384, Hash::Sha256));
        let plain = AsymParams {
            padding: Some(OAEP),
            ..AsymParams::default()
        };
        assert_eq!(oaep_hash(&o, &plain).unwrap(), (Hash::Sha1, Hash::Sha1));
        // PSS with SHA-1 signs; PSS whose MGF1 hash differs does not.
        assert_eq!(
            sign_scheme(&o, &p(Some(PSS), Some(hashing::SHA_1), None), 2048).unwrap(),
            SignScheme::RsaPss(Hash::Sha1)
        );
        let pss_mixed = AsymParams {
            mask_hashing: Some(hashing::SHA_1),
            ..p(Some(PSS), Some(hashing::SHA_256), None)
        };
        assert!(sign_scheme(&o, &pss_mixed, 2048).is_err());
    }
}
