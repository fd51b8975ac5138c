//! Moving a store's contents to another store (`strangler store copy`): a backend-neutral
//! [`Snapshot`] of every table worth keeping, per table its columns and rows of [`Value`]s.
//!
//! What is copied: stages and the generation, the audit log (with its ids), shadow counts,
//! paths, samples, captured cases and latencies, analysis runs with their counts and paths,
//! checks, rollouts, sync links with their checkpoints and counters, and verify results. What
//! is not: live proxies and their counters (they register again), leases (their holders take
//! them again), and the cursors of unfinished verifies (a verify run against the new store
//! starts over).
//! [`TABLES`] names it all, in an order that imports cleanly.

use crate::StoreError;

/// A stored value, as both backends can write it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

/// The type a column holds (besides NULL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int,
    Real,
    Text,
}

/// A copied table: its name, the columns copied, and whether `id` is generated.
#[derive(Debug, Clone, Copy)]
pub struct TableSpec {
    pub name: &'static str,
    pub columns: &'static [(&'static str, Kind)],
    /// The columns rows are exported in order of (their primary key).
    pub order_by: &'static str,
    /// Whether the table's `id` comes from a sequence (PostgreSQL identity, SQLite
    /// AUTOINCREMENT), which an import moves past the copied ids.
    pub generated_id: bool,
}

impl TableSpec {
    /// `a, b, c`.
    pub fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|(c, _)| *c)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

use Kind::{Int, Real, Text};

/// Every table a snapshot holds.
pub const TABLES: &[TableSpec] = &[
    TableSpec {
        name: "control",
        columns: &[("key", Text), ("value", Int)],
        order_by: "key",
        generated_id: false,
    },
    TableSpec {
        name: "route_status",
        columns: &[
            ("route", Text),
            ("stage", Text),
            ("percent", Int),
            ("generation", Int),
            ("updated_at", Text),
        ],
        order_by: "route",
        generated_id: false,
    },
    TableSpec {
        name: "audit_log",
        columns: &[
            ("id", Int),
            ("at", Text),
            ("route", Text),
            ("from_stage", Text),
            ("to_stage", Text),
            ("actor", Text),
            ("reason", Text),
            ("forced", Int),
            ("generation", Int),
        ],
        order_by: "id",
        generated_id: true,
    },
    TableSpec {
        name: "sync_links",
        columns: &[
            ("link", Text),
            ("checkpoint", Int),
            ("head", Int),
            ("lag_seconds", Real),
            ("applied", Int),
            ("duplicates", Int),
            ("skipped", Int),
            ("last_error", Text),
            ("updated_ms", Int),
            ("rejected", Int),
            ("last_rejection", Text),
        ],
        order_by: "link",
        generated_id: false,
    },
    TableSpec {
        name: "shadow_counts",
        columns: &[("route", Text), ("metric", Text), ("count", Int)],
        order_by: "route, metric",
        generated_id: false,
    },
    TableSpec {
        name: "shadow_paths",
        columns: &[
            ("route", Text),
            ("path", Text),
            ("kind", Text),
            ("noisy", Int),
            ("count", Int),
        ],
        order_by: "route, path, kind, noisy",
        generated_id: false,
    },
    TableSpec {
        name: "shadow_samples",
        columns: &[
            ("id", Int),
            ("route", Text),
            ("path", Text),
            ("at", Text),
            ("sample", Text),
        ],
        order_by: "id",
        generated_id: true,
    },
    TableSpec {
        name: "shadow_captures",
        columns: &[
            ("id", Int),
            ("route", Text),
            ("path", Text),
            ("at", Text),
            ("capture", Text),
        ],
        order_by: "id",
        generated_id: true,
    },
    TableSpec {
        name: "shadow_latency",
        columns: &[
            ("id", Int),
            ("route", Text),
            ("primary_ms", Real),
            ("candidate_ms", Real),
        ],
        order_by: "id",
        generated_id: true,
    },
    TableSpec {
        name: "analysis_runs",
        columns: &[
            ("id", Int),
            ("route", Text),
            ("stage", Text),
            ("started_at", Text),
            ("ended_at", Text),
            ("verdict", Text),
            ("figures", Text),
        ],
        order_by: "id",
        generated_id: true,
    },
    TableSpec {
        name: "shadow_run_counts",
        columns: &[("run", Int), ("metric", Text), ("count", Int)],
        order_by: "run, metric",
        generated_id: false,
    },
    TableSpec {
        name: "shadow_run_paths",
        columns: &[
            ("run", Int),
            ("path", Text),
            ("kind", Text),
            ("noisy", Int),
            ("count", Int),
        ],
        order_by: "run, path, kind, noisy",
        generated_id: false,
    },
    TableSpec {
        name: "analysis_checks",
        columns: &[
            ("id", Int),
            ("route", Text),
            ("run", Int),
            ("at", Text),
            ("metric", Text),
            ("value", Real),
            ("budget", Real),
            ("passed", Int),
            ("detail", Text),
        ],
        order_by: "id",
        generated_id: true,
    },
    TableSpec {
        name: "rollouts",
        columns: &[
            ("route", Text),
            ("step", Int),
            ("state", Text),
            ("step_started_ms", Int),
            ("updated_at", Text),
            ("message", Text),
        ],
        order_by: "route",
        generated_id: false,
    },
    TableSpec {
        name: "verify_results",
        columns: &[
            ("id", Int),
            ("link", Text),
            ("kinds", Text),
            ("complete", Int),
            ("compared", Int),
            ("missing", Int),
            ("extra", Int),
            ("differing", Int),
            ("in_flight", Int),
            ("repaired", Int),
            ("passed", Int),
            ("started_ms", Int),
            ("finished_ms", Int),
            ("by_kind", Text),
        ],
        order_by: "id",
        generated_id: true,
    },
];

