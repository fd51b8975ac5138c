//! A participant's event feed over HTTP: `GET /_events` as a source, `POST /_events` as a
//! sink. One client per link, no system proxy, no redirects.

use std::time::Duration;

use strangler_feed::{Event, EventBatch, FeedPage};
use strangler_plan::Plan;

use crate::{EventSink, EventSource, LONG_POLL, Pushed, RelayError};

/// Limit on one feed read or push, beyond the long poll itself.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A participant's feed endpoint.
pub struct Participant {
    pub(crate) name: String,
    /// Base URL, without a trailing slash.
    pub(crate) url: String,
    pub(crate) client: reqwest::Client,
}

/// The client both participant ends of a link share: no system proxy, no
/// redirects, a timeout above the long poll.
pub fn client() -> Result<reqwest::Client, RelayError> {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(LONG_POLL + CALL_TIMEOUT)
        .build()
        .map_err(|err| RelayError::Client(err.to_string()))
}

impl Participant {
    /// The plan's service `service`, at its first URL.
    pub fn new(plan: &Plan, service: &str, client: &reqwest::Client) -> Result<Self, RelayError> {
        let url = plan
            .services
            .get(service)
            .and_then(|s| s.urls.first())
            .map(|u| u.to_string().trim_end_matches('/').to_string())
            .ok_or_else(|| RelayError::NoUrl(service.to_string()))?;
        Ok(Participant {
            name: service.to_string(),
            url,
            client: client.clone(),
        })
    }
}

impl EventSource for Participant {
    fn name(&self) -> &str {
        &self.name
    }

    async fn read(&self, after: i64, limit: u32, wait: Duration) -> Result<FeedPage, RelayError> {
        let failed = |err: reqwest::Error| RelayError::Read {
            participant: self.name.clone(),
            message: err.to_string(),
        };
        let url = format!(
            "{}/_events?after={after}&limit={limit}&wait={}",
            self.url,
            wait.as_millis()
        );
        self.client
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(failed)?
            .json()
            .await
            .map_err(failed)
    }
}

impl EventSink for Participant {
    fn name(&self) -> &str {
        &self.name
    }

    async fn push(&self, events: &[Event]) -> Result<Pushed, RelayError> {
        let response = self
            .client
            .post(format!("{}/_events", self.url))
            .json(&EventBatch {
                events: events.to_vec(),
            })
            .send()
            .await
            .map_err(|err| RelayError::Push {
                participant: self.name.clone(),
                message: err.to_string(),
            })?;
        let status = response.status();
        if status == reqwest::StatusCode::PAYLOAD_TOO_LARGE {
            return Ok(Pushed::TooLarge);
        }
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(RelayError::Refused {
                participant: self.name.clone(),
                status: status.as_u16(),
                body,
            });
        }
        response
            .json()
            .await
            .map(Pushed::Applied)
            .map_err(|err| RelayError::Push {
                participant: self.name.clone(),
                message: format!("reading the answer: {err}"),
            })
    }
}
