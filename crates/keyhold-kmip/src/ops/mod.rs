//! The KMIP operations over the key service: one request message in, one
//! response message out, every batch item audited with the client identity.

mod asym;
mod attributes;
mod cipher;
mod create;
mod crypt;
mod get;
mod keypair;
mod lifecycle;

// Shared by the operation families.
use attributes::{check_type, name_text, to_stored_struct};
use create::{stored_as_is, FORMAT_ATTR};

use crate::attrs::{self, Attr, Incoming, Setter};
use crate::enums::{
    block_cipher_mode as bcm, crypto_alg, key_format, object_type, padding, query_function,
    revocation_reason, Reason,
};
use crate::message::{
    self, bool_of, bytes_of, enum_of, int_of, text_of, KmipError, OnError, RequestItem,
    ResponseItem, Version, SUPPORTED,
};
use crate::objects::{self as obj, effective_state};
use crate::operation::Operation;
use crate::service_err::{refused, service_err};
use crate::stream::{Stream, Streams};
use crate::tags as t;
use crate::ttlv::{Limits, Ttlv, Value};
use crate::xks_keys;
use keyhold_core::{AttrValue, Error, ManagedObject, ObjectAttr, ObjectState};
use keyhold_crypto::gcm;
use keyhold_crypto::sym::{self, MacHash};
use keyhold_service::object_rules::{self as rules, Purpose};
use keyhold_service::{AuditTicket, KeyService};
use std::sync::Arc;
use std::time::Instant;

/// The lease a Get grants (KMIP Lease Time), in seconds.
const LEASE_TIME_SECS: u32 = 3600;

/// Who is asking: the identity from the client certificate.
#[derive(Debug, Clone)]
pub struct Client {
    pub identity: String,
    pub peer: Option<String>,
}

/// The KMIP front-end over one key service.
pub struct Kmip {
    service: Arc<KeyService>,
    limits: Limits,
    /// Streamed Encrypt/Decrypt in progress.
    streams: Streams,
}

/// Longest AES-GCM IV accepted (12 bytes is the recommended length).
const MAX_GCM_IV: usize = 256;

/// Which cipher an Encrypt/Decrypt key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cipher {
    Aes,
    ChaChaPoly,
    /// Raw ChaCha20 (no authentication).
    ChaCha,
    /// Triple DES, CBC or ECB (legacy; the CS-BC profile has a case).
    TripleDes,
}

/// One part of a streamed Encrypt/Decrypt.
struct Step<'a> {
    uid: &'a str,
    encrypt: bool,
    data: &'a [u8],
    tag_len: usize,
    last: bool,
}

/// Largest Data an Encrypt/Decrypt/MAC accepts, and an RNG Retrieve gives.
const MAX_DATA: usize = 1 << 20;
const MAX_RNG: i32 = 1 << 16;
/// Largest Secret Data or key a client may register.
const MAX_REGISTERED: usize = 64 * 1024;

fn now_secs() -> i64 {
    keyhold_core::now()
}

/// Per-message state: the version answered in, the ID placeholder.
struct MessageState<'a> {
    client: &'a Client,
    version: Version,
    now: i64,
    placeholder: Option<String>,
    /// The object the current item acted on (audit).
    touched: Option<String>,
    /// With Batch Error Continuation "Undo": what to put back.
    undo: Option<Vec<Undo>>,
}

/// How to undo one change of a batch.
enum Undo {
    /// The object as it was before the batch touched it.
    Updated(ManagedObject),
    Created(String),
}

impl Kmip {
    /// KMIP over a key service; every operation is recorded through the
    /// service's audit broker.
    pub fn new(service: Arc<KeyService>) -> Self {
        Self {
            service,
            limits: Limits::default(),
            streams: Streams::default(),
        }
    }

    /// Sets the largest request message accepted.
    pub fn with_max_message(mut self, bytes: usize) -> Self {
        self.limits.max_len = bytes.max(1024);
        self
    }

