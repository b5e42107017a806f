//! The operations Keyhold knows, typed: their wire codes, the KMIP version
//! that defined each one Keyhold serves, and the properties the server
//! schedules and guards them by. Codes a client sends that are not here get
//! Operation Not Supported.

use crate::enums::{operation as code, operation2 as code2};
use crate::message::Version;

/// A KMIP operation Keyhold knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Create,
    CreateKeyPair,
    Register,
    ReKey,
    ReKeyKeyPair,
    Locate,
    Check,
    Get,
    GetAttributes,
    GetAttributeList,
    AddAttribute,
    ModifyAttribute,
    DeleteAttribute,
    ObtainLease,
    Activate,
    Revoke,
    Destroy,
    Query,
    DiscoverVersions,
    Encrypt,
    Decrypt,
    Mac,
    MacVerify,
    Sign,
    SignatureVerify,
    Hash,
    RngRetrieve,
    Log,
    SetAttribute,
    Interop,
    /// Known (an XKS key refuses it as read-only) but not served.
    AdjustAttribute,
}

impl Operation {
    /// Every operation, in the order Query lists those served.
    pub const ALL: [Operation; 31] = [
        Self::Create,
        Self::CreateKeyPair,
        Self::Register,
        Self::ReKey,
        Self::ReKeyKeyPair,
        Self::Locate,
        Self::Check,
        Self::Get,
        Self::GetAttributes,
        Self::GetAttributeList,
        Self::AddAttribute,
        Self::ModifyAttribute,
        Self::DeleteAttribute,
        Self::ObtainLease,
        Self::Activate,
        Self::Revoke,
        Self::Destroy,
        Self::Query,
        Self::DiscoverVersions,
        Self::Encrypt,
        Self::Decrypt,
        Self::Mac,
        Self::MacVerify,
        Self::Sign,
        Self::SignatureVerify,
        Self::Hash,
        Self::RngRetrieve,
        Self::Log,
        Self::SetAttribute,
        Self::Interop,
        Self::AdjustAttribute,
    ];

    /// The operation a wire code names, if Keyhold knows it.
    pub fn from_code(c: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.code() == c)
    }

    /// The Operation enumeration value on the wire.
    pub const fn code(self) -> u32 {
        match self {
            Self::Create => code::CREATE,
            Self::CreateKeyPair => code::CREATE_KEY_PAIR,
            Self::Register => code::REGISTER,
            Self::ReKey => code::REKEY,
            Self::ReKeyKeyPair => code::REKEY_KEY_PAIR,
            Self::Locate => code::LOCATE,
            Self::Check => code::CHECK,
            Self::Get => code::GET,
            Self::GetAttributes => code::GET_ATTRIBUTES,
            Self::GetAttributeList => code::GET_ATTRIBUTE_LIST,
            Self::AddAttribute => code::ADD_ATTRIBUTE,
            Self::ModifyAttribute => code::MODIFY_ATTRIBUTE,
            Self::DeleteAttribute => code::DELETE_ATTRIBUTE,
            Self::ObtainLease => code::OBTAIN_LEASE,
            Self::Activate => code::ACTIVATE,
            Self::Revoke => code::REVOKE,
            Self::Destroy => code::DESTROY,
            Self::Query => code::QUERY,
            Self::DiscoverVersions => code::DISCOVER_VERSIONS,
            Self::Encrypt => code::ENCRYPT,
            Self::Decrypt => code::DECRYPT,
            Self::Mac => code::MAC,
            Self::MacVerify => code::MAC_VERIFY,
            Self::Sign => code::SIGN,
            Self::SignatureVerify => code::SIGNATURE_VERIFY,
            Self::Hash => code::HASH,
            Self::RngRetrieve => code::RNG_RETRIEVE,
            Self::Log => code2::LOG,
            Self::SetAttribute => code2::SET_ATTRIBUTE,
            Self::Interop => code2::INTEROP,
            Self::AdjustAttribute => code2::ADJUST_ATTRIBUTE,
        }
    }

    /// The KMIP version that defined the operation, for those Keyhold
    /// serves: a client is served (and Query lists) exactly those of its
    /// version.
    pub const fn served_since(self) -> Option<Version> {
        Some(match self {
            Self::DiscoverVersions | Self::ReKeyKeyPair => Version::new(1, 1),
            Self::Encrypt
            | Self::Decrypt
            | Self::Mac
            | Self::MacVerify
            | Self::Sign
            | Self::SignatureVerify
            | Self::Hash
            | Self::RngRetrieve => Version::new(1, 2),
            Self::Log | Self::SetAttribute | Self::Interop => Version::new(2, 0),
            Self::AdjustAttribute => return None,
            _ => Version::new(1, 0),
        })
    }

    /// Whether Keyhold serves the operation to a client speaking `v`.
    pub fn served_in(self, v: Version) -> bool {
        self.served_since().is_some_and(|since| v >= since)
    }

    /// Whether the operation changes an object (its attributes, state or
    /// material): XKS keys, whose lifecycle is the custodians', refuse it.
    pub const fn changes_object(self) -> bool {
        matches!(
            self,
            Self::ReKey
                | Self::ReKeyKeyPair
                | Self::AddAttribute
                | Self::ModifyAttribute
                | Self::DeleteAttribute
                | Self::Activate
                | Self::Revoke
                | Self::Destroy
                | Self::SetAttribute
                | Self::AdjustAttribute
        )
    }

    /// Whether the operation can be answered on an async worker: it writes
    /// nothing that waits for the disk (a cache miss may still block; the
    /// server checks that separately).
    pub const fn is_quick(self) -> bool {
        matches!(
            self,
            Self::Encrypt
                | Self::Decrypt
                | Self::Mac
                | Self::MacVerify
                | Self::Sign
                | Self::SignatureVerify
                | Self::Hash
                | Self::GetAttributes
                | Self::GetAttributeList
                | Self::Locate
                | Self::Query
                | Self::DiscoverVersions
                | Self::RngRetrieve
        )
    }

    /// The name the specification gives the operation (audit, logs).
    pub fn name(self) -> &'static str {
        code::name(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_round_trip() {
        for o in Operation::ALL {
            assert_eq!(Operation::from_code(o.code()), Some(o), "{o:?}");
            assert_ne!(o.name(), "Unknown", "{o:?}");
        }
        assert_eq!(Operation::from_code(0x26), None, "RNG Seed is not served");
    }

    #[test]
    fn versions_gate_what_is_served() {
        let v10 = Version::new(1, 0);
        assert!(Operation::Create.served_in(v10));
        assert!(!Operation::DiscoverVersions.served_in(v10));
        assert!(Operation::DiscoverVersions.served_in(Version::new(1, 1)));
        assert!(!Operation::Encrypt.served_in(Version::new(1, 1)));
        assert!(Operation::Encrypt.served_in(Version::new(1, 4)));
        assert!(!Operation::SetAttribute.served_in(Version::new(1, 4)));
        assert!(Operation::SetAttribute.served_in(Version::new(2, 1)));
        assert!(!Operation::AdjustAttribute.served_in(Version::new(2, 1)));
    }
}
