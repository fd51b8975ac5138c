//! `--repair`: what a difference needs, and sending it.
//!
//! The winning state is re-emitted as an event `KIND.repaired` whose version is one above
//! both sides' and whose origin is the winning side, applied first by the winner (its state
//! does not change, its version moves up) and then by the other side, through each side's
//! event intake. Afterwards both hold the same state at the same version, so the next
//! ordinary write on either side (one version higher) is applied on the other, and the
//! relay carrying the winner's event later is acknowledged as a duplicate.
//!
//! Who wins: the newer version; on a tie (a change made behind the outbox's back), the
//! preferred side, the link's source unless `--prefer target`. An entity only one side holds
//! follows the preferred side too: copied to the other, or, when the preferred side lacks
//! it, left alone and reported, because the participants have no delete event.

use serde::{Deserialize, Serialize};
use strangler_feed::{ApplyReport, Entity, Event};
use strangler_store::{now_ms, timestamp};

use super::walk::{Finding, Found};
use super::{SnapshotReader, VerifyError};

/// A side of the link, as `--prefer` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Source,
    Target,
}

/// What `--repair` did about one difference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepairNote {
    pub key: String,
    pub finding: Finding,
    pub repaired: bool,
    /// In words: what was sent where, or why nothing was.
    pub what: String,
}

/// Repairs one difference between `source` and `target`.
pub(crate) async fn repair<S: SnapshotReader, T: SnapshotReader>(
    source: &S,
    target: &T,
    kind: &str,
    found: &Found,
    prefer: Side,
) -> Result<RepairNote, VerifyError> {
    let note = |repaired: bool, what: String| RepairNote {
        key: found.key.clone(),
        finding: found.finding,
        repaired,
        what,
    };
    let version = |e: &Option<Entity>| e.as_ref().map_or(0, |e| e.version);
    let winner = match (found.finding, prefer) {
        (Finding::Differing, _) if version(&found.source) > version(&found.target) => Side::Source,
        (Finding::Differing, _) if version(&found.target) > version(&found.source) => Side::Target,
        (Finding::Differing, prefer) => prefer,
        (Finding::Missing, Side::Source) => Side::Source,
        (Finding::Extra, Side::Target) => Side::Target,
        (Finding::Missing, Side::Target) => {
            return Ok(note(
                false,
                format!(
                    "not repairable: {} has it and {} does not, and removing it from {} needs a delete event, which participants do not have",
                    source.name(),
                    target.name(),
                    source.name()
                ),
            ));
        }
        (Finding::Extra, Side::Source) => {
            return Ok(note(
                false,
                format!(
                    "not repairable: {} has it and {} does not, and removing it from {} needs a delete event, which participants do not have (--prefer target copies it to {} instead)",
                    target.name(),
                    source.name(),
                    target.name(),
                    source.name()
                ),
            ));
        }
    };
    let (state, winner_name, loser_name) = match winner {
        Side::Source => (&found.source, source.name(), target.name()),
        Side::Target => (&found.target, target.name(), source.name()),
    };
    let Some(state) = state else {
        return Ok(note(
            false,
            format!("not repairable: {winner_name} has no state"),
        ));
    };
    let (winner_takes, loser_takes) = match winner {
        Side::Source => (source.takes_events(), target.takes_events()),
        Side::Target => (target.takes_events(), source.takes_events()),
    };
    if !loser_takes {
        // Moving the winner's version alone would leave the other side behind it for good.
        return Ok(note(
            false,
            format!(
                "not repairable: {loser_name} takes no events; change the row through its application (with a new outbox row) and the relay carries it"
            ),
        ));
    }
    let loser_version = match winner {
        Side::Source => version(&found.target),
        Side::Target => version(&found.source),
    };
    // A winner that takes no events keeps its version: its state can only be copied at that
    // version, which the other side takes only when it is behind.
    if !winner_takes && state.version <= loser_version {
        return Ok(note(
            false,
            format!(
                "not repairable: {winner_name} takes no events and its version {} does not lead {loser_name}'s {loser_version}; change the row through its application (with a new outbox row) and the relay carries it",
                state.version
            ),
        ));
    }
    let event = Event {
        id: uuid::Uuid::now_v7().to_string(),
        seq: 0,
        origin: winner_name.to_string(),
        event_type: format!("{kind}.repaired"),
        key: found.key.clone(),
        version: if winner_takes {
            version(&found.source).max(version(&found.target)) + 1
        } else {
            state.version
        },
        at: timestamp(now_ms()),
        data: state.state.clone(),
    };
    let events = std::slice::from_ref(&event);
    if winner_takes {
        let on_winner = match winner {
            Side::Source => source.apply(events).await?,
            Side::Target => target.apply(events).await?,
        };
        if let Some(refused) = refusal(on_winner.as_ref(), winner_name) {
            return Ok(note(false, refused));
        }
    }
    let on_loser = match winner {
        Side::Source => target.apply(events).await?,
        Side::Target => source.apply(events).await?,
    };
    if let Some(refused) = refusal(on_loser.as_ref(), loser_name) {
        return Ok(note(false, format!("{winner_name} took it, but {refused}")));
    }
    Ok(note(
        true,
        if winner_takes {
            format!(
                "{winner_name}'s state (version {}) re-emitted as version {} to {winner_name} and {loser_name}",
                state.version, event.version
            )
        } else {
            format!(
                "{winner_name}'s state (version {}) copied to {loser_name} ({winner_name} takes no events)",
                state.version
            )
        },
    ))
}

/// Why a side does not hold the one repair event, if it does not. A duplicate is no
/// refusal: the relay carried the winner's copy of the event there first.
fn refusal(report: Option<&ApplyReport>, side: &str) -> Option<String> {
    match report {
        None => Some(format!("not repairable: {side} takes no events")),
        Some(r) if r.applied == 1 || r.duplicates == 1 => None,
        Some(r) if r.stale > 0 => Some(format!(
            "not repaired: {side} changed it since it was read (verify again)"
        )),
        Some(r) => Some(format!(
            "not repaired: {side} refused it: {}",
            r.first_rejection.as_deref().unwrap_or("no reason given")
        )),
    }
}
