//! KMIP managed objects.

use super::*;

impl ObjectRepo for SqliteStorage {
    fn create_object(&self, o: &ManagedObject, material: &[u8]) -> Result<()> {
        let attrs = serde_json::to_string(&o.attrs).map_err(|e| Error::Internal(e.to_string()))?;
        let (uid, owner, material) = (o.uid.clone(), o.owner.clone(), material.to_vec());
        let (object_type, state, exportable) = (o.object_type, o.state as u32, o.exportable);
        let shared = o.is_shared();
        let sealed = self.sealer.seal(|| {
            let mut row = o.clone();
            row.rev = 1;
            row.has_material = true;
            seal::object_row(&row, &attrs)
        });
        self.write_grouped(move |conn| {
            let n = conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO objects(uid, object_type, owner, state, exportable, attrs, material, rev, created_ms, shared, seal) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?9, ?10)",
                )
                .and_then(|mut st| {
                    st.execute(params![uid, object_type, owner, state, exportable, attrs, material, now_ms(), shared, sealed])
                })
                .map_err(db_err)?;
            if n == 0 {
                return Err(Error::Conflict(format!("object {uid}")));
            }
            Ok(())
        })
    }

    fn get_object(&self, uid: &str) -> Result<Option<ManagedObject>> {
        let row = {
            let conn = self.reader();
            conn.prepare_cached(&format!(
                "SELECT {OBJECT_COLUMNS} FROM objects WHERE uid = ?1"
            ))
            .and_then(|mut st| st.query_row([uid], sealed_object).optional())
            .map_err(db_err)?
        };
        match row {
            None => Ok(None),
            Some(r) if object_ok(self.sealer.get().as_deref(), &r) => Ok(Some(r.0)),
            Some(_) => Err(seal::refused(format!("object {uid}"))),
        }
    }

    fn object_material(&self, uid: &str) -> Result<Option<Vec<u8>>> {
        let conn = self.reader();
        conn.prepare_cached("SELECT material FROM objects WHERE uid = ?1")
            .and_then(|mut st| {
                st.query_row([uid], |r| r.get::<_, Option<Vec<u8>>>(0))
                    .optional()
            })
            .map(Option::flatten)
            .map_err(db_err)
    }

    fn update_object(&self, o: &ManagedObject) -> Result<()> {
        let attrs = serde_json::to_string(&o.attrs).map_err(|e| Error::Internal(e.to_string()))?;
        let (uid, rev, state) = (o.uid.clone(), o.rev, o.state as u32);
        let (exportable, has_material) = (o.exportable, o.has_material);
        let shared = o.is_shared();
        // The seal of the row as written: a row changed outside Keyhold
        // since the caller read it (verified) ends up not verifying.
        let sealed = self.sealer.seal(|| {
            let mut row = o.clone();
            row.rev = o.rev + 1;
            seal::object_row(&row, &attrs)
        });
        self.write_grouped(move |conn| {
            // Erasing the material is one-way: an update never brings it
            // back, and one that says it is there when it is not loses.
            let n = conn
                .prepare_cached(
                    "UPDATE objects SET state = ?3, exportable = ?4, attrs = ?5, rev = rev + 1, \
                     material = CASE WHEN ?6 THEN material ELSE NULL END, shared = ?7, seal = ?8 \
                     WHERE uid = ?1 AND rev = ?2 AND (NOT ?6 OR material IS NOT NULL)",
                )
                .and_then(|mut st| {
                    st.execute(params![
                        uid,
                        rev,
                        state,
                        exportable,
                        attrs,
                        has_material,
                        shared,
                        sealed
                    ])
                })
                .map_err(db_err)?;
            if n == 1 {
                return Ok(());
            }
            let exists: bool = conn
                .query_row("SELECT 1 FROM objects WHERE uid = ?1", [&uid], |_| Ok(true))
                .optional()
                .map_err(db_err)?
                .unwrap_or(false);
            Err(if exists {
                Error::Conflict(format!("object {uid}"))
            } else {
                Error::ObjectNotFound(uid.clone())
            })
        })
    }

    fn delete_object(&self, uid: &str) -> Result<()> {
        let uid = uid.to_owned();
        self.write_grouped(move |conn| {
            conn.prepare_cached("DELETE FROM objects WHERE uid = ?1")
                .and_then(|mut st| st.execute([&uid]))
                .map_err(db_err)?;
            Ok(())
        })
    }

    fn list_objects(&self) -> Result<Vec<ManagedObject>> {
        let conn = self.reader();
        let rows = all(
            &conn,
            &format!("SELECT {OBJECT_COLUMNS} FROM objects ORDER BY created_ms, uid"),
            [],
            sealed_object,
        )?;
        drop(conn);
        Ok(self.sealer.objects(rows))
    }

    fn list_objects_for(&self, identity: &str, with_destroyed: bool) -> Result<Vec<ManagedObject>> {
        let conn = self.reader();
        // Each side of the OR has its index (SQLite's OR-by-union plan).
        let sql = if with_destroyed {
            format!(
                "SELECT {OBJECT_COLUMNS} FROM objects WHERE owner = ?1 OR shared = 1 \
                 ORDER BY created_ms, uid"
            )
        } else {
            format!(
                "SELECT {OBJECT_COLUMNS} FROM objects \
                 WHERE (owner = ?1 AND state < {d}) OR (shared = 1 AND state < {d}) \
                 ORDER BY created_ms, uid",
                d = ObjectState::Destroyed as u32
            )
        };
        let rows = all(&conn, &sql, [identity], sealed_object)?;
        drop(conn);
        Ok(self.sealer.objects(rows))
    }
}
