//! `strangler verify LINK|ROUTE`: compares both sides of sync links entity by entity (the
//! relay crate's `verify`), shows progress, prints the report, and exits 0 when the sides
//! match, 1 when they differ, 2 when it could not tell (usage, plan, store, a side).

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use strangler_plan::Plan;
use strangler_relay::verify::{
    self, Finding, KindReport, Observer, Options, Progress, Side, VerifyError, WalkReport,
};

use crate::cli::{CliError, EXIT_USAGE};

/// Exit code of a verify interrupted by Ctrl-C or SIGTERM (its cursors are kept).
const EXIT_INTERRUPTED: i32 = 130;
/// Plain progress lines (not on a terminal) at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// What `strangler verify` was given on its command line.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// A sync link (`legacy->students`) or a route (every link to or from its service).
    pub target: String,
    /// Only these kinds: `student`, `student.*` or `*`, comma-separated or repeated.
    #[arg(long, value_delimiter = ',')]
    pub types: Vec<String>,
    /// Print the report as JSON for scripts (failures too, with the same exit code).
    #[arg(long)]
    pub json: bool,
    /// Compare at most N entities per second (`500/s` or `500`; default: no limit).
    #[arg(long, value_name = "N/s")]
    pub rate: Option<String>,
    /// Entities read per request from each side (1 to 5000).
    #[arg(long, default_value_t = verify::DEFAULT_PAGE)]
    pub batch: u32,
    /// Start from the first key, forgetting where an interrupted verify stopped.
    #[arg(long)]
    pub restart: bool,
    /// Re-emit each difference through the sync path: the newer version wins.
    #[arg(long)]
    pub repair: bool,
    /// With --repair: the side that wins a tie, `source` (the default) or `target`.
    #[arg(long, value_name = "SIDE", requires = "repair")]
    pub prefer: Option<String>,
}

fn usage(message: impl Into<String>) -> CliError {
    CliError {
        code: EXIT_USAGE,
        message: message.into(),
    }
}

/// `500/s` or `500`, above zero.
fn parse_rate(raw: &str) -> Result<u32, CliError> {
    raw.trim()
        .trim_end_matches("/s")
        .parse::<u32>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            usage(format!(
                "--rate {raw}: expected entities per second above zero, like 500/s"
            ))
        })
}

fn options(args: &VerifyArgs) -> Result<Options, CliError> {
    let rate = args.rate.as_deref().map(parse_rate).transpose()?;
    if !(1..=verify::MAX_PAGE).contains(&args.batch) {
        return Err(usage(format!(
            "--batch {}: expected 1 to {}",
            args.batch,
            verify::MAX_PAGE
        )));
    }
    let prefer = match args.prefer.as_deref() {
        None | Some("source") => Side::Source,
        Some("target") => Side::Target,
        Some(other) => {
            return Err(usage(format!(
                "--prefer {other}: expected `source` or `target`"
            )));
        }
    };
    Ok(Options {
        types: args
            .types
            .iter()
            .filter(|t| !t.is_empty())
            .cloned()
            .collect(),
        rate,
        page: args.batch,
        restart: args.restart,
        repair: args.repair.then_some(prefer),
    })
}

