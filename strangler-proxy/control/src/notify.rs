//! Webhooks (`[[notify]]`): told about stage changes, rollout steps, pauses, failed checks
//! and automatic rollbacks. Every delivery runs in its own task with a timeout and a few
//! retries, so a dead webhook never delays what it reports.

use std::time::Duration;

use serde_json::{Value, json};
use strangler_plan::{NotifyEvent, NotifyFormat, NotifySpec};

/// Longest one delivery attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// Attempts per delivery (the first and its retries).
const ATTEMPTS: u32 = 3;
const RETRY_AFTER: Duration = Duration::from_millis(250);

/// Sends events to the plan's webhooks.
#[derive(Clone)]
pub struct Notifier {
    hooks: Vec<NotifySpec>,
    client: Option<reqwest::Client>,
}

impl Notifier {
    pub fn new(hooks: Vec<NotifySpec>) -> Self {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(ATTEMPT_TIMEOUT)
            .build()
            .map_err(|err| tracing::warn!(error = %err, "webhooks disabled: cannot build a client"))
            .ok();
        Self { hooks, client }
    }

    /// Tells every webhook that wants `event`; returns at once.
    pub fn send(&self, event: NotifyEvent, route: &str, message: &str, details: Value) {
        let Some(client) = &self.client else {
            return;
        };
        for hook in self.hooks.iter().filter(|h| h.events.contains(&event)) {
            let body = match hook.format {
                NotifyFormat::Json => json!({
                    "event": event.as_str(),
                    "route": route,
                    "message": message,
                    "at": strangler_store::timestamp(strangler_store::now_ms()),
                    "details": details,
                }),
                NotifyFormat::Slack => json!({
                    "text": format!("strangler: {route}: {message}"),
                }),
            };
            let mut request = client.post(hook.url.to_string()).json(&body);
            if let Some(token) = &hook.token {
                request = request.bearer_auth(token);
            }
            let url = hook.url.to_string();
            tokio::spawn(async move {
                for attempt in 1..=ATTEMPTS {
                    let Some(request) = request.try_clone() else {
                        return;
                    };
                    match request.send().await {
                        Ok(response) if response.status().is_success() => return,
                        Ok(response) => {
                            tracing::warn!(%url, status = %response.status(), attempt, "webhook refused the event")
                        }
                        Err(err) => {
                            tracing::warn!(%url, error = %err, attempt, "webhook unreachable")
                        }
                    }
                    tokio::time::sleep(RETRY_AFTER * attempt).await;
                }
            });
        }
    }
}
