//! The cryptographic operations: Encrypt and Decrypt (single-shot and
//! streamed), MAC and MAC Verify, RNG Retrieve; usage limits.

use super::*;

impl Kmip {
    /// The key of an object usable for `purpose` now.
    pub(super) fn usable(
        &self,
        ctx: &mut MessageState<'_>,
        uid: &str,
        purpose: Purpose,
    ) -> Result<(ManagedObject, Arc<keyhold_crypto::SecretBytes>), KmipError> {
        let o = self.load(ctx, uid)?;
        rules::check_use(&o, purpose, ctx.now).map_err(refused)?;
        let m = self.material(&o)?;
        Ok((o, m))
    }

    /// Counts a use against the object's Usage Limits, if it has any.
    pub(super) fn consume_usage(
        &self,
        ctx: &MessageState<'_>,
        o: &mut ManagedObject,
        data_len: usize,
    ) -> Result<(), KmipError> {
        if rules::charge_usage(o, data_len).map_err(refused)? {
            self.save(ctx, o)?;
        }
        Ok(())
    }

    /// Encrypt or Decrypt: RSA-OAEP on a public or private key, else a
    /// symmetric cipher.
    pub(super) fn crypt(
        &self,
        ctx: &mut MessageState<'_>,
        p: &Ttlv,
        encrypt: bool,
    ) -> Result<Vec<Ttlv>, KmipError> {
        let uid = self.uid_arg(ctx, p)?;
        let o = self.load(ctx, &uid)?;
        if matches!(
            o.object_type,
            object_type::PUBLIC_KEY | object_type::PRIVATE_KEY
        ) {
            return self.asymmetric_crypt(ctx, p, o, encrypt);
        }
        self.symmetric_crypt(ctx, p, o, encrypt)
    }

    fn symmetric_crypt(
        &self,
        ctx: &mut MessageState<'_>,
        p: &Ttlv,
        mut o: ManagedObject,
        encrypt: bool,
    ) -> Result<Vec<Ttlv>, KmipError> {
        let uid = o.uid.clone();
        let purpose = if encrypt {
            Purpose::ENCRYPT
        } else {
            Purpose::DECRYPT
        };
        rules::check_use(&o, purpose, ctx.now).map_err(refused)?;
        let key = self.material(&o)?;
        let cipher = cipher::of_object(&o)?;
        cipher::fips_allows(cipher, &o, encrypt)?;
        let params = crypto_params(&o, p)?;
        let mode = cipher::mode(cipher, params.mode)?;
        let data = bytes_of(p, t::DATA)?.ok_or_else(|| KmipError::missing("Data is missing"))?;
        if data.len() > MAX_DATA {
            return Err(KmipError::invalid_field(format!(
                "Data is over {MAX_DATA} bytes"
            )));
        }
        self.consume_usage(ctx, &mut o, data.len())?;
        let iv = bytes_of(p, t::IV_COUNTER_NONCE)?;
        let aad = bytes_of(p, t::AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA)?.unwrap_or(&[]);
        let tag_len = cipher::tag_len(mode, params.tag_len)?;
        let ivs = cipher::IvRule::new(cipher, mode)?;
        let init = bool_of(p, t::INIT_INDICATOR)? == Some(true);
        let last = bool_of(p, t::FINAL_INDICATOR)? == Some(true);
        let correlation = bytes_of(p, t::CORRELATION_VALUE)?;
        if correlation.is_some() || (init && !last) {
            if cipher != Cipher::Aes || mode != bcm::GCM {
                return Err(KmipError::new(
                    Reason::FeatureNotSupported,
                    "streaming Encrypt/Decrypt (Init/Final Indicator, Correlation Value) is offered for AES-GCM only",
                ));
            }
            cipher::fips_check(keyhold_crypto::fips::Use::GcmOutsideModule)?;
            let step = Step {
                uid: &uid,
                encrypt,
                data,
                tag_len,
                last,
            };
            return match correlation {
                Some(cv) => self.stream_next(ctx, step, cv, p),
                None => {
                    let (iv, generated) = match iv {
                        None if !encrypt => return Err(missing_iv()),
                        iv => encryption_iv(iv, params.random_iv, ivs.default_len())?,
                    };
                    ivs.check(&iv)?;
                    if generated {
                        self.charge_random_iv(&uid)?;
                    }
                    self.stream_start(ctx, step, key.expose(), iv, generated, aad)
                }
            };
        }
        let spec = cipher::Spec {
            cipher,
            mode,
            pad: cipher::padding(params.padding)?,
            tag_len,
            ivs,
        };
        let mut out = vec![Ttlv::text(t::UNIQUE_IDENTIFIER, &uid)];
        if encrypt {
            let (iv, generated) = encryption_iv(iv, params.random_iv, spec.ivs.default_len())?;
            spec.ivs.check(&iv)?;
            if generated && mode == bcm::GCM {
                self.charge_random_iv(&uid)?;
            }
            let (ct, tag) = spec.encrypt(key.expose(), &iv, aad, data)?;
            out.push(Ttlv::bytes(t::DATA, ct));
            if generated {
                out.push(Ttlv::bytes(t::IV_COUNTER_NONCE, iv));
            }
            if let Some(tag) = tag {
                out.push(Ttlv::bytes(t::AUTHENTICATED_ENCRYPTION_TAG, tag));
            }
        } else {
            let tag = bytes_of(p, t::AUTHENTICATED_ENCRYPTION_TAG)?;
            let pt = spec.decrypt(key.expose(), iv, aad, data, tag)?;
            out.push(Ttlv::bytes(t::DATA, pt));
        }
        Ok(out)
    }

