//! The sync relay: for each `[[sync]]` link, read the source participant's events after the
//! stored checkpoint, push what the target should see, and store the checkpoint after every
//! acknowledged batch. Delivery is at-least-once; the target applies idempotently (by event
//! id), so a relay killed between the push and the checkpoint loses nothing and applies
//! nothing twice.
//!
//! Layout: [`EventSource`] and [`EventSink`] are the two ends of a link ([`http`]: a
//! participant's `GET`/`POST /_events`; [`postgres`]: an application's outbox table as a
//! source, an inbox table as a sink); [`Source`] and [`Sink`] are whichever a plan's link
//! names; [`Relay`] is the one loop that holds the link's lease, reads, filters, pushes,
//! checkpoints and backs off, whatever the ends are.
//! [`verify`] beside it compares what both ends of a link hold, entity by entity
//! (`strangler verify`), and repairs through the same event intake.
//!
//! API boundary: depends on the store only for checkpoints and leases
//! ([`strangler_store::Checkpoints`]) and for reaching a PostgreSQL server the way the store
//! does ([`strangler_store::pg_connect`]), and on the feed's wire types, not on any
//! participant.
#![forbid(unsafe_code)]

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strangler_feed::{ApplyReport, Event, FeedPage};
use strangler_plan::{LinkSource, LinkTarget, Plan, SyncLink};
use strangler_store::prelude::*;
use strangler_store::{LinkProgress, StoreError, now_ms, parse_timestamp};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub mod http;
pub mod postgres;
pub mod verify;

/// Events asked for per read.
pub const BATCH: u32 = 500;
/// How long a feed read waits for a new event before answering empty.
pub const LONG_POLL: Duration = Duration::from_secs(1);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long a relay holds a link without renewing; a relay renews before every read, and a
/// replica that dies hands the link over after this.
pub const LEASE: Duration = Duration::from_secs(5);
/// How often a relay that does not hold its link checks whether it can take it.
const STANDBY_POLL: Duration = Duration::from_secs(1);

/// `from->to`, the link's name in the store and in messages ([`SyncLink::name`]).
pub fn link_name(link: &SyncLink) -> String {
    link.name()
}

/// Whether `event_type` passes a link's filter (`*`, `kind.*` or an exact type; none: all).
pub fn type_matches(patterns: &[String], event_type: &str) -> bool {
    patterns.is_empty()
        || patterns.iter().any(|p| {
            p == "*"
                || p == event_type
                || p.strip_suffix(".*")
                    .is_some_and(|kind| event_type.split('.').next() == Some(kind))
        })
}

/// Why a relay step failed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("service `{0}` of a sync link has no URL")]
    NoUrl(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("reading {participant}'s feed: {message}")]
    Read {
        participant: String,
        message: String,
    },
    #[error("pushing to {participant}: {message}")]
    Push {
        participant: String,
        message: String,
    },
    #[error("{participant} refused the batch ({status}): {body}")]
    Refused {
        participant: String,
        status: u16,
        body: String,
    },
    #[error("{participant} refuses event {event} as too large even alone")]
    EventTooLarge { participant: String, event: String },
    #[error(
        "{participant}'s feed ends at {head} but this link's checkpoint is {checkpoint}: was its database restored or replaced? \
         Events past {head} would be missed; the link is stopped: reset its checkpoint once the cause is known, then restart"
    )]
    CheckpointAhead {
        participant: String,
        head: i64,
        checkpoint: i64,
    },
    /// A PostgreSQL outbox or inbox failed; whether trying again may help is decided where
    /// the error is made (a lost connection may; a column of the wrong type will not).
    #[error("{endpoint}: {message}")]
    Postgres {
        /// `outbox app.outbox at postgres://app:***@db/shop`.
        endpoint: String,
        message: String,
        transient: bool,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the store task failed: {0}")]
    StoreTask(String),
}

impl RelayError {
    /// Whether trying again later may succeed. A permanent error is reported and stops the
    /// link instead of being retried forever.
    pub fn is_transient(&self) -> bool {
        match self {
            RelayError::Read { .. } | RelayError::Push { .. } | RelayError::StoreTask(_) => true,
            // A target that is down or overloaded may recover; one that calls the batch
            // malformed will say so again.
            RelayError::Refused { status, .. } => *status >= 500 || matches!(status, 408 | 429),
            RelayError::Postgres { transient, .. } => *transient,
            RelayError::Store(err) => err.is_retryable(),
            RelayError::NoUrl(_)
            | RelayError::Client(_)
            | RelayError::EventTooLarge { .. }
            | RelayError::CheckpointAhead { .. } => false,
        }
    }
}

/// What a sink made of a pushed batch.
#[derive(Debug)]
pub enum Pushed {
    Applied(ApplyReport),
    /// The batch is over what the sink takes at once: split it and push the halves.
    TooLarge,
}

/// Where a link reads events.
pub trait EventSource: Send + Sync + 'static {
    /// The participant's name, for messages.
    fn name(&self) -> &str;
    /// Events after `after` in commit order, at most `limit`, waiting up to `wait` for one.
    fn read(
        &self,
        after: i64,
        limit: u32,
        wait: Duration,
    ) -> impl Future<Output = Result<FeedPage, RelayError>> + Send;
}

