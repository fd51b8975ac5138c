//! The legacy monolith: students, enrollment, finance and gamification in one axum service
//! over one SQLite database, the system the strangler toolkit migrates.
//!
//! Layout: the domains (students, finance, gamification, enrollment records) come from the
//! `domains` crate, mounted here over one database; [`enrollment`] is the process that spans
//! them in one transaction, with renewal and the term report; [`schema`] composes the shared
//! schema's migrations; [`sync`] applies other participants' events and
//! backfills events for imported rows; [`openapi`] describes the API; [`seed`] fills a
//! running monolith through its API. The outbox, feed and error body come from `participant`.

pub mod enrollment;
pub mod openapi;
pub mod schema;
pub mod seed;
pub mod sync;

pub use domains::{fields, finance, gamification, students};

use std::path::Path;

use axum::Router;
use participant::db::OpenError;
use participant::{ApiError, Database, WriteMode};

/// The monolith's name in the event feed (`origin` of the changes it accepts).
pub const ORIGIN: &str = "legacy";

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("cannot give imported rows their events: {0}")]
    Backfill(ApiError),
}

/// Opens (creating and migrating) the database at `path` and gives rows without events
/// their first event.
pub async fn open(path: &Path) -> Result<Database, StartError> {
    let db = Database::open(path, ORIGIN, schema::COMPONENT, schema::MIGRATIONS)?;
    let backfilled = db
        .write(WriteMode::Commit, sync::backfill)
        .await
        .map_err(StartError::Backfill)?;
    if backfilled > 0 {
        tracing::info!(rows = backfilled, "gave imported rows their events");
    }
    Ok(db)
}

/// The whole HTTP API.
pub fn app(db: Database) -> Router {
    let router = Router::new()
        .merge(students::routes(db.clone()))
        .merge(finance::routes(db.clone()))
        .merge(gamification::routes(db.clone()))
        .merge(enrollment::routes(db.clone()))
        .merge(participant::feed::routes(db.clone(), sync::applier()))
        .merge(domains::snapshot_routes(db.clone(), sync::HOLDS))
        .merge(participant::openapi::routes(openapi::document()));
    participant::server::finish(router, db)
}
