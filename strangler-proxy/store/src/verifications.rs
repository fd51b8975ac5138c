//! What `strangler verify` keeps in the store: a cursor per link and entity kind, so an
//! interrupted verify resumes where it stopped, and the result of every finished verify,
//! which `sync status`, the admin API and the cutover gate (`gate.verify_within`) read.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::StoreError;

/// Cursors and results of `strangler verify`.
pub trait Verifications {
    /// Where the walk of `link`'s entities of `kind` stands, if a verify of it is unfinished.
    fn verify_cursor(&self, link: &str, kind: &str) -> Result<Option<VerifyCursor>, StoreError>;
    /// Records how far a walk got (the verifier saves it after every page).
    fn save_verify_cursor(&self, cursor: &VerifyCursor) -> Result<(), StoreError>;
    /// Forgets every cursor of `link`: its verify finished, or starts over.
    fn clear_verify_cursors(&self, link: &str) -> Result<(), StoreError>;
    /// Stores a finished verify.
    fn record_verify(&self, record: &VerifyRecord) -> Result<(), StoreError>;
    /// The newest finished verify of each link, by link name.
    fn last_verifies(&self) -> Result<Vec<VerifyRecord>, StoreError>;
}

/// How far a verify walked one kind of one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyCursor {
    /// `from->to`.
    pub link: String,
    pub kind: String,
    /// The last key compared and counted in `progress` (empty before the first).
    pub after: String,
    /// Whether the kind was walked to its end.
    pub done: bool,
    /// The kind's counts so far, as the verifier writes them (JSON; the store keeps it
    /// as it is).
    pub progress: String,
    pub updated_ms: i64,
}

/// A finished verify of one link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyRecord {
    /// `from->to`.
    pub link: String,
    /// The entity kinds compared.
    pub kinds: Vec<String>,
    /// Whether every kind the link carries was compared (no narrower `--types`): only such a
    /// verify opens the cutover gate.
    pub complete: bool,
    /// Entities compared, and of those: on the source only, on the target only, on both
    /// with another state, and those that differed at first but matched once the relay had
    /// carried what it was carrying.
    pub compared: i64,
    pub missing: i64,
    pub extra: i64,
    pub differing: i64,
    pub in_flight: i64,
    /// Entities `--repair` re-emitted.
    pub repaired: i64,
    /// Per kind compared: its entities missing, extra or differing (what
    /// `strangler_verify_differences{link,type}` shows).
    pub by_kind: BTreeMap<String, i64>,
    /// No entity was missing, extra or differing.
    pub passed: bool,
    /// Unix ms.
    pub started_ms: i64,
    pub finished_ms: i64,
}

/// A result's differences per kind as both backends keep them: `student=3,invoice=0`.
pub(crate) fn join_by_kind(by_kind: &BTreeMap<String, i64>) -> String {
    by_kind
        .iter()
        .map(|(kind, n)| format!("{kind}={n}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The inverse of [`join_by_kind`]; a result stored before kinds were counted has none.
pub(crate) fn split_by_kind(text: &str) -> BTreeMap<String, i64> {
    text.split(',')
        .filter_map(|pair| {
            let (kind, n) = pair.split_once('=')?;
            Some((kind.to_string(), n.parse().ok()?))
        })
        .collect()
}

/// The kinds of a stored result: both backends keep them as `student,invoice`.
pub(crate) fn split_kinds(text: &str) -> Vec<String> {
    text.split(',')
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .collect()
}
