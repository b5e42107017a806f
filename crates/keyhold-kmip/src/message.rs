//! Request and response messages: headers, batch items, protocol versions.

use crate::enums::{result_status, Reason};
use crate::tags as t;
use crate::ttlv::{Ttlv, Value};

/// A KMIP protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: i32,
    pub minor: i32,
}

impl Version {
    pub const fn new(major: i32, minor: i32) -> Self {
        Self { major, minor }
    }

    pub fn is_v2(self) -> bool {
        self.major >= 2
    }

    pub fn at_least(self, major: i32, minor: i32) -> bool {
        self >= Version::new(major, minor)
    }

    pub fn to_ttlv(self) -> Ttlv {
        Ttlv::structure(
            t::PROTOCOL_VERSION,
            vec![
                Ttlv::int(t::PROTOCOL_VERSION_MAJOR, self.major),
                Ttlv::int(t::PROTOCOL_VERSION_MINOR, self.minor),
            ],
        )
    }

    pub fn from_ttlv(v: &Ttlv) -> Result<Self, KmipError> {
        let major = int_of(v, t::PROTOCOL_VERSION_MAJOR)?
            .ok_or_else(|| KmipError::invalid_message("Protocol Version Major is missing"))?;
        let minor = int_of(v, t::PROTOCOL_VERSION_MINOR)?.unwrap_or(0);
        Ok(Version { major, minor })
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The versions Keyhold speaks, most preferred first.
pub const SUPPORTED: &[Version] = &[
    Version::new(2, 1),
    Version::new(2, 0),
    Version::new(1, 4),
    Version::new(1, 3),
    Version::new(1, 2),
    Version::new(1, 1),
    Version::new(1, 0),
];

/// An operation's failure: the result reason and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmipError {
    pub reason: Reason,
    pub message: String,
}

impl KmipError {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }

    pub fn invalid_message(m: impl Into<String>) -> Self {
        Self::new(Reason::InvalidMessage, m)
    }

    pub fn invalid_field(m: impl Into<String>) -> Self {
        Self::new(Reason::InvalidField, m)
    }

    pub fn missing(m: impl Into<String>) -> Self {
        Self::new(Reason::MissingData, m)
    }
}

fn wrong_type(tag: u32, want: &str, got: &Value) -> KmipError {
    KmipError::invalid_message(format!(
        "{} must be {want}, not {}",
        t::name(tag).unwrap_or("field"),
        got.type_name()
    ))
}

/// The Integer child `tag` of `s`, if present (wrong type: Invalid Message).
pub fn int_of(s: &Ttlv, tag: u32) -> Result<Option<i32>, KmipError> {
    match s.child(tag).map(|c| &c.value) {
        None => Ok(None),
        Some(Value::Integer(v)) => Ok(Some(*v)),
        Some(v) => Err(wrong_type(tag, "an Integer", v)),
    }
}

pub fn enum_of(s: &Ttlv, tag: u32) -> Result<Option<u32>, KmipError> {
    match s.child(tag).map(|c| &c.value) {
        None => Ok(None),
        Some(Value::Enumeration(v)) => Ok(Some(*v)),
        Some(v) => Err(wrong_type(tag, "an Enumeration", v)),
    }
}

pub fn text_of(s: &Ttlv, tag: u32) -> Result<Option<&str>, KmipError> {
    match s.child(tag).map(|c| &c.value) {
        None => Ok(None),
        Some(Value::TextString(v)) => Ok(Some(v)),
        Some(v) => Err(wrong_type(tag, "a Text String", v)),
    }
}

pub fn bytes_of(s: &Ttlv, tag: u32) -> Result<Option<&[u8]>, KmipError> {
    match s.child(tag).map(|c| &c.value) {
        None => Ok(None),
        Some(Value::ByteString(v)) => Ok(Some(v)),
        Some(v) => Err(wrong_type(tag, "a Byte String", v)),
    }
}

pub fn bool_of(s: &Ttlv, tag: u32) -> Result<Option<bool>, KmipError> {
    match s.child(tag).map(|c| &c.value) {
        None => Ok(None),
        Some(Value::Boolean(v)) => Ok(Some(*v)),
        Some(v) => Err(wrong_type(tag, "a Boolean", v)),
    }
}

pub fn date_of(s: &Ttlv, tag: u32) -> Result<Option<i64>, KmipError> {
    match s.child(tag).map(|c| &c.value) {
        None => Ok(None),
        Some(Value::DateTime(v)) => Ok(Some(*v)),
        Some(Value::DateTimeExtended(v)) => Ok(Some(v.div_euclid(1_000_000))),
        Some(v) => Err(wrong_type(tag, "a Date-Time", v)),
    }
}

/// Batch Error Continuation Option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    Continue,
    Stop,
    Undo,
}

