//! Keys and their versions.

use super::*;

impl SqliteStorage {
    /// Runs `f` in one immediate transaction on the writer.
    pub(super) fn in_tx<R>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<R>,
    ) -> Result<R> {
        let mut conn = self.writer();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db_err)?;
        let r = f(&tx)?;
        tx.commit().map_err(db_err)?;
        Ok(r)
    }

    /// Changes one key's row: read (refused unless it verifies), changed
    /// by `f`, written back whole with its new seal.
    pub(super) fn modify_key(
        &self,
        tx: &Connection,
        prefix: &StorePrefix,
        id: &KeyId,
        f: impl FnOnce(&mut Key) -> Result<()>,
    ) -> Result<Key> {
        let row = tx
            .prepare_cached(&format!(
                "SELECT {KEY_SEALED} FROM keys WHERE store = ?1 AND key_id = ?2"
            ))
            .and_then(|mut st| {
                st.query_row(params![prefix.as_str(), id.as_str()], Self::sealed_key)
                    .optional()
            })
            .map_err(db_err)?
            .ok_or_else(|| Self::key_not_found(prefix, id))?;
        let sealer = self.sealer.get();
        if !key_ok(sealer.as_deref(), &row) {
            return Err(seal::refused(format!("key {prefix}/{id}")));
        }
        let mut k = row.0;
        f(&mut k)?;
        let sealed = sealer.map(|s| s.seal(&seal::key_row(&k)));
        let mut v = vec![
            Value::Text(prefix.as_str().to_owned()),
            Value::Text(id.as_str().to_owned()),
            Value::Text(k.status.as_str().to_owned()),
            Value::Integer(k.usage.to_bits()),
            Value::Integer(k.current_version.into()),
            Value::Integer(k.updated_at),
            k.hsm_label.clone().map_or(Value::Null, Value::Text),
        ];
        v.extend(lifecycle_values(&k.lifecycle));
        v.push(sealed.map_or(Value::Null, Value::Blob));
        tx.prepare_cached(
            "UPDATE keys SET status = ?3, usage = ?4, current_version = ?5, updated_at = ?6, hsm_label = ?7, \
             state = ?8, activate_at = ?9, deactivate_at = ?10, destroy_at = ?11, compromised_at = ?12, \
             rotation_period = ?13, next_rotation_at = ?14, min_decrypt_version = ?15, seal = ?16 \
             WHERE store = ?1 AND key_id = ?2",
        )
        .and_then(|mut st| st.execute(rusqlite::params_from_iter(v)))
        .map_err(db_err)?;
        Ok(k)
    }

    /// Seals again the version rows of a key (those below `below`, or all)
    /// after their material was erased: erased versions grant nothing, so
    /// they are not checked first.
    pub(super) fn reseal_erased_versions(
        &self,
        tx: &Connection,
        prefix: &StorePrefix,
        id: &KeyId,
        below: Option<u32>,
    ) -> Result<()> {
        let Some(sealer) = self.sealer.get() else {
            return Ok(());
        };
        let rows: Vec<VersionRow> = all(
            tx,
            "SELECT version, created_at, flag, length(wrapped) > 0, seal FROM key_versions \
                 WHERE store = ?1 AND key_id = ?2 AND version < ?3",
            params![prefix.as_str(), id.as_str(), below.unwrap_or(u32::MAX)],
            Self::version_row,
        )?;
        for (version, created_at, flag, has_material, _) in rows {
            let sealed = sealer.seal(&seal::version_row(
                prefix,
                id,
                version,
                flag,
                created_at,
                has_material,
            ));
            tx.prepare_cached(
                "UPDATE key_versions SET seal = ?4 WHERE store = ?1 AND key_id = ?2 AND version = ?3",
            )
            .and_then(|mut st| st.execute(params![prefix.as_str(), id.as_str(), version, sealed]))
            .map_err(db_err)?;
        }
        Ok(())
    }
}

