//! Meta values and counters, policies, audit shipping, the node registry.

use super::*;

impl SqliteStorage {
    /// Every policy row but the index, checked, and whether the sealed
    /// index names exactly their scopes.
    pub(super) fn policies_checked(&self, conn: &Connection) -> Result<Vec<(String, String)>> {
        let rows: Vec<(String, String, Option<Vec<u8>>)> = all(
            conn,
            "SELECT scope, body, seal FROM policies ORDER BY scope",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        seal::checked_policies(self.sealer.get().as_deref(), rows)
    }

    /// Writes the sealed index of policy scopes (inside the transaction
    /// that changed a policy).
    pub(super) fn write_policy_index(&self, conn: &Connection) -> Result<()> {
        let Some(sealer) = self.sealer.get() else {
            return Ok(());
        };
        let scopes: Vec<String> = all(
            conn,
            "SELECT scope FROM policies WHERE scope <> ?1",
            [seal::POLICY_INDEX_SCOPE],
            |r| r.get(0),
        )?;
        let (body, sealed) = seal::policy_index(&*sealer, &scopes);
        conn.execute(
            "INSERT INTO policies(scope, body, updated_at, seal) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT(scope) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at, seal = excluded.seal",
            params![seal::POLICY_INDEX_SCOPE, body, now(), sealed],
        )
        .map_err(db_err)?;
        Ok(())
    }
}

impl SqliteStorage {
    pub(super) fn insert_checkpoint(conn: &mut Connection, c: &AuditCheckpoint) -> Result<()> {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db_err)?;
        tx.execute(
            "INSERT OR REPLACE INTO audit_checkpoints(chain, kind, seq, head, ts_ms, mac) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![c.chain, c.kind, c.seq as i64, c.head, c.ts_ms, c.mac],
        )
        .map_err(db_err)?;
        // Checkpoints, reservations and stops: the newest of each kind
        // (retention markers are all kept).
        tx.execute(
            "DELETE FROM audit_checkpoints WHERE chain = ?1 AND kind = ?3 AND kind <> 'retention' AND seq < \
             (SELECT seq FROM audit_checkpoints WHERE chain = ?1 AND kind = ?3 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
            params![c.chain, AUDIT_CHECKPOINTS_KEPT - 1, c.kind],
        )
        .map_err(db_err)?;
        tx.commit().map_err(db_err)
    }
}

impl MetaStore for SqliteStorage {
    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.writer()
            .query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .map_err(db_err)
    }

    fn put_meta_if_absent(&self, name: &str, value: &[u8]) -> Result<Vec<u8>> {
        let mut conn = self.writer();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db_err)?;
        tx.execute(
            "INSERT OR IGNORE INTO meta(name, value) VALUES (?1, ?2)",
            params![name, value],
        )
        .map_err(db_err)?;
        let v: Vec<u8> = tx
            .query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(v)
    }

    fn set_meta(&self, name: &str, value: Option<&[u8]>) -> Result<()> {
        let conn = self.writer();
        match value {
            Some(v) => conn.execute(
                "INSERT INTO meta(name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                params![name, v],
            ),
            None => conn.execute("DELETE FROM meta WHERE name = ?1", [name]),
        }
        .map(drop)
        .map_err(db_err)
    }

    fn list_meta(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let conn = self.writer();
        all(
            &conn,
            "SELECT name, value FROM meta WHERE substr(name, 1, length(?1)) = ?1 ORDER BY name",
            [prefix],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    fn reserve_count(&self, name: &str, n: u64) -> Result<u64> {
        // Bookkeeping: left out of the change token (no cache depends on it).
        let mut conn = self.writer();
        self.quietly(&mut conn, |conn| {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(db_err)?;
            let total: i64 = tx
                .query_row(
                    "INSERT INTO encryption_counts(name, reserved) VALUES (?1, ?2) \
                     ON CONFLICT(name) DO UPDATE SET reserved = reserved + excluded.reserved \
                     RETURNING reserved",
                    params![name, n as i64],
                    |r| r.get(0),
                )
                .map_err(db_err)?;
            tx.commit().map_err(db_err)?;
            Ok(total as u64)
        })
    }

    fn bump_counter(&self, name: &str) -> Result<u64> {
        let mut conn = self.writer();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db_err)?;
        let old: Option<Vec<u8>> = tx
            .query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .map_err(db_err)?;
        let n = old
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        tx.execute(
            "INSERT INTO meta(name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            params![name, n.to_string().into_bytes()],
        )
        .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(n)
    }
}

