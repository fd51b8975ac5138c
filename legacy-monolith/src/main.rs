use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use legacy_monolith::seed::{SeedConfig, seed};

/// The legacy monolith: students, enrollment, finance and gamification over one SQLite database.
#[derive(Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7000", env = "LEGACY_LISTEN")]
    listen: SocketAddr,
    /// SQLite database file (created with its directory if missing).
    #[arg(long, default_value = "data/legacy.db", env = "LEGACY_DB")]
    db: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Fill a running monolith with realistic data through its API.
    Seed {
        /// Base URL of the running monolith.
        #[arg(long, default_value = "http://127.0.0.1:7000")]
        url: String,
        /// How many students to create (each with enrollments, payments and rewards).
        #[arg(long, default_value_t = 100)]
        students: usize,
        /// Seed of the random choices, to repeat a run.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    participant::server::init_tracing();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Seed {
            url,
            students,
            seed: dice,
        }) => {
            let config = SeedConfig {
                url,
                students,
                seed: dice,
            };
            let (summary, elapsed) = seed(&config)
                .await
                .with_context(|| format!("seeding {} failed", config.url))?;
            println!(
                "seeded {} students, {} enrollments ({} renewals), {} payments, {} rewards, {} deactivated: {} requests in {:.1}s ({:.0} req/s)",
                summary.students,
                summary.enrollments,
                summary.renewals,
                summary.payments,
                summary.rewards,
                summary.deactivated,
                summary.requests,
                elapsed.as_secs_f64(),
                summary.requests as f64 / elapsed.as_secs_f64().max(1e-9),
            );
        }
        None => {
            // Bind first: a busy port should fail before a database file is created.
            let listener = tokio::net::TcpListener::bind(cli.listen)
                .await
                .with_context(|| format!("cannot listen on {}", cli.listen))?;
            let db = legacy_monolith::open(&cli.db).await?;
            let addr = listener.local_addr()?;
            tracing::info!(%addr, db = %cli.db.display(), "legacy monolith listening");
            participant::server::serve(listener, legacy_monolith::app(db)).await?;
        }
    }
    Ok(())
}
