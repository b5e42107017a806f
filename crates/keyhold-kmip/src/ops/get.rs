//! Locate and Get: finding objects and handing out their material,
//! in the clear or wrapped.

use super::*;

impl Kmip {
    pub(super) fn locate(
        &self,
        ctx: &mut MessageState<'_>,
        p: &Ttlv,
    ) -> Result<Vec<Ttlv>, KmipError> {
        let max = int_of(p, t::MAXIMUM_ITEMS)?;
        let offset = int_of(p, t::OFFSET_ITEMS)?.unwrap_or(0).max(0) as usize;
        let mut wanted = attrs::parse_request_attributes(p)?;
        // 2.x puts Object Type etc. inside Attributes; 1.x as Attributes too.
        if let Some(ot) = enum_of(p, t::OBJECT_TYPE)? {
            wanted.push(Incoming {
                name: Attr::ObjectType.name().into(),
                index: None,
                value: Some(AttrValue::Enum(ot)),
            });
        }
        let fresh_only = enum_of(p, t::OBJECT_GROUP_MEMBER)? == Some(1);
        // Destroyed objects only when asked for: by the 2.x Destroyed
        // Storage mask bit, or by a State criterion.
        let mask = int_of(p, t::STORAGE_STATUS_MASK)?.unwrap_or(1);
        let with_destroyed = mask & 4 != 0 || wanted.iter().any(|w| w.name == Attr::State.name());
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
            if matches
                && (!fresh_only || o.attr(Attr::Fresh.name()) == Some(&AttrValue::Bool(true)))
            {
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

    pub(super) fn get(&self, ctx: &mut MessageState<'_>, p: &Ttlv) -> Result<Vec<Ttlv>, KmipError> {
        let uid = self.uid_arg(ctx, p)?;
        let mut o = self.load(ctx, &uid)?;
        if enum_of(p, t::KEY_COMPRESSION_TYPE)?.is_some() {
            return Err(KmipError::new(
                Reason::FeatureNotSupported,
                "key compression applies to elliptic-curve keys only",
            ));
        }
        rules::check_export(&o, ctx.now).map_err(refused)?;
        let want_format = enum_of(p, t::KEY_FORMAT_TYPE)?;
        let material = self.material(&o)?;
        if let Some(tag) = stored_as_is(o.object_type) {
            let holder = as_stored(&o, material.expose(), p, want_format)?;
            self.mark_served(&mut o);
            return Ok(vec![
                Ttlv::enumeration(t::OBJECT_TYPE, o.object_type),
                Ttlv::text(t::UNIQUE_IDENTIFIER, uid),
                Ttlv::new(tag, holder.value),
            ]);
        }
        let want_format = want_format.or_else(|| obj::enum_attr(&o, FORMAT_ATTR));
        let (holder_tag, format, extra) = holder_of(&o, want_format);
        let key_material = key_material(&o, format, material.expose())?;
        let mut key_value = Ttlv::structure(t::KEY_VALUE, vec![key_material]);
        let mut wrapping_data = None;
        if let Some(spec) = p.child(t::KEY_WRAPPING_SPECIFICATION) {
            let w = self.wrapping(ctx, spec)?;
            ctx.touched = Some(uid.clone());
            key_value = wrap_key_value(&w, format, key_value)?;
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
    pub(super) fn mark_served(&self, o: &mut ManagedObject) {
        if o.attr(Attr::Fresh.name()) == Some(&AttrValue::Bool(true)) {
            o.set_attr(Attr::Fresh.name(), AttrValue::Bool(false));
            o.set_attr(Attr::LeaseTime.name(), AttrValue::Interval(LEASE_TIME_SECS));
            // Losing this race only leaves Fresh set: not worth failing Get.
            let _ = self.service.update_object(o);
        }
    }

    /// The wrapping key and method a Key Wrapping Specification asks for.
    pub(super) fn wrapping(
        &self,
        ctx: &mut MessageState<'_>,
        spec: &Ttlv,
    ) -> Result<Wrapping, KmipError> {
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
        let (k, kek) = self.usable(ctx, &kuid, Purpose::WRAP_KEY)?;
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
}

/// How a Get wraps the key it returns.
pub(super) struct Wrapping {
    kek: Arc<keyhold_crypto::SecretBytes>,
    padded: bool,
    no_encoding: bool,
    /// The Key Wrapping Data to put in the Key Block.
    data: Ttlv,
}

/// Whether a stored value satisfies a Locate criterion: equal, or for
/// structures, every field the client gave is equal.
pub(super) fn attr_matches(have: &AttrValue, want: &AttrValue) -> bool {
    match (have, want) {
        (AttrValue::Struct(h), AttrValue::Struct(w)) => w
            .iter()
            .all(|(tag, wv)| h.iter().any(|(ht, hv)| ht == tag && attr_matches(hv, wv))),
        (AttrValue::Int(h), AttrValue::Int(w)) if *w != 0 => h & w == *w || h == w,
        _ => have == want,
    }
}

/// An object kept as the client registered it (its TTLV holder): returned
/// as is, in the format it was given in, never wrapped.
fn as_stored(
    o: &ManagedObject,
    material: &[u8],
    p: &Ttlv,
    want_format: Option<u32>,
) -> Result<Ttlv, KmipError> {
    let holder = Ttlv::decode(material, &Limits::default())
        .map_err(|_| KmipError::new(Reason::GeneralFailure, "the stored object is damaged"))?;
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
            return convert_key(&holder, o.object_type, have, want).ok_or_else(|| {
                KmipError::new(
                    Reason::KeyFormatTypeNotSupported,
                    format!(
                        "object {} is kept in format {have:#x}; converting it to {want:#x} is not supported \
                         (RSA keys convert between PKCS#1, PKCS#8 and X.509; RSA and EC keys to their Transparent forms)",
                        o.uid
                    ),
                )
            });
        }
    }
    Ok(holder)
}

/// A KMIP Big Integer of a big-endian magnitude: two's complement,
/// sign-padded to a multiple of eight bytes.
fn big_int(tag: u32, magnitude: &[u8]) -> Ttlv {
    let first = magnitude
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(magnitude.len());
    let m = &magnitude[first..];
    let len = (m.len() + usize::from(m.first().is_some_and(|b| b & 0x80 != 0))).max(1);
    let padded = len.div_ceil(8) * 8;
    let mut v = vec![0u8; padded - m.len()];
    v.extend_from_slice(m);
    Ttlv::new(tag, Value::BigInteger(v))
}

/// The Recommended Curve of an EC key whose field elements are `len` bytes.
fn curve_of(len: usize) -> Option<u32> {
    use crate::enums::recommended_curve as rc;
    match len {
        32 => Some(rc::P_256),
        48 => Some(rc::P_384),
        66 => Some(rc::P_521),
        _ => None,
    }
}

/// A key's Transparent Key Material (KMIP 1.3+ forms): the RSA values as
/// Big Integers; an EC key's curve and its point (Q String) or scalar (D).
fn transparent(object_type: u32, want: u32, der: &[u8]) -> Option<Ttlv> {
    use keyhold_crypto::asym;
    let items = match (object_type, want) {
        (object_type::PUBLIC_KEY, key_format::TRANSPARENT_RSA_PUBLIC_KEY) => {
            let (n, e) = asym::rsa_public_parts(der).ok()?;
            vec![big_int(t::MODULUS, &n), big_int(t::PUBLIC_EXPONENT, &e)]
        }
        (object_type::PRIVATE_KEY, key_format::TRANSPARENT_RSA_PRIVATE_KEY) => {
            let v = asym::rsa_private_parts(der).ok()?;
            [
                t::MODULUS,
                t::PUBLIC_EXPONENT,
                t::PRIVATE_EXPONENT,
                t::P,
                t::Q,
                t::PRIME_EXPONENT_P,
                t::PRIME_EXPONENT_Q,
                t::CRT_COEFFICIENT,
            ]
            .iter()
            .zip(&v)
            .map(|(tag, x)| big_int(*tag, x.expose()))
            .collect()
        }
        (object_type::PUBLIC_KEY, key_format::TRANSPARENT_EC_PUBLIC_KEY) => {
            let q = asym::ec_public_point(der).ok()?;
            let curve = curve_of(q.len().checked_sub(1)? / 2)?;
            vec![
                Ttlv::enumeration(t::RECOMMENDED_CURVE, curve),
                Ttlv::bytes(t::Q_STRING, q),
            ]
        }
        (object_type::PRIVATE_KEY, key_format::TRANSPARENT_EC_PRIVATE_KEY) => {
            let d = asym::ec_private_scalar(der).ok()?;
            vec![
                Ttlv::enumeration(t::RECOMMENDED_CURVE, curve_of(d.len())?),
                big_int(t::D, d.expose()),
            ]
        }
        _ => return None,
    };
    Some(Ttlv::structure(t::KEY_MATERIAL, items))
}

/// A public or private key's holder with its Key Block in another format:
/// RSA keys between PKCS#1 and PKCS#8 (private) or X.509
/// (SubjectPublicKeyInfo, public), and RSA and EC keys in their
/// Transparent forms. None: not a conversion offered.
fn convert_key(holder: &Ttlv, object_type: u32, have: u32, want: u32) -> Option<Ttlv> {
    use keyhold_crypto::asym;
    let (_, der) = super::keypair::key_block_bytes(holder)?;
    let block = holder.child(t::KEY_BLOCK)?;
    let converted = match (object_type, have, want) {
        (object_type::PRIVATE_KEY, key_format::PKCS_1, key_format::PKCS_8) => Ttlv::bytes(
            t::KEY_MATERIAL,
            asym::rsa_private_to_pkcs8(der).ok()?.expose().to_vec(),
        ),
        (object_type::PRIVATE_KEY, key_format::PKCS_8, key_format::PKCS_1) => Ttlv::bytes(
            t::KEY_MATERIAL,
            asym::rsa_private_to_pkcs1(der).ok()?.expose().to_vec(),
        ),
        (object_type::PUBLIC_KEY, key_format::PKCS_1, key_format::X_509) => {
            Ttlv::bytes(t::KEY_MATERIAL, asym::rsa_public_to_spki(der).ok()?)
        }
        (object_type::PUBLIC_KEY, key_format::X_509, key_format::PKCS_1) => {
            Ttlv::bytes(t::KEY_MATERIAL, asym::rsa_public_to_pkcs1(der).ok()?)
        }
        _ => transparent(object_type, want, der)?,
    };
    let items: Vec<Ttlv> = block
        .items()
        .iter()
        .map(|i| match i.tag {
            t::KEY_FORMAT_TYPE => Ttlv::enumeration(t::KEY_FORMAT_TYPE, want),
            t::KEY_VALUE => Ttlv::structure(
                t::KEY_VALUE,
                i.items()
                    .iter()
                    .map(|v| match v.tag {
                        t::KEY_MATERIAL => converted.clone(),
                        _ => v.clone(),
                    })
                    .collect(),
            ),
            _ => i.clone(),
        })
        .collect();
    Some(Ttlv::structure(
        holder.tag,
        holder
            .items()
            .iter()
            .map(|i| match i.tag {
                t::KEY_BLOCK => Ttlv::structure(t::KEY_BLOCK, items.clone()),
                _ => i.clone(),
            })
            .collect(),
    ))
}

/// The holder's tag, the key format answered and the holder's fields
/// before its Key Block, for a symmetric key or secret data.
fn holder_of(o: &ManagedObject, want_format: Option<u32>) -> (u32, u32, Vec<Ttlv>) {
    match o.object_type {
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
                obj::enum_attr(o, "keyhold:secret-data-type")
                    .unwrap_or(crate::enums::secret_data_type::PASSWORD),
            )],
        ),
    }
}

