//! Names of enumeration values and mask bits as the KMIP XML and JSON
//! encodings spell them (the specification's names without spaces; `-`,
//! `.`, `#` become `_`). Used by the OASIS test-case harness and for
//! readable logs.

use crate::tags as t;

type Table = &'static [(u32, &'static str)];

const OPERATION: Table = &[
    (0x01, "Create"),
    (0x02, "CreateKeyPair"),
    (0x03, "Register"),
    (0x04, "ReKey"),
    (0x05, "DeriveKey"),
    (0x06, "Certify"),
    (0x07, "ReCertify"),
    (0x08, "Locate"),
    (0x09, "Check"),
    (0x0A, "Get"),
    (0x0B, "GetAttributes"),
    (0x0C, "GetAttributeList"),
    (0x0D, "AddAttribute"),
    (0x0E, "ModifyAttribute"),
    (0x0F, "DeleteAttribute"),
    (0x10, "ObtainLease"),
    (0x11, "GetUsageAllocation"),
    (0x12, "Activate"),
    (0x13, "Revoke"),
    (0x14, "Destroy"),
    (0x15, "Archive"),
    (0x16, "Recover"),
    (0x17, "Validate"),
    (0x18, "Query"),
    (0x19, "Cancel"),
    (0x1A, "Poll"),
    (0x1B, "Notify"),
    (0x1C, "Put"),
    (0x1D, "ReKeyKeyPair"),
    (0x1E, "DiscoverVersions"),
    (0x1F, "Encrypt"),
    (0x20, "Decrypt"),
    (0x21, "Sign"),
    (0x22, "SignatureVerify"),
    (0x23, "MAC"),
    (0x24, "MACVerify"),
    (0x25, "RNGRetrieve"),
    (0x26, "RNGSeed"),
    (0x27, "Hash"),
    (0x28, "CreateSplitKey"),
    (0x29, "JoinSplitKey"),
    (0x2A, "Import"),
    (0x2B, "Export"),
    (0x2C, "Log"),
    (0x2D, "Login"),
    (0x2E, "Logout"),
    (0x2F, "DelegatedLogin"),
    (0x30, "AdjustAttribute"),
    (0x31, "SetAttribute"),
    (0x32, "SetEndpointRole"),
    (0x33, "PKCS_11"),
    (0x34, "Interop"),
    (0x35, "ReProvision"),
];

const OBJECT_TYPE: Table = &[
    (1, "Certificate"),
    (2, "SymmetricKey"),
    (3, "PublicKey"),
    (4, "PrivateKey"),
    (5, "SplitKey"),
    (6, "Template"),
    (7, "SecretData"),
    (8, "OpaqueObject"),
    (9, "PGPKey"),
    (10, "CertificateRequest"),
];

const RESULT_STATUS: Table = &[
    (0, "Success"),
    (1, "OperationFailed"),
    (2, "OperationPending"),
    (3, "OperationUndone"),
];

