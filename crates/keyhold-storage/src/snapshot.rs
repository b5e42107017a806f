//! A consistent copy of every table a backup holds, in a form both backends
//! read and write: each table is rows of integers, text and bytes, in the
//! column order of [`SNAPSHOT_TABLES`]. Key material in it is as wrapped as
//! it is in the database.

use base64::Engine;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

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
            "key_type",
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

/// Columns added after backups were first made, with the value a row from
/// before them gets: a backup row may end before any of these, if they
/// close its table's column list.
fn added_column(name: &str) -> Option<Cell> {
    match name {
        // Rows from before sealed rows: sealed once restored.
        "seal" => Some(Cell::Null),
        // Keys from before key types are AES-256.
        "key_type" => Some(Cell::Text("AES_256".into())),
        _ => None,
    }
}

impl TableSpec {
    /// How many values a row of this table must have at least: the columns
    /// before the trailing ones added later ([`added_column`]).
    fn least(&self) -> usize {
        let added = self
            .columns
            .iter()
            .rev()
            .take_while(|c| added_column(c).is_some())
            .count();
        self.columns.len() - added
    }

    /// Whether a row has this table's columns: all of them, or all but
    /// trailing ones added later (a backup from before them).
    pub fn fits(&self, row: &[Cell]) -> bool {
        (self.least()..=self.columns.len()).contains(&row.len())
    }

    /// A row's values in column order, a missing trailing column as its
    /// value for rows from before it.
    pub fn cells<'a>(&'a self, row: &'a [Cell]) -> impl Iterator<Item = Cow<'a, Cell>> {
        self.columns
            .iter()
            .enumerate()
            .map(|(i, c)| match row.get(i) {
                Some(v) => Cow::Borrowed(v),
                None => Cow::Owned(added_column(c).unwrap_or(Cell::Null)),
            })
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
