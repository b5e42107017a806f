//! AES-GCM for what aws-lc-rs's AEAD does not offer: IVs of any length
//! (NIST SP 800-38D §7.1: a 96-bit IV is used as is, any other length is
//! hashed into the first counter block) and one encryption or decryption
//! fed in parts (KMIP's streaming Encrypt/Decrypt).
//!
//! Made of audited parts only: the AES block function of aws-lc-rs (ECB over
//! counter blocks is CTR with GCM's 32-bit increment) and GHASH from the
//! RustCrypto `ghash` crate. The one-shot 96-bit path stays on aws-lc-rs's
//! AEAD ([`crate::sym::aes_gcm_seal`]).

use crate::sym::{aes_ecb_encrypt, AES_BLOCK};
use crate::CryptoError;
use ghash::universal_hash::{KeyInit, UniversalHash};
use ghash::GHash;
use zeroize::Zeroizing;

/// Largest input of one GCM invocation (SP 800-38D: 2^39 − 256 bits).
const MAX_DATA: u64 = (1 << 36) - 32;

/// One AES-GCM encryption or decryption in progress.
pub struct GcmStream {
    key: Zeroizing<Vec<u8>>,
    /// The pre-counter block J0.
    j0: Zeroizing<[u8; AES_BLOCK]>,
    ghash: GHash,
    /// Ciphertext bytes not yet hashed (less than a block).
    pending: Zeroizing<Vec<u8>>,
    aad_len: u64,
    data_len: u64,
    encrypt: bool,
}

impl GcmStream {
    /// Starts an encryption (`encrypt`) or decryption under `key` (16, 24
    /// or 32 bytes) with `iv` (1 byte or more) and additional data `aad`.
    pub fn new(key: &[u8], iv: &[u8], aad: &[u8], encrypt: bool) -> Result<Self, CryptoError> {
        if !matches!(key.len(), 16 | 24 | 32) {
            return Err(CryptoError::InvalidKeyLength);
        }
        if iv.is_empty() || iv.len() as u64 > MAX_DATA {
            return Err(CryptoError::InvalidNonceLength);
        }
        let h = Zeroizing::new(aes_ecb_encrypt(key, &[0; AES_BLOCK], false)?);
        let hkey = ghash::Key::from_slice(&h);
        let mut j0 = Zeroizing::new([0u8; AES_BLOCK]);
        if iv.len() == 12 {
            j0[..12].copy_from_slice(iv);
            j0[15] = 1;
        } else {
            let mut g = GHash::new(hkey);
            g.update_padded(iv);
            g.update(&[lengths(0, iv.len() as u64)]);
            j0.copy_from_slice(&g.finalize());
        }
        let mut ghash = GHash::new(hkey);
        ghash.update_padded(aad);
        Ok(Self {
            key: Zeroizing::new(key.to_vec()),
            j0,
            ghash,
            pending: Zeroizing::new(Vec::with_capacity(AES_BLOCK)),
            aad_len: aad.len() as u64,
            data_len: 0,
            encrypt,
        })
    }

    /// Encrypts or decrypts the next part; returns its output.
    pub fn update(&mut self, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let total = self.data_len + data.len() as u64;
        if total > MAX_DATA {
            return Err(CryptoError::Failed);
        }
        let out = self.keystream_xor(data)?;
        let ciphertext = if self.encrypt { &out[..] } else { data };
        self.hash_ciphertext(ciphertext);
        self.data_len = total;
        Ok(out)
    }

    /// Ends an encryption: the tag, `tag_len` bytes (12 to 16).
    pub fn finish_encrypt(self, tag_len: usize) -> Result<Vec<u8>, CryptoError> {
        if !self.encrypt || !(12..=16).contains(&tag_len) {
            return Err(CryptoError::Failed);
        }
        let tag = Zeroizing::new(self.full_tag()?);
        Ok(tag[..tag_len].to_vec())
    }

    /// Ends a decryption: whether `tag` (12 to 16 bytes) authenticates
    /// everything, compared in constant time.
    pub fn finish_decrypt(self, tag: &[u8]) -> Result<(), CryptoError> {
        if self.encrypt || !(12..=16).contains(&tag.len()) {
            return Err(CryptoError::AuthenticationFailed);
        }
        let want = self.full_tag()?;
        if crate::ct_eq(&want[..tag.len()], tag) {
            Ok(())
        } else {
            Err(CryptoError::AuthenticationFailed)
        }
    }