const RESULT_REASON: Table = &[
    (0x01, "ItemNotFound"),
    (0x02, "ResponseTooLarge"),
    (0x03, "AuthenticationNotSuccessful"),
    (0x04, "InvalidMessage"),
    (0x05, "OperationNotSupported"),
    (0x06, "MissingData"),
    (0x07, "InvalidField"),
    (0x08, "FeatureNotSupported"),
    (0x09, "OperationCanceledByRequester"),
    (0x0A, "CryptographicFailure"),
    (0x0B, "IllegalOperation"),
    (0x0C, "PermissionDenied"),
    (0x0D, "ObjectArchived"),
    (0x0E, "IndexOutOfBounds"),
    (0x0F, "ApplicationNamespaceNotSupported"),
    (0x10, "KeyFormatTypeNotSupported"),
    (0x11, "KeyCompressionTypeNotSupported"),
    (0x12, "EncodingOptionError"),
    (0x13, "KeyValueNotPresent"),
    (0x14, "AttestationRequired"),
    (0x15, "AttestationFailed"),
    (0x16, "Sensitive"),
    (0x17, "NotExtractable"),
    (0x18, "ObjectAlreadyExists"),
    (0x19, "InvalidTicket"),
    (0x1A, "UsageLimitExceeded"),
    (0x1B, "NumericRange"),
    (0x1C, "InvalidDataType"),
    (0x1D, "ReadOnlyAttribute"),
    (0x1E, "MultiValuedAttribute"),
    (0x1F, "UnsupportedAttribute"),
    (0x20, "AttributeInstanceNotFound"),
    (0x21, "AttributeNotFound"),
    (0x22, "AttributeReadOnly"),
    (0x23, "AttributeSingleValued"),
    (0x24, "BadCryptographicParameters"),
    (0x25, "BadPassword"),
    (0x26, "CodecError"),
    (0x28, "IllegalObjectType"),
    (0x29, "IncompatibleCryptographicUsageMask"),
    (0x2A, "InternalServerError"),
    (0x2B, "InvalidAsynchronousCorrelationValue"),
    (0x2C, "InvalidAttribute"),
    (0x2D, "InvalidAttributeValue"),
    (0x2E, "InvalidCorrelationValue"),
    (0x2F, "InvalidCSR"),
    (0x30, "InvalidObjectType"),
    (0x32, "KeyWrapTypeNotSupported"),
    (0x34, "MissingInitializationVector"),
    (0x35, "NonUniqueNameAttribute"),
    (0x36, "ObjectDestroyed"),
    (0x37, "ObjectNotFound"),
    (0x39, "NotAuthorised"),
    (0x3A, "ServerLimitExceeded"),
    (0x3B, "UnknownEnumeration"),
    (0x3C, "UnknownMessageExtension"),
    (0x3D, "UnknownTag"),
    (0x3E, "UnsupportedCryptographicParameters"),
    (0x3F, "UnsupportedProtocolVersion"),
    (0x40, "WrappingObjectArchived"),
    (0x41, "WrappingObjectDestroyed"),
    (0x42, "WrappingObjectNotFound"),
    (0x43, "WrongKeyLifecycleState"),
    (0x44, "ProtectionStorageUnavailable"),
    (0x100, "GeneralFailure"),
];

const CRYPTOGRAPHIC_ALGORITHM: Table = &[
    (0x01, "DES"),
    (0x02, "DES3"),
    (0x03, "AES"),
    (0x04, "RSA"),
    (0x05, "DSA"),
    (0x06, "ECDSA"),
    (0x07, "HMAC_SHA1"),
    (0x08, "HMAC_SHA224"),
    (0x09, "HMAC_SHA256"),
    (0x0A, "HMAC_SHA384"),
    (0x0B, "HMAC_SHA512"),
    (0x0C, "HMAC_MD5"),
    (0x0D, "DH"),
    (0x0E, "ECDH"),
    (0x0F, "ECMQV"),
    (0x10, "Blowfish"),
    (0x11, "Camellia"),
    (0x12, "CAST5"),
    (0x13, "IDEA"),
    (0x14, "MARS"),
    (0x15, "RC2"),
    (0x16, "RC4"),
    (0x17, "RC5"),
    (0x18, "SKIPJACK"),
    (0x19, "Twofish"),
    (0x1A, "EC"),
    (0x1B, "OneTimePad"),
    (0x1C, "ChaCha20"),
    (0x1D, "Poly1305"),
    (0x1E, "ChaCha20Poly1305"),
    (0x1F, "SHA3_224"),
    (0x20, "SHA3_256"),
    (0x21, "SHA3_384"),
    (0x22, "SHA3_512"),
    (0x23, "HMAC_SHA3_224"),
    (0x24, "HMAC_SHA3_256"),
    (0x25, "HMAC_SHA3_384"),
    (0x26, "HMAC_SHA3_512"),
];

