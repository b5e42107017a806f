//! Meta values and counters, policies, audit shipping, the node registry.

use super::*;

/// Every policy but the index row, checked against their seals and the
/// sealed index of scopes.
pub(super) async fn policies_checked(
    c: &impl GenericClient,
    sealer: Option<&dyn RowSealer>,
) -> Result<Vec<(String, String)>> {
    let rows = c
        .query("SELECT scope, body, seal FROM policies ORDER BY scope", &[])
        .await
        .map_err(pg_err)?
        .iter()
        .map(|r| Ok((col(r, 0)?, col(r, 1)?, col(r, 2)?)))
        .collect::<Result<Vec<_>>>()?;
    seal::checked_policies(sealer, rows)
}

/// Rewrites the sealed index of policy scopes (in the changing transaction).
pub(super) async fn write_policy_index(
    c: &impl GenericClient,
    sealer: Option<&dyn RowSealer>,
) -> Result<()> {
    let Some(sealer) = sealer else {
        return Ok(());
    };
    let scopes: Vec<String> = c
        .query(
            "SELECT scope FROM policies WHERE scope <> $1",
            &[&seal::POLICY_INDEX_SCOPE],
        )
        .await
        .map_err(pg_err)?
        .iter()
        .map(|r| col(r, 0))
        .collect::<Result<_>>()?;
    let (body, sealed) = seal::policy_index(sealer, &scopes);
    c.execute(
        "INSERT INTO policies(scope, body, updated_at, seal) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (scope) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at, seal = excluded.seal",
        &[&seal::POLICY_INDEX_SCOPE, &body, &now(), &sealed],
    )
    .await
    .map_err(pg_err)
    .map(drop)
}

impl MetaStore for PostgresStorage {
    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.row(
            "SELECT value FROM meta WHERE name = $1".into(),
            params![name.to_owned()],
            |r| col(r, 0),
        )
    }

    fn put_meta_if_absent(&self, name: &str, value: &[u8]) -> Result<Vec<u8>> {
        let (name, value) = (name.to_owned(), value.to_vec());
        with_conn!(self, c => {
            let tx = c.transaction().await.map_err(pg_err)?;
            tx.execute(
                "INSERT INTO meta(name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&name, &value],
            )
            .await
            .map_err(pg_err)?;
            let r = tx
                .query_one("SELECT value FROM meta WHERE name = $1", &[&name])
                .await
                .map_err(pg_err)?;
            let v: Vec<u8> = col(&r, 0)?;
            tx.commit().await.map_err(pg_err)?;
            Ok(v)
        })
    }

    fn set_meta(&self, name: &str, value: Option<&[u8]>) -> Result<()> {
        match value {
            Some(v) => self.exec(
                "INSERT INTO meta(name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                params![name.to_owned(), v.to_vec()],
            ),
            None => self.exec("DELETE FROM meta WHERE name = $1", params![name.to_owned()]),
        }
        .map(drop)
    }

    fn list_meta(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        self.rows(
            "SELECT name, value FROM meta WHERE left(name, length($1)) = $1 ORDER BY name".into(),
            params![prefix.to_owned()],
            |r| Ok((col(r, 0)?, col(r, 1)?)),
        )
    }

    fn reserve_count(&self, name: &str, n: u64) -> Result<u64> {
        let r = self.row(
            "INSERT INTO encryption_counts(name, reserved) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET reserved = encryption_counts.reserved + excluded.reserved \
             RETURNING reserved"
                .into(),
            params![name.to_owned(), n as i64],
            |r| col::<i64>(r, 0),
        )?;
        r.map(|t| t as u64)
            .ok_or_else(|| Error::Storage("the reservation returned no row".into()))
    }

    fn bump_counter(&self, name: &str) -> Result<u64> {
        let name = name.to_owned();
        with_conn!(self, c => {
            let tx = c.transaction().await.map_err(pg_err)?;
            // Serialise concurrent bumps on the row (or its absence).
            tx.execute(
                "INSERT INTO meta(name, value) VALUES ($1, '\\x30'::bytea) ON CONFLICT (name) DO NOTHING",
                &[&name],
            )
            .await
            .map_err(pg_err)?;
            let r = tx
                .query_one("SELECT value FROM meta WHERE name = $1 FOR UPDATE", &[&name])
                .await
                .map_err(pg_err)?;
            let old: Vec<u8> = col(&r, 0)?;
            let n = String::from_utf8(old)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                + 1;
            tx.execute(
                "UPDATE meta SET value = $2 WHERE name = $1",
                &[&name, &n.to_string().into_bytes()],
            )
            .await
            .map_err(pg_err)?;
            tx.commit().await.map_err(pg_err)?;
            Ok(n)
        })
    }
}

impl PolicyStore for PostgresStorage {
    fn get_policy(&self, scope: &str) -> Result<Option<String>> {
        if scope == seal::POLICY_INDEX_SCOPE {
            return Ok(None);
        }
        if self.sealer.get().is_some() {
            // Policies are few: the whole sealed set is checked, so that a
            // policy deleted outside Keyhold is noticed too.
            return Ok(self
                .list_policies()?
                .into_iter()
                .find(|(s, _)| s == scope)
                .map(|(_, b)| b));
        }
        self.row(
            "SELECT body FROM policies WHERE scope = $1".into(),
            params![scope.to_owned()],
            |r| col(r, 0),
        )
    }

