//! HSM-resident key pairs: RSA, EC and Ed25519 keys generated in the token
//! (C_GenerateKeyPair) or adopted by label. The private key is sensitive
//! and never extractable: signatures and RSA-OAEP decryption happen inside
//! the token; only the public key is read out (as SubjectPublicKeyInfo).
//!
//! Both objects of a pair carry the same label. The private key's
//! attributes allow exactly its usage (CKA_SIGN or CKA_DECRYPT), so the
//! token enforces it as Keyhold does.

use super::*;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource, PkcsPssParams};
use cryptoki::mechanism::MechanismType;
use keyhold_crypto::asym::{self, Hash, PairKind, SignScheme};

/// The PKCS#11 key type of a kind of pair.
fn ck_key_type(kind: PairKind) -> KeyType {
    match kind {
        PairKind::Rsa(_) => KeyType::RSA,
        PairKind::Ed25519 => KeyType::EC_EDWARDS,
        _ => KeyType::EC,
    }
}

fn crypto(what: &str) -> impl Fn(keyhold_crypto::CryptoError) -> Error + '_ {
    move |e| Error::RootOfTrust(format!("{what}: {e}"))
}

/// The public and private templates of a new pair: token objects, the
/// private key private, sensitive and never extractable, each allowed
/// exactly what `usage` says.
fn pair_templates(
    label: &str,
    kind: PairKind,
    usage: Usage,
) -> Result<(Vec<Attribute>, Vec<Attribute>)> {
    let rsa = matches!(kind, PairKind::Rsa(_));
    let key_type = ck_key_type(kind);
    let label = label.as_bytes().to_vec();
    let mut public = vec![
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(key_type),
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Label(label.clone()),
        Attribute::Verify(usage.signs()),
        Attribute::Derive(false),
    ];
    let mut private = vec![
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(key_type),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Label(label),
        Attribute::Sign(usage.sign),
        Attribute::Derive(false),
    ];
    match kind {
        PairKind::Rsa(bits) => {
            public.push(Attribute::ModulusBits(u64::from(bits).into()));
            public.push(Attribute::PublicExponent(vec![1, 0, 1]));
        }
        _ => public.push(Attribute::EcParams(
            asym::curve_params_der(kind).map_err(crypto("curve parameters"))?,
        )),
    }
    if rsa {
        // Only RSA keys encrypt; EC tokens may refuse the attributes.
        public.extend([Attribute::Encrypt(usage.crypts()), Attribute::Wrap(false)]);
        private.extend([Attribute::Decrypt(usage.decrypt), Attribute::Unwrap(false)]);
    }
    Ok((public, private))
}

/// The kind of a private key, from its attributes.
fn private_key_kind(
    s: &Session,
    h: ObjectHandle,
) -> std::result::Result<Option<PairKind>, CkError> {
    let attrs = s.get_attributes(
        h,
        &[
            AttributeType::KeyType,
            AttributeType::Modulus,
            AttributeType::EcParams,
        ],
    )?;
    let (mut key_type, mut modulus, mut params) = (None, None, None);
    for a in attrs {
        match a {
            Attribute::KeyType(t) => key_type = Some(t),
            Attribute::Modulus(m) => modulus = Some(m),
            Attribute::EcParams(p) => params = Some(p),
            _ => {}
        }
    }
    let curve = |kinds: &[PairKind]| {
        kinds.iter().copied().find(|k| {
            params.as_deref().is_some_and(|p| {
                asym::curve_params_der(*k).is_ok_and(|d| d == p)
                    // Some tokens name Ed25519's curve by its printable name.
                    || (*k == PairKind::Ed25519 && p.ends_with(b"edwards25519"))
            })
        })
    };
    Ok(match key_type {
        Some(t) if t == KeyType::RSA => modulus.and_then(|m| {
            let first = m.iter().position(|b| *b != 0).unwrap_or(m.len());
            let bits = ((m.len() - first) * 8) as u32;
            [2048, 3072, 4096]
                .contains(&bits)
                .then_some(PairKind::Rsa(bits))
        }),
        Some(t) if t == KeyType::EC => {
            curve(&[PairKind::EcP256, PairKind::EcP384, PairKind::EcP521])
        }
        Some(t) if t == KeyType::EC_EDWARDS => curve(&[PairKind::Ed25519]),
        _ => None,
    })
}

fn hash_name(h: Hash) -> &'static str {
    match h {
        Hash::Sha1 => "SHA-1",
        Hash::Sha256 => "SHA-256",
        Hash::Sha384 => "SHA-384",
        Hash::Sha512 => "SHA-512",
    }
}