const BLOCK_CIPHER_MODE: Table = &[
    (0x01, "CBC"),
    (0x02, "ECB"),
    (0x03, "PCBC"),
    (0x04, "CFB"),
    (0x05, "OFB"),
    (0x06, "CTR"),
    (0x07, "CMAC"),
    (0x08, "CCM"),
    (0x09, "GCM"),
    (0x0A, "CBC_MAC"),
    (0x0B, "XTS"),
    (0x0C, "AESKeyWrapPadding"),
    (0x0D, "NISTKeyWrap"),
    (0x0E, "X9_102AESKW"),
    (0x0F, "X9_102TDKW"),
    (0x10, "X9_102AKW1"),
    (0x11, "X9_102AKW2"),
    (0x12, "AEAD"),
];

const PADDING_METHOD: Table = &[
    (0x01, "None"),
    (0x02, "OAEP"),
    (0x03, "PKCS5"),
    (0x04, "SSL3"),
    (0x05, "Zeros"),
    (0x06, "ANSIX9_23"),
    (0x07, "ISO10126"),
    (0x08, "PKCS1v1_5"),
    (0x09, "X9_31"),
    (0x0A, "PSS"),
];

const HASHING_ALGORITHM: Table = &[
    (0x01, "MD2"),
    (0x02, "MD4"),
    (0x03, "MD5"),
    (0x04, "SHA_1"),
    (0x05, "SHA_224"),
    (0x06, "SHA_256"),
    (0x07, "SHA_384"),
    (0x08, "SHA_512"),
    (0x09, "RIPEMD_160"),
    (0x0A, "Tiger"),
    (0x0B, "Whirlpool"),
    (0x0C, "SHA_512_224"),
    (0x0D, "SHA_512_256"),
    (0x0E, "SHA3_224"),
    (0x0F, "SHA3_256"),
    (0x10, "SHA3_384"),
    (0x11, "SHA3_512"),
];

const KEY_FORMAT_TYPE: Table = &[
    (0x01, "Raw"),
    (0x02, "Opaque"),
    (0x03, "PKCS_1"),
    (0x04, "PKCS_8"),
    (0x05, "X_509"),
    (0x06, "ECPrivateKey"),
    (0x07, "TransparentSymmetricKey"),
    (0x08, "TransparentDSAPrivateKey"),
    (0x09, "TransparentDSAPublicKey"),
    (0x0A, "TransparentRSAPrivateKey"),
    (0x0B, "TransparentRSAPublicKey"),
    (0x0C, "TransparentDHPrivateKey"),
    (0x0D, "TransparentDHPublicKey"),
    (0x0E, "TransparentECDSAPrivateKey"),
    (0x0F, "TransparentECDSAPublicKey"),
    (0x10, "TransparentECDHPrivateKey"),
    (0x11, "TransparentECDHPublicKey"),
    (0x12, "TransparentECMQVPrivateKey"),
    (0x13, "TransparentECMQVPublicKey"),
    (0x14, "TransparentECPrivateKey"),
    (0x15, "TransparentECPublicKey"),
    (0x16, "PKCS_12"),
];

const STATE: Table = &[
    (1, "PreActive"),
    (2, "Active"),
    (3, "Deactivated"),
    (4, "Compromised"),
    (5, "Destroyed"),
    (6, "DestroyedCompromised"),
];

const REVOCATION_REASON_CODE: Table = &[
    (1, "Unspecified"),
    (2, "KeyCompromise"),
    (3, "CACompromise"),
    (4, "AffiliationChanged"),
    (5, "Superseded"),
    (6, "CessationOfOperation"),
    (7, "PrivilegeWithdrawn"),
];

