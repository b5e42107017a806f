//! All cryptography in Keyhold goes through this crate, which wraps `aws-lc-rs`.
//!
//! Protocol code never names aws-lc-rs directly: it asks for an AES-256-GCM
//! operation, a SHA-256 digest, an HMAC or random bytes here. Secret values are
//! held in [`SecretBytes`] / [`Aes256Key`], which zeroize on drop and never print
//! their contents in `Debug`.
//!
//! This crate must never log, and never return key material except to the
//! barrier that owns it.

pub mod asym;
mod evp;
pub mod fips;
pub mod gcm;
pub mod jwt;
pub mod sym;

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::{digest, hkdf, hmac, rand};
use zeroize::{Zeroize, Zeroizing};

/// Length in bytes of an AES-256 key.
pub const AES256_KEY_LEN: usize = 32;
/// Length in bytes of the AES-GCM nonce (IV) Keyhold generates.
pub const GCM_IV_LEN: usize = 12;
/// Length in bytes of an AES-GCM authentication tag.
pub const GCM_TAG_LEN: usize = 16;

/// Errors from cryptographic operations. Deliberately uninformative: an
/// authentication failure says nothing about *why* it failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("authentication failed")]
    AuthenticationFailed,
    #[error("invalid key length")]
    InvalidKeyLength,
    #[error("invalid nonce length")]
    InvalidNonceLength,
    #[error("random number generator failure")]
    Rng,
    #[error("cryptographic operation failed")]
    Failed,
}

/// Bytes that are secret: zeroized on drop, redacted in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretBytes([REDACTED; {}])", self.0.len())
    }
}

/// A 256-bit AES key, ready for AES-GCM. The raw bytes are kept (zeroizing)
/// only as long as the key object lives.
pub struct Aes256Key {
    key: LessSafeKey,
    /// The raw key, for AES key wrap (whose aws-lc-rs key is made per call).
    raw: SecretBytes,
}

impl std::fmt::Debug for Aes256Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Aes256Key([REDACTED])")
    }
}

impl Aes256Key {
    /// Builds a key from 32 raw bytes. The caller's buffer is not kept.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != AES256_KEY_LEN {
            return Err(CryptoError::InvalidKeyLength);
        }
        let unbound = UnboundKey::new(&aead::AES_256_GCM, bytes)
            .map_err(|_| CryptoError::InvalidKeyLength)?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
            raw: SecretBytes::new(bytes.to_vec()),
        })
    }

    /// AES key wrap of `data` under this key: RFC 3394 (`padded` false:
    /// at least 16 bytes, a multiple of 8) or RFC 5649 (`padded`: at
    /// least 1 byte).
    pub fn key_wrap(&self, data: &[u8], padded: bool) -> Result<Vec<u8>, CryptoError> {
        if data.is_empty() || (!padded && (data.len() < 16 || !data.len().is_multiple_of(8))) {
            return Err(CryptoError::Failed);
        }
        sym::aes_key_wrap(self.raw.expose(), data, padded)
    }

    /// The inverse of [`Self::key_wrap`]; a wrapped value that does not
    /// check is `AuthenticationFailed`.
    pub fn key_unwrap(&self, data: &[u8], padded: bool) -> Result<SecretBytes, CryptoError> {
        if data.len() < 16 || !data.len().is_multiple_of(8) {
            return Err(CryptoError::AuthenticationFailed);
        }
        sym::aes_key_unwrap_secret(self.raw.expose(), data, padded)
    }

    /// Encrypts `in_out` in place with a fresh random 96-bit IV.
    /// Returns `(iv, tag)`.
    pub fn seal_in_place(
        &self,
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<([u8; GCM_IV_LEN], [u8; GCM_TAG_LEN]), CryptoError> {
        let mut iv = [0u8; GCM_IV_LEN];
        fill_random(&mut iv)?;
        let tag = self
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(iv), Aad::from(aad), in_out)
            .map_err(|_| CryptoError::Failed)?;
        let mut t = [0u8; GCM_TAG_LEN];
        t.copy_from_slice(tag.as_ref());
        Ok((iv, t))
    }

    /// Decrypts `ciphertext` with a 96-bit `iv` and a 16-byte `tag`.
    ///
    /// Only 96-bit IVs are supported by the underlying implementation; any other
    /// length fails authentication (Keyhold never produces other lengths).
    pub fn open(
        &self,
        iv: &[u8],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8],
    ) -> Result<SecretBytes, CryptoError> {
        if iv.len() != GCM_IV_LEN {
            return Err(CryptoError::InvalidNonceLength);
        }
        if tag.len() != GCM_TAG_LEN {
            return Err(CryptoError::AuthenticationFailed);
        }
        let nonce =
            Nonce::try_assume_unique_for_key(iv).map_err(|_| CryptoError::InvalidNonceLength)?;
        let mut buf = Zeroizing::new(Vec::with_capacity(ciphertext.len() + GCM_TAG_LEN));
        buf.extend_from_slice(ciphertext);
        buf.extend_from_slice(tag);
        let plain_len = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| CryptoError::AuthenticationFailed)?
            .len();
        buf.truncate(plain_len);
        Ok(SecretBytes(buf))
    }

    /// Seals `plaintext` into the self-describing form `iv || ciphertext || tag`.
    pub fn seal_combined(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut body = Zeroizing::new(plaintext.to_vec());
        let (iv, tag) = self.seal_in_place(aad, &mut body)?;
        let mut out = Vec::with_capacity(GCM_IV_LEN + body.len() + GCM_TAG_LEN);
        out.extend_from_slice(&iv);
        out.extend_from_slice(&body);
        out.extend_from_slice(&tag);
        // `body` now holds ciphertext; zeroizing it anyway costs nothing.
        body.zeroize();
        Ok(out)
    }

    /// Opens the `iv || ciphertext || tag` form made by [`Self::seal_combined`].
    pub fn open_combined(&self, aad: &[u8], sealed: &[u8]) -> Result<SecretBytes, CryptoError> {
        if sealed.len() < GCM_IV_LEN + GCM_TAG_LEN {
            return Err(CryptoError::AuthenticationFailed);
        }
        let (iv, rest) = sealed.split_at(GCM_IV_LEN);
        let (ct, tag) = rest.split_at(rest.len() - GCM_TAG_LEN);
        self.open(iv, aad, ct, tag)
    }
}

