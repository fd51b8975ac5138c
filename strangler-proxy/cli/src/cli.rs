//! The `strangler` command line: every command reads the plan (`--plan`, `STRANGLER_PLAN`,
//! or `./migration-plan.toml`), fails with a one-line reason and a non-zero exit code.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

use strangler_control::rollout::{self, Move, Outcome, Request, RolloutError};
use strangler_control::status::{RouteStatus, UNMATCHED};
use strangler_plan::{self as plan, DEFAULT_PLAN, Plan, StoreLocation};
use strangler_store::Store;

use crate::shutdown_signal;
use strangler_control::Proxy;
use strangler_plan::Stage;
use strangler_store::{ShadowMetric, now_ms};

/// Exit code of a refused or failed command.
pub const EXIT_FAILED: i32 = 1;
/// Exit code of a command naming a route the plan does not have (and of usage errors).
pub const EXIT_USAGE: i32 = 2;
/// Exit code when a change was made but not every live proxy confirmed it within the bound.
pub const EXIT_UNCONFIRMED: i32 = 3;

/// Strangler-fig migrations: move a monolith to services route by route, with instant rollback.
#[derive(Debug, Parser)]
#[command(
    name = "strangler",
    version,
    after_help = "Examples:
  strangler up                                  the demo stack: monolith, services, proxy, sync
  strangler status                              stage, split, counters and match rate per route
  strangler shadow students                     compare the new service's answers, off the path
  strangler report students --format html --out report.html
  strangler capture export students --out tests/replay/students
  strangler replay tests/replay/students --against http://127.0.0.1:7101 --format junit
  strangler canary students 10 --reason \"first step\"
  strangler rollout start students              walk the route's steps, judged by its analysis
  strangler verify students --repair            both sides' data, entity by entity; fix what differs
  strangler rollback students                   back to legacy on every proxy, now
  strangler rollback --all --state data/strangler.db   (no plan needed)
  strangler store copy --from data/strangler.db --to postgres://user:pass@db/strangler
  strangler completions bash > ~/.local/share/bash-completion/completions/strangler

