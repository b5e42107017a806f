//! The handlers of the typed admin API: one function per operation, whose
//! `#[utoipa::path]` attribute describes it in the OpenAPI document.

use utoipa::OpenApi;

use crate::admin_ops::*;

/// Key stores.
#[utoipa::path(get, path = "/v1/stores", tag = "stores",
    description = "Every key store. Role: auditor or custodian.",
    responses((status = 200, body = [StoreView]), (status = 403, body = OpError)),
    security(("bearer" = [])))]
pub(super) fn list_stores(ops: &AdminOps) -> OpResult<Vec<StoreView>> {
    ops.list_stores()
}

/// Creates a key store.
#[utoipa::path(post, path = "/v1/stores", tag = "stores", request_body = CreateStore,
    description = "Role: custodian.",
    responses((status = 201, body = StoreView), (status = 400, body = OpError),
        (status = 409, body = OpError, description = "the store exists")),
    security(("bearer" = [])))]
pub(super) fn create_store(ops: &AdminOps, req: CreateStore) -> OpResult<StoreView> {
    ops.create_store(&req)
}

/// One key store.
#[utoipa::path(get, path = "/v1/stores/{store}", tag = "stores",
    params(("store" = String, Path, description = "the prefix without its leading slash (percent-encode inner slashes)")),
    description = "Role: auditor or custodian.",
    responses((status = 200, body = StoreView), (status = 404, body = OpError)),
    security(("bearer" = [])))]
pub(super) fn get_store(ops: &AdminOps, store: &str) -> OpResult<StoreView> {
    ops.get_store(store)
}

/// Enables or disables a key store (break glass for all its keys).
#[utoipa::path(patch, path = "/v1/stores/{store}", tag = "stores", request_body = SetStatus,
    params(("store" = String, Path)),
    description = "In force on every running server when it answers. Role: custodian.",
    responses((status = 200, body = StoreView), (status = 404, body = OpError),
        (status = 504, body = OpError, description = "committed, but not every server confirmed it in time")),
    security(("bearer" = [])))]
pub(super) fn set_store_status(ops: &AdminOps, store: &str, req: SetStatus) -> OpResult<StoreView> {
    ops.set_store_status(store, &req)
}

/// Binds a key store to a cloud API: `xks` (AWS, the default),
/// `azure-ekm` (Azure Managed HSM: path prefix and client certificate) or
/// `ms-dke` (Microsoft Double Key Encryption: path prefix, Entra ID token
/// issuer and audience, who may decrypt) or `google-cse` (Google Workspace
/// CSE: KACLS URL, KEK, the users' identity provider, the perimeter).
#[utoipa::path(put, path = "/v1/stores/{store}/api", tag = "stores", request_body = SetStoreApi,
    params(("store" = String, Path)),
    description = "In force on every running server when it answers (a new client CA too: no restart). Role: custodian.",
    responses((status = 200, body = StoreView), (status = 400, body = OpError), (status = 404, body = OpError),
        (status = 409, body = OpError, description = "another store serves Azure at this path prefix"),
        (status = 504, body = OpError, description = "committed, but not every server confirmed it in time")),
    security(("bearer" = [])))]
pub(super) fn set_store_api(ops: &AdminOps, store: &str, req: SetStoreApi) -> OpResult<StoreView> {
    ops.set_store_api(store, &req)
}

/// A store's SigV4 credentials (never their secrets).
#[utoipa::path(get, path = "/v1/stores/{store}/credentials", tag = "credentials",
    params(("store" = String, Path)),
    description = "Role: auditor or custodian.",
    responses((status = 200, body = [CredentialView]), (status = 404, body = OpError)),
    security(("bearer" = [])))]
pub(super) fn list_credentials(ops: &AdminOps, store: &str) -> OpResult<Vec<CredentialView>> {
    ops.list_credentials(store)
}

/// Makes a SigV4 credential for AWS KMS; its secret is in this answer only.
#[utoipa::path(post, path = "/v1/stores/{store}/credentials", tag = "credentials",
    params(("store" = String, Path)),
    description = "Role: custodian.",
    responses((status = 201, body = NewCredentialView), (status = 404, body = OpError)),
    security(("bearer" = [])))]
