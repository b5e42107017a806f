//! The KMIP operations over the key service: one request message in, one
//! response message out, every batch item audited with the client identity.

use crate::attrs::{self, Incoming, Setter};
use crate::enums::{
    block_cipher_mode as bcm, crypto_alg, key_format, object_type, operation as op, padding,
    query_function, revocation_reason, usage_mask, Reason,
};
use crate::message::{
    self, bool_of, bytes_of, enum_of, int_of, text_of, KmipError, OnError, RequestItem,
    ResponseItem, Version, SUPPORTED,
};
use crate::objects::{self as obj, effective_state};
use crate::stream::{Stream, Streams};
use crate::tags as t;
use crate::ttlv::{Limits, Ttlv, Value};
use crate::xks_keys;
use keyhold_core::{AttrValue, Error, ManagedObject, ObjectAttr, ObjectState};
use keyhold_crypto::gcm;
use keyhold_crypto::sym::{self, MacHash};
use keyhold_service::KeyService;
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
    audit: Option<Arc<keyhold_audit::AuditLog>>,
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

/// Operations Keyhold answers (Query Operations lists them).
/// The operations Keyhold serves, each with the KMIP version that defined
/// it: a client is served (and Query lists) exactly those of its version.
const OPERATIONS: &[(u32, Version)] = &[
    (op::CREATE, Version::new(1, 0)),
    (op::REGISTER, Version::new(1, 0)),
    (op::REKEY, Version::new(1, 0)),
    (op::LOCATE, Version::new(1, 0)),
    (op::CHECK, Version::new(1, 0)),
    (op::GET, Version::new(1, 0)),
    (op::GET_ATTRIBUTES, Version::new(1, 0)),
    (op::GET_ATTRIBUTE_LIST, Version::new(1, 0)),
    (op::ADD_ATTRIBUTE, Version::new(1, 0)),
    (op::MODIFY_ATTRIBUTE, Version::new(1, 0)),
    (op::DELETE_ATTRIBUTE, Version::new(1, 0)),
    (op::OBTAIN_LEASE, Version::new(1, 0)),
    (op::ACTIVATE, Version::new(1, 0)),
    (op::REVOKE, Version::new(1, 0)),
    (op::DESTROY, Version::new(1, 0)),
    (op::QUERY, Version::new(1, 0)),
    (op::DISCOVER_VERSIONS, Version::new(1, 1)),
    (op::ENCRYPT, Version::new(1, 2)),
    (op::DECRYPT, Version::new(1, 2)),
    (op::MAC, Version::new(1, 2)),
    (op::MAC_VERIFY, Version::new(1, 2)),
    (op::RNG_RETRIEVE, Version::new(1, 2)),
    (crate::enums::operation2::LOG, Version::new(2, 0)),
    (crate::enums::operation2::SET_ATTRIBUTE, Version::new(2, 0)),
    (crate::enums::operation2::INTEROP, Version::new(2, 0)),
];

/// Whether Keyhold serves `operation` to a client speaking `version`.
fn served(operation: u32, version: Version) -> bool {
    OPERATIONS
        .iter()
        .any(|(o, since)| *o == operation && version >= *since)
}

fn service_err(e: Error) -> KmipError {
    match e {
        Error::ObjectNotFound(uid) => {
            KmipError::new(Reason::ObjectNotFound, format!("object {uid} not found"))
        }
        Error::InvalidState(m) => KmipError::new(Reason::PermissionDenied, m),
        Error::AccessDenied { why, .. } => KmipError::new(Reason::PermissionDenied, why),
        Error::Conflict(m) => KmipError::new(
            Reason::GeneralFailure,
            format!("{m} was changed by another request; retry"),
        ),
        Error::Invalid { what, why } => KmipError::invalid_field(format!("{what}: {why}")),
        Error::UnwrapFailed | Error::RootOfTrust(_) => KmipError::new(
            Reason::GeneralFailure,
            "the root of trust could not unwrap the object",
        ),
        Error::DependencyTimeout(m) => {
            KmipError::new(Reason::GeneralFailure, format!("dependency timed out: {m}"))
        }
        Error::Integrity(m) => {
            tracing::error!(error = %m, "KMIP request refused: a stored row does not verify");
            KmipError::new(
                Reason::GeneralFailure,
                "a stored record does not verify (changed outside Keyhold); refused",
            )
        }
        other => {
            tracing::warn!(error = %other, "KMIP request failed inside Keyhold");
            KmipError::new(Reason::GeneralFailure, "internal error")
        }
    }
}

fn now_secs() -> i64 {
    keyhold_core::now()
}

