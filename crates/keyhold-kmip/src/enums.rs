//! The KMIP enumeration values Keyhold uses (OASIS KMIP 1.0–2.1).

pub mod operation {
    pub const CREATE: u32 = 0x01;
    pub const CREATE_KEY_PAIR: u32 = 0x02;
    pub const REGISTER: u32 = 0x03;
    pub const REKEY: u32 = 0x04;
    pub const REKEY_KEY_PAIR: u32 = 0x1D;
    pub const LOCATE: u32 = 0x08;
    pub const CHECK: u32 = 0x09;
    pub const GET: u32 = 0x0A;
    pub const GET_ATTRIBUTES: u32 = 0x0B;
    pub const GET_ATTRIBUTE_LIST: u32 = 0x0C;
    pub const ADD_ATTRIBUTE: u32 = 0x0D;
    pub const MODIFY_ATTRIBUTE: u32 = 0x0E;
    pub const DELETE_ATTRIBUTE: u32 = 0x0F;
    pub const OBTAIN_LEASE: u32 = 0x10;
    pub const GET_USAGE_ALLOCATION: u32 = 0x11;
    pub const ACTIVATE: u32 = 0x12;
    pub const REVOKE: u32 = 0x13;
    pub const DESTROY: u32 = 0x14;
    pub const ARCHIVE: u32 = 0x15;
    pub const RECOVER: u32 = 0x16;
    pub const QUERY: u32 = 0x18;
    pub const CANCEL: u32 = 0x19;
    pub const POLL: u32 = 0x1A;
    pub const DISCOVER_VERSIONS: u32 = 0x1E;
    pub const ENCRYPT: u32 = 0x1F;
    pub const DECRYPT: u32 = 0x20;
    pub const SIGN: u32 = 0x21;
    pub const SIGNATURE_VERIFY: u32 = 0x22;
    pub const MAC: u32 = 0x23;
    pub const MAC_VERIFY: u32 = 0x24;
    pub const RNG_RETRIEVE: u32 = 0x25;
    pub const RNG_SEED: u32 = 0x26;
    pub const HASH: u32 = 0x27;

    /// The operation's name as the specification spells it (audit, logs).
    pub fn name(op: u32) -> &'static str {
        crate::names::enum_name(crate::tags::OPERATION, op).unwrap_or("Unknown")
    }
}

/// Operations KMIP 2.x added (Set/Adjust Attribute, Log, Interop).
pub mod operation2 {
    pub const ADJUST_ATTRIBUTE: u32 = 0x30;
    pub const SET_ATTRIBUTE: u32 = 0x31;
    pub const LOG: u32 = 0x2C;
    pub const INTEROP: u32 = 0x34;
}

pub mod result_status {
    pub const SUCCESS: u32 = 0;
    pub const OPERATION_FAILED: u32 = 1;
    pub const OPERATION_PENDING: u32 = 2;
    pub const OPERATION_UNDONE: u32 = 3;
}

/// Why an operation failed. KMIP 2.0 added many precise reasons; a 1.x
/// client gets the nearest reason its version defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    ItemNotFound,
    ResponseTooLarge,
    AuthenticationNotSuccessful,
    InvalidMessage,
    OperationNotSupported,
    MissingData,
    InvalidField,
    FeatureNotSupported,
    CryptographicFailure,
    IllegalOperation,
    PermissionDenied,
    IndexOutOfBounds,
    KeyFormatTypeNotSupported,
    KeyValueNotPresent,
    Sensitive,
    NotExtractable,
    AttributeNotFound,
    AttributeReadOnly,
    AttributeSingleValued,
    IncompatibleCryptographicUsageMask,
    NonUniqueNameAttribute,
    ObjectDestroyed,
    ObjectNotFound,
    UnsupportedProtocolVersion,
    WrongKeyLifecycleState,
    /// Protecting (Encrypt, MAC) with an object past its Protect Stop
    /// Date: the profiles' cases expect Permission Denied up to KMIP 2.0,
    /// Wrong Key Lifecycle State from 2.1.
    PastProtectStopDate,
    GeneralFailure,
}