Exit codes: 0 done, 1 refused or failed, 2 unknown route or bad usage, 3 stored but not
confirmed by every live proxy; verify: 0 the sides match, 1 they differ, 2 it cannot tell."
)]
pub struct Cli {
    /// The migration plan.
    #[arg(long, global = true, env = "STRANGLER_PLAN", default_value = DEFAULT_PLAN)]
    pub plan: PathBuf,
    /// The state store, instead of the plan's `state`. `rollback` needs nothing else: it
    /// works with this when the plan is missing or broken.
    /// A file path, or a PostgreSQL URL (`postgres://user:pass@host:5432/db`).
    #[arg(long, global = true, env = "STRANGLER_STATE", hide_env_values = true)]
    pub state: Option<StoreLocation>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the demo stack: every service with a `run` command, then the proxy.
    Up,
    /// Run the proxy (data plane and admin API) until Ctrl-C or SIGTERM.
    Serve,
    /// Routes, stages, traffic split and counters; the live proxies.
    Status {
        /// Print JSON for scripts (failures too, with the same exit code).
        #[arg(long)]
        json: bool,
    },
    /// Legacy answers; the new service is sent a copy and the answers are compared.
    Shadow {
        /// The route, by its name in the plan.
        route: String,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Send PERCENT of the route's traffic (sticky by key) to the new service.
    Canary {
        /// The route, by its name in the plan.
        route: String,
        /// Share of the route's traffic the new service answers, 0 to 100.
        #[arg(value_parser = clap::value_parser!(u8).range(0..=100))]
        percent: u8,
        /// Go ahead although the cutover gate is closed (the audit log says so).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// The new service answers the route (refused unless its shadow comparisons pass the gate).
    Cutover {
        /// The route, by its name in the plan.
        route: String,
        /// Go ahead although the cutover gate is closed (the audit log says so).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Back to legacy, at once, on every proxy.
    Rollback {
        /// The route to roll back (or --all).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        route: Option<String>,
        /// Roll back every route that is not in legacy.
        #[arg(long)]
        all: bool,
        /// Roll back a retired route too.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Declare a cut-over route's legacy path gone (rollback then needs --force).
    Retire {
        /// The route, by its name in the plan.
        route: String,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Progressive rollouts: start walking a route's `steps`, or see where each rollout is.
    Rollout {
        #[command(subcommand)]
        command: RolloutCommand,
    },
    /// Move a paused rollout on to its next step.
    Promote {
        /// The route, by its name in the plan.
        route: String,
        /// Print JSON for scripts (failures too, with the same exit code).
        #[arg(long)]
        json: bool,
    },
    /// Stop a route's rollout and roll the route back to legacy.
    Abort {
        /// The route, by its name in the plan.
        route: String,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// A route's analysis runs (one per stage entry) with their figures and verdicts; the
    /// gate judges the current one.
    Analysis {
        /// The route, by its name in the plan.
        route: String,
        /// Print JSON for scripts (failures too, with the same exit code).
        #[arg(long)]
        json: bool,
    },
    /// The audit log of stage changes.
    History {
        /// One route, by its name in the plan (default: every route).
        route: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Print JSON for scripts (failures too, with the same exit code).
        #[arg(long)]
        json: bool,
    },
    /// Run the plan's sync links in the foreground (`strangler serve` runs them too), or
    /// show their progress.
    Sync {
        #[command(subcommand)]
        command: Option<SyncCommand>,
    },
    /// Compare both sides of sync links entity by entity: missing, extra and differing
    /// entities per kind; resumable, rate-limited, --repair re-emits the differences. Exits
    /// 0 when the sides match, 1 when they differ, 2 when it cannot tell.
    Verify(crate::verify::VerifyArgs),
    /// Shadow-diff report: match rate, mismatching paths, noise, sample diffs, latency.
    Report {
        /// One route (default: every route).
        route: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        format: ReportFormat,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Compare two JSON (or text) files the way shadow traffic is compared. Exits 0 when
    /// they are the same, 1 when they differ.
    Diff {
        a: PathBuf,
        b: PathBuf,
        #[arg(long, value_enum, default_value = "text")]
        format: DiffFormat,
        /// Translate B (the new service's answer) with this route's `translate` section
        /// (from the plan) before comparing, as shadow does.
        #[arg(long)]
        route: Option<String>,
    },
    /// Print a shell completion script: `strangler completions bash > /etc/bash_completion.d/strangler`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Validate a plan.
    Plan {
        #[command(subcommand)]
        command: PlanCommand,
    },
    /// The state store itself: copy it to another (SQLite to PostgreSQL, say). No plan needed.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Mismatches a route's shadow captured (its `capture` section), as files.
    Capture {
        #[command(subcommand)]
        command: CaptureCommand,
    },
    /// Send every case of a capture bundle again and compare each answer with the
    /// monolith's. Exits 0 when all match, 1 when some differ, 2 on bad usage. No plan needed.
    Replay(crate::replay::Replay),
    /// Run authentication, rate limits, request ids and metrics in front of one service,
    /// with no plan file and no store (policies from --policy, a file of [edge] sections).
    Sidecar(crate::sidecar::SidecarArgs),
}

#[derive(Debug, Subcommand)]
pub enum CaptureCommand {
    /// Write a route's captured cases as a bundle of plain files (one JSON file per case,
    /// and bundle.json with the route's comparison rules), for review and for `replay`.
    /// Into an existing bundle: adds and updates cases, removes none.
    Export {
        /// The route, by its name in the plan.
        route: String,
        /// The bundle's directory (created if needed).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy stages, generation, audit log, analysis runs and checks, rollouts, shadow
    /// results and sync checkpoints from one store to another, in one transaction. Live
    /// proxies and leases are not copied: they register and take leases again.
    Copy {
        /// The store to read: a file path or a PostgreSQL URL.
        #[arg(long)]
        from: StoreLocation,
        /// The store to write: a file path (created if needed) or a PostgreSQL URL (the
        /// database must exist; its tables are created).
        #[arg(long)]
        to: StoreLocation,
        /// Overwrite a target that already holds state.
        #[arg(long)]
        replace: bool,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ReportFormat {
    Text,
    Md,
    Html,
    Json,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DiffFormat {
    /// One line per difference: JSON Pointer, kind, both values.
    Text,
    /// An RFC 6902 patch that turns A into B.
    JsonPatch,
}

#[derive(Debug, Subcommand)]
pub enum SyncCommand {
    /// Each link's checkpoint, lag (events and seconds), counters and last error.
    Status {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Walk the route's `steps` from the first: each canary step holds for its time while
    /// the analysis passes, a pause waits for `promote`, the last step cuts over. A running
    /// proxy's analysis controller does the walking.
    Start {
        /// The route, by its name in the plan; it needs `steps`.
        route: String,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Where each rollout is (or one route's), and its latest checks.
    Status {
        /// One route (default: every rollout).
        route: Option<String>,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum PlanCommand {
    /// Check a plan file (default: --plan) and print a summary.
    Check { file: Option<PathBuf> },
}

#[derive(Debug, Args)]
pub struct ChangeArgs {
    /// Who makes the change (default: $USER).
    #[arg(long)]
    pub actor: Option<String>,
    /// Why, for the audit log.
    #[arg(long)]
    pub reason: Option<String>,
    /// How long to wait for every live proxy to apply the change (e.g. 2s, 500ms).
    #[arg(long, default_value = "2s", value_parser = parse_wait)]
    pub wait: Duration,
    /// Print JSON for scripts (failures too, with the same exit code).
    #[arg(long)]
    pub json: bool,
}

pub(crate) fn parse_wait(raw: &str) -> Result<Duration, String> {
    plan::parse_duration(raw)
        .ok_or_else(|| format!("`{raw}` is not a duration above zero like 2s or 500ms"))
}

/// A failed command: its one-line reason and exit code.
#[derive(Debug)]
pub struct CliError {
    pub code: i32,
    pub message: String,
}

impl CliError {
    pub(crate) fn failed(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_FAILED,
            message: message.into(),
        }
    }
}

impl From<RolloutError> for CliError {
    fn from(err: RolloutError) -> Self {
        let code = match err {
            RolloutError::UnknownRoute { .. } => EXIT_USAGE,
            _ => EXIT_FAILED,
        };
        Self {
            code,
            message: err.to_string(),
        }
    }
}

impl From<strangler_store::StoreError> for CliError {
    fn from(err: strangler_store::StoreError) -> Self {
        Self::failed(err.to_string())
    }
}

fn load_plan(file: &std::path::Path) -> Result<Plan, CliError> {
    plan::load(file).map_err(|err| CliError::failed(err.to_string()))
}

/// Runs a command, printing its output. Under `--json`, a failure is printed as JSON on
/// standard output too (`{"error":{"code","exit","message"}}`), with the same exit code.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let json_out = wants_json(&cli.command);
    match run_command(cli).await {
        Err(err) if json_out && !err.message.is_empty() => {
            let code = match err.code {
                EXIT_USAGE => "usage",
                EXIT_UNCONFIRMED => "unconfirmed",
                _ => "failed",
            };
            crate::say!(
                "{}",
                json!({ "error": { "code": code, "exit": err.code, "message": err.message } })
            );
            Err(CliError {
                code: err.code,
                message: String::new(),
            })
        }
        other => other,
    }
}

fn wants_json(command: &Command) -> bool {
    match command {
        Command::Status { json }
        | Command::History { json, .. }
        | Command::Analysis { json, .. }
        | Command::Promote { json, .. }
        | Command::Sync {
            command: Some(SyncCommand::Status { json }),
        }
        | Command::Rollout {
            command: RolloutCommand::Start { json, .. } | RolloutCommand::Status { json, .. },
        } => *json,
        Command::Shadow { change, .. }
        | Command::Canary { change, .. }
        | Command::Cutover { change, .. }
        | Command::Rollback { change, .. }
        | Command::Retire { change, .. }
        | Command::Abort { change, .. } => change.json,
        Command::Report { format, .. } => matches!(format, ReportFormat::Json),
        Command::Verify(args) => args.json,
        Command::Replay(replay) => replay.format == crate::replay::ReplayFormat::Json,
        _ => false,
    }
}

async fn run_command(cli: Cli) -> Result<(), CliError> {
    let state = cli.state.clone();
    let load = |file: &std::path::Path| -> Result<Plan, CliError> {
        let mut plan = load_plan(file)?;
        if let Some(state) = &state {
            // A last-known table the plan did not place follows the store it stands for.
            let dir = plan
                .file
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .to_path_buf();
            if plan.proxy.last_known == plan::default_last_known(&plan.proxy.state, &dir) {
                plan.proxy.last_known = plan::default_last_known(state, &dir);
            }
            plan.proxy.state = state.clone();
        }
        Ok(plan)
    };
    match cli.command {
        Command::Plan {
            command: PlanCommand::Check { file },
        } => {
            let file = file.unwrap_or(cli.plan);
            let plan = load(&file)?;
            crate::say!(
                "{}: ok ({} services, legacy = {}; {} routes; {} sync links)",
                file.display(),
                plan.services.len(),
                plan.legacy,
                plan.routes.len(),
                plan.sync.len()
            );
            Ok(())
        }
        Command::Diff {
            a,
            b,
            format,
            route,
        } => {
            let plan = match &route {
                Some(_) => Some(load(&cli.plan)?),
                None => None,
            };
            let translate = match (&plan, &route) {
                (Some(plan), Some(route)) => Some(translation_of(plan, route)?),
                _ => None,
            };
            diff_files(&a, &b, format, translate)
        }
        Command::Capture {
            command: CaptureCommand::Export { route, out },
        } => {
            let (written, new) = crate::bundle::export(&load(&cli.plan)?, &route, &out)?;
            crate::say!(
                "{route}: wrote {written} cases ({new} new) to {}; `strangler replay {} --against URL` sends them again",
                out.display(),
                out.display()
            );
            Ok(())
        }
        Command::Replay(replay) => crate::replay::run(replay).await,
        Command::Sidecar(args) => crate::sidecar::run(args).await,
        Command::Store {
            command: StoreCommand::Copy { from, to, replace },
        } => copy_store(&from, &to, replace),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "strangler", &mut out);
            crate::say_raw!("{}", String::from_utf8_lossy(&out));
            Ok(())
        }
        Command::Report { route, format, out } => {
            shadow_report(&load(&cli.plan)?, route, format, out)
        }
        Command::Serve => serve(load(&cli.plan)?).await,
        Command::Verify(args) => crate::verify::run(load(&cli.plan), args).await,
        Command::Sync { command: None } => run_sync(load(&cli.plan)?).await,
        Command::Sync {
            command: Some(SyncCommand::Status { json }),
        } => sync_status(&load(&cli.plan)?, json),
        Command::Up => crate::up::up(load(&cli.plan)?)
            .await
            .map_err(|err| CliError::failed(err.to_string())),
        Command::Status { json } => status(&load(&cli.plan)?, json),
        Command::History { route, limit, json } => history(&load(&cli.plan)?, route, limit, json),
        Command::Analysis { route, json } => analysis(&load(&cli.plan)?, &route, json),
        Command::Rollout {
            command: RolloutCommand::Start { route, json },
        } => rollout_start(&load(&cli.plan)?, &route, json),
        Command::Rollout {
            command: RolloutCommand::Status { route, json },
        } => rollout_status(&load(&cli.plan)?, route.as_deref(), json),
        Command::Promote { route, json } => promote(&load(&cli.plan)?, &route, json),
        Command::Abort { route, mut change } => {
            let plan = load(&cli.plan)?;
            known_route(&plan, &route)?;
            // The audit log says it was an abort, not just a rollback.
            change.reason = Some(match change.reason.take() {
                Some(reason) => format!("rollout aborted: {reason}"),
                None => "rollout aborted".to_string(),
            });
            change_one(&plan, route, Move::Rollback, false, change).await
        }
        Command::Shadow { route, change } => {
            change_one(&load(&cli.plan)?, route, Move::Shadow, false, change).await
        }
        Command::Canary {
            route,
            percent,
            force,
            change,
        } => {
            let plan = load(&cli.plan)?;
            change_one(&plan, route, Move::Canary(percent), force, change).await
        }
        Command::Cutover {
            route,
            force,
            change,
        } => change_one(&load(&cli.plan)?, route, Move::Cutover, force, change).await,
        Command::Retire { route, change } => {
            change_one(&load(&cli.plan)?, route, Move::Retire, false, change).await
        }
        Command::Rollback {
            route,
            all,
            force,
            change,
        } => match (load(&cli.plan), &state) {
            (Ok(plan), _) => {
                if all {
                    rollback_all(&plan, force, change).await
                } else {
                    let route = route.unwrap_or_default();
                    change_one(&plan, route, Move::Rollback, force, change).await
                }
            }
            // The emergency path: the plan is missing or broken, the store is enough.
            (Err(err), Some(state)) => {
                eprintln!(
                    "strangler: {}; rolling back with the store at {} alone",
                    err.message, state
                );
                rollback_from_store(state, route, all, force, change).await
            }
            (Err(err), None) => Err(CliError::failed(format!(
                "{}; to roll back with the store alone, pass --state PATH (or set STRANGLER_STATE)",
                err.message
            ))),
        },
    }
}

/// `strangler store copy`: everything worth keeping, from one store to another.
fn copy_store(from: &StoreLocation, to: &StoreLocation, replace: bool) -> Result<(), CliError> {
    use strangler_store::StoreError;
    // One line, whatever the driver said.
    let one_line = |err: StoreError| {
        let message = match err {
            StoreError::NotEmpty { .. } => format!("{err}; pass --replace to overwrite it"),
            other => other.to_string(),
        };
        CliError::failed(message.split_whitespace().collect::<Vec<_>>().join(" "))
    };
    if from == to {
        return Err(CliError::failed(format!(
            "--from and --to are the same store ({from})"
        )));
    }
    if let Some(path) = from.file()
        && !path.exists()
    {
        return Err(CliError::failed(format!(
            "no state store at {}",
            path.display()
        )));
    }
    let source = strangler_store::open(from).map_err(one_line)?;
    let snapshot = source.export().map_err(one_line)?;
    drop(source);
    let mut target = strangler_store::open(to).map_err(one_line)?;
    target.import(&snapshot, replace).map_err(one_line)?;
    crate::say!(
        "copied {} routes' stages (generation {}), {} audit entries, {} runs, {} checkpoints from {from} to {to}",
        snapshot.count("route_status"),
        snapshot.generation().unwrap_or(1),
        snapshot.count("audit_log"),
        snapshot.count("analysis_runs"),
        snapshot.count("sync_links"),
    );
    Ok(())
}

async fn serve(plan: Plan) -> Result<(), CliError> {
    let proxy = Proxy::start(plan)
        .await
        .map_err(|err| CliError::failed(err.to_string()))?;
    eprintln!(
        "strangler: proxy on http://{} (admin http://{}, token in ${} or the token file); Ctrl-C stops",
        proxy.listen,
        proxy.admin,
        strangler_control::admin::TOKEN_ENV
    );
    shutdown_signal().await;
    proxy.stop().await;
    Ok(())
}

fn shadow_report(
    plan: &Plan,
    route: Option<String>,
    format: ReportFormat,
    out: Option<PathBuf>,
) -> Result<(), CliError> {
    if let Some(route) = &route {
        known_route(plan, route)?;
    }
    let store = strangler_store::open(&plan.proxy.state)?;
    let reports = strangler_report::gather(plan, &*store, route.as_deref())?;
    let dropped = strangler_report::dropped(&*store)?;
    let rendered = match format {
        ReportFormat::Text if dropped > 0 => format!(
            "{dropped} shadow results were dropped (the recorder's queue was full)\n\n{}",
            strangler_report::text(&reports)
        ),
        ReportFormat::Text => strangler_report::text(&reports),
        ReportFormat::Md => strangler_report::markdown(&reports),
        ReportFormat::Html => strangler_report::html(&reports),
        ReportFormat::Json => {
            serde_json::to_string_pretty(&strangler_report::json(&reports)).unwrap_or_default()
        }
    };
    match out {
        Some(path) => std::fs::write(&path, rendered)
            .map_err(|err| CliError::failed(format!("cannot write {}: {err}", path.display()))),
        None => {
            crate::say_raw!("{rendered}");
            Ok(())
        }
    }
}

/// A route's `translate` section, for `strangler diff --route`.
fn translation_of<'p>(
    plan: &'p Plan,
    route: &str,
) -> Result<&'p strangler_plan::TranslateSpec, CliError> {
    known_route(plan, route)?
        .translate
        .as_ref()
        .ok_or_else(|| CliError {
            code: 2,
            message: format!("route {route} has no `translate` section to apply"),
        })
}

fn diff_files(
    a: &std::path::Path,
    b: &std::path::Path,
    format: DiffFormat,
    translate: Option<&strangler_plan::TranslateSpec>,
) -> Result<(), CliError> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|err| CliError {
            code: 2,
            message: format!("cannot read {}: {err}", p.display()),
        })
    };
    let (x, mut y) = (read(a)?, read(b)?);
    if let Some(spec) = translate {
        y = strangler_dataplane::translate::edit(&spec.response, &y)
            .ok_or_else(|| CliError {
                code: 2,
                message: format!(
                    "{} is not JSON: the route's translations cannot apply",
                    b.display()
                ),
            })?
            .to_vec();
    }
    let same = match format {
        DiffFormat::JsonPatch => {
            let parse = |bytes: &[u8], p: &std::path::Path| {
                strangler_diff::depth::parse(bytes).map_err(|err| CliError {
                    code: 2,
                    message: format!("{} is not JSON: {err}", p.display()),
                })
            };
            // Parsed, patched and printed where the stack holds a document as deep as the
            // diff engine takes (MAX_DEPTH levels).
            let patched = strangler_diff::depth::with_deep_stack(|| {
                let patch = strangler_diff::json_patch(&parse(&x, a)?, &parse(&y, b)?);
                Ok::<_, CliError>((
                    serde_json::to_string_pretty(&patch).unwrap_or_default(),
                    patch.is_empty(),
                ))
            })
            .ok_or_else(|| CliError::failed("cannot start a thread to compare the files"))?;
            let (text, same) = patched?;
            crate::say!("{text}");
            same
        }
        DiffFormat::Text => {
            let diffs = strangler_diff::diff_bodies(&x, &y, &strangler_diff::Rules::default());
            if diffs.is_empty() {
                crate::say!("no differences");
            } else {
                crate::say!("{}", strangler_diff::render_text(&diffs));
            }
            diffs.is_empty()
        }
    };
    if same {
        Ok(())
    } else {
        // Like diff(1): 1 means "they differ", the output says how.
        Err(CliError {
            code: 1,
            message: String::new(),
        })
    }
}

async fn run_sync(plan: Plan) -> Result<(), CliError> {
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let relays = strangler_relay::Relays::start(&plan, &shutdown)
        .map_err(|err| CliError::failed(err.to_string()))?;
    if relays.is_empty() {
        return Err(CliError::failed(format!(
            "{} declares no [[sync]] links",
            plan.file.display()
        )));
    }
    eprintln!(
        "strangler: relaying {} sync link(s); `strangler sync status` shows progress; Ctrl-C stops",
        plan.sync.len()
    );
    shutdown_signal().await;
    let _ = stop.send(true);
    relays.join().await;
    Ok(())
}

/// Rows of `sync status`: every plan link, with its stored progress if it ever ran.
fn link_rows(
    plan: &Plan,
    store: &dyn Store,
) -> Result<Vec<strangler_store::LinkProgress>, CliError> {
    let stored = store.links()?;
    Ok(plan
        .sync
        .iter()
        .map(|link| {
            let name = strangler_relay::link_name(link);
            stored.iter().find(|p| p.link == name).cloned().unwrap_or(
                strangler_store::LinkProgress {
                    link: name,
                    ..Default::default()
                },
            )
        })
        .collect())
}

/// A link's last verify in a few words: `passed 5m ago` or `3 differences 10s ago`.
fn verify_summary(record: Option<&strangler_store::VerifyRecord>) -> String {
    let Some(v) = record else {
        return "never verified".to_string();
    };
    let ago = relative(v.finished_ms, now_ms());
    let partial = if v.complete { "" } else { ", some kinds" };
    if v.passed {
        format!("verified {ago}: {} equal{partial}", v.compared)
    } else {
        format!(
            "verified {ago}: {} of {} differ{partial}",
            v.missing + v.extra + v.differing,
            v.compared
        )
    }
}

/// A moment relative to now, in a few words: `5m ago`, `in 2h`.
fn relative(at_ms: i64, now: i64) -> String {
    let words = |ms: i64| match ms / 1000 {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s => format!("{}h", s / 3600),
    };
    if at_ms <= now {
        format!("{} ago", words(now - at_ms))
    } else {
        format!("in {}", words(at_ms - now))
    }
}

/// The plan's `[[schedule]]`s: the last run's outcome and the next due time.
fn print_schedules(plan: &Plan, verifies: &[strangler_store::VerifyRecord]) {
    let now = now_ms();
    let statuses = strangler_control::schedule::statuses(plan, verifies, now);
    if statuses.is_empty() {
        return;
    }
    crate::say!("\nscheduled verifies (run by the proxy holding the schedule lease):");
    for s in &statuses {
        let last = match (s.last_started_ms, s.passed) {
            (Some(at), Some(true)) => {
                format!("last {}: {} equal", relative(at, now), s.compared)
            }
            (Some(at), _) => format!(
                "last {}: {} of {} differ",
                relative(at, now),
                s.differences,
                s.compared
            ),
            _ => "never run".to_string(),
        };
        crate::say!(
            "  {} {}: {last}; next {}",
            s.verify,
            s.when,
            if s.next_due_ms <= now {
                "due now".to_string()
            } else {
                relative(s.next_due_ms, now)
            }
        );
    }
}

fn print_links(rows: &[strangler_store::LinkProgress], verifies: &[strangler_store::VerifyRecord]) {
    crate::say!(
        "{:<28} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9}  LAST ERROR",
        "LINK",
        "CHECKPOINT",
        "LAG EVTS",
        "LAG S",
        "APPLIED",
        "SKIPPED",
        "REJECTED"
    );
    for p in rows {
        crate::say!(
            "{:<28} {:>10} {:>10} {:>9.1} {:>9} {:>9} {:>9}  {}",
            p.link,
            p.checkpoint,
            p.lag_events(),
            p.lag_seconds,
            p.applied,
            p.skipped,
            p.rejected,
            p.last_error.as_deref().unwrap_or("-")
        );
    }
    for p in rows {
        crate::say!(
            "  {}: {}",
            p.link,
            verify_summary(verifies.iter().find(|v| v.link == p.link))
        );
    }
    for p in rows.iter().filter(|p| p.rejected > 0) {
        crate::say!(
            "  {}: {} event(s) parked by the target; last: {}",
            p.link,
            p.rejected,
            p.last_rejection.as_deref().unwrap_or("-")
        );
    }
}

fn sync_status(plan: &Plan, json_out: bool) -> Result<(), CliError> {
    let store = strangler_store::open(&plan.proxy.state)?;
    let rows = link_rows(plan, &*store)?;
    let verifies = store.last_verifies()?;
    if json_out {
        let rows: Vec<Value> = rows
            .iter()
            .map(|p| {
                json!({
                    "link": p.link, "checkpoint": p.checkpoint, "head": p.head,
                    "lag_events": p.lag_events(), "lag_seconds": p.lag_seconds,
                    "applied": p.applied, "duplicates": p.duplicates, "skipped": p.skipped,
                    "rejected": p.rejected, "last_rejection": p.last_rejection,
                    "last_error": p.last_error, "updated_ms": p.updated_ms,
                    "last_verify": verifies.iter().find(|v| v.link == p.link),
                })
            })
            .collect();
        crate::say!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
    } else if rows.is_empty() {
        crate::say!("{} declares no [[sync]] links", plan.file.display());
    } else {
        print_links(&rows, &verifies);
        print_schedules(plan, &verifies);
    }
    Ok(())
}

fn actor(args: &ChangeArgs) -> String {
    args.actor
        .clone()
        .filter(|a| !a.trim().is_empty())
        .unwrap_or_else(login_name)
}

/// `$USER`, or `$LOGNAME`, or the name the system gives this process's user.
fn login_name() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|a| !a.trim().is_empty()))
        .or_else(|| {
            let out = std::process::Command::new("id").arg("-un").output().ok()?;
            let name = String::from_utf8(out.stdout).ok()?.trim().to_string();
            (!name.is_empty()).then_some(name)
        })
        .unwrap_or_else(|| "unknown".to_string())
}

async fn change_one(
    plan: &Plan,
    route: String,
    wanted: Move,
    force: bool,
    args: ChangeArgs,
) -> Result<(), CliError> {
    let request = Request {
        route,
        wanted,
        force,
        actor: actor(&args),
        reason: args.reason.clone(),
        wait: args.wait,
    };
    let outcome = rollout::change_stage(plan, &request).await?;
    report(&request.route, &outcome, args.json)
}

fn report(route: &str, outcome: &Outcome, json_out: bool) -> Result<(), CliError> {
    match outcome {
        Outcome::Unchanged { stage } => {
            if json_out {
                crate::say!(
                    "{}",
                    json!({ "route": route, "changed": false, "stage": stage.to_string() })
                );
            } else {
                crate::say!("{route} is already in {stage}; nothing changed");
            }
            Ok(())
        }
        Outcome::Changed {
            change,
            propagation,
            forced,
        } => {
            let ms = propagation.elapsed.as_secs_f64() * 1000.0;
            if json_out {
                crate::say!(
                    "{}",
                    json!({
                        "route": route, "changed": true, "from": change.from.to_string(), "to": change.to.to_string(),
                        "forced": forced, "generation": change.generation,
                        "applied_by": propagation.applied.iter().map(|p| &p.id).collect::<Vec<_>>(),
                        "pending": propagation.pending.iter().map(|p| &p.id).collect::<Vec<_>>(),
                        "elapsed_ms": ms,
                    })
                );
            } else {
                let shadow_note = if change.to == Stage::Shadow {
                    " (the monolith answers; copies go to the service and are compared: see `strangler report`)"
                } else {
                    ""
                };
                let applied = match (propagation.applied.len(), propagation.pending.len()) {
                    (0, 0) => {
                        "no proxy is running on this store; it applies when one starts".to_string()
                    }
                    (n, 0) => format!(
                        "applied by {n} prox{} in {ms:.0} ms",
                        if n == 1 { "y" } else { "ies" }
                    ),
                    (n, _) => format!("applied by {n} prox{}", if n == 1 { "y" } else { "ies" }),
                };
                crate::say!(
                    "{route}: {} → {}{shadow_note}; {applied}",
                    change.from,
                    change.to
                );
            }
            if propagation.pending.is_empty() {
                Ok(())
            } else {
                let names: Vec<String> = propagation
                    .pending
                    .iter()
                    .map(|p| format!("{} (pid {}, {})", p.id, p.pid, p.listen))
                    .collect();
                Err(CliError {
                    code: EXIT_UNCONFIRMED,
                    message: format!(
                        "{route}: the change is stored but not confirmed within {ms:.0} ms by: {}",
                        names.join(", ")
                    ),
                })
            }
        }
    }
}

/// `rollback` without a plan: the route's (or every route's) stage as the store has it.
async fn rollback_from_store(
    state: &StoreLocation,
    route: Option<String>,
    all: bool,
    force: bool,
    args: ChangeArgs,
) -> Result<(), CliError> {
    let routes: Vec<String> = if all {
        let store = strangler_store::open(state)?;
        let mut routes: Vec<String> = store
            .stages()?
            .into_iter()
            .filter(|(_, stage)| *stage != Stage::Legacy)
            .map(|(route, _)| route)
            .collect();
        routes.sort();
        routes
    } else {
        vec![route.unwrap_or_default()]
    };
    if routes.is_empty() && !args.json {
        crate::say!("every route in the store is already in legacy; nothing changed");
    }
    let mut first_error = None;
    for route in routes {
        let request = Request {
            route: route.clone(),
            wanted: Move::Rollback,
            force,
            actor: actor(&args),
            reason: args.reason.clone(),
            wait: args.wait,
        };
        let result = match rollout::rollback_from_store(state, &request).await {
            Ok(outcome) => report(&route, &outcome, args.json),
            Err(err) => Err(CliError::from(err)),
        };
        if let Err(err) = result {
            if !args.json {
                eprintln!("strangler: {}", err.message);
            }
            first_error.get_or_insert(err);
        }
    }
    first_error.map_or(Ok(()), Err)
}

async fn rollback_all(plan: &Plan, force: bool, args: ChangeArgs) -> Result<(), CliError> {
    let store = strangler_store::open(&plan.proxy.state)?;
    let stages = store.stages()?;
    drop(store);
    let mut first_error = None;
    let mut any = false;
    for route in &plan.routes {
        let stage = stages
            .get(&route.name)
            .copied()
            .unwrap_or(route.initial_stage);
        if stage == Stage::Legacy {
            continue;
        }
        any = true;
        let request = Request {
            route: route.name.clone(),
            wanted: Move::Rollback,
            force,
            actor: actor(&args),
            reason: args.reason.clone(),
            wait: args.wait,
        };
        let result = match rollout::change_stage(plan, &request).await {
            Ok(outcome) => report(&route.name, &outcome, args.json),
            Err(err) => Err(CliError::from(err)),
        };
        if let Err(err) = result {
            eprintln!("strangler: {}", err.message);
            first_error.get_or_insert(err);
        }
    }
    if !any && !args.json {
        crate::say!("every route is already in legacy; nothing changed");
    }
    first_error.map_or(Ok(()), Err)
}

fn status(plan: &Plan, json_out: bool) -> Result<(), CliError> {
    let store = strangler_store::open(&plan.proxy.state)?;
    let stages = store.stages()?;
    let now = now_ms();
    let proxies: Vec<_> = store
        .proxies()?
        .into_iter()
        .filter(|p| p.is_live(now))
        .collect();
    let ids: Vec<String> = proxies.iter().map(|p| p.id.clone()).collect();
    let counters = store.counters(&ids)?;
    let generation = store.generation()?;
    let verifies = store.last_verifies()?;
    let mut rows: Vec<RouteStatus> = Vec::new();
    for route in &plan.routes {
        let stage = stages
            .get(&route.name)
            .copied()
            .unwrap_or(route.initial_stage);
        let c = counters.get(&route.name).cloned().unwrap_or_default();
        let shadow = store.shadow_summary(&route.name)?;
        rows.push(
            RouteStatus::new(&route.name, &route.service, stage, &c).with_shadow(
                shadow.count(ShadowMetric::Compared),
                shadow.mismatch_rate().map(|m| 1.0 - m),
            ),
        );
    }
    let unmatched = counters.get(UNMATCHED).cloned().unwrap_or_default();
    rows.push(RouteStatus::new(
        UNMATCHED,
        &plan.legacy,
        Stage::Legacy,
        &unmatched,
    ));
    if json_out {
        let proxies: Vec<Value> = proxies
            .iter()
            .map(|p| {
                json!({
                    "id": p.id, "pid": p.pid, "listen": p.listen, "admin": p.admin,
                    "generation": p.generation, "current": p.generation >= generation,
                    "heartbeat_ms_ago": now - p.heartbeat_ms, "applied_at_ms": p.applied_at_ms, "started_at": p.started_at,
                })
            })
            .collect();
        crate::say!(
            "{}",
            serde_json::to_string_pretty(
                &json!({ "generation": generation, "routes": rows, "proxies": proxies,
                         "schedules": strangler_control::schedule::statuses(plan, &verifies, now) })
            )
            .unwrap_or_default()
        );
        return Ok(());
    }
    crate::say!(
        "{:<16} {:<14} {:<9} {:>14} {:>10} {:>8} {:>16} {:>16}",
        "ROUTE",
        "SERVICE",
        "STAGE",
        "LEGACY/NEW %",
        "REQUESTS",
        "ERRORS",
        "SERVED LEG/NEW",
        "MATCH (COMPARED)"
    );
    for row in &rows {
        let p = row.percent_new;
        let matched = match (row.match_rate.flatten(), row.compared) {
            (Some(r), Some(compared)) => format!("{:.2} % ({compared})", r * 100.0),
            _ => "-".to_string(),
        };
        crate::say!(
            "{:<16} {:<14} {:<9} {:>14} {:>10} {:>8} {:>16} {:>16}",
            row.route,
            row.service,
            row.stage,
            format!("{}/{}", 100 - p, p),
            row.requests,
            row.errors,
            format!("{}/{}", row.served_legacy, row.served_new),
            matched,
        );
    }
    print_schedules(plan, &verifies);
    if proxies.is_empty() {
        crate::say!(
            "\nno live proxy on {} (start one with `strangler serve`)",
            plan.proxy.state
        );
    } else {
        crate::say!("\nlive proxies (store generation {generation}):");
        for p in &proxies {
            crate::say!(
                "  {}  pid {}  {}  admin {}  generation {}{}  heartbeat {} ms ago",
                p.id,
                p.pid,
                p.listen,
                p.admin,
                p.generation,
                if p.generation >= generation {
                    ""
                } else {
                    " (behind)"
                },
                now - p.heartbeat_ms
            );
        }
    }
    Ok(())
}

fn history(plan: &Plan, route: Option<String>, limit: u32, json_out: bool) -> Result<(), CliError> {
    if let Some(route) = &route {
        known_route(plan, route)?;
    }
    let store = strangler_store::open(&plan.proxy.state)?;
    let entries = store.history(route.as_deref(), limit)?;
    if json_out {
        crate::say!(
            "{}",
            serde_json::to_string_pretty(&entries).unwrap_or_default()
        );
        return Ok(());
    }
    if entries.is_empty() {
        crate::say!("no stage changes yet");
    }
    for e in &entries {
        crate::say!(
            "{}  {:<14} {} → {}  by {}{}{}",
            e.at,
            e.route,
            e.from,
            e.to,
            e.actor,
            if e.forced { " (forced)" } else { "" },
            e.reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

fn analysis(plan: &Plan, route: &str, json_out: bool) -> Result<(), CliError> {
    known_route(plan, route)?;
    let store = strangler_store::open(&plan.proxy.state)?;
    let runs = store.runs(route)?;
    let match_rate = |r: &strangler_store::AnalysisRun| {
        let compared = r.count(ShadowMetric::Compared);
        (compared > 0).then(|| 1.0 - r.count(ShadowMetric::Mismatched) as f64 / compared as f64)
    };
    if json_out {
        let rows: Vec<Value> = runs
            .iter()
            .map(|r| {
                let mut row = serde_json::to_value(r).unwrap_or(Value::Null);
                row["current"] = json!(r.ended_at.is_none());
                row["match_rate"] = json!(match_rate(r));
                row
            })
            .collect();
        crate::say!(
            "{}",
            serde_json::to_string_pretty(&json!({ "route": route, "runs": rows }))
                .unwrap_or_default()
        );
        return Ok(());
    }
    if runs.is_empty() {
        crate::say!(
            "{route} has no analysis run yet (one starts when it enters shadow, a canary step or cutover)"
        );
        return Ok(());
    }
    crate::say!(
        "{:>5}  {:<16} {:<24} {:<24} {:>8} {:>10} {:>7} {:>9}  VERDICT",
        "RUN",
        "STAGE",
        "STARTED",
        "ENDED",
        "COMPARED",
        "MISMATCHED",
        "ERRORS",
        "MATCH"
    );
    for r in &runs {
        crate::say!(
            "{:>5}  {:<16} {:<24} {:<24} {:>8} {:>10} {:>7} {:>9}  {}",
            r.id,
            r.stage,
            r.started_at,
            r.ended_at.as_deref().unwrap_or("(current)"),
            r.count(ShadowMetric::Compared),
            r.count(ShadowMetric::Mismatched),
            r.count(ShadowMetric::Errors),
            match_rate(r).map_or_else(|| "-".to_string(), |m| format!("{:.2} %", m * 100.0)),
            r.verdict.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

pub(crate) fn known_route<'p>(
    plan: &'p Plan,
    route: &str,
) -> Result<&'p strangler_plan::RouteSpec, CliError> {
    plan.routes.iter().find(|r| r.name == route).ok_or_else(|| {
        RolloutError::UnknownRoute {
            route: route.to_string(),
            known: plan::route_names(plan),
        }
        .into()
    })
}

fn rollout_start(plan: &Plan, route: &str, json_out: bool) -> Result<(), CliError> {
    let spec = known_route(plan, route)?;
    if spec.steps.is_empty() {
        return Err(CliError::failed(format!(
            "{route} has no steps in {}: add steps = [{{ canary = 10, for = \"10m\" }}, {{ cutover = true }}] to the route",
            plan.file.display()
        )));
    }
    let store = strangler_store::open(&plan.proxy.state)?;
    if let Some(active) = store
        .rollouts()?
        .into_iter()
        .find(|r| r.route == route && r.state.is_active())
    {
        return Err(CliError::failed(format!(
            "{route} is already rolling out (step {}: {}); `strangler abort {route}` stops it",
            active.step + 1,
            active.message
        )));
    }
    let record = strangler_store::RolloutRecord {
        route: route.to_string(),
        step: 0,
        state: strangler_store::RolloutState::Running,
        step_started_ms: now_ms(),
        updated_at: strangler_store::timestamp(now_ms()),
        message: "started".to_string(),
    };
    store.set_rollout(&record)?;
    let steps: Vec<String> = spec.steps.iter().map(|s| s.to_string()).collect();
    if json_out {
        crate::say!(
            "{}",
            json!({ "route": route, "started": true, "steps": steps })
        );
    } else {
        crate::say!(
            "{route}: rollout started: {}; a running proxy walks it (`strangler rollout status {route}`)",
            steps.join(" → ")
        );
    }
    Ok(())
}

fn rollout_status(plan: &Plan, route: Option<&str>, json_out: bool) -> Result<(), CliError> {
    if let Some(route) = route {
        known_route(plan, route)?;
    }
    let store = strangler_store::open(&plan.proxy.state)?;
    let rollouts: Vec<_> = store
        .rollouts()?
        .into_iter()
        .filter(|r| route.is_none_or(|name| r.route == name))
        .collect();
    let mut rows = Vec::new();
    for r in &rollouts {
        let steps = plan
            .routes
            .iter()
            .find(|s| s.name == r.route)
            .map(|s| s.steps.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap_or_default();
        let checks = store.checks(&r.route, 10)?;
        rows.push((r, steps, checks));
    }
    if json_out {
        let rows: Vec<Value> = rows
            .iter()
            .map(|(r, steps, checks)| {
                json!({ "route": r.route, "state": r.state, "step": r.step + 1, "steps": steps,
                        "step_started_ms": r.step_started_ms, "updated_at": r.updated_at,
                        "message": r.message, "checks": checks })
            })
            .collect();
        crate::say!(
            "{}",
            serde_json::to_string_pretty(&json!({ "rollouts": rows })).unwrap_or_default()
        );
        return Ok(());
    }
    if rows.is_empty() {
        crate::say!("no rollout yet (`strangler rollout start ROUTE` walks a route's steps)");
    }
    for (r, steps, checks) in &rows {
        crate::say!(
            "{}: {} at step {} of {} ({}): {}",
            r.route,
            r.state.as_str(),
            (r.step + 1).min(steps.len()),
            steps.len(),
            steps.get(r.step).map_or("-", String::as_str),
            r.message
        );
        for c in checks.iter().rev().take(5) {
            crate::say!(
                "  {}  {:<18} {:>10} (budget {}) {}  {}",
                c.at,
                c.metric,
                c.value
                    .map_or_else(|| "-".to_string(), |v| format!("{v:.4}")),
                c.budget,
                match c.passed {
                    Some(true) => "pass",
                    Some(false) => "FAIL",
                    None => "no verdict",
                },
                c.detail
            );
        }
    }
    Ok(())
}

fn promote(plan: &Plan, route: &str, json_out: bool) -> Result<(), CliError> {
    known_route(plan, route)?;
    let store = strangler_store::open(&plan.proxy.state)?;
    let Some(mut r) = store
        .rollouts()?
        .into_iter()
        .find(|r| r.route == route && r.state.is_active())
    else {
        return Err(CliError::failed(format!(
            "{route} has no rollout running (`strangler rollout start {route}`)"
        )));
    };
    if r.state != strangler_store::RolloutState::Paused {
        return Err(CliError::failed(format!(
            "{route}'s rollout is not paused (step {}: {})",
            r.step + 1,
            r.message
        )));
    }
    r.step += 1;
    r.state = strangler_store::RolloutState::Running;
    r.step_started_ms = now_ms();
    r.updated_at = strangler_store::timestamp(now_ms());
    r.message = format!("promoted past the pause by {}", login_name());
    store.set_rollout(&r)?;
    if json_out {
        crate::say!(
            "{}",
            json!({ "route": route, "promoted": true, "step": r.step + 1 })
        );
    } else {
        crate::say!(
            "{route}: promoted; the rollout goes on with step {}",
            r.step + 1
        );
    }
    Ok(())
}
