//! The four XKS operations. Each parses its body, checks `requestMetadata`,
//! calls the key service and builds the answer; each returns the request
//! metadata it saw so the audit line can name it even on failure.

use crate::api::{ok_json, Ctx, HttpResponse, XksApi};
use crate::error::{ErrorName, XksError};
use crate::wire::{self, *};
use keyhold_core::KeyStore;
use keyhold_core::Status;
use keyhold_crypto::{ct_eq, GCM_TAG_LEN};
use keyhold_service::Operation;
use zeroize::Zeroizing;

type OpResult = (Option<RequestMetadata>, Result<HttpResponse, XksError>);

fn validation(msg: impl Into<String>) -> XksError {
    XksError::new(ErrorName::ValidationException, msg)
}

fn invalid_ciphertext(msg: impl Into<String>) -> XksError {
    XksError::new(ErrorName::InvalidCiphertextException, msg)
}

/// Checks the required `requestMetadata` fields of an operation.
fn check_meta(
    m: &Option<RequestMetadata>,
    need_principal: bool,
    need_key_arn: bool,
) -> Result<(), XksError> {
    let m = m
        .as_ref()
        .ok_or_else(|| validation("requestMetadata is required"))?;
    if m.kms_request_id.is_none() {
        return Err(validation("requestMetadata.kmsRequestId is required"));
    }
    if m.kms_operation.is_none() {
        return Err(validation("requestMetadata.kmsOperation is required"));
    }
    if need_principal && m.aws_principal_arn.is_none() {
        return Err(validation("requestMetadata.awsPrincipalArn is required"));
    }
    if need_key_arn && m.kms_key_arn.is_none() {
        return Err(validation("requestMetadata.kmsKeyArn is required"));
    }
    Ok(())
}

fn check_algorithm(alg: Option<&str>) -> Result<(), XksError> {
    match alg {
        None => Err(validation("encryptionAlgorithm is required")),
        Some(AES_GCM) => Ok(()),
        Some(_) => Err(XksError::new(
            ErrorName::UnsupportedOperationException,
            "encryptionAlgorithm must be AES_GCM",
        )),
    }
}

impl XksApi {
    pub(crate) fn health(&self, store: &KeyStore, body: &[u8]) -> OpResult {
        // kmsRequestId and kmsOperation are REQUIRED here too, and AWS's
        // conformance checks expect a ValidationException without them
        // (unknown extra fields are still ignored).
        let meta = match wire::parse_json::<MetadataRequest>(body) {
            Ok(r) => r.request_metadata,
            Err(e) => return (None, Err(e)),
        };
        if let Err(e) = check_meta(&meta, false, false) {
            return (meta, Err(e));
        }
        if store.status != Status::Enabled {
            return (
                meta,
                Err(XksError::new(
                    ErrorName::InvalidStateException,
                    format!("key store {} is disabled", store.prefix),
                )),
            );
        }
        (meta, self.health_answer(false))
    }

    /// GetHealthStatus's answer: the service's health, UNAVAILABLE where
    /// the audit log cannot be written (or when `audit_failed`: this very
    /// request's record could not be), DEGRADED on a low disk.
    pub(crate) fn health_answer(&self, audit_failed: bool) -> Result<HttpResponse, XksError> {
        let mut report = self.service.health();
        // The audit log is part of serving: if records cannot be written,
        // no key use can be; a low disk is a warning.
        if let Some(st) = self.audit.as_ref().map(|a| a.status()) {
            for e in &mut report.ekms {
                if audit_failed || st.failing.is_some() {
                    e.status = keyhold_service::HealthStatus::Unavailable;
                } else if st.low_disk && e.status == keyhold_service::HealthStatus::Active {
                    e.status = keyhold_service::HealthStatus::Degraded;
                }
            }
        }
        let resp = HealthResponse {
            xks_proxy_fleet_size: self
                .config
                .live_fleet
                .as_ref()
                .map_or(self.config.fleet_size, |f| {
                    f.load(std::sync::atomic::Ordering::Relaxed)
                })
                .max(1),
            xks_proxy_vendor: self.config.vendor.clone(),
            xks_proxy_model: self.config.model.clone(),
            ekm_vendor: self.config.vendor.clone(),
            // The spec allows 1 to 10 entries.
            ekm_fleet_details: report
                .ekms
                .into_iter()
                .take(10)
                .map(|e| EkmDetail {
                    id: e.id,
                    model: e.model,
                    health_status: e.status.as_str(),
                })
                .collect(),
        };
        ok_json(&resp)
    }

