//! A data service extracted from the monolith: one domain over a database of its own.

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use participant::db::OpenError;
use participant::openapi::Api;
use participant::{Database, Migration};

use crate::Kind;

/// What makes a data service: its name, schema, the entity kinds it holds (its own and the
/// read models it keeps) and its routes.
pub struct DataService {
    /// Its name in the event feed (`origin`) and the schema component.
    pub origin: &'static str,
    pub migrations: &'static [Migration],
    /// Kinds whose events it applies.
    pub holds: &'static [Kind],
    /// Its public routes (the same as the monolith's for this domain).
    pub routes: fn(Database) -> Router,
    /// Its routes and records as an OpenAPI piece (the domain's `api`).
    pub api: fn() -> Api,
}

impl DataService {
    /// Opens (creating and migrating) the service's database.
    pub fn open(&self, path: &Path) -> Result<Database, OpenError> {
        Database::open(path, self.origin, self.origin, self.migrations)
    }

    /// The whole HTTP API: the domain's routes, the event feed and snapshots, health and
    /// readiness.
    pub fn app(&self, db: Database) -> Router {
        let holds = self.holds;
        let origin = self.origin;
        let applier = Arc::new(
            move |conn: &rusqlite::Connection, event: &participant::Event| {
                crate::apply(conn, event, holds, origin)
            },
        );
        let router = (self.routes)(db.clone())
            .merge(participant::feed::routes(db.clone(), applier))
            .merge(crate::snapshot_routes(db.clone(), self.holds))
            .merge(participant::openapi::routes(self.openapi()));
        participant::server::finish(router, db)
    }

    /// The OpenAPI document it serves at `GET /openapi.json`: its domain's piece and what
    /// every participant serves.
    pub fn openapi(&self) -> serde_json::Value {
        (self.api)().merge(participant::openapi::participant()).document(
            &format!("{}-service", self.origin),
            env!("CARGO_PKG_VERSION"),
            &format!("The {} service, extracted from the monolith: the same routes and answers for its domain.", self.origin),
        )
    }
}
