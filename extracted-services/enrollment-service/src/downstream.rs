//! Calls to the services the enrollment process orchestrates, each with a timeout. Their
//! error answers pass through unchanged; a service that cannot be reached is a 503 naming it.

use std::time::Duration;

use axum::http::StatusCode;
use participant::extract::DRY_RUN_HEADER;
use participant::{ApiError, ApiResult, WriteMode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Limit on one call to another service.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Base URLs of the services the enrollment process calls.
#[derive(Debug, Clone)]
pub struct Upstreams {
    pub students: String,
    pub finance: String,
    pub gamification: String,
}

#[derive(Debug, Clone, Copy)]
pub enum Service {
    Students,
    Finance,
    Gamification,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::Students => "students",
            Service::Finance => "finance",
            Service::Gamification => "gamification",
        }
    }
}

pub struct Downstream {
    upstreams: Upstreams,
    http: reqwest::Client,
}

impl Downstream {
    pub fn new(upstreams: Upstreams) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(CALL_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()?;
        Ok(Self { upstreams, http })
    }

    fn url(&self, service: Service, path: &str) -> String {
        let base = match service {
            Service::Students => &self.upstreams.students,
            Service::Finance => &self.upstreams.finance,
            Service::Gamification => &self.upstreams.gamification,
        };
        format!("{}{path}", base.trim_end_matches('/'))
    }

    async fn send<T: DeserializeOwned>(
        &self,
        service: Service,
        request: reqwest::RequestBuilder,
        mode: WriteMode,
    ) -> ApiResult<T> {
        let request = match mode {
            WriteMode::DryRun => request.header(DRY_RUN_HEADER, "1"),
            WriteMode::Commit => request,
        };
        // The client is told which service failed and how, never where it runs: the
        // address and the error chain go to the log.
        let unavailable = |why: &str, detail: String| {
            tracing::warn!(service = service.name(), %detail, "{why}");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "dependency_unavailable",
                format!("the {} service is unavailable: {why}", service.name()),
            )
        };
        let response = request.send().await.map_err(|err| {
            let why = if err.is_timeout() {
                "it did not answer in time"
            } else if err.is_connect() {
                "it cannot be reached"
            } else {
                "the exchange failed"
            };
            unavailable(why, err.to_string())
        })?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|err| unavailable("its answer is unreadable", err.to_string()))?;
        if status.is_success() {
            return serde_json::from_value(body).map_err(|err| {
                unavailable("its answer is not what was expected", err.to_string())
            });
        }
        let code = body.pointer("/error/code").and_then(Value::as_str);
        let message = body.pointer("/error/message").and_then(Value::as_str);
        match (status.is_client_error(), code, message) {
            // A refusal (unknown id, business rule) is the answer the monolith would give.
            (true, Some(code), Some(message)) => Err(ApiError::new(
                StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
                known_code(code),
                message.to_string(),
            )),
            _ => Err(unavailable(
                &format!("it answered {status}"),
                body.to_string(),
            )),
        }
    }

    pub async fn get_json<T: DeserializeOwned>(
        &self,
        service: Service,
        path: &str,
        mode: WriteMode,
    ) -> ApiResult<T> {
        let request = self.http.get(self.url(service, path));
        self.send(service, request, mode).await
    }

    pub async fn post_json<T: DeserializeOwned>(
        &self,
        service: Service,
        path: &str,
        body: &impl Serialize,
        mode: WriteMode,
    ) -> ApiResult<T> {
        let request = self.http.post(self.url(service, path)).json(body);
        self.send(service, request, mode).await
    }
}

/// `value` as one URL path segment (or query value): every byte but the unreserved ones
/// percent-encoded, so an id from a client's path can never change which route of another
/// service is called (`/`, `?`, `#` stay inside the segment). A segment that is exactly `.`
/// or `..` is still a dot segment under the URL rules however it is written; the path it
/// resolves to names no entity, so it answers 404 like any unknown id.
pub fn segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Error codes are `&'static str`; the few a dependency can answer with are known, the rest
/// keep their meaning under a generic code.
fn known_code(code: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "not_found",
        "unknown_student",
        "student_inactive",
        "invoice_cancelled",
        "invoice_paid",
        "idempotency_key_reused",
        "invalid_field",
        "email_taken",
    ];
    KNOWN
        .iter()
        .find(|k| **k == code)
        .copied()
        .unwrap_or("dependency_refused")
}

#[cfg(test)]
mod tests {
    use super::segment;

    #[test]
    fn a_segment_cannot_leave_its_place_in_the_path() {
        assert_eq!(segment("0190-ab_c.~"), "0190-ab_c.~");
        assert_eq!(segment("../x?y#z"), "..%2Fx%3Fy%23z");
        assert_eq!(segment("é"), "%C3%A9");
    }
}
