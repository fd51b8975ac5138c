//! One kind's comparison: both sides read in key order, a page at a time, and merged.
//!
//! Each round decides the keys both sides' buffers cover, reads again the ones the relay may
//! still be carrying once the link's lag has passed, repairs what remains if asked, and only
//! then stores the cursor (the last key decided) with the counts so far, so an interrupted
//! verify resumes after a key whose outcome is counted, never before one that is not.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strangler_diff::{Difference, Rules};
use strangler_feed::Entity;

use super::repair::{self, RepairNote, Side};
use super::{Observer, Pace, Progress, SnapshotReader, VerifyError, cursor, with_store};
use crate::SharedStore;

/// Examples kept per kind.
pub const SAMPLES: usize = 5;
/// Differences kept per example.
const SAMPLE_DIFFERENCES: usize = 10;
/// Repair notes kept per kind (the counts are exact).
pub const NOTES: usize = 50;
/// Path named for a version difference alone.
pub const VERSION_PATH: &str = "(version)";

/// What a difference is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finding {
    /// On the source only.
    Missing,
    /// On the target only.
    Extra,
    /// On both, with another state or version.
    Differing,
}

impl Finding {
    pub fn as_str(self) -> &'static str {
        match self {
            Finding::Missing => "missing",
            Finding::Extra => "extra",
            Finding::Differing => "differing",
        }
    }
}

/// One side's entity in an example: its version and state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Held {
    pub version: i64,
    pub state: serde_json::Value,
}

/// An example of a difference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub key: String,
    pub finding: Finding,
    pub source: Option<Held>,
    pub target: Option<Held>,
    /// Where the states differ (the diff engine's JSON Pointers), for `differing`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub differences: Vec<Difference>,
}

/// What the comparison of one kind found; also what a stored cursor keeps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KindReport {
    pub kind: String,
    /// Keys seen on either side.
    pub compared: i64,
    pub missing: i64,
    pub extra: i64,
    pub differing: i64,
    /// Differed at first, the same once the relay had carried what it was carrying.
    pub in_flight: i64,
    /// Differences re-emitted by `--repair`, and those it could not repair.
    pub repaired: i64,
    pub not_repaired: i64,
    /// Differing places (the diff engine's paths, `(version)` for a version alone), with the
    /// number of entities that differ there.
    pub paths: BTreeMap<String, i64>,
    /// The first few differences.
    pub samples: Vec<Sample>,
    /// What `--repair` did, the first [`NOTES`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repairs: Vec<RepairNote>,
    /// The key an interrupted verify of this kind was resumed after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_after: Option<String>,
}

impl KindReport {
    pub fn new(kind: &str) -> Self {
        Self {
            kind: kind.to_string(),
            ..Self::default()
        }
    }

    /// No entity missing, extra or differing.
    pub fn passed(&self) -> bool {
        self.missing == 0 && self.extra == 0 && self.differing == 0
    }

    /// Missing, extra and differing together.
    pub fn differences(&self) -> i64 {
        self.missing + self.extra + self.differing
    }

    fn count(&mut self, found: &Found) {
        match found.finding {
            Finding::Missing => self.missing += 1,
            Finding::Extra => self.extra += 1,
            Finding::Differing => self.differing += 1,
        }
        for path in found.paths() {
            *self.paths.entry(path).or_default() += 1;
        }
        if self.samples.len() < SAMPLES {
            let held = |e: &Option<Entity>| {
                e.as_ref().map(|e| Held {
                    version: e.version,
                    state: e.state.clone(),
                })
            };
            self.samples.push(Sample {
                key: found.key.clone(),
                finding: found.finding,
                source: held(&found.source),
                target: held(&found.target),
                differences: found
                    .differences
                    .iter()
                    .take(SAMPLE_DIFFERENCES)
                    .cloned()
                    .collect(),
            });
        }
    }

    fn note(&mut self, note: RepairNote) {
        if note.repaired {
            self.repaired += 1;
        } else {
            self.not_repaired += 1;
        }
        if self.repairs.len() < NOTES {
            self.repairs.push(note);
        }
    }
}

/// A difference as found: the key and what each side holds.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub key: String,
    pub finding: Finding,
    pub source: Option<Entity>,
    pub target: Option<Entity>,
    pub differences: Vec<Difference>,
}

