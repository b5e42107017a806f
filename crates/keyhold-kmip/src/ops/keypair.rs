//! Create Key Pair: an RSA or elliptic-curve key pair, kept as a Private
//! Key and a Public Key object that link to each other. Each keeps its Key
//! Block as made (RSA in PKCS#1, EC private keys in PKCS#8 and public keys
//! as SubjectPublicKeyInfo), so Get, the lifecycle operations and the
//! asymmetric crypto operations treat it like a registered key.

use super::create::{link_attr, rekey_offset, server_rng, succeed};
use super::*;
use keyhold_crypto::asym::{self, PairKind};

impl Kmip {
    pub(super) fn create_key_pair(
        &self,
        ctx: &mut MessageState<'_>,
        p: &Ttlv,
    ) -> Result<Vec<Ttlv>, KmipError> {
        let PairRequest {
            kind,
            alg,
            private_in,
            public_in,
        } = pair_request(p)?;
        let private = self.new_object(ctx, object_type::PRIVATE_KEY)?;
        let public = self.new_object(ctx, object_type::PUBLIC_KEY)?;
        self.make_pair(ctx, (kind, alg), (private, private_in), (public, public_in))
    }

    /// Re-key Key Pair: a new pair of the same kind replacing the pair of
    /// a private key; descriptive attributes and names move to the new
    /// objects, which link to the old ones (Replaced Object) and the old
    /// ones to them (Replacement Object).
    pub(super) fn rekey_key_pair(
        &self,
        ctx: &mut MessageState<'_>,
        p: &Ttlv,
    ) -> Result<Vec<Ttlv>, KmipError> {
        let uid = match text_of(p, t::PRIVATE_KEY_UNIQUE_IDENTIFIER)? {
            Some(u) => u.to_owned(),
            None => ctx
                .placeholder
                .clone()
                .ok_or_else(|| KmipError::missing("Private Key Unique Identifier is missing"))?,
        };
        let mut old_private = self.load_owned(ctx, &uid)?;
        if old_private.object_type != object_type::PRIVATE_KEY {
            return Err(KmipError::new(
                Reason::IllegalOperation,
                format!("object {uid} is not a private key"),
            ));
        }
        if effective_state(&old_private, ctx.now).is_destroyed() {
            return Err(obj::wrong_state(
                &old_private,
                ctx.now,
                "it cannot be re-keyed",
            ));
        }
        let offset = rekey_offset(p)?;
        let alg = obj::enum_attr(&old_private, obj::ALGORITHM).unwrap_or(crypto_alg::RSA);
        let kind = pair_kind(alg, obj::int_attr(&old_private, obj::LENGTH), None)?;
        let mut old_public = match linked(&old_private, crate::enums::link_type::PUBLIC_KEY) {
            Some(u) => Some(self.load_owned(ctx, &u)?),
            None => None,
        };
        let (private_in, public_in) = pair_request_sides(p)?;
        let mut private = self.new_object(ctx, object_type::PRIVATE_KEY)?;
        let mut public = self.new_object(ctx, object_type::PUBLIC_KEY)?;
        for (new, old) in [
            (&mut private, Some(&mut old_private)),
            (&mut public, old_public.as_mut()),
        ] {
            let Some(old) = old else { continue };
            succeed(new, old, offset, ctx.now, |_| false);
            self.save(ctx, old)?;
        }
        self.make_pair(ctx, (kind, alg), (private, private_in), (public, public_in))
    }

