//! Symmetric operations on client keys of any AES size and HMAC keys, for
//! front-ends that expose general cryptography (KMIP Encrypt, Decrypt, MAC).

use crate::CryptoError;
use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{
    self, DecryptingKey, DecryptionContext, EncryptingKey, EncryptionContext,
    PaddedBlockDecryptingKey, PaddedBlockEncryptingKey, UnboundCipherKey,
};
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;

/// AES block (and CBC/CTR IV) length.
pub const AES_BLOCK: usize = 16;

fn aes_alg(key: &[u8]) -> Result<&'static cipher::Algorithm, CryptoError> {
    match key.len() {
        16 => Ok(&cipher::AES_128),
        24 => Ok(&cipher::AES_192),
        32 => Ok(&cipher::AES_256),
        _ => Err(CryptoError::InvalidKeyLength),
    }
}

fn gcm_key(key: &[u8]) -> Result<LessSafeKey, CryptoError> {
    let alg = match key.len() {
        16 => &aead::AES_128_GCM,
        24 => &aead::AES_192_GCM,
        32 => &aead::AES_256_GCM,
        _ => return Err(CryptoError::InvalidKeyLength),
    };
    Ok(LessSafeKey::new(
        UnboundKey::new(alg, key).map_err(|_| CryptoError::InvalidKeyLength)?,
    ))
}

fn iv128(iv: &[u8]) -> Result<FixedLength<16>, CryptoError> {
    let iv: [u8; AES_BLOCK] = iv.try_into().map_err(|_| CryptoError::InvalidNonceLength)?;
    Ok(FixedLength::from(iv))
}

fn chacha_key(key: &[u8]) -> Result<LessSafeKey, CryptoError> {
    Ok(LessSafeKey::new(
        UnboundKey::new(&aead::CHACHA20_POLY1305, key)
            .map_err(|_| CryptoError::InvalidKeyLength)?,
    ))
}

/// Seals with a 96-bit nonce: (ciphertext, 16-byte tag).
fn seal(
    k: &LessSafeKey,
    nonce: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<(Vec<u8>, [u8; 16]), CryptoError> {
    let n = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::InvalidNonceLength)?;
    let mut out = plaintext.to_vec();
    let tag = k
        .seal_in_place_separate_tag(n, Aad::from(aad), &mut out)
        .map_err(|_| CryptoError::Failed)?;
    let mut t = [0u8; 16];
    t.copy_from_slice(tag.as_ref());
    Ok((out, t))
}

/// Opens with a full 16-byte tag; fails without detail on any mismatch.
fn open(
    k: &LessSafeKey,
    nonce: &[u8],
    aad: &[u8],
    ciphertext: &[u8],
    tag: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let n = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::InvalidNonceLength)?;
    if tag.len() != 16 {
        return Err(CryptoError::AuthenticationFailed);
    }
    let mut buf = Vec::with_capacity(ciphertext.len() + tag.len());
    buf.extend_from_slice(ciphertext);
    buf.extend_from_slice(tag);
    let n_pt = k
        .open_in_place(n, Aad::from(aad), &mut buf)
        .map_err(|_| CryptoError::AuthenticationFailed)?
        .len();
    buf.truncate(n_pt);
    Ok(buf)
}

