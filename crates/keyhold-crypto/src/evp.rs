//! RSA operations aws-lc-rs has no API for, done by AWS-LC itself through
//! its EVP interface (the same library aws-lc-rs wraps; in a FIPS build,
//! the FIPS module): RSA-OAEP whose MGF1 hash differs from the message's
//! hash, and RSA signatures with SHA-1 (PSS, and PKCS#1 v1.5 signing).
//! KMIP clients ask for them (the OASIS CS-AC cases do). Nothing here is
//! hand-written cryptography: each function parses a key, sets the
//! padding's parameters on an `EVP_PKEY_CTX` and makes one call, as
//! AWS-LC's documentation says.
//!
//! This is the only `unsafe` code in Keyhold (the workspace denies it
//! elsewhere). Every pointer comes from AWS-LC and is owned by one wrapper
//! that frees it once; every buffer handed to AWS-LC outlives the call and
//! its length is the one passed.
#![allow(unsafe_code)]

use crate::asym::Hash;
use crate::{CryptoError, SecretBytes};
#[cfg(feature = "fips")]
use aws_lc_fips_sys as sys;
#[cfg(not(feature = "fips"))]
use aws_lc_sys as sys;
use std::ptr::null_mut;

/// An `EVP_PKEY` holding an RSA key, freed on drop.
struct Pkey(*mut sys::EVP_PKEY);

impl Drop for Pkey {
    fn drop(&mut self) {
        // SAFETY: self.0 came from EVP_PKEY_new and is freed only here.
        unsafe { sys::EVP_PKEY_free(self.0) }
    }
}

impl Pkey {
    /// An RSA private key from PKCS#1 RSAPrivateKey DER.
    fn private(pkcs1: &[u8]) -> Result<Self, CryptoError> {
        // SAFETY: the pointer and length describe `pkcs1`, which outlives
        // the call; AWS-LC copies what it parses.
        let rsa = unsafe { sys::RSA_private_key_from_bytes(pkcs1.as_ptr(), pkcs1.len()) };
        Self::holding(rsa)
    }

    /// An RSA public key from PKCS#1 RSAPublicKey DER.
    fn public(pkcs1: &[u8]) -> Result<Self, CryptoError> {
        // SAFETY: as in `private`.
        let rsa = unsafe { sys::RSA_public_key_from_bytes(pkcs1.as_ptr(), pkcs1.len()) };
        Self::holding(rsa)
    }

    /// Takes ownership of `rsa` (freed here if anything fails).
    fn holding(rsa: *mut sys::RSA) -> Result<Self, CryptoError> {
        if rsa.is_null() {
            return Err(failed());
        }
        // SAFETY: EVP_PKEY_new takes no arguments; a null answer is checked.
        let pkey = unsafe { sys::EVP_PKEY_new() };
        if pkey.is_null() {
            // SAFETY: rsa is non-null, owned here and not yet given away.
            unsafe { sys::RSA_free(rsa) };
            return Err(failed());
        }
        let pkey = Self(pkey);
        // SAFETY: both pointers are valid; on success the EVP_PKEY owns rsa
        // (freed with it), on failure it does not and rsa is freed here.
        if unsafe { sys::EVP_PKEY_assign_RSA(pkey.0, rsa) } != 1 {
            unsafe { sys::RSA_free(rsa) };
            return Err(failed());
        }
        Ok(pkey)
    }

    /// A context for one operation with this key.
    fn context(&self) -> Result<Ctx, CryptoError> {
        // SAFETY: self.0 is a valid EVP_PKEY; the context takes its own
        // reference to it, so it may outlive `self`.
        let ctx = unsafe { sys::EVP_PKEY_CTX_new(self.0, null_mut()) };
        if ctx.is_null() {
            return Err(failed());
        }
        Ok(Ctx(ctx))
    }
}

/// An `EVP_PKEY_CTX`, freed on drop.
struct Ctx(*mut sys::EVP_PKEY_CTX);

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: self.0 came from EVP_PKEY_CTX_new and is freed only here.
        unsafe { sys::EVP_PKEY_CTX_free(self.0) }
    }
}

/// AWS-LC's `EVP_MD` for a hash (static objects, never freed).
fn md(h: Hash) -> *const sys::EVP_MD {
    // SAFETY: these return pointers to static tables.
    unsafe {
        match h {
            Hash::Sha1 => sys::EVP_sha1(),
            Hash::Sha256 => sys::EVP_sha256(),
            Hash::Sha384 => sys::EVP_sha384(),
            Hash::Sha512 => sys::EVP_sha512(),
        }
    }
}