pub(super) fn add_credential(ops: &AdminOps, store: &str) -> OpResult<NewCredentialView> {
    ops.add_credential(store)
}

/// Removes a credential: requests signed with it fail from now on.
#[utoipa::path(delete, path = "/v1/stores/{store}/credentials/{access_key_id}", tag = "credentials",
    params(("store" = String, Path), ("access_key_id" = String, Path)),
    description = "Role: custodian.",
    responses((status = 204), (status = 404, body = OpError)),
    security(("bearer" = [])))]
pub(super) fn remove_credential(ops: &AdminOps, store: &str, access_key_id: &str) -> OpResult<()> {
    ops.remove_credential(store, access_key_id)
}

/// A store's keys, in key id order.
#[utoipa::path(get, path = "/v1/stores/{store}/keys", tag = "keys",
    params(("store" = String, Path),
        ("after" = Option<String>, Query, description = "list keys after this key id"),
        ("limit" = Option<usize>, Query, description = "at most this many (1 to 100000, default 1000)")),
    description = "Role: auditor or custodian.",
    responses((status = 200, body = [KeyView]), (status = 404, body = OpError)),
    security(("bearer" = [])))]
pub(super) fn list_keys(
    ops: &AdminOps,
    store: &str,
    after: Option<&str>,
    limit: Option<usize>,
) -> OpResult<Vec<KeyView>> {
    ops.list_keys(store, after, limit)
}

/// Creates a key: AES-256 or a key pair (RSA, EC, Ed25519) made and wrapped
/// in Keyhold, or an AES-256 key generated in the HSM.
#[utoipa::path(post, path = "/v1/stores/{store}/keys", tag = "keys", request_body = CreateKey,
    params(("store" = String, Path)),
    description = "Role: custodian.",
    responses((status = 201, body = KeyView), (status = 400, body = OpError),
        (status = 404, body = OpError), (status = 409, body = OpError)),
    security(("bearer" = [])))]
pub(super) fn create_key(ops: &AdminOps, store: &str, req: CreateKey) -> OpResult<KeyView> {
    ops.create_key(store, &req)
}

/// Creates many software keys at once.
#[utoipa::path(post, path = "/v1/stores/{store}/keys/batch", tag = "keys", request_body = CreateKeys,
    params(("store" = String, Path)),
    description = "Role: custodian.",
    responses((status = 201, body = KeysMade), (status = 400, body = OpError),
        (status = 404, body = OpError), (status = 409, body = OpError)),
    security(("bearer" = [])))]
pub(super) fn create_keys(ops: &AdminOps, store: &str, req: CreateKeys) -> OpResult<KeysMade> {
    ops.create_keys(store, &req)
}

/// Adopts an AES-256 key that already exists in the HSM.
#[utoipa::path(post, path = "/v1/stores/{store}/hsm-keys", tag = "keys", request_body = ImportHsmKey,
    params(("store" = String, Path)),
    description = "Role: custodian.",
    responses((status = 201, body = KeyView), (status = 400, body = OpError),
        (status = 404, body = OpError), (status = 409, body = OpError)),
    security(("bearer" = [])))]
pub(super) fn import_hsm_key(ops: &AdminOps, store: &str, req: ImportHsmKey) -> OpResult<KeyView> {
    ops.import_hsm_key(store, &req)
}

/// One key.
#[utoipa::path(get, path = "/v1/stores/{store}/keys/{key}", tag = "keys",
    params(("store" = String, Path), ("key" = String, Path)),
    description = "Role: auditor or custodian.",
    responses((status = 200, body = KeyView), (status = 404, body = OpError)),
    security(("bearer" = [])))]
pub(super) fn get_key(ops: &AdminOps, store: &str, key: &str) -> OpResult<KeyView> {
    ops.get_key(store, key)
}

/// Enables or disables a key (break glass for one key).
#[utoipa::path(patch, path = "/v1/stores/{store}/keys/{key}", tag = "keys", request_body = SetStatus,
    params(("store" = String, Path), ("key" = String, Path)),
    description = "In force on every running server when it answers. Role: custodian.",
    responses((status = 200, body = KeyView), (status = 404, body = OpError),
        (status = 504, body = OpError)),
    security(("bearer" = [])))]
