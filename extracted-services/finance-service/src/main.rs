use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// The finance service: the finance domain extracted from the monolith, over its own database.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7102")]
    listen: SocketAddr,
    /// SQLite database file (created with its directory if missing).
    #[arg(long, default_value = "data/finance.db")]
    db: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    participant::server::init_tracing();
    let cli = Cli::parse();
    let service = &finance_service::SERVICE;
    let db = service.open(&cli.db)?;
    participant::server::listen_and_serve(cli.listen, service.app(db), "finance service").await?;
    Ok(())
}
