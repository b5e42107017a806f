//! Attributes: the names KMIP 1.x uses, the tags KMIP 2.x uses, which
//! version defines each, and conversion between TTLV and stored values.

use crate::message::{KmipError, Version};
use crate::tags as t;
use crate::ttlv::{Ttlv, Value};
use keyhold_core::AttrValue;

/// Who may set an attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setter {
    /// Only the server (Unique Identifier, State, dates it records...).
    Server,
    /// The client, when the object is made (Create/Register) only.
    Create,
    /// The client, at any time.
    Client,
}

/// A known attribute.
#[derive(Debug)]
pub struct AttrDef {
    pub attr: Attr,
    /// The KMIP 1.x Attribute Name.
    pub name: &'static str,
    /// The tag its value carries in KMIP 2.x.
    pub tag: u32,
    pub multi: bool,
    pub setter: Setter,
    /// First version that defines it, and the first that no longer does.
    pub since: Version,
    pub until: Option<Version>,
}

const V1_0: Version = Version::new(1, 0);
const V1_1: Version = Version::new(1, 1);
const V1_2: Version = Version::new(1, 2);
const V1_4: Version = Version::new(1, 4);
const V2_0: Version = Version::new(2, 0);

macro_rules! defs {
    ($(($attr:ident, $name:literal, $tag:expr, $multi:expr, $setter:ident, $since:expr, $until:expr)),* $(,)?) => {
        /// A known attribute, by its KMIP 1.x name (see [`DEFS`]).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Attr { $($attr),* }

        /// Every known attribute, in [`Attr`] order.
        pub const DEFS: &[AttrDef] = &[$(AttrDef {
            attr: Attr::$attr, name: $name, tag: $tag, multi: $multi, setter: Setter::$setter, since: $since, until: $until,
        }),*];
    };
}