/// Where a link delivers events.
pub trait EventSink: Send + Sync + 'static {
    /// The participant's name; events that originated there are never sent back.
    fn name(&self) -> &str;
    /// Applies `events` idempotently (by id); answers what became of them.
    fn push(&self, events: &[Event]) -> impl Future<Output = Result<Pushed, RelayError>> + Send;
}

/// A link's source, of whichever kind the plan names.
pub enum Source {
    Feed(http::Participant),
    Outbox(Box<postgres::PgOutboxSource>),
}

impl EventSource for Source {
    fn name(&self) -> &str {
        match self {
            Source::Feed(participant) => EventSource::name(participant),
            Source::Outbox(outbox) => outbox.name(),
        }
    }

    async fn read(&self, after: i64, limit: u32, wait: Duration) -> Result<FeedPage, RelayError> {
        match self {
            Source::Feed(participant) => participant.read(after, limit, wait).await,
            Source::Outbox(outbox) => outbox.read(after, limit, wait).await,
        }
    }
}

/// A link's target, of whichever kind the plan names.
pub enum Sink {
    Feed(http::Participant),
    Inbox(Box<postgres::PgInboxSink>),
}

impl EventSink for Sink {
    fn name(&self) -> &str {
        match self {
            Sink::Feed(participant) => EventSink::name(participant),
            Sink::Inbox(inbox) => inbox.name(),
        }
    }

    async fn push(&self, events: &[Event]) -> Result<Pushed, RelayError> {
        match self {
            Sink::Feed(participant) => participant.push(events).await,
            Sink::Inbox(inbox) => inbox.push(events).await,
        }
    }
}

/// The source and sink `link` names.
pub fn endpoints(plan: &Plan, link: &SyncLink) -> Result<(Source, Sink), RelayError> {
    let client = http::client()?;
    let source = match &link.from {
        LinkSource::Service(name) => Source::Feed(http::Participant::new(plan, name, &client)?),
        LinkSource::Outbox(outbox) => {
            Source::Outbox(Box::new(postgres::PgOutboxSource::new(outbox)?))
        }
    };
    let sink = match &link.to {
        LinkTarget::Service(name) => Sink::Feed(http::Participant::new(plan, name, &client)?),
        LinkTarget::Inbox(inbox) => Sink::Inbox(Box::new(postgres::PgInboxSink::new(inbox)?)),
    };
    Ok((source, sink))
}

/// The checkpoints and leases a relay works with, shared by the relays of one process.
pub type SharedStore = Arc<Mutex<Box<dyn Store>>>;

/// One link's relay.
pub struct Relay<S, K> {
    name: String,
    /// Who this relay is in the link's lease (unique per process and link).
    owner: String,
    /// Event types sent (empty: all).
    types: Vec<String>,
    source: S,
    sink: K,
    store: SharedStore,
}

impl<S: EventSource, K: EventSink> Relay<S, K> {
    pub fn new(name: String, types: Vec<String>, source: S, sink: K, store: SharedStore) -> Self {
        Self {
            owner: format!(
                "{}-{}",
                std::process::id(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            name,
            types,
            source,
            sink,
            store,
        }
    }

    async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, RelayError> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || {
            let store = store.lock().unwrap_or_else(|p| p.into_inner());
            f(&**store)
        })
        .await
        .map_err(|err| RelayError::StoreTask(err.to_string()))?
        .map_err(RelayError::Store)
    }

    /// Reads one page past the checkpoint and delivers it. Answers how many events the page
    /// held.
    pub async fn step(&self, wait: Duration) -> Result<usize, RelayError> {
        let page = self.read(wait).await?;
        self.deliver(page).await
    }

    /// Reads the page after the checkpoint, waiting up to `wait` for one event.
    async fn read(&self, wait: Duration) -> Result<FeedPage, RelayError> {
        let name = self.name.clone();
        let after = self.with_store(move |s| s.checkpoint(&name)).await?;
        let page = self.source.read(after, BATCH, wait).await?;
        if page.head < after {
            return Err(RelayError::CheckpointAhead {
                participant: self.source.name().to_string(),
                head: page.head,
                checkpoint: after,
            });
        }
        Ok(page)
    }

    /// Pushes what the target should see and stores the checkpoint.
    async fn deliver(&self, page: FeedPage) -> Result<usize, RelayError> {
        let held = page.events.len();
        let last_read_at = page.events.last().map(|e| e.at.clone());
        let target = self.sink.name().to_string();
        let (send, skipped): (Vec<Event>, Vec<Event>) = page
            .events
            .into_iter()
            .partition(|e| e.origin != target && type_matches(&self.types, &e.event_type));
        let report = if send.is_empty() {
            ApplyReport::default()
        } else {
            self.push_all(send).await?
        };
        // The next undelivered event is at least as old as the last one read.
        let lag_seconds = if page.next >= page.head {
            0.0
        } else {
            let last_read = last_read_at
                .as_deref()
                .and_then(parse_timestamp)
                .unwrap_or_else(now_ms);
            (now_ms() - last_read).max(0) as f64 / 1000.0
        };
        let progress = LinkProgress {
            link: self.name.clone(),
            checkpoint: page.next,
            head: page.head,
            lag_seconds,
            applied: report.applied as i64,
            duplicates: (report.duplicates + report.stale) as i64,
            skipped: skipped.len() as i64,
            rejected: report.rejected as i64,
            last_rejection: report.first_rejection.clone(),
            last_error: None,
            updated_ms: now_ms(),
        };
        self.with_store(move |s| s.advance(&progress)).await?;
        Ok(held)
    }