impl PolicyStore for SqliteStorage {
    fn get_policy(&self, scope: &str) -> Result<Option<String>> {
        if scope == seal::POLICY_INDEX_SCOPE {
            return Ok(None);
        }
        let conn = self.writer();
        if self.sealer.get().is_some() {
            // Policies are few: the whole sealed set is checked, so that a
            // policy deleted outside Keyhold is noticed too.
            return Ok(self
                .policies_checked(&conn)?
                .into_iter()
                .find(|(s, _)| s == scope)
                .map(|(_, b)| b));
        }
        let mut st = conn
            .prepare_cached("SELECT body FROM policies WHERE scope = ?1")
            .map_err(db_err)?;
        st.query_row([scope], |r| r.get(0))
            .optional()
            .map_err(db_err)
    }

    fn set_policy(&self, scope: &str, body: Option<&str>) -> Result<bool> {
        if scope == seal::POLICY_INDEX_SCOPE {
            return Err(Error::invalid("policy scope", scope));
        }
        self.in_tx(|tx| {
            let n = match body {
                Some(b) => {
                    let sealed = self.sealer.seal(|| seal::policy_row(scope, b));
                    tx.execute(
                        "INSERT INTO policies(scope, body, updated_at, seal) VALUES (?1, ?2, ?3, ?4) \
                         ON CONFLICT(scope) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at, seal = excluded.seal",
                        params![scope, b, now(), sealed],
                    )
                }
                None => tx.execute("DELETE FROM policies WHERE scope = ?1", [scope]),
            }
            .map_err(db_err)?;
            self.write_policy_index(tx)?;
            Ok(n > 0)
        })
    }

    fn list_policies(&self) -> Result<Vec<(String, String)>> {
        let conn = self.writer();
        self.policies_checked(&conn)
    }
}

impl AuditStore for SqliteStorage {
    fn add_audit_checkpoint(&self, c: &AuditCheckpoint) -> Result<()> {
        let mut conn = self.writer();
        self.quietly(&mut conn, |conn| Self::insert_checkpoint(conn, c))
    }

    fn audit_checkpoints(&self) -> Result<Vec<AuditCheckpoint>> {
        let conn = self.writer();
        all(
            &conn,
            "SELECT chain, kind, seq, head, ts_ms, mac FROM audit_checkpoints ORDER BY chain, seq",
            [],
            |r| {
                Ok(AuditCheckpoint {
                    chain: r.get(0)?,
                    kind: r.get(1)?,
                    seq: r.get::<_, i64>(2)? as u64,
                    head: r.get(3)?,
                    ts_ms: r.get(4)?,
                    mac: r.get(5)?,
                })
            },
        )
    }

    fn audit_shipped(&self, chain: &str) -> Result<u64> {
        self.writer()
            .query_row(
                "SELECT coalesce(max(seq), 0) FROM audit_records WHERE chain = ?1",
                [chain],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(db_err)
    }

    fn ship_audit(&self, chain: &str, lines: &[(u64, String)]) -> Result<()> {
        let mut conn = self.writer();
        let tx = conn.transaction().map_err(db_err)?;
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO audit_records(chain, seq, line) VALUES (?1, ?2, ?3)",
                )
                .map_err(db_err)?;
            for (seq, line) in lines {
                st.execute(params![chain, *seq as i64, line])
                    .map_err(db_err)?;
            }
        }
        tx.commit().map_err(db_err)
    }

    fn shipped_audit(&self) -> Result<Vec<(String, Vec<String>)>> {
        let conn = self.reader();
        let rows = all(
            &conn,
            "SELECT chain, line FROM audit_records ORDER BY chain, seq",
            [],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
        )?;
        Ok(crate::group_by_chain(rows))
    }
}

impl NodeRegistry for SqliteStorage {
    fn node_heartbeat(&self, n: &NodeInfo) -> Result<()> {
        self.writer()
            .execute(
                "INSERT INTO nodes(node_id, started_ms, heartbeat_ms, ack_epoch, lease_ms) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT(node_id) DO UPDATE SET heartbeat_ms = excluded.heartbeat_ms, ack_epoch = excluded.ack_epoch, \
                 lease_ms = excluded.lease_ms",
                params![n.id, n.started_ms, n.heartbeat_ms, n.ack_epoch as i64, n.lease_ms],
            )
            .map(drop)
            .map_err(db_err)
    }

    fn live_nodes(&self, since_ms: i64) -> Result<Vec<NodeInfo>> {
        let conn = self.writer();
        all(&conn, "SELECT node_id, started_ms, heartbeat_ms, ack_epoch, lease_ms FROM nodes WHERE heartbeat_ms >= ?1 ORDER BY node_id", [since_ms], |r| {
                Ok(NodeInfo {
                    id: r.get(0)?,
                    started_ms: r.get(1)?,
                    heartbeat_ms: r.get(2)?,
                    ack_epoch: r.get::<_, i64>(3)? as u64,
                    lease_ms: r.get(4)?,
                })
            })
    }

    fn remove_node(&self, id: &str) -> Result<()> {
        self.writer()
            .execute("DELETE FROM nodes WHERE node_id = ?1", [id])
            .map(drop)
            .map_err(db_err)
    }
}