defs! {
    (UniqueIdentifier, "Unique Identifier", t::UNIQUE_IDENTIFIER, false, Server, V1_0, None),
    (Name, "Name", t::NAME, true, Client, V1_0, None),
    (CertificateType, "Certificate Type", t::CERTIFICATE_TYPE, false, Server, V1_0, None),
    (CertificateLength, "Certificate Length", t::CERTIFICATE_LENGTH, false, Server, V1_0, None),
    (CertificateSubjectCN, "Certificate Subject CN", t::CERTIFICATE_SUBJECT_CN, false, Server, V2_0, None),
    (CertificateIssuerCN, "Certificate Issuer CN", t::CERTIFICATE_ISSUER_CN, false, Server, V2_0, None),
    (ObjectType, "Object Type", t::OBJECT_TYPE, false, Server, V1_0, None),
    (CryptographicAlgorithm, "Cryptographic Algorithm", t::CRYPTOGRAPHIC_ALGORITHM, false, Create, V1_0, None),
    (CryptographicLength, "Cryptographic Length", t::CRYPTOGRAPHIC_LENGTH, false, Create, V1_0, None),
    (CryptographicDomainParameters, "Cryptographic Domain Parameters", t::CRYPTOGRAPHIC_DOMAIN_PARAMETERS, false, Create, V1_0, None),
    (CryptographicParameters, "Cryptographic Parameters", t::CRYPTOGRAPHIC_PARAMETERS, true, Client, V1_0, None),
    (CryptographicUsageMask, "Cryptographic Usage Mask", t::CRYPTOGRAPHIC_USAGE_MASK, false, Client, V1_0, None),
    (Digest, "Digest", t::DIGEST, true, Server, V1_0, None),
    (OperationPolicyName, "Operation Policy Name", t::OPERATION_POLICY_NAME, false, Client, V1_0, Some(V2_0)),
    (State, "State", t::STATE, false, Server, V1_0, None),
    (UsageLimits, "Usage Limits", t::USAGE_LIMITS, false, Client, V1_0, None),
    (InitialDate, "Initial Date", t::INITIAL_DATE, false, Server, V1_0, None),
    (ActivationDate, "Activation Date", t::ACTIVATION_DATE, false, Client, V1_0, None),
    (ProcessStartDate, "Process Start Date", t::PROCESS_START_DATE, false, Client, V1_0, None),
    (ProtectStopDate, "Protect Stop Date", t::PROTECT_STOP_DATE, false, Client, V1_0, None),
    (DeactivationDate, "Deactivation Date", t::DEACTIVATION_DATE, false, Client, V1_0, None),
    (DestroyDate, "Destroy Date", t::DESTROY_DATE, false, Server, V1_0, None),
    (CompromiseOccurrenceDate, "Compromise Occurrence Date", t::COMPROMISE_OCCURRENCE_DATE, false, Server, V1_0, None),
    (CompromiseDate, "Compromise Date", t::COMPROMISE_DATE, false, Server, V1_0, None),
    (RevocationReason, "Revocation Reason", t::REVOCATION_REASON, false, Server, V1_0, None),
    (ObjectGroup, "Object Group", t::OBJECT_GROUP, true, Client, V1_0, None),
    (Link, "Link", t::LINK, true, Client, V1_0, None),
    (ApplicationSpecificInformation, "Application Specific Information", t::APPLICATION_SPECIFIC_INFORMATION, true, Client, V1_0, None),
    (ContactInformation, "Contact Information", t::CONTACT_INFORMATION, false, Client, V1_0, None),
    (LastChangeDate, "Last Change Date", t::LAST_CHANGE_DATE, false, Server, V1_0, None),
    (LeaseTime, "Lease Time", t::LEASE_TIME, false, Server, V1_0, None),
    (Fresh, "Fresh", t::FRESH, false, Create, V1_1, None),
    (AlternativeName, "Alternative Name", t::ALTERNATIVE_NAME, true, Client, V1_2, None),
    (KeyValuePresent, "Key Value Present", t::KEY_VALUE_PRESENT, false, Server, V1_2, None),
    (OriginalCreationDate, "Original Creation Date", t::ORIGINAL_CREATION_DATE, false, Create, V1_2, None),
    (Description, "Description", t::DESCRIPTION, false, Client, V1_4, None),
    (Comment, "Comment", t::COMMENT, false, Client, V1_4, None),
    (Sensitive, "Sensitive", t::SENSITIVE, false, Client, V1_4, None),
    (AlwaysSensitive, "Always Sensitive", t::ALWAYS_SENSITIVE, false, Server, V1_4, None),
    (Extractable, "Extractable", t::EXTRACTABLE, false, Client, V1_4, None),
    (NeverExtractable, "Never Extractable", t::NEVER_EXTRACTABLE, false, Server, V1_4, None),
    (ShortUniqueIdentifier, "Short Unique Identifier", t::SHORT_UNIQUE_IDENTIFIER, false, Server, V2_0, None),
    (RandomNumberGenerator, "Random Number Generator", t::RANDOM_NUMBER_GENERATOR, false, Server, V1_4, None),
    (ProtectionStorageMask, "Protection Storage Mask", t::PROTECTION_STORAGE_MASK, false, Server, V2_0, None),
    (KeyFormatType, "Key Format Type", t::KEY_FORMAT_TYPE, false, Server, V2_0, None),
}

impl Attr {
    pub const fn def(self) -> &'static AttrDef {
        &DEFS[self as usize]
    }

    /// The KMIP 1.x Attribute Name.
    pub const fn name(self) -> &'static str {
        self.def().name
    }

    /// The attribute a KMIP 1.x name names, if Keyhold knows it.
    pub fn from_name(name: &str) -> Option<Self> {
        def_by_name(name).map(|d| d.attr)
    }
}

impl AttrDef {
    pub fn defined_in(&self, v: Version) -> bool {
        v >= self.since && self.until.is_none_or(|u| v < u)
    }
}

pub fn def_by_name(name: &str) -> Option<&'static AttrDef> {
    DEFS.iter().find(|d| d.name == name)
}

