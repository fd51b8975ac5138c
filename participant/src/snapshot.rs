//! `GET /_snapshot`: the current state of one kind of entity, page by page in key order, so
//! `strangler verify` can compare two participants entity by entity; and
//! `GET /_snapshot/types`, the kinds this participant serves.
//!
//! Key order is the byte order of the keys' UTF-8: SQLite compares `TEXT` that way (the
//! `BINARY` collation), and so does PostgreSQL with `COLLATE "C"`, so every side of a link
//! walks its entities in the same order.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use rusqlite::{Connection, OptionalExtension};
use serde::Deserialize;
use serde_json::Value;

pub use strangler_feed::{Entity, SnapshotPage, SnapshotTypes};

use crate::db::Database;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiQuery;

/// What `GET /_snapshot` accepts; a value outside is a 400 naming the parameter.
pub struct Limits {
    /// Entities served per page when the client names no limit.
    pub default_limit: u32,
    /// Most entities served per page (a page is read in one transaction).
    pub max_limit: u32,
}

pub const LIMITS: Limits = Limits {
    default_limit: 500,
    max_limit: 5000,
};

/// Reads up to `limit` entities of one kind whose key sorts after `after` (byte order), as
/// `(key, state)` with the state in the shape the kind's events carry.
pub type KindReader = fn(&Connection, &str, u32) -> ApiResult<Vec<(String, Value)>>;

/// The kinds a participant serves, each with its reader.
pub type Kinds = Arc<Vec<(&'static str, KindReader)>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageParams {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    after: String,
    limit: Option<u32>,
}

/// Routes serving snapshots of `kinds` from `db`.
pub fn routes(db: Database, kinds: Vec<(&'static str, KindReader)>) -> Router {
    Router::new()
        .route("/_snapshot", get(page))
        .route("/_snapshot/types", get(types))
        .with_state((db, Arc::new(kinds)))
}

async fn types(State((_, kinds)): State<(Database, Kinds)>) -> Json<SnapshotTypes> {
    Json(SnapshotTypes {
        types: kinds.iter().map(|(name, _)| name.to_string()).collect(),
    })
}

async fn page(
    State((db, kinds)): State<(Database, Kinds)>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> ApiResult<Json<SnapshotPage>> {
    let invalid = |what: String| ApiError::bad_request("invalid_query", what);
    let held = || {
        kinds
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(kind) = params.kind.filter(|k| !k.is_empty()) else {
        return Err(invalid(format!(
            "type: required, one of the kinds this participant holds: {}",
            held()
        )));
    };
    let Some(&(kind, reader)) = kinds.iter().find(|(name, _)| *name == kind) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_type",
            format!(
                "type: this participant holds no `{kind}` entities (it holds: {})",
                held()
            ),
        ));
    };
    let limit = params.limit.unwrap_or(LIMITS.default_limit);
    if !(1..=LIMITS.max_limit).contains(&limit) {
        return Err(invalid(format!(
            "limit: must be between 1 and {}, got {limit}",
            LIMITS.max_limit
        )));
    }
    let after = params.after;
    db.read(move |conn| read_page(conn, kind, reader, &after, limit))
        .await
        .map(Json)
}

/// One page, read in one transaction so that states and versions are from the same moment.
fn read_page(
    conn: &Connection,
    kind: &str,
    reader: KindReader,
    after: &str,
    limit: u32,
) -> ApiResult<SnapshotPage> {
    let tx = conn.unchecked_transaction()?;
    // One more than asked tells whether another page follows.
    let mut rows = reader(&tx, after, limit + 1)?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let mut version =
        tx.prepare_cached("SELECT version FROM entity_versions WHERE kind = ?1 AND key = ?2")?;
    let mut entities = Vec::with_capacity(rows.len());
    for (key, state) in rows {
        let known: Option<i64> = version.query_row((kind, &key), |r| r.get(0)).optional()?;
        entities.push(Entity {
            key,
            version: known.unwrap_or(0),
            state,
        });
    }
    drop(version);
    tx.finish()?;
    let next = if more {
        entities.last().map(|e| e.key.clone())
    } else {
        None
    };
    Ok(SnapshotPage { entities, next })
}
