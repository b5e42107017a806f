//! A consistent copy of every table a backup holds, in a form both backends
//! read and write: each table is rows of integers, text and bytes, in the
//! column order of [`SNAPSHOT_TABLES`]. Key material in it is as wrapped as
//! it is in the database.

use base64::Engine;
use serde::{Deserialize, Serialize};

/// One table of a snapshot: its name, its columns (in order) and the
/// column its rows are ordered by.
pub struct TableSpec {
    pub name: &'static str,
    pub columns: &'static [&'static str],
    pub order_by: &'static str,
}

/// The tables a snapshot holds, parents before children (the order a
/// restore inserts them in). The node list is left out: it describes
/// running servers, not data.
pub const SNAPSHOT_TABLES: &[TableSpec] = &[
    TableSpec {
        name: "meta",
        columns: &["name", "value"],
        order_by: "name",
    },
    TableSpec {
        name: "stores",
        columns: &["prefix", "status", "description", "created_at", "seal"],
        order_by: "prefix",
    },
    TableSpec {
        name: "credentials",
        columns: &["access_key_id", "store", "wrapped_secret", "created_at"],
        order_by: "access_key_id",
    },
    TableSpec {
        name: "keys",
        columns: &[
            "store",
            "key_id",
            "status",
            "usage",
            "current_version",
            "created_at",
            "updated_at",
            "hsm_label",
            "state",
            "activate_at",
            "deactivate_at",
            "destroy_at",
            "compromised_at",
            "rotation_period",
            "next_rotation_at",
            "min_decrypt_version",
            "seal",
        ],
        order_by: "store, key_id",
    },
    TableSpec {
        name: "key_versions",
        columns: &[
            "store",
            "key_id",
            "version",
            "wrapped",
            "created_at",
            "flag",
            "seal",
        ],
        order_by: "store, key_id, version",
    },
    TableSpec {
        name: "policies",
        columns: &["scope", "body", "updated_at", "seal"],
        order_by: "scope",
    },
    TableSpec {
        name: "audit_checkpoints",
        columns: &["chain", "kind", "seq", "head", "ts_ms", "mac"],
        order_by: "chain, kind, seq",
    },
    TableSpec {
        name: "objects",
        columns: &[
            "uid",
            "object_type",
            "owner",
            "state",
            "exportable",
            "attrs",
            "material",
            "rev",
            "created_ms",
            "seal",
        ],
        order_by: "uid",
    },
    // Restored with the rest: counts may not go back below what was used.
    TableSpec {
        name: "encryption_counts",
        columns: &["name", "reserved"],
        order_by: "name",
    },
];

impl TableSpec {
    /// Whether a row has this table's columns: all of them, or all but a
    /// trailing `seal` (a backup from before sealed rows).
    pub fn fits(&self, row: &[Cell]) -> bool {
        row.len() == self.columns.len()
            || (row.len() + 1 == self.columns.len() && self.columns.last() == Some(&"seal"))
    }

    /// A row's values in column order, a missing trailing `seal` as NULL.
    pub fn cells<'a>(&self, row: &'a [Cell]) -> impl Iterator<Item = &'a Cell> {
        const NULL: &Cell = &Cell::Null;
        row.iter()
            .chain(std::iter::repeat(NULL))
            .take(self.columns.len())
    }

    /// `SELECT columns FROM name ORDER BY order_by`.
    pub fn select(&self) -> String {
        format!(
            "SELECT {} FROM {} ORDER BY {}",
            self.columns.join(", "),
            self.name,
            self.order_by
        )
    }

    /// `INSERT INTO name(columns) VALUES (<placeholders>)`, with the
    /// placeholder style of the backend (`?N` or `$N`).
    pub fn insert(&self, placeholder: char) -> String {
        let marks: Vec<String> = (1..=self.columns.len())
            .map(|i| format!("{placeholder}{i}"))
            .collect();
        format!(
            "INSERT INTO {}({}) VALUES ({})",
            self.name,
            self.columns.join(", "),
            marks.join(", ")
        )
    }
}

/// One value of a row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cell {
    Null,
    Int(i64),
    Text(String),
    Bytes(#[serde(with = "b64")] Vec<u8>),
}

/// The rows of one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDump {
    pub name: String,
    pub rows: Vec<Vec<Cell>>,
}

/// Every table of [`SNAPSHOT_TABLES`], read in one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub tables: Vec<TableDump>,
}

impl Snapshot {
    /// Rows of `table` (0 when absent).
    pub fn count(&self, table: &str) -> usize {
        self.tables
            .iter()
            .find(|t| t.name == table)
            .map_or(0, |t| t.rows.len())
    }

    /// Rows per table.
    pub fn row_counts(&self) -> std::collections::BTreeMap<String, usize> {
        self.tables
            .iter()
            .map(|t| (t.name.clone(), t.rows.len()))
            .collect()
    }

    /// Removes table `name` from the snapshot and returns it.
    pub fn take(&mut self, name: &str) -> Option<TableDump> {
        let i = self.tables.iter().position(|t| t.name == name)?;
        Some(self.tables.remove(i))
    }

    /// Checks that every table is known and every row has its column count,
    /// so that a restore fails before it writes anything.
    pub fn validate(&self) -> keyhold_core::Result<()> {
        for t in &self.tables {
            let spec = SNAPSHOT_TABLES
                .iter()
                .find(|s| s.name == t.name)
                .ok_or_else(|| {
                    keyhold_core::Error::invalid("snapshot", format!("unknown table {}", t.name))
                })?;
            if let Some(r) = t.rows.iter().find(|r| !spec.fits(r)) {
                return Err(keyhold_core::Error::invalid(
                    "snapshot",
                    format!(
                        "a row of {} has {} values, not {}",
                        t.name,
                        r.len(),
                        spec.columns.len()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The tables in restore order (those [`SNAPSHOT_TABLES`] lists).
    pub fn ordered(&self) -> impl Iterator<Item = (&'static TableSpec, &TableDump)> {
        SNAPSHOT_TABLES.iter().filter_map(|spec| {
            self.tables
                .iter()
                .find(|t| t.name == spec.name)
                .map(|t| (spec, t))
        })
    }
}

mod b64 {
    use super::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let t = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(t)
            .map_err(serde::de::Error::custom)
    }
}
