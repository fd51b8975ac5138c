//! End-to-end tests: real servers on port 0, real SQLite files in temp directories, and a
//! real PostgreSQL server (one per test binary) for the fleet and the outbox links.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod analysis;
mod capture;
mod dashboard;
mod dashboard_browser;
mod edge_aggregate;
mod edge_auth;
mod edge_cache;
mod edge_rate;
mod edge_tls;
mod fleet;
mod monolith_api;
mod monolith_enrollment;
mod monolith_feed;
mod openapi;
mod outbox;
mod program;
mod proxy_control;
mod proxy_edge;
mod proxy_forwarding;
mod proxy_routing;
mod schedule;
mod schemathesis;
mod services;
mod shadow;
mod sidecar;
mod sync_relay;
mod traces;
mod translate;
mod verify;
