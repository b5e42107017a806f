//! Keyhold's tamper-evident audit log.
//!
//! * One [`Record`] per key use or admin action: who, what, when, outcome,
//!   and every field of the XKS `requestMetadata` — never plaintext, AAD,
//!   key material or secrets.
//! * Records form chains (one per writer: the server, the admin CLI). Each
//!   line carries the MAC of the one before (`prev`) and its own MAC, an
//!   HMAC-SHA256 under an audit key held by the root of trust, over exactly
//!   the bytes of the line. Editing, deleting, inserting or reordering
//!   records breaks the chain.
//! * Deleting the newest records leaves a valid shorter chain: periodic
//!   [`Checkpoint`]s (chain head, record count, time; MAC'd) are written to
//!   a second place (the key database, optionally a file on another
//!   volume), and verification compares the log against them.
//! * Files rotate by size; retention removes the oldest files and records a
//!   MAC'd marker, so verification still accounts for every record.

mod chain;
mod log;
mod refusals;
mod ship;
mod verify;

pub use chain::{
    AuditLogConfig, ChainWriter, CheckpointHistory, CheckpointSink, KIND_CHECKPOINT, KIND_RESERVE,
    KIND_STOP, UNCLEAN_START,
};
pub use log::{AuditLog, AuditStatus};
pub use refusals::RefusalBudget;
pub use ship::ChainTail;
pub use verify::{query, read_all, verify, verify_with, Filter, Shipped, VerifyReport};

use keyhold_crypto::HmacKey;
use serde::{Deserialize, Serialize};

/// One audited event. Field order is the line's byte order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub ts_ms: i64,
    pub chain: String,
    /// `xks`, `admin` (later `kmip`).
    pub frontend: String,
    pub operation: String,
    /// `OK`, or the error name.
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_version: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<u64>,
    /// Who: the SigV4 access key id, the admin's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_operation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_via_service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_source_vpc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_source_vpce: Option<String>,
    /// The caller's own request or correlation id (front-ends other than
    /// XKS: Azure's `correlation_id`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The caller's request context in its front-end's words (Azure's
    /// `request_context`, a KACLS `reason`, …): logged, never trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// The policy rule that decided, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Anything else worth knowing (a compromised version used, the admin
    /// command's arguments, a failure's message). Never secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// MAC of the previous record in the chain (hex; zeros for the first).
    #[serde(default)]
    pub prev: String,
}

/// A signed statement about a chain (stored by the key database).
pub type Checkpoint = keyhold_core::AuditCheckpoint;

/// Signing and checking [`Checkpoint`]s.
pub trait CheckpointMac: Sized {
    fn new(key: &HmacKey, chain: &str, kind: &str, seq: u64, head: &str, ts_ms: i64) -> Self;
    /// Whether the checkpoint's MAC is right.
    fn is_authentic(&self, key: &HmacKey) -> bool;
}

const LINE_DOMAIN: &[u8] = b"keyhold-audit-line-v1\0";
const CHECKPOINT_DOMAIN: &[u8] = b"keyhold-audit-checkpoint-v1\0";
/// `,"mac":"` + 64 hex digits + `"}`.
const MAC_SUFFIX_LEN: usize = 8 + 64 + 2;

/// The zero MAC that precedes a chain's first record.
pub fn genesis() -> String {
    "0".repeat(64)
}

/// What a front-end says about one event, borrowed from the request: the
/// fields of a [`Record`] from `frontend` to `detail`, in its byte order.
/// The chain writer adds `seq`, `ts_ms`, `chain` and `prev`. Encoding
/// this ([`encode_event`]) instead of building a [`Record`] keeps the
/// request path free of allocations; the line is still byte for byte the
/// `Record`'s JSON (property test `lines_are_the_records_json_whatever_they_hold`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Event<'a> {
    pub frontend: &'a str,
    pub operation: &'a str,
    pub result: &'a str,
    pub status: Option<u16>,
    pub store: Option<&'a str>,
    pub key: Option<&'a str>,
    pub key_version: Option<u32>,
    pub latency_us: Option<u64>,
    pub actor: Option<&'a str>,
    pub principal: Option<&'a str>,
    pub kms_operation: Option<&'a str>,
    pub kms_request_id: Option<&'a str>,
    pub kms_key_arn: Option<&'a str>,
    pub kms_via_service: Option<&'a str>,
    pub aws_source_vpc: Option<&'a str>,
    pub aws_source_vpce: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub context: Option<&'a str>,
    pub rule: Option<&'a str>,
    pub detail: Option<&'a str>,
}