/// A parsed request header.
#[derive(Debug, Clone)]
pub struct RequestHeader {
    pub version: Version,
    pub max_response_size: Option<i32>,
    pub on_error: OnError,
    pub client_correlation: Option<String>,
    pub batch_count: i32,
}

/// One request batch item.
#[derive(Debug, Clone)]
pub struct RequestItem<'a> {
    pub operation: u32,
    pub id: Option<Vec<u8>>,
    pub payload: Option<&'a Ttlv>,
}

/// A parsed request message (borrowing the decoded TTLV).
#[derive(Debug)]
pub struct Request<'a> {
    pub header: RequestHeader,
    pub items: Vec<RequestItem<'a>>,
}

/// Reads the version of a request as early as possible, so that even a
/// request that fails to parse gets its answer in the client's version.
pub fn peek_version(root: &Ttlv) -> Option<Version> {
    let h = root.child(t::REQUEST_HEADER)?;
    Version::from_ttlv(h.child(t::PROTOCOL_VERSION)?).ok()
}

pub fn parse_request(root: &Ttlv) -> Result<Request<'_>, KmipError> {
    if root.tag != t::REQUEST_MESSAGE || !matches!(root.value, Value::Structure(_)) {
        return Err(KmipError::invalid_message(
            "the message is not a Request Message structure",
        ));
    }
    let h = root
        .child(t::REQUEST_HEADER)
        .ok_or_else(|| KmipError::invalid_message("Request Header is missing"))?;
    let version = Version::from_ttlv(
        h.child(t::PROTOCOL_VERSION)
            .ok_or_else(|| KmipError::invalid_message("Protocol Version is missing"))?,
    )?;
    let batch_count = int_of(h, t::BATCH_COUNT)?
        .ok_or_else(|| KmipError::invalid_message("Batch Count is missing"))?;
    let on_error = match enum_of(h, t::BATCH_ERROR_CONTINUATION_OPTION)? {
        None | Some(2) => OnError::Stop,
        Some(1) => OnError::Continue,
        Some(3) => OnError::Undo,
        Some(v) => {
            return Err(KmipError::invalid_field(format!(
                "Batch Error Continuation Option {v} is not defined"
            )))
        }
    };
    let header = RequestHeader {
        version,
        max_response_size: int_of(h, t::MAXIMUM_RESPONSE_SIZE)?,
        on_error,
        client_correlation: text_of(h, t::CLIENT_CORRELATION_VALUE)?.map(str::to_owned),
        batch_count,
    };
    let mut items = Vec::new();
    for b in root.children(t::BATCH_ITEM) {
        let operation = enum_of(b, t::OPERATION)?
            .ok_or_else(|| KmipError::invalid_message("a batch item has no Operation"))?;
        items.push(RequestItem {
            operation,
            id: bytes_of(b, t::UNIQUE_BATCH_ITEM_ID)?.map(<[u8]>::to_vec),
            payload: b.child(t::REQUEST_PAYLOAD),
        });
    }
    if items.is_empty() {
        return Err(KmipError::invalid_message("the request has no batch items"));
    }
    if items.len() != batch_count as usize {
        return Err(KmipError::invalid_message(format!(
            "Batch Count is {batch_count} but the request has {} batch items",
            items.len()
        )));
    }
    Ok(Request { header, items })
}

/// Builds a request message: one batch item per (operation, payload).
/// For clients of this crate: load generators, tests, fuzz targets.
pub fn request(version: Version, items: Vec<(u32, Vec<Ttlv>)>) -> Ttlv {
    let mut v = vec![Ttlv::structure(
        t::REQUEST_HEADER,
        vec![
            version.to_ttlv(),
            Ttlv::int(t::BATCH_COUNT, items.len() as i32),
        ],
    )];
    for (operation, payload) in items {
        v.push(Ttlv::structure(
            t::BATCH_ITEM,
            vec![
                Ttlv::enumeration(t::OPERATION, operation),
                Ttlv::structure(t::REQUEST_PAYLOAD, payload),
            ],
        ));
    }
    Ttlv::structure(t::REQUEST_MESSAGE, v)
}

/// One response batch item.
#[derive(Debug, Clone)]
pub struct ResponseItem {
    pub operation: Option<u32>,
    pub id: Option<Vec<u8>>,
    pub status: u32,
    pub reason: Option<Reason>,
    pub message: Option<String>,
    pub payload: Option<Ttlv>,
}

impl ResponseItem {
    pub fn success(operation: u32, id: Option<Vec<u8>>, payload: Vec<Ttlv>) -> Self {
        Self {
            operation: Some(operation),
            id,
            status: result_status::SUCCESS,
            reason: None,
            message: None,
            payload: Some(Ttlv::structure(t::RESPONSE_PAYLOAD, payload)),
        }
    }

