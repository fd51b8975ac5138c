use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// The students service: the students domain extracted from the monolith, over its own database.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7101")]
    listen: SocketAddr,
    /// SQLite database file (created with its directory if missing).
    #[arg(long, default_value = "data/students.db")]
    db: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    participant::server::init_tracing();
    let cli = Cli::parse();
    let service = &students_service::SERVICE;
    let db = service.open(&cli.db)?;
    participant::server::listen_and_serve(cli.listen, service.app(db), "students service").await?;
    Ok(())
}