/// One line, for the command's error.
fn failed(err: VerifyError) -> CliError {
    usage(
        err.to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// Runs `strangler verify`.
pub async fn run(plan: Result<Plan, CliError>, args: VerifyArgs) -> Result<(), CliError> {
    let plan = plan.map_err(|err| usage(err.message))?;
    let options = options(&args)?;
    let walks = verify::plan_walks(&plan, &args.target, &options.types).map_err(failed)?;
    let store = strangler_store::open(&plan.proxy.state)
        .map_err(|err| usage(format!("cannot open the state store: {err}")))?;
    let store: strangler_relay::SharedStore = Arc::new(Mutex::new(store));
    let observer = Shown::new(args.json);
    let walked = verify::run_walks(&plan, &walks, &store, &options, &observer);
    let reports = tokio::select! {
        reports = walked => reports.map_err(failed)?,
        () = crate::shutdown_signal() => {
            observer.finish();
            return Err(CliError {
                code: EXIT_INTERRUPTED,
                message: format!(
                    "verify of {} interrupted; run it again to continue where it stopped (--restart starts over)",
                    args.target
                ),
            });
        }
    };
    let passed = reports.iter().all(|r| r.passed);
    if args.json {
        crate::say!(
            "{}",
            serde_json::to_string_pretty(&json!({ "passed": passed, "walks": reports }))
                .unwrap_or_default()
        );
    } else {
        for report in &reports {
            print_walk(report, options.repair.is_some());
        }
    }
    if passed {
        Ok(())
    } else {
        Err(CliError {
            code: crate::cli::EXIT_FAILED,
            message: String::new(),
        })
    }
}

/// Progress on standard error: a bar on a terminal, a line a second otherwise; nothing
/// but resumptions under `--json`.
struct Shown {
    bar: Option<indicatif::ProgressBar>,
    quiet: bool,
    last_line: Mutex<Option<Instant>>,
}

impl Shown {
    fn new(json: bool) -> Self {
        let bar = (!json && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self {
            bar,
            quiet: json,
            last_line: Mutex::new(None),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Observer for Shown {
    fn resumed(&self, walk: &str, kind: &str, after: &str, compared: i64) {
        let line = format!(
            "resumed {walk} {kind} after key {after:?} ({compared} entities compared before it was interrupted; --restart starts over)"
        );
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn walked(&self, _report: &WalkReport) {
        self.finish();
    }

    fn progress(&self, p: &Progress<'_>) {
        let rate = p.this_run as f64 / p.elapsed.as_secs_f64().max(0.001);
        let line = format!(
            "{} {}: {} compared ({rate:.0} entities/s)",
            p.walk, p.kind, p.compared
        );
        if let Some(bar) = &self.bar {
            bar.set_message(line);
            return;
        }
        if self.quiet {
            return;
        }
        let mut last = self.last_line.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|at| at.elapsed() >= PROGRESS_EVERY) {
            *last = Some(Instant::now());
            eprintln!("{line}");
        }
    }
}

fn print_walk(report: &WalkReport, repairing: bool) {
    let resumed = if report.resumed { " (resumed)" } else { "" };
    crate::say!(
        "{}: {} → {}{resumed}",
        report.links.join(", "),
        report.source,
        report.target
    );
    crate::say!(
        "  {:<14} {:>10} {:>9} {:>9} {:>10} {:>10}",
        "KIND",
        "COMPARED",
        "MISSING",
        "EXTRA",
        "DIFFERING",
        "IN FLIGHT"
    );
    for k in &report.kinds {
        crate::say!(
            "  {:<14} {:>10} {:>9} {:>9} {:>10} {:>10}",
            k.kind,
            k.compared,
            k.missing,
            k.extra,
            k.differing,
            k.in_flight
        );
    }
    for k in &report.kinds {
        print_kind(report, k);
    }
    let differences: i64 = report.total(KindReport::differences);
    let compared = report.total(|k| k.compared);
    let in_flight = report.total(|k| k.in_flight);
    if differences == 0 {
        crate::say!(
            "the sides match: {compared} entities compared ({in_flight} were in flight and settled)"
        );
        return;
    }
    crate::say!(
        "the sides differ: {differences} of {compared} entities ({} missing on {}, {} extra on {}, {} differing)",
        report.total(|k| k.missing),
        report.target,
        report.total(|k| k.extra),
        report.target,
        report.total(|k| k.differing)
    );
    if repairing {
        crate::say!(
            "repaired {}, not repaired {}: run verify again to confirm",
            report.total(|k| k.repaired),
            report.total(|k| k.not_repaired)
        );
    } else {
        crate::say!("--repair re-emits each difference through the sync path");
    }
}

fn print_kind(report: &WalkReport, k: &KindReport) {
    if k.paths.is_empty() && k.samples.is_empty() && k.repairs.is_empty() {
        return;
    }
    if !k.paths.is_empty() {
        let mut paths: Vec<(&String, &i64)> = k.paths.iter().collect();
        paths.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let listed: Vec<String> = paths.iter().map(|(p, n)| format!("{p} ×{n}")).collect();
        crate::say!("  {} differing paths: {}", k.kind, listed.join(", "));
    }
    let version = |h: &Option<verify::walk::Held>| h.as_ref().map_or(0, |h| h.version);
    for s in &k.samples {
        match s.finding {
            Finding::Missing => crate::say!(
                "  {} {}: missing on {} ({} has version {})",
                k.kind,
                s.key,
                report.target,
                report.source,
                version(&s.source)
            ),
            Finding::Extra => crate::say!(
                "  {} {}: extra on {} (version {}; {} has none)",
                k.kind,
                s.key,
                report.target,
                version(&s.target),
                report.source
            ),
            Finding::Differing => {
                let changes: Vec<String> = s
                    .differences
                    .iter()
                    .map(|d| {
                        let show = |v: &Option<serde_json::Value>| {
                            v.as_ref().map_or("-".to_string(), |v| v.to_string())
                        };
                        format!("{} {} → {}", d.path, show(&d.left), show(&d.right))
                    })
                    .collect();
                crate::say!(
                    "  {} {}: differs ({} version {}, {} version {}){}{}",
                    k.kind,
                    s.key,
                    report.source,
                    version(&s.source),
                    report.target,
                    version(&s.target),
                    if changes.is_empty() { "" } else { ": " },
                    changes.join("; ")
                );
            }
        }
    }
    for note in &k.repairs {
        crate::say!(
            "  {} {} {}: {}",
            if note.repaired {
                "repaired"
            } else {
                "not repaired"
            },
            k.kind,
            note.key,
            note.what
        );
    }
    let unlisted = k.repaired + k.not_repaired - k.repairs.len() as i64;
    if unlisted > 0 {
        crate::say!("  … and {unlisted} more repair notes for {}", k.kind);
    }
}
