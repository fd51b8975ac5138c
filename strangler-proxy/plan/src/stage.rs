//! The migration stages of a route.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a route's traffic goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "lowercase")]
pub enum Stage {
    /// The monolith answers; nothing else is called.
    Legacy,
    /// The monolith answers; the new service gets a compared copy. Until shadow diffing is
    /// built, this serves exactly as `Legacy`.
    Shadow,
    /// `percent` of traffic (sticky by key) goes to the new service.
    Canary { percent: u8 },
    /// The new service answers.
    Cutover,
    /// Cutover, and the legacy path is declared gone: rollback needs `--force`.
    Retired,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Legacy => "legacy",
            Stage::Shadow => "shadow",
            Stage::Canary { .. } => "canary",
            Stage::Cutover => "cutover",
            Stage::Retired => "retired",
        }
    }

    /// Share of requests the new service answers, 0–100.
    pub fn percent_new(self) -> u8 {
        match self {
            Stage::Legacy | Stage::Shadow => 0,
            Stage::Canary { percent } => percent,
            Stage::Cutover | Stage::Retired => 100,
        }
    }

    /// Builds a stage from its stored or written form.
    pub fn from_parts(name: &str, percent: Option<u8>) -> Result<Self, String> {
        match (name, percent) {
            ("legacy", _) => Ok(Stage::Legacy),
            ("shadow", _) => Ok(Stage::Shadow),
            ("cutover", _) => Ok(Stage::Cutover),
            ("retired", _) => Ok(Stage::Retired),
            ("canary", Some(p)) if p <= 100 => Ok(Stage::Canary { percent: p }),
            ("canary", Some(p)) => Err(format!("canary percent {p} is over 100")),
            ("canary", None) => Err("a canary stage needs a percent".to_string()),
            (other, _) => Err(format!(
                "unknown stage `{other}` (legacy, shadow, canary, cutover, retired)"
            )),
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stage::Canary { percent } => write!(f, "canary {percent}%"),
            other => f.write_str(other.name()),
        }
    }
}