    /// Pushes `events`, halving a batch the target finds too large.
    async fn push_all(&self, events: Vec<Event>) -> Result<ApplyReport, RelayError> {
        let mut pending = vec![events];
        let mut total = ApplyReport::default();
        while let Some(batch) = pending.pop() {
            match self.sink.push(&batch).await? {
                Pushed::Applied(report) => total.absorb(report),
                Pushed::TooLarge if batch.len() > 1 => {
                    let mut first = batch;
                    let second = first.split_off(first.len() / 2);
                    // Keep order: the first half goes first.
                    pending.push(second);
                    pending.push(first);
                }
                Pushed::TooLarge => {
                    return Err(RelayError::EventTooLarge {
                        participant: self.sink.name().to_string(),
                        event: batch.first().map(|e| e.id.clone()).unwrap_or_default(),
                    });
                }
            }
        }
        Ok(total)
    }

    /// Relays until `shutdown` turns true, backing off while either side fails; a permanent
    /// error stops the link (it is recorded for `sync status`).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = BACKOFF_MIN;
        tracing::info!(link = %self.name, "sync relay started");
        while !*shutdown.borrow() {
            // Only the lease holder relays; the others stand by (another proxy replica on
            // this store relays the link, and takes over if this one goes away).
            let (name, owner) = (self.name.clone(), self.owner.clone());
            match self
                .with_store(move |s| s.lease_link(&name, &owner, LEASE))
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    tokio::select! {
                        () = tokio::time::sleep(STANDBY_POLL) => {}
                        _ = shutdown.changed() => break,
                    }
                    continue;
                }
                // Without the store no relay can know who holds the link, nor record a
                // checkpoint: wait for it rather than deliver what cannot be recorded.
                Err(error) => {
                    if backoff == BACKOFF_MIN {
                        tracing::warn!(link = %self.name, %error, "cannot take the link's lease; waiting for the store");
                    } else {
                        tracing::debug!(link = %self.name, %error, "cannot take the link's lease");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => break,
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            }
            // Stopping interrupts the wait for events, never a push and its checkpoint.
            let page = tokio::select! {
                page = self.read(LONG_POLL) => page,
                _ = shutdown.changed() => break,
            };
            let step = match page {
                Ok(page) => self.deliver(page).await,
                Err(error) => Err(error),
            };
            let error = match step {
                Ok(_) => {
                    backoff = BACKOFF_MIN;
                    continue;
                }
                Err(error) => error,
            };
            let (name, recorded) = (self.name.clone(), error.to_string());
            if let Err(err) = self
                .with_store(move |s| s.link_failed(&name, &recorded))
                .await
            {
                tracing::warn!(link = %self.name, error = %err, "cannot record the sync error");
            }
            if !error.is_transient() {
                tracing::error!(link = %self.name, %error, "sync link stopped");
                break;
            }
            tracing::warn!(link = %self.name, %error, retry_in_ms = backoff.as_millis() as u64, "sync link failing");
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => break,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        let (name, owner) = (self.name.clone(), self.owner.clone());
        if let Err(error) = self
            .with_store(move |s| s.release_link(&name, &owner))
            .await
        {
            tracing::warn!(link = %self.name, %error, "cannot release the link's lease");
        }
        tracing::info!(link = %self.name, "sync relay stopped");
    }
}

/// The relays of every link in a plan, running until the shutdown signal.
pub struct Relays {
    tasks: Vec<JoinHandle<()>>,
}

impl Relays {
    /// Starts one relay per `[[sync]]` link of `plan` (none when it has no links); each
    /// stops after its current step once `shutdown` turns true.
    pub fn start(plan: &Plan, shutdown: &watch::Receiver<bool>) -> Result<Self, RelayError> {
        let mut tasks = Vec::new();
        if !plan.sync.is_empty() {
            let store: SharedStore =
                Arc::new(Mutex::new(strangler_store::open(&plan.proxy.state)?));
            for link in &plan.sync {
                let (source, sink) = endpoints(plan, link)?;
                let relay = Relay::new(
                    link_name(link),
                    link.types.clone(),
                    source,
                    sink,
                    Arc::clone(&store),
                );
                tasks.push(tokio::spawn(relay.run(shutdown.clone())));
            }
        }
        Ok(Self { tasks })
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Waits until every relay stopped (send the shutdown signal first); a checkpoint is
    /// never half-written.
    pub async fn join(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

#[cfg(test)]
mod tests;
