//! The four XKS operations. Each parses its body, checks `requestMetadata`,
//! calls the key service and builds the answer; each returns the request
//! metadata it saw so the audit line can name it even on failure.

use crate::api::{ok_json, HttpResponse, KeyRef, OpAnswer, XksApi};
use crate::error::{ErrorName, XksError};
use crate::wire::{self, *};
use keyhold_core::KeyStore;
use keyhold_core::Status;
use keyhold_crypto::GCM_TAG_LEN;
use keyhold_service::policy::PolicyRequest;
use keyhold_service::{EncryptOptions, GcmInput, KeyUse, UseFacts, Used};
use zeroize::Zeroizing;

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
    pub(crate) fn health(&self, store: &KeyStore, body: &[u8]) -> OpAnswer {
        // kmsRequestId and kmsOperation are REQUIRED here too, and AWS's
        // conformance checks expect a ValidationException without them
        // (unknown extra fields are still ignored).
        let meta = match wire::parse_json::<MetadataRequest>(body) {
            Ok(r) => r.request_metadata,
            Err(e) => return OpAnswer::refused(None, e),
        };
        if let Err(e) = check_meta(&meta, false, false) {
            return OpAnswer::refused(meta, e);
        }
        if store.status != Status::Enabled {
            let e = XksError::new(
                ErrorName::InvalidStateException,
                format!("key store {} is disabled", store.prefix),
            );
            return OpAnswer::refused(meta, e);
        }
        OpAnswer {
            meta,
            result: self.health_answer(false),
            facts: UseFacts::default(),
        }
    }

    /// GetHealthStatus's answer: the service's health, UNAVAILABLE where
    /// the audit log cannot be written (or when `audit_failed`: this very
    /// request's record could not be), DEGRADED on a low disk.
    pub(crate) fn health_answer(&self, audit_failed: bool) -> Result<HttpResponse, XksError> {
        let mut report = self.service.health();
        // The audit log is part of serving: if records cannot be written,
        // no key use can be; a low disk is a warning.
        if let Some(st) = self.service.audit().status() {
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

    pub(crate) fn metadata(&self, ctx: &KeyRef<'_>, body: &[u8]) -> OpAnswer {
        let meta = match wire::parse_json::<MetadataRequest>(body) {
            Ok(r) => r.request_metadata,
            Err(e) => return OpAnswer::refused(None, e),
        };
        if let Err(e) = check_meta(&meta, true, false) {
            return OpAnswer::refused(meta, e);
        }
        let Used { result, facts } = self.service.describe(&key_use(ctx, meta.as_ref()));
        let result = result.map_err(XksError::from).and_then(|(status, usage)| {
            ok_json(&MetadataResponse {
                key_spec: "AES_256",
                key_usage: usage.names(),
                key_status: status.as_str(),
            })
        });
        OpAnswer {
            meta,
            result,
            facts,
        }
    }

    pub(crate) fn encrypt(&self, ctx: &KeyRef<'_>, body: &[u8]) -> OpAnswer {
        let req = match wire::parse_json::<EncryptRequest>(body) {
            Ok(r) => r,
            Err(e) => return OpAnswer::refused(None, e),
        };
        let Used { result, facts } = self.encrypt_inner(ctx, &req);
        OpAnswer {
            meta: req.request_metadata,
            result,
            facts,
        }
    }

    fn encrypt_inner(
        &self,
        ctx: &KeyRef<'_>,
        req: &EncryptRequest,
    ) -> Used<HttpResponse, XksError> {
        let checked = (|| {
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
            Ok((plaintext, aad, want_cdiv))
        })();
        let (plaintext, aad, want_cdiv) = match checked {
            Ok(c) => c,
            Err(e) => return refused(e),
        };
        // A CDIV is computed over a result that is then proven by
        // decrypting it (Appendix C, step 3: an XKS API decrypt), which a
        // key without DECRYPT refuses: no ciphertext goes out.
        let opts = EncryptOptions {
            require_decrypt_usage: want_cdiv,
        };
        let full_aad = |version| {
            build_aad(&aad, &ctm::encode(version))
                .ok_or_else(|| validation("additionalAuthenticatedData is too long"))
        };
        let used = self.service.encrypt(
            &key_use(ctx, req.request_metadata.as_ref()),
            &plaintext,
            opts,
            full_aad,
        );
        let result = used.result.and_then(|sealed| {
            let ctm = ctm::encode(sealed.version);
            let (iv, ct, tag) = (&sealed.iv, &sealed.ciphertext, &sealed.tag);
            ok_json(&EncryptResponse {
                authentication_tag: b64(tag),
                ciphertext: b64(ct),
                ciphertext_data_integrity_value: want_cdiv
                    .then(|| b64(&cdiv(&aad, &ctm, iv, ct, tag))),
                ciphertext_metadata: Some(b64(&ctm)),
                initialization_vector: b64(iv),
            })
        });
        Used {
            result,
            facts: used.facts,
        }
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

    pub(crate) fn decrypt(&self, ctx: &KeyRef<'_>, body: &[u8]) -> OpAnswer {
        let req = match wire::parse_json::<DecryptRequest>(body) {
            Ok(r) => r,
            Err(e) => return OpAnswer::refused(None, e),
        };
        let Used { result, facts } = self.decrypt_inner(ctx, &req);
        OpAnswer {
            meta: req.request_metadata,
            result,
            facts,
        }
    }

    fn decrypt_inner(
        &self,
        ctx: &KeyRef<'_>,
        req: &DecryptRequest,
    ) -> Used<HttpResponse, XksError> {
        let checked = (|| {
            check_meta(&req.request_metadata, true, true)?;
            let ct = b64_required("ciphertext", req.ciphertext.as_deref())?;
            let iv = b64_required("initializationVector", req.initialization_vector.as_deref())?;
            let tag = b64_required("authenticationTag", req.authentication_tag.as_deref())?;
            check_algorithm(req.encryption_algorithm.as_deref())?;
            let aad = b64_optional(
                "additionalAuthenticatedData",
                req.additional_authenticated_data.as_deref(),
            )?;
            let ctm = b64_optional("ciphertextMetadata", req.ciphertext_metadata.as_deref())?;
            self.check_sizes(ct.len(), aad.len())?;
            Ok((ct, iv, tag, aad, ctm))
        })();
        let (ct, iv, tag, aad, ctm_bytes) = match checked {
            Ok(c) => c,
            Err(e) => return refused(e),
        };
        // The ciphertext's shape is looked at once the caller may decrypt.
        let input = || {
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
            let version = ctm::parse(&ctm_bytes).ok_or_else(generic_invalid)?;
            Ok(GcmInput {
                version,
                iv: &iv,
                aad: build_aad(&aad, &ctm_bytes).ok_or_else(generic_invalid)?,
                ciphertext: &ct,
                tag: &tag,
            })
        };
        let used = self
            .service
            .decrypt(&key_use(ctx, req.request_metadata.as_ref()), input);
        let result = used.result.and_then(|pt| {
            let encoded = Zeroizing::new(b64(pt.expose()));
            ok_json(&DecryptResponse {
                plaintext: encoded.to_string(),
            })
        });
        Used {
            result,
            facts: used.facts,
        }
    }
}

/// A request refused before the key service was asked.
fn refused<T>(e: XksError) -> Used<T, XksError> {
    Used {
        result: Err(e),
        facts: UseFacts::default(),
    }
}

fn generic_invalid() -> XksError {
    invalid_ciphertext(
        "the ciphertext, IV, tag, additional authenticated data or ciphertext metadata is corrupted, missing or otherwise invalid",
    )
}

/// The key use a request asks for, with its metadata as the context of
/// secondary authorization.
fn key_use<'a>(ctx: &KeyRef<'a>, m: Option<&'a RequestMetadata>) -> KeyUse<'a> {
    let f = |g: fn(&RequestMetadata) -> &Option<String>| m.and_then(|m| g(m).as_deref());
    KeyUse {
        store: ctx.store,
        key: ctx.key_id,
        context: PolicyRequest {
            principal: f(|m| &m.aws_principal_arn),
            kms_key_arn: f(|m| &m.kms_key_arn),
            kms_operation: f(|m| &m.kms_operation),
            via_service: f(|m| &m.kms_via_service),
            source_vpc: f(|m| &m.aws_source_vpc),
            source_vpce: f(|m| &m.aws_source_vpce),
            groups: &[],
            resource: None,
        },
    }
}