const NAME_TYPE: Table = &[(1, "UninterpretedTextString"), (2, "URI")];
const SECRET_DATA_TYPE: Table = &[(1, "Password"), (2, "Seed")];
const CERTIFICATE_TYPE: Table = &[(1, "X_509"), (2, "PGP")];
const BATCH_ERROR: Table = &[(1, "Continue"), (2, "Stop"), (3, "Undo")];
const VALIDITY_INDICATOR: Table = &[(1, "Valid"), (2, "Invalid"), (3, "Unknown")];
const USAGE_LIMITS_UNIT: Table = &[(1, "Byte"), (2, "Object")];
const INTEROP_FUNCTION: Table = &[(1, "Begin"), (2, "End"), (3, "Reset")];
const RNG_ALGORITHM: Table = &[
    (1, "Unspecified"),
    (2, "FIPS186_2"),
    (3, "DRBG"),
    (4, "NRBG"),
    (5, "ANSIX9_31"),
    (6, "ANSIX9_62"),
];
const LINK_TYPE: Table = &[
    (0x101, "CertificateLink"),
    (0x102, "PublicKeyLink"),
    (0x103, "PrivateKeyLink"),
    (0x104, "DerivationBaseObjectLink"),
    (0x105, "DerivedKeyLink"),
    (0x106, "ReplacementObjectLink"),
    (0x107, "ReplacedObjectLink"),
    (0x108, "ParentLink"),
    (0x109, "ChildLink"),
    (0x10A, "PreviousLink"),
    (0x10B, "NextLink"),
];
const QUERY_FUNCTION: Table = &[
    (1, "QueryOperations"),
    (2, "QueryObjects"),
    (3, "QueryServerInformation"),
    (4, "QueryApplicationNamespaces"),
    (5, "QueryExtensionList"),
    (6, "QueryExtensionMap"),
    (7, "QueryAttestationTypes"),
    (8, "QueryRNGs"),
    (9, "QueryValidations"),
    (10, "QueryProfiles"),
    (11, "QueryCapabilities"),
    (12, "QueryClientRegistrationMethods"),
];
const KEY_ROLE_TYPE: Table = &[(0x03, "DEK"), (0x0B, "KEK")];
const WRAPPING_METHOD: Table = &[
    (1, "Encrypt"),
    (2, "MACSign"),
    (3, "EncryptThenMACSign"),
    (4, "MACSignThenEncrypt"),
    (5, "TR_31"),
];
const ENCODING_OPTION: Table = &[(1, "NoEncoding"), (2, "TTLVEncoding")];
const MASK_GENERATOR: Table = &[(1, "MGF1")];
const OBJECT_GROUP_MEMBER: Table = &[(1, "GroupMemberFresh"), (2, "GroupMemberDefault")];

/// Bits of the Cryptographic Usage Mask.
pub const USAGE_MASK: Table = &[
    (0x1, "Sign"),
    (0x2, "Verify"),
    (0x4, "Encrypt"),
    (0x8, "Decrypt"),
    (0x10, "WrapKey"),
    (0x20, "UnwrapKey"),
    (0x40, "Export"),
    (0x80, "MACGenerate"),
    (0x100, "MACVerify"),
    (0x200, "DeriveKey"),
    (0x400, "ContentCommitment"),
    (0x800, "KeyAgreement"),
    (0x1000, "CertificateSign"),
    (0x2000, "CRLSign"),
    (0x4000, "GenerateCryptogram"),
    (0x8000, "ValidateCryptogram"),
    (0x10000, "TranslateEncrypt"),
    (0x20000, "TranslateDecrypt"),
    (0x40000, "TranslateWrap"),
    (0x80000, "TranslateUnwrap"),
    (0x100000, "Authenticate"),
    (0x200000, "Unrestricted"),
    (0x400000, "FPEEncrypt"),
    (0x800000, "FPEDecrypt"),
];