impl Record {
    /// The record's event fields, borrowed.
    pub fn event(&self) -> Event<'_> {
        Event {
            frontend: &self.frontend,
            operation: &self.operation,
            result: &self.result,
            status: self.status,
            store: self.store.as_deref(),
            key: self.key.as_deref(),
            key_version: self.key_version,
            latency_us: self.latency_us,
            actor: self.actor.as_deref(),
            principal: self.principal.as_deref(),
            kms_operation: self.kms_operation.as_deref(),
            kms_request_id: self.kms_request_id.as_deref(),
            kms_key_arn: self.kms_key_arn.as_deref(),
            kms_via_service: self.kms_via_service.as_deref(),
            aws_source_vpc: self.aws_source_vpc.as_deref(),
            aws_source_vpce: self.aws_source_vpce.as_deref(),
            request_id: self.request_id.as_deref(),
            context: self.context.as_deref(),
            rule: self.rule.as_deref(),
            detail: self.detail.as_deref(),
        }
    }
}

/// Appends `ev` as JSON to `out`, byte for byte as serde writes it;
/// returns where its fields (the object without its braces) start and end.
/// Written out by hand: this runs once per request, and the strings almost
/// never need escaping.
pub(crate) fn encode_event(ev: &Event<'_>, out: &mut Vec<u8>) -> (usize, usize) {
    let start = out.len();
    out.extend_from_slice(b"{\"frontend\":");
    json_str(out, ev.frontend);
    out.extend_from_slice(b",\"operation\":");
    json_str(out, ev.operation);
    out.extend_from_slice(b",\"result\":");
    json_str(out, ev.result);
    if let Some(v) = ev.status {
        out.extend_from_slice(b",\"status\":");
        out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }
    opt_str(out, b",\"store\":", ev.store);
    opt_str(out, b",\"key\":", ev.key);
    if let Some(v) = ev.key_version {
        out.extend_from_slice(b",\"key_version\":");
        out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }
    if let Some(v) = ev.latency_us {
        out.extend_from_slice(b",\"latency_us\":");
        out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }
    opt_str(out, b",\"actor\":", ev.actor);
    opt_str(out, b",\"principal\":", ev.principal);
    opt_str(out, b",\"kms_operation\":", ev.kms_operation);
    opt_str(out, b",\"kms_request_id\":", ev.kms_request_id);
    opt_str(out, b",\"kms_key_arn\":", ev.kms_key_arn);
    opt_str(out, b",\"kms_via_service\":", ev.kms_via_service);
    opt_str(out, b",\"aws_source_vpc\":", ev.aws_source_vpc);
    opt_str(out, b",\"aws_source_vpce\":", ev.aws_source_vpce);
    opt_str(out, b",\"request_id\":", ev.request_id);
    opt_str(out, b",\"context\":", ev.context);
    opt_str(out, b",\"rule\":", ev.rule);
    opt_str(out, b",\"detail\":", ev.detail);
    out.push(b'}');
    (start + 1, out.len() - 1)
}

fn opt_str(out: &mut Vec<u8>, key: &[u8], v: Option<&str>) {
    if let Some(v) = v {
        out.extend_from_slice(key);
        json_str(out, v);
    }
}

/// A JSON string as serde_json writes it: only `"`, `\\` and control
/// characters are escaped (serde_json does those).
fn json_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(&mut *out, s).expect("strings always serialise");
    }
}

/// The parts of one line besides the event's fields.
pub(crate) struct LineHead<'a> {
    pub seq: u64,
    pub ts_ms: i64,
    pub chain: &'a str,
    pub prev: &'a str,
}

/// Appends one MAC'd line, newline included, to `out`: the JSON of the
/// [`Record`] made of `head` and the event `fields` (as [`encode_event`]
/// wrote them), then the MAC. Returns the MAC.
pub(crate) fn seal_fields_into(
    key: &HmacKey,
    head: &LineHead<'_>,
    fields: &[u8],
    out: &mut Vec<u8>,
) -> [u8; 32] {
    let start = out.len();
    out.extend_from_slice(b"{\"seq\":");
    out.extend_from_slice(itoa::Buffer::new().format(head.seq).as_bytes());
    out.extend_from_slice(b",\"ts_ms\":");
    out.extend_from_slice(itoa::Buffer::new().format(head.ts_ms).as_bytes());
    out.extend_from_slice(b",\"chain\":");
    serde_json::to_writer(&mut *out, head.chain).expect("strings always serialise");
    out.push(b',');
    out.extend_from_slice(fields);
    out.extend_from_slice(b",\"prev\":");
    serde_json::to_writer(&mut *out, head.prev).expect("strings always serialise");
    out.push(b'}');
    let mac = line_mac(key, &out[start..]);
    out.pop(); // the closing brace
    out.extend_from_slice(b",\"mac\":\"");
    let at = out.len();
    out.resize(at + 64, 0);
    hex::encode_to_slice(mac, &mut out[at..]).expect("64 hex digits");
    out.extend_from_slice(b"\"}\n");
    mac
}