    /// The first part of a streamed AES-GCM encryption or decryption (Init
    /// Indicator), with its IV already checked (`generated`: made by the
    /// server, so returned): answers its output and the stream's
    /// Correlation Value.
    pub(super) fn stream_start(
        &self,
        ctx: &mut MessageState<'_>,
        step: Step<'_>,
        key: &[u8],
        iv: Vec<u8>,
        generated: bool,
        aad: &[u8],
    ) -> Result<Vec<Ttlv>, KmipError> {
        let mut gcm = gcm::GcmStream::new(key, &iv, aad, step.encrypt)
            .map_err(|_| crypto_fail("AES-GCM could not start"))?;
        let part = gcm
            .update(step.data)
            .map_err(|_| crypto_fail("AES-GCM failed"))?;
        let stream = Stream::new(
            &ctx.client.identity,
            step.uid,
            step.encrypt,
            step.tag_len,
            gcm,
        );
        let cv = self.streams.open(stream).map_err(|_| {
            KmipError::new(
                Reason::GeneralFailure,
                "too many streamed operations are open: finish some first",
            )
        })?;
        let mut out = vec![
            Ttlv::text(t::UNIQUE_IDENTIFIER, step.uid.to_owned()),
            Ttlv::bytes(t::DATA, part),
        ];
        if generated {
            out.push(Ttlv::bytes(t::IV_COUNTER_NONCE, iv));
        }
        out.push(Ttlv::bytes(t::CORRELATION_VALUE, cv));
        Ok(out)
    }

    /// A later part of a stream (its Correlation Value given); the last one
    /// (Final Indicator) answers the tag, or checks it when decrypting.
    pub(super) fn stream_next(
        &self,
        ctx: &mut MessageState<'_>,
        step: Step<'_>,
        cv: &[u8],
        p: &Ttlv,
    ) -> Result<Vec<Ttlv>, KmipError> {
        let mut s = self
            .streams
            .take(cv, &ctx.client.identity, step.uid)
            .map_err(|_| {
                KmipError::invalid_field(format!(
                    "no streamed operation on object {} has this Correlation Value (finished, idle for too long, or never started)",
                    step.uid
                ))
            })?;
        if s.encrypt != step.encrypt {
            let started = if s.encrypt { "an Encrypt" } else { "a Decrypt" };
            self.streams.put_back(cv.to_vec(), s);
            return Err(KmipError::invalid_field(format!(
                "this Correlation Value belongs to {started} stream"
            )));
        }
        let tag_given = bytes_of(p, t::AUTHENTICATED_ENCRYPTION_TAG)?;
        if step.last && !s.encrypt && tag_given.is_none() {
            self.streams.put_back(cv.to_vec(), s);
            return Err(KmipError::missing(
                "Authenticated Encryption Tag is missing from the last part",
            ));
        }
        // A failed part ends the stream: its state is no longer sound.
        let part = s
            .gcm
            .update(step.data)
            .map_err(|_| crypto_fail("AES-GCM failed"))?;
        let mut out = vec![
            Ttlv::text(t::UNIQUE_IDENTIFIER, step.uid.to_owned()),
            Ttlv::bytes(t::DATA, part),
        ];
        if !step.last {
            self.streams.put_back(cv.to_vec(), s);
            out.push(Ttlv::bytes(t::CORRELATION_VALUE, cv.to_vec()));
        } else if s.encrypt {
            let tag = s
                .gcm
                .finish_encrypt(s.tag_len)
                .map_err(|_| crypto_fail("AES-GCM failed"))?;
            out.push(Ttlv::bytes(t::AUTHENTICATED_ENCRYPTION_TAG, tag));
        } else {
            s.gcm
                .finish_decrypt(tag_given.unwrap_or_default())
                .map_err(|_| {
                    crypto_fail("authentication failed: wrong key, IV, AAD, tag or ciphertext (the earlier parts' output must be discarded)")
                })?;
        }
        Ok(out)
    }