    /// Makes the key material of a pair and stores its two objects, linked
    /// to each other; the ID Placeholder is left holding the private key.
    fn make_pair(
        &self,
        ctx: &mut MessageState<'_>,
        (kind, alg): (PairKind, u32),
        (mut private, private_in): (ManagedObject, Vec<Incoming>),
        (mut public, public_in): (ManagedObject, Vec<Incoming>),
    ) -> Result<Vec<Ttlv>, KmipError> {
        let pair = asym::generate(kind).map_err(|_| {
            KmipError::new(
                Reason::CryptographicFailure,
                "the key pair could not be made",
            )
        })?;
        let (private_format, public_format) = formats(kind);
        let (private_uid, public_uid) = (private.uid.clone(), public.uid.clone());
        for (o, format, other, link) in [
            (
                &mut private,
                private_format,
                public_uid,
                crate::enums::link_type::PUBLIC_KEY,
            ),
            (
                &mut public,
                public_format,
                private_uid,
                crate::enums::link_type::PRIVATE_KEY,
            ),
        ] {
            o.set_attr(obj::ALGORITHM, AttrValue::Enum(alg));
            o.set_attr(obj::LENGTH, AttrValue::Int(kind.bits() as i32));
            o.set_attr(FORMAT_ATTR, AttrValue::Enum(format));
            o.set_attr(Attr::RandomNumberGenerator.name(), server_rng());
            o.attrs.push(link_attr(link, other));
        }
        let private_block = keyhold_crypto::SecretBytes::new(
            key_structure(
                t::PRIVATE_KEY,
                private_format,
                alg,
                kind.bits(),
                pair.private.expose(),
            )
            .encode(),
        );
        let public_block =
            key_structure(t::PUBLIC_KEY, public_format, alg, kind.bits(), &pair.public).encode();
        let public_uid = self.finish_new(ctx, public, public_in, &public_block)?;
        let private_uid = self.finish_new(ctx, private, private_in, private_block.expose())?;
        Ok(vec![
            Ttlv::text(t::PRIVATE_KEY_UNIQUE_IDENTIFIER, private_uid),
            Ttlv::text(t::PUBLIC_KEY_UNIQUE_IDENTIFIER, public_uid),
        ])
    }
}

/// The object `o` links to with `link`, if any.
fn linked(o: &ManagedObject, link: u32) -> Option<String> {
    o.attrs_named(Attr::Link.name()).find_map(|v| match v {
        AttrValue::Struct(fields) => {
            let is = fields
                .iter()
                .any(|(t, v)| *t == t::LINK_TYPE && *v == AttrValue::Enum(link));
            fields.iter().find_map(|(t, v)| match v {
                AttrValue::Text(u) if is && *t == t::LINKED_OBJECT_IDENTIFIER => Some(u.clone()),
                _ => None,
            })
        }
        _ => None,
    })
}

/// What a Create Key Pair asks for: the pair, its algorithm, and each
/// side's attributes (the common ones included).
struct PairRequest {
    kind: PairKind,
    alg: u32,
    private_in: Vec<Incoming>,
    public_in: Vec<Incoming>,
}

/// The attributes a Re-key Key Pair asks for on each side (the algorithm
/// and size are the old pair's).
fn pair_request_sides(p: &Ttlv) -> Result<(Vec<Incoming>, Vec<Incoming>), KmipError> {
    let common = attrs::parse_request_attributes(p)?;
    let side = |v1, v2| -> Result<Vec<Incoming>, KmipError> {
        Ok(common
            .iter()
            .cloned()
            .chain(side_attributes(p, v1, v2)?)
            .filter(|a| {
                !matches!(
                    Attr::from_name(&a.name),
                    Some(
                        Attr::CryptographicAlgorithm
                            | Attr::CryptographicLength
                            | Attr::CryptographicDomainParameters
                    )
                )
            })
            .collect())
    };
    Ok((
        side(t::PRIVATE_KEY_TEMPLATE_ATTRIBUTE, t::PRIVATE_KEY_ATTRIBUTES)?,
        side(t::PUBLIC_KEY_TEMPLATE_ATTRIBUTE, t::PUBLIC_KEY_ATTRIBUTES)?,
    ))
}

