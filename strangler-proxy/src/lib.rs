//! The strangler toolkit: a migration proxy in front of a monolith that moves routes one at
//! a time to new services, with instant rollback.
//!
//! Layout:
//! - [`plan`]: the migration plan file, parsed and validated with file, line and field;
//! - [`stage`]: a route's migration stages;
//! - [`path`]: request path normalization and path templates;
//! - [`routing`]: the route table (most specific template wins) and the canary split;
//! - [`upstream`]: service instances, round-robin, passive health;
//! - [`forward`]: the forwarding path (headers, body cap, timeouts, JSON errors);
//! - [`diff`]: the diff engine (structural JSON, text, JSON Patch);
//! - [`shadow`]: the shadow leg (tee, mirror, compare) and its recorder;
//! - [`server`]: a running proxy: data-plane and admin listeners, graceful shutdown;
//! - [`control`]: the thread that watches the state store and swaps the route table;
//! - [`store`]: the SQLite state store (stages, audit log, live proxies, counters);
//! - [`sync`]: the sync relay between participants' event feeds;
//! - [`report`]: shadow-diff reports (text, Markdown, HTML, JSON);
//! - [`rollout`]: stage changes as the CLI makes them, and waiting for every proxy;
//! - [`admin`]: the admin API and its token;
//! - [`metrics`]: counters and histograms, Prometheus text;
//! - [`up`]: `strangler up`, the demo stack as child processes;
//! - [`cli`]: the `strangler` command line.
#![forbid(unsafe_code)]

/// `println!` for command output: a reader that went away (`strangler status | head`) ends
/// the command quietly instead of panicking on the broken pipe.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}

/// `print!` counterpart of [`say!`].
#[macro_export]
macro_rules! say_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if write!(std::io::stdout(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}

pub mod admin;
pub mod cli;
pub mod control;
pub mod diff;
pub mod forward;
pub mod metrics;
pub mod path;
pub mod plan;
pub mod report;
pub mod rollout;
pub mod routing;
pub mod server;
pub mod shadow;
pub mod stage;
pub mod store;
pub mod sync;
pub mod up;
pub mod upstream;

use std::io::IsTerminal;

/// Logs to stderr, filtered by `RUST_LOG` (default `default_level`).
pub fn init_tracing(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