    pub fn failure(operation: Option<u32>, id: Option<Vec<u8>>, e: &KmipError) -> Self {
        Self {
            operation,
            id,
            status: result_status::OPERATION_FAILED,
            reason: Some(e.reason),
            message: Some(e.message.clone()),
            payload: None,
        }
    }

    pub fn is_success(&self) -> bool {
        self.status == result_status::SUCCESS
    }

    fn to_ttlv(&self, version: Version) -> Ttlv {
        let mut v = Vec::with_capacity(6);
        if let Some(op) = self.operation {
            v.push(Ttlv::enumeration(t::OPERATION, op));
        }
        if let Some(id) = &self.id {
            v.push(Ttlv::bytes(t::UNIQUE_BATCH_ITEM_ID, id.clone()));
        }
        v.push(Ttlv::enumeration(t::RESULT_STATUS, self.status));
        if let Some(r) = self.reason {
            v.push(Ttlv::enumeration(
                t::RESULT_REASON,
                r.code(version.major, version.minor),
            ));
        }
        if let Some(m) = &self.message {
            v.push(Ttlv::text(t::RESULT_MESSAGE, m.clone()));
        }
        if let Some(p) = &self.payload {
            v.push(p.clone());
        }
        Ttlv::structure(t::BATCH_ITEM, v)
    }
}

/// Builds a response message.
pub fn response(version: Version, now: i64, items: &[ResponseItem]) -> Ttlv {
    let header = vec![
        version.to_ttlv(),
        Ttlv::date_time(t::TIME_STAMP, now),
        Ttlv::int(t::BATCH_COUNT, items.len() as i32),
    ];
    let mut v = vec![Ttlv::structure(t::RESPONSE_HEADER, header)];
    v.extend(items.iter().map(|i| i.to_ttlv(version)));
    Ttlv::structure(t::RESPONSE_MESSAGE, v)
}

/// The answer to bytes that could not be decoded or parsed at all.
pub fn error_response(version: Version, now: i64, e: &KmipError) -> Ttlv {
    response(version, now, &[ResponseItem::failure(None, None, e)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ttlv::Limits;

    fn req(version: (i32, i32), items: Vec<Ttlv>) -> Ttlv {
        let n = items.len() as i32;
        let mut v = vec![Ttlv::structure(
            t::REQUEST_HEADER,
            vec![
                Version::new(version.0, version.1).to_ttlv(),
                Ttlv::int(t::BATCH_COUNT, n),
            ],
        )];
        v.extend(items);
        Ttlv::structure(t::REQUEST_MESSAGE, v)
    }

    #[test]
    fn parses_a_batch_and_checks_the_count() {
        let m = req(
            (1, 2),
            vec![Ttlv::structure(
                t::BATCH_ITEM,
                vec![
                    Ttlv::enumeration(t::OPERATION, 0x1E),
                    Ttlv::structure(t::REQUEST_PAYLOAD, vec![]),
                ],
            )],
        );
        let bytes = m.encode();
        let back = Ttlv::decode(&bytes, &Limits::default()).unwrap();
        let r = parse_request(&back).unwrap();
        assert_eq!(r.header.version, Version::new(1, 2));
        assert_eq!(r.items[0].operation, 0x1E);
        let mut bad = req((1, 2), vec![]);
        if let Value::Structure(v) = &mut bad.value {
            v.push(Ttlv::structure(t::BATCH_ITEM, vec![]));
        }
        assert_eq!(
            parse_request(&bad).unwrap_err().reason,
            Reason::InvalidMessage
        );
    }

    #[test]
    fn error_reasons_follow_the_version() {
        let e = KmipError::new(Reason::WrongKeyLifecycleState, "no");
        let r1 = response(
            Version::new(1, 4),
            0,
            &[ResponseItem::failure(Some(10), None, &e)],
        );
        let r2 = response(
            Version::new(2, 1),
            0,
            &[ResponseItem::failure(Some(10), None, &e)],
        );
        let reason = |r: &Ttlv| {
            enum_of(r.child(t::BATCH_ITEM).unwrap(), t::RESULT_REASON)
                .unwrap()
                .unwrap()
        };
        assert_eq!(reason(&r1), 0x0C);
        assert_eq!(reason(&r2), 0x43);
        // Past the Protect Stop Date: Permission Denied up to 2.0.
        let e = KmipError::new(Reason::PastProtectStopDate, "no");
        let by = |v| reason(&response(v, 0, &[ResponseItem::failure(Some(2), None, &e)]));
        assert_eq!(
            [
                by(Version::new(1, 4)),
                by(Version::new(2, 0)),
                by(Version::new(2, 1))
            ],
            [0x0C, 0x0C, 0x43]
        );
    }
}
