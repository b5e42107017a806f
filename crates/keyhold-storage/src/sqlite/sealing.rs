//! The change token and sealing rows written before the seal.

use super::*;

impl Backend for SqliteStorage {
    fn change_token(&self) -> Result<u64> {
        // data_version changes when another connection commits; the total
        // change counter covers this connection's own writes (but for
        // bookkeeping, see `quiet`).
        let conn = self.writer();
        let dv: i64 = conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(db_err)?;
        let own = conn
            .total_changes()
            .wrapping_sub(self.quiet.load(std::sync::atomic::Ordering::Relaxed));
        Ok(((dv as u64) << 32) ^ own)
    }

    fn ping(&self) -> Result<()> {
        let conn = self.writer();
        conn.query_row("SELECT count(*) FROM meta", [], |r| r.get::<_, i64>(0))
            .map(|_| ())
            .map_err(db_err)
    }
}

impl RowSealing for SqliteStorage {
    fn set_row_sealer(&self, sealer: Arc<dyn RowSealer>) {
        self.sealer.set(sealer);
    }

    fn any_sealed_rows(&self) -> Result<bool> {
        self.writer()
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM stores WHERE seal IS NOT NULL) \
                 OR EXISTS(SELECT 1 FROM keys WHERE seal IS NOT NULL) \
                 OR EXISTS(SELECT 1 FROM key_versions WHERE seal IS NOT NULL) \
                 OR EXISTS(SELECT 1 FROM objects WHERE seal IS NOT NULL) \
                 OR EXISTS(SELECT 1 FROM policies WHERE seal IS NOT NULL)",
                [],
                |r| r.get(0),
            )
            .map_err(db_err)
    }

    fn seal_unsealed_rows(&self) -> Result<u64> {
        let sealer = self
            .sealer
            .get()
            .ok_or_else(|| Error::Internal("no row sealer installed".into()))?;
        self.in_tx(|tx| {
            let mut n = 0u64;
            let stores: Vec<KeyStore> = all(tx, "SELECT prefix, status, description, created_at FROM stores WHERE seal IS NULL", [], Self::row_to_store)?;
            for st in stores {
                tx.execute(
                    "UPDATE stores SET seal = ?2 WHERE prefix = ?1",
                    params![st.prefix.as_str(), sealer.seal(&seal::store_row(&st))],
                )
                .map_err(db_err)?;
                n += 1;
            }
            let keys: Vec<Key> = all(tx, &format!("SELECT {KEY_COLUMNS} FROM keys WHERE seal IS NULL"), [], Self::row_to_key)?;
            for k in keys {
                tx.execute(
                    "UPDATE keys SET seal = ?3 WHERE store = ?1 AND key_id = ?2",
                    params![k.store.as_str(), k.id.as_str(), sealer.seal(&seal::key_row(&k))],
                )
                .map_err(db_err)?;
                n += 1;
            }
            let versions: Vec<(StorePrefix, KeyId, VersionRow)> = all(tx, "SELECT store, key_id, version, created_at, flag, length(wrapped) > 0, seal \
                     FROM key_versions WHERE seal IS NULL", [], |r| {
                        Ok((
                            parse_prefix(r.get(0)?)?,
                            parse_key_id(r.get(1)?)?,
                            (
                                r.get(2)?,
                                r.get(3)?,
                                VersionFlag::from_i64(r.get(4)?),
                                r.get(5)?,
                                None,
                            ),
                        ))
                    })?;
            for (p, id, (version, created_at, flag, has_material, _)) in versions {
                let sealed = sealer.seal(&seal::version_row(
                    &p,
                    &id,
                    version,
                    flag,
                    created_at,
                    has_material,
                ));
                tx.execute(
                    "UPDATE key_versions SET seal = ?4 WHERE store = ?1 AND key_id = ?2 AND version = ?3",
                    params![p.as_str(), id.as_str(), version, sealed],
                )
                .map_err(db_err)?;
                n += 1;
            }
            let objects: Vec<SealedObject> = all(tx, &format!("SELECT {OBJECT_COLUMNS} FROM objects WHERE seal IS NULL"), [], sealed_object)?;
            for (o, attrs, _) in objects {
                tx.execute(
                    "UPDATE objects SET seal = ?2 WHERE uid = ?1",
                    params![o.uid, sealer.seal(&seal::object_row(&o, &attrs))],
                )
                .map_err(db_err)?;
                n += 1;
            }
            let policies: Vec<(String, String)> = all(tx, "SELECT scope, body FROM policies WHERE seal IS NULL AND scope <> ?1", [seal::POLICY_INDEX_SCOPE], |r| Ok((r.get(0)?, r.get(1)?)))?;
            for (scope, body) in policies {
                tx.execute(
                    "UPDATE policies SET seal = ?2 WHERE scope = ?1",
                    params![scope, sealer.seal(&seal::policy_row(&scope, &body))],
                )
                .map_err(db_err)?;
                n += 1;
            }
            let indexed: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM policies WHERE scope = ?1 AND seal IS NOT NULL",
                    [seal::POLICY_INDEX_SCOPE],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err)?;
            if indexed.is_none() {
                self.write_policy_index(tx)?;
            }
            Ok(n)
        })
    }
}