impl KeyRepo for SqliteStorage {
    fn create_keys(&self, keys: &[(Key, WrappedKeyVersion)]) -> Result<()> {
        let mut conn = self.writer();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db_err)?;
        let mut checked: Option<&StorePrefix> = None;
        for (key, first) in keys {
            if checked != Some(&key.store) {
                Self::require_store(&tx, &key.store)?;
                checked = Some(&key.store);
            }
            let key_seal = self.sealer.seal(|| {
                let mut k = key.clone();
                k.current_version = first.version;
                seal::key_row(&k)
            });
            let version_seal = self.sealer.version_seal(&key.store, &key.id, first);
            let n = tx
                .prepare_cached(
                    &format!("INSERT OR IGNORE INTO keys({KEY_SEALED}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"),
                )
                .and_then(|mut st| {
                    let mut v = vec![
                        Value::Text(key.store.as_str().to_owned()),
                        Value::Text(key.id.as_str().to_owned()),
                        Value::Text(key.status.as_str().to_owned()),
                        Value::Integer(key.usage.to_bits()),
                        Value::Integer(first.version.into()),
                        Value::Integer(key.created_at),
                        Value::Integer(key.updated_at),
                        key.hsm_label.clone().map_or(Value::Null, Value::Text),
                    ];
                    v.extend(lifecycle_values(&key.lifecycle));
                    v.push(Value::Text(key.key_type.spec().to_owned()));
                    v.push(key_seal.map_or(Value::Null, Value::Blob));
                    st.execute(rusqlite::params_from_iter(v))
                })
                .map_err(db_err)?;
            if n == 0 {
                return Err(Error::KeyExists {
                    store: key.store.display().to_owned(),
                    key: key.id.to_string(),
                });
            }
            tx.prepare_cached(
                "INSERT INTO key_versions(store, key_id, version, wrapped, created_at, flag, seal) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    key.store.as_str(),
                    key.id.as_str(),
                    first.version,
                    first.wrapped,
                    first.created_at,
                    first.flag.to_i64(),
                    version_seal
                ])
            })
            .map_err(db_err)?;
        }
        tx.commit().map_err(db_err)
    }

    fn get_key(&self, prefix: &StorePrefix, id: &KeyId) -> Result<Option<Key>> {
        let conn = self.writer();
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT {KEY_SEALED} FROM keys WHERE store = ?1 AND key_id = ?2"
            ))
            .map_err(db_err)?;
        let row = st
            .query_row(params![prefix.as_str(), id.as_str()], Self::sealed_key)
            .optional()
            .map_err(db_err)?;
        match row {
            None => Ok(None),
            Some(r) if key_ok(self.sealer.get().as_deref(), &r) => Ok(Some(r.0)),
            Some(_) => Err(seal::refused(format!("key {prefix}/{id}"))),
        }
    }

    fn list_keys(
        &self,
        prefix: &StorePrefix,
        after: Option<&KeyId>,
        limit: usize,
    ) -> Result<Vec<Key>> {
        let conn = self.writer();
        Self::require_store(&conn, prefix)?;
        let rows = all(&conn, &format!("SELECT {KEY_SEALED} FROM keys WHERE store = ?1 AND key_id > ?2 ORDER BY key_id LIMIT ?3"), params![
                    prefix.as_str(),
                    after.map(|a| a.as_str()).unwrap_or(""),
                    limit as i64
                ], Self::sealed_key)?;
        Ok(self.sealer.keys(rows))
    }

    fn disabled_keys(&self, limit: usize) -> Result<Vec<Key>> {
        let conn = self.writer();
        let rows = all(
            &conn,
            &format!("SELECT {KEY_SEALED} FROM keys WHERE status = 'DISABLED' ORDER BY store, key_id LIMIT ?1"),
            params![limit as i64],
            Self::sealed_key,
        )?;
        Ok(self.sealer.keys(rows))
    }

    fn count_keys(&self, prefix: &StorePrefix) -> Result<u64> {
        self.writer()
            .query_row(
                "SELECT count(*) FROM keys WHERE store = ?1",
                [prefix.as_str()],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(db_err)
    }

    fn key_state_counts(&self) -> Result<Vec<(String, String, String, u64)>> {
        let conn = self.writer();
        all(&conn, "SELECT store, state, status, count(*) FROM keys GROUP BY store, state, status ORDER BY store, state, status", [], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get::<_, i64>(3)? as u64,
                ))
            })
    }

    fn set_key_status(&self, prefix: &StorePrefix, id: &KeyId, status: Status) -> Result<()> {
        self.in_tx(|tx| {
            self.modify_key(tx, prefix, id, |k| {
                k.status = status;
                k.updated_at = now();
                Ok(())
            })
            .map(drop)
        })
    }

    fn set_key_usage(&self, prefix: &StorePrefix, id: &KeyId, usage: Usage) -> Result<()> {
        self.in_tx(|tx| {
            self.modify_key(tx, prefix, id, |k| {
                k.usage = usage;
                k.updated_at = now();
                Ok(())
            })
            .map(drop)
        })
    }

    fn add_key_version(
        &self,
        prefix: &StorePrefix,
        id: &KeyId,
        version: &WrappedKeyVersion,
    ) -> Result<()> {
        let version_seal = self.sealer.version_seal(prefix, id, version);
        self.in_tx(|tx| {
            self.modify_key(tx, prefix, id, |k| {
                if k.current_version + 1 != version.version {
                    return Err(Error::InvalidState(format!(
                        "key {id} was rotated concurrently; retry"
                    )));
                }
                k.current_version = version.version;
                k.updated_at = now();
                Ok(())
            })?;
            tx.execute(
                "INSERT INTO key_versions(store, key_id, version, wrapped, created_at, flag, seal) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    prefix.as_str(),
                    id.as_str(),
                    version.version,
                    version.wrapped,
                    version.created_at,
                    version.flag.to_i64(),
                    version_seal
                ],
            )
            .map_err(db_err)?;
            Ok(())
        })
    }

    fn get_key_version(
        &self,
        prefix: &StorePrefix,
        id: &KeyId,
        version: u32,
    ) -> Result<Option<WrappedKeyVersion>> {
        let conn = self.writer();
        let mut st = conn
            .prepare_cached(
                "SELECT version, wrapped, created_at, flag, seal FROM key_versions WHERE store = ?1 AND key_id = ?2 AND version = ?3",
            )
            .map_err(db_err)?;
        let row = st
            .query_row(params![prefix.as_str(), id.as_str(), version], |r| {
                Ok((
                    WrappedKeyVersion {
                        version: r.get(0)?,
                        wrapped: r.get(1)?,
                        created_at: r.get(2)?,
                        flag: VersionFlag::from_i64(r.get(3)?),
                    },
                    r.get::<_, Option<Vec<u8>>>(4)?,
                ))
            })
            .optional()
            .map_err(db_err)?;
        match row {
            None => Ok(None),
            Some((v, sealed)) => {
                let r = (
                    v.version,
                    v.created_at,
                    v.flag,
                    !v.wrapped.is_empty(),
                    sealed,
                );
                if version_ok(self.sealer.get().as_deref(), prefix, id, &r) {
                    Ok(Some(v))
                } else {
                    Err(seal::refused(format!(
                        "version {version} of key {prefix}/{id}"
                    )))
                }
            }
        }
    }

    fn set_key_lifecycle(&self, prefix: &StorePrefix, id: &KeyId, l: &Lifecycle) -> Result<()> {
        self.in_tx(|tx| {
            self.modify_key(tx, prefix, id, |k| {
                k.lifecycle = l.clone();
                k.updated_at = now();
                Ok(())
            })
            .map(drop)
        })
    }

    fn destroy_key_material(&self, prefix: &StorePrefix, id: &KeyId, at: Timestamp) -> Result<()> {
        self.in_tx(|tx| {
            // Destroying is never refused for a row that does not verify:
            // it only takes power away.
            let n = tx
                .execute(
                    "UPDATE keys SET state = 'DESTROYED', destroy_at = ?3, next_rotation_at = NULL, updated_at = ?3 \
                     WHERE store = ?1 AND key_id = ?2",
                    params![prefix.as_str(), id.as_str(), at],
                )
                .map_err(db_err)?;
            Self::one_key_row(n, prefix, id)?;
            if let Some(sealer) = self.sealer.get() {
                let k = tx
                    .query_row(
                        &format!("SELECT {KEY_SEALED} FROM keys WHERE store = ?1 AND key_id = ?2"),
                        params![prefix.as_str(), id.as_str()],
                        Self::sealed_key,
                    )
                    .map_err(db_err)?
                    .0;
                tx.execute(
                    "UPDATE keys SET seal = ?3 WHERE store = ?1 AND key_id = ?2",
                    params![prefix.as_str(), id.as_str(), sealer.seal(&seal::key_row(&k))],
                )
                .map_err(db_err)?;
            }
            // The rows stay (version numbers remain known) with their material
            // gone; secure_delete zeroes the freed bytes in the file.
            tx.execute(
                "UPDATE key_versions SET wrapped = x'' WHERE store = ?1 AND key_id = ?2",
                params![prefix.as_str(), id.as_str()],
            )
            .map_err(db_err)?;
            self.reseal_erased_versions(tx, prefix, id, None)
        })
    }

    fn purge_erased_copies(&self) -> Result<()> {
        // A purge already running may have begun before the caller's
        // erasure committed: only one begun after now covers it.
        let mut g = self.purges.state.lock();
        let need = g.started + 1;
        loop {
            if g.finished >= need {
                return match g.outcome.clone() {
                    Some(Err(why)) => Err(Error::DependencyTimeout(why)),
                    _ => Ok(()),
                };
            }
            if g.running {
                self.purges.done.wait(&mut g);
                continue;
            }
            g.running = true;
            g.started += 1;
            let mine = g.started;
            drop(g);
            let outcome = self.truncate_wal();
            g = self.purges.state.lock();
            g.running = false;
            g.finished = mine;
            g.outcome = Some(outcome);
            self.purges.done.notify_all();
        }
    }

    fn shred_versions_below(&self, prefix: &StorePrefix, id: &KeyId, below: u32) -> Result<u64> {
        self.in_tx(|tx| {
            let n = tx
                .execute(
                    "UPDATE key_versions SET wrapped = x'' WHERE store = ?1 AND key_id = ?2 AND version < ?3 AND length(wrapped) > 0",
                    params![prefix.as_str(), id.as_str(), below],
                )
                .map_err(db_err)?;
            if n > 0 {
                self.reseal_erased_versions(tx, prefix, id, Some(below))?;
            }
            Ok(n as u64)
        })
    }

    fn set_version_flag(
        &self,
        prefix: &StorePrefix,
        id: &KeyId,
        version: u32,
        flag: VersionFlag,
    ) -> Result<()> {
        self.in_tx(|tx| {
            let row = tx
                .query_row(
                    "SELECT version, created_at, flag, length(wrapped) > 0, seal FROM key_versions \
                     WHERE store = ?1 AND key_id = ?2 AND version = ?3",
                    params![prefix.as_str(), id.as_str(), version],
                    Self::version_row,
                )
                .optional()
                .map_err(db_err)?
                .ok_or_else(|| {
                    Error::invalid("version", format!("key {id} has no version {version}"))
                })?;
            let sealer = self.sealer.get();
            if !version_ok(sealer.as_deref(), prefix, id, &row) {
                return Err(seal::refused(format!("version {version} of key {prefix}/{id}")));
            }
            let sealed = sealer
                .map(|s| s.seal(&seal::version_row(prefix, id, version, flag, row.1, row.3)));
            tx.execute(
                "UPDATE key_versions SET flag = ?4, seal = ?5 WHERE store = ?1 AND key_id = ?2 AND version = ?3",
                params![prefix.as_str(), id.as_str(), version, flag.to_i64(), sealed],
            )
            .map_err(db_err)?;
            Ok(())
        })
    }

    fn list_key_versions(&self, prefix: &StorePrefix, id: &KeyId) -> Result<Vec<VersionInfo>> {
        let conn = self.writer();
        let rows = all(&conn, "SELECT version, created_at, flag, length(wrapped) > 0, seal FROM key_versions WHERE store = ?1 AND key_id = ?2 ORDER BY version", params![prefix.as_str(), id.as_str()], Self::version_row)?;
        let sealer = self.sealer.get();
        Ok(rows
            .into_iter()
            .filter(|r| version_ok(sealer.as_deref(), prefix, id, r))
            .map(|(version, created_at, flag, has_material, _)| VersionInfo {
                version,
                created_at,
                flag,
                has_material,
            })
            .collect())
    }

    fn due_keys(&self, now: Timestamp, limit: usize) -> Result<Vec<Key>> {
        let conn = self.writer();
        let rows = all(
            &conn,
            &format!(
                "SELECT {KEY_SEALED} FROM keys WHERE destroy_at <= ?1 AND state <> 'DESTROYED' \
                 UNION SELECT {KEY_SEALED} FROM keys WHERE next_rotation_at <= ?1 LIMIT ?2"
            ),
            params![now, limit as i64],
            Self::sealed_key,
        )?;
        Ok(self.sealer.keys(rows))
    }
}