pub fn def_by_tag(tag: u32) -> Option<&'static AttrDef> {
    DEFS.iter().find(|d| d.tag == tag)
}

/// Custom (vendor) attributes: 1.x names starting "x-" (client) or "y-"
/// (server); 2.x Vendor Attributes with vendor "x"/"y" map to the same.
pub fn is_custom(name: &str) -> bool {
    name.starts_with("x-") || name.starts_with("y-")
}

/// Internal attributes (prefix `keyhold:`) are never shown to clients.
pub fn is_internal(name: &str) -> bool {
    name.starts_with("keyhold:")
}

pub fn to_stored(v: &Value) -> AttrValue {
    match v {
        Value::Structure(items) => {
            AttrValue::Struct(items.iter().map(|i| (i.tag, to_stored(&i.value))).collect())
        }
        Value::Integer(x) => AttrValue::Int(*x),
        Value::LongInteger(x) => AttrValue::Long(*x),
        Value::BigInteger(x) => AttrValue::BigInt(x.clone()),
        Value::Enumeration(x) => AttrValue::Enum(*x),
        Value::Boolean(x) => AttrValue::Bool(*x),
        Value::TextString(x) => AttrValue::Text(x.clone()),
        Value::ByteString(x) => AttrValue::Bytes(x.clone()),
        Value::DateTime(x) => AttrValue::DateTime(*x),
        Value::Interval(x) => AttrValue::Interval(*x),
        Value::DateTimeExtended(x) => AttrValue::DateTimeExt(*x),
    }
}

pub fn to_value(v: &AttrValue) -> Value {
    match v {
        AttrValue::Struct(items) => Value::Structure(
            items
                .iter()
                .map(|(tag, v)| Ttlv::new(*tag, to_value(v)))
                .collect(),
        ),
        AttrValue::Int(x) => Value::Integer(*x),
        AttrValue::Long(x) => Value::LongInteger(*x),
        AttrValue::BigInt(x) => Value::BigInteger(x.clone()),
        AttrValue::Enum(x) => Value::Enumeration(*x),
        AttrValue::Bool(x) => Value::Boolean(*x),
        AttrValue::Text(x) => Value::TextString(x.clone()),
        AttrValue::Bytes(x) => Value::ByteString(x.clone()),
        AttrValue::DateTime(x) => Value::DateTime(*x),
        AttrValue::Interval(x) => Value::Interval(*x),
        AttrValue::DateTimeExt(x) => Value::DateTimeExtended(*x),
    }
}

/// One attribute as a client sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    pub name: String,
    pub index: Option<i32>,
    pub value: Option<AttrValue>,
}

/// Parses a 1.x `Attribute` structure (name, optional index, value).
pub fn parse_v1_attribute(a: &Ttlv) -> Result<Incoming, KmipError> {
    let name = crate::message::text_of(a, t::ATTRIBUTE_NAME)?
        .ok_or_else(|| KmipError::invalid_message("an Attribute has no Attribute Name"))?;
    Ok(Incoming {
        name: name.to_owned(),
        index: crate::message::int_of(a, t::ATTRIBUTE_INDEX)?,
        value: a.child(t::ATTRIBUTE_VALUE).map(|v| to_stored(&v.value)),
    })
}

/// Parses one 2.x typed attribute (an item of an `Attributes` structure,
/// or the content of New/Current Attribute).
pub fn parse_v2_attribute(a: &Ttlv) -> Result<Incoming, KmipError> {
    if a.tag == t::ATTRIBUTE {
        let vendor = crate::message::text_of(a, t::VENDOR_IDENTIFICATION)?.unwrap_or("x");
        let name = crate::message::text_of(a, t::ATTRIBUTE_NAME)?
            .ok_or_else(|| KmipError::invalid_message("a Vendor Attribute has no name"))?;
        return Ok(Incoming {
            name: format!("{vendor}-{name}"),
            index: None,
            value: a.child(t::ATTRIBUTE_VALUE).map(|v| to_stored(&v.value)),
        });
    }
    let def = def_by_tag(a.tag).ok_or_else(|| {
        KmipError::new(
            crate::enums::Reason::InvalidField,
            format!(
                "{} is not an attribute Keyhold knows",
                t::name(a.tag).map_or_else(|| format!("tag {:#08x}", a.tag), str::to_owned)
            ),
        )
    })?;
    Ok(Incoming {
        name: def.name.to_owned(),
        index: None,
        value: Some(to_stored(&a.value)),
    })
}

