//! Keys and their versions.

use super::*;

/// Writes a key's row whole, with its seal.
async fn write_key(c: &impl GenericClient, k: &Key, sealed: Option<Vec<u8>>) -> Result<()> {
    let l = &k.lifecycle;
    let (state, min) = lifecycle_params(l);
    c.execute(
        "UPDATE keys SET status = $3, usage = $4, current_version = $5, updated_at = $6, hsm_label = $7, \
         state = $8, activate_at = $9, deactivate_at = $10, destroy_at = $11, compromised_at = $12, \
         rotation_period = $13, next_rotation_at = $14, min_decrypt_version = $15, seal = $16 \
         WHERE store = $1 AND key_id = $2",
        &[
            &k.store.as_str(),
            &k.id.as_str(),
            &k.status.as_str(),
            &k.usage.to_bits(),
            &i64::from(k.current_version),
            &k.updated_at,
            &k.hsm_label,
            &state,
            &l.activate_at,
            &l.deactivate_at,
            &l.destroy_at,
            &l.compromised_at,
            &l.rotation_period,
            &l.next_rotation_at,
            &min,
            &sealed,
        ],
    )
    .await
    .map_err(pg_err)
    .map(drop)
}

/// Reads a key's row for a change (locked), refused unless it verifies.
async fn key_for_update(
    c: &impl GenericClient,
    sealer: Option<&dyn RowSealer>,
    prefix: &StorePrefix,
    id: &KeyId,
) -> Result<Key> {
    let row = c
        .query_opt(
            &format!("SELECT {KEY_SEALED} FROM keys WHERE store = $1 AND key_id = $2 FOR UPDATE"),
            &[&prefix.as_str(), &id.as_str()],
        )
        .await
        .map_err(pg_err)?
        .ok_or_else(|| key_not_found(prefix, id))?;
    let row = sealed_key(&row)?;
    if !key_ok(sealer, &row) {
        return Err(seal::refused(format!("key {prefix}/{id}")));
    }
    Ok(row.0)
}

/// Seals again the version rows of a key below `below` after their
/// material was erased (erased versions grant nothing: not checked).
async fn reseal_erased_versions(
    c: &impl GenericClient,
    sealer: Option<&dyn RowSealer>,
    prefix: &StorePrefix,
    id: &KeyId,
    below: i64,
) -> Result<()> {
    let Some(sealer) = sealer else {
        return Ok(());
    };
    let rows = c
        .query(
            &format!("SELECT {VERSION_SEALED} FROM key_versions WHERE store = $1 AND key_id = $2 AND version < $3"),
            &[&prefix.as_str(), &id.as_str(), &below],
        )
        .await
        .map_err(pg_err)?;
    for r in &rows {
        let (version, created_at, flag, has_material, _) = version_row(r)?;
        let sealed = sealer.seal(&seal::version_row(
            prefix,
            id,
            version,
            flag,
            created_at,
            has_material,
        ));
        c.execute(
            "UPDATE key_versions SET seal = $4 WHERE store = $1 AND key_id = $2 AND version = $3",
            &[&prefix.as_str(), &id.as_str(), &i64::from(version), &sealed],
        )
        .await
        .map_err(pg_err)?;
    }
    Ok(())
}

/// Sealed rows (see [`crate::seal`]).
impl PostgresStorage {
    /// Changes one key's row: read and locked (refused unless it
    /// verifies), changed by `f`, written back whole with its new seal.
    pub(super) fn modify_key(
        &self,
        prefix: &StorePrefix,
        id: &KeyId,
        f: impl FnOnce(&mut Key) -> Result<()> + Send + 'static,
    ) -> Result<()> {
        let (p, k) = (prefix.clone(), id.clone());
        let sealer: Sealer = self.sealer.get();
        with_conn!(self, c => {
            let tx = c.transaction().await.map_err(pg_err)?;
            let mut key = key_for_update(&tx, sealer.as_deref(), &p, &k).await?;
            f(&mut key)?;
            let sealed = sealer.as_ref().map(|s| s.seal(&seal::key_row(&key)));
            write_key(&tx, &key, sealed).await?;
            tx.commit().await.map_err(pg_err)
        })
    }
}