/// A failure; AWS-LC's error queue (thread-local) is emptied so that it
/// says nothing to the next call on this thread.
fn failed() -> CryptoError {
    // SAFETY: no arguments; only touches this thread's error queue.
    unsafe { sys::ERR_clear_error() };
    CryptoError::Failed
}

/// `Ok` when an AWS-LC call answered 1.
fn ok(r: std::os::raw::c_int) -> Result<(), CryptoError> {
    if r == 1 {
        Ok(())
    } else {
        Err(failed())
    }
}

/// RSA-OAEP's parameters on a context made ready to encrypt or decrypt.
fn oaep_params(ctx: &Ctx, h: Hash, mgf1: Hash, label: Option<&[u8]>) -> Result<(), CryptoError> {
    // SAFETY: ctx.0 is a valid context initialised for encryption or
    // decryption; md() answers static EVP_MDs.
    unsafe {
        ok(sys::EVP_PKEY_CTX_set_rsa_padding(
            ctx.0,
            sys::RSA_PKCS1_OAEP_PADDING,
        ))?;
        ok(sys::EVP_PKEY_CTX_set_rsa_oaep_md(ctx.0, md(h)))?;
        ok(sys::EVP_PKEY_CTX_set_rsa_mgf1_md(ctx.0, md(mgf1)))?;
    }
    if let Some(label) = label.filter(|l| !l.is_empty()) {
        // The context takes ownership of a copy made with OPENSSL_malloc.
        // SAFETY: the copy is label.len() bytes long, written before it is
        // handed over; on failure it was not taken and is freed here.
        unsafe {
            let copy = sys::OPENSSL_malloc(label.len()).cast::<u8>();
            if copy.is_null() {
                return Err(failed());
            }
            std::ptr::copy_nonoverlapping(label.as_ptr(), copy, label.len());
            if sys::EVP_PKEY_CTX_set0_rsa_oaep_label(ctx.0, copy, label.len()) != 1 {
                sys::OPENSSL_free(copy.cast());
                return Err(failed());
            }
        }
    }
    Ok(())
}

/// An RSA signature's parameters on a context made ready to sign or
/// verify: PKCS#1 v1.5 with `h`, or with `pss_salt` RSA-PSS (MGF1 with the
/// same hash, that many bytes of salt).
fn signature_params(ctx: &Ctx, h: Hash, pss_salt: Option<usize>) -> Result<(), CryptoError> {
    let Some(salt) = pss_salt else {
        // SAFETY: ctx.0 is a valid context initialised for signing or
        // verification; md() answers static EVP_MDs.
        return unsafe {
            ok(sys::EVP_PKEY_CTX_set_rsa_padding(
                ctx.0,
                sys::RSA_PKCS1_PADDING,
            ))?;
            ok(sys::EVP_PKEY_CTX_set_signature_md(ctx.0, md(h)))
        };
    };
    let salt = std::os::raw::c_int::try_from(salt).map_err(|_| CryptoError::Failed)?;
    // SAFETY: as above.
    unsafe {
        ok(sys::EVP_PKEY_CTX_set_rsa_padding(
            ctx.0,
            sys::RSA_PKCS1_PSS_PADDING,
        ))?;
        ok(sys::EVP_PKEY_CTX_set_signature_md(ctx.0, md(h)))?;
        ok(sys::EVP_PKEY_CTX_set_rsa_mgf1_md(ctx.0, md(h)))?;
        ok(sys::EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx.0, salt))
    }
}

/// AWS-LC's one-shot EVP_PKEY_encrypt, _decrypt and _sign: a context,
/// the output and its length, the input.
type OneShot = unsafe extern "C" fn(
    *mut sys::EVP_PKEY_CTX,
    *mut u8,
    *mut usize,
    *const u8,
    usize,
) -> std::os::raw::c_int;

