//! The ciphers single-shot Encrypt and Decrypt offer: which block cipher
//! modes, IV lengths, tag lengths and paddings each takes, and the
//! encryption and decryption themselves.

use super::crypt::{crypto_fail, missing_iv};
use super::*;

/// The cipher of a symmetric key object, from its algorithm.
pub(super) fn of_object(o: &ManagedObject) -> Result<Cipher, KmipError> {
    match obj::enum_attr(o, obj::ALGORITHM) {
        Some(crypto_alg::AES) => Ok(Cipher::Aes),
        Some(crypto_alg::CHACHA20_POLY1305) => Ok(Cipher::ChaChaPoly),
        Some(crypto_alg::CHACHA20) => Ok(Cipher::ChaCha),
        Some(crypto_alg::TRIPLE_DES) => Ok(Cipher::TripleDes),
        _ => Err(KmipError::new(
            Reason::IllegalOperation,
            format!(
                "object {} is not an AES, Triple DES, ChaCha20 or ChaCha20-Poly1305 key",
                o.uid
            ),
        )),
    }
}

/// FIPS mode's answer to an Encrypt (`encrypt`) or Decrypt with the key
/// `o` of `cipher`: Triple DES decrypts existing data but encrypts
/// nothing; a ChaCha20 key does neither, unless its usage mask allows
/// decryption only (an old key kept to read old data while it migrates;
/// Get exports any of them). Those decryptions are the ones FIPS mode
/// does outside the module.
pub(super) fn fips_allows(
    cipher: Cipher,
    o: &ManagedObject,
    encrypt: bool,
) -> Result<(), KmipError> {
    use keyhold_crypto::fips::Use;
    let u = match (cipher, encrypt) {
        (Cipher::ChaCha | Cipher::ChaChaPoly, false) if decrypt_only(o.attr(obj::USAGE_MASK)) => {
            return Ok(())
        }
        (Cipher::ChaCha | Cipher::ChaChaPoly, _) => Use::ChaCha20,
        (Cipher::TripleDes, true) => Use::TripleDesEncrypt,
        (Cipher::TripleDes, false) => Use::TripleDesDecrypt,
        (Cipher::Aes, _) => return Ok(()),
    };
    fips_check(u)
}

/// Whether a usage mask allows decryption but not encryption (an old key
/// FIPS mode lets read old data).
pub(super) fn decrypt_only(mask: Option<&keyhold_core::AttrValue>) -> bool {
    matches!(mask, Some(keyhold_core::AttrValue::Int(m)) if m & crate::enums::usage_mask::ENCRYPT == 0)
}

/// [`keyhold_crypto::fips::check`] as a KMIP error: Feature Not Supported,
/// saying FIPS mode and why.
pub(crate) fn fips_check(u: keyhold_crypto::fips::Use) -> Result<(), KmipError> {
    keyhold_crypto::fips::check(u)
        .map_err(|e| KmipError::new(Reason::FeatureNotSupported, e.to_string()))
}

/// The block cipher mode used: the one asked for, else the cipher's
/// default (GCM for AES, CBC for Triple DES; 0 for the stream cipher).
pub(super) fn mode(cipher: Cipher, asked: Option<u32>) -> Result<u32, KmipError> {
    Ok(match (cipher, asked) {
        // ChaCha20-Poly1305 is an AEAD like GCM: same fields, same checks.
        (Cipher::ChaChaPoly, None | Some(bcm::AEAD)) => bcm::GCM,
        (Cipher::ChaChaPoly, Some(m)) => {
            return Err(KmipError::invalid_field(format!(
                "ChaCha20-Poly1305 takes Block Cipher Mode AEAD, not {m:#x}"
            )))
        }
        // A stream cipher: no block cipher mode.
        (Cipher::ChaCha, _) => 0,
        (Cipher::Aes, m) => m.unwrap_or(bcm::GCM),
        (Cipher::TripleDes, m) => m.unwrap_or(bcm::CBC),
    })
}

/// The AEAD tag length asked for (16 when not), checked for GCM.
pub(super) fn tag_len(mode: u32, asked: Option<i32>) -> Result<usize, KmipError> {
    let n = asked.unwrap_or(16);
    if mode == bcm::GCM && !(12..=16).contains(&n) {
        return Err(KmipError::new(
            Reason::GeneralFailure,
            format!("invalid tag length {n}: AEAD tags are 12 to 16 bytes"),
        ));
    }
    Ok(n as usize)
}