/// The PKCS#11 mechanism type of a hash.
fn hash_mechanism(h: Hash) -> (MechanismType, PkcsMgfType) {
    match h {
        Hash::Sha1 => (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
        Hash::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
        Hash::Sha384 => (MechanismType::SHA384, PkcsMgfType::MGF1_SHA384),
        Hash::Sha512 => (MechanismType::SHA512, PkcsMgfType::MGF1_SHA512),
    }
}

/// The signing mechanism of a scheme with a key of `kind`, and whether the
/// message is hashed here first (ECDSA: tokens often offer CKM_ECDSA only).
fn sign_mechanism(kind: PairKind, scheme: SignScheme) -> Result<(Mechanism<'static>, bool)> {
    let pss = |h: Hash, salt: usize| {
        let (hash_alg, mgf) = hash_mechanism(h);
        PkcsPssParams {
            hash_alg,
            mgf,
            s_len: (salt as u64).into(),
        }
    };
    let unsupported = || {
        Error::invalid(
            "signing algorithm",
            format!("{scheme:?} is not a signature of this HSM key"),
        )
    };
    Ok(match (kind, scheme) {
        (PairKind::Rsa(_), SignScheme::RsaPkcs1(h)) => (
            match h {
                Hash::Sha256 => Mechanism::Sha256RsaPkcs,
                Hash::Sha384 => Mechanism::Sha384RsaPkcs,
                Hash::Sha512 => Mechanism::Sha512RsaPkcs,
                Hash::Sha1 => return Err(unsupported()),
            },
            false,
        ),
        (PairKind::Rsa(bits), SignScheme::RsaPss(h) | SignScheme::RsaPssMaxSalt(h)) => {
            let salt = match scheme {
                SignScheme::RsaPssMaxSalt(_) => asym::pss_max_salt(bits, h),
                _ => asym::hash_len(h),
            };
            let p = pss(h, salt);
            (
                match h {
                    Hash::Sha256 => Mechanism::Sha256RsaPkcsPss(p),
                    Hash::Sha384 => Mechanism::Sha384RsaPkcsPss(p),
                    Hash::Sha512 => Mechanism::Sha512RsaPkcsPss(p),
                    Hash::Sha1 => return Err(unsupported()),
                },
                false,
            )
        }
        (PairKind::EcP256, SignScheme::Ecdsa(Hash::Sha256))
        | (PairKind::EcP384, SignScheme::Ecdsa(Hash::Sha384))
        | (PairKind::EcP521, SignScheme::Ecdsa(Hash::Sha512)) => (Mechanism::Ecdsa, true),
        (PairKind::Ed25519, SignScheme::Ed25519) => (
            Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
            false,
        ),
        _ => return Err(unsupported()),
    })
}

/// The key in `pairs` of a pair's label (kept apart from secret keys').
fn pair_entry(label: &str) -> String {
    format!("pair\u{0}{label}")
}

impl Pkcs11Token {
    /// Generates a key pair labelled `label`, allowed to do exactly `usage`.
    pub(crate) fn generate_pair(&self, label: &str, kind: PairKind, usage: Usage) -> Result<()> {
        let taken = self
            .with_session("find key", |s| {
                s.find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
            })
            .map_err(|e| ck("find HSM key", e))?;
        if !taken.is_empty() || self.is_reserved(label) {
            return Err(Error::invalid(
                "HSM key label",
                format!("{label:?} is already in use"),
            ));
        }
        let (public, private) = pair_templates(label, kind, usage)?;
        let mechanism = match kind {
            PairKind::Rsa(_) => Mechanism::RsaPkcsKeyPairGen,
            PairKind::Ed25519 => Mechanism::EccEdwardsKeyPairGen,
            _ => Mechanism::EccKeyPairGen,
        };
        let (_, h) = self
            .with_session("generate key pair", |s| {
                s.generate_key_pair(&mechanism, &public, &private)
            })
            .map_err(|e| ck("C_GenerateKeyPair", e))?;
        self.pairs.lock().insert(pair_entry(label), (h, kind));
        Ok(())
    }

    /// The private key labelled `label` and its kind (cached). It must be
    /// one of the kinds Keyhold makes, sensitive and never extractable.
    pub(crate) fn pair(&self, label: &str) -> Result<(ObjectHandle, PairKind)> {
        if let Some(p) = self.pairs.lock().get(&pair_entry(label)) {
            return Ok(*p);
        }
        let (found, kind, leaves) = self
            .with_session("find key pair", |s| {
                let found = s.find_objects(&[
                    Attribute::Class(ObjectClass::PRIVATE_KEY),
                    Attribute::Label(label.as_bytes().to_vec()),
                ])?;
                let [h] = found.as_slice() else {
                    return Ok((found, None, false));
                };
                let kind = private_key_kind(s, *h)?;
                let mut leaves = false;
                for a in
                    s.get_attributes(*h, &[AttributeType::Sensitive, AttributeType::Extractable])?
                {
                    match a {
                        Attribute::Sensitive(v) => leaves |= !v,
                        Attribute::Extractable(v) => leaves |= v,
                        _ => {}
                    }
                }
                Ok((found, kind, leaves))
            })
            .map_err(|e| ck("find HSM key pair", e))?;
        let h = match found.as_slice() {
            [h] => *h,
            [] => {
                return Err(Error::RootOfTrust(format!(
                    "no private key labelled {label:?} in HSM token {:?}",
                    self.name()
                )))
            }
            _ => {
                return Err(Error::RootOfTrust(format!(
                "{} private keys are labelled {label:?} in HSM token {:?}; labels must be unique",
                found.len(),
                self.name()
            )))
            }
        };
        let kind = kind.ok_or_else(|| {
            Error::RootOfTrust(format!(
                "the HSM private key labelled {label:?} is not an RSA 2048/3072/4096, EC P-256/384/521 or Ed25519 key"
            ))
        })?;
        if leaves {
            return Err(Error::RootOfTrust(format!(
                "the HSM private key labelled {label:?} must be sensitive and not extractable: an HSM-resident key never leaves the token"
            )));
        }
        self.pairs.lock().insert(pair_entry(label), (h, kind));
        Ok((h, kind))
    }

    /// Runs `f` with the private key labelled `label`; a handle gone stale
    /// is looked up again once.
    fn with_pair<R>(
        &self,
        label: &str,
        f: impl Fn(&Session, ObjectHandle, PairKind) -> std::result::Result<R, CkError>,
    ) -> std::result::Result<R, SessionFailure> {
        let (h, kind) = self.pair(label).map_err(SessionFailure::Pool)?;
        match self.with_session(label, |s| f(s, h, kind)) {
            Err(SessionFailure::Ck(CkError::Pkcs11(
                RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid,
                _,
            ))) => {
                self.pairs.lock().remove(&pair_entry(label));
                let (h, kind) = self.pair(label).map_err(SessionFailure::Pool)?;
                self.with_session(label, |s| f(s, h, kind))
            }
            r => r,
        }
    }

    /// The public key of the pair labelled `label`, as SubjectPublicKeyInfo
    /// DER, read from its public key object (for RSA, the private key's
    /// public attributes do when there is none).
    pub(crate) fn public_key(&self, label: &str) -> Result<Vec<u8>> {
        let (_, kind) = self.pair(label)?;
        let parts = self
            .with_session("read public key", |s| {
                let public = s.find_objects(&[
                    Attribute::Class(ObjectClass::PUBLIC_KEY),
                    Attribute::Label(label.as_bytes().to_vec()),
                ])?;
                let h = match (public.as_slice(), kind) {
                    ([h], _) => *h,
                    (_, PairKind::Rsa(_)) => self.pair_handle_in(s, label)?,
                    _ => return Ok(None),
                };
                let attrs = s.get_attributes(
                    h,
                    &[
                        AttributeType::Modulus,
                        AttributeType::PublicExponent,
                        AttributeType::EcPoint,
                    ],
                )?;
                let (mut n, mut e, mut point) = (None, None, None);
                for a in attrs {
                    match a {
                        Attribute::Modulus(v) => n = Some(v),
                        Attribute::PublicExponent(v) => e = Some(v),
                        Attribute::EcPoint(v) => point = Some(v),
                        _ => {}
                    }
                }
                Ok(Some((n, e, point)))
            })
            .map_err(|e| ck("read HSM public key", e))?;
        let missing = || {
            Error::RootOfTrust(format!(
                "no public key labelled {label:?} in HSM token {:?}",
                self.name()
            ))
        };
        match (kind, parts.ok_or_else(missing)?) {
            (PairKind::Rsa(_), (Some(n), Some(e), _)) => {
                asym::rsa_spki_from_parts(&n, &e).map_err(crypto("HSM RSA public key"))
            }
            (PairKind::Rsa(_), _) => Err(missing()),
            (_, (_, _, Some(point))) => {
                asym::ec_spki_from_point(kind, &point).map_err(crypto("HSM EC public key"))
            }
            _ => Err(missing()),
        }
    }

    /// The private key's handle, found in session `s` (no cache).
    fn pair_handle_in(
        &self,
        s: &Session,
        label: &str,
    ) -> std::result::Result<ObjectHandle, CkError> {
        s.find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])?
        .first()
        .copied()
        .ok_or(CkError::Pkcs11(
            RvError::KeyHandleInvalid,
            Function::FindObjects,
        ))
    }

    /// Signs `msg` inside the token. ECDSA signatures come back as X9.62
    /// DER, like Keyhold's software ones.
    pub(crate) fn sign(&self, label: &str, scheme: SignScheme, msg: &[u8]) -> Result<Vec<u8>> {
        let (_, kind) = self.pair(label)?;
        let (mechanism, prehash) = sign_mechanism(kind, scheme)?;
        let input = match (prehash, scheme) {
            (true, SignScheme::Ecdsa(h)) => asym::digest(h, msg),
            _ => msg.to_vec(),
        };
        let out = self
            .with_pair(label, |s, h, _| s.sign(&mechanism, h, &input))
            .map_err(|e| ck("sign in the HSM", e))?;
        if prehash {
            asym::ecdsa_raw_to_der(&out).map_err(crypto("HSM ECDSA signature"))
        } else {
            Ok(out)
        }
    }

    /// RSA-OAEP decryption inside the token (MGF1 with the same hash). A
    /// ciphertext that does not decrypt is `Error::InvalidCiphertext`.
    pub(crate) fn decrypt_oaep(
        &self,
        label: &str,
        hash: Hash,
        ciphertext: &[u8],
        oaep_label: Option<&[u8]>,
    ) -> Result<SecretBytes> {
        let (_, kind) = self.pair(label)?;
        if !matches!(kind, PairKind::Rsa(_)) {
            return Err(Error::KeyUsage(format!(
                "the HSM key labelled {label:?} is not an RSA key"
            )));
        }
        let (hash_alg, mgf) = hash_mechanism(hash);
        let source = oaep_label.map_or(PkcsOaepSource::empty(), PkcsOaepSource::data_specified);
        let mechanism = Mechanism::RsaPkcsOaep(PkcsOaepParams::new(hash_alg, mgf, source));
        let refused = || {
            Error::invalid(
                "RSA-OAEP parameters",
                format!("the HSM's PKCS#11 module does not do RSA-OAEP with {} and MGF1 of it{} (it refused the parameters; SoftHSMv2 2.6 does SHA-1 without a label only)",
                    hash_name(hash),
                    if oaep_label.is_some() { " and a label" } else { "" }),
            )
        };
        let out = self
            .with_pair(label, |s, h, _| {
                match s.decrypt(&mechanism, h, ciphertext) {
                    Ok(p) => Ok(Some(p)),
                    Err(CkError::Pkcs11(
                        RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange,
                        _,
                    )) => Ok(None),
                    // SoftHSMv2 answers a bad padding with a general error.
                    Err(CkError::Pkcs11(RvError::GeneralError | RvError::FunctionFailed, _))
                        if s.get_session_info().is_ok() =>
                    {
                        Ok(None)
                    }
                    Err(e) => Err(e),
                }
            })
            .map_err(|e| match e {
                SessionFailure::Ck(CkError::Pkcs11(
                    RvError::ArgumentsBad
                    | RvError::MechanismParamInvalid
                    | RvError::MechanismInvalid,
                    _,
                )) => refused(),
                e => ck("decrypt in the HSM", e),
            })?;
        out.map(SecretBytes::new).ok_or(Error::InvalidCiphertext)
    }

    /// Makes the pair's private key allowed to do exactly `usage` (CKA_SIGN,
    /// and CKA_DECRYPT for RSA). `Ok(false)`: the token refuses the change.
    pub(crate) fn set_pair_usage(&self, label: &str, usage: Usage) -> Result<bool> {
        let (_, kind) = self.pair(label)?;
        let mut attrs = vec![Attribute::Sign(usage.sign)];
        if matches!(kind, PairKind::Rsa(_)) {
            attrs.push(Attribute::Decrypt(usage.decrypt));
        }
        match self.with_pair(label, |s, h, _| s.update_attributes(h, &attrs)) {
            Ok(()) => Ok(true),
            Err(e) if refused_change(&e) => Ok(false),
            Err(e) => Err(ck("C_SetAttributeValue", e)),
        }
    }

    /// The kind of the usable pair labelled `label` (how a pair is adopted).
    pub(crate) fn pair_kind(&self, label: &str) -> Result<PairKind> {
        self.pair(label).map(|(_, k)| k)
    }
}