pub(super) fn set_key_status(
    ops: &AdminOps,
    store: &str,
    key: &str,
    req: SetStatus,
) -> OpResult<KeyView> {
    ops.set_key_status(store, key, &req)
}

/// Rotates a key: new encryptions use a new version; older ones still decrypt.
#[utoipa::path(post, path = "/v1/stores/{store}/keys/{key}/rotate", tag = "keys",
    params(("store" = String, Path), ("key" = String, Path)),
    description = "Role: custodian.",
    responses((status = 200, body = KeyView), (status = 404, body = OpError),
        (status = 409, body = OpError)),
    security(("bearer" = [])))]
pub(super) fn rotate_key(ops: &AdminOps, store: &str, key: &str) -> OpResult<KeyView> {
    ops.rotate_key(store, key)
}

/// A lifecycle transition: `activate` (PRE_ACTIVE → ACTIVE), `deactivate`
/// (decrypt only from now on), `compromise` (decrypt only, every use
/// reported), `cancel-destroy`.
#[utoipa::path(post, path = "/v1/stores/{store}/keys/{key}/{action}", tag = "key lifecycle",
    params(("store" = String, Path), ("key" = String, Path),
        ("action" = String, Path, description = "activate, deactivate, compromise or cancel-destroy")),
    description = "In force on every running server when it answers. Role: custodian.",
    responses((status = 200, body = KeyView), (status = 404, body = OpError),
        (status = 409, body = OpError, description = "not allowed from the key's state")),
    security(("bearer" = [])))]
pub(super) fn key_action(
    ops: &AdminOps,
    store: &str,
    key: &str,
    action: KeyAction,
) -> OpResult<KeyView> {
    ops.key_action(store, key, action)
}

/// Schedules destruction (crypto-shredding) after a waiting period, or
/// destroys at once (`now`, with the key id in `confirm`).
#[utoipa::path(post, path = "/v1/stores/{store}/keys/{key}/destroy", tag = "key lifecycle",
    request_body(content = Destroy, description = "may be empty: 30 days"),
    params(("store" = String, Path), ("key" = String, Path)),
    description = "Role: custodian.",
    responses((status = 200, body = KeyView), (status = 400, body = OpError),
        (status = 404, body = OpError), (status = 409, body = OpError)),
    security(("bearer" = [])))]
pub(super) fn destroy_key(
    ops: &AdminOps,
    store: &str,
    key: &str,
    req: Destroy,
) -> OpResult<KeyView> {
    ops.destroy_key(store, key, &req)
}

/// Sets or clears the dates on which a key activates or deactivates by itself.
#[utoipa::path(put, path = "/v1/stores/{store}/keys/{key}/dates", tag = "key lifecycle",
    request_body = SetDates, params(("store" = String, Path), ("key" = String, Path)),
    description = "Role: custodian.",
    responses((status = 200, body = KeyView), (status = 400, body = OpError),
        (status = 404, body = OpError), (status = 409, body = OpError)),
    security(("bearer" = [])))]
pub(super) fn set_key_dates(
    ops: &AdminOps,
    store: &str,
    key: &str,
    req: SetDates,
) -> OpResult<KeyView> {
    ops.set_key_dates(store, key, &req)
}

/// Sets (or turns off) automatic rotation.
#[utoipa::path(put, path = "/v1/stores/{store}/keys/{key}/rotation", tag = "key lifecycle",
    request_body = SetRotation, params(("store" = String, Path), ("key" = String, Path)),
    description = "Role: custodian.",
    responses((status = 200, body = KeyView), (status = 400, body = OpError),
        (status = 404, body = OpError)),
    security(("bearer" = [])))]
pub(super) fn set_rotation(
    ops: &AdminOps,
    store: &str,
    key: &str,
    req: SetRotation,
) -> OpResult<KeyView> {
    ops.set_rotation(store, key, &req)
}

