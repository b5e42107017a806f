//! Snapshots, restores and re-wrapping.

use super::*;

impl Maintenance for SqliteStorage {
    fn wrapped_items(&self) -> Result<Vec<(WrappedItem, Vec<u8>)>> {
        let conn = self.writer();
        let mut out = Vec::new();
        out.extend(all(
            &conn,
            "SELECT name, value FROM meta ORDER BY name",
            [],
            |r| {
                Ok((
                    WrappedItem::Meta { name: r.get(0)? },
                    r.get::<_, Vec<u8>>(1)?,
                ))
            },
        )?);
        out.extend(all(
            &conn,
            "SELECT access_key_id, store, wrapped_secret FROM credentials ORDER BY access_key_id",
            [],
            |r| {
                Ok((
                    WrappedItem::Credential {
                        access_key_id: r.get(0)?,
                        store: parse_prefix(r.get(1)?)?,
                    },
                    r.get::<_, Vec<u8>>(2)?,
                ))
            },
        )?);
        out.extend(all(&conn, "SELECT store, key_id, version, wrapped FROM key_versions WHERE length(wrapped) > 0 ORDER BY store, key_id, version", [], |r| {
                Ok((
                    WrappedItem::KeyVersion {
                        store: parse_prefix(r.get(0)?)?,
                        id: parse_key_id(r.get(1)?)?,
                        version: r.get(2)?,
                    },
                    r.get::<_, Vec<u8>>(3)?,
                ))
            })?);
        out.extend(all(
            &conn,
            "SELECT uid, material FROM objects WHERE material IS NOT NULL ORDER BY uid",
            [],
            |r| {
                Ok((
                    WrappedItem::Object { uid: r.get(0)? },
                    r.get::<_, Vec<u8>>(1)?,
                ))
            },
        )?);
        Ok(out)
    }

    fn snapshot(&self) -> Result<Snapshot> {
        // A read transaction on a connection of its own: under WAL it sees
        // one commit while writers go on.
        let conn = self.reader();
        conn.execute_batch("BEGIN").map_err(db_err)?;
        let r = (|| {
            let mut tables = Vec::new();
            for spec in SNAPSHOT_TABLES {
                let mut st = conn.prepare(&spec.select()).map_err(db_err)?;
                let n = spec.columns.len();
                let rows = st
                    .query_map([], |r| {
                        (0..n)
                            .map(|i| {
                                Ok(match r.get::<_, Value>(i)? {
                                    Value::Null => Cell::Null,
                                    Value::Integer(v) => Cell::Int(v),
                                    Value::Real(v) => Cell::Int(v as i64),
                                    Value::Text(t) => Cell::Text(t),
                                    Value::Blob(b) => Cell::Bytes(b),
                                })
                            })
                            .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .map_err(db_err)?;
                tables.push(TableDump {
                    name: spec.name.to_owned(),
                    rows: rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)?,
                });
            }
            Ok(Snapshot { tables })
        })();
        let _ = conn.execute_batch("COMMIT");
        r
    }

    fn restore(&self, snap: &Snapshot) -> Result<()> {
        snap.validate()?;
        let mut conn = self.writer();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db_err)?;
        for spec in SNAPSHOT_TABLES.iter().filter(|s| s.name != "meta") {
            let any: Option<i64> = tx
                .query_row(&crate::any_row_sql(spec.name), [], |r| r.get(0))
                .optional()
                .map_err(db_err)?;
            if any.is_some() {
                return Err(crate::not_empty(spec.name));
            }
        }
        // The meta rows (and sealed index) a fresh database may have are
        // replaced.
        tx.execute("DELETE FROM meta", []).map_err(db_err)?;
        tx.execute("DELETE FROM policies", []).map_err(db_err)?;
        for (spec, t) in snap.ordered() {
            let mut st = tx.prepare(&spec.insert('?')).map_err(db_err)?;
            for row in &t.rows {
                st.execute(rusqlite::params_from_iter(spec.cells(row).map(
                    |c| match &*c {
                        Cell::Null => Value::Null,
                        Cell::Int(v) => Value::Integer(*v),
                        Cell::Text(t) => Value::Text(t.clone()),
                        Cell::Bytes(b) => Value::Blob(b.clone()),
                    },
                )))
                .map_err(db_err)?;
            }
        }
        tx.execute(crate::mark_shared_sql!(), []).map_err(db_err)?;
        tx.commit().map_err(db_err)
    }

    fn replace_wrapped(&self, item: &WrappedItem, expected: &[u8], new: &[u8]) -> Result<bool> {
        let conn = self.writer();
        let n = match item {
            WrappedItem::Meta { name } => conn.execute(
                "UPDATE meta SET value = ?3 WHERE name = ?1 AND value = ?2",
                params![name, expected, new],
            ),
            WrappedItem::Credential {
                store,
                access_key_id,
            } => conn.execute(
                "UPDATE credentials SET wrapped_secret = ?4 WHERE access_key_id = ?1 AND store = ?2 AND wrapped_secret = ?3",
                params![access_key_id, store.as_str(), expected, new],
            ),
            WrappedItem::KeyVersion { store, id, version } => conn.execute(
                "UPDATE key_versions SET wrapped = ?5 WHERE store = ?1 AND key_id = ?2 AND version = ?3 AND wrapped = ?4",
                params![store.as_str(), id.as_str(), version, expected, new],
            ),
            WrappedItem::Object { uid } => conn.execute(
                "UPDATE objects SET material = ?3 WHERE uid = ?1 AND material = ?2",
                params![uid, expected, new],
            ),
        }
        .map_err(db_err)?;
        Ok(n == 1)
    }
}