    /// The request's key, once secondary authorization and the key's own
    /// state allow `op` (in that order: a denial says nothing of the key).
    fn usable_key(
        &self,
        ctx: &Ctx<'_>,
        m: Option<&RequestMetadata>,
        op: Operation,
    ) -> Result<std::sync::Arc<keyhold_service::KeyHandle>, XksError> {
        let h = self.service.key_handle(ctx.store, ctx.key_id)?;
        self.check_policy(ctx, &h, m)?;
        self.service.authorize(&h, op)?;
        Ok(h)
    }

    /// Secondary authorization (never for health); the deciding rule goes
    /// into the audit record.
    fn check_policy(
        &self,
        ctx: &Ctx<'_>,
        h: &keyhold_service::KeyHandle,
        m: Option<&RequestMetadata>,
    ) -> Result<(), XksError> {
        let f = |g: fn(&RequestMetadata) -> &Option<String>| m.and_then(|m| g(m).as_deref());
        let req = keyhold_service::policy::PolicyRequest {
            principal: f(|m| &m.aws_principal_arn),
            kms_key_arn: f(|m| &m.kms_key_arn),
            kms_operation: f(|m| &m.kms_operation),
            via_service: f(|m| &m.kms_via_service),
            source_vpc: f(|m| &m.aws_source_vpc),
            source_vpce: f(|m| &m.aws_source_vpce),
        };
        match self.service.check_policy(h, &req) {
            Ok(rule) => {
                ctx.noted.set_rule(rule);
                Ok(())
            }
            Err(keyhold_core::Error::AccessDenied { rule, why }) => {
                ctx.noted
                    .set_rule(Some(rule.unwrap_or_else(|| "(no rule allows)".into())));
                Err(XksError::new(ErrorName::AccessDeniedException, why))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) fn metadata(&self, ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
        let meta = match wire::parse_json::<MetadataRequest>(body) {
            Ok(r) => r.request_metadata,
            Err(e) => return (None, Err(e)),
        };
        let r = (|| {
            check_meta(&meta, true, false)?;
            let h = self.usable_key(ctx, meta.as_ref(), Operation::Metadata)?;
            let (status, usage) = self.service.reported(&h);
            ok_json(&MetadataResponse {
                key_spec: "AES_256",
                key_usage: usage.names(),
                key_status: status.as_str(),
            })
        })();
        (meta, r)
    }

    pub(crate) fn encrypt(&self, ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
        let req = match wire::parse_json::<EncryptRequest>(body) {
            Ok(r) => r,
            Err(e) => return (None, Err(e)),
        };
        let r = self.encrypt_inner(ctx, &req);
        (req.request_metadata, r)
    }

    fn encrypt_inner(&self, ctx: &Ctx<'_>, req: &EncryptRequest) -> Result<HttpResponse, XksError> {
        check_meta(&req.request_metadata, true, true)?;
        let plaintext = Zeroizing::new(b64_required("plaintext", req.plaintext.as_deref())?);
        check_algorithm(req.encryption_algorithm.as_deref())?;
        let aad = b64_optional(
            "additionalAuthenticatedData",
            req.additional_authenticated_data.as_deref(),
        )?;
        let want_cdiv = match req.ciphertext_data_integrity_value_algorithm.as_deref() {
            None => false,
            Some(SHA_256) => true,
            Some(_) => {
                return Err(XksError::new(
                    ErrorName::UnsupportedOperationException,
                    "ciphertextDataIntegrityValueAlgorithm must be SHA_256",
                ))
            }
        };
        self.check_sizes(plaintext.len(), aad.len())?;

        let h = self.usable_key(ctx, req.request_metadata.as_ref(), Operation::Encrypt)?;
        // A CDIV is computed over a result that is then proven by decrypting
        // it (Appendix C, step 3: an XKS API decrypt), which a key without
        // DECRYPT refuses: no ciphertext goes out.
        if want_cdiv && !h.key.usage.decrypt {
            return Err(XksError::new(
                ErrorName::InvalidKeyUsageException,
                "ciphertextDataIntegrityValueAlgorithm needs a key whose usage includes DECRYPT: the result is verified by decrypting it",
            ));
        }
        let (version, key) = h.current()?;
        ctx.noted.set_version(version);
        // The random-IV bound of AES-GCM: counted, never crossed.
        self.service.charge_encryption(&h, version)?;
        let ctm = ctm::encode(version);
        let full_aad = build_aad(&aad, &ctm)
            .ok_or_else(|| validation("additionalAuthenticatedData is too long"))?;
        let mut ct = plaintext.to_vec();
        let (iv, tag) = key.seal(&full_aad, &mut ct)?;
        // The spec's order: compute the CDIV first, then prove the answer
        // decrypts, and only then reply.
        let cdiv = want_cdiv.then(|| cdiv(&aad, &ctm, &iv, &ct, &tag));
        // An HSM-resident key without DECRYPT cannot decrypt in its token
        // either: its result is the HSM's word (and it has no CDIV).
        if key.is_hsm() && !h.key.usage.decrypt {
            return ok_json(&EncryptResponse {
                authentication_tag: b64(&tag),
                ciphertext: b64(&ct),
                ciphertext_data_integrity_value: None,
                ciphertext_metadata: Some(b64(&ctm)),
                initialization_vector: b64(&iv),
            });
        }
        let check = key.open(&iv, &full_aad, &ct, &tag).map_err(|e| match e {
            keyhold_core::Error::InvalidCiphertext => XksError::new(
                ErrorName::InternalException,
                "encryption result failed verification",
            ),
            other => other.into(),
        })?;
        if !ct_eq(check.expose(), &plaintext) {
            return Err(XksError::new(
                ErrorName::InternalException,
                "encryption result failed verification",
            ));
        }
        ok_json(&EncryptResponse {
            authentication_tag: b64(&tag),
            ciphertext: b64(&ct),
            ciphertext_data_integrity_value: cdiv.map(|c| b64(&c)),
            ciphertext_metadata: Some(b64(&ctm)),
            initialization_vector: b64(&iv),
        })
    }

    fn check_sizes(&self, data: usize, aad: usize) -> Result<(), XksError> {
        if data > self.config.max_data_bytes {
            return Err(XksError::new(
                ErrorName::UnsupportedOperationException,
                format!(
                    "data of {data} bytes is larger than this proxy's limit of {} bytes",
                    self.config.max_data_bytes
                ),
            ));
        }
        if aad > self.config.max_aad_bytes.min(u16::MAX as usize) {
            return Err(XksError::new(
                ErrorName::UnsupportedOperationException,
                format!(
                    "additionalAuthenticatedData of {aad} bytes is larger than this proxy's limit of {} bytes",
                    self.config.max_aad_bytes
                ),
            ));
        }
        Ok(())
    }

    pub(crate) fn decrypt(&self, ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
        let req = match wire::parse_json::<DecryptRequest>(body) {
            Ok(r) => r,
            Err(e) => return (None, Err(e)),
        };
        let r = self.decrypt_inner(ctx, &req);
        (req.request_metadata, r)
    }

    fn decrypt_inner(&self, ctx: &Ctx<'_>, req: &DecryptRequest) -> Result<HttpResponse, XksError> {
        check_meta(&req.request_metadata, true, true)?;
        let ct = b64_required("ciphertext", req.ciphertext.as_deref())?;
        let iv = b64_required("initializationVector", req.initialization_vector.as_deref())?;
        let tag = b64_required("authenticationTag", req.authentication_tag.as_deref())?;
        check_algorithm(req.encryption_algorithm.as_deref())?;
        let aad = b64_optional(
            "additionalAuthenticatedData",
            req.additional_authenticated_data.as_deref(),
        )?;
        let ctm_bytes = b64_optional("ciphertextMetadata", req.ciphertext_metadata.as_deref())?;
        self.check_sizes(ct.len(), aad.len())?;

        let h = self.usable_key(ctx, req.request_metadata.as_ref(), Operation::Decrypt)?;

        if iv.len() != 12 && iv.len() != 16 {
            return Err(invalid_ciphertext(
                "initializationVector must be 12 or 16 bytes",
            ));
        }
        if tag.len() != GCM_TAG_LEN {
            return Err(invalid_ciphertext("authenticationTag must be 16 bytes"));
        }
        if ctm_bytes.len() > MAX_CTM_LEN {
            return Err(invalid_ciphertext(
                "ciphertextMetadata must be at most 20 bytes",
            ));
        }
        let generic = || {
            invalid_ciphertext(
                "the ciphertext, IV, tag, additional authenticated data or ciphertext metadata is corrupted, missing or otherwise invalid",
            )
        };
        let version = ctm::parse(&ctm_bytes).ok_or_else(generic)?;
        ctx.noted.set_version(version);
        let (key, flag) = self.service.key_version(&h, version).map_err(|e| match e {
            keyhold_core::Error::InvalidCiphertext => generic(),
            other => other.into(),
        })?;
        let compromised = flag != keyhold_core::VersionFlag::Good
            || h.key.lifecycle.state == keyhold_core::KeyState::Compromised;
        if compromised {
            ctx.noted.set_compromised();
            tracing::warn!(target: "keyhold::audit", store = %ctx.store, key = %ctx.key_id, version,
                "decrypt with a key or key version marked compromised (allowed by override or state)");
        }
        let full_aad = build_aad(&aad, &ctm_bytes).ok_or_else(generic)?;
        let pt = key.open(&iv, &full_aad, &ct, &tag).map_err(|e| match e {
            keyhold_core::Error::InvalidCiphertext => generic(),
            other => other.into(),
        })?;
        let encoded = Zeroizing::new(b64(pt.expose()));
        ok_json(&DecryptResponse {
            plaintext: encoded.to_string(),
        })
    }
}