    pub(super) fn mac(
        &self,
        ctx: &mut MessageState<'_>,
        p: &Ttlv,
        verify: bool,
    ) -> Result<Vec<Ttlv>, KmipError> {
        let uid = self.uid_arg(ctx, p)?;
        let purpose = if verify {
            Purpose::MAC_VERIFY
        } else {
            Purpose::MAC_GENERATE
        };
        let (o, key) = self.usable(ctx, &uid, purpose)?;
        let params = crypto_params(&o, p)?;
        let alg = params
            .algorithm
            .or_else(|| obj::enum_attr(&o, obj::ALGORITHM))
            .unwrap_or(0);
        let hash = match alg {
            crypto_alg::HMAC_SHA1 => MacHash::Sha1,
            crypto_alg::HMAC_SHA256 => MacHash::Sha256,
            crypto_alg::HMAC_SHA384 => MacHash::Sha384,
            crypto_alg::HMAC_SHA512 => MacHash::Sha512,
            _ => {
                return Err(KmipError::new(
                    Reason::IllegalOperation,
                    format!("object {uid} is not an HMAC key (HMAC-SHA1/256/384/512)"),
                ))
            }
        };
        let data = bytes_of(p, t::DATA)?.ok_or_else(|| KmipError::missing("Data is missing"))?;
        if data.len() > MAX_DATA {
            return Err(KmipError::invalid_field(format!(
                "Data is over {MAX_DATA} bytes"
            )));
        }
        let mut out = vec![Ttlv::text(t::UNIQUE_IDENTIFIER, uid)];
        if verify {
            let mac = bytes_of(p, t::MAC_DATA)?
                .ok_or_else(|| KmipError::missing("MAC Data is missing"))?;
            let ok = sym::hmac_verify(hash, key.expose(), data, mac);
            out.push(Ttlv::enumeration(
                t::VALIDITY_INDICATOR,
                if ok { 1 } else { 2 },
            ));
        } else {
            out.push(Ttlv::bytes(
                t::MAC_DATA,
                sym::hmac_sign(hash, key.expose(), data),
            ));
        }
        Ok(out)
    }

    pub(super) fn rng_retrieve(&self, p: &Ttlv) -> Result<Vec<Ttlv>, KmipError> {
        let n = int_of(p, t::DATA_LENGTH)?
            .ok_or_else(|| KmipError::missing("Data Length is missing"))?;
        if !(1..=MAX_RNG).contains(&n) {
            return Err(KmipError::invalid_field(format!(
                "Data Length must be 1 to {MAX_RNG}"
            )));
        }
        let mut v = vec![0u8; n as usize];
        keyhold_crypto::fill_random(&mut v).map_err(|_| {
            KmipError::new(Reason::GeneralFailure, "random number generator failed")
        })?;
        Ok(vec![Ttlv::bytes(t::DATA, v)])
    }
}

/// Cryptographic Parameters that matter to Keyhold's operations.
#[derive(Debug, Default)]
pub(super) struct Params {
    mode: Option<u32>,
    padding: Option<u32>,
    algorithm: Option<u32>,
    random_iv: Option<bool>,
    tag_len: Option<i32>,
}

pub(super) fn crypto_fail(m: &str) -> KmipError {
    KmipError::new(Reason::CryptographicFailure, m.to_owned())
}

/// A decryption without the IV its mode needs.
pub(super) fn missing_iv() -> KmipError {
    KmipError::invalid_message("missing IV: IV/Counter/Nonce is required to decrypt in this mode")
}

/// The IV to encrypt with: the client's, unless it asked for a random one
/// (then giving one is an error), else `len` random bytes. Says whether
/// the server made it (and must return it).
pub(super) fn encryption_iv(
    given: Option<&[u8]>,
    random_iv: Option<bool>,
    len: usize,
) -> Result<(Vec<u8>, bool), KmipError> {
    match given {
        Some(_) if random_iv == Some(true) => Err(KmipError::invalid_field(
            "an IV was given although Random IV asks the server for one",
        )),
        Some(v) => Ok((v.to_vec(), false)),
        None => {
            let mut v = vec![0u8; len];
            keyhold_crypto::fill_random(&mut v)
                .map_err(|_| crypto_fail("random number generator failed"))?;
            Ok((v, len > 0))
        }
    }
}

/// The request's Cryptographic Parameters, else the object's own.
pub(super) fn crypto_params(o: &ManagedObject, p: &Ttlv) -> Result<Params, KmipError> {
    let from = |s: &Ttlv| -> Result<Params, KmipError> {
        Ok(Params {
            mode: enum_of(s, t::BLOCK_CIPHER_MODE)?,
            padding: enum_of(s, t::PADDING_METHOD)?,
            algorithm: enum_of(s, t::CRYPTOGRAPHIC_ALGORITHM)?,
            random_iv: bool_of(s, t::RANDOM_IV)?,
            tag_len: int_of(s, t::TAG_LENGTH)?,
        })
    };
    if let Some(s) = p.child(t::CRYPTOGRAPHIC_PARAMETERS) {
        return from(s);
    }
    if let Some(v) = o.attr(obj::PARAMETERS) {
        return from(&Ttlv::new(t::CRYPTOGRAPHIC_PARAMETERS, attrs::to_value(v)));
    }
    Ok(Params::default())
}
