//! The OpenAPI 3 description of the monolith's API, served at `GET /openapi.json`: every
//! domain's piece (the same pieces the extracted services serve) and what every participant
//! serves. The e2e tests check that every route the server answers is described here and
//! back, and fuzz the server against it.

use domains::enrollments::Process;
use participant::openapi::Api;
use serde_json::Value;

/// The document.
pub fn document() -> Value {
    Api::new()
        .merge(domains::students::api())
        .merge(domains::finance::api())
        .merge(domains::gamification::api())
        .merge(domains::enrollments::api(Process::Local))
        .merge(participant::openapi::participant())
        .document(
            "legacy-monolith",
            env!("CARGO_PKG_VERSION"),
            "Students, enrollment, finance and gamification in one service.",
        )
}
