//! `strangler sidecar`: the proxy's request path beside one service, with no plan file and
//! no store. Policies come from a policy file holding nothing but `[edge]` sections (the
//! same as a plan's), so one syntax and one validation serve both.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use http::Uri;
use strangler_control::sidecar::{Sidecar, SidecarConfig};

use crate::cli::{CliError, EXIT_USAGE};

/// Run the data plane (authentication, rate limits, request ids, metrics) in front of one
/// service, with no plan file and no store.
#[derive(Debug, clap::Args)]
pub struct SidecarArgs {
    /// The service every request goes to, e.g. http://127.0.0.1:8081.
    #[arg(long)]
    pub upstream: String,
    /// Where clients connect.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where `/metrics` and `/health` are served (none without it).
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    /// The bearer token `/metrics` requires.
    #[arg(long, env = "STRANGLER_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// A TOML file with `[edge.auth]` and `[edge.rate_limit]` sections (as in a plan).
    #[arg(long)]
    pub policy: Option<PathBuf>,
}

fn usage(message: String) -> CliError {
    CliError {
        code: EXIT_USAGE,
        message,
    }
}

/// The sidecar's plan: the upstream as the one (legacy) service, no routes, the policy's
/// `[edge]`.
fn plan(args: &SidecarArgs) -> Result<strangler_plan::Plan, CliError> {
    let upstream = args
        .upstream
        .parse::<Uri>()
        .ok()
        .filter(|u| u.scheme_str() == Some("http") && u.authority().is_some())
        .ok_or_else(|| {
            usage(format!(
                "--upstream must be an http:// URL like http://127.0.0.1:8081 (got `{}`)",
                args.upstream
            ))
        })?;
    let admin = match (args.admin, &args.admin_token) {
        (Some(admin), _) if admin == args.listen && admin.port() != 0 => {
            return Err(usage(format!("--admin {admin} must differ from --listen")));
        }
        (Some(_), None) => {
            return Err(usage(
                "--admin needs --admin-token (or STRANGLER_ADMIN_TOKEN)".into(),
            ));
        }
        (Some(admin), Some(_)) => admin,
        (None, _) => SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    let edge = match &args.policy {
        None => Default::default(),
        Some(file) => strangler_plan::load_policy(file).map_err(|e| usage(e.to_string()))?,
    };
    let text = format!(
        "[proxy]\nlisten = \"{}\"\nadmin_listen = \"{admin}\"\nstate = \"unused.db\"\n\
         [services.app]\nurls = [\"{upstream}\"]\nlegacy = true\n",
        args.listen
    );
    let mut plan = strangler_plan::parse(Path::new("<sidecar flags>"), &text)
        .map_err(|e| usage(e.to_string()))?;
    plan.edge = edge;
    Ok(plan)
}

/// Runs until Ctrl-C or SIGTERM.
pub async fn run(args: SidecarArgs) -> Result<(), CliError> {
    let plan = plan(&args)?;
    let admin = args.admin.zip(args.admin_token.clone());
    let sidecar = Sidecar::start(SidecarConfig { plan, admin })
        .await
        .map_err(|err| CliError::failed(err.to_string()))?;
    eprintln!(
        "strangler: sidecar on http://{} for {}{}; Ctrl-C stops",
        sidecar.listen,
        args.upstream,
        sidecar
            .admin
            .map(|a| format!(" (metrics http://{a}/metrics)"))
            .unwrap_or_default()
    );
    crate::shutdown_signal().await;
    sidecar.stop().await;
    Ok(())
}
