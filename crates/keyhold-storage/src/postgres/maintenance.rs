//! Snapshots, restores and re-wrapping.

use super::*;

impl Maintenance for PostgresStorage {
    fn wrapped_items(&self) -> Result<Vec<(WrappedItem, Vec<u8>)>> {
        let mut out = self.rows(
            "SELECT name, value FROM meta ORDER BY name".into(),
            params![],
            |r| Ok((WrappedItem::Meta { name: col(r, 0)? }, col(r, 1)?)),
        )?;
        out.extend(self.rows(
            "SELECT access_key_id, store, wrapped_secret FROM credentials ORDER BY access_key_id"
                .into(),
            params![],
            |r| {
                Ok((
                    WrappedItem::Credential {
                        access_key_id: col(r, 0)?,
                        store: StorePrefix::parse(col(r, 1)?).map_err(bad_row)?,
                    },
                    col(r, 2)?,
                ))
            },
        )?);
        out.extend(self.rows(
            "SELECT store, key_id, version, wrapped FROM key_versions WHERE length(wrapped) > 0 ORDER BY store, key_id, version".into(),
            params![],
            |r| {
                Ok((
                    WrappedItem::KeyVersion {
                        store: StorePrefix::parse(col(r, 0)?).map_err(bad_row)?,
                        id: KeyId::parse(col(r, 1)?).map_err(bad_row)?,
                        version: to_u32(col(r, 2)?)?,
                    },
                    col(r, 3)?,
                ))
            },
        )?);
        out.extend(self.rows(
            "SELECT uid, material FROM objects WHERE material IS NOT NULL ORDER BY uid".into(),
            params![],
            |r| Ok((WrappedItem::Object { uid: col(r, 0)? }, col(r, 1)?)),
        )?);
        Ok(out)
    }

    fn replace_wrapped(&self, item: &WrappedItem, expected: &[u8], new: &[u8]) -> Result<bool> {
        let (e, n) = (expected.to_vec(), new.to_vec());
        let changed = match item {
            WrappedItem::Meta { name } => self.exec(
                "UPDATE meta SET value = $3 WHERE name = $1 AND value = $2",
                params![name.clone(), e, n],
            ),
            WrappedItem::Credential {
                store,
                access_key_id,
            } => self.exec(
                "UPDATE credentials SET wrapped_secret = $4 WHERE access_key_id = $1 AND store = $2 AND wrapped_secret = $3",
                params![access_key_id.clone(), store.as_str().to_owned(), e, n],
            ),
            WrappedItem::KeyVersion { store, id, version } => self.exec(
                "UPDATE key_versions SET wrapped = $5 WHERE store = $1 AND key_id = $2 AND version = $3 AND wrapped = $4",
                params![
                    store.as_str().to_owned(),
                    id.as_str().to_owned(),
                    i64::from(*version),
                    e,
                    n
                ],
            ),
            WrappedItem::Object { uid } => self.exec(
                "UPDATE objects SET material = $3 WHERE uid = $1 AND material = $2",
                params![uid.clone(), e, n],
            ),
        }?;
        Ok(changed == 1)
    }

    fn snapshot(&self) -> Result<Snapshot> {
        with_conn!(self, c => {
            let tx = c
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(pg_err)?;
            let mut tables = Vec::new();
            for spec in SNAPSHOT_TABLES {
                let rows = tx.query(spec.select().as_str(), &[]).await.map_err(pg_err)?;
                let mut out = Vec::with_capacity(rows.len());
                for r in &rows {
                    let mut cells = Vec::with_capacity(spec.columns.len());
                    for (i, c) in r.columns().iter().enumerate() {
                        let t = c.type_();
                        cells.push(if *t == Type::INT8 {
                            col::<Option<i64>>(r, i)?.map_or(Cell::Null, Cell::Int)
                        } else if *t == Type::BYTEA {
                            col::<Option<Vec<u8>>>(r, i)?.map_or(Cell::Null, Cell::Bytes)
                        } else {
                            col::<Option<String>>(r, i)?.map_or(Cell::Null, Cell::Text)
                        });
                    }
                    out.push(cells);
                }
                tables.push(TableDump {
                    name: spec.name.to_owned(),
                    rows: out,
                });
            }
            tx.commit().await.map_err(pg_err)?;
            Ok(Snapshot { tables })
        })
    }

    fn restore(&self, snap: &Snapshot) -> Result<()> {
        snap.validate()?;
        let snap = snap.clone();
        with_conn!(self, c => {
            let tx = c.transaction().await.map_err(pg_err)?;
            for spec in SNAPSHOT_TABLES.iter().filter(|s| s.name != "meta") {
                let any = tx
                    .query_opt(crate::any_row_sql(spec.name).as_str(), &[])
                    .await
                    .map_err(pg_err)?;
                if any.is_some() {
                    return Err(crate::not_empty(spec.name));
                }
            }
            // The meta rows (and sealed index) a fresh database may have
            // are replaced.
            tx.execute("DELETE FROM meta", &[]).await.map_err(pg_err)?;
            tx.execute("DELETE FROM policies", &[]).await.map_err(pg_err)?;
            for (spec, t) in snap.ordered() {
                let st = tx.prepare(&spec.insert('$')).await.map_err(pg_err)?;
                for row in &t.rows {
                    let vals: Vec<Box<dyn ToSql + Send + Sync>> = spec
                        .cells(row)
                        .zip(st.params())
                        .map(|(cell, ty)| -> Box<dyn ToSql + Send + Sync> {
                            match &*cell {
                                Cell::Null if *ty == Type::INT8 => Box::new(None::<i64>),
                                Cell::Null if *ty == Type::BYTEA => Box::new(None::<Vec<u8>>),
                                Cell::Null => Box::new(None::<String>),
                                Cell::Int(v) => Box::new(*v),
                                Cell::Text(s) => Box::new(s.clone()),
                                Cell::Bytes(b) => Box::new(b.clone()),
                            }
                        })
                        .collect();
                    let p: Vec<&(dyn ToSql + Sync)> = vals
                        .iter()
                        .map(|b| b.as_ref() as &(dyn ToSql + Sync))
                        .collect();
                    tx.execute(&st, &p).await.map_err(pg_err)?;
                }
            }
            tx.execute(crate::mark_shared_sql!(), &[]).await.map_err(pg_err)?;
            tx.commit().await.map_err(pg_err)
        })
    }
}
