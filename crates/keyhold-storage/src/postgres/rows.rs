//! Reading rows into the core types; database errors.

use super::*;

pub(super) fn sealed_key(r: &Row) -> Result<SealedKey> {
    Ok((row_to_key(r)?, col(r, 17)?))
}

pub(super) fn sealed_store(r: &Row) -> Result<(KeyStore, Option<Vec<u8>>)> {
    Ok((row_to_store(r)?, col(r, 4)?))
}

pub(super) fn sealed_object(r: &Row) -> Result<SealedObject> {
    Ok((row_to_object(r)?, col(r, 5)?, col(r, 8)?))
}

pub(super) fn version_row(r: &Row) -> Result<VersionRow> {
    Ok((
        to_u32(col(r, 0)?)?,
        col(r, 1)?,
        VersionFlag::from_i64(col(r, 2)?),
        col(r, 3)?,
        col(r, 4)?,
    ))
}

/// Maps a database error: a lost or refused connection is the dependency
/// being unavailable (XKS answers 503 and clients retry); a statement
/// cancelled by its timeout likewise; anything else is a storage error.
pub(super) fn pg_err(e: tokio_postgres::Error) -> Error {
    match e.code() {
        Some(c) if *c == tokio_postgres::error::SqlState::QUERY_CANCELED => {
            Error::DependencyTimeout(format!("database: {e}"))
        }
        Some(c)
            if c.code().starts_with("08")
                || c.code().starts_with("57P")
                || *c == tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION =>
        {
            Error::DependencyTimeout(format!("database unavailable: {e}"))
        }
        Some(_) => Error::Storage(e.to_string()),
        None if e.is_closed()
            || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>()) =>
        {
            Error::DependencyTimeout(format!("database unreachable: {e}"))
        }
        None => Error::Storage(e.to_string()),
    }
}

pub(super) fn bad_row(what: impl std::fmt::Display) -> Error {
    Error::Storage(format!("unexpected database content: {what}"))
}

/// Reads column `i`, without panicking on a type mismatch.
pub(super) fn col<'a, T: tokio_postgres::types::FromSql<'a>>(r: &'a Row, i: usize) -> Result<T> {
    r.try_get(i).map_err(bad_row)
}

pub(super) fn to_u32(v: i64) -> Result<u32> {
    u32::try_from(v).map_err(|_| bad_row(format!("{v} out of range")))
}

pub(super) fn row_to_key(r: &Row) -> Result<Key> {
    let state: String = col(r, 8)?;
    Ok(Key {
        store: StorePrefix::parse(col(r, 0)?).map_err(bad_row)?,
        id: KeyId::parse(col(r, 1)?).map_err(bad_row)?,
        status: Status::parse(col(r, 2)?).ok_or_else(|| bad_row("key status"))?,
        usage: Usage::from_bits(col(r, 3)?),
        current_version: to_u32(col(r, 4)?)?,
        created_at: col(r, 5)?,
        updated_at: col(r, 6)?,
        hsm_label: col(r, 7)?,
        lifecycle: Lifecycle {
            state: KeyState::parse(&state).ok_or_else(|| bad_row(format!("key state {state}")))?,
            activate_at: col(r, 9)?,
            deactivate_at: col(r, 10)?,
            destroy_at: col(r, 11)?,
            compromised_at: col(r, 12)?,
            rotation_period: col(r, 13)?,
            next_rotation_at: col(r, 14)?,
            min_decrypt_version: to_u32(col(r, 15)?)?,
        },
        key_type: KeyType::parse(col(r, 16)?).map_err(bad_row)?,
    })
}

pub(super) fn row_to_store(r: &Row) -> Result<KeyStore> {
    Ok(KeyStore {
        prefix: StorePrefix::parse(col(r, 0)?).map_err(bad_row)?,
        status: Status::parse(col(r, 1)?).ok_or_else(|| bad_row("store status"))?,
        description: col(r, 2)?,
        created_at: col(r, 3)?,
    })
}

pub(super) fn row_to_cred(r: &Row) -> Result<StoredCredential> {
    Ok(StoredCredential {
        access_key_id: col(r, 0)?,
        store: StorePrefix::parse(col(r, 1)?).map_err(bad_row)?,
        wrapped_secret: col(r, 2)?,
        created_at: col(r, 3)?,
    })
}

pub(super) fn row_to_object(r: &Row) -> Result<ManagedObject> {
    let state = to_u32(col(r, 3)?)?;
    let attrs: String = col(r, 5)?;
    Ok(ManagedObject {
        uid: col(r, 0)?,
        object_type: to_u32(col(r, 1)?)?,
        owner: col(r, 2)?,
        state: ObjectState::from_u32(state).ok_or_else(|| bad_row(format!("state {state}")))?,
        exportable: col::<i64>(r, 4)? != 0,
        attrs: serde_json::from_str(&attrs).map_err(bad_row)?,
        has_material: col(r, 6)?,
        rev: col::<i64>(r, 7)? as u64,
    })
}

pub(super) fn lifecycle_params(l: &Lifecycle) -> (String, i64) {
    (l.state.as_str().to_owned(), l.min_decrypt_version.into())
}

pub(super) fn key_not_found(prefix: &StorePrefix, id: &KeyId) -> Error {
    Error::KeyNotFound {
        store: prefix.display().to_owned(),
        key: id.to_string(),
    }
}

pub(super) fn one_key_row(n: u64, prefix: &StorePrefix, id: &KeyId) -> Result<()> {
    if n == 0 {
        return Err(key_not_found(prefix, id));
    }
    Ok(())
}

pub(super) async fn require_store(c: &impl GenericClient, prefix: &StorePrefix) -> Result<()> {
    c.query_opt(
        "SELECT 1 FROM stores WHERE prefix = $1",
        &[&prefix.as_str()],
    )
    .await
    .map_err(pg_err)?
    .map(|_| ())
    .ok_or_else(|| Error::StoreNotFound(prefix.display().to_owned()))
}