/// Calls `call` as AWS-LC asks: once with no output for the largest output
/// length, then with a buffer that long. The output is wiped when dropped
/// (its whole capacity); a failure of the second call is `fill_failed()`'s.
fn output(
    ctx: &Ctx,
    call: OneShot,
    input: &[u8],
    fill_failed: fn() -> CryptoError,
) -> Result<zeroize::Zeroizing<Vec<u8>>, CryptoError> {
    let mut len = 0usize;
    // SAFETY: ctx.0 is a valid, initialised context; a null output asks for
    // the largest output length only; the input pointer and length describe
    // `input`, which outlives the call.
    ok(unsafe { call(ctx.0, null_mut(), &mut len, input.as_ptr(), input.len()) })?;
    let mut out = zeroize::Zeroizing::new(vec![0u8; len]);
    // SAFETY: as above; `out` has `len` writable bytes, the length AWS-LC
    // asked for, and AWS-LC writes at most that many.
    if unsafe {
        call(
            ctx.0,
            out.as_mut_ptr(),
            &mut len,
            input.as_ptr(),
            input.len(),
        )
    } != 1
    {
        return Err(fill_failed());
    }
    out.truncate(len);
    Ok(out)
}

/// RSA-OAEP encryption with a message hash and an MGF1 hash of its own,
/// under a public key (PKCS#1 RSAPublicKey DER).
pub(crate) fn oaep_encrypt(
    public_pkcs1: &[u8],
    h: Hash,
    mgf1: Hash,
    plaintext: &[u8],
    label: Option<&[u8]>,
) -> Result<Vec<u8>, CryptoError> {
    let key = Pkey::public(public_pkcs1)?;
    let ctx = key.context()?;
    // SAFETY: ctx.0 is valid.
    ok(unsafe { sys::EVP_PKEY_encrypt_init(ctx.0) })?;
    oaep_params(&ctx, h, mgf1, label)?;
    let mut out = output(&ctx, sys::EVP_PKEY_encrypt, plaintext, failed)?;
    Ok(std::mem::take(&mut *out))
}

/// RSA-OAEP decryption with a message hash and an MGF1 hash of its own,
/// with a private key (PKCS#1 RSAPrivateKey DER). A value that does not
/// decrypt is `AuthenticationFailed`, nothing more said.
pub(crate) fn oaep_decrypt(
    private_pkcs1: &[u8],
    h: Hash,
    mgf1: Hash,
    ciphertext: &[u8],
    label: Option<&[u8]>,
) -> Result<SecretBytes, CryptoError> {
    let key = Pkey::private(private_pkcs1)?;
    let ctx = key.context()?;
    // SAFETY: ctx.0 is valid.
    ok(unsafe { sys::EVP_PKEY_decrypt_init(ctx.0) })?;
    oaep_params(&ctx, h, mgf1, label)?;
    // A value that does not decrypt: nothing more said.
    let mut out = output(&ctx, sys::EVP_PKEY_decrypt, ciphertext, || {
        failed();
        CryptoError::AuthenticationFailed
    })?;
    Ok(SecretBytes::new(std::mem::take(&mut *out)))
}

/// An RSA signature of a digest already made with `h`, with a private key
/// (PKCS#1 RSAPrivateKey DER): PKCS#1 v1.5, or RSA-PSS with `pss_salt`
/// bytes of salt (MGF1 with the same hash).
pub(crate) fn sign_digest(
    private_pkcs1: &[u8],
    h: Hash,
    pss_salt: Option<usize>,
    digest: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let key = Pkey::private(private_pkcs1)?;
    let ctx = key.context()?;
    // SAFETY: ctx.0 is valid.
    ok(unsafe { sys::EVP_PKEY_sign_init(ctx.0) })?;
    signature_params(&ctx, h, pss_salt)?;
    let mut out = output(&ctx, sys::EVP_PKEY_sign, digest, failed)?;
    Ok(std::mem::take(&mut *out))
}

/// Whether `signature` is an RSA-PSS signature (MGF1 with the same hash,
/// `salt` bytes of salt) of a digest made with `h`, under a public key
/// (PKCS#1 RSAPublicKey DER).
pub(crate) fn pss_verify_digest(
    public_pkcs1: &[u8],
    h: Hash,
    salt: usize,
    digest: &[u8],
    signature: &[u8],
) -> Result<bool, CryptoError> {
    let key = Pkey::public(public_pkcs1)?;
    let ctx = key.context()?;
    // SAFETY: ctx.0 is valid.
    ok(unsafe { sys::EVP_PKEY_verify_init(ctx.0) })?;
    signature_params(&ctx, h, Some(salt))?;
    // SAFETY: the pointers and lengths describe `signature` and `digest`.
    let r = unsafe {
        sys::EVP_PKEY_verify(
            ctx.0,
            signature.as_ptr(),
            signature.len(),
            digest.as_ptr(),
            digest.len(),
        )
    };
    if r != 1 {
        failed();
    }
    Ok(r == 1)
}
