//! Keyhold's wrapped-key format for Google Workspace CSE, and the resource
//! key hash Google uses to check a key without seeing it.
//!
//! A wrapped key (the only copy of the data key: Keyhold keeps none) is
//!
//! ```text
//! "KC" 0x01 | u32 KEK version | u8 len | perimeter_id | 16-byte resource tag
//!          | 12-byte IV | AES-256-GCM ciphertext | 16-byte tag
//! ```
//!
//! under the store's KEK, with the additional authenticated data
//! `"keyhold-cse-v1\0"`, the store, the KEK's id, everything before the IV
//! and the resource name (each length-prefixed). The resource tag (the
//! first 16 bytes of SHA-256 over the resource name) lets an unwrap for
//! another resource be told from a damaged value before any decryption;
//! the perimeter id travels in the clear and is authenticated, so that
//! the perimeter rules can be applied to the one sealed in. A value moved
//! to another resource, store or KEK, or changed in any byte, does not
//! open.

use keyhold_crypto::asym::{digest, Hash};

pub(crate) const MAGIC: &[u8; 3] = b"KC\x01";
const TAG_LEN: usize = 16;
/// Longest perimeter id sealed (Google's limit is 128 bytes).
pub(crate) const MAX_PERIMETER: usize = 128;

/// The parts of a wrapped key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob<'a> {
    pub version: u32,
    pub perimeter: &'a str,
    pub resource_tag: [u8; 16],
    pub iv: &'a [u8],
    pub ciphertext: &'a [u8],
    pub tag: &'a [u8],
    /// Everything before the IV (authenticated).
    pub header: &'a [u8],
}

/// The first 16 bytes of SHA-256 over the resource name.
pub(crate) fn resource_tag(resource_name: &str) -> [u8; 16] {
    let d = digest(
        Hash::Sha256,
        [
            b"keyhold-cse resource\0".as_slice(),
            resource_name.as_bytes(),
        ]
        .concat()
        .as_slice(),
    );
    let mut t = [0u8; 16];
    t.copy_from_slice(&d[..16]);
    t
}

/// The header of a value wrapped under `version` for this perimeter and
/// resource.
pub(crate) fn header(version: u32, perimeter: &str, resource_name: &str) -> Vec<u8> {
    let mut h = Vec::with_capacity(3 + 4 + 1 + perimeter.len() + TAG_LEN);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&version.to_be_bytes());
    h.push(perimeter.len() as u8);
    h.extend_from_slice(perimeter.as_bytes());
    h.extend_from_slice(&resource_tag(resource_name));
    h
}

/// The additional authenticated data of a value.
pub(crate) fn aad(store: &str, kek: &str, header: &[u8], resource_name: &str) -> Vec<u8> {
    let mut a = Vec::with_capacity(64 + header.len() + resource_name.len());
    a.extend_from_slice(b"keyhold-cse-v1\0");
    for part in [
        store.as_bytes(),
        kek.as_bytes(),
        header,
        resource_name.as_bytes(),
    ] {
        a.extend_from_slice(&(part.len() as u32).to_be_bytes());
        a.extend_from_slice(part);
    }
    a
}

/// Splits a wrapped key; `None` when it is not one of ours.
pub fn parse(b: &[u8]) -> Option<Blob<'_>> {
    let rest = b.strip_prefix(MAGIC.as_slice())?;
    let version = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    let plen = usize::from(*rest.get(4)?);
    if plen > MAX_PERIMETER {
        return None;
    }
    let perimeter = std::str::from_utf8(rest.get(5..5 + plen)?).ok()?;
    let after = &rest[5 + plen..];
    let resource_tag: [u8; 16] = after.get(..TAG_LEN)?.try_into().ok()?;
    let body = &after[TAG_LEN..];
    if body.len() < 12 + 1 + 16 {
        return None;
    }
    let header_len = MAGIC.len() + 5 + plen + TAG_LEN;
    let (iv, rest) = body.split_at(12);
    let (ciphertext, tag) = rest.split_at(rest.len() - 16);
    Some(Blob {
        version,
        perimeter,
        resource_tag,
        iv,
        ciphertext,
        tag,
        header: &b[..header_len],
    })
}

/// The whole value: header, IV, ciphertext and tag.
pub(crate) fn assemble(header: &[u8], iv: &[u8], ciphertext: &[u8], tag: &[u8]) -> Vec<u8> {
    [header, iv, ciphertext, tag].concat()
}