/// Retires the versions below `version`: their ciphertext no longer decrypts.
#[utoipa::path(put, path = "/v1/stores/{store}/keys/{key}/min-decrypt-version", tag = "key lifecycle",
    request_body = SetMinDecryptVersion, params(("store" = String, Path), ("key" = String, Path)),
    description = "In force on every running server when it answers. Role: custodian.",
    responses((status = 200, body = KeyView), (status = 400, body = OpError),
        (status = 404, body = OpError)),
    security(("bearer" = [])))]
pub(super) fn set_min_decrypt_version(
    ops: &AdminOps,
    store: &str,
    key: &str,
    req: SetMinDecryptVersion,
) -> OpResult<KeyView> {
    ops.set_min_decrypt_version(store, key, &req)
}

/// Changes which operations a key allows.
#[utoipa::path(put, path = "/v1/stores/{store}/keys/{key}/usage", tag = "keys",
    request_body = SetUsage, params(("store" = String, Path), ("key" = String, Path)),
    description = "In force on every running server when it answers. Role: custodian.",
    responses((status = 200, body = KeyView), (status = 400, body = OpError),
        (status = 404, body = OpError)),
    security(("bearer" = [])))]
pub(super) fn set_usage(
    ops: &AdminOps,
    store: &str,
    key: &str,
    req: SetUsage,
) -> OpResult<KeyView> {
    ops.set_usage(store, key, &req)
}

/// A key pair's public key, PEM.
#[utoipa::path(get, path = "/v1/stores/{store}/keys/{key}/public-key", tag = "keys",
    params(("store" = String, Path), ("key" = String, Path),
        ("version" = Option<u32>, Query, description = "the key version (default: the current one)")),
    description = "Role: auditor or custodian. An AES-256 key has none (400).",
    responses((status = 200, body = PublicKeyView), (status = 400, body = OpError),
        (status = 404, body = OpError)),
    security(("bearer" = [])))]
pub(super) fn public_key(
    ops: &AdminOps,
    store: &str,
    key: &str,
    version: Option<u32>,
) -> OpResult<PublicKeyView> {
    ops.public_key(store, key, version)
}

/// A key's versions.
#[utoipa::path(get, path = "/v1/stores/{store}/keys/{key}/versions", tag = "key lifecycle",
    params(("store" = String, Path), ("key" = String, Path)),
    description = "Role: auditor or custodian.",
    responses((status = 200, body = [VersionView]), (status = 404, body = OpError)),
    security(("bearer" = [])))]
pub(super) fn list_versions(ops: &AdminOps, store: &str, key: &str) -> OpResult<Vec<VersionView>> {
    ops.key_versions(store, key)
}

/// Crypto-shreds the retired versions (below the minimum decryption version).
#[utoipa::path(post, path = "/v1/stores/{store}/keys/{key}/trim-versions", tag = "key lifecycle",
    params(("store" = String, Path), ("key" = String, Path)),
    description = "Role: custodian.",
    responses((status = 200, body = TrimmedView), (status = 404, body = OpError)),
    security(("bearer" = [])))]
pub(super) fn trim_versions(ops: &AdminOps, store: &str, key: &str) -> OpResult<TrimmedView> {
    ops.trim_versions(store, key)
}

/// Marks one version good, compromised (decryption refused) or
/// compromised-allowed (allowed by override, every use reported).
#[utoipa::path(put, path = "/v1/stores/{store}/keys/{key}/versions/{version}/flag", tag = "key lifecycle",
    request_body = SetVersionFlag,
    params(("store" = String, Path), ("key" = String, Path), ("version" = u32, Path)),
    description = "In force on every running server when it answers. Role: custodian.",
    responses((status = 200, body = KeyView), (status = 400, body = OpError),
        (status = 404, body = OpError)),
    security(("bearer" = [])))]
pub(super) fn set_version_flag(
    ops: &AdminOps,
    store: &str,
    key: &str,
    version: u32,
    req: SetVersionFlag,
) -> OpResult<KeyView> {
    ops.set_version_flag(store, key, version, &req)
}

/// Health, lockdown, row integrity, keys by state, running servers.
#[utoipa::path(get, path = "/v1/status", tag = "status",
    description = "Role: any.",
    responses((status = 200, body = StatusView)),
    security(("bearer" = [])))]
