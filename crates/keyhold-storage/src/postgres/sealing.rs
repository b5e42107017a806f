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
            let mut n = 0u64;
            for r in &tx
                .query("SELECT prefix, status, description, created_at, seal FROM stores WHERE seal IS NULL FOR UPDATE", &[])
                .await
                .map_err(pg_err)?
            {
                let st = row_to_store(r)?;
                tx.execute(
                    "UPDATE stores SET seal = $2 WHERE prefix = $1",
                    &[&st.prefix.as_str(), &sealer.seal(&seal::store_row(&st))],
                )
                .await
                .map_err(pg_err)?;
                n += 1;
            }
            for r in &tx
                .query(&format!("SELECT {KEY_SEALED} FROM keys WHERE seal IS NULL FOR UPDATE"), &[])
                .await
                .map_err(pg_err)?
            {
                let k = row_to_key(r)?;
                tx.execute(
                    "UPDATE keys SET seal = $3 WHERE store = $1 AND key_id = $2",
                    &[&k.store.as_str(), &k.id.as_str(), &sealer.seal(&seal::key_row(&k))],
                )
                .await
                .map_err(pg_err)?;
                n += 1;
            }
            for r in &tx
                .query(
                    "SELECT store, key_id, version, created_at, flag, length(wrapped) > 0 \
                     FROM key_versions WHERE seal IS NULL FOR UPDATE",
                    &[],
                )
                .await
                .map_err(pg_err)?
            {
                let p = StorePrefix::parse(col(r, 0)?).map_err(bad_row)?;
                let id = KeyId::parse(col(r, 1)?).map_err(bad_row)?;
                let version = to_u32(col(r, 2)?)?;
                let sealed = sealer.seal(&seal::version_row(
                    &p,
                    &id,
                    version,
                    VersionFlag::from_i64(col(r, 4)?),
                    col(r, 3)?,
                    col(r, 5)?,
                ));
                tx.execute(
                    "UPDATE key_versions SET seal = $4 WHERE store = $1 AND key_id = $2 AND version = $3",
                    &[&p.as_str(), &id.as_str(), &i64::from(version), &sealed],
                )
                .await
                .map_err(pg_err)?;
                n += 1;
            }
            for r in &tx
                .query(&format!("SELECT {OBJECT_COLUMNS} FROM objects WHERE seal IS NULL FOR UPDATE"), &[])
                .await
                .map_err(pg_err)?
            {
                let (o, attrs, _) = sealed_object(r)?;
                tx.execute(
                    "UPDATE objects SET seal = $2 WHERE uid = $1",
                    &[&o.uid, &sealer.seal(&seal::object_row(&o, &attrs))],
                )
                .await
                .map_err(pg_err)?;
                n += 1;
            }
            for r in &tx
                .query(
                    "SELECT scope, body FROM policies WHERE seal IS NULL AND scope <> $1 FOR UPDATE",
                    &[&seal::POLICY_INDEX_SCOPE],
                )
                .await
                .map_err(pg_err)?
            {
                let (scope, body): (String, String) = (col(r, 0)?, col(r, 1)?);
                tx.execute(
                    "UPDATE policies SET seal = $2 WHERE scope = $1",
                    &[&scope, &sealer.seal(&seal::policy_row(&scope, &body))],
                )
                .await
                .map_err(pg_err)?;
                n += 1;
            }
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
