//! Create, Register and Re-key: new managed objects, their material and
//! its checks.

use super::*;

impl Kmip {
    pub(super) fn new_object(
        &self,
        ctx: &MessageState<'_>,
        object_type: u32,
    ) -> Result<ManagedObject, KmipError> {
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
        o.set_attr(Attr::Fresh.name(), AttrValue::Bool(true));
        Ok(o)
    }

    /// Applies the request's attributes, settles the initial state, and
    /// stores the object with its material.
    pub(super) fn finish_new(
        &self,
        ctx: &mut MessageState<'_>,
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
        if o.attr(Attr::OriginalCreationDate.name()).is_none() {
            o.set_attr(
                Attr::OriginalCreationDate.name(),
                AttrValue::DateTime(ctx.now),
            );
        }
        o.set_attr(
            Attr::AlwaysSensitive.name(),
            AttrValue::Bool(o.attr(Attr::Sensitive.name()) == Some(&AttrValue::Bool(true))),
        );
        o.set_attr(
            Attr::NeverExtractable.name(),
            AttrValue::Bool(!o.exportable),
        );
        if matches!(
            o.object_type,
            object_type::SYMMETRIC_KEY
                | object_type::SECRET_DATA
                | object_type::PUBLIC_KEY
                | object_type::PRIVATE_KEY
        ) {
            let f = obj::enum_attr(&o, FORMAT_ATTR).unwrap_or(key_format::RAW);
            o.set_attr(Attr::KeyFormatType.name(), AttrValue::Enum(f));
        }
        let (digest, format) = digest_of(&o, material);
        o.attrs.push(ObjectAttr {
            name: Attr::Digest.name().into(),
            value: AttrValue::Struct(vec![
                (
                    t::HASHING_ALGORITHM,
                    AttrValue::Enum(crate::enums::hashing::SHA_256),
                ),
                (t::DIGEST_VALUE, AttrValue::Bytes(digest.to_vec())),
                (t::KEY_FORMAT_TYPE, AttrValue::Enum(format)),
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

    pub(super) fn create(
        &self,
        ctx: &mut MessageState<'_>,
        p: &Ttlv,
    ) -> Result<Vec<Ttlv>, KmipError> {
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
        fips_allows_new_key(alg)?;
        let material = keyhold_crypto::random_secret(material_len(alg, len)).map_err(|_| {
            KmipError::new(Reason::GeneralFailure, "random number generator failed")
        })?;
        let mut o = self.new_object(ctx, ot)?;
        o.set_attr(obj::ALGORITHM, AttrValue::Enum(alg));
        o.set_attr(obj::LENGTH, AttrValue::Int(len));
        o.set_attr(Attr::RandomNumberGenerator.name(), server_rng());
        let uid = self.finish_new(ctx, o, incoming, material.expose())?;
        Ok(vec![
            Ttlv::enumeration(t::OBJECT_TYPE, ot),
            Ttlv::text(t::UNIQUE_IDENTIFIER, uid),
        ])
    }

    pub(super) fn register(
        &self,
        ctx: &mut MessageState<'_>,
        p: &Ttlv,
    ) -> Result<Vec<Ttlv>, KmipError> {
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
            // Old keys may come in to decrypt old data while it migrates:
            // Triple DES keys (which then never encrypt), and ChaCha20 keys
            // whose usage mask allows decryption only.
            let decrypt_only = super::cipher::decrypt_only(find(obj::USAGE_MASK).as_ref());
            let chacha = matches!(alg, crypto_alg::CHACHA20 | crypto_alg::CHACHA20_POLY1305);
            if alg != crypto_alg::TRIPLE_DES && !(chacha && decrypt_only) {
                fips_allows_new_key(alg)?;
            }
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
    pub(super) fn register_as_is(
        &self,
        ctx: &mut MessageState<'_>,
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
            o.set_attr(Attr::CertificateType.name(), AttrValue::Enum(ct));
            if let Some(v) = bytes_of(holder, t::CERTIFICATE_VALUE)? {
                o.set_attr(
                    Attr::CertificateLength.name(),
                    AttrValue::Int(v.len() as i32),
                );
                if let Ok((_, c)) = x509_parser::parse_x509_certificate(v) {
                    let cn = |n: &x509_parser::x509::X509Name<'_>| {
                        n.iter_common_name()
                            .next()
                            .and_then(|c| c.as_str().ok())
                            .map(str::to_owned)
                    };
                    if let Some(s) = cn(c.subject()) {
                        o.set_attr(Attr::CertificateSubjectCN.name(), AttrValue::Text(s));
                    }
                    if let Some(s) = cn(c.issuer()) {
                        o.set_attr(Attr::CertificateIssuerCN.name(), AttrValue::Text(s));
                    }
                }
            }
        }
        let incoming = incoming
            .into_iter()
            .filter(|a| {
                !matches!(
                    Attr::from_name(&a.name),
                    Some(Attr::CertificateType | Attr::CertificateLength)
                )
            })
            .collect();
        let uid = self.finish_new(ctx, o, incoming, &bytes)?;
        Ok(vec![Ttlv::text(t::UNIQUE_IDENTIFIER, uid)])
    }

    pub(super) fn rekey(
        &self,
        ctx: &mut MessageState<'_>,
        p: &Ttlv,
    ) -> Result<Vec<Ttlv>, KmipError> {
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
        let offset = rekey_offset(p)?;
        let len = obj::int_attr(&old, obj::LENGTH).unwrap_or(256);
        let alg = obj::enum_attr(&old, obj::ALGORITHM).unwrap_or(crypto_alg::AES);
        let material = keyhold_crypto::random_secret(material_len(alg, len)).map_err(|_| {
            KmipError::new(Reason::GeneralFailure, "random number generator failed")
        })?;
        let mut n = self.new_object(ctx, old.object_type)?;
        // A symmetric key also carries over its algorithm and size, and
        // Keyhold's own attributes.
        succeed(&mut n, &mut old, offset, ctx.now, |name| {
            matches!(
                Attr::from_name(name),
                Some(Attr::CryptographicAlgorithm | Attr::CryptographicLength)
            ) || attrs::is_internal(name)
        });
        let incoming = attrs::parse_request_attributes(p)?;
        self.save(ctx, &mut old)?;
        let new_uid = self.finish_new(ctx, n, incoming, material.expose())?;
        Ok(vec![Ttlv::text(t::UNIQUE_IDENTIFIER, new_uid)])
    }
}

/// A Re-key's Offset: seconds from now to the new key's activation.
pub(super) fn rekey_offset(p: &Ttlv) -> Result<Option<i64>, KmipError> {
    match p.child(t::OFFSET).map(|o| &o.value) {
        Some(Value::Interval(s)) => Ok(Some(*s as i64)),
        Some(_) => Err(KmipError::invalid_message("Offset must be an Interval")),
        None => Ok(None),
    }
}

/// A Link attribute.
pub(super) fn link_attr(link: u32, to: String) -> ObjectAttr {
    ObjectAttr {
        name: Attr::Link.name().into(),
        value: AttrValue::Struct(vec![
            (t::LINK_TYPE, AttrValue::Enum(link)),
            (t::LINKED_OBJECT_IDENTIFIER, AttrValue::Text(to)),
        ]),
    }
}

/// `new` succeeds `old` in a re-key: what describes the key (and what
/// `also` names), and the names, move over; activation follows the Offset
/// (or `old` being active); each links to the other.
pub(super) fn succeed(
    new: &mut ManagedObject,
    old: &mut ManagedObject,
    offset: Option<i64>,
    now: i64,
    also: impl Fn(&str) -> bool,
) {
    new.exportable = old.exportable;
    for a in &old.attrs {
        if matches!(
            Attr::from_name(&a.name),
            Some(
                Attr::CryptographicUsageMask
                    | Attr::CryptographicParameters
                    | Attr::ObjectGroup
                    | Attr::ContactInformation
                    | Attr::ApplicationSpecificInformation
                    | Attr::Name
            )
        ) || attrs::is_custom(&a.name)
            || also(&a.name)
        {
            new.attrs.push(a.clone());
        }
    }
    match offset {
        Some(s) => new.set_attr(obj::ACTIVATION_DATE, AttrValue::DateTime(now + s)),
        None if old.attr(obj::ACTIVATION_DATE).is_some() => {
            new.set_attr(obj::ACTIVATION_DATE, AttrValue::DateTime(now))
        }
        None => {}
    }
    new.attrs.push(link_attr(
        crate::enums::link_type::REPLACED_OBJECT,
        old.uid.clone(),
    ));
    old.remove_attr(obj::NAME);
    old.attrs.push(link_attr(
        crate::enums::link_type::REPLACEMENT_OBJECT,
        new.uid.clone(),
    ));
}

/// The Digest attribute's SHA-256 and Key Format Type: of the key's bytes
/// as kept, for a public or private key kept with its Key Block; of the
/// material itself otherwise. No copy of the material is made.
fn digest_of(o: &ManagedObject, material: &[u8]) -> ([u8; 32], u32) {
    if stored_as_is(o.object_type).is_some() {
        if let Ok(holder) = Ttlv::decode(material, &Limits::default()) {
            if let Some((format, key)) = super::keypair::key_block_bytes(&holder) {
                return (
                    keyhold_crypto::sha256(&[key]),
                    format.unwrap_or(key_format::RAW),
                );
            }
        }
    }
    (keyhold_crypto::sha256(&[material]), key_format::RAW)
}

/// Internal attribute: the Key Format Type a key was registered in (Get's
/// default).
pub(super) const FORMAT_ATTR: &str = "keyhold:key-format";

/// The structure tag of object types kept exactly as registered.
pub(super) fn stored_as_is(object_type: u32) -> Option<u32> {
    match object_type {
        object_type::CERTIFICATE => Some(t::CERTIFICATE),
        object_type::PUBLIC_KEY => Some(t::PUBLIC_KEY),
        object_type::PRIVATE_KEY => Some(t::PRIVATE_KEY),
        object_type::OPAQUE_OBJECT => Some(t::OPAQUE_OBJECT),
        _ => None,
    }
}

/// Keyhold's key generator: AWS-LC's CTR-DRBG with AES-256.
pub(super) fn server_rng() -> AttrValue {
    AttrValue::Struct(vec![
        (t::RNG_ALGORITHM, AttrValue::Enum(3)), // DRBG
        (t::CRYPTOGRAPHIC_ALGORITHM, AttrValue::Enum(crypto_alg::AES)),
        (t::CRYPTOGRAPHIC_LENGTH, AttrValue::Int(256)),
        (t::DRBG_ALGORITHM, AttrValue::Enum(3)), // CTR-DRBG
    ])
}

/// Bytes of key material for a key of `len` bits (Triple DES keys carry
/// parity bits: 168 bits of key in 24 bytes).
pub(super) fn material_len(alg: u32, len: i32) -> usize {
    match (alg, len) {
        (crypto_alg::TRIPLE_DES, 112) => 16,
        (crypto_alg::TRIPLE_DES, _) => 24,
        _ => (len.max(0) / 8) as usize,
    }
}

/// FIPS mode's answer to a new symmetric key of `alg`: no ChaCha20 keys,
/// no new Triple DES keys.
fn fips_allows_new_key(alg: u32) -> Result<(), KmipError> {
    use keyhold_crypto::fips::Use;
    match alg {
        crypto_alg::CHACHA20 | crypto_alg::CHACHA20_POLY1305 => {
            super::cipher::fips_check(Use::ChaCha20)
        }
        crypto_alg::TRIPLE_DES => super::cipher::fips_check(Use::TripleDesNewKey),
        _ => Ok(()),
    }
}

/// The key size in bits for `alg`, checking a requested one.
pub(super) fn check_key_size(alg: u32, len: Option<i32>) -> Result<i32, KmipError> {
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
pub(super) fn key_block_material(block: &Ttlv) -> Result<Vec<u8>, KmipError> {
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
