//! What a plan says about judging a route while it moves and moving it step by step:
//! analysis budgets, rollout steps, and who is told.

use std::time::Duration;

/// How a route is judged while it is in shadow, a canary or cutover: a check every
/// `interval`; `failure_limit` failed checks in a row roll it back to legacy. A budget left
/// out is not judged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnalysisSpec {
    pub interval: Duration,
    /// Consecutive failed checks before the route is rolled back.
    pub failure_limit: u32,
    /// 5xx answers the new service caused ÷ the requests it answered.
    pub max_error_rate: Option<f64>,
    /// The new side's p99 latency ÷ the legacy side's (requests each answered).
    pub max_p99_ratio: Option<f64>,
    /// Mismatched ÷ compared (shadow and canary comparisons; noise not counted).
    pub max_mismatch_rate: Option<f64>,
    /// Shadow legs that failed ÷ shadow legs sent.
    pub max_shadow_error_rate: Option<f64>,
    /// Age of the oldest event not yet delivered on a sync link of the route's service.
    pub max_sync_lag: Option<Duration>,
    /// Fewer requests (or comparisons) than this in a check's window: that metric has no
    /// verdict in that check.
    pub min_requests: u64,
}

impl Default for AnalysisSpec {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            failure_limit: 3,
            max_error_rate: Some(0.05),
            max_p99_ratio: Some(3.0),
            max_mismatch_rate: Some(0.01),
            max_shadow_error_rate: Some(0.05),
            max_sync_lag: Some(Duration::from_secs(60)),
            min_requests: 10,
        }
    }
}

/// One step of a progressive rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Send `percent` to the new service; advance once the analysis passed for `hold`.
    Canary { percent: u8, hold: Duration },
    /// Wait for `strangler promote`.
    Pause,
    /// The new service answers everything; the rollout is done.
    Cutover,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Canary { percent, hold } => {
                write!(f, "canary {percent}% for {}s", hold.as_secs())
            }
            Step::Pause => f.write_str("pause"),
            Step::Cutover => f.write_str("cutover"),
        }
    }
}

/// What a webhook is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NotifyEvent {
    /// A route changed stage (by hand, by a rollout step, or by an automatic rollback).
    StageChanged,
    /// A rollout moved to its next step.
    Step,
    /// A rollout waits for `strangler promote`.
    Paused,
    /// A check failed a budget.
    AnalysisFailed,
    /// The analysis rolled a route back.
    RolledBack,
    /// A scheduled verify found a difference the previous verify of the link did not have.
    VerifyDiffered,
}

impl NotifyEvent {
    pub const ALL: [NotifyEvent; 6] = [
        NotifyEvent::StageChanged,
        NotifyEvent::Step,
        NotifyEvent::Paused,
        NotifyEvent::AnalysisFailed,
        NotifyEvent::RolledBack,
        NotifyEvent::VerifyDiffered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::StageChanged => "stage_changed",
            NotifyEvent::Step => "step",
            NotifyEvent::Paused => "paused",
            NotifyEvent::AnalysisFailed => "analysis_failed",
            NotifyEvent::RolledBack => "rolled_back",
            NotifyEvent::VerifyDiffered => "verify_differed",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == name)
    }
}

/// The body a webhook receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyFormat {
    /// `{"event","route","message",...}`.
    Json,
    /// A Slack incoming-webhook message (`{"text": ...}`).
    Slack,
}

/// A webhook (`[[notify]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifySpec {
    pub url: http::Uri,
    /// The events sent (all when the plan lists none).
    pub events: Vec<NotifyEvent>,
    /// Sent as `Authorization: Bearer …` when set.
    pub token: Option<String>,
    pub format: NotifyFormat,
}