impl Found {
    fn paths(&self) -> Vec<String> {
        let mut paths: Vec<String> = Vec::new();
        for d in &self.differences {
            let path = strangler_diff::group_path(&d.path);
            if !paths.contains(&path) {
                paths.push(path);
            }
        }
        if let (Some(a), Some(b)) = (&self.source, &self.target)
            && a.version != b.version
            && paths.is_empty()
        {
            paths.push(VERSION_PATH.to_string());
        }
        paths
    }
}

/// What comparing one key says.
enum Verdict {
    Same,
    /// Different, but maybe only because the relay is still carrying a change.
    Unsettled,
    Different(Found),
}

/// Compares what the two sides hold for `key`. On a first look, a difference the relay may
/// still be carrying (the versions differ, and the newer side's version came from an event)
/// is unsettled; on a second look every difference is one.
fn judge(key: &str, source: Option<&Entity>, target: Option<&Entity>, first_look: bool) -> Verdict {
    let found = |finding, differences| {
        Verdict::Different(Found {
            key: key.to_string(),
            finding,
            source: source.cloned(),
            target: target.cloned(),
            differences,
        })
    };
    match (source, target) {
        (None, None) => Verdict::Same,
        (Some(a), Some(b)) => {
            let differences = strangler_diff::diff_json(&a.state, &b.state, &Rules::default());
            if differences.is_empty() && a.version == b.version {
                Verdict::Same
            } else if first_look && a.version != b.version {
                Verdict::Unsettled
            } else {
                found(Finding::Differing, differences)
            }
        }
        // An entity no event describes (version 0) is no relay's business: it will not come.
        (Some(a), None) if first_look && a.version > 0 => Verdict::Unsettled,
        (Some(_), None) => found(Finding::Missing, Vec::new()),
        (None, Some(b)) if first_look && b.version > 0 => Verdict::Unsettled,
        (None, Some(_)) => found(Finding::Extra, Vec::new()),
    }
}

/// One side's read position: entities read and not yet decided, and where to read on.
struct Reader<'a, R> {
    side: &'a R,
    buffer: VecDeque<Entity>,
    /// The last key read (reads go on after it).
    after: String,
    more: bool,
}

impl<'a, R: SnapshotReader> Reader<'a, R> {
    fn new(side: &'a R, after: &str) -> Self {
        Self {
            side,
            buffer: VecDeque::new(),
            after: after.to_string(),
            more: true,
        }
    }

    /// Reads the next page when the buffer is empty and the side has more.
    async fn fill(&mut self, kind: &str, limit: u32) -> Result<(), VerifyError> {
        if !self.buffer.is_empty() || !self.more {
            return Ok(());
        }
        let page = self.side.page(kind, &self.after, limit).await?;
        for entity in page.entities {
            if entity.key <= self.after {
                return Err(VerifyError::OutOfOrder {
                    side: self.side.name().to_string(),
                    previous: self.after.clone(),
                    key: entity.key,
                });
            }
            self.after = entity.key.clone();
            self.buffer.push_back(entity);
        }
        // A page that moved nothing on is the last one, whatever its cursor says.
        self.more = page.next.is_some() && !self.buffer.is_empty();
        Ok(())
    }

    /// Whether this side's next key is known: buffered, or the side is read to its end.
    fn ready(&self) -> bool {
        !self.buffer.is_empty() || !self.more
    }
}

/// What a kind's walk works with.
pub(crate) struct Context<'a, S, T> {
    pub walk: &'a str,
    pub kind: &'a str,
    pub source: &'a S,
    pub target: &'a T,
    pub store: &'a SharedStore,
    pub page: u32,
    /// How long an unsettled difference is given before it is read again.
    pub settle: Duration,
    pub repair: Option<Side>,
    pub observer: &'a dyn Observer,
}