impl Reason {
    /// The Result Reason value for a client speaking `major.minor`.
    pub fn code(self, major: i32, minor: i32) -> u32 {
        use Reason::*;
        let v2 = major >= 2;
        match self {
            PastProtectStopDate if (major, minor) >= (2, 1) => 0x43,
            PastProtectStopDate => 0x0C,
            ItemNotFound => 0x01,
            ResponseTooLarge => 0x02,
            AuthenticationNotSuccessful => 0x03,
            InvalidMessage => 0x04,
            OperationNotSupported => 0x05,
            MissingData => 0x06,
            InvalidField => 0x07,
            FeatureNotSupported => 0x08,
            CryptographicFailure => 0x0A,
            IllegalOperation => 0x0B,
            PermissionDenied => 0x0C,
            IndexOutOfBounds => 0x0E,
            KeyFormatTypeNotSupported => 0x10,
            KeyValueNotPresent => 0x13,
            GeneralFailure => 0x100,
            Sensitive if v2 => 0x16,
            NotExtractable if v2 => 0x17,
            AttributeNotFound if v2 => 0x21,
            AttributeReadOnly if v2 => 0x22,
            AttributeSingleValued if v2 => 0x23,
            IncompatibleCryptographicUsageMask if v2 => 0x29,
            NonUniqueNameAttribute if v2 => 0x35,
            ObjectDestroyed if v2 => 0x36,
            ObjectNotFound if v2 => 0x37,
            UnsupportedProtocolVersion if v2 => 0x3F,
            WrongKeyLifecycleState if v2 => 0x43,
            Sensitive | NotExtractable => 0x0C,
            AttributeNotFound => 0x01,
            AttributeReadOnly | AttributeSingleValued => 0x0C,
            IncompatibleCryptographicUsageMask => 0x0B,
            WrongKeyLifecycleState => 0x0C,
            NonUniqueNameAttribute => 0x07,
            ObjectDestroyed | ObjectNotFound => 0x01,
            UnsupportedProtocolVersion => 0x04,
        }
    }
}

pub mod object_type {
    pub const CERTIFICATE: u32 = 1;
    pub const SYMMETRIC_KEY: u32 = 2;
    pub const PUBLIC_KEY: u32 = 3;
    pub const PRIVATE_KEY: u32 = 4;
    pub const SPLIT_KEY: u32 = 5;
    pub const TEMPLATE: u32 = 6;
    pub const SECRET_DATA: u32 = 7;
    pub const OPAQUE_OBJECT: u32 = 8;
    pub const PGP_KEY: u32 = 9;

    pub fn name(t: u32) -> &'static str {
        crate::names::enum_name(crate::tags::OBJECT_TYPE, t).unwrap_or("Unknown")
    }
}

pub mod crypto_alg {
    pub const TRIPLE_DES: u32 = 0x02;
    pub const AES: u32 = 0x03;
    pub const RSA: u32 = 0x04;
    pub const ECDSA: u32 = 0x06;
    pub const HMAC_SHA1: u32 = 0x07;
    pub const HMAC_SHA224: u32 = 0x08;
    pub const HMAC_SHA256: u32 = 0x09;
    pub const HMAC_SHA384: u32 = 0x0A;
    pub const HMAC_SHA512: u32 = 0x0B;
    pub const EC: u32 = 0x1A;
    pub const CHACHA20: u32 = 0x1C;
    pub const CHACHA20_POLY1305: u32 = 0x1E;
    /// KMIP 2.0 and later.
    pub const ED25519: u32 = 0x37;
}

