//! The event feed endpoints: `GET /_events` (commit order, long-poll) and `POST /_events`
//! (idempotent apply), as the event feed protocol describes.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use crate::db::Database;
use crate::error::ApiResult;
use crate::extract::{ApiQuery, JsonBody, WriteMode};
use crate::outbox::{self, Applier, ApplyReport};

/// Events served per read when the client names no limit.
const DEFAULT_LIMIT: u32 = 100;
/// Most events served per read.
const MAX_LIMIT: u32 = 1000;
/// Longest a long-poll may hold a request.
const MAX_WAIT_MS: u64 = 30_000;

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
    let after = params.after.max(0);
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let wait = Duration::from_millis(params.wait.min(MAX_WAIT_MS));
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