pub(super) fn status(ops: &AdminOps) -> OpResult<StatusView> {
    ops.status()
}

/// Names the caller: the token's name, role and id.
#[utoipa::path(get, path = "/v1/whoami", tag = "status",
    description = "Role: any.",
    responses((status = 200, body = WhoamiView)),
    security(("bearer" = [])))]
#[allow(dead_code)]
pub(super) fn whoami() {}

/// Takes a consistent, encrypted backup online (traffic goes on).
#[utoipa::path(post, path = "/v1/backups", tag = "backups",
    description = "Role: custodian.",
    responses((status = 201, body = BackupMade)),
    security(("bearer" = [])))]
pub(super) fn create_backup(ops: &AdminOps) -> OpResult<BackupMade> {
    ops.create_backup()
}

/// Checks a backup with this key manager's root of trust.
#[utoipa::path(post, path = "/v1/backups/verify", tag = "backups", request_body = BackupData,
    description = "Role: custodian.",
    responses((status = 200, body = BackupView), (status = 400, body = OpError)),
    security(("bearer" = [])))]
pub(super) fn verify_backup(ops: &AdminOps, req: BackupData) -> OpResult<BackupView> {
    ops.verify_backup(&req)
}

/// Verifies every audit chain's MACs and order against its checkpoints
/// (those in the database, the configured file and the request's).
#[utoipa::path(post, path = "/v1/audit/verify", tag = "audit",
    request_body(content = AuditVerify, description = "may be empty"),
    description = "Role: auditor.",
    responses((status = 200, body = AuditVerifyView)),
    security(("bearer" = [])))]
pub(super) fn audit_verify(ops: &AdminOps, req: AuditVerify) -> OpResult<AuditVerifyView> {
    ops.audit_verify(&req)
}

/// The newest matching audit records, oldest first, each with `verified`
/// (whether its MAC holds).
#[utoipa::path(post, path = "/v1/audit/query", tag = "audit",
    request_body(content = AuditFilter, description = "may be empty: every record"),
    description = "Role: auditor.",
    responses((status = 200, body = [Object]), (status = 400, body = OpError)),
    security(("bearer" = [])))]
pub(super) fn audit_query(ops: &AdminOps, req: AuditFilter) -> OpResult<Vec<serde_json::Value>> {
    ops.audit_query(&req)
}

/// Every matching record that verifies, as its JSON line (MAC included).
#[utoipa::path(post, path = "/v1/audit/export", tag = "audit",
    request_body(content = AuditFilter, description = "may be empty: every record"),
    description = "Role: auditor.",
    responses((status = 200, body = AuditExportView), (status = 400, body = OpError)),
    security(("bearer" = [])))]
pub(super) fn audit_export(ops: &AdminOps, req: AuditFilter) -> OpResult<AuditExportView> {
    ops.audit_export(&req)
}

/// The KMIP front-end: objects by owner, type and state; the listener's counters.
#[utoipa::path(get, path = "/v1/kmip/status", tag = "kmip",
    description = "Role: any.",
    responses((status = 200, body = KmipStatusView)),
    security(("bearer" = [])))]
pub(super) fn kmip_status(ops: &AdminOps) -> OpResult<KmipStatusView> {
    ops.kmip_status()
}

/// The KMIP client certificates issued (and revoked).
#[utoipa::path(get, path = "/v1/kmip/client-certs", tag = "kmip",
    description = "Role: auditor or custodian.",
    responses((status = 200, body = [ClientCertView])),
    security(("bearer" = [])))]
pub(super) fn list_client_certs(ops: &AdminOps) -> OpResult<Vec<ClientCertView>> {
    ops.list_client_certs()
}

/// Issues a KMIP client certificate (subject CN = the identity) from the
/// data directory's client CA; its private key is in this answer only.
#[utoipa::path(post, path = "/v1/kmip/client-certs", tag = "kmip", request_body = IssueClientCert,
    description = "Role: custodian.",
    responses((status = 201, body = IssuedCertView), (status = 400, body = OpError)),
    security(("bearer" = [])))]
pub(super) fn issue_client_cert(ops: &AdminOps, req: IssueClientCert) -> OpResult<IssuedCertView> {
    ops.issue_client_cert(&req)
}

