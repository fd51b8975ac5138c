//! The `strangler` program, built inside this package so that end-to-end tests can run (and
//! kill) real proxy processes: `env!("CARGO_BIN_EXE_e2e-strangler")`.

#[tokio::main]
async fn main() {
    strangler_cli::main().await;
}
