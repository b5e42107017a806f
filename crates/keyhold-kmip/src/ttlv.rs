//! The KMIP Tag-Type-Length-Value encoding (KMIP 1.0–2.1, section 9.1 of
//! the 1.x specifications / 9.1 of 2.x).
//!
//! Every item is a 3-byte tag, a 1-byte type, a 4-byte big-endian length
//! and a value padded with zeros to a multiple of eight bytes. The decoder
//! checks every length against its type and against the bytes that are
//! really there, bounds nesting depth, and never allocates more than the
//! input could justify, so that a hostile peer can at worst make it return
//! an error.

use std::fmt;

/// Item types.
pub mod ty {
    pub const STRUCTURE: u8 = 0x01;
    pub const INTEGER: u8 = 0x02;
    pub const LONG_INTEGER: u8 = 0x03;
    pub const BIG_INTEGER: u8 = 0x04;
    pub const ENUMERATION: u8 = 0x05;
    pub const BOOLEAN: u8 = 0x06;
    pub const TEXT_STRING: u8 = 0x07;
    pub const BYTE_STRING: u8 = 0x08;
    pub const DATE_TIME: u8 = 0x09;
    pub const INTERVAL: u8 = 0x0A;
    pub const DATE_TIME_EXTENDED: u8 = 0x0B;
}

/// A decoded value.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    Structure(Vec<Ttlv>),
    Integer(i32),
    LongInteger(i64),
    /// Two's complement, big-endian, a multiple of eight bytes.
    BigInteger(Vec<u8>),
    Enumeration(u32),
    Boolean(bool),
    TextString(String),
    ByteString(Vec<u8>),
    /// Seconds since the Unix epoch.
    DateTime(i64),
    /// Seconds.
    Interval(u32),
    /// Microseconds since the Unix epoch (KMIP 2.0).
    DateTimeExtended(i64),
}

impl Value {
    pub fn type_byte(&self) -> u8 {
        match self {
            Value::Structure(_) => ty::STRUCTURE,
            Value::Integer(_) => ty::INTEGER,
            Value::LongInteger(_) => ty::LONG_INTEGER,
            Value::BigInteger(_) => ty::BIG_INTEGER,
            Value::Enumeration(_) => ty::ENUMERATION,
            Value::Boolean(_) => ty::BOOLEAN,
            Value::TextString(_) => ty::TEXT_STRING,
            Value::ByteString(_) => ty::BYTE_STRING,
            Value::DateTime(_) => ty::DATE_TIME,
            Value::Interval(_) => ty::INTERVAL,
            Value::DateTimeExtended(_) => ty::DATE_TIME_EXTENDED,
        }
    }

    pub fn type_name(&self) -> &'static str {
        type_name(self.type_byte())
    }
}

pub fn type_name(t: u8) -> &'static str {
    match t {
        ty::STRUCTURE => "Structure",
        ty::INTEGER => "Integer",
        ty::LONG_INTEGER => "LongInteger",
        ty::BIG_INTEGER => "BigInteger",
        ty::ENUMERATION => "Enumeration",
        ty::BOOLEAN => "Boolean",
        ty::TEXT_STRING => "TextString",
        ty::BYTE_STRING => "ByteString",
        ty::DATE_TIME => "DateTime",
        ty::INTERVAL => "Interval",
        ty::DATE_TIME_EXTENDED => "DateTimeExtended",
        _ => "Unknown",
    }
}

// Byte strings may hold key material: never print their contents.
impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Structure(items) => f.debug_list().entries(items).finish(),
            Value::Integer(v) => write!(f, "Integer({v})"),
            Value::LongInteger(v) => write!(f, "LongInteger({v})"),
            Value::BigInteger(v) => write!(f, "BigInteger({} bytes)", v.len()),
            Value::Enumeration(v) => write!(f, "Enumeration({v:#x})"),
            Value::Boolean(v) => write!(f, "Boolean({v})"),
            Value::TextString(v) => write!(f, "TextString({v:?})"),
            Value::ByteString(v) => write!(f, "ByteString({} bytes)", v.len()),
            Value::DateTime(v) => write!(f, "DateTime({v})"),
            Value::Interval(v) => write!(f, "Interval({v})"),
            Value::DateTimeExtended(v) => write!(f, "DateTimeExtended({v})"),
        }
    }
}