/// Fills `buf` from the system CSPRNG.
pub fn fill_random(buf: &mut [u8]) -> Result<(), CryptoError> {
    rand::fill(buf).map_err(|_| CryptoError::Rng)
}

/// Returns `n` fresh random secret bytes.
pub fn random_secret(n: usize) -> Result<SecretBytes, CryptoError> {
    let mut v = Zeroizing::new(vec![0u8; n]);
    fill_random(&mut v)?;
    Ok(SecretBytes(v))
}

/// A random (version 4) UUID in its usual text form.
pub fn random_uuid() -> Result<String, CryptoError> {
    let mut b = [0u8; 16];
    fill_random(&mut b)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    Ok(uuid_text(&b))
}

/// A time-ordered (version 7, RFC 9562) UUID: the Unix time in
/// milliseconds, then 74 random bits. Identifiers made one after another
/// sort one after another, so a table keyed by them grows at its end
/// instead of at a random page for each insert.
pub fn time_ordered_uuid() -> Result<String, CryptoError> {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut b = [0u8; 16];
    fill_random(&mut b[6..])?;
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    b[6] = (b[6] & 0x0f) | 0x70;
    b[8] = (b[8] & 0x3f) | 0x80;
    Ok(uuid_text(&b))
}

fn uuid_text(b: &[u8; 16]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// SHA-256 of the concatenation of `parts`.
pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// HMAC-SHA256(key, data).
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut out = [0u8; 32];
    out.copy_from_slice(hmac::sign(&k, data).as_ref());
    out
}

/// A reusable HMAC-SHA256 key (avoids re-deriving the inner/outer pads).
pub struct HmacKey(hmac::Key);

impl HmacKey {
    pub fn new(key: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, key))
    }
    pub fn sign(&self, data: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(hmac::sign(&self.0, data).as_ref());
        out
    }
    /// The MAC of the concatenation of `parts` (without copying them together).
    pub fn sign_parts(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.0);
        for p in parts {
            ctx.update(p);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }
}

impl std::fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacKey([REDACTED])")
    }
}

/// Constant-time equality of two byte strings (length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// PBKDF2-HMAC-SHA-256 (NIST SP 800-132): derives `out.len()` bytes from
/// a password, for a passphrase-sealed root in FIPS mode.
pub fn pbkdf2_hmac_sha256(
    password: &[u8],
    salt: &[u8],
    iterations: u32,
    out: &mut [u8],
) -> Result<(), CryptoError> {
    let n = std::num::NonZeroU32::new(iterations).ok_or(CryptoError::Failed)?;
    aws_lc_rs::pbkdf2::derive(
        aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA256,
        n,
        salt,
        password,
        out,
    );
    Ok(())
}