pub mod block_cipher_mode {
    pub const CBC: u32 = 0x01;
    pub const ECB: u32 = 0x02;
    pub const CTR: u32 = 0x06;
    pub const GCM: u32 = 0x09;
    pub const AEAD: u32 = 0x12;
    pub const AES_KEY_WRAP_PADDING: u32 = 0x0C;
    pub const NIST_KEY_WRAP: u32 = 0x0D;
}

pub mod padding {
    pub const NONE: u32 = 0x01;
    pub const PKCS5: u32 = 0x03;
}

/// The NIST curves Keyhold makes keys on.
pub mod recommended_curve {
    pub const P_256: u32 = 0x07;
    pub const P_384: u32 = 0x0A;
    pub const P_521: u32 = 0x0D;
}

pub mod hashing {
    pub const SHA_1: u32 = 0x04;
    pub const SHA_256: u32 = 0x06;
    pub const SHA_384: u32 = 0x07;
    pub const SHA_512: u32 = 0x08;
}

pub mod key_format {
    pub const RAW: u32 = 0x01;
    pub const OPAQUE: u32 = 0x02;
    pub const PKCS_1: u32 = 0x03;
    pub const PKCS_8: u32 = 0x04;
    pub const X_509: u32 = 0x05;
    pub const EC_PRIVATE_KEY: u32 = 0x06;
    pub const TRANSPARENT_SYMMETRIC_KEY: u32 = 0x07;
    pub const TRANSPARENT_RSA_PRIVATE_KEY: u32 = 0x0A;
    pub const TRANSPARENT_RSA_PUBLIC_KEY: u32 = 0x0B;
    /// KMIP 1.3 and later.
    pub const TRANSPARENT_EC_PRIVATE_KEY: u32 = 0x14;
    pub const TRANSPARENT_EC_PUBLIC_KEY: u32 = 0x15;
}

pub mod name_type {
    pub const UNINTERPRETED_TEXT_STRING: u32 = 1;
    pub const URI: u32 = 2;
}

pub mod revocation_reason {
    pub const UNSPECIFIED: u32 = 1;
    pub const KEY_COMPROMISE: u32 = 2;
    pub const CA_COMPROMISE: u32 = 3;
    pub const AFFILIATION_CHANGED: u32 = 4;
    pub const SUPERSEDED: u32 = 5;
    pub const CESSATION_OF_OPERATION: u32 = 6;
    pub const PRIVILEGE_WITHDRAWN: u32 = 7;
}

pub mod query_function {
    pub const OPERATIONS: u32 = 1;
    pub const OBJECTS: u32 = 2;
    pub const SERVER_INFORMATION: u32 = 3;
    pub const APPLICATION_NAMESPACES: u32 = 4;
    pub const EXTENSION_LIST: u32 = 5;
    pub const EXTENSION_MAP: u32 = 6;
    pub const ATTESTATION_TYPES: u32 = 7;
    pub const RNGS: u32 = 8;
    pub const VALIDATIONS: u32 = 9;
    pub const PROFILES: u32 = 10;
    pub const CAPABILITIES: u32 = 11;
    pub const CLIENT_REGISTRATION_METHODS: u32 = 12;
}

pub mod link_type {
    pub const PUBLIC_KEY: u32 = 0x102;
    pub const PRIVATE_KEY: u32 = 0x103;
    pub const REPLACEMENT_OBJECT: u32 = 0x106;
    pub const REPLACED_OBJECT: u32 = 0x107;
}

pub mod usage_mask {
    pub const SIGN: i32 = 0x01;
    pub const VERIFY: i32 = 0x02;
    pub const ENCRYPT: i32 = 0x04;
    pub const DECRYPT: i32 = 0x08;
    pub const WRAP_KEY: i32 = 0x10;
    pub const UNWRAP_KEY: i32 = 0x20;
    pub const EXPORT: i32 = 0x40;
    pub const MAC_GENERATE: i32 = 0x80;
    pub const MAC_VERIFY: i32 = 0x100;
}

pub mod secret_data_type {
    pub const PASSWORD: u32 = 1;
    pub const SEED: u32 = 2;
}