/// Revokes client certificates by identity (every one issued for it) or
/// serial: refused from the next handshake, open connections closed.
#[utoipa::path(delete, path = "/v1/kmip/client-certs/{name_or_serial}", tag = "kmip",
    params(("name_or_serial" = String, Path)),
    description = "In force on every running server when it answers. Role: custodian.",
    responses((status = 200, body = RevokedCertsView), (status = 404, body = OpError)),
    security(("bearer" = [])))]
pub(super) fn revoke_client_certs(
    ops: &AdminOps,
    name_or_serial: &str,
) -> OpResult<RevokedCertsView> {
    ops.revoke_client_certs(name_or_serial)
}

/// Lets another identity ("*": every one) use an object; an XKS key
/// (`xks:/STORE/KEY-ID`) is granted for reading its attributes only.
#[utoipa::path(put, path = "/v1/kmip/objects/{uid}/grants/{identity}", tag = "kmip",
    params(("uid" = String, Path), ("identity" = String, Path)),
    description = "In force on every running server when it answers. Role: custodian.",
    responses((status = 200, body = GrantView), (status = 404, body = OpError)),
    security(("bearer" = [])))]
pub(super) fn grant(ops: &AdminOps, uid: &str, identity: &str) -> OpResult<GrantView> {
    ops.set_grant(uid, identity, true)
}

/// Takes a grant back.
#[utoipa::path(delete, path = "/v1/kmip/objects/{uid}/grants/{identity}", tag = "kmip",
    params(("uid" = String, Path), ("identity" = String, Path)),
    description = "In force on every running server when it answers. Role: custodian.",
    responses((status = 200, body = GrantView), (status = 404, body = OpError)),
    security(("bearer" = [])))]
pub(super) fn ungrant(ops: &AdminOps, uid: &str, identity: &str) -> OpResult<GrantView> {
    ops.set_grant(uid, identity, false)
}

/// Removes what is left of objects destroyed at least this long ago.
#[utoipa::path(post, path = "/v1/kmip/purge-destroyed", tag = "kmip", request_body = PurgeDestroyed,
    description = "Role: custodian.",
    responses((status = 200, body = PurgedView)),
    security(("bearer" = [])))]
pub(super) fn purge_destroyed(ops: &AdminOps, req: PurgeDestroyed) -> OpResult<PurgedView> {
    ops.purge_destroyed(&req)
}

/// The admin API's tokens (never their secrets).
#[utoipa::path(get, path = "/v1/tokens", tag = "tokens",
    description = "Role: auditor or custodian.",
    responses((status = 200, body = [TokenView])),
    security(("bearer" = [])))]
pub(super) fn list_tokens(ops: &AdminOps) -> OpResult<Vec<TokenView>> {
    ops.list_tokens()
}

/// Makes a token; its secret is in this answer only (only a digest is kept).
#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", request_body = CreateToken,
    description = "Role: custodian.",
    responses((status = 201, body = NewTokenView), (status = 400, body = OpError)),
    security(("bearer" = [])))]
pub(super) fn create_token(ops: &AdminOps, req: CreateToken) -> OpResult<NewTokenView> {
    ops.create_token(&req)
}

/// Revokes a token (by name or id): refused from the next request on.
#[utoipa::path(delete, path = "/v1/tokens/{name}", tag = "tokens",
    params(("name" = String, Path)),
    description = "Role: custodian.",
    responses((status = 200, body = TokenView), (status = 404, body = OpError)),
    security(("bearer" = [])))]
pub(super) fn revoke_token(ops: &AdminOps, name: &str) -> OpResult<TokenView> {
    ops.revoke_token(name)
}

/// Every scope that has a policy.
#[utoipa::path(get, path = "/v1/policies", tag = "policies",
    description = "Role: auditor or custodian.",
    responses((status = 200, body = [PolicySummary])),
    security(("bearer" = [])))]
pub(super) fn list_policies(ops: &AdminOps) -> OpResult<Vec<PolicySummary>> {
    ops.list_policies()
}

