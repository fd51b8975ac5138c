//! The event feed endpoints: `GET /_events` (commit order, long-poll) and `POST /_events`
//! (idempotent apply), as the event feed protocol describes.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use crate::db::Database;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiQuery, JsonBody, WriteMode};
use crate::outbox::{self, Applier, ApplyReport};

/// What `GET /_events` accepts; a value outside is a 400 naming the parameter.
pub struct Limits {
    /// Events served per read when the client names no limit.
    pub default_limit: u32,
    /// Most events served per read.
    pub max_limit: u32,
    /// Longest a long-poll may hold a request, in milliseconds.
    pub max_wait_ms: u64,
}

pub const LIMITS: Limits = Limits {
    default_limit: 100,
    max_limit: 1000,
    max_wait_ms: 30_000,
};

#[derive(Clone)]
struct FeedState {
    db: Database,
    applier: Arc<Applier>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadParams {
    #[serde(default)]
    after: i64,
    limit: Option<u32>,
    #[serde(default)]
    wait: u64,
}

pub use strangler_feed::{EventBatch, FeedPage};

/// Routes serving this participant's feed and applying other participants' events.
pub fn routes(db: Database, applier: Arc<Applier>) -> Router {
    Router::new()
        .route("/_events", get(read).post(apply))
        .with_state(FeedState { db, applier })
}

async fn read(
    State(state): State<FeedState>,
    ApiQuery(params): ApiQuery<ReadParams>,
) -> ApiResult<Json<FeedPage>> {
    let out_of_range = |what: String| ApiError::bad_request("invalid_query", what);
    let after = params.after;
    if after < 0 {
        return Err(out_of_range(format!(
            "after: must be at least 0, got {after}"
        )));
    }
    let limit = params.limit.unwrap_or(LIMITS.default_limit);
    if !(1..=LIMITS.max_limit).contains(&limit) {
        return Err(out_of_range(format!(
            "limit: must be between 1 and {}, got {limit}",
            LIMITS.max_limit
        )));
    }
    if params.wait > LIMITS.max_wait_ms {
        return Err(out_of_range(format!(
            "wait: must be at most {} milliseconds, got {}",
            LIMITS.max_wait_ms, params.wait
        )));
    }
    let wait = Duration::from_millis(params.wait);
    // Subscribe before reading so a commit between the read and the wait is not missed.
    let mut head = state.db.subscribe();
    let mut events = state
        .db
        .read(move |conn| outbox::read_after(conn, after, limit))
        .await?;
    if events.is_empty() && !wait.is_zero() {
        let new_event = async {
            tokio::time::timeout(wait, head.wait_for(|&seq| seq > after))
                .await
                .is_ok_and(|changed| changed.is_ok())
        };
        let woke = tokio::select! {
            woke = new_event => woke,
            () = crate::server::shutting_down() => false,
        };
        if woke {
            events = state
                .db
                .read(move |conn| outbox::read_after(conn, after, limit))
                .await?;
        }
    }
    let next = events.last().map_or(after, |e| e.seq);
    // The real head: a reader whose `after` is past it learns the feed went back (a restored
    // database) instead of silently waiting.
    let head = *state.db.subscribe().borrow();
    Ok(Json(FeedPage { events, next, head }))
}

async fn apply(
    State(state): State<FeedState>,
    mode: WriteMode,
    JsonBody(batch): JsonBody<EventBatch>,
) -> ApiResult<Json<ApplyReport>> {
    let applier = Arc::clone(&state.applier);
    let report = state
        .db
        .write(mode, move |w| {
            outbox::apply_batch(w, &batch.events, &*applier)
        })
        .await?;
    if report.applied > 0 || report.rejected > 0 {
        tracing::info!(
            rejected = report.rejected,
            received = report.received,
            applied = report.applied,
            duplicates = report.duplicates,
            stale = report.stale,
            "events applied"
        );
    }
    Ok(Json(report))
}