/// One tagged item.
#[derive(Clone, PartialEq, Eq)]
pub struct Ttlv {
    pub tag: u32,
    pub value: Value,
}

impl fmt::Debug for Ttlv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match crate::tags::name(self.tag) {
            Some(n) => write!(f, "{n} {:?}", self.value),
            None => write!(f, "{:#08x} {:?}", self.tag, self.value),
        }
    }
}

/// Why bytes are not a well-formed TTLV item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed TTLV at byte {offset}: {what}")]
pub struct DecodeError {
    pub offset: usize,
    pub what: String,
}

/// Bounds on what the decoder accepts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest whole item, header included.
    pub max_len: usize,
    /// Deepest nesting of structures (the outermost is depth 1).
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_len: 1 << 20,
            max_depth: 24,
        }
    }
}

pub const HEADER_LEN: usize = 8;

/// Reads an item header: (tag, type, length of the value before padding).
pub fn read_header(b: &[u8; HEADER_LEN]) -> (u32, u8, u32) {
    let tag = u32::from_be_bytes([0, b[0], b[1], b[2]]);
    let len = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
    (tag, b[3], len)
}

/// The bytes a value of `len` occupies once padded.
pub fn padded(len: usize) -> usize {
    len.div_ceil(8) * 8
}

impl Ttlv {
    pub fn new(tag: u32, value: Value) -> Self {
        Self { tag, value }
    }

    pub fn structure(tag: u32, items: Vec<Ttlv>) -> Self {
        Self::new(tag, Value::Structure(items))
    }

    pub fn int(tag: u32, v: i32) -> Self {
        Self::new(tag, Value::Integer(v))
    }

    pub fn long(tag: u32, v: i64) -> Self {
        Self::new(tag, Value::LongInteger(v))
    }

    pub fn enumeration(tag: u32, v: u32) -> Self {
        Self::new(tag, Value::Enumeration(v))
    }

    pub fn boolean(tag: u32, v: bool) -> Self {
        Self::new(tag, Value::Boolean(v))
    }

    pub fn text(tag: u32, v: impl Into<String>) -> Self {
        Self::new(tag, Value::TextString(v.into()))
    }

    pub fn bytes(tag: u32, v: impl Into<Vec<u8>>) -> Self {
        Self::new(tag, Value::ByteString(v.into()))
    }

    pub fn date_time(tag: u32, v: i64) -> Self {
        Self::new(tag, Value::DateTime(v))
    }

    pub fn interval(tag: u32, v: u32) -> Self {
        Self::new(tag, Value::Interval(v))
    }

    /// The children of a structure (empty for any other type).
    pub fn items(&self) -> &[Ttlv] {
        match &self.value {
            Value::Structure(v) => v,
            _ => &[],
        }
    }

    /// The first child with `tag`.
    pub fn child(&self, tag: u32) -> Option<&Ttlv> {
        self.items().iter().find(|i| i.tag == tag)
    }

    /// Every child with `tag`.
    pub fn children(&self, tag: u32) -> impl Iterator<Item = &Ttlv> {
        self.items().iter().filter(move |i| i.tag == tag)
    }

    /// Decodes exactly one item that fills `buf`.
    pub fn decode(buf: &[u8], limits: &Limits) -> Result<Ttlv, DecodeError> {
        if buf.len() > limits.max_len {
            return Err(DecodeError {
                offset: 0,
                what: format!(
                    "message of {} bytes is larger than the limit of {}",
                    buf.len(),
                    limits.max_len
                ),
            });
        }
        let mut d = Decoder {
            buf,
            limits,
            pos: 0,
        };
        let item = d.item(1)?;
        if d.pos != buf.len() {
            return Err(DecodeError {
                offset: d.pos,
                what: format!("{} bytes follow the item", buf.len() - d.pos),
            });
        }
        Ok(item)
    }

