//! The `strangler` binary; everything it does is in the library (`strangler_cli::main`).

#[tokio::main]
async fn main() {
    strangler_cli::main().await;
}
