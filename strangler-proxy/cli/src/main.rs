use clap::Parser;
use strangler_cli::cli::{self, Cli, Command};

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    // The proxy logs what it does; a one-shot command prints its result and logs only trouble.
    let default_level = match cli.command {
        Command::Serve | Command::Up => "info",
        _ => "warn",
    };
    strangler_cli::init_tracing(default_level);
    if let Err(err) = cli::run(cli).await {
        if !err.message.is_empty() {
            eprintln!("strangler: {}", err.message);
        }
        std::process::exit(err.code);
    }
}