    fn set_policy(&self, scope: &str, body: Option<&str>) -> Result<bool> {
        if scope == seal::POLICY_INDEX_SCOPE {
            return Err(Error::invalid("policy scope", scope));
        }
        let sealer = self.sealer.get();
        let (scope, body) = (scope.to_owned(), body.map(str::to_owned));
        with_conn!(self, c => {
            let tx = c.transaction().await.map_err(pg_err)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&POLICY_LOCK])
                .await
                .map_err(pg_err)?;
            let n = match &body {
                Some(b) => {
                    let sealed = sealer.as_ref().map(|s| s.seal(&seal::policy_row(&scope, b)));
                    tx.execute(
                        "INSERT INTO policies(scope, body, updated_at, seal) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (scope) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at, seal = excluded.seal",
                        &[&scope, b, &now(), &sealed],
                    )
                    .await
                }
                None => tx.execute("DELETE FROM policies WHERE scope = $1", &[&scope]).await,
            }
            .map_err(pg_err)?;
            write_policy_index(&tx, sealer.as_deref()).await?;
            tx.commit().await.map_err(pg_err)?;
            Ok(n > 0)
        })
    }

    fn list_policies(&self) -> Result<Vec<(String, String)>> {
        let sealer = self.sealer.get();
        with_conn!(self, c => {
            policies_checked(&c, sealer.as_deref()).await
        })
    }
}

impl AuditStore for PostgresStorage {
    fn add_audit_checkpoint(&self, cp: &AuditCheckpoint) -> Result<()> {
        let cp = cp.clone();
        with_conn!(self, c => {
            let tx = c.transaction().await.map_err(pg_err)?;
            tx.execute(
                "INSERT INTO audit_checkpoints(chain, kind, seq, head, ts_ms, mac) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (chain, kind, seq) DO UPDATE SET head = excluded.head, ts_ms = excluded.ts_ms, mac = excluded.mac",
                &[&cp.chain, &cp.kind, &(cp.seq as i64), &cp.head, &cp.ts_ms, &cp.mac],
            )
            .await
            .map_err(pg_err)?;
            tx.execute(
                "DELETE FROM audit_checkpoints WHERE chain = $1 AND kind = $3 AND kind <> 'retention' AND seq < \
                 (SELECT seq FROM audit_checkpoints WHERE chain = $1 AND kind = $3 ORDER BY seq DESC LIMIT 1 OFFSET $2)",
                &[&cp.chain, &(AUDIT_CHECKPOINTS_KEPT - 1), &cp.kind],
            )
            .await
            .map_err(pg_err)?;
            tx.commit().await.map_err(pg_err)
        })
    }

    fn audit_checkpoints(&self) -> Result<Vec<AuditCheckpoint>> {
        self.rows(
            "SELECT chain, kind, seq, head, ts_ms, mac FROM audit_checkpoints ORDER BY chain, seq"
                .into(),
            params![],
            |r| {
                Ok(AuditCheckpoint {
                    chain: col(r, 0)?,
                    kind: col(r, 1)?,
                    seq: col::<i64>(r, 2)? as u64,
                    head: col(r, 3)?,
                    ts_ms: col(r, 4)?,
                    mac: col(r, 5)?,
                })
            },
        )
    }

    fn audit_shipped(&self, chain: &str) -> Result<u64> {
        self.row(
            "SELECT coalesce(max(seq), 0) FROM audit_records WHERE chain = $1".into(),
            params![chain.to_owned()],
            |r| Ok(col::<i64>(r, 0)? as u64),
        )
        .map(Option::unwrap_or_default)
    }

    fn ship_audit(&self, chain: &str, lines: &[(u64, String)]) -> Result<()> {
        let seqs: Vec<i64> = lines.iter().map(|(s, _)| *s as i64).collect();
        let texts: Vec<String> = lines.iter().map(|(_, l)| l.clone()).collect();
        self.exec(
            "INSERT INTO audit_records(chain, seq, line) \
             SELECT $1, s, l FROM unnest($2::bigint[], $3::text[]) AS t(s, l) ON CONFLICT DO NOTHING",
            params![chain.to_owned(), seqs, texts],
        )
        .map(drop)
    }

    fn shipped_audit(&self) -> Result<Vec<(String, Vec<String>)>> {
        let rows = self.rows(
            "SELECT chain, line FROM audit_records ORDER BY chain, seq".into(),
            params![],
            |r| Ok((col::<String>(r, 0)?, col::<String>(r, 1)?)),
        )?;
        Ok(crate::group_by_chain(rows))
    }
}

impl NodeRegistry for PostgresStorage {
    fn shared(&self) -> bool {
        true
    }

    fn node_heartbeat(&self, n: &NodeInfo) -> Result<()> {
        self.exec(
            "INSERT INTO nodes(node_id, started_ms, heartbeat_ms, ack_epoch, lease_ms) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (node_id) DO UPDATE SET heartbeat_ms = excluded.heartbeat_ms, ack_epoch = excluded.ack_epoch, \
             lease_ms = excluded.lease_ms",
            params![n.id.clone(), n.started_ms, n.heartbeat_ms, n.ack_epoch as i64, n.lease_ms],
        )
        .map(drop)
    }

    fn live_nodes(&self, since_ms: i64) -> Result<Vec<NodeInfo>> {
        self.rows(
            "SELECT node_id, started_ms, heartbeat_ms, ack_epoch, lease_ms FROM nodes WHERE heartbeat_ms >= $1 ORDER BY node_id".into(),
            params![since_ms],
            |r| {
                Ok(NodeInfo {
                    id: col(r, 0)?,
                    started_ms: col(r, 1)?,
                    heartbeat_ms: col(r, 2)?,
                    ack_epoch: col::<i64>(r, 3)? as u64,
                    lease_ms: col(r, 4)?,
                })
            },
        )
    }

    fn remove_node(&self, id: &str) -> Result<()> {
        self.exec(
            "DELETE FROM nodes WHERE node_id = $1",
            params![id.to_owned()],
        )
        .map(drop)
    }
}
