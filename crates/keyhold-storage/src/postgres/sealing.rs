//! The change token and sealing rows written before the seal.

use super::*;

impl Backend for PostgresStorage {
    fn change_token(&self) -> Result<u64> {
        Ok(self.changes.token.load(Ordering::SeqCst))
    }

    fn changes_since(&self, token: u64) -> Option<Vec<ChangeScope>> {
        self.changes.since(token)
    }

    fn ping(&self) -> Result<()> {
        self.exec("SELECT 1", params![]).map(drop)
    }

    fn blocks(&self) -> bool {
        true
    }
}

impl RowSealing for PostgresStorage {
    fn set_row_sealer(&self, sealer: Arc<dyn RowSealer>) {
        self.sealer.set(sealer);
    }

    fn any_sealed_rows(&self) -> Result<bool> {
        self.row(
            "SELECT EXISTS(SELECT 1 FROM stores WHERE seal IS NOT NULL) \
             OR EXISTS(SELECT 1 FROM keys WHERE seal IS NOT NULL) \
             OR EXISTS(SELECT 1 FROM key_versions WHERE seal IS NOT NULL) \
             OR EXISTS(SELECT 1 FROM objects WHERE seal IS NOT NULL) \
             OR EXISTS(SELECT 1 FROM policies WHERE seal IS NOT NULL)"
                .into(),
            params![],
            |r| col(r, 0),
        )
        .map(|v| v.unwrap_or(false))
    }

    fn seal_unsealed_rows(&self) -> Result<u64> {
        let sealer = self
            .sealer
            .get()
            .ok_or_else(|| Error::Internal("no row sealer installed".into()))?;
        with_conn!(self, c => {
            let tx = c.transaction().await.map_err(pg_err)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&POLICY_LOCK])
                .await
                .map_err(pg_err)?;
            let n = seal_every_table(&tx, &*sealer).await?;
            let indexed = tx
                .query_opt(
                    "SELECT 1 FROM policies WHERE scope = $1 AND seal IS NOT NULL",
                    &[&seal::POLICY_INDEX_SCOPE],
                )
                .await
                .map_err(pg_err)?;
            if indexed.is_none() {
                write_policy_index(&tx, Some(&*sealer)).await?;
            }
            tx.commit().await.map_err(pg_err)?;
            Ok(n)
        })
    }
}

/// Seals the rows of every sealed table that have no seal yet; returns how
/// many it sealed.
async fn seal_every_table(tx: &impl GenericClient, s: &dyn RowSealer) -> Result<u64> {
    let mut n = seal_each(
        tx,
        "SELECT prefix, status, description, created_at, seal FROM stores WHERE seal IS NULL FOR UPDATE",
        &[],
        |r| {
            let st = row_to_store(r)?;
            let sealed = s.seal(&seal::store_row(&st));
            Ok(("UPDATE stores SET seal = $2 WHERE prefix = $1", params![st.prefix.as_str().to_owned(), sealed]))
        },
    )
    .await?;
    n += seal_each(
        tx,
        &format!("SELECT {KEY_SEALED} FROM keys WHERE seal IS NULL FOR UPDATE"),
        &[],
        |r| {
            let k = row_to_key(r)?;
            let sealed = s.seal(&seal::key_row(&k));
            Ok((
                "UPDATE keys SET seal = $3 WHERE store = $1 AND key_id = $2",
                params![
                    k.store.as_str().to_owned(),
                    k.id.as_str().to_owned(),
                    sealed
                ],
            ))
        },
    )
    .await?;
    n += seal_each(
        tx,
        "SELECT store, key_id, version, created_at, flag, length(wrapped) > 0 \
         FROM key_versions WHERE seal IS NULL FOR UPDATE",
        &[],
        |r| {
            let p = StorePrefix::parse(col(r, 0)?).map_err(bad_row)?;
            let id = KeyId::parse(col(r, 1)?).map_err(bad_row)?;
            let version = to_u32(col(r, 2)?)?;
            let sealed = s.seal(&seal::version_row(
                &p,
                &id,
                version,
                VersionFlag::from_i64(col(r, 4)?),
                col(r, 3)?,
                col(r, 5)?,
            ));
            Ok((
                "UPDATE key_versions SET seal = $4 WHERE store = $1 AND key_id = $2 AND version = $3",
                params![p.as_str().to_owned(), id.as_str().to_owned(), i64::from(version), sealed],
            ))
        },
    )
    .await?;
    n += seal_each(
        tx,
        &format!("SELECT {OBJECT_COLUMNS} FROM objects WHERE seal IS NULL FOR UPDATE"),
        &[],
        |r| {
            let (o, attrs, _) = sealed_object(r)?;
            let sealed = s.seal(&seal::object_row(&o, &attrs));
            Ok((
                "UPDATE objects SET seal = $2 WHERE uid = $1",
                params![o.uid, sealed],
            ))
        },
    )
    .await?;
    n += seal_each(
        tx,
        "SELECT scope, body FROM policies WHERE seal IS NULL AND scope <> $1 FOR UPDATE",
        &[&seal::POLICY_INDEX_SCOPE],
        |r| {
            let (scope, body): (String, String) = (col(r, 0)?, col(r, 1)?);
            let sealed = s.seal(&seal::policy_row(&scope, &body));
            Ok((
                "UPDATE policies SET seal = $2 WHERE scope = $1",
                params![scope, sealed],
            ))
        },
    )
    .await?;
    Ok(n)
}

/// Seals every row `select` finds: `update` names the statement and the
/// parameters that write a row's seal. Returns how many it sealed.
async fn seal_each(
    tx: &impl GenericClient,
    select: &str,
    params: &[&(dyn ToSql + Sync)],
    mut update: impl FnMut(&Row) -> Result<(&'static str, Params)>,
) -> Result<u64> {
    let mut n = 0;
    for r in &tx.query(select, params).await.map_err(pg_err)? {
        let (sql, p) = update(r)?;
        let p: Vec<&(dyn ToSql + Sync)> = p
            .iter()
            .map(|b| b.as_ref() as &(dyn ToSql + Sync))
            .collect();
        tx.execute(sql, &p).await.map_err(pg_err)?;
        n += 1;
    }
    Ok(n)
}