    /// Encodes the item.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// The length of the encoded item, header and padding included.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + padded(self.value_len())
    }

    fn value_len(&self) -> usize {
        match &self.value {
            Value::Structure(items) => items.iter().map(Ttlv::encoded_len).sum(),
            Value::Integer(_) | Value::Enumeration(_) | Value::Interval(_) => 4,
            Value::LongInteger(_)
            | Value::Boolean(_)
            | Value::DateTime(_)
            | Value::DateTimeExtended(_) => 8,
            Value::BigInteger(b) => padded(b.len()),
            Value::TextString(s) => s.len(),
            Value::ByteString(b) => b.len(),
        }
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let len = self.value_len();
        out.extend_from_slice(&self.tag.to_be_bytes()[1..]);
        out.push(self.value.type_byte());
        out.extend_from_slice(&(len as u32).to_be_bytes());
        let start = out.len();
        match &self.value {
            Value::Structure(items) => {
                for i in items {
                    i.encode_into(out);
                }
            }
            Value::Integer(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::Enumeration(v) | Value::Interval(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::LongInteger(v) | Value::DateTime(v) | Value::DateTimeExtended(v) => {
                out.extend_from_slice(&v.to_be_bytes())
            }
            Value::Boolean(v) => out.extend_from_slice(&u64::from(*v).to_be_bytes()),
            Value::BigInteger(b) => {
                // Sign-extend on the left to a multiple of eight bytes.
                let fill = if b.first().is_some_and(|x| x & 0x80 != 0) {
                    0xff
                } else {
                    0
                };
                out.resize(out.len() + (padded(b.len()) - b.len()), fill);
                out.extend_from_slice(b);
            }
            Value::TextString(s) => out.extend_from_slice(s.as_bytes()),
            Value::ByteString(b) => out.extend_from_slice(b),
        }
        let written = out.len() - start;
        out.resize(start + padded(written), 0);
    }
}

struct Decoder<'a> {
    buf: &'a [u8],
    limits: &'a Limits,
    pos: usize,
}