    fn full_tag(mut self) -> Result<[u8; AES_BLOCK], CryptoError> {
        let pending = std::mem::take(&mut *self.pending);
        self.ghash.update_padded(&pending);
        self.ghash.update(&[lengths(self.aad_len, self.data_len)]);
        let s = self.ghash.finalize();
        let ek = Zeroizing::new(aes_ecb_encrypt(&self.key, &self.j0[..], false)?);
        let mut tag = [0u8; AES_BLOCK];
        for (t, (a, b)) in tag.iter_mut().zip(s.iter().zip(ek.iter())) {
            *t = a ^ b;
        }
        Ok(tag)
    }

    /// `data` XOR the keystream from byte `data_len` on: counter blocks
    /// inc32(J0), inc32²(J0)… (only the low 32 bits count, wrapping).
    fn keystream_xor(&self, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if data.is_empty() {
            return Ok(Vec::new());
        }
        let first = self.data_len / AES_BLOCK as u64;
        let skip = (self.data_len % AES_BLOCK as u64) as usize;
        let blocks = (skip + data.len()).div_ceil(AES_BLOCK);
        let base = u32::from_be_bytes(self.j0[12..].try_into().expect("4 bytes"));
        let mut counters = Zeroizing::new(Vec::with_capacity(blocks * AES_BLOCK));
        for i in 0..blocks as u64 {
            // Block n of the data uses counter low32(J0) + 1 + n (mod 2^32).
            let c = base.wrapping_add(1).wrapping_add((first + i) as u32);
            counters.extend_from_slice(&self.j0[..12]);
            counters.extend_from_slice(&c.to_be_bytes());
        }
        let ks = Zeroizing::new(aes_ecb_encrypt(&self.key, &counters, false)?);
        Ok(data.iter().zip(&ks[skip..]).map(|(d, k)| d ^ k).collect())
    }

    fn hash_ciphertext(&mut self, mut c: &[u8]) {
        if !self.pending.is_empty() {
            let n = (AES_BLOCK - self.pending.len()).min(c.len());
            self.pending.extend_from_slice(&c[..n]);
            c = &c[n..];
            if self.pending.len() < AES_BLOCK {
                return;
            }
            let block = ghash::Block::clone_from_slice(&self.pending);
            self.ghash.update(&[block]);
            self.pending.clear();
        }
        let whole = c.len() - c.len() % AES_BLOCK;
        for chunk in c[..whole].chunks_exact(AES_BLOCK) {
            self.ghash.update(&[ghash::Block::clone_from_slice(chunk)]);
        }
        self.pending.extend_from_slice(&c[whole..]);
    }
}

/// GHASH's last block: the bit lengths of the two inputs.
fn lengths(a: u64, c: u64) -> ghash::Block {
    let mut b = ghash::Block::default();
    b[..8].copy_from_slice(&(a * 8).to_be_bytes());
    b[8..].copy_from_slice(&(c * 8).to_be_bytes());
    b
}

/// AES-GCM encryption with an IV of any length: (ciphertext, tag).
pub fn seal_any_iv(
    key: &[u8],
    iv: &[u8],
    aad: &[u8],
    plaintext: &[u8],
    tag_len: usize,
) -> Result<(Vec<u8>, Vec<u8>), CryptoError> {
    let mut s = GcmStream::new(key, iv, aad, true)?;
    let c = s.update(plaintext)?;
    Ok((c, s.finish_encrypt(tag_len)?))
}

