use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use enrollment_service::Upstreams;

/// The enrollment service: owns enrollments, orchestrates students, finance and gamification.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7104")]
    listen: SocketAddr,
    /// SQLite database file (created with its directory if missing).
    #[arg(long, default_value = "data/enrollment.db")]
    db: PathBuf,
    /// Base URL of the students service.
    #[arg(long, default_value = "http://127.0.0.1:7101")]
    students_url: String,
    /// Base URL of the finance service.
    #[arg(long, default_value = "http://127.0.0.1:7102")]
    finance_url: String,
    /// Base URL of the gamification service.
    #[arg(long, default_value = "http://127.0.0.1:7103")]
    gamification_url: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    participant::server::init_tracing();
    let cli = Cli::parse();
    let db = enrollment_service::open(&cli.db)?;
    let upstreams = Upstreams {
        students: cli.students_url,
        finance: cli.finance_url,
        gamification: cli.gamification_url,
    };
    let app = enrollment_service::app(db, upstreams)?;
    participant::server::listen_and_serve(cli.listen, app, "enrollment service").await?;
    Ok(())
}