/// Checks a policy without applying it.
#[utoipa::path(post, path = "/v1/policies/validate", tag = "policies", request_body = PolicyText,
    description = "Role: auditor or custodian.",
    responses((status = 200, body = PolicyCheck), (status = 400, body = OpError)),
    security(("bearer" = [])))]
pub(super) fn validate_policy(ops: &AdminOps, req: PolicyText) -> OpResult<PolicyCheck> {
    ops.validate_policy(&req)
}

/// A store's policy.
#[utoipa::path(get, path = "/v1/stores/{store}/policy", tag = "policies",
    params(("store" = String, Path)),
    description = "Role: auditor or custodian.",
    responses((status = 200, body = PolicyView), (status = 404, body = OpError)),
    security(("bearer" = [])))]
pub(super) fn get_policy(ops: &AdminOps, store: &str) -> OpResult<PolicyView> {
    ops.get_policy(store, None)
}

/// Sets a store's policy, validated first.
#[utoipa::path(put, path = "/v1/stores/{store}/policy", tag = "policies", request_body = PolicyText,
    params(("store" = String, Path)),
    description = "In force on every running server when it answers. Role: custodian.",
    responses((status = 200, body = PolicyView), (status = 400, body = OpError),
        (status = 404, body = OpError)),
    security(("bearer" = [])))]
pub(super) fn set_policy(ops: &AdminOps, store: &str, req: PolicyText) -> OpResult<PolicyView> {
    ops.set_policy(store, None, &req)
}

/// Removes a store's policy.
#[utoipa::path(delete, path = "/v1/stores/{store}/policy", tag = "policies",
    params(("store" = String, Path)),
    description = "In force on every running server when it answers. Role: custodian.",
    responses((status = 200, body = PolicyRemoved), (status = 404, body = OpError)),
    security(("bearer" = [])))]
pub(super) fn remove_policy(ops: &AdminOps, store: &str) -> OpResult<PolicyRemoved> {
    ops.remove_policy(store, None)
}

/// Evaluates a sample request against the store's policy.
#[utoipa::path(post, path = "/v1/stores/{store}/policy/test", tag = "policies",
    request_body = PolicyTest, params(("store" = String, Path)),
    description = "Role: auditor or custodian.",
    responses((status = 200, body = PolicyDecision), (status = 404, body = OpError)),
    security(("bearer" = [])))]
pub(super) fn test_policy(
    ops: &AdminOps,
    store: &str,
    req: PolicyTest,
) -> OpResult<PolicyDecision> {
    ops.test_policy(store, None, &req)
}

/// A key's policy (applied on top of its store's: deny wins).
#[utoipa::path(get, path = "/v1/stores/{store}/keys/{key}/policy", tag = "policies",
    params(("store" = String, Path), ("key" = String, Path)),
    description = "Role: auditor or custodian.",
    responses((status = 200, body = PolicyView), (status = 404, body = OpError)),
    security(("bearer" = [])))]
pub(super) fn get_key_policy(ops: &AdminOps, store: &str, key: &str) -> OpResult<PolicyView> {
    ops.get_policy(store, Some(key))
}

/// Sets a key's policy, validated first.
#[utoipa::path(put, path = "/v1/stores/{store}/keys/{key}/policy", tag = "policies",
    request_body = PolicyText, params(("store" = String, Path), ("key" = String, Path)),
    description = "In force on every running server when it answers. Role: custodian.",
    responses((status = 200, body = PolicyView), (status = 400, body = OpError),
        (status = 404, body = OpError)),
    security(("bearer" = [])))]
pub(super) fn set_key_policy(
    ops: &AdminOps,
    store: &str,
    key: &str,
    req: PolicyText,
) -> OpResult<PolicyView> {
    ops.set_policy(store, Some(key), &req)
}

/// Removes a key's policy.
#[utoipa::path(delete, path = "/v1/stores/{store}/keys/{key}/policy", tag = "policies",
    params(("store" = String, Path), ("key" = String, Path)),
    description = "In force on every running server when it answers. Role: custodian.",
    responses((status = 200, body = PolicyRemoved), (status = 404, body = OpError)),
    security(("bearer" = [])))]