/// Compares `kind` from the key after `after` on, adding to `report`; stores the cursor after
/// every round and once more, done, at the end.
pub(crate) async fn walk_kind<S: SnapshotReader, T: SnapshotReader>(
    ctx: &Context<'_, S, T>,
    mut report: KindReport,
    after: String,
    pace: &mut Pace,
) -> Result<KindReport, VerifyError> {
    let (kind, limit) = (ctx.kind, ctx.page);
    let mut source = Reader::new(ctx.source, &after);
    let mut target = Reader::new(ctx.target, &after);
    let mut decided = after;
    loop {
        source.fill(kind, limit).await?;
        target.fill(kind, limit).await?;
        if source.buffer.is_empty() && target.buffer.is_empty() {
            break;
        }
        let round_after = decided.clone();
        let mut unsettled: Vec<String> = Vec::new();
        let mut found: Vec<Found> = Vec::new();
        let mut keys = 0u64;
        while source.ready() && target.ready() {
            let (a, b) = match (source.buffer.front(), target.buffer.front()) {
                (None, None) => break,
                (Some(a), Some(b)) if a.key == b.key => {
                    (source.buffer.pop_front(), target.buffer.pop_front())
                }
                (Some(a), Some(b)) if a.key < b.key => (source.buffer.pop_front(), None),
                (Some(_), None) => (source.buffer.pop_front(), None),
                (_, Some(_)) => (None, target.buffer.pop_front()),
            };
            let key = a
                .as_ref()
                .or(b.as_ref())
                .map(|e| e.key.clone())
                .unwrap_or_default();
            match judge(&key, a.as_ref(), b.as_ref(), true) {
                Verdict::Same => {}
                Verdict::Unsettled => unsettled.push(key.clone()),
                Verdict::Different(f) => found.push(f),
            }
            decided = key;
            keys += 1;
        }
        if !unsettled.is_empty() {
            let settled = recheck(ctx, &round_after, &decided, &unsettled).await?;
            report.in_flight += settled.same;
            found.extend(settled.found);
        }
        found.sort_by(|x, y| x.key.cmp(&y.key));
        report.compared += keys as i64;
        for f in &found {
            report.count(f);
        }
        if let Some(prefer) = ctx.repair {
            for f in &found {
                let note = repair::repair(ctx.source, ctx.target, kind, f, prefer).await?;
                report.note(note);
            }
        }
        pace.account(keys).await;
        let saved = cursor(ctx.walk, &report, &decided, false);
        with_store(ctx.store, move |s| s.save_verify_cursor(&saved)).await?;
        ctx.observer.progress(&Progress {
            walk: ctx.walk,
            kind,
            compared: report.compared,
            this_run: pace.done(),
            elapsed: pace.elapsed(),
        });
    }
    let saved = cursor(ctx.walk, &report, &decided, true);
    with_store(ctx.store, move |s| s.save_verify_cursor(&saved)).await?;
    Ok(report)
}

/// Unsettled keys read again.
struct Settled {
    /// Now the same on both sides: the relay carried what it was carrying.
    same: i64,
    found: Vec<Found>,
}

/// Waits the settle time, reads both sides again from `after` to `last`, and judges the
/// `unsettled` keys once more, for good.
async fn recheck<S: SnapshotReader, T: SnapshotReader>(
    ctx: &Context<'_, S, T>,
    after: &str,
    last: &str,
    unsettled: &[String],
) -> Result<Settled, VerifyError> {
    tokio::time::sleep(ctx.settle).await;
    let on_source = reread(ctx.source, ctx.kind, ctx.page, after, last, unsettled).await?;
    let on_target = reread(ctx.target, ctx.kind, ctx.page, after, last, unsettled).await?;
    let mut settled = Settled {
        same: 0,
        found: Vec::new(),
    };
    for key in unsettled {
        match judge(key, on_source.get(key), on_target.get(key), false) {
            Verdict::Same | Verdict::Unsettled => settled.same += 1,
            Verdict::Different(f) => settled.found.push(f),
        }
    }
    Ok(settled)
}

/// The entities among `keys` one side holds now, reading from `after` up to `last`.
async fn reread<R: SnapshotReader>(
    side: &R,
    kind: &str,
    limit: u32,
    after: &str,
    last: &str,
    keys: &[String],
) -> Result<HashMap<String, Entity>, VerifyError> {
    let keys: HashSet<&String> = keys.iter().collect();
    let mut reader = Reader::new(side, after);
    let mut held = HashMap::new();
    loop {
        reader.fill(kind, limit).await?;
        let Some(entity) = reader.buffer.pop_front() else {
            return Ok(held);
        };
        if entity.key.as_str() > last {
            return Ok(held);
        }
        if keys.contains(&entity.key) {
            held.insert(entity.key.clone(), entity);
        }
    }
}
