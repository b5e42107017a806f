//! Obtain Lease, Check, Activate, Revoke and Destroy: an object's
//! lifecycle.

use super::*;

impl Kmip {
    /// Obtain Lease: a new Lease Time for an object the client may use, and
    /// its Last Change Date. None is granted for an object that may not be
    /// used now (not Active, or Keyhold locked down): the client must then
    /// stop using what it cached.
    pub(super) fn obtain_lease(
        &self,
        ctx: &mut MessageState<'_>,
        p: &Ttlv,
    ) -> Result<Vec<Ttlv>, KmipError> {
        let uid = self.uid_arg(ctx, p)?;
        let o = self.load(ctx, &uid)?;
        self.service.refuse_in_lockdown().map_err(service_err)?;
        rules::check_active(&o, ctx.now, "a lease is granted only for an Active object")
            .map_err(refused)?;
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

    /// Check: would the object allow this usage mask / this many uses?
    pub(super) fn check(
        &self,
        ctx: &mut MessageState<'_>,
        p: &Ttlv,
    ) -> Result<Vec<Ttlv>, KmipError> {
        let uid = self.uid_arg(ctx, p)?;
        let o = self.load(ctx, &uid)?;
        let mask = int_of(p, t::CRYPTOGRAPHIC_USAGE_MASK)?;
        let uses = p.child(t::USAGE_LIMITS_COUNT).and_then(|c| match c.value {
            Value::LongInteger(n) => Some(n),
            Value::Integer(n) => Some(i64::from(n)),
            _ => None,
        });
        rules::check_allows(&o, mask, uses).map_err(refused)?;
        Ok(vec![Ttlv::text(t::UNIQUE_IDENTIFIER, uid)])
    }

    pub(super) fn activate(
        &self,
        ctx: &mut MessageState<'_>,
        p: &Ttlv,
    ) -> Result<Vec<Ttlv>, KmipError> {
        let uid = self.uid_arg(ctx, p)?;
        let mut o = self.load_owned(ctx, &uid)?;
        rules::activate(&mut o, ctx.now).map_err(refused)?;
        self.save(ctx, &mut o)?;
        Ok(vec![Ttlv::text(t::UNIQUE_IDENTIFIER, uid)])
    }

    pub(super) fn revoke(
        &self,
        ctx: &mut MessageState<'_>,
        p: &Ttlv,
    ) -> Result<Vec<Ttlv>, KmipError> {
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
        let compromise = matches!(
            code,
            revocation_reason::KEY_COMPROMISE | revocation_reason::CA_COMPROMISE
        );
        let compromised_at = if compromise {
            Some(message::date_of(p, t::COMPROMISE_OCCURRENCE_DATE)?.unwrap_or(ctx.now))
        } else {
            None
        };
        rules::revoke(&mut o, compromised_at, ctx.now).map_err(refused)?;
        o.set_attr(Attr::RevocationReason.name(), to_stored_struct(reason));
        self.save(ctx, &mut o)?;
        Ok(vec![Ttlv::text(t::UNIQUE_IDENTIFIER, uid)])
    }

    pub(super) fn destroy(
        &self,
        ctx: &mut MessageState<'_>,
        p: &Ttlv,
    ) -> Result<Vec<Ttlv>, KmipError> {
        let uid = self.uid_arg(ctx, p)?;
        if ctx.undo.is_some() {
            return Err(KmipError::new(
                Reason::FeatureNotSupported,
                "Destroy erases key material and cannot be undone: send it without the Undo option",
            ));
        }
        let mut o = self.load_owned(ctx, &uid)?;
        rules::destroy(&mut o, ctx.now).map_err(refused)?;
        self.save(ctx, &mut o)?;
        self.service.purge_erased_copies().map_err(|e| {
            KmipError::new(
                Reason::GeneralFailure,
                format!("the object is destroyed, but {e}"),
            )
        })?;
        Ok(vec![Ttlv::text(t::UNIQUE_IDENTIFIER, uid)])
    }
}