/// Whether PKCS#5 padding is asked for (no other padding is offered).
pub(super) fn padding(asked: Option<u32>) -> Result<bool, KmipError> {
    match asked {
        None | Some(padding::NONE) => Ok(false),
        Some(padding::PKCS5) => Ok(true),
        Some(other) => Err(KmipError::new(
            Reason::FeatureNotSupported,
            format!("padding method {other:#x} is not supported (None, PKCS5 are)"),
        )),
    }
}

/// The IV lengths a cipher and mode take.
#[derive(Debug, Clone, Copy)]
pub(super) struct IvRule {
    lens: &'static [usize],
    /// AES-GCM also takes IVs of other lengths (NIST SP 800-38D).
    any_gcm: bool,
}

impl IvRule {
    pub(super) fn new(cipher: Cipher, mode: u32) -> Result<Self, KmipError> {
        let lens: &'static [usize] = match (cipher, mode) {
            (Cipher::ChaCha, _) => &[12, 8, 16],
            (Cipher::ChaChaPoly, _) => &[12],
            (Cipher::TripleDes, bcm::CBC) => &[8],
            (Cipher::TripleDes, bcm::ECB) => &[0],
            (Cipher::TripleDes, other) => {
                return Err(KmipError::new(
                    Reason::FeatureNotSupported,
                    format!("Triple DES takes block cipher mode CBC or ECB, not {other:#x}"),
                ))
            }
            (_, bcm::GCM) => &[12],
            (_, bcm::CBC | bcm::CTR) => &[16],
            (_, bcm::ECB) => &[0],
            (_, other) => {
                return Err(KmipError::new(
                    Reason::FeatureNotSupported,
                    format!(
                        "block cipher mode {other:#x} is not supported (GCM, CBC, CTR, ECB are)"
                    ),
                ))
            }
        };
        Ok(Self {
            lens,
            any_gcm: cipher == Cipher::Aes && mode == bcm::GCM,
        })
    }

    /// The length of an IV the server makes.
    pub(super) fn default_len(&self) -> usize {
        self.lens[0]
    }

    /// Whether the mode takes no IV at all (ECB).
    fn none(&self) -> bool {
        self.lens == [0]
    }

    pub(super) fn check(&self, iv: &[u8]) -> Result<(), KmipError> {
        if self.lens.contains(&iv.len()) {
            return Ok(());
        }
        if self.any_gcm && (1..=MAX_GCM_IV).contains(&iv.len()) {
            return fips_check(keyhold_crypto::fips::Use::GcmOutsideModule);
        }
        let want = if self.any_gcm {
            format!("1 to {MAX_GCM_IV} bytes (12 recommended)")
        } else {
            self.lens
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(" or ")
                + " bytes"
        };
        Err(KmipError::invalid_field(format!(
            "the IV must be {want} for this mode, not {}",
            iv.len()
        )))
    }
}

/// Everything a single-shot Encrypt or Decrypt was asked to use.
pub(super) struct Spec {
    pub(super) cipher: Cipher,
    pub(super) mode: u32,
    pub(super) pad: bool,
    pub(super) tag_len: usize,
    pub(super) ivs: IvRule,
}