fn pair_request(p: &Ttlv) -> Result<PairRequest, KmipError> {
    let common = attrs::parse_request_attributes(p)?;
    let private_in = side_attributes(
        p,
        t::PRIVATE_KEY_TEMPLATE_ATTRIBUTE,
        t::PRIVATE_KEY_ATTRIBUTES,
    )?;
    let public_in = side_attributes(
        p,
        t::PUBLIC_KEY_TEMPLATE_ATTRIBUTE,
        t::PUBLIC_KEY_ATTRIBUTES,
    )?;
    // A side's own value wins over the common one.
    let find = |side: &[Incoming], n: &str| {
        side.iter()
            .chain(common.iter())
            .find(|a| a.name == n)
            .and_then(|a| a.value.clone())
    };
    let alg = match find(&private_in, obj::ALGORITHM) {
        Some(AttrValue::Enum(a)) => a,
        Some(_) => {
            return Err(KmipError::invalid_field(
                "Cryptographic Algorithm must be an Enumeration",
            ))
        }
        None => return Err(KmipError::missing("Cryptographic Algorithm is missing")),
    };
    let len = match find(&private_in, obj::LENGTH) {
        Some(AttrValue::Int(l)) => Some(l),
        Some(_) => {
            return Err(KmipError::invalid_field(
                "Cryptographic Length must be an Integer",
            ))
        }
        None => None,
    };
    let curve = match find(&private_in, Attr::CryptographicDomainParameters.name()) {
        Some(AttrValue::Struct(fields)) => fields.iter().find_map(|(tag, v)| match v {
            AttrValue::Enum(c) if *tag == t::RECOMMENDED_CURVE => Some(*c),
            _ => None,
        }),
        _ => None,
    };
    let kind = pair_kind(alg, len, curve)?;
    // The curve is settled by the pair; the rest applies to both sides.
    let with_common = |side: Vec<Incoming>| -> Vec<Incoming> {
        common
            .iter()
            .cloned()
            .chain(side)
            .filter(|a| a.name != Attr::CryptographicDomainParameters.name())
            .collect()
    };
    Ok(PairRequest {
        kind,
        alg,
        private_in: with_common(private_in),
        public_in: with_common(public_in),
    })
}

/// The attributes one side of a key pair asks for: a KMIP 1.x template
/// attribute (`v1`) or a KMIP 2.x attributes structure (`v2`).
fn side_attributes(p: &Ttlv, v1: u32, v2: u32) -> Result<Vec<Incoming>, KmipError> {
    let mut out = Vec::new();
    for holder in p.children(v1) {
        out.extend(attrs::parse_request_attributes(&Ttlv::structure(
            t::REQUEST_PAYLOAD,
            vec![Ttlv::structure(
                t::TEMPLATE_ATTRIBUTE,
                holder.items().to_vec(),
            )],
        ))?);
    }
    for holder in p.children(v2) {
        out.extend(attrs::parse_request_attributes(&Ttlv::structure(
            t::REQUEST_PAYLOAD,
            vec![Ttlv::structure(t::ATTRIBUTES, holder.items().to_vec())],
        ))?);
    }
    Ok(out)
}

/// Which key pair an algorithm, a length and a curve ask for.
fn pair_kind(alg: u32, len: Option<i32>, curve: Option<u32>) -> Result<PairKind, KmipError> {
    use crate::enums::recommended_curve as rc;
    match alg {
        crypto_alg::RSA => match len {
            Some(b @ (2048 | 3072 | 4096)) => Ok(PairKind::Rsa(b as u32)),
            Some(b) => Err(KmipError::invalid_field(format!(
                "RSA keys are 2048, 3072 or 4096 bits, not {b}"
            ))),
            None => Err(KmipError::missing("Cryptographic Length is missing")),
        },
        crypto_alg::EC | crypto_alg::ECDSA => match (curve, len) {
            (Some(rc::P_256), _) | (None, Some(256)) => Ok(PairKind::EcP256),
            (Some(rc::P_384), _) | (None, Some(384)) => Ok(PairKind::EcP384),
            (Some(rc::P_521), _) | (None, Some(521)) => Ok(PairKind::EcP521),
            (Some(c), _) => Err(KmipError::new(
                Reason::FeatureNotSupported,
                format!("curve {c:#x} is not supported (P-256, P-384 and P-521 are)"),
            )),
            (None, Some(l)) => Err(KmipError::invalid_field(format!(
                "elliptic-curve keys are 256, 384 or 521 bits, not {l}"
            ))),
            (None, None) => Err(KmipError::missing(
                "name the curve (Recommended Curve) or the Cryptographic Length",
            )),
        },
        crypto_alg::ED25519 => match len {
            None | Some(256) => Ok(PairKind::Ed25519),
            Some(l) => Err(KmipError::invalid_field(format!(
                "Ed25519 keys are 256 bits, not {l}"
            ))),
        },
        other => Err(KmipError::new(
            Reason::FeatureNotSupported,
            format!(
                "Create Key Pair makes RSA, elliptic-curve and Ed25519 keys; algorithm {other:#x} is not supported"
            ),
        )),
    }
}

