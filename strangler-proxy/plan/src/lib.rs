//! The migration plan: the spec of a migration, versioned with the code.
//!
//! Layout:
//! - [`file`] (re-exported at the root): the plan file, deserialized with spans so that
//!   every error names `file:line:col`, the field and the reason, then validated;
//! - [`stage`]: a route's migration stages;
//! - [`cache`]: `[edge.cache]`, a route's `cache` and `[[aggregates]]`: response caching
//!   and aggregate routes;
//! - [`transport`]: TLS on the listener, the protocol each service is spoken to in;
//! - [`analysis`]: analysis budgets, rollout steps and webhooks;
//! - [`schedule`]: `[[schedule]]`, verifies run by themselves, every interval or by cron;
//! - [`telemetry`]: `[telemetry]`, where request spans are exported (OTLP/HTTP);
//! - [`translate`]: a route's `translate` section, JSON edits of what the new service is
//!   sent and answers (the anti-corruption layer), and how they apply;
//! - [`edge`]: `[edge]`, authentication and rate limits (a sidecar's policy file too);
//! - [`path`]: request path normalization and path templates;
//! - [`sync`]: `[[sync]]` links and their ends (a participant, or a PostgreSQL outbox or
//!   inbox table).
//!
//! API boundary: this crate depends on nothing else of the toolkit. It says what the plan
//! means (types and validation); the crates above decide what to do with it.
#![forbid(unsafe_code)]

pub mod analysis;
pub mod cache;
pub mod edge;
pub mod file;
pub mod location;
pub mod path;
pub mod schedule;
pub mod stage;
pub mod sync;
pub mod telemetry;
pub mod translate;
pub mod transport;

pub use analysis::{AnalysisSpec, NotifyEvent, NotifyFormat, NotifySpec, Step};
pub use cache::{AggregateSpec, CacheSettings, RouteCache};
pub use file::*;
pub use location::StoreLocation;
pub use path::PathTemplate;
pub use schedule::{Cron, ScheduleSpec, When};
pub use stage::Stage;
pub use sync::{LinkSource, LinkTarget, PgInbox, PgOutbox, PgTable, SnapshotQueries, SyncLink};
pub use telemetry::TelemetrySpec;
pub use translate::{Pointer, Transform, TranslateSpec};
pub use transport::{TlsFiles, UpstreamProtocol};
