//! The XKS JSON types and the byte-level rules around them: the AES-GCM AAD
//! construction, `ciphertextMetadata`, and the ciphertext data integrity value.

use crate::error::{ErrorName, XksError};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// `requestMetadata`: every field optional at parse time so that a missing
/// one gets a precise ValidationException. Unknown fields are ignored.
#[derive(Debug, Default, Deserialize, Serialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct RequestMetadata {
    pub aws_principal_arn: Option<String>,
    pub aws_source_vpc: Option<String>,
    pub aws_source_vpce: Option<String>,
    pub kms_key_arn: Option<String>,
    pub kms_operation: Option<String>,
    pub kms_request_id: Option<String>,
    pub kms_via_service: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetadataRequest {
    pub request_metadata: Option<RequestMetadata>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptRequest {
    pub request_metadata: Option<RequestMetadata>,
    pub plaintext: Option<String>,
    pub encryption_algorithm: Option<String>,
    pub additional_authenticated_data: Option<String>,
    pub ciphertext_data_integrity_value_algorithm: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DecryptRequest {
    pub request_metadata: Option<RequestMetadata>,
    pub ciphertext: Option<String>,
    pub ciphertext_metadata: Option<String>,
    pub encryption_algorithm: Option<String>,
    pub additional_authenticated_data: Option<String>,
    pub initialization_vector: Option<String>,
    pub authentication_tag: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MetadataResponse {
    pub key_spec: &'static str,
    pub key_usage: Vec<&'static str>,
    pub key_status: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptResponse {
    pub authentication_tag: String,
    pub ciphertext: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ciphertext_data_integrity_value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ciphertext_metadata: Option<String>,
    pub initialization_vector: String,
}

#[derive(Serialize)]
pub struct DecryptResponse {
    pub plaintext: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthResponse {
    pub xks_proxy_fleet_size: u32,
    pub xks_proxy_vendor: String,
    pub xks_proxy_model: String,
    pub ekm_vendor: String,
    pub ekm_fleet_details: Vec<EkmDetail>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EkmDetail {
    pub id: String,
    pub model: String,
    pub health_status: &'static str,
}

/// The only `encryptionAlgorithm` of XKS v1.
pub const AES_GCM: &str = "AES_GCM";
/// The only CDIV algorithm of XKS v1.
pub const SHA_256: &str = "SHA_256";
/// The largest `ciphertextMetadata` the spec allows.
pub const MAX_CTM_LEN: usize = 20;

/// Parses a JSON body into `T`, mapping every failure to ValidationException
/// without echoing any of the body (it may hold plaintext).
pub fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, XksError> {
    serde_json::from_slice(body).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                "the request body is not valid JSON"
            }
            _ => "a field of the request body has the wrong type",
        };
        XksError::new(
            ErrorName::ValidationException,
            format!("{what} (line {}, column {})", e.line(), e.column()),
        )
    })
}

/// Decodes a required base64 field.
pub fn b64_required(field: &'static str, v: Option<&str>) -> Result<Vec<u8>, XksError> {
    let v = v.ok_or_else(|| {
        XksError::new(
            ErrorName::ValidationException,
            format!("{field} is required"),
        )
    })?;
    b64_decode(field, v)
}

/// Decodes an optional base64 field (absent → empty).
pub fn b64_optional(field: &'static str, v: Option<&str>) -> Result<Vec<u8>, XksError> {
    v.map(|s| b64_decode(field, s))
        .transpose()
        .map(Option::unwrap_or_default)
}

fn b64_decode(field: &'static str, v: &str) -> Result<Vec<u8>, XksError> {
    B64.decode(v).map_err(|_| {
        XksError::new(
            ErrorName::ValidationException,
            format!("{field} is not valid Base64"),
        )
    })
}

pub fn b64(v: &[u8]) -> String {
    B64.encode(v)
}

/// The AES-GCM AAD Keyhold uses, as the spec recommends:
/// `u16_be(len(aad)) || aad || u8(len(ctm)) || ctm`.
/// Returns `None` when a length does not fit its field.
pub fn build_aad(aad: &[u8], ctm: &[u8]) -> Option<Vec<u8>> {
    let al = u16::try_from(aad.len()).ok()?;
    let cl = u8::try_from(ctm.len()).ok()?;
    let mut out = Vec::with_capacity(3 + aad.len() + ctm.len());
    out.extend_from_slice(&al.to_be_bytes());
    out.extend_from_slice(aad);
    out.push(cl);
    out.extend_from_slice(ctm);
    Some(out)
}

/// CDIV = SHA-256(aad || ctm || iv || ciphertext || tag), no lengths.
pub fn cdiv(aad: &[u8], ctm: &[u8], iv: &[u8], ct: &[u8], tag: &[u8]) -> [u8; 32] {
    keyhold_crypto::sha256(&[aad, ctm, iv, ct, tag])
}

/// `ciphertextMetadata` format 1: `0x01 || u32_be(key version)`.
///
/// The leading format byte lets the layout evolve; every format is covered
/// by the GCM tag because the metadata is part of the AAD.
pub mod ctm {
    pub const FORMAT_V1: u8 = 1;
    pub const LEN_V1: usize = 5;

    pub fn encode(version: u32) -> [u8; LEN_V1] {
        let v = version.to_be_bytes();
        [FORMAT_V1, v[0], v[1], v[2], v[3]]
    }

    /// Parses metadata produced by [`encode`]; `None` for anything else.
    pub fn parse(b: &[u8]) -> Option<u32> {
        match b {
            [FORMAT_V1, a, b, c, d] => {
                let v = u32::from_be_bytes([*a, *b, *c, *d]);
                (v != 0).then_some(v)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s.replace([' ', '\n'], "")).unwrap()
    }

    /// The worked example of the spec's Appendix C.
    #[test]
    fn cdiv_appendix_c() {
        let aad = B64
            .decode("cHJvamVjdD1uaWxlLGRlcGFydG1lbnQ9bWFya2V0aW5n")
            .unwrap();
        assert_eq!(aad, b"project=nile,department=marketing");
        let ctm = B64.decode("a2V5X3ZlcnNpb249MQ==").unwrap();
        let iv = B64.decode("HMrlRw85cAJUd5Ax").unwrap();
        let ct = B64.decode("ghxkK1txeDNn3q8Y").unwrap();
        let tag = B64.decode("vBxN2ncH1oEkR8WVXpmyYQ==").unwrap();
        assert_eq!(iv, hex("1c ca e5 47 0f 39 70 02 54 77 90 31"));
        assert_eq!(ct, hex("82 1c 64 2b 5b 71 78 33 67 de af 18"));
        assert_eq!(tag, hex("bc 1c 4d da 77 07 d6 81 24 47 c5 95 5e 99 b2 61"));
        let v = cdiv(&aad, &ctm, &iv, &ct, &tag);
        assert_eq!(
            hex::encode(v),
            "a8703f2260bd8791ec2d15ea0b23e65a0631eedcf2a13a65cc82db3f47cf5ec7"
        );
        assert_eq!(b64(&v), "qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc=");
        // Absent fields are empty strings.
        assert_eq!(
            cdiv(b"", b"", &iv, &ct, &tag),
            keyhold_crypto::sha256(&[&iv, &ct, &tag])
        );
    }

    #[test]
    fn aad_includes_lengths() {
        assert_eq!(build_aad(b"", b"").unwrap(), vec![0, 0, 0]);
        assert_eq!(
            build_aad(b"ab", b"c").unwrap(),
            vec![0, 2, b'a', b'b', 1, b'c']
        );
        // The spec's confusion case: metadata passed as AAD must not match.
        assert_ne!(build_aad(b"m", b""), build_aad(b"", b"m"));
        assert_eq!(build_aad(&vec![1u8; 300], b"").unwrap()[..2], [1, 44]);
        assert!(build_aad(&vec![0u8; 65536], b"").is_none());
        assert!(build_aad(b"", &[0u8; 256]).is_none());
    }

    #[test]
    fn ctm_format() {
        assert_eq!(ctm::encode(1), [1, 0, 0, 0, 1]);
        assert_eq!(ctm::parse(&ctm::encode(77)), Some(77));
        assert_eq!(ctm::parse(&[1, 0, 0, 0, 0]), None);
        assert_eq!(ctm::parse(&[2, 0, 0, 0, 1]), None);
        assert_eq!(ctm::parse(&[1, 0, 0, 1]), None);
        assert_eq!(ctm::parse(b""), None);
        const { assert!(ctm::LEN_V1 <= MAX_CTM_LEN) };
    }

    #[test]
    fn unknown_fields_ignored_and_types_checked() {
        let r: EncryptRequest = parse_json(br#"{"plaintext":"AA==","newField":{"x":1},"requestMetadata":{"kmsOperation":"Future","kmsRequestId":"r","extra":5}}"#).unwrap();
        assert_eq!(r.plaintext.as_deref(), Some("AA=="));
        assert_eq!(
            r.request_metadata.unwrap().kms_operation.as_deref(),
            Some("Future")
        );
        let e = parse_json::<EncryptRequest>(br#"{"plaintext":12345}"#)
            .err()
            .unwrap();
        assert_eq!(e.name, ErrorName::ValidationException);
        assert!(!e.message.contains("12345"));
        assert!(parse_json::<EncryptRequest>(b"{").is_err());
    }

    proptest! {
        #[test]
        fn ctm_round_trip(v in 1u32..) {
            prop_assert_eq!(ctm::parse(&ctm::encode(v)), Some(v));
        }

        #[test]
        fn ctm_parse_never_panics(b in proptest::collection::vec(any::<u8>(), 0..30)) {
            let _ = ctm::parse(&b);
        }

        #[test]
        fn json_parsers_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_json::<EncryptRequest>(&b);
            let _ = parse_json::<DecryptRequest>(&b);
            let _ = parse_json::<MetadataRequest>(&b);
        }
    }
}
