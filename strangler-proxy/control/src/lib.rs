//! The control plane: everything that decides what the data plane serves, and the process
//! that runs them together.
//!
//! Layout:
//! - [`control`]: the control thread that watches the store and swaps the route table,
//!   records the generation served, and writes heartbeats with counters;
//! - [`last_known`]: the last-known route table on local disk, served when the proxy
//!   starts while the store is unreachable;
//! - [`recorder`]: drains the data plane's shadow results into the store;
//! - [`analysis`]: the analysis controller (one per store, by lease): checks every route
//!   in a canary or cutover against its budgets, rolls it back after `failure_limit` failed
//!   checks, walks progressive rollouts; [`notify`]: the webhooks it tells;
//! - [`schedule`]: the `[[schedule]]` verifies, run by one proxy per store (a lease),
//!   never twice at once, telling the webhooks when a difference appears;
//! - [`telemetry`]: the span exporter (`[telemetry]`), batches of the data plane's spans
//!   posted as OTLP/HTTP protobuf off the request path;
//! - [`lease`]: what the controllers acting under a store lease share;
//! - [`rollout`]: stage changes as an operator makes them, the cutover gate
//!   ([`rollout::GateVerdict`]), and waiting until every live proxy serves a change;
//! - [`status`]: [`status::RouteStatus`], one route's state as the admin API, the CLI and
//!   the reports show it;
//! - [`dashboard`]: the migration dashboard at the admin listener's `/` (pages, login,
//!   the stage and rollback endpoints); [`history`]: the last hour of each route's
//!   figures it charts;
//! - [`admin`]: the admin API and its token; [`purge`]: its response-cache purge; [`exposition`]: `/metrics`, written with
//!   `prometheus-client` from the data plane's atomics and the store's fleet figures;
//! - [`proxy`]: a running proxy (data plane, admin, control, recorder, relays) and its
//!   one way to stop; [`sidecar`]: the data plane beside one service, without plan file or
//!   store (`strangler sidecar`).
//!
//! API boundary: the only crate that both reads the store and drives the data plane. The
//! data plane sees a route table and a results channel; the store sees typed calls.
#![forbid(unsafe_code)]

pub mod admin;
pub mod analysis;
pub mod control;
pub mod dashboard;
pub mod exposition;
pub mod history;
pub mod last_known;
pub mod lease;
pub mod notify;
pub mod proxy;
pub mod purge;
pub mod recorder;
pub mod rollout;
pub mod schedule;
pub mod sidecar;
pub mod status;
pub mod telemetry;

pub use proxy::{Proxy, ServeError};