/// HKDF-SHA256: derives `out.len()` bytes from `ikm` with `salt` and `info`.
pub fn hkdf_sha256(
    ikm: &[u8],
    salt: &[u8],
    info: &[u8],
    out: &mut [u8],
) -> Result<(), CryptoError> {
    struct Len(usize);
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm);
    let info = [info];
    let okm = prk
        .expand(&info, Len(out.len()))
        .map_err(|_| CryptoError::Failed)?;
    okm.fill(out).map_err(|_| CryptoError::Failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 3394 §4.6 (256-bit KEK, 256-bit key) and RFC 5649 with the same
    /// inputs (computed with OpenSSL and pyca/cryptography, which agree).
    #[test]
    fn key_wrap_known_answers_and_refusals() {
        let kek: Vec<u8> = (0u8..32).collect();
        let k = Aes256Key::from_bytes(&kek).unwrap();
        let data = hex_lit("00112233445566778899aabbccddeeff000102030405060708090a0b0c0d0e0f");
        let kw = hex_lit(
            "28c9f404c4b810f4cbccb35cfb87f8263f5786e2d80ed326cbc7f0e71a99f43bfb988b9b7a02dd21",
        );
        let kwp = hex_lit(
            "4a8029243027353b0694cf1bd8fc745bb0ce8a739b19b1960b12426d4c39cfeda926d103ab34e9f6",
        );
        assert_eq!(k.key_wrap(&data, false).unwrap(), kw);
        assert_eq!(k.key_wrap(&data, true).unwrap(), kwp);
        assert_eq!(k.key_unwrap(&kw, false).unwrap().expose(), &data[..]);
        assert_eq!(k.key_unwrap(&kwp, true).unwrap().expose(), &data[..]);
        // The other algorithm, a flipped bit, bad sizes.
        assert!(k.key_unwrap(&kw, true).is_err());
        let mut bad = kw.clone();
        bad[9] ^= 1;
        assert_eq!(
            k.key_unwrap(&bad, false).unwrap_err(),
            CryptoError::AuthenticationFailed
        );
        assert!(k.key_unwrap(&kw[..20], false).is_err());
        assert!(k.key_wrap(&data[..12], false).is_err());
        assert!(k.key_wrap(&[], true).is_err());
        assert_eq!(
            k.key_unwrap(&k.key_wrap(b"x", true).unwrap(), true)
                .unwrap()
                .expose(),
            b"x"
        );
    }

    fn hex_lit(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn uuids_have_their_version_and_v7_ones_sort_by_time() {
        let v4 = random_uuid().unwrap();
        assert_eq!((v4.len(), &v4[14..15], &v4[8..9]), (36, "4", "-"));
        assert!(matches!(&v4[19..20], "8" | "9" | "a" | "b"));
        let a = time_ordered_uuid().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = time_ordered_uuid().unwrap();
        assert_eq!((&a[14..15], &b[14..15]), ("7", "7"));
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
        assert!(a < b, "{a} then {b}");
        let ms = u64::from_str_radix(&a[..8], 16).unwrap() << 16
            | u64::from_str_radix(&a[9..13], 16).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(now - ms < 60_000, "the UUID starts with its creation time");
    }

    #[test]
    fn gcm_round_trip_and_tamper() {
        let key = Aes256Key::from_bytes(&[7u8; 32]).unwrap();
        let mut data = b"hello world".to_vec();
        let (iv, tag) = key.seal_in_place(b"aad", &mut data).unwrap();
        assert_ne!(&data, b"hello world");
        let pt = key.open(&iv, b"aad", &data, &tag).unwrap();
        assert_eq!(pt.expose(), b"hello world");
        assert_eq!(
            key.open(&iv, b"aaX", &data, &tag).unwrap_err(),
            CryptoError::AuthenticationFailed
        );
        let mut bad = tag;
        bad[0] ^= 1;
        assert!(key.open(&iv, b"aad", &data, &bad).is_err());
        assert!(key.open(&[0u8; 16], b"aad", &data, &tag).is_err());
    }

    #[test]
    fn combined_round_trip() {
        let key = Aes256Key::from_bytes(&[1u8; 32]).unwrap();
        let sealed = key.seal_combined(b"ctx", &[9u8; 32]).unwrap();
        assert_eq!(sealed.len(), 12 + 32 + 16);
        assert_eq!(
            key.open_combined(b"ctx", &sealed).unwrap().expose(),
            &[9u8; 32]
        );
        assert!(key.open_combined(b"other", &sealed).is_err());
        assert!(key.open_combined(b"ctx", &sealed[..10]).is_err());
    }

    #[test]
    fn known_answers() {
        // FIPS 180-2 "abc".
        assert_eq!(
            sha256(&[b"a", b"bc"]).to_vec(),
            hex_decode("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        // RFC 4231 test case 2.
        assert_eq!(
            hmac_sha256(b"Jefe", b"what do ya want for nothing?").to_vec(),
            hex_decode("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
        // RFC 5869 test case 1 (first 42 bytes).
        let ikm = [0x0bu8; 22];
        let salt = hex_decode("000102030405060708090a0b0c");
        let info = hex_decode("f0f1f2f3f4f5f6f7f8f9");
        let mut okm = [0u8; 42];
        hkdf_sha256(&ikm, &salt, &info, &mut okm).unwrap();
        assert_eq!(
            okm.to_vec(),
            hex_decode("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")
        );
    }

    #[test]
    fn ct_eq_works() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }

    #[test]
    fn debug_is_redacted() {
        let s = SecretBytes::new(vec![0x41; 4]);
        assert_eq!(format!("{s:?}"), "SecretBytes([REDACTED; 4])");
        let k = Aes256Key::from_bytes(&[0x42; 32]).unwrap();
        assert!(!format!("{k:?}").contains("42"));
    }

    fn hex_decode(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
