use clap::Parser;
use strangler_cli::cli::{self, Cli, Command, EXIT_USAGE};

#[tokio::main]
async fn main() {
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
