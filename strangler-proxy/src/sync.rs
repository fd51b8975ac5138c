//! The sync relay: for each `[[sync]]` link, long-poll the source participant's event feed,
//! push what the target should see to its `POST /_events`, and store the checkpoint after
//! every acknowledged batch. Delivery is at-least-once; the target applies idempotently (by
//! event id), so a relay killed between the push and the checkpoint loses nothing and
//! applies nothing twice.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use participant::feed::{EventBatch, FeedPage};
use participant::{ApplyReport, Event};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::plan::{Plan, SyncLink};
use crate::store::{LinkProgress, Store, StoreError, now_ms, parse_timestamp};

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
/// Limit on one feed read or push, beyond the long poll itself.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// `from->to`, the link's name in the store and in messages.
pub fn link_name(link: &SyncLink) -> String {
    format!("{}->{}", link.from, link.to)
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

/// What the target made of a pushed batch.
enum Pushed {
    Applied(ApplyReport),
    TooLarge,
}

/// One link's relay.
pub struct Relay {
    name: String,
    /// Who this relay is in the link's lease (unique per process and link).
    owner: String,
    link: SyncLink,
    from_url: String,
    to_url: String,
    store: Arc<Mutex<Store>>,
    client: reqwest::Client,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("service `{0}` of a sync link has no URL")]
    NoUrl(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Relay {
    pub fn new(plan: &Plan, link: &SyncLink, store: Arc<Mutex<Store>>) -> Result<Self, SyncError> {
        let url = |service: &str| {
            plan.services
                .get(service)
                .and_then(|s| s.urls.first())
                .map(|u| u.to_string().trim_end_matches('/').to_string())
                .ok_or_else(|| SyncError::NoUrl(service.to_string()))
        };
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(LONG_POLL + CALL_TIMEOUT)
            .build()
            .map_err(SyncError::Client)?;
        Ok(Self {
            owner: format!(
                "{}-{}",
                std::process::id(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            name: link_name(link),
            from_url: url(&link.from)?,
            to_url: url(&link.to)?,
            link: link.clone(),
            store,
            client,
        })
    }

    async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, String> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || {
            let store = store.lock().unwrap_or_else(|p| p.into_inner());
            f(&store)
        })
        .await
        .map_err(|err| format!("store task failed: {err}"))?
        .map_err(|err| err.to_string())
    }

    /// Reads one page past the checkpoint and delivers it. Answers how many events the page
    /// held.
    pub async fn step(&self, wait: Duration) -> Result<usize, String> {
        let page = self.read(wait).await?;
        self.deliver(page).await
    }

    /// Reads the page after the checkpoint, waiting up to `wait` for one event.
    async fn read(&self, wait: Duration) -> Result<FeedPage, String> {
        let name = self.name.clone();
        let after = self.with_store(move |s| s.checkpoint(&name)).await?;
        let url = format!(
            "{}/_events?after={after}&limit={BATCH}&wait={}",
            self.from_url,
            wait.as_millis()
        );
        let page: FeedPage = self
            .client
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|err| format!("reading {}'s feed: {err}", self.link.from))?
            .json()
            .await
            .map_err(|err| format!("reading {}'s feed: {err}", self.link.from))?;
        if page.head < after {
            return Err(format!(
                "{}'s feed ends at {} but this link's checkpoint is {after}: was its database restored or replaced? \
                 Events past {} would be missed; reset the link's checkpoint once the cause is known",
                self.link.from, page.head, page.head
            ));
        }
        Ok(page)
    }

    /// Pushes what the target should see and stores the checkpoint.
    async fn deliver(&self, page: FeedPage) -> Result<usize, String> {
        let held = page.events.len();
        let last_read_at = page.events.last().map(|e| e.at.clone());
        let (send, skipped): (Vec<Event>, Vec<Event>) = page.events.into_iter().partition(|e| {
            e.origin != self.link.to && type_matches(&self.link.types, &e.event_type)
        });
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
    async fn push_all(&self, events: Vec<Event>) -> Result<ApplyReport, String> {
        let mut pending = vec![events];
        let mut total = ApplyReport::default();
        while let Some(batch) = pending.pop() {
            match self.push(&batch).await? {
                Pushed::Applied(report) => {
                    total.received += report.received;
                    total.applied += report.applied;
                    total.duplicates += report.duplicates;
                    total.stale += report.stale;
                    total.rejected += report.rejected;
                    if total.first_rejection.is_none() {
                        total.first_rejection = report.first_rejection;
                    }
                }
                Pushed::TooLarge if batch.len() > 1 => {
                    let mut first = batch;
                    let second = first.split_off(first.len() / 2);
                    // Keep order: the first half goes first.
                    pending.push(second);
                    pending.push(first);
                }
                Pushed::TooLarge => {
                    return Err(format!(
                        "{} refuses event {} as too large even alone",
                        self.link.to, batch[0].id
                    ));
                }
            }
        }
        Ok(total)
    }

    async fn push(&self, events: &[Event]) -> Result<Pushed, String> {
        let response = self
            .client
            .post(format!("{}/_events", self.to_url))
            .json(&EventBatch {
                events: events.to_vec(),
            })
            .send()
            .await
            .map_err(|err| format!("pushing to {}: {err}", self.link.to))?;
        let status = response.status();
        if status == reqwest::StatusCode::PAYLOAD_TOO_LARGE {
            return Ok(Pushed::TooLarge);
        }
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(format!(
                "{} refused the batch ({status}): {body}",
                self.link.to
            ));
        }
        response
            .json()
            .await
            .map(Pushed::Applied)
            .map_err(|err| format!("reading {}'s answer: {err}", self.link.to))
    }

    /// Relays until `stop` is set, backing off while either side fails.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut backoff = BACKOFF_MIN;
        tracing::info!(link = %self.name, "sync relay started");
        while !*stop.borrow() {
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
                        _ = stop.changed() => break,
                    }
                    continue;
                }
                Err(error) => {
                    tracing::warn!(link = %self.name, %error, "cannot take the link's lease")
                }
            }
            // Stopping interrupts the wait for events, never a push and its checkpoint.
            let page = tokio::select! {
                page = self.read(LONG_POLL) => page,
                _ = stop.changed() => break,
            };
            let step = match page {
                Ok(page) => self.deliver(page).await,
                Err(error) => Err(error),
            };
            match step {
                Ok(_) => backoff = BACKOFF_MIN,
                Err(error) => {
                    tracing::warn!(link = %self.name, %error, retry_in_ms = backoff.as_millis() as u64, "sync link failing");
                    let name = self.name.clone();
                    let recorded = error.clone();
                    if let Err(err) = self
                        .with_store(move |s| s.link_failed(&name, &recorded))
                        .await
                    {
                        tracing::warn!(link = %self.name, error = %err, "cannot record the sync error");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => break,
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
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

/// The relays of every link in a plan, running until stopped.
pub struct Relays {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Relays {
    /// Starts one relay per `[[sync]]` link of `plan` (none when it has no links).
    pub fn start(plan: &Plan) -> Result<Self, SyncError> {
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        if !plan.sync.is_empty() {
            let store = Arc::new(Mutex::new(Store::open(&plan.proxy.state)?));
            for link in &plan.sync {
                let relay = Relay::new(plan, link, Arc::clone(&store))?;
                tasks.push(tokio::spawn(relay.run(stopped.clone())));
            }
        }
        Ok(Self { stop, tasks })
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Stops every relay after its current step (a checkpoint is never half-written).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::type_matches;

    #[test]
    fn type_filters() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(type_matches(&[], "student.created"));
        assert!(type_matches(&p(&["*"]), "invoice.paid"));
        assert!(type_matches(&p(&["student.*"]), "student.updated"));
        assert!(!type_matches(&p(&["student.*"]), "students.updated"));
        assert!(type_matches(&p(&["invoice.paid"]), "invoice.paid"));
        assert!(!type_matches(
            &p(&["invoice.paid", "reward.*"]),
            "invoice.created"
        ));
    }
}