/// Encodes `rec` (whose `prev` is set) as one line without newline, MAC'd.
/// Returns the line and its MAC (hex).
pub fn seal_line(key: &HmacKey, rec: &Record) -> (String, String) {
    let mut out = Vec::with_capacity(512);
    let mac = seal_line_into(key, rec, &mut out);
    out.pop(); // the newline
    (
        String::from_utf8(out).expect("JSON is UTF-8"),
        hex::encode(mac),
    )
}

/// Appends `rec`'s line, newline included, to `out`; returns its MAC.
pub fn seal_line_into(key: &HmacKey, rec: &Record, out: &mut Vec<u8>) -> [u8; 32] {
    let mut fields = Vec::with_capacity(512);
    let (a, b) = encode_event(&rec.event(), &mut fields);
    let head = LineHead {
        seq: rec.seq,
        ts_ms: rec.ts_ms,
        chain: &rec.chain,
        prev: &rec.prev,
    };
    seal_fields_into(key, &head, &fields[a..b], out)
}

fn line_mac(key: &HmacKey, body: &[u8]) -> [u8; 32] {
    key.sign_parts(&[LINE_DOMAIN, body])
}

/// Checks a line's MAC over its exact bytes and parses it. Returns the
/// record and its MAC (hex).
pub fn open_line(key: &HmacKey, line: &str) -> Result<(Record, String), String> {
    let bytes = line.as_bytes();
    if bytes.len() < MAC_SUFFIX_LEN + 2 || !line.ends_with("\"}") {
        return Err("not an audit record".into());
    }
    let split = bytes.len() - MAC_SUFFIX_LEN;
    let (head, suffix) = line.split_at(split);
    let mac = suffix
        .strip_prefix(",\"mac\":\"")
        .and_then(|s| s.strip_suffix("\"}"))
        .filter(|m| m.len() == 64 && m.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or("no MAC at the end of the record")?;
    let mut body = String::with_capacity(head.len() + 1);
    body.push_str(head);
    body.push('}');
    let want = line_mac(key, body.as_bytes());
    let got = hex::decode(mac).map_err(|_| "bad MAC encoding")?;
    if !keyhold_crypto::ct_eq(&want, &got) {
        return Err("MAC does not match: the record was altered".into());
    }
    let rec: Record = serde_json::from_str(&body).map_err(|e| format!("bad record: {e}"))?;
    Ok((rec, mac.to_owned()))
}

fn checkpoint_mac_input(chain: &str, kind: &str, seq: u64, head: &str, ts_ms: i64) -> Vec<u8> {
    let mut v = CHECKPOINT_DOMAIN.to_vec();
    v.extend_from_slice(format!("{chain}\0{kind}\0{seq}\0{head}\0{ts_ms}").as_bytes());
    v
}

impl CheckpointMac for Checkpoint {
    fn new(key: &HmacKey, chain: &str, kind: &str, seq: u64, head: &str, ts_ms: i64) -> Self {
        let mac = hex::encode(key.sign(&checkpoint_mac_input(chain, kind, seq, head, ts_ms)));
        Self {
            chain: chain.to_owned(),
            kind: kind.to_owned(),
            seq,
            head: head.to_owned(),
            ts_ms,
            mac,
        }
    }

    fn is_authentic(&self, key: &HmacKey) -> bool {
        let want = key.sign(&checkpoint_mac_input(
            &self.chain,
            &self.kind,
            self.seq,
            &self.head,
            self.ts_ms,
        ));
        hex::decode(&self.mac).is_ok_and(|m| keyhold_crypto::ct_eq(&want, &m))
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The line is the JSON of the whole record, as serde writes it: the
    /// encoder that splices the event's fields between the chain's parts
    /// must not drift from [`Record`]'s field order or escaping.
    #[test]
    fn lines_are_the_records_json() {
        let k = HmacKey::new(&[7; 32]);
        let s = |t: &str| Some(format!("{t} \"q\" \\ \u{1}é"));
        let full = Record {
            seq: u64::MAX,
            ts_ms: -5,
            chain: "xks@node \"1\"".into(),
            frontend: "xks".into(),
            operation: "Encrypt".into(),
            result: "OK".into(),
            status: Some(200),
            store: s("store"),
            key: s("key"),
            key_version: Some(7),
            latency_us: Some(12),
            actor: s("actor"),
            principal: s("principal"),
            kms_operation: s("op"),
            kms_request_id: s("rid"),
            kms_key_arn: s("arn"),
            kms_via_service: s("via"),
            aws_source_vpc: s("vpc"),
            aws_source_vpce: s("vpce"),
            request_id: s("req"),
            context: s("ctx"),
            rule: s("rule"),
            detail: s("detail"),
            prev: genesis(),
        };
        let sparse = Record {
            seq: 1,
            chain: "admin".into(),
            frontend: "admin".into(),
            operation: "key create".into(),
            result: "ERROR".into(),
            prev: "ab".repeat(32),
            ..Record::default()
        };
        for rec in [full, sparse] {
            let (line, mac) = seal_line(&k, &rec);
            let mut json = serde_json::to_string(&rec).unwrap();
            json.pop();
            assert_eq!(line, format!("{json},\"mac\":\"{mac}\"}}"));
            assert_eq!(open_line(&k, &line).unwrap().0, rec);
        }
    }

    proptest::proptest! {
        /// The hand-written encoder writes what serde writes for the whole
        /// [`Record`], whatever the strings hold (control characters,
        /// quotes, backslashes) and whichever fields are present.
        #[test]
        fn lines_are_the_records_json_whatever_they_hold(
            strs in proptest::collection::vec(proptest::option::of("(\\PC|[\"\\\\\u{0}-\u{1f}\u{7f}])*"), 18),
            status in proptest::option::of(proptest::num::u16::ANY),
            kv in proptest::option::of(proptest::num::u32::ANY),
            lat in proptest::option::of(proptest::num::u64::ANY),
            seq in proptest::num::u64::ANY,
            ts_ms in proptest::num::i64::ANY,
        ) {
            let k = HmacKey::new(&[7; 32]);
            let s = |i: usize| strs[i].clone();
            let rec = Record {
                seq,
                ts_ms,
                chain: s(15).unwrap_or_default(),
                frontend: s(0).unwrap_or_default(),
                operation: s(1).unwrap_or_else(|| "Encrypt".into()),
                result: s(2).unwrap_or_else(|| "OK".into()),
                status,
                store: s(3),
                key: s(4),
                key_version: kv,
                latency_us: lat,
                actor: s(5),
                principal: s(6),
                kms_operation: s(7),
                kms_request_id: s(8),
                kms_key_arn: s(9),
                kms_via_service: s(10),
                aws_source_vpc: s(11),
                aws_source_vpce: s(12),
                request_id: s(16),
                context: s(17),
                rule: s(13),
                detail: s(14),
                prev: genesis(),
            };
            let (line, mac) = seal_line(&k, &rec);
            let mut json = serde_json::to_string(&rec).unwrap();
            json.pop();
            proptest::prop_assert_eq!(&line, &format!("{json},\"mac\":\"{mac}\"}}"));
            proptest::prop_assert_eq!(open_line(&k, &line).unwrap().0, rec);
        }
    }

    #[test]
    fn lines_are_bound_to_their_bytes() {
        let k = HmacKey::new(&[7; 32]);
        let rec = Record {
            seq: 1,
            chain: "xks".into(),
            operation: "Encrypt".into(),
            result: "OK".into(),
            kms_request_id: Some("r-\"1\"".into()),
            prev: genesis(),
            ..Record::default()
        };
        let (line, mac) = seal_line(&k, &rec);
        assert!(!line.contains('\n'));
        let (back, mac2) = open_line(&k, &line).unwrap();
        assert_eq!((back, mac2), (rec, mac.clone()));
        let edited = line.replace("Encrypt", "Decrypt");
        assert!(open_line(&k, &edited).unwrap_err().contains("altered"));
        let spaced = line.replacen(':', ": ", 1);
        assert!(open_line(&k, &spaced).is_err(), "exact bytes");
        assert!(open_line(&HmacKey::new(&[8; 32]), &line).is_err());
        assert!(open_line(&k, "").is_err());
        assert!(open_line(&k, "{\"mac\":\"zz\"}").is_err());
        let c = Checkpoint::new(&k, "xks", "checkpoint", 5, &mac, 99);
        assert!(c.is_authentic(&k));
        let mut forged = c.clone();
        forged.seq = 4;
        assert!(!forged.is_authentic(&k));
    }
}