/// A wrapped private key (Gmail's S/MIME keys, `wrapprivatekey`):
///
/// ```text
/// "KP" 0x01 | u32 KEK version | 32-byte SHA-256 of the public key's
///          SubjectPublicKeyInfo | 12-byte IV | AES-256-GCM(PKCS#8) | tag
/// ```
///
/// under the store's KEK, the additional authenticated data
/// `"keyhold-cse-pk-v1\0"`, the store, the KEK's id and the header. The
/// public key's hash in the clear lets `spki_hash` be checked before any
/// decryption.
pub(crate) const PK_MAGIC: &[u8; 3] = b"KP\x01";

/// The parts of a wrapped private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateBlob<'a> {
    pub version: u32,
    pub spki_sha256: [u8; 32],
    pub iv: &'a [u8],
    pub ciphertext: &'a [u8],
    pub tag: &'a [u8],
    pub header: &'a [u8],
}

pub(crate) fn pk_header(version: u32, spki_sha256: &[u8; 32]) -> Vec<u8> {
    [PK_MAGIC.as_slice(), &version.to_be_bytes(), spki_sha256].concat()
}

pub(crate) fn pk_aad(store: &str, kek: &str, header: &[u8]) -> Vec<u8> {
    let mut a = b"keyhold-cse-pk-v1\0".to_vec();
    for part in [store.as_bytes(), kek.as_bytes(), header] {
        a.extend_from_slice(&(part.len() as u32).to_be_bytes());
        a.extend_from_slice(part);
    }
    a
}

/// Splits a wrapped private key; `None` when it is not one of ours.
pub fn parse_private(b: &[u8]) -> Option<PrivateBlob<'_>> {
    let rest = b.strip_prefix(PK_MAGIC.as_slice())?;
    let version = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    let spki_sha256: [u8; 32] = rest.get(4..36)?.try_into().ok()?;
    let body = rest.get(36..)?;
    if body.len() < 12 + 64 + 16 {
        return None;
    }
    let (iv, rest) = body.split_at(12);
    let (ciphertext, tag) = rest.split_at(rest.len() - 16);
    Some(PrivateBlob {
        version,
        spki_sha256,
        iv,
        ciphertext,
        tag,
        header: &b[..PK_MAGIC.len() + 36],
    })
}

/// Google's resource key hash: base64 of HMAC-SHA256 keyed with the data
/// key over `"ResourceKeyDigest:" ‖ resource_name ‖ ":" ‖ perimeter_id`.
pub fn resource_key_hash(dek: &[u8], resource_name: &str, perimeter_id: &str) -> String {
    use base64::Engine;
    let msg = format!("ResourceKeyDigest:{resource_name}:{perimeter_id}");
    let mac =
        keyhold_crypto::sym::hmac_sign(keyhold_crypto::sym::MacHash::Sha256, dek, msg.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Google's published example and drive-cse-upload's unit test.
    #[test]
    fn resource_key_hash_vectors() {
        assert_eq!(
            resource_key_hash(&[0xf0, 0x0d], "my_resource", "my_perimeter"),
            "EfRLb/AKdtsPSfX+vZ/Pi8h6bmKhBTu4egOABRnEdCg="
        );
        assert_eq!(
            resource_key_hash(b"data-encryption-key", "resource-name", ""),
            "BzUyXkZ0424Ve8NtOB1CWgg5hVx60OAPf9SNbVPdtUo="
        );
    }

    #[test]
    fn blobs_round_trip_and_refuse_junk() {
        let h = header(7, "perim", "//drive/files/x");
        let b = assemble(&h, &[1; 12], &[2; 32], &[3; 16]);
        let p = parse(&b).unwrap();
        assert_eq!((p.version, p.perimeter), (7, "perim"));
        assert_eq!(p.resource_tag, resource_tag("//drive/files/x"));
        assert_eq!((p.iv.len(), p.ciphertext.len(), p.tag.len()), (12, 32, 16));
        assert_eq!(p.header, &h[..]);
        for junk in [
            &b""[..],
            b"KC",
            b"KC\x01\0\0\0\x07",
            b"XX\x01aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            assert!(parse(junk).is_none());
        }
        assert!(
            parse(&b[..b.len() - 20]).is_none()
                || parse(&b[..b.len() - 20]).unwrap().ciphertext.len() < 32
        );
    }

    proptest::proptest! {
        #[test]
        fn parsing_anything_never_panics(b in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = parse(&b);
        }
    }
}