/// ChaCha20-Poly1305 (RFC 8439) with a 256-bit key and a 96-bit nonce:
/// returns (ciphertext, 16-byte tag).
pub fn chacha20_poly1305_seal(
    key: &[u8],
    nonce: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<(Vec<u8>, [u8; 16]), CryptoError> {
    seal(&chacha_key(key)?, nonce, aad, plaintext)
}

/// Opens ChaCha20-Poly1305 output whose tag may be cut to 12–16 bytes, as
/// KMIP's Tag Length allows. A short tag is checked by recovering the
/// plaintext (sealing the ciphertext: encryption is an XOR with the
/// keystream), sealing it again and comparing the full tag's prefix in
/// constant time. Nothing is returned unless it matches.
pub fn chacha20_poly1305_open_short_tag(
    key: &[u8],
    nonce: &[u8],
    aad: &[u8],
    ciphertext: &[u8],
    tag: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let k = chacha_key(key)?;
    if tag.len() == 16 {
        return open(&k, nonce, aad, ciphertext, tag);
    }
    if !(12..16).contains(&tag.len()) {
        return Err(CryptoError::AuthenticationFailed);
    }
    let (pt, _) = seal(&k, nonce, aad, ciphertext)?;
    let mut pt = zeroize::Zeroizing::new(pt);
    let (_, full) = seal(&k, nonce, aad, &pt)?;
    if !crate::ct_eq(&full[..tag.len()], tag) {
        return Err(CryptoError::AuthenticationFailed);
    }
    Ok(std::mem::take(&mut *pt))
}

/// AES-GCM with a 96-bit nonce: returns (ciphertext, 16-byte tag).
pub fn aes_gcm_seal(
    key: &[u8],
    nonce: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<(Vec<u8>, [u8; 16]), CryptoError> {
    seal(&gcm_key(key)?, nonce, aad, plaintext)
}

/// Opens AES-GCM output; fails without detail on a wrong key, nonce, AAD,
/// ciphertext or tag.
pub fn aes_gcm_open(
    key: &[u8],
    nonce: &[u8],
    aad: &[u8],
    ciphertext: &[u8],
    tag: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    open(&gcm_key(key)?, nonce, aad, ciphertext, tag)
}

/// Opens AES-GCM output whose tag was truncated to 12–16 bytes (NIST SP
/// 800-38D allows 96 to 128 bits): the ciphertext is decrypted as GCM does
/// (CTR from the second counter block), sealed again, and the full tag's
/// prefix compared in constant time. Nothing is returned unless it matches.
pub fn aes_gcm_open_short_tag(
    key: &[u8],
    nonce: &[u8],
    aad: &[u8],
    ciphertext: &[u8],
    tag: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    if tag.len() == 16 {
        return aes_gcm_open(key, nonce, aad, ciphertext, tag);
    }
    if !(12..16).contains(&tag.len()) || nonce.len() != 12 {
        return Err(CryptoError::AuthenticationFailed);
    }
    let mut counter = [0u8; AES_BLOCK];
    counter[..12].copy_from_slice(nonce);
    counter[15] = 2;
    let mut pt = zeroize::Zeroizing::new(aes_ctr(key, &counter, ciphertext)?);
    let (_, full) = aes_gcm_seal(key, nonce, aad, &pt)?;
    if !crate::ct_eq(&full[..tag.len()], tag) {
        return Err(CryptoError::AuthenticationFailed);
    }
    Ok(std::mem::take(&mut *pt))
}

/// AES-CBC; with `pkcs7` the plaintext is padded (PKCS#5/#7), otherwise
/// it must be a whole number of blocks.
pub fn aes_cbc_encrypt(
    key: &[u8],
    iv: &[u8],
    plaintext: &[u8],
    pkcs7: bool,
) -> Result<Vec<u8>, CryptoError> {
    let ctx = EncryptionContext::Iv128(iv128(iv)?);
    let unbound = UnboundCipherKey::new(aes_alg(key)?, key).map_err(|_| CryptoError::Failed)?;
    let mut out = plaintext.to_vec();
    if pkcs7 {
        let k = PaddedBlockEncryptingKey::cbc_pkcs7(unbound).map_err(|_| CryptoError::Failed)?;
        k.less_safe_encrypt(&mut out, ctx)
            .map_err(|_| CryptoError::Failed)?;
    } else {
        if !out.len().is_multiple_of(AES_BLOCK) {
            return Err(CryptoError::Failed);
        }
        let k = EncryptingKey::cbc(unbound).map_err(|_| CryptoError::Failed)?;
        k.less_safe_encrypt(&mut out, ctx)
            .map_err(|_| CryptoError::Failed)?;
    }
    Ok(out)
}

pub fn aes_cbc_decrypt(
    key: &[u8],
    iv: &[u8],
    ciphertext: &[u8],
    pkcs7: bool,
) -> Result<Vec<u8>, CryptoError> {
    let ctx = DecryptionContext::Iv128(iv128(iv)?);
    let unbound = UnboundCipherKey::new(aes_alg(key)?, key).map_err(|_| CryptoError::Failed)?;
    if ciphertext.is_empty() || !ciphertext.len().is_multiple_of(AES_BLOCK) {
        return Err(CryptoError::Failed);
    }
    let mut buf = ciphertext.to_vec();
    let n = if pkcs7 {
        let k = PaddedBlockDecryptingKey::cbc_pkcs7(unbound).map_err(|_| CryptoError::Failed)?;
        k.decrypt(&mut buf, ctx)
            .map_err(|_| CryptoError::AuthenticationFailed)?
            .len()
    } else {
        let k = DecryptingKey::cbc(unbound).map_err(|_| CryptoError::Failed)?;
        k.decrypt(&mut buf, ctx)
            .map_err(|_| CryptoError::Failed)?
            .len()
    };
    buf.truncate(n);
    Ok(buf)
}

/// AES-ECB (for KMIP clients that ask for it; never used by Keyhold itself).
pub fn aes_ecb_encrypt(key: &[u8], plaintext: &[u8], pkcs7: bool) -> Result<Vec<u8>, CryptoError> {
    let unbound = UnboundCipherKey::new(aes_alg(key)?, key).map_err(|_| CryptoError::Failed)?;
    let mut out = plaintext.to_vec();
    if pkcs7 {
        let k = PaddedBlockEncryptingKey::ecb_pkcs7(unbound).map_err(|_| CryptoError::Failed)?;
        k.less_safe_encrypt(&mut out, EncryptionContext::None)
            .map_err(|_| CryptoError::Failed)?;
    } else {
        if out.is_empty() || !out.len().is_multiple_of(AES_BLOCK) {
            return Err(CryptoError::Failed);
        }
        let k = EncryptingKey::ecb(unbound).map_err(|_| CryptoError::Failed)?;
        k.less_safe_encrypt(&mut out, EncryptionContext::None)
            .map_err(|_| CryptoError::Failed)?;
    }
    Ok(out)
}

pub fn aes_ecb_decrypt(key: &[u8], ciphertext: &[u8], pkcs7: bool) -> Result<Vec<u8>, CryptoError> {
    let unbound = UnboundCipherKey::new(aes_alg(key)?, key).map_err(|_| CryptoError::Failed)?;
    if ciphertext.is_empty() || !ciphertext.len().is_multiple_of(AES_BLOCK) {
        return Err(CryptoError::Failed);
    }
    let mut buf = ciphertext.to_vec();
    let n = if pkcs7 {
        let k = PaddedBlockDecryptingKey::ecb_pkcs7(unbound).map_err(|_| CryptoError::Failed)?;
        k.decrypt(&mut buf, DecryptionContext::None)
            .map_err(|_| CryptoError::AuthenticationFailed)?
            .len()
    } else {
        let k = DecryptingKey::ecb(unbound).map_err(|_| CryptoError::Failed)?;
        k.decrypt(&mut buf, DecryptionContext::None)
            .map_err(|_| CryptoError::Failed)?
            .len()
    };
    buf.truncate(n);
    Ok(buf)
}

/// Triple DES block (and CBC IV) length.
pub const TDES_BLOCK: usize = 8;

/// Triple DES (TDEA, SP 800-67), for KMIP clients and legacy data only
/// (SP 800-131A disallows it for new encryption; it is never used by
/// Keyhold itself). Keys are 24 bytes (three keys) or 16 (two keys: K1, K2,
/// K1). `iv` is 8 bytes for CBC, and None for ECB. With `pkcs7` the data is
/// padded (PKCS#5), otherwise it must be whole 8-byte blocks.
pub fn tdes_encrypt(
    key: &[u8],
    iv: Option<&[u8]>,
    plaintext: &[u8],
    pkcs7: bool,
) -> Result<Vec<u8>, CryptoError> {
    use cbc::cipher::block_padding::{NoPadding, Pkcs7};
    use cbc::cipher::{BlockModeEncrypt, KeyInit, KeyIvInit};
    if !pkcs7 && !plaintext.len().is_multiple_of(TDES_BLOCK) {
        return Err(CryptoError::Failed);
    }
    let key = tdes_key(key)?;
    let bad_key = |_| CryptoError::InvalidKeyLength;
    Ok(match (iv, pkcs7) {
        (Some(iv), pad) => {
            let iv: &[u8; TDES_BLOCK] =
                iv.try_into().map_err(|_| CryptoError::InvalidNonceLength)?;
            let e =
                cbc::Encryptor::<des::TdesEde3>::new_from_slices(&key[..], iv).map_err(bad_key)?;
            if pad {
                e.encrypt_padded_vec::<Pkcs7>(plaintext)
            } else {
                e.encrypt_padded_vec::<NoPadding>(plaintext)
            }
        }
        (None, pad) => {
            let e = ecb::Encryptor::<des::TdesEde3>::new_from_slice(&key[..]).map_err(bad_key)?;
            if pad {
                e.encrypt_padded_vec::<Pkcs7>(plaintext)
            } else {
                e.encrypt_padded_vec::<NoPadding>(plaintext)
            }
        }
    })
}

/// Triple DES decryption; see [`tdes_encrypt`]. Wrong padding is
/// `AuthenticationFailed` (without detail).
pub fn tdes_decrypt(
    key: &[u8],
    iv: Option<&[u8]>,
    ciphertext: &[u8],
    pkcs7: bool,
) -> Result<Vec<u8>, CryptoError> {
    use cbc::cipher::block_padding::{NoPadding, Pkcs7};
    use cbc::cipher::{BlockModeDecrypt, KeyInit, KeyIvInit};
    if ciphertext.is_empty() || !ciphertext.len().is_multiple_of(TDES_BLOCK) {
        return Err(CryptoError::Failed);
    }
    let key = tdes_key(key)?;
    let bad_key = |_| CryptoError::InvalidKeyLength;
    let bad_pad = |_| CryptoError::AuthenticationFailed;
    match iv {
        Some(iv) => {
            let iv: &[u8; TDES_BLOCK] =
                iv.try_into().map_err(|_| CryptoError::InvalidNonceLength)?;
            let d =
                cbc::Decryptor::<des::TdesEde3>::new_from_slices(&key[..], iv).map_err(bad_key)?;
            if pkcs7 {
                d.decrypt_padded_vec::<Pkcs7>(ciphertext).map_err(bad_pad)
            } else {
                d.decrypt_padded_vec::<NoPadding>(ciphertext)
                    .map_err(bad_pad)
            }
        }
        None => {
            let d = ecb::Decryptor::<des::TdesEde3>::new_from_slice(&key[..]).map_err(bad_key)?;
            if pkcs7 {
                d.decrypt_padded_vec::<Pkcs7>(ciphertext).map_err(bad_pad)
            } else {
                d.decrypt_padded_vec::<NoPadding>(ciphertext)
                    .map_err(bad_pad)
            }
        }
    }
}

/// A Triple DES key as three keys (a two-key one is K1, K2, K1).
fn tdes_key(key: &[u8]) -> Result<zeroize::Zeroizing<[u8; 24]>, CryptoError> {
    let mut k = zeroize::Zeroizing::new([0u8; 24]);
    match key.len() {
        24 => k.copy_from_slice(key),
        16 => {
            k[..16].copy_from_slice(key);
            k[16..].copy_from_slice(&key[..8]);
        }
        _ => return Err(CryptoError::InvalidKeyLength),
    }
    Ok(k)
}

/// AES-CTR with a 128-bit initial counter block (encrypt = decrypt).
pub fn aes_ctr(key: &[u8], iv: &[u8], data: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let unbound = UnboundCipherKey::new(aes_alg(key)?, key).map_err(|_| CryptoError::Failed)?;
    let k = EncryptingKey::ctr(unbound).map_err(|_| CryptoError::Failed)?;
    let mut out = data.to_vec();
    k.less_safe_encrypt(&mut out, EncryptionContext::Iv128(iv128(iv)?))
        .map_err(|_| CryptoError::Failed)?;
    Ok(out)
}

/// Raw ChaCha20, without authentication (KMIP clients that ask for it;
/// never used by Keyhold itself); encrypt = decrypt. `iv` is
/// * 8 bytes: the original ChaCha20's nonce, with its 64-bit block counter
///   from 0;
/// * 12 bytes: RFC 8439's nonce, block counter from 0;
/// * 16 bytes: a little-endian 32-bit initial block counter, then RFC
///   8439's nonce (OpenSSL's layout).
pub fn chacha20(key: &[u8], iv: &[u8], data: &[u8]) -> Result<Vec<u8>, CryptoError> {
    use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
    if key.len() != 32 {
        return Err(CryptoError::InvalidKeyLength);
    }
    let mut out = data.to_vec();
    match iv.len() {
        8 => chacha20::ChaCha20Legacy::new_from_slices(key, iv)
            .map_err(|_| CryptoError::Failed)?
            .try_apply_keystream(&mut out)
            .map_err(|_| CryptoError::Failed)?,
        12 | 16 => {
            let (counter, nonce) = if iv.len() == 16 {
                let c = u32::from_le_bytes(iv[..4].try_into().expect("4 bytes"));
                (c, &iv[4..])
            } else {
                (0, iv)
            };
            let mut c =
                chacha20::ChaCha20::new_from_slices(key, nonce).map_err(|_| CryptoError::Failed)?;
            c.try_seek(u64::from(counter) * 64)
                .map_err(|_| CryptoError::Failed)?;
            c.try_apply_keystream(&mut out)
                .map_err(|_| CryptoError::Failed)?;
        }
        _ => return Err(CryptoError::InvalidNonceLength),
    }
    Ok(out)
}

fn aes_kek(kek: &[u8]) -> Result<aws_lc_rs::key_wrap::AesKek, CryptoError> {
    let cipher = match kek.len() {
        16 => &aws_lc_rs::key_wrap::AES_128,
        32 => &aws_lc_rs::key_wrap::AES_256,
        _ => return Err(CryptoError::InvalidKeyLength),
    };
    aws_lc_rs::key_wrap::AesKek::new(cipher, kek).map_err(|_| CryptoError::InvalidKeyLength)
}

/// AES Key Wrap (NIST SP 800-38F / RFC 3394), or with padding (RFC 5649),
/// under a 128- or 256-bit key-encryption key.
pub fn aes_key_wrap(kek: &[u8], data: &[u8], padded: bool) -> Result<Vec<u8>, CryptoError> {
    use aws_lc_rs::key_wrap::{KeyWrap, KeyWrapPadded};
    let k = aes_kek(kek)?;
    let mut out = vec![0u8; data.len() + 16];
    let n = if padded {
        k.wrap_with_padding(data, &mut out)
    } else {
        k.wrap(data, &mut out)
    }
    .map_err(|_| CryptoError::Failed)?
    .len();
    out.truncate(n);
    Ok(out)
}

/// [`aes_key_unwrap`] into a zeroizing buffer: for unwrapped keys.
pub fn aes_key_unwrap_secret(
    kek: &[u8],
    data: &[u8],
    padded: bool,
) -> Result<crate::SecretBytes, CryptoError> {
    use aws_lc_rs::key_wrap::{KeyWrap, KeyWrapPadded};
    let k = aes_kek(kek)?;
    let mut out = zeroize::Zeroizing::new(vec![0u8; data.len()]);
    let n = if padded {
        k.unwrap_with_padding(data, &mut out)
    } else {
        k.unwrap(data, &mut out)
    }
    .map_err(|_| CryptoError::AuthenticationFailed)?
    .len();
    out.truncate(n);
    Ok(crate::SecretBytes::new(std::mem::take(&mut *out)))
}

pub fn aes_key_unwrap(kek: &[u8], data: &[u8], padded: bool) -> Result<Vec<u8>, CryptoError> {
    use aws_lc_rs::key_wrap::{KeyWrap, KeyWrapPadded};
    let k = aes_kek(kek)?;
    let mut out = vec![0u8; data.len()];
    let n = if padded {
        k.unwrap_with_padding(data, &mut out)
    } else {
        k.unwrap(data, &mut out)
    }
    .map_err(|_| CryptoError::AuthenticationFailed)?
    .len();
    out.truncate(n);
    Ok(out)
}

/// HMAC hash functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacHash {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl MacHash {
    fn alg(self) -> hmac::Algorithm {
        match self {
            MacHash::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            MacHash::Sha256 => hmac::HMAC_SHA256,
            MacHash::Sha384 => hmac::HMAC_SHA384,
            MacHash::Sha512 => hmac::HMAC_SHA512,
        }
    }
}

pub fn hmac_sign(hash: MacHash, key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hash.alg(), key), data)
        .as_ref()
        .to_vec()
}