/// Bits of the Storage Status Mask and Protection Storage Mask.
pub const STORAGE_STATUS_MASK: Table = &[
    (1, "OnLineStorage"),
    (2, "ArchivalStorage"),
    (4, "DestroyedStorage"),
];
pub const PROTECTION_STORAGE_MASK: Table = &[
    (0x1, "Software"),
    (0x2, "Hardware"),
    (0x4, "OnProcessor"),
    (0x8, "OnSystem"),
    (0x10, "OffSystem"),
    (0x20, "Hypervisor"),
    (0x40, "OperatingSystem"),
    (0x80, "Container"),
    (0x100, "OnPremises"),
    (0x200, "OffPremises"),
    (0x400, "SelfManaged"),
    (0x800, "Outsourced"),
    (0x1000, "Validated"),
    (0x2000, "SameJurisdiction"),
];

/// The value names of an Enumeration tag.
pub fn enum_table(tag: u32) -> Option<Table> {
    Some(match tag {
        t::OPERATION => OPERATION,
        t::OBJECT_TYPE => OBJECT_TYPE,
        t::RESULT_STATUS => RESULT_STATUS,
        t::RESULT_REASON => RESULT_REASON,
        t::CRYPTOGRAPHIC_ALGORITHM => CRYPTOGRAPHIC_ALGORITHM,
        t::BLOCK_CIPHER_MODE => BLOCK_CIPHER_MODE,
        t::PADDING_METHOD => PADDING_METHOD,
        t::HASHING_ALGORITHM | t::MASK_GENERATOR_HASHING_ALGORITHM => HASHING_ALGORITHM,
        t::KEY_FORMAT_TYPE => KEY_FORMAT_TYPE,
        t::STATE => STATE,
        t::REVOCATION_REASON_CODE => REVOCATION_REASON_CODE,
        t::NAME_TYPE => NAME_TYPE,
        t::SECRET_DATA_TYPE => SECRET_DATA_TYPE,
        t::CERTIFICATE_TYPE => CERTIFICATE_TYPE,
        t::BATCH_ERROR_CONTINUATION_OPTION => BATCH_ERROR,
        t::VALIDITY_INDICATOR => VALIDITY_INDICATOR,
        t::USAGE_LIMITS_UNIT => USAGE_LIMITS_UNIT,
        t::INTEROP_FUNCTION => INTEROP_FUNCTION,
        t::RNG_ALGORITHM => RNG_ALGORITHM,
        t::LINK_TYPE => LINK_TYPE,
        t::QUERY_FUNCTION => QUERY_FUNCTION,
        t::KEY_ROLE_TYPE => KEY_ROLE_TYPE,
        t::OBJECT_GROUP_MEMBER => OBJECT_GROUP_MEMBER,
        t::WRAPPING_METHOD => WRAPPING_METHOD,
        t::ENCODING_OPTION => ENCODING_OPTION,
        t::MASK_GENERATOR => MASK_GENERATOR,
        _ => return None,
    })
}

/// The mask-bit names of an Integer tag that holds a mask.
pub fn mask_table(tag: u32) -> Option<Table> {
    Some(match tag {
        t::CRYPTOGRAPHIC_USAGE_MASK => USAGE_MASK,
        t::STORAGE_STATUS_MASK => STORAGE_STATUS_MASK,
        t::PROTECTION_STORAGE_MASK => PROTECTION_STORAGE_MASK,
        _ => return None,
    })
}

pub fn enum_value(tag: u32, name: &str) -> Option<u32> {
    enum_table(tag)?
        .iter()
        .find(|(_, n)| *n == name)
        .map(|(v, _)| *v)
}

pub fn enum_name(tag: u32, value: u32) -> Option<&'static str> {
    enum_table(tag)?
        .iter()
        .find(|(v, _)| *v == value)
        .map(|(_, n)| *n)
}

/// Parses "Encrypt Decrypt" (or "Encrypt|Decrypt") into mask bits.
pub fn mask_value(table: Table, names: &str) -> Option<u32> {
    let mut v = 0;
    for n in names.split([' ', '|']).filter(|n| !n.is_empty()) {
        v |= table.iter().find(|(_, x)| *x == n)?.0;
    }
    Some(v)
}