/// The attributes of a Create/Register/Locate request: a 1.x Template-
/// Attribute (or bare Attribute items), or a 2.x Attributes structure.
pub fn parse_request_attributes(payload: &Ttlv) -> Result<Vec<Incoming>, KmipError> {
    let mut out = Vec::new();
    for ta in payload
        .children(t::TEMPLATE_ATTRIBUTE)
        .chain(payload.children(t::COMMON_TEMPLATE_ATTRIBUTE))
    {
        if ta.child(t::NAME).is_some() {
            return Err(KmipError::new(
                crate::enums::Reason::FeatureNotSupported,
                "templates (Template-Attribute Name) are not supported",
            ));
        }
        for a in ta.children(t::ATTRIBUTE) {
            out.push(parse_v1_attribute(a)?);
        }
    }
    for a in payload.children(t::ATTRIBUTE) {
        out.push(parse_v1_attribute(a)?);
    }
    for attrs in payload
        .children(t::ATTRIBUTES)
        .chain(payload.children(t::COMMON_ATTRIBUTES))
    {
        for a in attrs.items() {
            out.push(parse_v2_attribute(a)?);
        }
    }
    Ok(out)
}

/// How an attribute is named to a client of some version.
enum Shown<'a> {
    /// A custom attribute: vendor ("x"/"y") and name after the dash.
    Custom {
        vendor: &'a str,
        name: &'a str,
    },
    Known(&'static AttrDef),
}

/// How `name` is shown to a client of `version`; None when that version
/// does not define it, or it is internal.
fn shown(name: &str, version: Version) -> Option<Shown<'_>> {
    if is_internal(name) {
        return None;
    }
    if is_custom(name) {
        return Some(Shown::Custom {
            vendor: &name[..1],
            name: &name[2..],
        });
    }
    def_by_name(name)
        .filter(|d| d.defined_in(version))
        .map(Shown::Known)
}

/// Renders one attribute for a client of `version` (None: not defined in
/// that version, or internal).
pub fn render(name: &str, index: usize, value: &AttrValue, version: Version) -> Option<Ttlv> {
    let shown = shown(name, version)?;
    if version.is_v2() {
        return Some(match shown {
            Shown::Custom { vendor, name } => Ttlv::structure(
                t::ATTRIBUTE,
                vec![
                    Ttlv::text(t::VENDOR_IDENTIFICATION, vendor),
                    Ttlv::text(t::ATTRIBUTE_NAME, name),
                    Ttlv::new(t::ATTRIBUTE_VALUE, to_value(value)),
                ],
            ),
            Shown::Known(def) => Ttlv::new(def.tag, to_value(value)),
        });
    }
    let mut v = vec![Ttlv::text(t::ATTRIBUTE_NAME, name)];
    if index > 0 {
        v.push(Ttlv::int(t::ATTRIBUTE_INDEX, index as i32));
    }
    v.push(Ttlv::new(t::ATTRIBUTE_VALUE, to_value(value)));
    Some(Ttlv::structure(t::ATTRIBUTE, v))
}

