//! KMIP managed objects.

use super::*;

impl ObjectRepo for PostgresStorage {
    fn create_object(&self, o: &ManagedObject, material: &[u8]) -> Result<()> {
        let attrs = serde_json::to_string(&o.attrs).map_err(|e| Error::Internal(e.to_string()))?;
        let sealed = self.sealer.seal(|| {
            let mut row = o.clone();
            row.rev = 1;
            row.has_material = true;
            seal::object_row(&row, &attrs)
        });
        let n = self.exec(
            "INSERT INTO objects(uid, object_type, owner, state, exportable, attrs, material, rev, created_ms, shared, seal) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $9, $10) ON CONFLICT DO NOTHING",
            params![
                o.uid.clone(),
                i64::from(o.object_type),
                o.owner.clone(),
                o.state as i64,
                i64::from(o.exportable),
                attrs,
                material.to_vec(),
                now_ms(),
                i64::from(o.is_shared()),
                sealed
            ],
        )?;
        if n == 0 {
            return Err(Error::Conflict(format!("object {}", o.uid)));
        }
        Ok(())
    }

    fn get_object(&self, uid: &str) -> Result<Option<ManagedObject>> {
        match self.row(
            format!("SELECT {OBJECT_COLUMNS} FROM objects WHERE uid = $1"),
            params![uid.to_owned()],
            sealed_object,
        )? {
            None => Ok(None),
            Some(r) if object_ok(self.sealer.get().as_deref(), &r) => Ok(Some(r.0)),
            Some(_) => Err(seal::refused(format!("object {uid}"))),
        }
    }

    fn object_material(&self, uid: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .row(
                "SELECT material FROM objects WHERE uid = $1".into(),
                params![uid.to_owned()],
                |r| col::<Option<Vec<u8>>>(r, 0),
            )?
            .flatten())
    }

    fn update_object(&self, o: &ManagedObject) -> Result<()> {
        let attrs = serde_json::to_string(&o.attrs).map_err(|e| Error::Internal(e.to_string()))?;
        // The seal of the row as written: a row changed outside Keyhold
        // since the caller read it (verified) ends up not verifying.
        let sealed = self.sealer.seal(|| {
            let mut row = o.clone();
            row.rev = o.rev + 1;
            seal::object_row(&row, &attrs)
        });
        let n = self.exec(
            // Erasing the material is one-way: an update never brings it
            // back, and one that says it is there when it is not loses.
            "UPDATE objects SET state = $3, exportable = $4, attrs = $5, rev = rev + 1, \
             material = CASE WHEN $6 THEN material ELSE NULL END, shared = $7, seal = $8 \
             WHERE uid = $1 AND rev = $2 AND ($6 = false OR material IS NOT NULL)",
            params![
                o.uid.clone(),
                o.rev as i64,
                o.state as i64,
                i64::from(o.exportable),
                attrs,
                o.has_material,
                i64::from(o.is_shared()),
                sealed
            ],
        )?;
        if n == 1 {
            return Ok(());
        }
        let exists = self
            .row(
                "SELECT 1 FROM objects WHERE uid = $1".into(),
                params![o.uid.clone()],
                |_| Ok(()),
            )?
            .is_some();
        Err(if exists {
            Error::Conflict(format!("object {}", o.uid))
        } else {
            Error::ObjectNotFound(o.uid.clone())
        })
    }

    fn list_objects(&self) -> Result<Vec<ManagedObject>> {
        let rows = self.rows(
            format!("SELECT {OBJECT_COLUMNS} FROM objects ORDER BY created_ms, uid"),
            params![],
            sealed_object,
        )?;
        Ok(self.sealer.objects(rows))
    }

    fn list_objects_for(&self, identity: &str, with_destroyed: bool) -> Result<Vec<ManagedObject>> {
        let sql = if with_destroyed {
            format!(
                "SELECT {OBJECT_COLUMNS} FROM objects WHERE owner = $1 OR shared = 1 \
                 ORDER BY created_ms, uid"
            )
        } else {
            format!(
                "SELECT {OBJECT_COLUMNS} FROM objects \
                 WHERE (owner = $1 AND state < {d}) OR (shared = 1 AND state < {d}) \
                 ORDER BY created_ms, uid",
                d = ObjectState::Destroyed as i64
            )
        };
        let rows = self.rows(sql, params![identity.to_owned()], sealed_object)?;
        Ok(self.sealer.objects(rows))
    }

    fn delete_object(&self, uid: &str) -> Result<()> {
        self.exec(
            "DELETE FROM objects WHERE uid = $1",
            params![uid.to_owned()],
        )
        .map(drop)
    }
}