/// Per-message state: the version answered in, the ID placeholder.
struct Ctx<'a> {
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
    pub fn new(service: Arc<KeyService>, audit: Option<Arc<keyhold_audit::AuditLog>>) -> Self {
        Self {
            service,
            audit,
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
                Some(Value::Enumeration(
                    op::ENCRYPT
                        | op::DECRYPT
                        | op::MAC
                        | op::MAC_VERIFY
                        | op::GET_ATTRIBUTES
                        | op::GET_ATTRIBUTE_LIST
                        | op::LOCATE
                        | op::QUERY
                        | op::DISCOVER_VERSIONS
                        | op::RNG_RETRIEVE
                ))
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
                    "-",
                    None,
                    Some(Reason::InvalidMessage),
                    &e.to_string(),
                    0,
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
                let _ = self.audit_one(client, "-", None, Some(e.reason), &e.message, 0);
                return message::error_response(version, now, &e);
            }
        };
        let mut ctx = Ctx {
            client,
            version,
            now,
            placeholder: None,
            touched: None,
            undo: (req.header.on_error == OnError::Undo).then(Vec::new),
        };
        let mut out = Vec::with_capacity(req.items.len());
        let unsupported_version = !SUPPORTED.contains(&asked);
        for item in &req.items {
            let started = Instant::now();
            ctx.touched = None;
            let result = if unsupported_version && item.operation != op::DISCOVER_VERSIONS {
                Err(KmipError::new(
                    Reason::UnsupportedProtocolVersion,
                    format!(
                        "KMIP {asked} is not supported; Discover Versions lists those that are"
                    ),
                ))
            } else {
                self.dispatch(&mut ctx, item)
            };
            let mut resp = match result {
                Ok(payload) => ResponseItem::success(item.operation, item.id.clone(), payload),
                Err(e) => ResponseItem::failure(Some(item.operation), item.id.clone(), &e),
            };
            if let (Some(max), Some(p)) = (req.header.max_response_size, &resp.payload) {
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
            let audited = self.audit_one(
                client,
                crate::enums::operation::name(item.operation),
                ctx.touched.as_deref(),
                resp.reason,
                resp.message.as_deref().unwrap_or(""),
                started.elapsed().as_micros() as u64,
            );
            if let Err(m) = audited {
                resp = ResponseItem::failure(
                    Some(item.operation),
                    item.id.clone(),
                    &KmipError::new(Reason::GeneralFailure, m),
                );
            }
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
        message::response(version, now, &out)
    }

    fn audit_one(
        &self,
        client: &Client,
        operation: &str,
        uid: Option<&str>,
        reason: Option<Reason>,
        message: &str,
        latency_us: u64,
    ) -> Result<(), String> {
        let Some(log) = &self.audit else {
            return Ok(());
        };
        let result = reason.map(|r| format!("{r:?}"));
        let ev = keyhold_audit::Event {
            frontend: "kmip",
            operation,
            result: result.as_deref().unwrap_or("OK"),
            key: uid,
            latency_us: Some(latency_us),
            actor: Some(&client.identity),
            detail: (!message.is_empty()).then_some(message),
            ..Default::default()
        };
        log.record_blocking(&ev)
            .map_err(|e| format!("the audit log could not record the operation: {e}"))
    }

    fn dispatch(&self, ctx: &mut Ctx<'_>, item: &RequestItem<'_>) -> Result<Vec<Ttlv>, KmipError> {
        let empty = Ttlv::structure(t::REQUEST_PAYLOAD, vec![]);
        let p = item.payload.unwrap_or(&empty);
        // XKS keys are read-only here: their lifecycle is the custodians'.
        if matches!(
            item.operation,
            op::REKEY
                | op::ADD_ATTRIBUTE
                | op::MODIFY_ATTRIBUTE
                | op::DELETE_ATTRIBUTE
                | op::ACTIVATE
                | op::REVOKE
                | op::DESTROY
                | crate::enums::operation2::SET_ATTRIBUTE
                | crate::enums::operation2::ADJUST_ATTRIBUTE
        ) {
            if let Ok(uid) = self.uid_arg(ctx, p) {
                if xks_keys::is_xks_uid(&uid) {
                    self.load(ctx, &uid)?;
                    return Err(service_err(xks_keys::read_only(&uid)));
                }
            }
        }
        if !served(item.operation, ctx.version) {
            return Err(KmipError::new(
                Reason::OperationNotSupported,
                format!(
                    "operation {} ({:#x}) is not supported in KMIP {}",
                    crate::enums::operation::name(item.operation),
                    item.operation,
                    ctx.version
                ),
            ));
        }
        match item.operation {
            op::DISCOVER_VERSIONS => self.discover_versions(p),
            op::QUERY => self.query(ctx, p),
            op::CREATE => self.create(ctx, p),
            op::REGISTER => self.register(ctx, p),
            op::REKEY => self.rekey(ctx, p),
            op::LOCATE => self.locate(ctx, p),
            op::GET => self.get(ctx, p),
            op::GET_ATTRIBUTES => self.get_attributes(ctx, p),
            op::GET_ATTRIBUTE_LIST => self.get_attribute_list(ctx, p),
            op::ADD_ATTRIBUTE => self.add_attribute(ctx, p),
            op::CHECK => self.check(ctx, p),
            op::OBTAIN_LEASE => self.obtain_lease(ctx, p),
            op::MODIFY_ATTRIBUTE => self.modify_attribute(ctx, p),
            op::DELETE_ATTRIBUTE => self.delete_attribute(ctx, p),
            crate::enums::operation2::SET_ATTRIBUTE => self.set_attribute(ctx, p),
            op::ACTIVATE => self.activate(ctx, p),
            op::REVOKE => self.revoke(ctx, p),
            op::DESTROY => self.destroy(ctx, p),
            op::ENCRYPT => self.crypt(ctx, p, true),
            op::DECRYPT => self.crypt(ctx, p, false),
            op::MAC => self.mac(ctx, p, false),
            op::MAC_VERIFY => self.mac(ctx, p, true),
            op::RNG_RETRIEVE => self.rng_retrieve(p),
            // Test-suite bracketing and client log lines: accepted (the
            // audit record carries the operation).
            crate::enums::operation2::INTEROP | crate::enums::operation2::LOG => Ok(vec![]),
            other => Err(KmipError::new(
                Reason::OperationNotSupported,
                format!(
                    "operation {} ({other:#x}) is not supported",
                    crate::enums::operation::name(other)
                ),
            )),
        }
    }

    // ---- helpers ----

    /// The Unique Identifier argument, or the ID placeholder.
    fn uid_arg(&self, ctx: &Ctx<'_>, p: &Ttlv) -> Result<String, KmipError> {
        match text_of(p, t::UNIQUE_IDENTIFIER)? {
            Some(u) => Ok(u.to_owned()),
            None => ctx.placeholder.clone().ok_or_else(|| {
                KmipError::missing("Unique Identifier is missing and no earlier batch item set one")
            }),
        }
    }

    /// Loads an object the client may use.
    fn load(&self, ctx: &mut Ctx<'_>, uid: &str) -> Result<ManagedObject, KmipError> {
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
    fn load_owned(&self, ctx: &mut Ctx<'_>, uid: &str) -> Result<ManagedObject, KmipError> {
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

    fn save(&self, ctx: &Ctx<'_>, o: &mut ManagedObject) -> Result<(), KmipError> {
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
        ctx: &Ctx<'_>,
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
            match a.name.as_str() {
                "Extractable" => {
                    if let AttrValue::Bool(b) = value {
                        if b && !o.exportable && !creating {
                            return Err(KmipError::new(
                                Reason::PermissionDenied,
                                "a non-extractable object cannot be made extractable",
                            ));
                        }
                        o.exportable = b;
                    }
                }
                "Sensitive" if value == AttrValue::Bool(true) => {
                    o.exportable = false;
                }
                obj::ACTIVATION_DATE if !creating && o.state != ObjectState::PreActive => {
                    return Err(obj::wrong_state(
                        o,
                        ctx.now,
                        "the activation date can only change before activation",
                    ));
                }
                // Names need not be unique (PyKMIP gives every secret the
                // same default name); Locate lists newest first.
                obj::NAME => {
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

    fn new_object(&self, ctx: &Ctx<'_>, object_type: u32) -> Result<ManagedObject, KmipError> {
        let mut o = ManagedObject {
            // Time-ordered: new objects go to the end of the table, so a
            // batch of creates writes a few pages instead of one each.
            uid: keyhold_crypto::time_ordered_uuid().map_err(|_| {
                KmipError::new(Reason::GeneralFailure, "random number generator failed")
            })?,
            object_type,
            owner: ctx.client.identity.clone(),
            state: ObjectState::PreActive,
            exportable: true,
            attrs: Vec::new(),
            has_material: true,
            rev: 1,
        };
        o.set_attr(obj::INITIAL_DATE, AttrValue::DateTime(ctx.now));
        o.set_attr(obj::LAST_CHANGE, AttrValue::DateTime(ctx.now));
        o.set_attr("Fresh", AttrValue::Bool(true));
        Ok(o)
    }

    /// Applies the request's attributes, settles the initial state, and
    /// stores the object with its material.
    fn finish_new(
        &self,
        ctx: &mut Ctx<'_>,
        mut o: ManagedObject,
        incoming: Vec<Incoming>,
        material: &[u8],
    ) -> Result<String, KmipError> {
        for a in incoming {
            if matches!(a.name.as_str(), obj::ALGORITHM | obj::LENGTH) {
                continue; // already settled by the caller
            }
            self.apply(ctx, &mut o, a, true)?;
        }
        if o.attr("Original Creation Date").is_none() {
            o.set_attr("Original Creation Date", AttrValue::DateTime(ctx.now));
        }
        o.set_attr(
            "Always Sensitive",
            AttrValue::Bool(o.attr("Sensitive") == Some(&AttrValue::Bool(true))),
        );
        o.set_attr("Never Extractable", AttrValue::Bool(!o.exportable));
        if matches!(
            o.object_type,
            object_type::SYMMETRIC_KEY
                | object_type::SECRET_DATA
                | object_type::PUBLIC_KEY
                | object_type::PRIVATE_KEY
        ) {
            let f = obj::enum_attr(&o, FORMAT_ATTR).unwrap_or(key_format::RAW);
            o.set_attr("Key Format Type", AttrValue::Enum(f));
        }
        o.attrs.push(ObjectAttr {
            name: "Digest".into(),
            value: AttrValue::Struct(vec![
                (
                    t::HASHING_ALGORITHM,
                    AttrValue::Enum(crate::enums::hashing::SHA_256),
                ),
                (
                    t::DIGEST_VALUE,
                    AttrValue::Bytes(keyhold_crypto::sha256(&[material]).to_vec()),
                ),
                (t::KEY_FORMAT_TYPE, AttrValue::Enum(key_format::RAW)),
            ]),
        });
        o.state = effective_state(&o, ctx.now);
        self.service
            .create_object(&o, material)
            .map_err(service_err)?;
        ctx.placeholder = Some(o.uid.clone());
        ctx.touched = Some(o.uid.clone());
        if let Some(log) = &mut ctx.undo {
            log.push(Undo::Created(o.uid.clone()));
        }
        Ok(o.uid)
    }

    // ---- operations ----

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

    fn query(&self, ctx: &Ctx<'_>, p: &Ttlv) -> Result<Vec<Ttlv>, KmipError> {
        let mut out = Vec::new();
        for f in p.children(t::QUERY_FUNCTION) {
            let Value::Enumeration(f) = f.value else {
                return Err(KmipError::invalid_message(
                    "Query Function must be an Enumeration",
                ));
            };
            match f {
                query_function::OPERATIONS => out.extend(
                    OPERATIONS
                        .iter()
                        .filter(|(_, since)| ctx.version >= *since)
                        .map(|(o, _)| Ttlv::enumeration(t::OPERATION, *o)),
                ),
                query_function::OBJECTS => out.extend(
                    [object_type::SYMMETRIC_KEY, object_type::SECRET_DATA]
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

    fn create(&self, ctx: &mut Ctx<'_>, p: &Ttlv) -> Result<Vec<Ttlv>, KmipError> {
        let ot = enum_of(p, t::OBJECT_TYPE)?
            .ok_or_else(|| KmipError::missing("Object Type is missing"))?;
        if ot != object_type::SYMMETRIC_KEY {
            return Err(KmipError::new(
                Reason::FeatureNotSupported,
                format!(
                    "Create makes symmetric keys; {} is not supported",
                    object_type::name(ot)
                ),
            ));
        }
        let incoming = attrs::parse_request_attributes(p)?;
        let find = |n: &str| {
            incoming
                .iter()
                .find(|a| a.name == n)
                .and_then(|a| a.value.clone())
        };
        let alg = match find(obj::ALGORITHM) {
            Some(AttrValue::Enum(a)) => a,
            Some(_) => {
                return Err(KmipError::invalid_field(
                    "Cryptographic Algorithm must be an Enumeration",
                ))
            }
            None => return Err(KmipError::missing("Cryptographic Algorithm is missing")),
        };
        let len = match find(obj::LENGTH) {
            Some(AttrValue::Int(l)) => Some(l),
            Some(_) => {
                return Err(KmipError::invalid_field(
                    "Cryptographic Length must be an Integer",
                ))
            }
            None => None,
        };
        let len = check_key_size(alg, len)?;
        let material = keyhold_crypto::random_secret(material_len(alg, len)).map_err(|_| {
            KmipError::new(Reason::GeneralFailure, "random number generator failed")
        })?;
        let mut o = self.new_object(ctx, ot)?;
        o.set_attr(obj::ALGORITHM, AttrValue::Enum(alg));
        o.set_attr(obj::LENGTH, AttrValue::Int(len));
        o.set_attr("Random Number Generator", server_rng());
        let uid = self.finish_new(ctx, o, incoming, material.expose())?;
        Ok(vec![
            Ttlv::enumeration(t::OBJECT_TYPE, ot),
            Ttlv::text(t::UNIQUE_IDENTIFIER, uid),
        ])
    }

    fn register(&self, ctx: &mut Ctx<'_>, p: &Ttlv) -> Result<Vec<Ttlv>, KmipError> {
        let ot = enum_of(p, t::OBJECT_TYPE)?
            .ok_or_else(|| KmipError::missing("Object Type is missing"))?;
        let incoming = attrs::parse_request_attributes(p)?;
        let mut o = self.new_object(ctx, ot)?;
        if let Some(tag) = stored_as_is(ot) {
            return self.register_as_is(ctx, o, incoming, p, tag);
        }
        let (holder_tag, label) = match ot {
            object_type::SYMMETRIC_KEY => (t::SYMMETRIC_KEY, "Symmetric Key"),
            object_type::SECRET_DATA => (t::SECRET_DATA, "Secret Data"),
            _ => {
                return Err(KmipError::new(
                    Reason::FeatureNotSupported,
                    format!("Register of {} is not supported", object_type::name(ot)),
                ))
            }
        };
        let holder = p
            .child(holder_tag)
            .ok_or_else(|| KmipError::missing(format!("the {label} object is missing")))?;
        let block = holder
            .child(t::KEY_BLOCK)
            .ok_or_else(|| KmipError::missing("Key Block is missing"))?;
        let material = key_block_material(block)?;
        if let Some(f) = enum_of(block, t::KEY_FORMAT_TYPE)? {
            o.set_attr(FORMAT_ATTR, AttrValue::Enum(f));
        }
        if material.is_empty() || material.len() > MAX_REGISTERED {
            return Err(KmipError::invalid_field(format!(
                "key material of {} bytes is not accepted (1 to {MAX_REGISTERED})",
                material.len()
            )));
        }
        let find = |n: &str| {
            incoming
                .iter()
                .find(|a| a.name == n)
                .and_then(|a| a.value.clone())
        };
        if ot == object_type::SYMMETRIC_KEY {
            let alg = match (
                enum_of(block, t::CRYPTOGRAPHIC_ALGORITHM)?,
                find(obj::ALGORITHM),
            ) {
                (Some(a), _) | (None, Some(AttrValue::Enum(a))) => a,
                _ => return Err(KmipError::missing("Cryptographic Algorithm is missing")),
            };
            let bits = (material.len() * 8) as i32;
            let len = int_of(block, t::CRYPTOGRAPHIC_LENGTH)?.unwrap_or(bits);
            if material_len(alg, len) != material.len() {
                return Err(KmipError::invalid_field(format!(
                    "Cryptographic Length {len} does not match the {bits}-bit key material"
                )));
            }
            check_key_size(alg, Some(len))?;
            o.set_attr(obj::ALGORITHM, AttrValue::Enum(alg));
            o.set_attr(obj::LENGTH, AttrValue::Int(len));
        } else {
            let sdt = enum_of(holder, t::SECRET_DATA_TYPE)?
                .ok_or_else(|| KmipError::missing("Secret Data Type is missing"))?;
            o.set_attr("keyhold:secret-data-type", AttrValue::Enum(sdt));
        }
        let uid = self.finish_new(ctx, o, incoming, &material)?;
        Ok(vec![Ttlv::text(t::UNIQUE_IDENTIFIER, uid)])
    }

    /// Registers an object Keyhold keeps but does not compute with (public
    /// and private keys, certificates, opaque objects): its whole TTLV
    /// structure is the wrapped material, and Get returns it as registered.
    fn register_as_is(
        &self,
        ctx: &mut Ctx<'_>,
        mut o: ManagedObject,
        incoming: Vec<Incoming>,
        p: &Ttlv,
        tag: u32,
    ) -> Result<Vec<Ttlv>, KmipError> {
        let holder = p.child(tag).ok_or_else(|| {
            KmipError::missing(format!(
                "the {} object is missing",
                object_type::name(o.object_type)
            ))
        })?;
        let bytes = holder.encode();
        if bytes.len() > MAX_REGISTERED {
            return Err(KmipError::invalid_field(format!(
                "objects over {MAX_REGISTERED} bytes are not accepted"
            )));
        }
        if let Some(block) = holder.child(t::KEY_BLOCK) {
            if block.child(t::KEY_WRAPPING_DATA).is_some() {
                return Err(KmipError::new(
                    Reason::FeatureNotSupported,
                    "registering wrapped keys is not supported",
                ));
            }
            if let Some(a) = enum_of(block, t::CRYPTOGRAPHIC_ALGORITHM)? {
                o.set_attr(obj::ALGORITHM, AttrValue::Enum(a));
            }
            if let Some(l) = int_of(block, t::CRYPTOGRAPHIC_LENGTH)? {
                o.set_attr(obj::LENGTH, AttrValue::Int(l));
            }
            if let Some(f) = enum_of(block, t::KEY_FORMAT_TYPE)? {
                o.set_attr(FORMAT_ATTR, AttrValue::Enum(f));
            }
        }
        if let Some(ct) = enum_of(holder, t::CERTIFICATE_TYPE)? {
            o.set_attr("Certificate Type", AttrValue::Enum(ct));
            if let Some(v) = bytes_of(holder, t::CERTIFICATE_VALUE)? {
                o.set_attr("Certificate Length", AttrValue::Int(v.len() as i32));
                if let Ok((_, c)) = x509_parser::parse_x509_certificate(v) {
                    let cn = |n: &x509_parser::x509::X509Name<'_>| {
                        n.iter_common_name()
                            .next()
                            .and_then(|c| c.as_str().ok())
                            .map(str::to_owned)
                    };
                    if let Some(s) = cn(c.subject()) {
                        o.set_attr("Certificate Subject CN", AttrValue::Text(s));
                    }
                    if let Some(s) = cn(c.issuer()) {
                        o.set_attr("Certificate Issuer CN", AttrValue::Text(s));
                    }
                }
            }
        }
        let incoming = incoming
            .into_iter()
            .filter(|a| !matches!(a.name.as_str(), "Certificate Type" | "Certificate Length"))
            .collect();
        let uid = self.finish_new(ctx, o, incoming, &bytes)?;
        Ok(vec![Ttlv::text(t::UNIQUE_IDENTIFIER, uid)])
    }

    fn rekey(&self, ctx: &mut Ctx<'_>, p: &Ttlv) -> Result<Vec<Ttlv>, KmipError> {
        let uid = self.uid_arg(ctx, p)?;
        let mut old = self.load_owned(ctx, &uid)?;
        if old.object_type != object_type::SYMMETRIC_KEY {
            return Err(KmipError::new(
                Reason::IllegalOperation,
                "only symmetric keys are re-keyed",
            ));
        }
        if effective_state(&old, ctx.now).is_destroyed() {
            return Err(obj::wrong_state(&old, ctx.now, "it cannot be re-keyed"));
        }
        let offset = match p.child(t::OFFSET).map(|o| &o.value) {
            Some(Value::Interval(s)) => Some(*s as i64),
            Some(_) => return Err(KmipError::invalid_message("Offset must be an Interval")),
            None => None,
        };
        let len = obj::int_attr(&old, obj::LENGTH).unwrap_or(256);
        let alg = obj::enum_attr(&old, obj::ALGORITHM).unwrap_or(crypto_alg::AES);
        let material = keyhold_crypto::random_secret(material_len(alg, len)).map_err(|_| {
            KmipError::new(Reason::GeneralFailure, "random number generator failed")
        })?;
        let mut n = self.new_object(ctx, old.object_type)?;
        n.exportable = old.exportable;
        // Carry over what describes the key; names move to the new key.
        for a in &old.attrs {
            if matches!(
                a.name.as_str(),
                obj::ALGORITHM
                    | obj::LENGTH
                    | obj::USAGE_MASK
                    | obj::PARAMETERS
                    | "Object Group"
                    | "Contact Information"
                    | "Application Specific Information"
            ) || attrs::is_custom(&a.name)
                || attrs::is_internal(&a.name)
                || a.name == obj::NAME
            {
                n.attrs.push(a.clone());
            }
        }
        let was_active = old.attr(obj::ACTIVATION_DATE).is_some();
        match offset {
            Some(s) => n.set_attr(obj::ACTIVATION_DATE, AttrValue::DateTime(ctx.now + s)),
            None if was_active => n.set_attr(obj::ACTIVATION_DATE, AttrValue::DateTime(ctx.now)),
            None => {}
        }
        let link = |ty: u32, to: &str| {
            AttrValue::Struct(vec![
                (t::LINK_TYPE, AttrValue::Enum(ty)),
                (t::LINKED_OBJECT_IDENTIFIER, AttrValue::Text(to.to_owned())),
            ])
        };
        n.attrs.push(ObjectAttr {
            name: "Link".into(),
            value: link(crate::enums::link_type::REPLACED_OBJECT, &old.uid),
        });
        let incoming = attrs::parse_request_attributes(p)?;
        // The names move to the new key.
        old.remove_attr(obj::NAME);
        old.attrs.push(ObjectAttr {
            name: "Link".into(),
            value: link(crate::enums::link_type::REPLACEMENT_OBJECT, &n.uid),
        });
        self.save(ctx, &mut old)?;
        let new_uid = self.finish_new(ctx, n, incoming, material.expose())?;
        Ok(vec![Ttlv::text(t::UNIQUE_IDENTIFIER, new_uid)])
    }

    fn locate(&self, ctx: &mut Ctx<'_>, p: &Ttlv) -> Result<Vec<Ttlv>, KmipError> {
        let max = int_of(p, t::MAXIMUM_ITEMS)?;
        let offset = int_of(p, t::OFFSET_ITEMS)?.unwrap_or(0).max(0) as usize;
        let mut wanted = attrs::parse_request_attributes(p)?;
        // 2.x puts Object Type etc. inside Attributes; 1.x as Attributes too.
        if let Some(ot) = enum_of(p, t::OBJECT_TYPE)? {
            wanted.push(Incoming {
                name: "Object Type".into(),
                index: None,
                value: Some(AttrValue::Enum(ot)),
            });
        }
        let fresh_only = enum_of(p, t::OBJECT_GROUP_MEMBER)? == Some(1);
        // Destroyed objects only when asked for: by the 2.x Destroyed
        // Storage mask bit, or by a State criterion.
        let mask = int_of(p, t::STORAGE_STATUS_MASK)?.unwrap_or(1);
        let with_destroyed = mask & 4 != 0 || wanted.iter().any(|w| w.name == "State");
        // Only what this identity may see is read (through indexes).
        let mut all = self
            .service
            .list_objects_for(&ctx.client.identity, with_destroyed)
            .map_err(service_err)?;
        // XKS keys granted to someone come first: the newest-first order
        // below puts KMIP's own objects ahead of them.
        let mut xks = xks_keys::granted_objects(&self.service).map_err(service_err)?;
        xks.retain(|o| {
            KeyService::may_use_object(o, &ctx.client.identity)
                && (with_destroyed || !o.state.is_destroyed())
        });
        xks.append(&mut all);
        let mut all = xks;
        // Newest first: a client that locates by name takes the current key.
        all.reverse();
        let mut found = Vec::new();
        for o in &all {
            let view = obj::view(o, ctx.now);
            let matches = wanted.iter().enumerate().all(|(i, w)| {
                let Some(want) = &w.value else { return true };
                // Two values of one date attribute are a range.
                if let AttrValue::DateTime(a) = want {
                    let other = wanted.iter().enumerate().find(|(j, x)| {
                        *j != i
                            && x.name == w.name
                            && matches!(x.value, Some(AttrValue::DateTime(_)))
                    });
                    if let Some((
                        _,
                        Incoming {
                            value: Some(AttrValue::DateTime(b)),
                            ..
                        },
                    )) = other
                    {
                        let (lo, hi) = ((*a).min(*b), (*a).max(*b));
                        return view.iter().any(|(n, v)| {
                            *n == w.name
                                && matches!(v, AttrValue::DateTime(t) if (lo..=hi).contains(t))
                        });
                    }
                }
                view.iter()
                    .filter(|(n, _)| *n == w.name)
                    .any(|(_, have)| attr_matches(have, want))
            });
            if matches && (!fresh_only || o.attr("Fresh") == Some(&AttrValue::Bool(true))) {
                found.push(o.uid.clone());
            }
        }
        let total = found.len();
        let mut out = Vec::new();
        if ctx.version.at_least(1, 3) {
            out.push(Ttlv::int(t::LOCATED_ITEMS, total as i32));
        }
        let take = max.map_or(usize::MAX, |m| m.max(0) as usize);
        out.extend(
            found
                .into_iter()
                .skip(offset)
                .take(take)
                .map(|u| Ttlv::text(t::UNIQUE_IDENTIFIER, u)),
        );
        Ok(out)
    }

    fn get(&self, ctx: &mut Ctx<'_>, p: &Ttlv) -> Result<Vec<Ttlv>, KmipError> {
        let uid = self.uid_arg(ctx, p)?;
        let mut o = self.load(ctx, &uid)?;
        if enum_of(p, t::KEY_COMPRESSION_TYPE)?.is_some() {
            return Err(KmipError::new(
                Reason::FeatureNotSupported,
                "key compression applies to elliptic-curve keys only",
            ));
        }
        let state = effective_state(&o, ctx.now);
        if state.is_destroyed() || !o.has_material {
            return Err(KmipError::new(
                Reason::ObjectDestroyed,
                format!("object {uid} is destroyed: its material is gone"),
            ));
        }
        if o.attr("Sensitive") == Some(&AttrValue::Bool(true)) {
            return Err(KmipError::new(
                Reason::Sensitive,
                format!("object {uid} is sensitive: its material is never returned"),
            ));
        }
        if !o.exportable {
            return Err(KmipError::new(
                Reason::NotExtractable,
                format!("object {uid} is not exportable: its key material never leaves Keyhold"),
            ));
        }
        let want_format = enum_of(p, t::KEY_FORMAT_TYPE)?;
        let material = self.material(&o)?;
        if let Some(tag) = stored_as_is(o.object_type) {
            let holder = Ttlv::decode(material.expose(), &Limits::default()).map_err(|_| {
                KmipError::new(Reason::GeneralFailure, "the stored object is damaged")
            })?;
            if p.child(t::KEY_WRAPPING_SPECIFICATION).is_some() {
                return Err(KmipError::new(
                    Reason::FeatureNotSupported,
                    "wrapping is offered for symmetric keys and secret data only",
                ));
            }
            let have = holder
                .child(t::KEY_BLOCK)
                .and_then(|b| match b.child(t::KEY_FORMAT_TYPE) {
                    Some(Ttlv {
                        value: Value::Enumeration(f),
                        ..
                    }) => Some(*f),
                    _ => None,
                });
            if let (Some(want), Some(have)) = (want_format, have) {
                if want != have {
                    return Err(KmipError::new(
                        Reason::KeyFormatTypeNotSupported,
                        format!("object {uid} is kept in format {have:#x} only; converting to {want:#x} is not supported"),
                    ));
                }
            }
            self.mark_served(&mut o);
            return Ok(vec![
                Ttlv::enumeration(t::OBJECT_TYPE, o.object_type),
                Ttlv::text(t::UNIQUE_IDENTIFIER, uid),
                Ttlv::new(tag, holder.value),
            ]);
        }
        let want_format = want_format.or_else(|| obj::enum_attr(&o, FORMAT_ATTR));
        let (holder_tag, format, extra) = match o.object_type {
            object_type::SYMMETRIC_KEY => (
                t::SYMMETRIC_KEY,
                want_format.unwrap_or(key_format::RAW),
                vec![],
            ),
            _ => (
                t::SECRET_DATA,
                want_format.unwrap_or(key_format::OPAQUE),
                vec![Ttlv::enumeration(
                    t::SECRET_DATA_TYPE,
                    obj::enum_attr(&o, "keyhold:secret-data-type")
                        .unwrap_or(crate::enums::secret_data_type::PASSWORD),
                )],
            ),
        };
        let key_material = match format {
            key_format::RAW | key_format::OPAQUE => {
                Ttlv::bytes(t::KEY_MATERIAL, material.expose().to_vec())
            }
            key_format::TRANSPARENT_SYMMETRIC_KEY
                if o.object_type == object_type::SYMMETRIC_KEY =>
            {
                Ttlv::structure(
                    t::KEY_MATERIAL,
                    vec![Ttlv::bytes(t::KEY, material.expose().to_vec())],
                )
            }
            other => {
                return Err(KmipError::new(
                    Reason::KeyFormatTypeNotSupported,
                    format!("key format type {other:#x} is not supported for this object"),
                ))
            }
        };
        let mut key_value = Ttlv::structure(t::KEY_VALUE, vec![key_material]);
        let mut wrapping_data = None;
        if let Some(spec) = p.child(t::KEY_WRAPPING_SPECIFICATION) {
            let w = self.wrapping(ctx, spec)?;
            ctx.touched = Some(uid.clone());
            let plain = if w.no_encoding {
                match (format, &key_value.items()[0].value) {
                    (key_format::RAW | key_format::OPAQUE, Value::ByteString(b)) => b.clone(),
                    _ => {
                        return Err(KmipError::invalid_field(
                            "No Encoding wraps Raw or Opaque key material only",
                        ))
                    }
                }
            } else {
                key_value.encode()
            };
            let wrapped = sym::aes_key_wrap(w.kek.expose(), &plain, w.padded)
                .map_err(|_| KmipError::new(Reason::CryptographicFailure, "key wrapping failed"))?;
            // No Encoding wraps just the Key Material, inside a plain Key
            // Value; TTLV Encoding wraps the whole encoded Key Value.
            key_value = if w.no_encoding {
                Ttlv::structure(t::KEY_VALUE, vec![Ttlv::bytes(t::KEY_MATERIAL, wrapped)])
            } else {
                Ttlv::bytes(t::KEY_VALUE, wrapped)
            };
            wrapping_data = Some(w.data);
        }
        let mut block = vec![Ttlv::enumeration(t::KEY_FORMAT_TYPE, format), key_value];
        if o.object_type == object_type::SYMMETRIC_KEY {
            if let Some(a) = obj::enum_attr(&o, obj::ALGORITHM) {
                block.push(Ttlv::enumeration(t::CRYPTOGRAPHIC_ALGORITHM, a));
            }
            if let Some(l) = obj::int_attr(&o, obj::LENGTH) {
                block.push(Ttlv::int(t::CRYPTOGRAPHIC_LENGTH, l));
            }
        }
        block.extend(wrapping_data);
        let mut holder = extra;
        holder.push(Ttlv::structure(t::KEY_BLOCK, block));
        self.mark_served(&mut o);
        Ok(vec![
            Ttlv::enumeration(t::OBJECT_TYPE, o.object_type),
            Ttlv::text(t::UNIQUE_IDENTIFIER, uid),
            Ttlv::structure(holder_tag, holder),
        ])
    }

    /// Clears Fresh on the first Get, and grants the client its lease: how
    /// long it may use the key material before asking again.
    fn mark_served(&self, o: &mut ManagedObject) {
        if o.attr("Fresh") == Some(&AttrValue::Bool(true)) {
            o.set_attr("Fresh", AttrValue::Bool(false));
            o.set_attr("Lease Time", AttrValue::Interval(LEASE_TIME_SECS));
            // Losing this race only leaves Fresh set: not worth failing Get.
            let _ = self.service.update_object(o);
        }
    }

    /// The wrapping key and method a Key Wrapping Specification asks for.
    fn wrapping(&self, ctx: &mut Ctx<'_>, spec: &Ttlv) -> Result<Wrapping, KmipError> {
        match enum_of(spec, t::WRAPPING_METHOD)? {
            Some(1) => {}
            Some(m) => {
                return Err(KmipError::new(
                    Reason::FeatureNotSupported,
                    format!("wrapping method {m:#x} is not supported (Encrypt is)"),
                ))
            }
            None => return Err(KmipError::missing("Wrapping Method is missing")),
        }
        if spec.child(t::MAC_SIGNATURE_KEY_INFORMATION).is_some() {
            return Err(KmipError::new(
                Reason::FeatureNotSupported,
                "MAC/signature key information is not supported",
            ));
        }
        let eki = spec
            .child(t::ENCRYPTION_KEY_INFORMATION)
            .ok_or_else(|| KmipError::missing("Encryption Key Information is missing"))?;
        let kuid = text_of(eki, t::UNIQUE_IDENTIFIER)?
            .ok_or_else(|| KmipError::missing("the wrapping key's Unique Identifier is missing"))?
            .to_owned();
        let mode = match eki.child(t::CRYPTOGRAPHIC_PARAMETERS) {
            Some(cp) => enum_of(cp, t::BLOCK_CIPHER_MODE)?.unwrap_or(bcm::NIST_KEY_WRAP),
            None => bcm::NIST_KEY_WRAP,
        };
        let padded = match mode {
            bcm::NIST_KEY_WRAP => false,
            bcm::AES_KEY_WRAP_PADDING => true,
            other => {
                return Err(KmipError::new(
                    Reason::FeatureNotSupported,
                    format!("key wrapping mode {other:#x} is not supported (NIST Key Wrap, AES Key Wrap with Padding are)"),
                ))
            }
        };
        let no_encoding = enum_of(spec, t::ENCODING_OPTION)? == Some(1);
        let (k, kek) = self.usable(ctx, &kuid, usage_mask::WRAP_KEY, "wrap keys")?;
        if obj::enum_attr(&k, obj::ALGORITHM) != Some(crypto_alg::AES)
            || !matches!(kek.len(), 16 | 32)
        {
            return Err(KmipError::new(
                Reason::IllegalOperation,
                format!("object {kuid} is not an AES-128 or AES-256 key"),
            ));
        }
        let mut data = vec![
            Ttlv::enumeration(t::WRAPPING_METHOD, 1),
            Ttlv::structure(
                t::ENCRYPTION_KEY_INFORMATION,
                vec![
                    Ttlv::text(t::UNIQUE_IDENTIFIER, kuid),
                    Ttlv::structure(
                        t::CRYPTOGRAPHIC_PARAMETERS,
                        vec![Ttlv::enumeration(t::BLOCK_CIPHER_MODE, mode)],
                    ),
                ],
            ),
        ];
        if ctx.version.at_least(1, 1) {
            data.push(Ttlv::enumeration(
                t::ENCODING_OPTION,
                if no_encoding { 1 } else { 2 },
            ));
        }
        Ok(Wrapping {
            kek,
            padded,
            no_encoding,
            data: Ttlv::structure(t::KEY_WRAPPING_DATA, data),
        })
    }

    fn get_attributes(&self, ctx: &mut Ctx<'_>, p: &Ttlv) -> Result<Vec<Ttlv>, KmipError> {
        let uid = self.uid_arg(ctx, p)?;
        let o = self.load(ctx, &uid)?;
        let mut wanted = Vec::new();
        for n in p
            .children(t::ATTRIBUTE_NAME)
            .chain(p.children(t::ATTRIBUTE_REFERENCE))
        {
            wanted.push(attrs::reference_name(n)?);
        }
        let rendered = obj::render_view(&o, ctx.now, &wanted, ctx.version);
        let mut out = vec![Ttlv::text(t::UNIQUE_IDENTIFIER, uid)];
        if ctx.version.is_v2() {
            out.push(Ttlv::structure(t::ATTRIBUTES, rendered));
        } else {
            out.extend(rendered);
        }
        Ok(out)
    }

    fn get_attribute_list(&self, ctx: &mut Ctx<'_>, p: &Ttlv) -> Result<Vec<Ttlv>, KmipError> {
        let uid = self.uid_arg(ctx, p)?;
        let o = self.load(ctx, &uid)?;
        let mut out = vec![Ttlv::text(t::UNIQUE_IDENTIFIER, uid)];
        out.extend(
            obj::attribute_names(&o, ctx.now)
                .iter()
                .filter_map(|n| attrs::render_reference(n, ctx.version)),
        );
        Ok(out)
    }

    fn add_attribute(&self, ctx: &mut Ctx<'_>, p: &Ttlv) -> Result<Vec<Ttlv>, KmipError> {
        let uid = self.uid_arg(ctx, p)?;
        let mut o = self.load_owned(ctx, &uid)?;
        let a = if ctx.version.is_v2() {
            attrs::parse_v2_attribute(
                p.child(t::NEW_ATTRIBUTE)
                    .and_then(|n| n.items().first())
                    .ok_or_else(|| KmipError::missing("New Attribute is missing"))?,
            )?
        } else {
            attrs::parse_v1_attribute(
                p.child(t::ATTRIBUTE)
                    .ok_or_else(|| KmipError::missing("Attribute is missing"))?,
            )?
        };
        let name = a.name.clone();
        if a.value.is_some() && o.attrs_named(&name).any(|v| Some(v) == a.value.as_ref()) {
            return Err(KmipError::new(
                if name == obj::NAME {
                    Reason::NonUniqueNameAttribute
                } else {
                    Reason::InvalidField
                },
                format!("object {uid} already has this {name}"),
            ));
        }
        let single = attrs::def_by_name(&name).is_some_and(|d| !d.multi);
        if single && o.attr(&name).is_some() {
            return Err(KmipError::new(
                Reason::AttributeSingleValued,
                format!("{name} already has a value; use Modify Attribute"),
            ));
        }
        self.apply(ctx, &mut o, a, false)?;
        self.save(ctx, &mut o)?;
        let index = o.attrs_named(&name).count().saturating_sub(1);
        let value = o
            .attrs_named(&name)
            .last()
            .cloned()
            .unwrap_or(AttrValue::Int(0));
        let mut out = vec![Ttlv::text(t::UNIQUE_IDENTIFIER, uid)];
        if !ctx.version.is_v2() {
            out.extend(attrs::render(&name, index, &value, ctx.version));
        }
        Ok(out)
    }

    fn modify_attribute(&self, ctx: &mut Ctx<'_>, p: &Ttlv) -> Result<Vec<Ttlv>, KmipError> {
        let uid = self.uid_arg(ctx, p)?;
        let mut o = self.load_owned(ctx, &uid)?;
        let (new, current) = if ctx.version.is_v2() {
            let new = p
                .child(t::NEW_ATTRIBUTE)
                .and_then(|n| n.items().first())
                .ok_or_else(|| KmipError::missing("New Attribute is missing"))?;
            let cur = match p
                .child(t::CURRENT_ATTRIBUTE)
                .and_then(|c| c.items().first())
            {
                Some(c) => Some(attrs::parse_v2_attribute(c)?),
                None => None,
            };
            (attrs::parse_v2_attribute(new)?, cur)
        } else {
            let a = p
                .child(t::ATTRIBUTE)
                .ok_or_else(|| KmipError::missing("Attribute is missing"))?;
            (attrs::parse_v1_attribute(a)?, None)
        };
        let name = new.name.clone();
        if let Some(def) = attrs::def_by_name(&name) {
            if def.setter != Setter::Client {
                return Err(KmipError::new(
                    Reason::AttributeReadOnly,
                    format!("{name} cannot be modified by a client"),
                ));
            }
        }
        let current = current.as_ref().map(|c| c.value.as_ref());
        let Some((at, index)) = find_instance(&o, &name, current, new.index) else {
            return Err(KmipError::new(
                Reason::AttributeNotFound,
                format!("object {uid} has no such {name} to modify"),
            ));
        };
        // Validate through the same rules as a new value, then put it in place.
        let mut probe = o.clone();
        probe.attrs.remove(at);
        self.apply(ctx, &mut probe, new, false)?;
        let value = probe
            .attrs_named(&name)
            .last()
            .cloned()
            .ok_or_else(|| KmipError::new(Reason::GeneralFailure, "attribute vanished"))?;
        o.exportable = probe.exportable;
        o.attrs[at].value = value.clone();
        self.save(ctx, &mut o)?;
        let mut out = vec![Ttlv::text(t::UNIQUE_IDENTIFIER, uid)];
        if !ctx.version.is_v2() {
            out.extend(attrs::render(&name, index, &value, ctx.version));
        }
        Ok(out)
    }

    fn set_attribute(&self, ctx: &mut Ctx<'_>, p: &Ttlv) -> Result<Vec<Ttlv>, KmipError> {
        let uid = self.uid_arg(ctx, p)?;
        let mut o = self.load_owned(ctx, &uid)?;
        let new = p
            .child(t::NEW_ATTRIBUTE)
            .and_then(|n| n.items().first())
            .ok_or_else(|| KmipError::missing("New Attribute is missing"))?;
        let a = attrs::parse_v2_attribute(new)?;
        if attrs::def_by_name(&a.name).is_some_and(|d| d.multi) {
            return Err(KmipError::new(
                Reason::AttributeSingleValued,
                format!(
                    "{} takes several values: use Add or Modify Attribute",
                    a.name
                ),
            ));
        }
        let name = a.name.clone();
        if attrs::is_custom(&name) {
            o.remove_attr(&name);
        }
        self.apply(ctx, &mut o, a, false)?;
        self.save(ctx, &mut o)?;
        Ok(vec![Ttlv::text(t::UNIQUE_IDENTIFIER, uid)])
    }

    fn delete_attribute(&self, ctx: &mut Ctx<'_>, p: &Ttlv) -> Result<Vec<Ttlv>, KmipError> {
        let uid = self.uid_arg(ctx, p)?;
        let mut o = self.load_owned(ctx, &uid)?;
        let (name, index, value) = if ctx.version.is_v2() {
            if let Some(c) = p
                .child(t::CURRENT_ATTRIBUTE)
                .and_then(|c| c.items().first())
            {
                let a = attrs::parse_v2_attribute(c)?;
                (a.name, None, a.value)
            } else {
                let r = p.child(t::ATTRIBUTE_REFERENCE).ok_or_else(|| {
                    KmipError::missing("Current Attribute or Attribute Reference is missing")
                })?;
                (attrs::reference_name(r)?, None, None)
            }
        } else {
            let n = text_of(p, t::ATTRIBUTE_NAME)?
                .ok_or_else(|| KmipError::missing("Attribute Name is missing"))?;
            (n.to_owned(), int_of(p, t::ATTRIBUTE_INDEX)?, None)
        };
        if !attrs::is_custom(&name) {
            let def = attrs::def_by_name(&name).ok_or_else(|| {
                KmipError::invalid_field(format!("{name} is not an attribute Keyhold knows"))
            })?;
            if def.setter != Setter::Client || name == obj::ACTIVATION_DATE {
                return Err(KmipError::new(
                    Reason::AttributeReadOnly,
                    format!("{name} cannot be deleted"),
                ));
            }
        }
        let Some((at, index)) = find_instance(&o, &name, value.as_ref().map(Some), index) else {
            return Err(KmipError::new(
                Reason::AttributeNotFound,
                format!("object {uid} has no such {name} to delete"),
            ));
        };
        let removed = o.attrs.remove(at);
        self.save(ctx, &mut o)?;
        let mut out = vec![Ttlv::text(t::UNIQUE_IDENTIFIER, uid)];
        if !ctx.version.is_v2() {
            out.extend(attrs::render(&name, index, &removed.value, ctx.version));
        }
        Ok(out)
    }

    /// Check: would the object allow this usage mask / this many uses?
    /// Obtain Lease: a new Lease Time for an object the client may use, and
    /// its Last Change Date. None is granted for an object that may not be
    /// used now (not Active, or Keyhold locked down): the client must then
    /// stop using what it cached.
    fn obtain_lease(&self, ctx: &mut Ctx<'_>, p: &Ttlv) -> Result<Vec<Ttlv>, KmipError> {
        let uid = self.uid_arg(ctx, p)?;
        let o = self.load(ctx, &uid)?;
        self.service.refuse_in_lockdown().map_err(service_err)?;
        if effective_state(&o, ctx.now) != ObjectState::Active {
            return Err(obj::wrong_state(
                &o,
                ctx.now,
                "a lease is granted only for an Active object",
            ));
        }
        let changed = [obj::LAST_CHANGE, obj::INITIAL_DATE]
            .iter()
            .find_map(|n| match o.attr(n) {
                Some(AttrValue::DateTime(t)) => Some(*t),
                _ => None,
            })
            .unwrap_or(ctx.now);
        Ok(vec![
            Ttlv::text(t::UNIQUE_IDENTIFIER, uid),
            Ttlv::interval(t::LEASE_TIME, LEASE_TIME_SECS),
            Ttlv::date_time(t::LAST_CHANGE_DATE, changed),
        ])
    }

    fn check(&self, ctx: &mut Ctx<'_>, p: &Ttlv) -> Result<Vec<Ttlv>, KmipError> {
        let uid = self.uid_arg(ctx, p)?;
        let o = self.load(ctx, &uid)?;
        if let Some(want) = int_of(p, t::CRYPTOGRAPHIC_USAGE_MASK)? {
            let have = obj::int_attr(&o, obj::USAGE_MASK).unwrap_or(0);
            if have & want != want {
                return Err(KmipError::new(
                    Reason::IncompatibleCryptographicUsageMask,
                    format!("the usage mask of object {uid} does not allow {want:#x}"),
                ));
            }
        }
        if let Some(n) = p.child(t::USAGE_LIMITS_COUNT).and_then(|c| match c.value {
            Value::LongInteger(n) => Some(n),
            Value::Integer(n) => Some(i64::from(n)),
            _ => None,
        }) {
            if usage_limits(&o).is_some_and(|(left, _)| n > left) {
                return Err(KmipError::new(
                    Reason::PermissionDenied,
                    format!("object {uid} has fewer than {n} uses left"),
                ));
            }
        }
        Ok(vec![Ttlv::text(t::UNIQUE_IDENTIFIER, uid)])
    }

    fn activate(&self, ctx: &mut Ctx<'_>, p: &Ttlv) -> Result<Vec<Ttlv>, KmipError> {
        let uid = self.uid_arg(ctx, p)?;
        let mut o = self.load_owned(ctx, &uid)?;
        if effective_state(&o, ctx.now) != ObjectState::PreActive {
            return Err(obj::wrong_state(
                &o,
                ctx.now,
                "only a PreActive object can be activated",
            ));
        }
        o.state = ObjectState::Active;
        o.set_attr(obj::ACTIVATION_DATE, AttrValue::DateTime(ctx.now));
        self.save(ctx, &mut o)?;
        Ok(vec![Ttlv::text(t::UNIQUE_IDENTIFIER, uid)])
    }

    fn revoke(&self, ctx: &mut Ctx<'_>, p: &Ttlv) -> Result<Vec<Ttlv>, KmipError> {
        let uid = self.uid_arg(ctx, p)?;
        let mut o = self.load_owned(ctx, &uid)?;
        let reason = p
            .child(t::REVOCATION_REASON)
            .ok_or_else(|| KmipError::missing("Revocation Reason is missing"))?;
        let code = enum_of(reason, t::REVOCATION_REASON_CODE)?
            .ok_or_else(|| KmipError::missing("Revocation Reason Code is missing"))?;
        if !(1..=7).contains(&code) && code < 0x8000_0000 {
            return Err(KmipError::invalid_field(format!(
                "Revocation Reason Code {code} is not defined"
            )));
        }
        let state = effective_state(&o, ctx.now);
        if state.is_destroyed() {
            return Err(obj::wrong_state(&o, ctx.now, "it cannot be revoked"));
        }
        let compromise = matches!(
            code,
            revocation_reason::KEY_COMPROMISE | revocation_reason::CA_COMPROMISE
        );
        if compromise {
            let occurred = message::date_of(p, t::COMPROMISE_OCCURRENCE_DATE)?.unwrap_or(ctx.now);
            o.state = ObjectState::Compromised;
            o.set_attr("Compromise Date", AttrValue::DateTime(ctx.now));
            o.set_attr("Compromise Occurrence Date", AttrValue::DateTime(occurred));
        } else {
            match state {
                ObjectState::Active | ObjectState::PreActive => {
                    o.state = ObjectState::Deactivated;
                    o.set_attr(obj::DEACTIVATION_DATE, AttrValue::DateTime(ctx.now));
                }
                _ => {
                    return Err(obj::wrong_state(
                        &o,
                        ctx.now,
                        "it is no longer active; only a compromise can be recorded now",
                    ))
                }
            }
        }
        o.set_attr("Revocation Reason", to_stored_struct(reason));
        self.save(ctx, &mut o)?;
        Ok(vec![Ttlv::text(t::UNIQUE_IDENTIFIER, uid)])
    }

    fn destroy(&self, ctx: &mut Ctx<'_>, p: &Ttlv) -> Result<Vec<Ttlv>, KmipError> {
        let uid = self.uid_arg(ctx, p)?;
        if ctx.undo.is_some() {
            return Err(KmipError::new(
                Reason::FeatureNotSupported,
                "Destroy erases key material and cannot be undone: send it without the Undo option",
            ));
        }
        let mut o = self.load_owned(ctx, &uid)?;
        let state = effective_state(&o, ctx.now);
        o.state = match state {
            ObjectState::PreActive | ObjectState::Deactivated => ObjectState::Destroyed,
            ObjectState::Compromised => ObjectState::DestroyedCompromised,
            ObjectState::Active => {
                return Err(obj::wrong_state(
                    &o,
                    ctx.now,
                    "revoke it before destroying it",
                ))
            }
            _ => return Err(obj::wrong_state(&o, ctx.now, "it is already destroyed")),
        };
        o.has_material = false;
        o.set_attr("Destroy Date", AttrValue::DateTime(ctx.now));
        self.save(ctx, &mut o)?;
        self.service.purge_erased_copies().map_err(|e| {
            KmipError::new(
                Reason::GeneralFailure,
                format!("the object is destroyed, but {e}"),
            )
        })?;
        Ok(vec![Ttlv::text(t::UNIQUE_IDENTIFIER, uid)])
    }

    /// The key of an object usable for `mask` now.
    fn usable(
        &self,
        ctx: &mut Ctx<'_>,
        uid: &str,
        mask: i32,
        what: &str,
    ) -> Result<(ManagedObject, Arc<keyhold_crypto::SecretBytes>), KmipError> {
        let o = self.load(ctx, uid)?;
        if effective_state(&o, ctx.now) != ObjectState::Active {
            return Err(obj::wrong_state(
                &o,
                ctx.now,
                &format!("only an Active key can {what}"),
            ));
        }
        if o.object_type != object_type::SYMMETRIC_KEY {
            return Err(KmipError::new(
                Reason::IllegalOperation,
                format!("object {uid} is not a symmetric key"),
            ));
        }
        if let Some(m) = obj::int_attr(&o, obj::USAGE_MASK) {
            if m & mask == 0 {
                return Err(KmipError::new(
                    Reason::IncompatibleCryptographicUsageMask,
                    format!("the usage mask of object {uid} does not allow it to {what}"),
                ));
            }
        }
        // Protecting (encrypt, MAC) stops at the Protect Stop Date;
        // processing (decrypt, verify) starts at the Process Start Date.
        let date = |n: &str| match o.attr(n) {
            Some(AttrValue::DateTime(t)) => Some(*t),
            _ => None,
        };
        let protect = mask & (usage_mask::ENCRYPT | usage_mask::MAC_GENERATE) != 0;
        if protect && date("Protect Stop Date").is_some_and(|t| t <= ctx.now) {
            return Err(KmipError::new(
                Reason::PastProtectStopDate,
                format!("object {uid} is past its Protect Stop Date: it can no longer {what}"),
            ));
        }
        if !protect && date("Process Start Date").is_some_and(|t| t > ctx.now) {
            return Err(KmipError::new(
                Reason::WrongKeyLifecycleState,
                format!("object {uid} is before its Process Start Date: it cannot {what} yet"),
            ));
        }
        let m = self.material(&o)?;
        Ok((o, m))
    }

    /// Counts a use against the object's Usage Limits, if it has any.
    fn consume_usage(
        &self,
        ctx: &Ctx<'_>,
        o: &mut ManagedObject,
        data_len: usize,
    ) -> Result<(), KmipError> {
        let Some((left, per_object)) = usage_limits(o) else {
            return Ok(());
        };
        let need = if per_object { 1 } else { data_len as i64 };
        if need > left {
            return Err(KmipError::new(
                Reason::PermissionDenied,
                format!(
                    "object {} has used up its Usage Limits ({left} left, {need} asked)",
                    o.uid
                ),
            ));
        }
        let Some(AttrValue::Struct(fields)) = o.attr("Usage Limits") else {
            return Ok(());
        };
        let mut next: Vec<(u32, AttrValue)> = fields
            .iter()
            .filter(|(tag, _)| *tag != t::USAGE_LIMITS_COUNT)
            .cloned()
            .collect();
        next.push((t::USAGE_LIMITS_COUNT, AttrValue::Long(left - need)));
        o.set_attr("Usage Limits", AttrValue::Struct(next));
        self.save(ctx, o)
    }

    fn crypt(&self, ctx: &mut Ctx<'_>, p: &Ttlv, encrypt: bool) -> Result<Vec<Ttlv>, KmipError> {
        let uid = self.uid_arg(ctx, p)?;
        let (mask, what) = if encrypt {
            (usage_mask::ENCRYPT, "encrypt")
        } else {
            (usage_mask::DECRYPT, "decrypt")
        };
        let (mut o, key) = self.usable(ctx, &uid, mask, what)?;
        let cipher = match obj::enum_attr(&o, obj::ALGORITHM) {
            Some(crypto_alg::AES) => Cipher::Aes,
            Some(crypto_alg::CHACHA20_POLY1305) => Cipher::ChaChaPoly,
            Some(crypto_alg::CHACHA20) => Cipher::ChaCha,
            Some(crypto_alg::TRIPLE_DES) => Cipher::TripleDes,
            _ => {
                return Err(KmipError::new(
                    Reason::IllegalOperation,
                    format!(
                        "object {uid} is not an AES, Triple DES, ChaCha20 or ChaCha20-Poly1305 key"
                    ),
                ))
            }
        };
        let params = crypto_params(&o, p)?;
        // ChaCha20-Poly1305 is an AEAD like GCM: same fields, same checks.
        let mode = match (cipher, params.mode) {
            (Cipher::ChaChaPoly, None | Some(bcm::AEAD)) => bcm::GCM,
            (Cipher::ChaChaPoly, Some(m)) => {
                return Err(KmipError::invalid_field(format!(
                    "ChaCha20-Poly1305 takes Block Cipher Mode AEAD, not {m:#x}"
                )))
            }
            // A stream cipher: no block cipher mode.
            (Cipher::ChaCha, _) => 0,
            (Cipher::Aes, m) => m.unwrap_or(bcm::GCM),
            (Cipher::TripleDes, m) => m.unwrap_or(bcm::CBC),
        };
        let data = bytes_of(p, t::DATA)?.ok_or_else(|| KmipError::missing("Data is missing"))?;
        if data.len() > MAX_DATA {
            return Err(KmipError::invalid_field(format!(
                "Data is over {MAX_DATA} bytes"
            )));
        }
        self.consume_usage(ctx, &mut o, data.len())?;
        let iv = bytes_of(p, t::IV_COUNTER_NONCE)?;
        let aad = bytes_of(p, t::AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA)?.unwrap_or(&[]);
        let k = key.expose();
        let tag_len = params.tag_len.unwrap_or(16);
        if mode == bcm::GCM && !(12..=16).contains(&tag_len) {
            return Err(KmipError::new(
                Reason::GeneralFailure,
                format!("invalid tag length {tag_len}: AEAD tags are 12 to 16 bytes"),
            ));
        }
        let tag_len = tag_len as usize;
        // The IV lengths each mode takes.
        let iv_lens: &[usize] = match (cipher, mode) {
            (Cipher::ChaCha, _) => &[12, 8, 16],
            (Cipher::ChaChaPoly, _) => &[12],
            (Cipher::TripleDes, bcm::CBC) => &[8],
            (Cipher::TripleDes, bcm::ECB) => &[0],
            (Cipher::TripleDes, other) => {
                return Err(KmipError::new(
                    Reason::FeatureNotSupported,
                    format!("Triple DES takes block cipher mode CBC or ECB, not {other:#x}"),
                ))
            }
            (_, bcm::GCM) => &[12],
            (_, bcm::CBC | bcm::CTR) => &[16],
            (_, bcm::ECB) => &[0],
            (_, other) => {
                return Err(KmipError::new(
                    Reason::FeatureNotSupported,
                    format!(
                        "block cipher mode {other:#x} is not supported (GCM, CBC, CTR, ECB are)"
                    ),
                ))
            }
        };
        // AES-GCM also takes IVs of other lengths (NIST SP 800-38D).
        let any_gcm_iv = cipher == Cipher::Aes && mode == bcm::GCM;
        let check_iv = |iv: &[u8]| {
            if iv_lens.contains(&iv.len()) || (any_gcm_iv && (1..=MAX_GCM_IV).contains(&iv.len())) {
                return Ok(());
            }
            let want = if any_gcm_iv {
                format!("1 to {MAX_GCM_IV} bytes (12 recommended)")
            } else {
                iv_lens
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(" or ")
                    + " bytes"
            };
            Err(KmipError::invalid_field(format!(
                "the IV must be {want} for this mode, not {}",
                iv.len()
            )))
        };
        let init = bool_of(p, t::INIT_INDICATOR)? == Some(true);
        let last = bool_of(p, t::FINAL_INDICATOR)? == Some(true);
        let correlation = bytes_of(p, t::CORRELATION_VALUE)?;
        if correlation.is_some() || (init && !last) {
            if cipher != Cipher::Aes || mode != bcm::GCM {
                return Err(KmipError::new(
                    Reason::FeatureNotSupported,
                    "streaming Encrypt/Decrypt (Init/Final Indicator, Correlation Value) is offered for AES-GCM only",
                ));
            }
            let step = Step {
                uid: &uid,
                encrypt,
                data,
                tag_len,
                last,
            };
            return match correlation {
                Some(cv) => self.stream_next(ctx, step, cv, p),
                None => {
                    let (iv, generated) = match iv {
                        None if !encrypt => return Err(missing_iv()),
                        iv => encryption_iv(iv, params.random_iv, iv_lens[0])?,
                    };
                    check_iv(&iv)?;
                    if generated {
                        self.charge_random_iv(&uid)?;
                    }
                    self.stream_start(ctx, step, k, iv, generated, aad)
                }
            };
        }
        let pad = match params.padding {
            None | Some(padding::NONE) => false,
            Some(padding::PKCS5) => true,
            Some(other) => {
                return Err(KmipError::new(
                    Reason::FeatureNotSupported,
                    format!("padding method {other:#x} is not supported (None, PKCS5 are)"),
                ))
            }
        };
        let mut out = vec![Ttlv::text(t::UNIQUE_IDENTIFIER, &uid)];
        if encrypt {
            let (iv, generated) = encryption_iv(iv, params.random_iv, iv_lens[0])?;
            check_iv(&iv)?;
            if generated && mode == bcm::GCM {
                self.charge_random_iv(&uid)?;
            }
            let (ct, tag) = match (cipher, mode) {
                (Cipher::ChaCha, _) => (
                    sym::chacha20(k, &iv, data).map_err(|_| crypto_fail("ChaCha20 failed"))?,
                    None,
                ),
                (Cipher::TripleDes, _) => (
                    sym::tdes_encrypt(k, (mode == bcm::CBC).then_some(&iv[..]), data, pad)
                        .map_err(|_| {
                            crypto_fail("encryption failed (without padding, Data must be whole 8-byte blocks)")
                        })?,
                    None,
                ),
                (_, bcm::GCM) => {
                    let (ct, tag) = match cipher {
                        Cipher::ChaChaPoly => sym::chacha20_poly1305_seal(k, &iv, aad, data)
                            .map(|(c, t)| (c, t.to_vec())),
                        _ if iv.len() == 12 => {
                            sym::aes_gcm_seal(k, &iv, aad, data).map(|(c, t)| (c, t.to_vec()))
                        }
                        _ => gcm::seal_any_iv(k, &iv, aad, data, 16),
                    }
                    .map_err(|_| crypto_fail("AEAD encryption failed"))?;
                    (ct, Some(tag[..tag_len].to_vec()))
                }
                (_, bcm::CBC | bcm::ECB) => {
                    let ct = if mode == bcm::CBC {
                        sym::aes_cbc_encrypt(k, &iv, data, pad)
                    } else {
                        sym::aes_ecb_encrypt(k, data, pad)
                    }
                    .map_err(|_| {
                        crypto_fail("encryption failed (without padding, Data must be whole 16-byte blocks)")
                    })?;
                    (ct, None)
                }
                _ => (
                    sym::aes_ctr(k, &iv, data).map_err(|_| crypto_fail("AES-CTR failed"))?,
                    None,
                ),
            };
            out.push(Ttlv::bytes(t::DATA, ct));
            if generated {
                out.push(Ttlv::bytes(t::IV_COUNTER_NONCE, iv));
            }
            if let Some(tag) = tag {
                out.push(Ttlv::bytes(t::AUTHENTICATED_ENCRYPTION_TAG, tag));
            }
        } else {
            let tag_given = bytes_of(p, t::AUTHENTICATED_ENCRYPTION_TAG)?;
            let (iv, rest) = match iv {
                Some(v) => (v, data),
                // GCM clients that send IV || ciphertext || tag in Data.
                None if mode == bcm::GCM && data.len() >= 12 + 16 => data.split_at(12),
                None if iv_lens == [0] => (&[][..], data),
                None => return Err(missing_iv()),
            };
            check_iv(iv)?;
            let pt = match (cipher, mode) {
                (Cipher::ChaCha, _) => {
                    sym::chacha20(k, iv, rest).map_err(|_| crypto_fail("ChaCha20 failed"))?
                }
                (Cipher::TripleDes, _) => {
                    sym::tdes_decrypt(k, (mode == bcm::CBC).then_some(iv), rest, pad).map_err(
                        |_| crypto_fail("decryption failed: wrong key, IV, padding or length"),
                    )?
                }
                (_, bcm::GCM) => {
                    let (ct, tag) = match tag_given {
                        Some(tag) => (rest, tag),
                        None if rest.len() >= 16 => rest.split_at(rest.len() - 16),
                        None => {
                            return Err(KmipError::missing(
                                "Authenticated Encryption Tag is missing",
                            ))
                        }
                    };
                    match cipher {
                        Cipher::ChaChaPoly => {
                            sym::chacha20_poly1305_open_short_tag(k, iv, aad, ct, tag)
                        }
                        _ if iv.len() == 12 => sym::aes_gcm_open_short_tag(k, iv, aad, ct, tag),
                        _ => gcm::open_any_iv(k, iv, aad, ct, tag).map(|p| p.to_vec()),
                    }
                    .map_err(|_| {
                        crypto_fail("authentication failed: wrong key, IV, AAD, tag or ciphertext")
                    })?
                }
                (_, bcm::CBC) => sym::aes_cbc_decrypt(k, iv, rest, pad).map_err(|_| {
                    crypto_fail("decryption failed: wrong key, IV, padding or length")
                })?,
                (_, bcm::ECB) => sym::aes_ecb_decrypt(k, rest, pad)
                    .map_err(|_| crypto_fail("decryption failed: wrong key, padding or length"))?,
                _ => sym::aes_ctr(k, iv, rest).map_err(|_| crypto_fail("AES-CTR failed"))?,
            };
            out.push(Ttlv::bytes(t::DATA, pt));
        }
        Ok(out)
    }

    /// The first part of a streamed AES-GCM encryption or decryption (Init
    /// Indicator), with its IV already checked (`generated`: made by the
    /// server, so returned): answers its output and the stream's
    /// Correlation Value.
    fn stream_start(
        &self,
        ctx: &mut Ctx<'_>,
        step: Step<'_>,
        key: &[u8],
        iv: Vec<u8>,
        generated: bool,
        aad: &[u8],
    ) -> Result<Vec<Ttlv>, KmipError> {
        let mut gcm = gcm::GcmStream::new(key, &iv, aad, step.encrypt)
            .map_err(|_| crypto_fail("AES-GCM could not start"))?;
        let part = gcm
            .update(step.data)
            .map_err(|_| crypto_fail("AES-GCM failed"))?;
        let stream = Stream::new(
            &ctx.client.identity,
            step.uid,
            step.encrypt,
            step.tag_len,
            gcm,
        );
        let cv = self.streams.open(stream).map_err(|_| {
            KmipError::new(
                Reason::GeneralFailure,
                "too many streamed operations are open: finish some first",
            )
        })?;
        let mut out = vec![
            Ttlv::text(t::UNIQUE_IDENTIFIER, step.uid.to_owned()),
            Ttlv::bytes(t::DATA, part),
        ];
        if generated {
            out.push(Ttlv::bytes(t::IV_COUNTER_NONCE, iv));
        }
        out.push(Ttlv::bytes(t::CORRELATION_VALUE, cv));
        Ok(out)
    }

    /// A later part of a stream (its Correlation Value given); the last one
    /// (Final Indicator) answers the tag, or checks it when decrypting.
    fn stream_next(
        &self,
        ctx: &mut Ctx<'_>,
        step: Step<'_>,
        cv: &[u8],
        p: &Ttlv,
    ) -> Result<Vec<Ttlv>, KmipError> {
        let mut s = self
            .streams
            .take(cv, &ctx.client.identity, step.uid)
            .map_err(|_| {
                KmipError::invalid_field(format!(
                    "no streamed operation on object {} has this Correlation Value (finished, idle for too long, or never started)",
                    step.uid
                ))
            })?;
        if s.encrypt != step.encrypt {
            let started = if s.encrypt { "an Encrypt" } else { "a Decrypt" };
            self.streams.put_back(cv.to_vec(), s);
            return Err(KmipError::invalid_field(format!(
                "this Correlation Value belongs to {started} stream"
            )));
        }
        let tag_given = bytes_of(p, t::AUTHENTICATED_ENCRYPTION_TAG)?;
        if step.last && !s.encrypt && tag_given.is_none() {
            self.streams.put_back(cv.to_vec(), s);
            return Err(KmipError::missing(
                "Authenticated Encryption Tag is missing from the last part",
            ));
        }
        // A failed part ends the stream: its state is no longer sound.
        let part = s
            .gcm
            .update(step.data)
            .map_err(|_| crypto_fail("AES-GCM failed"))?;
        let mut out = vec![
            Ttlv::text(t::UNIQUE_IDENTIFIER, step.uid.to_owned()),
            Ttlv::bytes(t::DATA, part),
        ];
        if !step.last {
            self.streams.put_back(cv.to_vec(), s);
            out.push(Ttlv::bytes(t::CORRELATION_VALUE, cv.to_vec()));
        } else if s.encrypt {
            let tag = s
                .gcm
                .finish_encrypt(s.tag_len)
                .map_err(|_| crypto_fail("AES-GCM failed"))?;
            out.push(Ttlv::bytes(t::AUTHENTICATED_ENCRYPTION_TAG, tag));
        } else {
            s.gcm
                .finish_decrypt(tag_given.unwrap_or_default())
                .map_err(|_| {
                    crypto_fail("authentication failed: wrong key, IV, AAD, tag or ciphertext (the earlier parts' output must be discarded)")
                })?;
        }
        Ok(out)
    }

    fn mac(&self, ctx: &mut Ctx<'_>, p: &Ttlv, verify: bool) -> Result<Vec<Ttlv>, KmipError> {
        let uid = self.uid_arg(ctx, p)?;
        let (mask, what) = if verify {
            (usage_mask::MAC_VERIFY, "verify MACs")
        } else {
            (usage_mask::MAC_GENERATE, "make MACs")
        };
        let (o, key) = self.usable(ctx, &uid, mask, what)?;
        let params = crypto_params(&o, p)?;
        let alg = params
            .algorithm
            .or_else(|| obj::enum_attr(&o, obj::ALGORITHM))
            .unwrap_or(0);
        let hash = match alg {
            crypto_alg::HMAC_SHA1 => MacHash::Sha1,
            crypto_alg::HMAC_SHA256 => MacHash::Sha256,
            crypto_alg::HMAC_SHA384 => MacHash::Sha384,
            crypto_alg::HMAC_SHA512 => MacHash::Sha512,
            _ => {
                return Err(KmipError::new(
                    Reason::IllegalOperation,
                    format!("object {uid} is not an HMAC key (HMAC-SHA1/256/384/512)"),
                ))
            }
        };
        let data = bytes_of(p, t::DATA)?.ok_or_else(|| KmipError::missing("Data is missing"))?;
        if data.len() > MAX_DATA {
            return Err(KmipError::invalid_field(format!(
                "Data is over {MAX_DATA} bytes"
            )));
        }
        let mut out = vec![Ttlv::text(t::UNIQUE_IDENTIFIER, uid)];
        if verify {
            let mac = bytes_of(p, t::MAC_DATA)?
                .ok_or_else(|| KmipError::missing("MAC Data is missing"))?;
            let ok = sym::hmac_verify(hash, key.expose(), data, mac);
            out.push(Ttlv::enumeration(
                t::VALIDITY_INDICATOR,
                if ok { 1 } else { 2 },
            ));
        } else {
            out.push(Ttlv::bytes(
                t::MAC_DATA,
                sym::hmac_sign(hash, key.expose(), data),
            ));
        }
        Ok(out)
    }

    fn rng_retrieve(&self, p: &Ttlv) -> Result<Vec<Ttlv>, KmipError> {
        let n = int_of(p, t::DATA_LENGTH)?
            .ok_or_else(|| KmipError::missing("Data Length is missing"))?;
        if !(1..=MAX_RNG).contains(&n) {
            return Err(KmipError::invalid_field(format!(
                "Data Length must be 1 to {MAX_RNG}"
            )));
        }
        let mut v = vec![0u8; n as usize];
        keyhold_crypto::fill_random(&mut v).map_err(|_| {
            KmipError::new(Reason::GeneralFailure, "random number generator failed")
        })?;
        Ok(vec![Ttlv::bytes(t::DATA, v)])
    }
}

/// How a Get wraps the key it returns.
struct Wrapping {
    kek: Arc<keyhold_crypto::SecretBytes>,
    padded: bool,
    no_encoding: bool,
    /// The Key Wrapping Data to put in the Key Block.
    data: Ttlv,
}

/// Cryptographic Parameters that matter to Keyhold's operations.
#[derive(Debug, Default)]
struct Params {
    mode: Option<u32>,
    padding: Option<u32>,
    algorithm: Option<u32>,
    random_iv: Option<bool>,
    tag_len: Option<i32>,
}

fn crypto_fail(m: &str) -> KmipError {
    KmipError::new(Reason::CryptographicFailure, m.to_owned())
}

/// A decryption without the IV its mode needs.
fn missing_iv() -> KmipError {
    KmipError::invalid_message("missing IV: IV/Counter/Nonce is required to decrypt in this mode")
}

/// The IV to encrypt with: the client's, unless it asked for a random one
/// (then giving one is an error), else `len` random bytes. Says whether
/// the server made it (and must return it).
fn encryption_iv(
    given: Option<&[u8]>,
    random_iv: Option<bool>,
    len: usize,
) -> Result<(Vec<u8>, bool), KmipError> {
    match given {
        Some(_) if random_iv == Some(true) => Err(KmipError::invalid_field(
            "an IV was given although Random IV asks the server for one",
        )),
        Some(v) => Ok((v.to_vec(), false)),
        None => {
            let mut v = vec![0u8; len];
            keyhold_crypto::fill_random(&mut v)
                .map_err(|_| crypto_fail("random number generator failed"))?;
            Ok((v, len > 0))
        }
    }
}

/// The request's Cryptographic Parameters, else the object's own.
fn crypto_params(o: &ManagedObject, p: &Ttlv) -> Result<Params, KmipError> {
    let from = |s: &Ttlv| -> Result<Params, KmipError> {
        Ok(Params {
            mode: enum_of(s, t::BLOCK_CIPHER_MODE)?,
            padding: enum_of(s, t::PADDING_METHOD)?,
            algorithm: enum_of(s, t::CRYPTOGRAPHIC_ALGORITHM)?,
            random_iv: bool_of(s, t::RANDOM_IV)?,
            tag_len: int_of(s, t::TAG_LENGTH)?,
        })
    };
    if let Some(s) = p.child(t::CRYPTOGRAPHIC_PARAMETERS) {
        return from(s);
    }
    if let Some(v) = o.attr(obj::PARAMETERS) {
        return from(&Ttlv::new(t::CRYPTOGRAPHIC_PARAMETERS, attrs::to_value(v)));
    }
    Ok(Params::default())
}

fn to_stored_struct(s: &Ttlv) -> AttrValue {
    attrs::to_stored(&s.value)
}

/// An object's Usage Limits: the uses left (Usage Limits Count, else the
/// Total) and whether a use is a whole operation (unit Object) rather
/// than a byte. None when the object has no limits.
fn usage_limits(o: &ManagedObject) -> Option<(i64, bool)> {
    let Some(AttrValue::Struct(fields)) = o.attr("Usage Limits") else {
        return None;
    };
    let get = |tag: u32| {
        fields.iter().find_map(|(t, v)| match (*t == tag, v) {
            (true, AttrValue::Long(n)) => Some(*n),
            (true, AttrValue::Int(n)) => Some(i64::from(*n)),
            (true, AttrValue::Enum(n)) => Some(i64::from(*n)),
            _ => None,
        })
    };
    let total = get(t::USAGE_LIMITS_TOTAL)?;
    let left = get(t::USAGE_LIMITS_COUNT).unwrap_or(total);
    Some((left, get(t::USAGE_LIMITS_UNIT) == Some(2)))
}

/// The attribute instance a Modify or Delete names: the one with the given
/// current value (`Some(None)`: a current attribute without a value, which
/// names nothing), else the one at `index` among equal names, else the
/// first. Returns its position in `o.attrs` and its index among its name.
fn find_instance(
    o: &ManagedObject,
    name: &str,
    current: Option<Option<&AttrValue>>,
    index: Option<i32>,
) -> Option<(usize, usize)> {
    let mut same = o
        .attrs
        .iter()
        .enumerate()
        .filter(|(_, a)| a.name == name)
        .enumerate();
    match (current, index) {
        (Some(want), _) => same.find(|(_, (_, a))| Some(&a.value) == want),
        (None, Some(ix)) => same.nth(ix.max(0) as usize),
        (None, None) => same.next(),
    }
    .map(|(index, (at, _))| (at, index))
}

/// Internal attribute: the Key Format Type a key was registered in (Get's
/// default).
const FORMAT_ATTR: &str = "keyhold:key-format";

/// The structure tag of object types kept exactly as registered.
fn stored_as_is(object_type: u32) -> Option<u32> {
    match object_type {
        object_type::CERTIFICATE => Some(t::CERTIFICATE),
        object_type::PUBLIC_KEY => Some(t::PUBLIC_KEY),
        object_type::PRIVATE_KEY => Some(t::PRIVATE_KEY),
        object_type::OPAQUE_OBJECT => Some(t::OPAQUE_OBJECT),
        _ => None,
    }
}

/// Keyhold's key generator: AWS-LC's CTR-DRBG with AES-256.
fn server_rng() -> AttrValue {
    AttrValue::Struct(vec![
        (t::RNG_ALGORITHM, AttrValue::Enum(3)), // DRBG
        (t::CRYPTOGRAPHIC_ALGORITHM, AttrValue::Enum(crypto_alg::AES)),
        (t::CRYPTOGRAPHIC_LENGTH, AttrValue::Int(256)),
        (t::DRBG_ALGORITHM, AttrValue::Enum(3)), // CTR-DRBG
    ])
}

/// Bytes of key material for a key of `len` bits (Triple DES keys carry
/// parity bits: 168 bits of key in 24 bytes).
fn material_len(alg: u32, len: i32) -> usize {
    match (alg, len) {
        (crypto_alg::TRIPLE_DES, 112) => 16,
        (crypto_alg::TRIPLE_DES, _) => 24,
        _ => (len.max(0) / 8) as usize,
    }
}

/// The key size in bits for `alg`, checking a requested one.
fn check_key_size(alg: u32, len: Option<i32>) -> Result<i32, KmipError> {
    match alg {
        crypto_alg::AES => match len {
            Some(l @ (128 | 192 | 256)) => Ok(l),
            Some(l) => Err(KmipError::invalid_field(format!(
                "AES keys are 128, 192 or 256 bits, not {l}"
            ))),
            None => Err(KmipError::missing("Cryptographic Length is missing")),
        },
        crypto_alg::CHACHA20_POLY1305 | crypto_alg::CHACHA20 => match len {
            None | Some(256) => Ok(256),
            Some(l) => Err(KmipError::invalid_field(format!(
                "ChaCha20 keys are 256 bits, not {l}"
            ))),
        },
        crypto_alg::TRIPLE_DES => match len {
            Some(l @ (112 | 168 | 192)) => Ok(l),
            Some(l) => Err(KmipError::invalid_field(format!(
                "Triple DES keys are 112, 168 or 192 bits, not {l}"
            ))),
            None => Ok(168),
        },
        crypto_alg::HMAC_SHA1
        | crypto_alg::HMAC_SHA224
        | crypto_alg::HMAC_SHA256
        | crypto_alg::HMAC_SHA384
        | crypto_alg::HMAC_SHA512 => {
            let default = match alg {
                crypto_alg::HMAC_SHA1 => 160,
                crypto_alg::HMAC_SHA224 => 224,
                crypto_alg::HMAC_SHA256 => 256,
                crypto_alg::HMAC_SHA384 => 384,
                _ => 512,
            };
            match len.unwrap_or(default) {
                l if (128..=4096).contains(&l) && l % 8 == 0 => Ok(l),
                l => Err(KmipError::invalid_field(format!(
                    "HMAC keys are 128 to 4096 bits in whole bytes, not {l}"
                ))),
            }
        }
        other => Err(KmipError::new(
            Reason::FeatureNotSupported,
            format!("cryptographic algorithm {other:#x} is not supported (AES, ChaCha20, ChaCha20-Poly1305, HMAC-SHA* are)"),
        )),
    }
}

/// The material inside a Key Block (Raw/Opaque bytes, or a Transparent
/// Symmetric Key's Key).
fn key_block_material(block: &Ttlv) -> Result<Vec<u8>, KmipError> {
    if block.child(t::KEY_WRAPPING_DATA).is_some() {
        return Err(KmipError::new(
            Reason::FeatureNotSupported,
            "registering wrapped keys is not supported; send the key in Raw format",
        ));
    }
    let format = enum_of(block, t::KEY_FORMAT_TYPE)?
        .ok_or_else(|| KmipError::missing("Key Format Type is missing"))?;
    let kv = block
        .child(t::KEY_VALUE)
        .ok_or_else(|| KmipError::missing("Key Value is missing"))?;
    let km = kv
        .child(t::KEY_MATERIAL)
        .ok_or_else(|| KmipError::missing("Key Material is missing"))?;
    match (format, &km.value) {
        (key_format::RAW | key_format::OPAQUE, Value::ByteString(b)) => Ok(b.clone()),
        (key_format::TRANSPARENT_SYMMETRIC_KEY, Value::Structure(_)) => bytes_of(km, t::KEY)?
            .map(<[u8]>::to_vec)
            .ok_or_else(|| KmipError::missing("the Transparent Symmetric Key has no Key")),
        (f, _) => Err(KmipError::new(
            Reason::KeyFormatTypeNotSupported,
            format!("key format type {f:#x} is not supported here (Raw, Opaque, Transparent Symmetric Key are)"),
        )),
    }
}

fn name_text(v: &AttrValue) -> Result<String, KmipError> {
    if let AttrValue::Struct(items) = v {
        for (tag, v) in items {
            if let (&t::NAME_VALUE, AttrValue::Text(s)) = (tag, v) {
                return Ok(s.clone());
            }
        }
    }
    Err(KmipError::invalid_field("Name must hold a Name Value text"))
}

/// Checks the value type of a well-known attribute.
fn check_type(name: &str, v: &AttrValue) -> Result<(), KmipError> {
    let ok = match name {
        obj::ALGORITHM | "State" | "Object Type" => matches!(v, AttrValue::Enum(_)),
        obj::LENGTH | obj::USAGE_MASK => matches!(v, AttrValue::Int(_)),
        obj::ACTIVATION_DATE
        | obj::DEACTIVATION_DATE
        | "Process Start Date"
        | "Protect Stop Date"
        | "Original Creation Date" => {
            matches!(v, AttrValue::DateTime(_) | AttrValue::DateTimeExt(_))
        }
        "Object Group"
        | "Contact Information"
        | "Operation Policy Name"
        | "Description"
        | "Comment" => {
            matches!(v, AttrValue::Text(_))
        }
        "Extractable" | "Sensitive" => matches!(v, AttrValue::Bool(_)),
        obj::NAME
        | obj::PARAMETERS
        | "Link"
        | "Application Specific Information"
        | "Alternative Name" => {
            matches!(v, AttrValue::Struct(_))
        }
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(KmipError::invalid_field(format!(
            "{name} has the wrong value type"
        )))
    }
}

/// Whether a stored value satisfies a Locate criterion: equal, or for
/// structures, every field the client gave is equal.
fn attr_matches(have: &AttrValue, want: &AttrValue) -> bool {
    match (have, want) {
        (AttrValue::Struct(h), AttrValue::Struct(w)) => w
            .iter()
            .all(|(tag, wv)| h.iter().any(|(ht, hv)| ht == tag && attr_matches(hv, wv))),
        (AttrValue::Int(h), AttrValue::Int(w)) if *w != 0 => h & w == *w || h == w,
        _ => have == want,
    }
}