/// A 2.x Attribute Reference names an attribute by its tag (Enumeration),
/// or a vendor attribute by a structure; 1.x names it by text.
pub fn reference_name(r: &Ttlv) -> Result<String, KmipError> {
    match &r.value {
        Value::TextString(s) => Ok(s.clone()),
        Value::Enumeration(tag) => def_by_tag(*tag)
            .map(|d| d.name.to_owned())
            .ok_or_else(|| KmipError::invalid_field(format!("tag {tag:#08x} is not an attribute"))),
        Value::Structure(_) => {
            let vendor = crate::message::text_of(r, t::VENDOR_IDENTIFICATION)?.unwrap_or("x");
            let name = crate::message::text_of(r, t::ATTRIBUTE_NAME)?
                .ok_or_else(|| KmipError::invalid_message("an Attribute Reference has no name"))?;
            Ok(format!("{vendor}-{name}"))
        }
        other => Err(KmipError::invalid_message(format!(
            "an attribute reference cannot be a {}",
            other.type_name()
        ))),
    }
}

/// Renders an attribute's reference (Get Attribute List) for `version`.
pub fn render_reference(name: &str, version: Version) -> Option<Ttlv> {
    let shown = shown(name, version)?;
    if !version.is_v2() {
        return Some(Ttlv::text(t::ATTRIBUTE_NAME, name));
    }
    Some(match shown {
        Shown::Custom { vendor, name } => Ttlv::structure(
            t::ATTRIBUTE_REFERENCE,
            vec![
                Ttlv::text(t::VENDOR_IDENTIFICATION, vendor),
                Ttlv::text(t::ATTRIBUTE_NAME, name),
            ],
        ),
        Shown::Known(def) => Ttlv::enumeration(t::ATTRIBUTE_REFERENCE, def.tag),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_by_version() {
        let v = AttrValue::Enum(3);
        let a1 = render("Cryptographic Algorithm", 0, &v, Version::new(1, 2)).unwrap();
        assert_eq!(a1.tag, t::ATTRIBUTE);
        let a2 = render("Cryptographic Algorithm", 0, &v, Version::new(2, 0)).unwrap();
        assert_eq!(a2, Ttlv::enumeration(t::CRYPTOGRAPHIC_ALGORITHM, 3));
        assert_eq!(
            parse_v2_attribute(&a2).unwrap().name,
            "Cryptographic Algorithm"
        );
        // Not defined before 1.4 / after 1.x.
        assert!(render("Extractable", 0, &AttrValue::Bool(true), Version::new(1, 1)).is_none());
        assert!(render(
            "Operation Policy Name",
            0,
            &AttrValue::Text("d".into()),
            Version::new(2, 0)
        )
        .is_none());
        assert!(render(
            "keyhold:grant",
            0,
            &AttrValue::Text("a".into()),
            Version::new(1, 4)
        )
        .is_none());
        // Custom attributes round-trip between versions.
        let c = render("x-app", 0, &AttrValue::Text("v".into()), Version::new(2, 1)).unwrap();
        assert_eq!(parse_v2_attribute(&c).unwrap().name, "x-app");
    }
}

#[cfg(test)]
mod attr_table_tests {
    use super::*;

    #[test]
    fn attrs_index_their_own_rows() {
        for d in DEFS {
            assert_eq!(d.attr.def().name, d.name);
            assert_eq!(Attr::from_name(d.name), Some(d.attr));
        }
    }

    /// The service's rules name the attributes they read; the names must be
    /// the table's.
    #[test]
    fn the_service_rules_use_the_table_names() {
        use keyhold_service::object_rules::attr as n;
        for (rule, attr) in [
            (n::ACTIVATION_DATE, Attr::ActivationDate),
            (n::DEACTIVATION_DATE, Attr::DeactivationDate),
            (n::PROTECT_STOP_DATE, Attr::ProtectStopDate),
            (n::PROCESS_START_DATE, Attr::ProcessStartDate),
            (n::USAGE_LIMITS, Attr::UsageLimits),
            (n::SENSITIVE, Attr::Sensitive),
            (n::USAGE_MASK, Attr::CryptographicUsageMask),
            (n::COMPROMISE_DATE, Attr::CompromiseDate),
            (
                n::COMPROMISE_OCCURRENCE_DATE,
                Attr::CompromiseOccurrenceDate,
            ),
            (n::DESTROY_DATE, Attr::DestroyDate),
        ] {
            assert_eq!(rule, attr.name());
        }
    }
}