/// The Key Format Types a new pair is kept in: (private, public).
fn formats(kind: PairKind) -> (u32, u32) {
    match kind {
        PairKind::Rsa(_) => (key_format::PKCS_1, key_format::PKCS_1),
        _ => (key_format::PKCS_8, key_format::X_509),
    }
}

/// The Key Format Type and key bytes of a key's structure as
/// [`key_structure`] makes it (or as registered): the Key Block's byte-string
/// Key Material, if it has one.
pub(super) fn key_block_bytes(holder: &Ttlv) -> Option<(Option<u32>, &[u8])> {
    let block = holder.child(t::KEY_BLOCK)?;
    let format = match block.child(t::KEY_FORMAT_TYPE).map(|f| &f.value) {
        Some(Value::Enumeration(f)) => Some(*f),
        _ => None,
    };
    match &block.child(t::KEY_VALUE)?.child(t::KEY_MATERIAL)?.value {
        Value::ByteString(b) => Some((format, b.as_slice())),
        _ => None,
    }
}

/// A Private Key or Public Key object's structure: its Key Block with the
/// key's bytes in `format`.
pub(super) fn key_structure(tag: u32, format: u32, alg: u32, bits: u32, der: &[u8]) -> Ttlv {
    Ttlv::structure(
        tag,
        vec![Ttlv::structure(
            t::KEY_BLOCK,
            vec![
                Ttlv::enumeration(t::KEY_FORMAT_TYPE, format),
                Ttlv::structure(
                    t::KEY_VALUE,
                    vec![Ttlv::bytes(t::KEY_MATERIAL, der.to_vec())],
                ),
                Ttlv::enumeration(t::CRYPTOGRAPHIC_ALGORITHM, alg),
                Ttlv::int(t::CRYPTOGRAPHIC_LENGTH, bits as i32),
            ],
        )],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enums::recommended_curve as rc;

    #[test]
    fn algorithms_lengths_and_curves_choose_the_pair() {
        assert_eq!(
            pair_kind(crypto_alg::RSA, Some(3072), None).unwrap(),
            PairKind::Rsa(3072)
        );
        assert!(pair_kind(crypto_alg::RSA, Some(1024), None).is_err());
        assert!(pair_kind(crypto_alg::RSA, None, None).is_err());
        assert_eq!(
            pair_kind(crypto_alg::ECDSA, None, Some(rc::P_384)).unwrap(),
            PairKind::EcP384
        );
        assert_eq!(
            pair_kind(crypto_alg::EC, Some(521), None).unwrap(),
            PairKind::EcP521
        );
        assert!(pair_kind(crypto_alg::EC, None, Some(0x19)).is_err());
        assert_eq!(
            pair_kind(crypto_alg::ED25519, None, None).unwrap(),
            PairKind::Ed25519
        );
        assert!(pair_kind(crypto_alg::ED25519, Some(448), None).is_err());
        assert!(pair_kind(crypto_alg::AES, Some(256), None).is_err());
    }
}