pub(super) fn remove_key_policy(ops: &AdminOps, store: &str, key: &str) -> OpResult<PolicyRemoved> {
    ops.remove_policy(store, Some(key))
}

/// Evaluates a sample request against the store's and the key's policies.
#[utoipa::path(post, path = "/v1/stores/{store}/keys/{key}/policy/test", tag = "policies",
    request_body = PolicyTest, params(("store" = String, Path), ("key" = String, Path)),
    description = "Role: auditor or custodian.",
    responses((status = 200, body = PolicyDecision), (status = 404, body = OpError)),
    security(("bearer" = [])))]
pub(super) fn test_key_policy(
    ops: &AdminOps,
    store: &str,
    key: &str,
    req: PolicyTest,
) -> OpResult<PolicyDecision> {
    ops.test_policy(store, Some(key), &req)
}

/// Whether Keyhold is locked down.
#[utoipa::path(get, path = "/v1/lockdown", tag = "break glass",
    description = "Role: any.",
    responses((status = 200, body = LockdownView)),
    security(("bearer" = [])))]
pub(super) fn get_lockdown(ops: &AdminOps) -> OpResult<LockdownView> {
    ops.lockdown()
}

/// Locks every key down on every front-end (`true`), or lifts it.
#[utoipa::path(put, path = "/v1/lockdown", tag = "break glass", request_body = LockdownView,
    description = "In force on every running server when it answers. Role: custodian.",
    responses((status = 200, body = LockdownView), (status = 504, body = OpError)),
    security(("bearer" = [])))]
pub(super) fn set_lockdown(ops: &AdminOps, req: LockdownView) -> OpResult<LockdownView> {
    ops.set_lockdown(&req)
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let comps = api.components.get_or_insert_with(Default::default);
        comps.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "an admin token (`keyhold admin token create NAME --role ROLE`)",
                    ))
                    .build(),
            ),
        );
    }
}

/// The typed admin API's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(title = "Keyhold admin API", version = "1",
        description = "Key stores, credentials, keys and break glass, for custodians, auditors and operators. Every call is recorded in the audit log.",
        license(name = "Apache-2.0 OR MIT")),
    paths(list_stores, create_store, get_store, set_store_status, set_store_api, list_credentials,
        add_credential, remove_credential, list_keys, create_key, create_keys, import_hsm_key, get_key, set_key_status,
        rotate_key, key_action, destroy_key, set_key_dates, set_rotation,
        set_min_decrypt_version, set_usage, list_versions, public_key, trim_versions, set_version_flag,
        status, list_tokens, create_token, revoke_token, kmip_status, list_client_certs,
        issue_client_cert, revoke_client_certs, grant, ungrant, purge_destroyed, whoami,
        create_backup, verify_backup, audit_verify,
        audit_query, audit_export,
        list_policies, validate_policy, get_policy, set_policy, remove_policy, test_policy,
        get_key_policy, set_key_policy, remove_key_policy, test_key_policy,
        get_lockdown, set_lockdown),
    components(schemas(StoreView, AzureEkmView, DkeView, CseView, SetStoreApi, KeyView, CredentialView, NewCredentialView, CreateStore,
        CreateKey, CreateKeys, KeysMade, ImportHsmKey, SetStatus, StatusName, LockdownView, InForceView, WaitedOut, OpError,
        Destroy, SetDates, SetRotation, SetMinDecryptVersion, SetUsage, SetVersionFlag,
        VersionView, PublicKeyView, TrimmedView, PolicyText, PolicyView, PolicySummary, PolicyRemoved,
        PolicyCheck, PolicyTest, PolicyDecision, CreateToken, TokenView, NewTokenView, StatusView,
        EkmView, IntegrityView, ServerView, FipsView, ClientCertView, IssueClientCert, IssuedCertView,
        RevokedCertsView, GrantView, PurgeDestroyed, PurgedView, ObjectCount, KmipStatusView,
        AuditFilter, AuditVerify, AuditVerifyView, ChainView, AuditExportView, WhoamiView,
        BackupMade, BackupView, BackupData)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// The OpenAPI document as served (pretty JSON, with a final newline).
pub fn openapi_json() -> String {
    let mut s = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    s.push('\n');
    s
}
