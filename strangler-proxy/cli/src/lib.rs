//! The `strangler` command line: the binary's edge over the toolkit's crates.
//!
//! Layout:
//! - [`cli`]: clap commands, one-line errors, exit codes (1 refused, 2 unknown route or
//!   usage, 3 unconfirmed propagation);
//! - [`bundle`]: `strangler capture export`, a route's captured cases as plain files;
//! - [`replay`]: `strangler replay`, a bundle's requests sent again and compared;
//! - [`sidecar`]: `strangler sidecar`, the request path beside one service;
//! - [`up`]: `strangler up`, the demo stack as child processes and the proxy in-process;
//! - [`verify`]: `strangler verify`, its progress and report.
//!
//! The toolkit beneath, one crate per layer: `strangler-plan`, `strangler-diff`,
//! `strangler-store`, `strangler-dataplane`, `strangler-relay`, `strangler-control`,
//! `strangler-report` (and `strangler-feed`, the event feed's wire types).
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

pub mod bundle;
pub mod cli;
pub mod replay;
pub mod sidecar;
pub mod up;
pub mod verify;

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

/// Resolves on Ctrl-C or SIGTERM: the one signal `serve`, `sync` and `up` stop on.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested, finishing in-flight requests");
}

/// The `strangler` program: parses the arguments, runs the command, exits with its code.
pub async fn main() {
    use clap::Parser;
    use cli::{Cli, Command, EXIT_USAGE};

    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // Under --json a usage error is JSON too, with the same exit code.
            let help = matches!(
                err.kind(),
                clap::error::ErrorKind::DisplayHelp
                    | clap::error::ErrorKind::DisplayVersion
                    | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            );
            if !help && std::env::args().any(|a| a == "--json") {
                let message = err
                    .to_string()
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim_start_matches("error: ")
                    .to_string();
                println!(
                    "{}",
                    serde_json::json!({ "error": { "code": "usage", "exit": EXIT_USAGE, "message": message } })
                );
                std::process::exit(EXIT_USAGE);
            }
            err.exit();
        }
    };
    // The proxy logs what it does; a one-shot command prints its result and logs only trouble.
    let default_level = match cli.command {
        Command::Serve | Command::Up | Command::Sidecar(_) => "info",
        _ => "warn",
    };
    init_tracing(default_level);
    if let Err(err) = cli::run(cli).await {
        if !err.message.is_empty() {
            eprintln!("strangler: {}", err.message);
        }
        std::process::exit(err.code);
    }
}