    /// Whether answering `req` can be done on an async worker: no write
    /// that waits for the disk, no HSM. Anything else belongs on a
    /// blocking thread.
    pub fn is_quick(&self, req: &Ttlv) -> bool {
        if self.service.miss_blocks() {
            return false;
        }
        req.children(t::BATCH_ITEM).all(|b| {
            matches!(
                b.child(t::OPERATION).map(|o| &o.value),
                Some(&Value::Enumeration(c)) if Operation::from_code(c).is_some_and(Operation::is_quick)
            )
        })
    }

    /// Whether the client certificate with this serial number was revoked
    /// (`keyhold kmip client-cert revoke`).
    pub fn is_revoked(&self, serial: &str) -> bool {
        self.service.is_cert_revoked(serial)
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Answers one encoded request message with one encoded response.
    pub fn handle_bytes(&self, client: &Client, bytes: &[u8]) -> Vec<u8> {
        let now = now_secs();
        let req = match Ttlv::decode(bytes, &self.limits) {
            Ok(r) => r,
            Err(e) => {
                // The answer is already a failure: an audit error adds nothing.
                let _ = self.audit_one(
                    client,
                    &AuditFacts {
                        reason: Some(Reason::InvalidMessage),
                        message: &e.to_string(),
                        ..AuditFacts::default()
                    },
                );
                return message::error_response(
                    Version::new(1, 0),
                    now,
                    &KmipError::invalid_message(e.to_string()),
                )
                .encode();
            }
        };
        self.handle(client, &req).encode()
    }

    /// Answers one decoded request message.
    pub fn handle(&self, client: &Client, root: &Ttlv) -> Ttlv {
        let now = now_secs();
        let asked = message::peek_version(root).unwrap_or(Version::new(1, 0));
        // Answer in the client's version when Keyhold speaks it, otherwise
        // in the highest version below it.
        let version = SUPPORTED
            .iter()
            .copied()
            .find(|v| *v <= asked)
            .unwrap_or(Version::new(1, 0));
        let req = match message::parse_request(root) {
            Ok(r) => r,
            Err(e) => {
                let facts = AuditFacts {
                    reason: Some(e.reason),
                    message: &e.message,
                    ..AuditFacts::default()
                };
                let _ = self.audit_one(client, &facts);
                return message::error_response(version, now, &e);
            }
        };
        let mut ctx = MessageState {
            client,
            version,
            now,
            placeholder: None,
            touched: None,
            undo: (req.header.on_error == OnError::Undo).then(Vec::new),
        };
        let mut out = Vec::with_capacity(req.items.len());
        let unsupported = (!SUPPORTED.contains(&asked)).then_some(asked);
        // Several items that change nothing (signatures, encryption,
        // lookups): their records are queued as they are answered and
        // written together (one write instead of one per item) before any
        // answer leaves.
        let read_only = req.items.len() > 1
            && req
                .items
                .iter()
                .all(|i| Operation::from_code(i.operation).is_some_and(Operation::is_quick));
        let mut tickets = read_only.then(|| Vec::with_capacity(req.items.len()));
        for item in &req.items {
            let resp = self.answer_item(
                &mut ctx,
                item,
                unsupported,
                req.header.max_response_size,
                tickets.as_mut(),
            );
            let failed = !resp.is_success();
            out.push(resp);
            if failed && req.header.on_error != OnError::Continue {
                if let Some(log) = ctx.undo.take() {
                    self.undo(log);
                    let n = out.len() - 1;
                    for done in &mut out[..n] {
                        done.status = crate::enums::result_status::OPERATION_UNDONE;
                    }
                }
                break;
            }
        }
        if let Some(tickets) = tickets {
            self.settle(&mut out, tickets, req.header.on_error);
        }
        message::response(version, now, &out)
    }

    /// Waits for the queued records of answered items: an item whose record
    /// was not written fails, as if it had been written at once (with Stop
    /// or Undo, the items after it are not answered; with Undo, those
    /// before it are marked undone).
    fn settle(&self, out: &mut Vec<ResponseItem>, tickets: Vec<AuditTicket>, on_error: OnError) {
        let audit = self.service.audit();
        for (i, ticket) in tickets.into_iter().enumerate() {
            let Err(m) = audit.wait_blocking(ticket) else {
                continue;
            };
            let operation = out[i].operation;
            out[i] = ResponseItem::failure(
                operation,
                out[i].id.clone(),
                &KmipError::new(Reason::GeneralFailure, audit_failure(&m)),
            );
            if on_error != OnError::Continue {
                if on_error == OnError::Undo {
                    for done in &mut out[..i] {
                        done.status = crate::enums::result_status::OPERATION_UNDONE;
                    }
                }
                out.truncate(i + 1);
                return;
            }
        }
    }

    /// Answers one batch item (recorded in the audit log: an item whose
    /// record cannot be written fails). `unsupported`: the message asked
    /// for a version Keyhold does not speak, which only Discover Versions
    /// answers.
    fn answer_item(
        &self,
        ctx: &mut MessageState<'_>,
        item: &RequestItem<'_>,
        unsupported: Option<Version>,
        max_response_size: Option<i32>,
        deferred: Option<&mut Vec<AuditTicket>>,
    ) -> ResponseItem {
        let started = Instant::now();
        ctx.touched = None;
        let result = match unsupported {
            Some(asked) if item.operation != Operation::DiscoverVersions.code() => {
                Err(KmipError::new(
                    Reason::UnsupportedProtocolVersion,
                    format!(
                        "KMIP {asked} is not supported; Discover Versions lists those that are"
                    ),
                ))
            }
            _ => self.dispatch(ctx, item),
        };
        let mut resp = match result {
            Ok(payload) => ResponseItem::success(item.operation, item.id.clone(), payload),
            Err(e) => ResponseItem::failure(Some(item.operation), item.id.clone(), &e),
        };
        if let (Some(max), Some(p)) = (max_response_size, &resp.payload) {
            if p.encoded_len() > max.max(0) as usize {
                resp = ResponseItem::failure(
                    Some(item.operation),
                    item.id.clone(),
                    &KmipError::new(
                        Reason::ResponseTooLarge,
                        format!(
                            "the response payload is {} bytes, over the Maximum Response Size of {max}",
                            p.encoded_len()
                        ),
                    ),
                );
            }
        }
        let ev = AuditFacts {
            operation: crate::enums::operation::name(item.operation),
            uid: ctx.touched.as_deref(),
            reason: resp.reason,
            message: resp.message.as_deref().unwrap_or(""),
            latency_us: started.elapsed().as_micros() as u64,
        };
        if let Some(tickets) = deferred {
            tickets.push(self.audit_submit(ctx.client, &ev));
            return resp;
        }
        if let Err(m) = self.audit_one(ctx.client, &ev) {
            resp = ResponseItem::failure(
                Some(item.operation),
                item.id.clone(),
                &KmipError::new(Reason::GeneralFailure, m),
            );
        }
        resp
    }

    /// Writes an item's (or a message's) record before returning.
    fn audit_one(&self, client: &Client, facts: &AuditFacts<'_>) -> Result<(), String> {
        self.with_event(client, facts, |ev| self.service.audit().record_blocking(ev))
            .map_err(|e| audit_failure(&e))
    }

    /// Queues an item's record; [`Kmip::settle`] waits for it.
    fn audit_submit(&self, client: &Client, facts: &AuditFacts<'_>) -> AuditTicket {
        self.with_event(client, facts, |ev| self.service.audit().submit(ev))
    }

    fn with_event<R>(
        &self,
        client: &Client,
        f: &AuditFacts<'_>,
        then: impl FnOnce(&keyhold_audit::Event<'_>) -> R,
    ) -> R {
        let result = f.reason.map(|r| format!("{r:?}"));
        then(&keyhold_audit::Event {
            frontend: "kmip",
            operation: f.operation,
            result: result.as_deref().unwrap_or("OK"),
            key: f.uid,
            latency_us: Some(f.latency_us),
            actor: Some(&client.identity),
            detail: (!f.message.is_empty()).then_some(f.message),
            ..Default::default()
        })
    }

    fn dispatch(
        &self,
        ctx: &mut MessageState<'_>,
        item: &RequestItem<'_>,
    ) -> Result<Vec<Ttlv>, KmipError> {
        let empty = Ttlv::structure(t::REQUEST_PAYLOAD, vec![]);
        let p = item.payload.unwrap_or(&empty);
        let known = Operation::from_code(item.operation);
        // XKS keys are read-only here: their lifecycle is the custodians'.
        if known.is_some_and(Operation::changes_object) {
            if let Ok(uid) = self.uid_arg(ctx, p) {
                if xks_keys::is_xks_uid(&uid) {
                    self.load(ctx, &uid)?;
                    return Err(service_err(xks_keys::read_only(&uid)));
                }
            }
        }
        let operation = match known {
            Some(o) if o.served_in(ctx.version) => o,
            _ => {
                return Err(KmipError::new(
                    Reason::OperationNotSupported,
                    format!(
                        "operation {} ({:#x}) is not supported in KMIP {}",
                        crate::enums::operation::name(item.operation),
                        item.operation,
                        ctx.version
                    ),
                ))
            }
        };
        use Operation as O;
        match operation {
            O::DiscoverVersions => self.discover_versions(p),
            O::Query => self.query(ctx, p),
            O::Create => self.create(ctx, p),
            O::CreateKeyPair => self.create_key_pair(ctx, p),
            O::ReKeyKeyPair => self.rekey_key_pair(ctx, p),
            O::Register => self.register(ctx, p),
            O::ReKey => self.rekey(ctx, p),
            O::Locate => self.locate(ctx, p),
            O::Get => self.get(ctx, p),
            O::GetAttributes => self.get_attributes(ctx, p),
            O::GetAttributeList => self.get_attribute_list(ctx, p),
            O::AddAttribute => self.add_attribute(ctx, p),
            O::Check => self.check(ctx, p),
            O::ObtainLease => self.obtain_lease(ctx, p),
            O::ModifyAttribute => self.modify_attribute(ctx, p),
            O::DeleteAttribute => self.delete_attribute(ctx, p),
            O::SetAttribute => self.set_attribute(ctx, p),
            O::Activate => self.activate(ctx, p),
            O::Revoke => self.revoke(ctx, p),
            O::Destroy => self.destroy(ctx, p),
            O::Encrypt => self.crypt(ctx, p, true),
            O::Decrypt => self.crypt(ctx, p, false),
            O::Mac => self.mac(ctx, p, false),
            O::MacVerify => self.mac(ctx, p, true),
            O::RngRetrieve => self.rng_retrieve(p),
            O::Sign => self.sign(ctx, p),
            O::SignatureVerify => self.signature_verify(ctx, p),
            O::Hash => self.hash(p),
            // Test-suite bracketing and client log lines: accepted (the
            // audit record carries the operation).
            O::Interop | O::Log => Ok(vec![]),
            // Known, never served (`served_in` refused it above).
            O::AdjustAttribute => Err(KmipError::new(
                Reason::OperationNotSupported,
                "operation Adjust Attribute is not supported",
            )),
        }
    }

    // ---- helpers ----

    /// The Unique Identifier argument, or the ID placeholder.
    fn uid_arg(&self, ctx: &MessageState<'_>, p: &Ttlv) -> Result<String, KmipError> {
        match text_of(p, t::UNIQUE_IDENTIFIER)? {
            Some(u) => Ok(u.to_owned()),
            None => ctx.placeholder.clone().ok_or_else(|| {
                KmipError::missing("Unique Identifier is missing and no earlier batch item set one")
            }),
        }
    }

    /// Loads an object the client may use.
    fn load(&self, ctx: &mut MessageState<'_>, uid: &str) -> Result<ManagedObject, KmipError> {
        ctx.touched = Some(uid.to_owned());
        let xks = xks_keys::is_xks_uid(uid);
        let o = if xks {
            xks_keys::object(&self.service, uid)
        } else {
            self.service.object(uid)
        }
        .map_err(service_err)?;
        if !KeyService::may_use_object(&o, &ctx.client.identity) {
            return Err(KmipError::new(
                Reason::PermissionDenied,
                if xks {
                    format!("XKS key {uid} was not granted to this client identity")
                } else {
                    format!("object {uid} belongs to another client identity")
                },
            ));
        }
        if let (Some(log), false) = (&mut ctx.undo, xks) {
            let seen = log.iter().any(|u| match u {
                Undo::Updated(p) => p.uid == uid,
                Undo::Created(c) => c == uid,
            });
            if !seen {
                log.push(Undo::Updated(o.clone()));
            }
        }
        Ok(o)
    }

    /// Charges an AEAD encryption whose IV the server drew at random to the
    /// object: at 2^32 of them it encrypts no more (NIST SP 800-38D 8.3);
    /// the client re-keys. (IVs a client chooses are the client's own
    /// business.)
    fn charge_random_iv(&self, uid: &str) -> Result<(), KmipError> {
        self.service
            .charge_object_encryption(uid)
            .map_err(|e| match e {
                Error::InvalidState(m) => KmipError::new(Reason::PermissionDenied, m),
                other => service_err(other),
            })
    }

    /// Loads an object the client may manage: change its attributes, state
    /// or material (Activate, Revoke, Destroy, Re-key, attribute changes).
    /// That is its owner's alone; a grant gives use only.
    fn load_owned(
        &self,
        ctx: &mut MessageState<'_>,
        uid: &str,
    ) -> Result<ManagedObject, KmipError> {
        let o = self.load(ctx, uid)?;
        if o.owner.is_empty() || o.owner != ctx.client.identity {
            return Err(KmipError::new(
                Reason::PermissionDenied,
                format!(
                    "object {uid} was granted to this client identity for use only: changing it is its owner's"
                ),
            ));
        }
        Ok(o)
    }

    /// Puts back what a failed "Undo" batch changed, newest first.
    fn undo(&self, log: Vec<Undo>) {
        for u in log.into_iter().rev() {
            let r = match u {
                Undo::Created(uid) => self.service.delete_object(&uid),
                Undo::Updated(mut before) => match self.service.object(&before.uid) {
                    Ok(now) if now.rev != before.rev => {
                        before.rev = now.rev;
                        self.service.update_object(&before)
                    }
                    _ => Ok(()),
                },
            };
            if let Err(e) = r {
                tracing::warn!(error = %e, "KMIP batch undo could not restore an object");
            }
        }
    }

    fn save(&self, ctx: &MessageState<'_>, o: &mut ManagedObject) -> Result<(), KmipError> {
        if xks_keys::is_xks_uid(&o.uid) {
            return Err(service_err(xks_keys::read_only(&o.uid)));
        }
        o.set_attr(obj::LAST_CHANGE, AttrValue::DateTime(ctx.now));
        self.service.update_object(o).map_err(service_err)?;
        o.rev += 1;
        Ok(())
    }

    fn material(&self, o: &ManagedObject) -> Result<Arc<keyhold_crypto::SecretBytes>, KmipError> {
        if xks_keys::is_xks_uid(&o.uid) {
            return Err(KmipError::new(
                Reason::PermissionDenied,
                format!(
                    "{} is an XKS key: it serves AWS KMS through the XKS API only; KMIP may read its attributes",
                    o.uid
                ),
            ));
        }
        self.service.object_material(o).map_err(service_err)
    }

    /// Validates a client-set attribute and stores it on `o` (create: the
    /// object is being made).
    fn apply(
        &self,
        ctx: &MessageState<'_>,
        o: &mut ManagedObject,
        a: Incoming,
        creating: bool,
    ) -> Result<(), KmipError> {
        let value = a
            .value
            .ok_or_else(|| KmipError::missing(format!("attribute {} has no value", a.name)))?;
        if attrs::is_internal(&a.name) {
            return Err(KmipError::invalid_field(format!(
                "attribute {} is reserved",
                a.name
            )));
        }
        if !attrs::is_custom(&a.name) {
            let def = attrs::def_by_name(&a.name).ok_or_else(|| {
                KmipError::invalid_field(format!("{} is not an attribute Keyhold knows", a.name))
            })?;
            let settable = match def.setter {
                Setter::Server => false,
                Setter::Create => creating,
                Setter::Client => true,
            };
            if !settable {
                return Err(KmipError::new(
                    Reason::AttributeReadOnly,
                    format!("attribute {} cannot be set by a client here", a.name),
                ));
            }
            check_type(&a.name, &value)?;
            match def.attr {
                Attr::Extractable => {
                    if let AttrValue::Bool(b) = value {
                        rules::set_exportable(o, b, creating).map_err(refused)?;
                    }
                }
                Attr::Sensitive if value == AttrValue::Bool(true) => {
                    o.exportable = false;
                }
                Attr::ActivationDate => {
                    rules::check_activation_date_change(o, ctx.now, creating).map_err(refused)?;
                }
                // Names need not be unique (PyKMIP gives every secret the
                // same default name); Locate lists newest first.
                Attr::Name => {
                    name_text(&value)?;
                }
                _ => {}
            }
            if !def.multi {
                o.set_attr(&a.name, value);
                return Ok(());
            }
        }
        o.attrs.push(ObjectAttr {
            name: a.name,
            value,
        });
        Ok(())
    }

    fn discover_versions(&self, p: &Ttlv) -> Result<Vec<Ttlv>, KmipError> {
        let mut asked = Vec::new();
        for v in p.children(t::PROTOCOL_VERSION) {
            asked.push(Version::from_ttlv(v)?);
        }
        Ok(SUPPORTED
            .iter()
            .filter(|v| asked.is_empty() || asked.contains(v))
            .map(|v| v.to_ttlv())
            .collect())
    }

    fn query(&self, ctx: &MessageState<'_>, p: &Ttlv) -> Result<Vec<Ttlv>, KmipError> {
        let mut out = Vec::new();
        for f in p.children(t::QUERY_FUNCTION) {
            let Value::Enumeration(f) = f.value else {
                return Err(KmipError::invalid_message(
                    "Query Function must be an Enumeration",
                ));
            };
            match f {
                query_function::OPERATIONS => out.extend(
                    Operation::ALL
                        .into_iter()
                        .filter(|o| o.served_in(ctx.version))
                        .map(|o| Ttlv::enumeration(t::OPERATION, o.code())),
                ),
                query_function::OBJECTS => out.extend(
                    [
                        object_type::SYMMETRIC_KEY,
                        object_type::SECRET_DATA,
                        object_type::PRIVATE_KEY,
                        object_type::PUBLIC_KEY,
                    ]
                    .iter()
                    .map(|o| Ttlv::enumeration(t::OBJECT_TYPE, *o)),
                ),
                query_function::SERVER_INFORMATION => {
                    out.push(Ttlv::text(t::VENDOR_IDENTIFICATION, "Keyhold"));
                    out.push(Ttlv::structure(
                        t::SERVER_INFORMATION,
                        if ctx.version.is_v2() {
                            vec![
                                Ttlv::text(t::SERVER_NAME, "Keyhold"),
                                Ttlv::text(t::SERVER_VERSION, env!("CARGO_PKG_VERSION")),
                            ]
                        } else {
                            vec![]
                        },
                    ));
                }
                _ => {} // nothing to list for the others
            }
        }
        Ok(out)
    }
}

/// What a KMIP audit record says of one item (or of a message that did not
/// parse: operation "-").
struct AuditFacts<'a> {
    operation: &'a str,
    uid: Option<&'a str>,
    reason: Option<Reason>,
    message: &'a str,
    latency_us: u64,
}

impl Default for AuditFacts<'_> {
    fn default() -> Self {
        Self {
            operation: "-",
            uid: None,
            reason: None,
            message: "",
            latency_us: 0,
        }
    }
}

fn audit_failure(e: &str) -> String {
    format!("the audit log could not record the operation: {e}")
}