impl Spec {
    /// Encrypts `data` under an IV already checked: the ciphertext, and
    /// the tag of an AEAD.
    pub(super) fn encrypt(
        &self,
        k: &[u8],
        iv: &[u8],
        aad: &[u8],
        data: &[u8],
    ) -> Result<(Vec<u8>, Option<Vec<u8>>), KmipError> {
        let cbc_iv = (self.mode == bcm::CBC).then_some(iv);
        Ok(match (self.cipher, self.mode) {
            (Cipher::ChaCha, _) => (
                sym::chacha20(k, iv, data).map_err(|_| crypto_fail("ChaCha20 failed"))?,
                None,
            ),
            (Cipher::TripleDes, _) => (
                sym::tdes_encrypt(k, cbc_iv, data, self.pad).map_err(|_| {
                    crypto_fail(
                        "encryption failed (without padding, Data must be whole 8-byte blocks)",
                    )
                })?,
                None,
            ),
            (_, bcm::GCM) => {
                let (ct, tag) = match self.cipher {
                    Cipher::ChaChaPoly => {
                        sym::chacha20_poly1305_seal(k, iv, aad, data).map(|(c, t)| (c, t.to_vec()))
                    }
                    _ if iv.len() == 12 => {
                        sym::aes_gcm_seal(k, iv, aad, data).map(|(c, t)| (c, t.to_vec()))
                    }
                    _ => gcm::seal_any_iv(k, iv, aad, data, 16),
                }
                .map_err(|_| crypto_fail("AEAD encryption failed"))?;
                (ct, Some(tag[..self.tag_len].to_vec()))
            }
            (_, bcm::CBC | bcm::ECB) => {
                let ct = match cbc_iv {
                    Some(iv) => sym::aes_cbc_encrypt(k, iv, data, self.pad),
                    None => sym::aes_ecb_encrypt(k, data, self.pad),
                }
                .map_err(|_| {
                    crypto_fail(
                        "encryption failed (without padding, Data must be whole 16-byte blocks)",
                    )
                })?;
                (ct, None)
            }
            _ => (
                sym::aes_ctr(k, iv, data).map_err(|_| crypto_fail("AES-CTR failed"))?,
                None,
            ),
        })
    }

    /// Decrypts `data`: with the IV given, or the one GCM clients put in
    /// front of it (IV || ciphertext || tag); the AEAD tag given, or the
    /// last 16 bytes of the data.
    pub(super) fn decrypt(
        &self,
        k: &[u8],
        iv: Option<&[u8]>,
        aad: &[u8],
        data: &[u8],
        tag_given: Option<&[u8]>,
    ) -> Result<Vec<u8>, KmipError> {
        let (iv, rest) = match iv {
            Some(v) => (v, data),
            None if self.mode == bcm::GCM && data.len() >= 12 + 16 => data.split_at(12),
            None if self.ivs.none() => (&[][..], data),
            None => return Err(missing_iv()),
        };
        self.ivs.check(iv)?;
        let bad_block = || crypto_fail("decryption failed: wrong key, IV, padding or length");
        Ok(match (self.cipher, self.mode) {
            (Cipher::ChaCha, _) => {
                sym::chacha20(k, iv, rest).map_err(|_| crypto_fail("ChaCha20 failed"))?
            }
            (Cipher::TripleDes, _) => {
                sym::tdes_decrypt(k, (self.mode == bcm::CBC).then_some(iv), rest, self.pad)
                    .map_err(|_| bad_block())?
            }
            (_, bcm::GCM) => self.open_aead(k, iv, aad, rest, tag_given)?,
            (_, bcm::CBC) => {
                sym::aes_cbc_decrypt(k, iv, rest, self.pad).map_err(|_| bad_block())?
            }
            (_, bcm::ECB) => sym::aes_ecb_decrypt(k, rest, self.pad)
                .map_err(|_| crypto_fail("decryption failed: wrong key, padding or length"))?,
            _ => sym::aes_ctr(k, iv, rest).map_err(|_| crypto_fail("AES-CTR failed"))?,
        })
    }

    fn open_aead(
        &self,
        k: &[u8],
        iv: &[u8],
        aad: &[u8],
        rest: &[u8],
        tag_given: Option<&[u8]>,
    ) -> Result<Vec<u8>, KmipError> {
        let (ct, tag) = match tag_given {
            Some(tag) => (rest, tag),
            None if rest.len() >= 16 => rest.split_at(rest.len() - 16),
            None => {
                return Err(KmipError::missing(
                    "Authenticated Encryption Tag is missing",
                ))
            }
        };
        match self.cipher {
            Cipher::ChaChaPoly => sym::chacha20_poly1305_open_short_tag(k, iv, aad, ct, tag),
            _ if iv.len() == 12 => sym::aes_gcm_open_short_tag(k, iv, aad, ct, tag),
            _ => gcm::open_any_iv(k, iv, aad, ct, tag).map(|p| p.to_vec()),
        }
        .map_err(|_| crypto_fail("authentication failed: wrong key, IV, AAD, tag or ciphertext"))
    }
}
