//! Reading rows into the core types.

use super::*;

/// The values of the lifecycle columns, in [`KEY_COLUMNS`] order (`state`
/// to `min_decrypt_version`): one place for inserts and updates.
pub(super) fn lifecycle_values(l: &Lifecycle) -> [Value; 8] {
    let opt = |t: Option<i64>| t.map_or(Value::Null, Value::Integer);
    [
        Value::Text(l.state.as_str().to_owned()),
        opt(l.activate_at),
        opt(l.deactivate_at),
        opt(l.destroy_at),
        opt(l.compromised_at),
        opt(l.rotation_period),
        opt(l.next_rotation_at),
        Value::Integer(l.min_decrypt_version.into()),
    ]
}

pub(super) const OBJECT_COLUMNS: &str =
    "uid, object_type, owner, state, exportable, attrs, material IS NOT NULL, rev, seal";

pub(super) fn sealed_object(r: &rusqlite::Row<'_>) -> rusqlite::Result<SealedObject> {
    Ok((row_to_object(r)?, r.get(5)?, r.get(8)?))
}

pub(super) fn row_to_object(r: &rusqlite::Row<'_>) -> rusqlite::Result<ManagedObject> {
    let bad = |i: usize, what: String| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, what.into())
    };
    let state: u32 = r.get(3)?;
    let attrs: String = r.get(5)?;
    Ok(ManagedObject {
        uid: r.get(0)?,
        object_type: r.get(1)?,
        owner: r.get(2)?,
        state: ObjectState::from_u32(state).ok_or_else(|| bad(3, format!("bad state {state}")))?,
        exportable: r.get(4)?,
        attrs: serde_json::from_str(&attrs).map_err(|e| bad(5, e.to_string()))?,
        has_material: r.get(6)?,
        rev: r.get(7)?,
    })
}

pub(super) fn db_err(e: rusqlite::Error) -> Error {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            Error::DependencyTimeout(e.to_string())
        }
        _ => Error::Storage(e.to_string()),
    }
}

pub(super) fn parse_prefix(s: String) -> rusqlite::Result<StorePrefix> {
    StorePrefix::parse(&s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

pub(super) fn parse_key_id(s: String) -> rusqlite::Result<KeyId> {
    KeyId::parse(&s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, Box::new(e))
    })
}

pub(super) fn parse_status(s: String) -> rusqlite::Result<Status> {
    Status::parse(&s).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("bad status {s:?}").into(),
        )
    })
}

impl SqliteStorage {
    pub(super) fn row_to_key(r: &rusqlite::Row<'_>) -> rusqlite::Result<Key> {
        Ok(Key {
            store: parse_prefix(r.get(0)?)?,
            id: parse_key_id(r.get(1)?)?,
            status: parse_status(r.get(2)?)?,
            usage: Usage::from_bits(r.get(3)?),
            current_version: r.get(4)?,
            created_at: r.get(5)?,
            updated_at: r.get(6)?,
            hsm_label: r.get(7)?,
            lifecycle: Lifecycle {
                state: {
                    let v: String = r.get(8)?;
                    KeyState::parse(&v).ok_or_else(|| {
                        rusqlite::Error::FromSqlConversionFailure(
                            8,
                            rusqlite::types::Type::Text,
                            format!("bad key state {v:?}").into(),
                        )
                    })?
                },
                activate_at: r.get(9)?,
                deactivate_at: r.get(10)?,
                destroy_at: r.get(11)?,
                compromised_at: r.get(12)?,
                rotation_period: r.get(13)?,
                next_rotation_at: r.get(14)?,
                min_decrypt_version: r.get(15)?,
            },
            key_type: {
                let v: String = r.get(16)?;
                KeyType::parse(&v).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        16,
                        rusqlite::types::Type::Text,
                        Box::new(e),
                    )
                })?
            },
        })
    }

    pub(super) fn row_to_store(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyStore> {
        Ok(KeyStore {
            prefix: parse_prefix(r.get(0)?)?,
            status: parse_status(r.get(1)?)?,
            description: r.get(2)?,
            created_at: r.get(3)?,
        })
    }

    pub(super) fn row_to_cred(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredCredential> {
        Ok(StoredCredential {
            access_key_id: r.get(0)?,
            store: parse_prefix(r.get(1)?)?,
            wrapped_secret: r.get(2)?,
            created_at: r.get(3)?,
        })
    }

    pub(super) fn require_store(conn: &Connection, prefix: &StorePrefix) -> Result<()> {
        let found: Option<i64> = conn
            .query_row(
                "SELECT 1 FROM stores WHERE prefix = ?1",
                [prefix.as_str()],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)?;
        found
            .map(|_| ())
            .ok_or_else(|| Error::StoreNotFound(prefix.display().to_owned()))
    }

    /// An UPDATE of one key changed `n` rows: none means no such key.
    pub(super) fn one_key_row(n: usize, prefix: &StorePrefix, id: &KeyId) -> Result<()> {
        if n == 0 {
            return Err(Self::key_not_found(prefix, id));
        }
        Ok(())
    }

    pub(super) fn key_not_found(prefix: &StorePrefix, id: &KeyId) -> Error {
        Error::KeyNotFound {
            store: prefix.display().to_owned(),
            key: id.to_string(),
        }
    }

    pub(super) fn sealed_key(r: &rusqlite::Row<'_>) -> rusqlite::Result<SealedKey> {
        Ok((Self::row_to_key(r)?, r.get(17)?))
    }

    pub(super) fn version_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<VersionRow> {
        Ok((
            r.get(0)?,
            r.get(1)?,
            VersionFlag::from_i64(r.get(2)?),
            r.get(3)?,
            r.get(4)?,
        ))
    }
}

/// Every row `sql` answers for `params`, each read by `row` (the statement
/// is cached on the connection).
pub(super) fn all<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    let mut st = conn.prepare_cached(sql).map_err(db_err)?;
    let rows = st.query_map(params, row).map_err(db_err)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)
}
