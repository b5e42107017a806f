//! The attribute operations: Get Attributes, Get Attribute List, Add,
//! Modify, Set and Delete Attribute.

use super::*;

impl Kmip {
    pub(super) fn get_attributes(
        &self,
        ctx: &mut MessageState<'_>,
        p: &Ttlv,
    ) -> Result<Vec<Ttlv>, KmipError> {
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

    pub(super) fn get_attribute_list(
        &self,
        ctx: &mut MessageState<'_>,
        p: &Ttlv,
    ) -> Result<Vec<Ttlv>, KmipError> {
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

    pub(super) fn add_attribute(
        &self,
        ctx: &mut MessageState<'_>,
        p: &Ttlv,
    ) -> Result<Vec<Ttlv>, KmipError> {
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
        Ok(attribute_answer(ctx, uid, &name, index, &value))
    }

    pub(super) fn modify_attribute(
        &self,
        ctx: &mut MessageState<'_>,
        p: &Ttlv,
    ) -> Result<Vec<Ttlv>, KmipError> {
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
        Ok(attribute_answer(ctx, uid, &name, index, &value))
    }

    pub(super) fn set_attribute(
        &self,
        ctx: &mut MessageState<'_>,
        p: &Ttlv,
    ) -> Result<Vec<Ttlv>, KmipError> {
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

    pub(super) fn delete_attribute(
        &self,
        ctx: &mut MessageState<'_>,
        p: &Ttlv,
    ) -> Result<Vec<Ttlv>, KmipError> {
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
        Ok(attribute_answer(ctx, uid, &name, index, &removed.value))
    }
}

pub(super) fn to_stored_struct(s: &Ttlv) -> AttrValue {
    attrs::to_stored(&s.value)
}

/// The attribute instance a Modify or Delete names: the one with the given
/// current value (`Some(None)`: a current attribute without a value, which
/// names nothing), else the one at `index` among equal names, else the
/// first. Returns its position in `o.attrs` and its index among its name.
pub(super) fn find_instance(
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

pub(super) fn name_text(v: &AttrValue) -> Result<String, KmipError> {
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
pub(super) fn check_type(name: &str, v: &AttrValue) -> Result<(), KmipError> {
    use Attr as A;
    let Some(attr) = Attr::from_name(name) else {
        return Ok(());
    };
    let ok = match attr {
        A::CryptographicAlgorithm | A::State | A::ObjectType => matches!(v, AttrValue::Enum(_)),
        A::CryptographicLength | A::CryptographicUsageMask => matches!(v, AttrValue::Int(_)),
        A::ActivationDate
        | A::DeactivationDate
        | A::ProcessStartDate
        | A::ProtectStopDate
        | A::OriginalCreationDate => {
            matches!(v, AttrValue::DateTime(_) | AttrValue::DateTimeExt(_))
        }
        A::ObjectGroup
        | A::ContactInformation
        | A::OperationPolicyName
        | A::Description
        | A::Comment => matches!(v, AttrValue::Text(_)),
        A::Extractable | A::Sensitive => matches!(v, AttrValue::Bool(_)),
        A::Name
        | A::CryptographicParameters
        | A::Link
        | A::ApplicationSpecificInformation
        | A::AlternativeName => {
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

/// What Add, Modify and Delete Attribute answer: the object's identifier,
/// and before KMIP 2.0 the attribute as it now stands (or as removed).
fn attribute_answer(
    ctx: &MessageState<'_>,
    uid: String,
    name: &str,
    index: usize,
    value: &AttrValue,
) -> Vec<Ttlv> {
    let mut out = vec![Ttlv::text(t::UNIQUE_IDENTIFIER, uid)];
    if !ctx.version.is_v2() {
        out.extend(attrs::render(name, index, value, ctx.version));
    }
    out
}