impl Decoder<'_> {
    fn err(&self, offset: usize, what: impl Into<String>) -> DecodeError {
        DecodeError {
            offset,
            what: what.into(),
        }
    }

    fn item(&mut self, depth: usize) -> Result<Ttlv, DecodeError> {
        let at = self.pos;
        let Some(h) = self.buf.get(at..at + HEADER_LEN) else {
            return Err(self.err(at, "truncated item header"));
        };
        let h: &[u8; HEADER_LEN] = h.try_into().expect("8 bytes");
        let (tag, t, len) = read_header(h);
        let len = len as usize;
        if tag >> 16 != 0x42 && tag >> 16 != 0x54 {
            return Err(self.err(at, format!("tag {tag:#08x} is outside the KMIP ranges")));
        }
        let body = at + HEADER_LEN;
        let end = body
            .checked_add(padded(len))
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                self.err(
                    at,
                    format!(
                        "item claims {len} bytes but only {} remain",
                        self.buf.len().saturating_sub(body)
                    ),
                )
            })?;
        let fixed = |want: usize| -> Result<&[u8], DecodeError> {
            if len != want {
                return Err(self.err(
                    at,
                    format!("{} of length {len} (must be {want})", type_name(t)),
                ));
            }
            Ok(&self.buf[body..body + want])
        };
        let value = match t {
            ty::STRUCTURE => {
                if depth > self.limits.max_depth {
                    return Err(self.err(
                        at,
                        format!("structures nested deeper than {}", self.limits.max_depth),
                    ));
                }
                if !len.is_multiple_of(8) {
                    return Err(self.err(at, "structure length is not a multiple of 8"));
                }
                self.pos = body;
                let mut items = Vec::new();
                while self.pos < end {
                    let child = self.item(depth + 1)?;
                    if self.pos > end {
                        return Err(self.err(at, "a member runs past the end of its structure"));
                    }
                    items.push(child);
                }
                Value::Structure(items)
            }
            ty::INTEGER => Value::Integer(i32::from_be_bytes(fixed(4)?.try_into().expect("4"))),
            ty::ENUMERATION => {
                Value::Enumeration(u32::from_be_bytes(fixed(4)?.try_into().expect("4")))
            }
            ty::INTERVAL => Value::Interval(u32::from_be_bytes(fixed(4)?.try_into().expect("4"))),
            ty::LONG_INTEGER => {
                Value::LongInteger(i64::from_be_bytes(fixed(8)?.try_into().expect("8")))
            }
            ty::DATE_TIME => Value::DateTime(i64::from_be_bytes(fixed(8)?.try_into().expect("8"))),
            ty::DATE_TIME_EXTENDED => {
                Value::DateTimeExtended(i64::from_be_bytes(fixed(8)?.try_into().expect("8")))
            }
            ty::BOOLEAN => match u64::from_be_bytes(fixed(8)?.try_into().expect("8")) {
                0 => Value::Boolean(false),
                1 => Value::Boolean(true),
                v => return Err(self.err(at, format!("boolean value {v} is neither 0 nor 1"))),
            },
            ty::BIG_INTEGER => {
                if !len.is_multiple_of(8) {
                    return Err(self.err(at, "big integer length is not a multiple of 8"));
                }
                Value::BigInteger(self.buf[body..body + len].to_vec())
            }
            ty::TEXT_STRING => match std::str::from_utf8(&self.buf[body..body + len]) {
                Ok(s) => Value::TextString(s.to_owned()),
                Err(_) => return Err(self.err(at, "text string is not UTF-8")),
            },
            ty::BYTE_STRING => Value::ByteString(self.buf[body..body + len].to_vec()),
            other => return Err(self.err(at, format!("unknown item type {other:#04x}"))),
        };
        self.pos = end;
        Ok(Ttlv { tag, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s.replace([' ', '|', '\n'], "")).unwrap()
    }

    // The encoding examples of the KMIP 1.x specification, section 9.1.2
    // (tag 42 00 20 "Compromise Date" reused for every type, as the
    // specification's examples do).
    #[test]
    fn specification_examples() {
        let cases: Vec<(Ttlv, &str)> = vec![
            (
                Ttlv::int(0x420020, 8),
                "42 00 20 | 02 | 00 00 00 04 | 00 00 00 08 00 00 00 00",
            ),
            (
                Ttlv::long(0x420020, 123456789000000000),
                "42 00 20 | 03 | 00 00 00 08 | 01 B6 9B 4B A5 74 92 00",
            ),
            (
                Ttlv::new(
                    0x420020,
                    Value::BigInteger(hex("03FD35EB6BC2DF4618080000")),
                ),
                "42 00 20 | 04 | 00 00 00 10 | 00 00 00 00 03 FD 35 EB 6B C2 DF 46 18 08 00 00",
            ),
            (
                Ttlv::enumeration(0x420020, 255),
                "42 00 20 | 05 | 00 00 00 04 | 00 00 00 FF 00 00 00 00",
            ),
            (
                Ttlv::boolean(0x420020, true),
                "42 00 20 | 06 | 00 00 00 08 | 00 00 00 00 00 00 00 01",
            ),
            (
                Ttlv::text(0x420020, "Hello World"),
                "42 00 20 | 07 | 00 00 00 0B | 48 65 6C 6C 6F 20 57 6F 72 6C 64 00 00 00 00 00",
            ),
            (
                Ttlv::bytes(0x420020, vec![1, 2, 3]),
                "42 00 20 | 08 | 00 00 00 03 | 01 02 03 00 00 00 00 00",
            ),
            (
                Ttlv::date_time(0x420020, 0x47DA67F8),
                "42 00 20 | 09 | 00 00 00 08 | 00 00 00 00 47 DA 67 F8",
            ),
            (
                Ttlv::interval(0x420020, 864000),
                "42 00 20 | 0A | 00 00 00 04 | 00 0D 2F 00 00 00 00 00",
            ),
            (
                Ttlv::structure(
                    0x420020,
                    vec![
                        Ttlv::enumeration(0x420004, 254),
                        Ttlv::int(0x420005, 255),
                    ],
                ),
                "42 00 20 | 01 | 00 00 00 20 | 42 00 04 | 05 | 00 00 00 04 | 00 00 00 FE 00 00 00 00 | 42 00 05 | 02 | 00 00 00 04 | 00 00 00 FF 00 00 00 00",
            ),
        ];
        for (item, bytes) in cases {
            let want = hex(bytes);
            assert_eq!(item.encode(), want, "{item:?}");
            let back = Ttlv::decode(&want, &Limits::default()).unwrap();
            if let Value::BigInteger(b) = &item.value {
                // The decoder keeps the padded (sign-extended) form.
                assert_eq!(
                    back.value,
                    Value::BigInteger(hex("00000000").into_iter().chain(b.clone()).collect())
                );
            } else {
                assert_eq!(back, item);
            }
        }
    }

    fn err(bytes: &[u8]) -> String {
        Ttlv::decode(bytes, &Limits::default()).unwrap_err().what
    }

    #[test]
    fn rejects_what_is_not_there() {
        assert!(err(&hex("42 00 20 02 00 00")).contains("truncated"));
        // Integer with the wrong length.
        assert!(err(&hex("42 00 20 02 00 00 00 08 00 00 00 08 00 00 00 00")).contains("must be 4"));
        // A text string that claims more than is there.
        assert!(err(&hex("42 00 20 07 00 00 00 20 48 65 6C 6C 6F 00 00 00")).contains("remain"));
        // A 100 MB claim.
        assert!(err(&hex("42 00 78 01 06 40 00 00 00 00 00 00 00 00 00 00")).contains("remain"));
        // Unknown type.
        assert!(err(&hex("42 00 20 0F 00 00 00 00")).contains("unknown item type"));
        // Boolean 2.
        assert!(err(&hex("42 00 20 06 00 00 00 08 00 00 00 00 00 00 00 02")).contains("neither"));
        // Trailing bytes.
        assert!(err(&hex("42 00 20 02 00 00 00 04 00 00 00 08 00 00 00 00 00")).contains("follow"));
        // Tag outside 0x42xxxx / 0x54xxxx.
        assert!(err(&hex("00 00 20 02 00 00 00 04 00 00 00 08 00 00 00 00")).contains("outside"));
        // A structure whose member runs past its end.
        assert!(err(&hex(
            "42 00 20 01 00 00 00 08 42 00 04 02 00 00 00 04 00 00 00 01 00 00 00 00"
        ))
        .contains("past the end"));
        // Not UTF-8.
        assert!(err(&hex("42 00 20 07 00 00 00 01 FF 00 00 00 00 00 00 00")).contains("UTF-8"));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut item = Ttlv::int(0x420020, 1);
        for _ in 0..100 {
            item = Ttlv::structure(0x420020, vec![item]);
        }
        assert!(err(&item.encode()).contains("nested deeper"));
        let mut ok = Ttlv::int(0x420020, 1);
        for _ in 0..10 {
            ok = Ttlv::structure(0x420020, vec![ok]);
        }
        assert_eq!(Ttlv::decode(&ok.encode(), &Limits::default()).unwrap(), ok);
    }

    fn arb_ttlv() -> impl Strategy<Value = Ttlv> {
        let tag = 0x420001u32..0x420170;
        let leaf = prop_oneof![
            any::<i32>().prop_map(Value::Integer),
            any::<i64>().prop_map(Value::LongInteger),
            proptest::collection::vec(any::<u8>(), 0..4)
                .prop_map(|v| Value::BigInteger(v.into_iter().flat_map(|b| [b; 8]).collect())),
            any::<u32>().prop_map(Value::Enumeration),
            any::<bool>().prop_map(Value::Boolean),
            ".{0,40}".prop_map(Value::TextString),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::ByteString),
            any::<i64>().prop_map(Value::DateTime),
            any::<u32>().prop_map(Value::Interval),
            any::<i64>().prop_map(Value::DateTimeExtended),
        ];
        let leaf = (tag.clone(), leaf).prop_map(|(tag, value)| Ttlv { tag, value });
        leaf.prop_recursive(5, 64, 8, move |inner| {
            (
                0x420001u32..0x420170,
                proptest::collection::vec(inner, 0..8),
            )
                .prop_map(|(tag, items)| Ttlv::structure(tag, items))
        })
    }

    proptest! {
        #[test]
        fn round_trips(item in arb_ttlv()) {
            let bytes = item.encode();
            prop_assert_eq!(bytes.len(), item.encoded_len());
            prop_assert_eq!(bytes.len() % 8, 0);
            prop_assert_eq!(Ttlv::decode(&bytes, &Limits::default()).unwrap(), item);
        }

        #[test]
        fn never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Ttlv::decode(&bytes, &Limits::default());
        }

        #[test]
        fn never_panics_on_mutations(item in arb_ttlv(), at in any::<usize>(), byte in any::<u8>()) {
            let mut bytes = item.encode();
            let i = at % bytes.len();
            bytes[i] = byte;
            let _ = Ttlv::decode(&bytes, &Limits::default());
            bytes.truncate(i);
            let _ = Ttlv::decode(&bytes, &Limits::default());
        }
    }
}
