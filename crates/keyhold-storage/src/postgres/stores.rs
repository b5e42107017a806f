//! Key stores and their credentials.

use super::*;

impl StoreRepo for PostgresStorage {
    fn create_store(&self, store: &KeyStore) -> Result<()> {
        let n = self.exec(
            "INSERT INTO stores(prefix, status, description, created_at, seal) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            params![
                store.prefix.as_str().to_owned(),
                store.status.as_str().to_owned(),
                store.description.clone(),
                store.created_at,
                self.sealer.seal(|| seal::store_row(store))
            ],
        )?;
        if n == 0 {
            return Err(Error::StoreExists(store.prefix.display().to_owned()));
        }
        Ok(())
    }

    fn get_store(&self, prefix: &StorePrefix) -> Result<Option<KeyStore>> {
        match self.row(
            "SELECT prefix, status, description, created_at, seal FROM stores WHERE prefix = $1"
                .into(),
            params![prefix.as_str().to_owned()],
            sealed_store,
        )? {
            None => Ok(None),
            Some(r) if store_ok(self.sealer.get().as_deref(), &r) => Ok(Some(r.0)),
            Some(_) => Err(seal::refused(format!("key store {prefix}"))),
        }
    }

    fn list_stores(&self) -> Result<Vec<KeyStore>> {
        let rows = self.rows(
            "SELECT prefix, status, description, created_at, seal FROM stores ORDER BY prefix"
                .into(),
            params![],
            sealed_store,
        )?;
        let sealer = self.sealer.get();
        Ok(rows
            .into_iter()
            .filter(|r| store_ok(sealer.as_deref(), r))
            .map(|r| r.0)
            .collect())
    }

    fn set_store_status(&self, prefix: &StorePrefix, status: Status) -> Result<()> {
        let sealer = self.sealer.get();
        let p = prefix.clone();
        with_conn!(self, c => {
            let tx = c.transaction().await.map_err(pg_err)?;
            let row = tx
                .query_opt(
                    "SELECT prefix, status, description, created_at, seal FROM stores WHERE prefix = $1 FOR UPDATE",
                    &[&p.as_str()],
                )
                .await
                .map_err(pg_err)?
                .ok_or_else(|| Error::StoreNotFound(p.display().to_owned()))?;
            let row = sealed_store(&row)?;
            if !store_ok(sealer.as_deref(), &row) {
                return Err(seal::refused(format!("key store {p}")));
            }
            let mut st = row.0;
            st.status = status;
            let sealed = sealer.as_ref().map(|s| s.seal(&seal::store_row(&st)));
            tx.execute(
                "UPDATE stores SET status = $2, seal = $3 WHERE prefix = $1",
                &[&p.as_str(), &status.as_str(), &sealed],
            )
            .await
            .map_err(pg_err)?;
            tx.commit().await.map_err(pg_err)
        })
    }

    fn add_credential(&self, cred: &StoredCredential) -> Result<()> {
        let cred = cred.clone();
        with_conn!(self, c => {
            require_store(&c, &cred.store).await?;
            c.execute(
                "INSERT INTO credentials(access_key_id, store, wrapped_secret, created_at) VALUES ($1, $2, $3, $4)",
                &[&cred.access_key_id, &cred.store.as_str(), &cred.wrapped_secret, &cred.created_at],
            )
            .await
            .map_err(pg_err)
            .map(drop)
        })
    }

    fn remove_credential(&self, prefix: &StorePrefix, access_key_id: &str) -> Result<()> {
        let n = self.exec(
            "DELETE FROM credentials WHERE store = $1 AND access_key_id = $2",
            params![prefix.as_str().to_owned(), access_key_id.to_owned()],
        )?;
        if n == 0 {
            return Err(Error::CredentialNotFound(access_key_id.to_owned()));
        }
        Ok(())
    }

    fn list_credentials(&self, prefix: &StorePrefix) -> Result<Vec<StoredCredential>> {
        let p = prefix.clone();
        with_conn!(self, c => {
            require_store(&c, &p).await?;
            c.query(
                "SELECT access_key_id, store, wrapped_secret, created_at FROM credentials WHERE store = $1 ORDER BY created_at, access_key_id",
                &[&p.as_str()],
            )
            .await
            .map_err(pg_err)?
            .iter()
            .map(row_to_cred)
            .collect()
        })
    }

    fn get_credential(&self, access_key_id: &str) -> Result<Option<StoredCredential>> {
        self.row(
            "SELECT access_key_id, store, wrapped_secret, created_at FROM credentials WHERE access_key_id = $1".into(),
            params![access_key_id.to_owned()],
            row_to_cred,
        )
    }
}