/// AES-GCM decryption with an IV of any length; nothing is returned unless
/// the tag (12 to 16 bytes) is right.
pub fn open_any_iv(
    key: &[u8],
    iv: &[u8],
    aad: &[u8],
    ciphertext: &[u8],
    tag: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let mut s = GcmStream::new(key, iv, aad, false)?;
    let p = Zeroizing::new(s.update(ciphertext)?);
    s.finish_decrypt(tag)?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    /// The GCM specification's test cases (McGrew and Viega, "The
    /// Galois/Counter Mode of Operation", Appendix B): 4 (96-bit IV), 5
    /// (64-bit IV) and 6 (480-bit IV), AES-128.
    #[test]
    fn gcm_spec_vectors() {
        let k = h("feffe9928665731c6d6a8f9467308308");
        let p = h(
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
                   1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        );
        let a = h("feedfacedeadbeeffeedfacedeadbeefabaddad2");
        let cases = [
            (
                "cafebabefacedbaddecaf888",
                "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e\
                 21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091",
                "5bc94fbc3221a5db94fae95ae7121a47",
            ),
            (
                "cafebabefacedbad",
                "61353b4c2806934a777ff51fa22a4755699b2a714fcdc6f83766e5f97b6c7423\
                 73806900e49f24b22b097544d4896b424989b5e1ebac0f07c23f4598",
                "3612d2e79e3b0785561be14aaca2fccb",
            ),
            (
                "9313225df88406e555909c5aff5269aa6a7a9538534f7da1e4c303d2a318a728\
                 c3c0c95156809539fcf0e2429a6b525416aedbf5a0de6a57a637b39b",
                "8ce24998625615b603a033aca13fb894be9112a5c3a211a8ba262a3cca7e2ca7\
                 01e4a9a4fba43c90ccdcb281d48c7c6fd62875d2aca417034c34aee5",
                "619cc5aefffe0bfa462af43c1699d050",
            ),
        ];
        for (iv, c, t) in cases {
            let (iv, c, t) = (h(iv), h(c), h(t));
            assert_eq!(
                seal_any_iv(&k, &iv, &a, &p, 16).unwrap(),
                (c.clone(), t.clone())
            );
            assert_eq!(*open_any_iv(&k, &iv, &a, &c, &t).unwrap(), p);
            assert_eq!(*open_any_iv(&k, &iv, &a, &c, &t[..12]).unwrap(), p);
            let mut bad = t.clone();
            bad[0] ^= 1;
            assert!(open_any_iv(&k, &iv, &a, &c, &bad).is_err());
            // The 96-bit case agrees with aws-lc-rs's AEAD.
            if iv.len() == 12 {
                let (c2, t2) = crate::sym::aes_gcm_seal(&k, &iv, &a, &p).unwrap();
                assert_eq!((c2, t2.to_vec()), (c.clone(), t.clone()));
            }
            // Fed in parts of every size, the stream gives the same.
            for part in [1, 5, 16, 17, 33] {
                let mut s = GcmStream::new(&k, &iv, &a, true).unwrap();
                let mut out = Vec::new();
                for chunk in p.chunks(part) {
                    out.extend(s.update(chunk).unwrap());
                }
                assert_eq!(out, c);
                assert_eq!(s.finish_encrypt(16).unwrap(), t);
                let mut s = GcmStream::new(&k, &iv, &a, false).unwrap();
                let mut back = Vec::new();
                for chunk in c.chunks(part) {
                    back.extend(s.update(chunk).unwrap());
                }
                assert_eq!(back, p);
                s.finish_decrypt(&t).unwrap();
            }
        }
    }

    /// Test case 1 (empty everything) and the counter's 32-bit wrap: with
    /// J0's low word at 0xffffffff the next block's counter is 0, and the
    /// upper 96 bits do not change (checked against aws-lc's CTR, which
    /// carries into them, on the blocks before the wrap only).
    #[test]
    fn empty_input_and_counter_wrap() {
        let k = [0u8; 16];
        let (c, t) = seal_any_iv(&k, &[0; 12], &[], &[], 16).unwrap();
        assert!(c.is_empty());
        assert_eq!(t, h("58e2fccefa7e3061367f1d57a4e7455a"));
        let mut s = GcmStream::new(&k, &[0; 12], &[], true).unwrap();
        s.j0[12..].copy_from_slice(&0xffff_fffeu32.to_be_bytes());
        let data = [0u8; 48];
        let ks = s.update(&data).unwrap();
        let block = |low: u32| {
            let mut b = [0u8; 16];
            b[12..].copy_from_slice(&low.to_be_bytes());
            aes_ecb_encrypt(&k, &b, false).unwrap()
        };
        assert_eq!(ks[..16], block(0xffff_ffff)[..]);
        assert_eq!(ks[16..32], block(0)[..]);
        assert_eq!(ks[32..], block(1)[..]);
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(GcmStream::new(&[0; 15], &[0; 12], &[], true).is_err());
        assert!(GcmStream::new(&[0; 16], &[], &[], true).is_err());
        let s = GcmStream::new(&[0; 16], &[0; 8], &[], true).unwrap();
        assert!(s.finish_encrypt(8).is_err());
        let s = GcmStream::new(&[0; 16], &[0; 8], &[], true).unwrap();
        assert!(
            s.finish_decrypt(&[0; 16]).is_err(),
            "an encryption has no tag to check"
        );
    }
}
