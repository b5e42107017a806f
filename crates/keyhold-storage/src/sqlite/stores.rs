//! Key stores and their credentials.

use super::*;

impl StoreRepo for SqliteStorage {
    fn create_store(&self, store: &KeyStore) -> Result<()> {
        let sealed = self.sealer.seal(|| seal::store_row(store));
        let conn = self.writer();
        let n = conn
            .execute(
                "INSERT OR IGNORE INTO stores(prefix, status, description, created_at, seal) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    store.prefix.as_str(),
                    store.status.as_str(),
                    store.description,
                    store.created_at,
                    sealed
                ],
            )
            .map_err(db_err)?;
        if n == 0 {
            return Err(Error::StoreExists(store.prefix.display().to_owned()));
        }
        Ok(())
    }

    fn get_store(&self, prefix: &StorePrefix) -> Result<Option<KeyStore>> {
        let row = self
            .writer()
            .query_row(
                "SELECT prefix, status, description, created_at, seal FROM stores WHERE prefix = ?1",
                [prefix.as_str()],
                |r| Ok((Self::row_to_store(r)?, r.get::<_, Option<Vec<u8>>>(4)?)),
            )
            .optional()
            .map_err(db_err)?;
        match row {
            None => Ok(None),
            Some(r) if store_ok(self.sealer.get().as_deref(), &r) => Ok(Some(r.0)),
            Some(_) => Err(seal::refused(format!("key store {prefix}"))),
        }
    }

    fn list_stores(&self) -> Result<Vec<KeyStore>> {
        let conn = self.writer();
        let rows = all(
            &conn,
            "SELECT prefix, status, description, created_at, seal FROM stores ORDER BY prefix",
            [],
            |r| Ok((Self::row_to_store(r)?, r.get::<_, Option<Vec<u8>>>(4)?)),
        )?;
        let sealer = self.sealer.get();
        Ok(rows
            .into_iter()
            .filter(|r| store_ok(sealer.as_deref(), r))
            .map(|r| r.0)
            .collect())
    }

    fn set_store_status(&self, prefix: &StorePrefix, status: Status) -> Result<()> {
        self.in_tx(|tx| {
            let row = tx
                .query_row(
                    "SELECT prefix, status, description, created_at, seal FROM stores WHERE prefix = ?1",
                    [prefix.as_str()],
                    |r| Ok((Self::row_to_store(r)?, r.get::<_, Option<Vec<u8>>>(4)?)),
                )
                .optional()
                .map_err(db_err)?
                .ok_or_else(|| Error::StoreNotFound(prefix.display().to_owned()))?;
            let sealer = self.sealer.get();
            if !store_ok(sealer.as_deref(), &row) {
                return Err(seal::refused(format!("key store {prefix}")));
            }
            let mut st = row.0;
            st.status = status;
            let sealed = sealer.map(|s| s.seal(&seal::store_row(&st)));
            tx.execute(
                "UPDATE stores SET status = ?2, seal = ?3 WHERE prefix = ?1",
                params![prefix.as_str(), status.as_str(), sealed],
            )
            .map_err(db_err)?;
            Ok(())
        })
    }

    fn add_credential(&self, cred: &StoredCredential) -> Result<()> {
        let conn = self.writer();
        Self::require_store(&conn, &cred.store)?;
        conn.execute(
            "INSERT INTO credentials(access_key_id, store, wrapped_secret, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![
                cred.access_key_id,
                cred.store.as_str(),
                cred.wrapped_secret,
                cred.created_at
            ],
        )
        .map_err(db_err)?;
        Ok(())
    }

    fn remove_credential(&self, prefix: &StorePrefix, access_key_id: &str) -> Result<()> {
        let n = self
            .conn
            .lock()
            .execute(
                "DELETE FROM credentials WHERE store = ?1 AND access_key_id = ?2",
                params![prefix.as_str(), access_key_id],
            )
            .map_err(db_err)?;
        if n == 0 {
            return Err(Error::CredentialNotFound(access_key_id.to_owned()));
        }
        Ok(())
    }

    fn list_credentials(&self, prefix: &StorePrefix) -> Result<Vec<StoredCredential>> {
        let conn = self.writer();
        Self::require_store(&conn, prefix)?;
        all(&conn, "SELECT access_key_id, store, wrapped_secret, created_at FROM credentials WHERE store = ?1 ORDER BY created_at, access_key_id", [prefix.as_str()], Self::row_to_cred)
    }

    fn get_credential(&self, access_key_id: &str) -> Result<Option<StoredCredential>> {
        self.writer()
            .query_row(
                "SELECT access_key_id, store, wrapped_secret, created_at FROM credentials WHERE access_key_id = ?1",
                [access_key_id],
                Self::row_to_cred,
            )
            .optional()
            .map_err(db_err)
    }
}