/// Verifies an HMAC in constant time.
pub fn hmac_verify(hash: MacHash, key: &[u8], data: &[u8], mac: &[u8]) -> bool {
    hmac::verify(&hmac::Key::new(hash.alg(), key), data, mac).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    /// Raw ChaCha20: RFC 8439 §2.4.2 (12-byte nonce, counter 1, given as
    /// the 16-byte IV), and the 64-bit-nonce vectors of the original
    /// ChaCha20 (draft-agl-tls-chacha20poly1305-04 §7, which the OASIS
    /// CHACHA20 test cases use).
    #[test]
    fn chacha20_vectors() {
        let key: Vec<u8> = (0u8..32).collect();
        let mut iv = vec![1, 0, 0, 0];
        iv.extend(h("000000000000004a00000000"));
        let pt = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let ct = chacha20(&key, &iv, pt).unwrap();
        assert_eq!(
            hex::encode(&ct[..32]),
            "6e2e359a2568f98041ba0728dd0d6981e97e7aec1d4360c20a27afccfd9fae0b"
        );
        assert_eq!(chacha20(&key, &iv, &ct).unwrap(), pt);
        // Counter 0 with a 12-byte nonce is the 16-byte IV with counter 0.
        let nonce = h("000000000000004a00000000");
        let mut iv0 = vec![0; 4];
        iv0.extend(&nonce);
        assert_eq!(
            chacha20(&key, &nonce, pt).unwrap(),
            chacha20(&key, &iv0, pt).unwrap()
        );
        let zero = [0u8; 64];
        let mut k1 = [0u8; 32];
        k1[31] = 1;
        for (k, n, ks) in [
            ([0u8; 32], h("0000000000000000"), "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586"),
            (k1, h("0000000000000000"), "4540f05a9f1fb296d7736e7b208e3c96eb4fe1834688d2604f450952ed432d41bbe2a0b6ea7566d2a5d1e7e20d42af2c53d792b1c43fea817e9ad275ae546963"),
            ([0u8; 32], h("0000000000000001"), "de9cba7bf3d69ef5e786dc63973f653a0b49e015adbff7134fcb7df137821031e85a050278a7084527214f73efc7fa5b5277062eb7a0433e445f41e3"),
        ] {
            let got = chacha20(&k, &n, &zero[..ks.len() / 2]).unwrap();
            assert_eq!(hex::encode(got), ks);
        }
        assert!(chacha20(&key, &[0; 10], b"x").is_err());
        assert!(chacha20(&key[..16], &[0; 8], b"x").is_err());
    }

    // NIST SP 800-38A, F.2.1 (CBC-AES128.Encrypt), first two blocks.
    #[test]
    fn cbc_sp800_38a() {
        let key = h("2b7e151628aed2a6abf7158809cf4f3c");
        let iv = h("000102030405060708090a0b0c0d0e0f");
        let pt = h("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51");
        let ct = aes_cbc_encrypt(&key, &iv, &pt, false).unwrap();
        assert_eq!(
            hex::encode(&ct),
            "7649abac8119b246cee98e9b12e9197d5086cb9b507219ee95db113a917678b2"
        );
        assert_eq!(aes_cbc_decrypt(&key, &iv, &ct, false).unwrap(), pt);
        // Padded: one more block, and the round trip holds.
        let ctp = aes_cbc_encrypt(&key, &iv, &pt, true).unwrap();
        assert_eq!(ctp.len(), 48);
        assert_eq!(aes_cbc_decrypt(&key, &iv, &ctp, true).unwrap(), pt);
    }

    // SP 800-67 Rev. 2, the TDEA example (three keys, ECB), then CBC
    // checked against ECB of the IV-chained blocks, padding, and two-key.
    #[test]
    fn tdes_sp800_67_example() {
        let key = h("0123456789ABCDEF23456789ABCDEF01456789ABCDEF0123");
        let pt = h("5468652071756663 6B2062726F776E20 666F78206A756D70"
            .replace(' ', "")
            .as_str());
        let ct = tdes_encrypt(&key, None, &pt, false).unwrap();
        assert_eq!(
            hex::encode_upper(&ct),
            "A826FD8CE53B855FCCE21C8112256FE668D5C05DD9B6B900"
        );
        assert_eq!(tdes_decrypt(&key, None, &ct, false).unwrap(), pt);
        let iv = h("0001020304050607");
        let cbc = tdes_encrypt(&key, Some(&iv), &pt, false).unwrap();
        let mut prev = iv.clone();
        for (i, block) in pt.chunks(8).enumerate() {
            let x: Vec<u8> = block.iter().zip(&prev).map(|(a, b)| a ^ b).collect();
            let c = tdes_encrypt(&key, None, &x, false).unwrap();
            assert_eq!(c, cbc[i * 8..i * 8 + 8]);
            prev = c;
        }
        assert_eq!(tdes_decrypt(&key, Some(&iv), &cbc, false).unwrap(), pt);
        let padded = tdes_encrypt(&key, Some(&iv), b"five!", true).unwrap();
        assert_eq!(padded.len(), 8);
        assert_eq!(
            tdes_decrypt(&key, Some(&iv), &padded, true).unwrap(),
            b"five!"
        );
        assert!(tdes_encrypt(&key, None, b"five!", false).is_err());
        assert!(tdes_encrypt(&key, Some(&iv[..7]), &pt, false).is_err());
        // Two keys: K1, K2, K1.
        let two = &key[..16];
        let three: Vec<u8> = [two, &key[..8]].concat();
        assert_eq!(
            tdes_encrypt(two, None, &pt, false).unwrap(),
            tdes_encrypt(&three, None, &pt, false).unwrap()
        );
        assert!(tdes_encrypt(&key[..8], None, &pt, false).is_err());
    }

    // RFC 3394 section 4.1 (128-bit KEK, 128-bit key data) and a padded
    // round trip (RFC 5649).
    #[test]
    fn key_wrap_rfc3394() {
        let kek = h("000102030405060708090A0B0C0D0E0F");
        let data = h("00112233445566778899AABBCCDDEEFF");
        let w = aes_key_wrap(&kek, &data, false).unwrap();
        assert_eq!(
            hex::encode_upper(&w),
            "1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5"
        );
        assert_eq!(aes_key_unwrap(&kek, &w, false).unwrap(), data);
        let wp = aes_key_wrap(&kek, b"seven b", true).unwrap();
        assert_eq!(aes_key_unwrap(&kek, &wp, true).unwrap(), b"seven b");
        assert!(aes_key_unwrap(&kek, &wp[1..], true).is_err());
    }

    // NIST SP 800-38A, F.5.1 (CTR-AES128.Encrypt), first block.
    #[test]
    fn ctr_sp800_38a() {
        let key = h("2b7e151628aed2a6abf7158809cf4f3c");
        let iv = h("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff");
        let pt = h("6bc1bee22e409f96e93d7e117393172a");
        assert_eq!(
            hex::encode(aes_ctr(&key, &iv, &pt).unwrap()),
            "874d6191b620e3261bef6864990db6ce"
        );
    }

    #[test]
    fn chacha20_poly1305_rfc8439_vector() {
        // RFC 8439 §2.8.2.
        let key: Vec<u8> = (0x80u8..0xa0).collect();
        let nonce = hex::decode("070000004041424344454647").unwrap();
        let aad = hex::decode("50515253c0c1c2c3c4c5c6c7").unwrap();
        let pt = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let (ct, tag) = chacha20_poly1305_seal(&key, &nonce, &aad, pt).unwrap();
        assert_eq!(hex::encode(tag), "1ae10b594f09e26a7e902ecbd0600691");
        assert_eq!(&hex::encode(&ct)[..32], "d31a8d34648e60db7b86afbc53ef7ec2");
        let open = |t: &[u8]| chacha20_poly1305_open_short_tag(&key, &nonce, &aad, &ct, t);
        assert_eq!(open(&tag).unwrap(), pt);
        let mut bad = tag;
        bad[0] ^= 0xe5;
        assert!(open(&bad).is_err());
        assert_eq!(open(&tag[..12]).unwrap(), pt);
        assert!(open(&bad[..12]).is_err());
        assert!(open(&tag[..8]).is_err());
        assert!(chacha20_poly1305_seal(&key[..16], &nonce, &aad, pt).is_err());
    }

    #[test]
    fn gcm_all_sizes_and_hmac() {
        for n in [16, 24, 32] {
            let key = vec![7u8; n];
            let (ct, tag) = aes_gcm_seal(&key, &[1; 12], b"aad", b"hello").unwrap();
            assert_eq!(
                aes_gcm_open(&key, &[1; 12], b"aad", &ct, &tag).unwrap(),
                b"hello"
            );
            assert!(aes_gcm_open(&key, &[1; 12], b"aaX", &ct, &tag).is_err());
        }
        assert!(aes_gcm_seal(&[0; 20], &[1; 12], b"", b"").is_err());
        // Truncated tags: the prefix opens, a wrong prefix or a too-short
        // tag does not.
        let key = [3u8; 32];
        let (ct, tag) =
            aes_gcm_seal(&key, &[9; 12], b"a", b"a longer message than one block").unwrap();
        for n in 12..=16 {
            assert_eq!(
                aes_gcm_open_short_tag(&key, &[9; 12], b"a", &ct, &tag[..n]).unwrap(),
                b"a longer message than one block"
            );
        }
        let mut bad = tag;
        bad[0] ^= 1;
        assert!(aes_gcm_open_short_tag(&key, &[9; 12], b"a", &ct, &bad[..12]).is_err());
        assert!(aes_gcm_open_short_tag(&key, &[9; 12], b"a", &ct, &tag[..8]).is_err());
        // RFC 4231 test case 2.
        let mac = hmac_sign(MacHash::Sha256, b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(hmac_verify(
            MacHash::Sha256,
            b"Jefe",
            b"what do ya want for nothing?",
            &mac
        ));
        assert!(!hmac_verify(
            MacHash::Sha256,
            b"Jefe",
            b"what do ya want for nothing!",
            &mac
        ));
    }
}