/// One copied table's rows.
#[derive(Debug, Clone, PartialEq)]
pub struct TableRows {
    pub table: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

/// Everything a store holds that is worth copying.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub tables: Vec<TableRows>,
}

impl Snapshot {
    /// The rows of `table` (none when the snapshot lacks it).
    pub fn table(&self, table: &str) -> Option<&TableRows> {
        self.tables.iter().find(|t| t.table == table)
    }

    /// How many rows `table` has.
    pub fn count(&self, table: &str) -> usize {
        self.table(table).map_or(0, |t| t.rows.len())
    }

    /// The stored generation.
    pub fn generation(&self) -> Option<i64> {
        let control = self.table("control")?;
        let key = control.columns.iter().position(|c| c == "key")?;
        let value = control.columns.iter().position(|c| c == "value")?;
        control
            .rows
            .iter()
            .find_map(|row| match (&row[key], &row[value]) {
                (Value::Text(k), Value::Int(v)) if k == "generation" => Some(*v),
                _ => None,
            })
    }

    /// Checks that every table and column is one this build copies, and that rows are as
    /// wide as their columns; answers each snapshot table with its spec.
    pub fn checked(&self) -> Result<Vec<(&'static TableSpec, &TableRows)>, String> {
        let mut out = Vec::new();
        for spec in TABLES {
            let Some(rows) = self.table(spec.name) else {
                continue;
            };
            for column in &rows.columns {
                if !spec.columns.iter().any(|(c, _)| c == column) {
                    return Err(format!("table {} has no column {column}", spec.name));
                }
            }
            if let Some(row) = rows.rows.iter().find(|r| r.len() != rows.columns.len()) {
                return Err(format!(
                    "table {}: a row of {} values for {} columns",
                    spec.name,
                    row.len(),
                    rows.columns.len()
                ));
            }
            out.push((spec, rows));
        }
        if let Some(unknown) = self
            .tables
            .iter()
            .find(|t| !TABLES.iter().any(|s| s.name == t.table))
        {
            return Err(format!("unknown table {}", unknown.table));
        }
        Ok(out)
    }
}

/// Copying a store's contents out and into another.
pub trait Transfer {
    /// Everything worth copying, read in one consistent view.
    fn export(&self) -> Result<Snapshot, StoreError>;
    /// Whether the store holds nothing a copy would overwrite (no stage, audit entry, run,
    /// check, rollout, shadow result or sync link).
    fn is_empty(&self) -> Result<bool, StoreError>;
    /// Writes `snapshot` in one transaction, then moves generated ids past the copied ones.
    /// A store that is not empty is refused ([`StoreError::NotEmpty`]) unless `replace`,
    /// which clears the copied tables first.
    fn import(&mut self, snapshot: &Snapshot, replace: bool) -> Result<(), StoreError>;
}