/// The Key Material field in `format`.
fn key_material(o: &ManagedObject, format: u32, material: &[u8]) -> Result<Ttlv, KmipError> {
    match format {
        key_format::RAW | key_format::OPAQUE => Ok(Ttlv::bytes(t::KEY_MATERIAL, material.to_vec())),
        key_format::TRANSPARENT_SYMMETRIC_KEY if o.object_type == object_type::SYMMETRIC_KEY => {
            Ok(Ttlv::structure(
                t::KEY_MATERIAL,
                vec![Ttlv::bytes(t::KEY, material.to_vec())],
            ))
        }
        other => Err(KmipError::new(
            Reason::KeyFormatTypeNotSupported,
            format!("key format type {other:#x} is not supported for this object"),
        )),
    }
}

/// The Key Value wrapped as `w` says: No Encoding wraps just the Key
/// Material, inside a plain Key Value; TTLV Encoding wraps the whole
/// encoded Key Value.
fn wrap_key_value(w: &Wrapping, format: u32, key_value: Ttlv) -> Result<Ttlv, KmipError> {
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
    Ok(if w.no_encoding {
        Ttlv::structure(t::KEY_VALUE, vec![Ttlv::bytes(t::KEY_MATERIAL, wrapped)])
    } else {
        Ttlv::bytes(t::KEY_VALUE, wrapped)
    })
}
