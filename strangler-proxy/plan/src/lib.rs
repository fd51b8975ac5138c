//! The migration plan: the spec of a migration, versioned with the code.
//!
//! Layout:
//! - [`file`] (re-exported at the root): the plan file, deserialized with spans so that
//!   every error names `file:line:col`, the field and the reason, then validated;
//! - [`stage`]: a route's migration stages;
//! - [`edge`]: TLS on the listener, the protocol each service is spoken to in;
//! - [`analysis`]: analysis budgets, rollout steps and webhooks;
//! - [`schedule`]: `[[schedule]]`, verifies run by themselves, every interval or by cron;
//! - [`path`]: request path normalization and path templates;
//! - [`sync`]: `[[sync]]` links and their ends (a participant, or a PostgreSQL outbox or
//!   inbox table).
//!
//! API boundary: this crate depends on nothing else of the toolkit. It says what the plan
//! means (types and validation); the crates above decide what to do with it.
#![forbid(unsafe_code)]

pub mod analysis;
pub mod edge;
pub mod file;
pub mod location;
pub mod path;
pub mod schedule;
pub mod stage;
pub mod sync;

pub use analysis::{AnalysisSpec, NotifyEvent, NotifyFormat, NotifySpec, Step};
pub use edge::{TlsFiles, UpstreamProtocol};
pub use file::*;
pub use location::StoreLocation;
pub use path::PathTemplate;
pub use schedule::{Cron, ScheduleSpec, When};
pub use stage::Stage;
pub use sync::{LinkSource, LinkTarget, PgInbox, PgOutbox, PgTable, SnapshotQueries, SyncLink};