impl KeyRepo for PostgresStorage {
    fn create_keys(&self, keys: &[(Key, WrappedKeyVersion)]) -> Result<()> {
        let keys = keys.to_vec();
        // (the key row's seal, its first version's seal)
        type Seals = (Option<Vec<u8>>, Option<Vec<u8>>);
        let seals: Vec<Seals> = keys
            .iter()
            .map(|(key, first)| {
                let k = self.sealer.seal(|| {
                    let mut k = key.clone();
                    k.current_version = first.version;
                    seal::key_row(&k)
                });
                (k, self.sealer.version_seal(&key.store, &key.id, first))
            })
            .collect();
        with_conn!(self, c => {
            let tx = c.transaction().await.map_err(pg_err)?;
            let ins_key = tx
                .prepare(&format!(
                    "INSERT INTO keys({KEY_SEALED}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) ON CONFLICT DO NOTHING"
                ))
                .await
                .map_err(pg_err)?;
            let ins_version = tx
                .prepare(
                    "INSERT INTO key_versions(store, key_id, version, wrapped, created_at, flag, seal) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .await
                .map_err(pg_err)?;
            let mut checked: Option<StorePrefix> = None;
            for ((key, first), (key_seal, version_seal)) in keys.iter().zip(&seals) {
                if checked.as_ref() != Some(&key.store) {
                    require_store(&tx, &key.store).await?;
                    checked = Some(key.store.clone());
                }
                let l = &key.lifecycle;
                let (state, min) = lifecycle_params(l);
                let n = tx
                    .execute(
                        &ins_key,
                        &[
                            &key.store.as_str(),
                            &key.id.as_str(),
                            &key.status.as_str(),
                            &key.usage.to_bits(),
                            &i64::from(first.version),
                            &key.created_at,
                            &key.updated_at,
                            &key.hsm_label,
                            &state,
                            &l.activate_at,
                            &l.deactivate_at,
                            &l.destroy_at,
                            &l.compromised_at,
                            &l.rotation_period,
                            &l.next_rotation_at,
                            &min,
                            &key.key_type.spec(),
                            key_seal,
                        ],
                    )
                    .await
                    .map_err(pg_err)?;
                if n == 0 {
                    return Err(Error::KeyExists {
                        store: key.store.display().to_owned(),
                        key: key.id.to_string(),
                    });
                }
                tx.execute(
                    &ins_version,
                    &[
                        &key.store.as_str(),
                        &key.id.as_str(),
                        &i64::from(first.version),
                        &first.wrapped,
                        &first.created_at,
                        &first.flag.to_i64(),
                        version_seal,
                    ],
                )
                .await
                .map_err(pg_err)?;
            }
            tx.commit().await.map_err(pg_err)
        })
    }

    fn get_key(&self, prefix: &StorePrefix, id: &KeyId) -> Result<Option<Key>> {
        match self.row(
            format!("SELECT {KEY_SEALED} FROM keys WHERE store = $1 AND key_id = $2"),
            params![prefix.as_str().to_owned(), id.as_str().to_owned()],
            sealed_key,
        )? {
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
        let p = prefix.clone();
        let after = after.map(|a| a.as_str().to_owned()).unwrap_or_default();
        let rows: Vec<SealedKey> = with_conn!(self, c => {
            require_store(&c, &p).await?;
            let st = c
                .prepare_cached(&format!(
                    "SELECT {KEY_SEALED} FROM keys WHERE store = $1 AND key_id > $2 ORDER BY key_id LIMIT $3"
                ))
                .await
                .map_err(pg_err)?;
            c.query(&st, &[&p.as_str(), &after, &(limit as i64)])
                .await
                .map_err(pg_err)?
                .iter()
                .map(sealed_key)
                .collect()
        })?;
        Ok(self.sealer.keys(rows))
    }

    fn disabled_keys(&self, limit: usize) -> Result<Vec<Key>> {
        let rows: Vec<SealedKey> = with_conn!(self, c => {
            let st = c
                .prepare_cached(&format!(
                    "SELECT {KEY_SEALED} FROM keys WHERE status = 'DISABLED' ORDER BY store, key_id LIMIT $1"
                ))
                .await
                .map_err(pg_err)?;
            c.query(&st, &[&(limit as i64)])
                .await
                .map_err(pg_err)?
                .iter()
                .map(sealed_key)
                .collect()
        })?;
        Ok(self.sealer.keys(rows))
    }

    fn count_keys(&self, prefix: &StorePrefix) -> Result<u64> {
        self.row(
            "SELECT count(*) FROM keys WHERE store = $1".into(),
            params![prefix.as_str().to_owned()],
            |r| Ok(col::<i64>(r, 0)? as u64),
        )
        .map(Option::unwrap_or_default)
    }

    fn key_state_counts(&self) -> Result<Vec<(String, String, String, u64)>> {
        self.rows(
            "SELECT store, state, status, count(*) FROM keys GROUP BY store, state, status ORDER BY store, state, status".into(),
            params![],
            |r| Ok((col(r, 0)?, col(r, 1)?, col(r, 2)?, col::<i64>(r, 3)? as u64)),
        )
    }

    fn set_key_status(&self, prefix: &StorePrefix, id: &KeyId, status: Status) -> Result<()> {
        self.modify_key(prefix, id, move |k| {
            k.status = status;
            k.updated_at = now();
            Ok(())
        })
    }

    fn set_key_usage(&self, prefix: &StorePrefix, id: &KeyId, usage: Usage) -> Result<()> {
        self.modify_key(prefix, id, move |k| {
            k.usage = usage;
            k.updated_at = now();
            Ok(())
        })
    }

    fn add_key_version(
        &self,
        prefix: &StorePrefix,
        id: &KeyId,
        version: &WrappedKeyVersion,
    ) -> Result<()> {
        let (p, k, v) = (prefix.clone(), id.clone(), version.clone());
        let sealer = self.sealer.get();
        let version_seal = self.sealer.version_seal(prefix, id, version);
        with_conn!(self, c => {
            let tx = c.transaction().await.map_err(pg_err)?;
            let mut key = key_for_update(&tx, sealer.as_deref(), &p, &k).await?;
            if key.current_version + 1 != v.version {
                return Err(Error::InvalidState(format!(
                    "key {k} was rotated concurrently; retry"
                )));
            }
            key.current_version = v.version;
            key.updated_at = now();
            let sealed = sealer.as_ref().map(|s| s.seal(&seal::key_row(&key)));
            write_key(&tx, &key, sealed).await?;
            tx.execute(
                "INSERT INTO key_versions(store, key_id, version, wrapped, created_at, flag, seal) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &p.as_str(),
                    &k.as_str(),
                    &i64::from(v.version),
                    &v.wrapped,
                    &v.created_at,
                    &v.flag.to_i64(),
                    &version_seal,
                ],
            )
            .await
            .map_err(pg_err)?;
            tx.commit().await.map_err(pg_err)
        })
    }

    fn get_key_version(
        &self,
        prefix: &StorePrefix,
        id: &KeyId,
        version: u32,
    ) -> Result<Option<WrappedKeyVersion>> {
        let row = self.row(
            "SELECT version, wrapped, created_at, flag, seal FROM key_versions WHERE store = $1 AND key_id = $2 AND version = $3".into(),
            params![
                prefix.as_str().to_owned(),
                id.as_str().to_owned(),
                i64::from(version)
            ],
            |r| {
                Ok((
                    WrappedKeyVersion {
                        version: to_u32(col(r, 0)?)?,
                        wrapped: col(r, 1)?,
                        created_at: col(r, 2)?,
                        flag: VersionFlag::from_i64(col(r, 3)?),
                    },
                    col::<Option<Vec<u8>>>(r, 4)?,
                ))
            },
        )?;
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
        let l = l.clone();
        self.modify_key(prefix, id, move |k| {
            k.lifecycle = l;
            k.updated_at = now();
            Ok(())
        })
    }

    fn destroy_key_material(&self, prefix: &StorePrefix, id: &KeyId, at: Timestamp) -> Result<()> {
        let (p, k) = (prefix.clone(), id.clone());
        let sealer = self.sealer.get();
        with_conn!(self, c => {
            let tx = c.transaction().await.map_err(pg_err)?;
            // Destroying is never refused for a row that does not verify:
            // it only takes power away.
            let n = tx
                .execute(
                    "UPDATE keys SET state = 'DESTROYED', destroy_at = $3, next_rotation_at = NULL, updated_at = $3 \
                     WHERE store = $1 AND key_id = $2",
                    &[&p.as_str(), &k.as_str(), &at],
                )
                .await
                .map_err(pg_err)?;
            one_key_row(n, &p, &k)?;
            if let Some(s) = &sealer {
                let row = tx
                    .query_one(
                        &format!("SELECT {KEY_SEALED} FROM keys WHERE store = $1 AND key_id = $2"),
                        &[&p.as_str(), &k.as_str()],
                    )
                    .await
                    .map_err(pg_err)?;
                let key = sealed_key(&row)?.0;
                tx.execute(
                    "UPDATE keys SET seal = $3 WHERE store = $1 AND key_id = $2",
                    &[&p.as_str(), &k.as_str(), &s.seal(&seal::key_row(&key))],
                )
                .await
                .map_err(pg_err)?;
            }
            tx.execute(
                "UPDATE key_versions SET wrapped = '\\x'::bytea WHERE store = $1 AND key_id = $2",
                &[&p.as_str(), &k.as_str()],
            )
            .await
            .map_err(pg_err)?;
            reseal_erased_versions(&tx, sealer.as_deref(), &p, &k, i64::MAX).await?;
            tx.commit().await.map_err(pg_err)
        })
    }

    fn shred_versions_below(&self, prefix: &StorePrefix, id: &KeyId, below: u32) -> Result<u64> {
        let (p, k) = (prefix.clone(), id.clone());
        let sealer = self.sealer.get();
        with_conn!(self, c => {
            let tx = c.transaction().await.map_err(pg_err)?;
            let n = tx
                .execute(
                    "UPDATE key_versions SET wrapped = '\\x'::bytea WHERE store = $1 AND key_id = $2 AND version < $3 AND length(wrapped) > 0",
                    &[&p.as_str(), &k.as_str(), &i64::from(below)],
                )
                .await
                .map_err(pg_err)?;
            if n > 0 {
                reseal_erased_versions(&tx, sealer.as_deref(), &p, &k, i64::from(below)).await?;
            }
            tx.commit().await.map_err(pg_err)?;
            Ok(n)
        })
    }

    fn set_version_flag(
        &self,
        prefix: &StorePrefix,
        id: &KeyId,
        version: u32,
        flag: VersionFlag,
    ) -> Result<()> {
        let (p, k) = (prefix.clone(), id.clone());
        let sealer = self.sealer.get();
        with_conn!(self, c => {
            let tx = c.transaction().await.map_err(pg_err)?;
            let row = tx
                .query_opt(
                    &format!("SELECT {VERSION_SEALED} FROM key_versions WHERE store = $1 AND key_id = $2 AND version = $3 FOR UPDATE"),
                    &[&p.as_str(), &k.as_str(), &i64::from(version)],
                )
                .await
                .map_err(pg_err)?
                .ok_or_else(|| Error::invalid("version", format!("key {k} has no version {version}")))?;
            let row = version_row(&row)?;
            if !version_ok(sealer.as_deref(), &p, &k, &row) {
                return Err(seal::refused(format!("version {version} of key {p}/{k}")));
            }
            let sealed = sealer
                .as_ref()
                .map(|s| s.seal(&seal::version_row(&p, &k, version, flag, row.1, row.3)));
            tx.execute(
                "UPDATE key_versions SET flag = $4, seal = $5 WHERE store = $1 AND key_id = $2 AND version = $3",
                &[&p.as_str(), &k.as_str(), &i64::from(version), &flag.to_i64(), &sealed],
            )
            .await
            .map_err(pg_err)?;
            tx.commit().await.map_err(pg_err)
        })
    }

    fn list_key_versions(&self, prefix: &StorePrefix, id: &KeyId) -> Result<Vec<VersionInfo>> {
        let rows = self.rows(
            format!("SELECT {VERSION_SEALED} FROM key_versions WHERE store = $1 AND key_id = $2 ORDER BY version"),
            params![prefix.as_str().to_owned(), id.as_str().to_owned()],
            version_row,
        )?;
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
        let rows = self.rows(
            format!(
                "SELECT {KEY_SEALED} FROM keys WHERE destroy_at <= $1 AND state <> 'DESTROYED' \
                 UNION SELECT {KEY_SEALED} FROM keys WHERE next_rotation_at <= $1 LIMIT $2"
            ),
            params![now, limit as i64],
            sealed_key,
        )?;
        Ok(self.sealer.keys(rows))
    }
}
