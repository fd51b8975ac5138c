//! The anti-corruption layer on the request path: a route's `translate` section applied
//! where the new service is called. Its JSON request is edited before it is sent, its
//! answer (status, then JSON body) before the client or the shadow comparison sees it, so
//! clients keep the old contract. A body that is not JSON (by `Content-Type`, or encoded,
//! or not parsing) passes untouched and is counted (`untranslated`).
//!
//! A route without the section pays one `Option` branch; only a translated body is read
//! whole (up to `max_body`) instead of streamed.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::response;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Incoming};
use strangler_plan::{Transform, TranslateSpec, translate::apply_all};

use crate::metrics::RouteMetrics;

/// A route's translations with the counters of what could not be translated.
#[derive(Debug, Clone)]
pub struct Translation {
    pub spec: Arc<TranslateSpec>,
    pub metrics: Arc<RouteMetrics>,
}

/// An answer's body after translation.
pub enum AnswerBody {
    /// Untouched, streamed as it comes.
    Stream(Incoming),
    /// Read whole and translated.
    Whole(Bytes),
}

impl Translation {
    fn untranslated(&self) {
        self.metrics.untranslated.fetch_add(1, Ordering::Relaxed);
    }

    /// Edits a request body of `headers` for the new service; `None`: it is not JSON
    /// (counted) or there is nothing to edit.
    pub fn request(&self, headers: &HeaderMap, body: &Bytes) -> Option<Bytes> {
        if self.spec.request.is_empty() || body.is_empty() {
            return None;
        }
        let json = headers_say_json(headers);
        let edited = json.then(|| edit(&self.spec.request, body)).flatten();
        if edited.is_none() {
            self.untranslated();
        }
        edited
    }

    /// The new service's answer as clients know it: the status mapped, a JSON body (at most
    /// `cap` bytes, read within `timeout`) edited; the error says why the body could not be
    /// read.
    pub async fn answer(
        &self,
        head: &mut response::Parts,
        body: Incoming,
        cap: u64,
        timeout: Duration,
    ) -> Result<AnswerBody, String> {
        head.status = http::StatusCode::from_u16(self.spec.status(head.status.as_u16()))
            .unwrap_or(head.status);
        if self.spec.response.is_empty() || body.is_end_stream() {
            return Ok(AnswerBody::Stream(body));
        }
        let json = headers_say_json(&head.headers);
        if !json || body.size_hint().lower() > cap {
            self.untranslated();
            return Ok(AnswerBody::Stream(body));
        }
        let collected = tokio::time::timeout(timeout, Limited::new(body, cap as usize).collect())
            .await
            .map_err(|_| format!("the answer's body took over {} ms", timeout.as_millis()))?
            .map_err(|err| format!("the answer's body: {err}"))?
            .to_bytes();
        let out = match edit(&self.spec.response, &collected) {
            Some(edited) => edited,
            None => {
                self.untranslated();
                collected
            }
        };
        head.headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
        Ok(AnswerBody::Whole(out))
    }

    /// The candidate's answer in a shadow leg, as a client would get it.
    pub fn shadow_answer(&self, answer: &mut strangler_diff::Answer) {
        answer.status = self.spec.status(answer.status);
        if self.spec.response.is_empty() || answer.body.is_empty() {
            return;
        }
        let find = |name: &str| {
            answer
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let json = is_json(find("content-type"), find("content-encoding"));
        match json
            .then(|| edit(&self.spec.response, &answer.body))
            .flatten()
        {
            Some(edited) => answer.body = edited,
            None => self.untranslated(),
        }
    }
}

fn headers_say_json(headers: &HeaderMap) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    is_json(text(header::CONTENT_TYPE), text(header::CONTENT_ENCODING))
}

/// Whether a body with these headers is JSON the proxy can read: a JSON media type
/// (`application/json`, `…+json`), not encoded.
pub fn is_json(content_type: Option<&str>, content_encoding: Option<&str>) -> bool {
    let media = content_type
        .and_then(|c| c.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase());
    let json = media.is_some_and(|m| m == "application/json" || m.ends_with("+json"));
    let plain = content_encoding.is_none_or(|e| e.trim().eq_ignore_ascii_case("identity"));
    json && plain
}

/// `body` parsed, edited and written again; `None` when it is not JSON.
pub fn edit(transforms: &[Transform], body: &[u8]) -> Option<Bytes> {
    let mut doc: serde_json::Value = serde_json::from_slice(body).ok()?;
    apply_all(transforms, &mut doc);
    serde_json::to_vec(&doc).ok().map(Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_json_is_translated() {
        assert!(is_json(Some("application/json"), None));
        assert!(is_json(
            Some("application/problem+json; charset=utf-8"),
            Some("identity")
        ));
        assert!(!is_json(Some("application/json"), Some("gzip")));
        assert!(!is_json(Some("text/html"), None));
        assert!(!is_json(None, None));
    }

    #[test]
    fn a_candidate_answer_is_translated_and_a_non_json_one_counted() {
        let spec = TranslateSpec {
            response: vec![Transform::Rename {
                from: strangler_plan::Pointer::parse("/name").unwrap(),
                to: strangler_plan::Pointer::parse("/full_name").unwrap(),
            }],
            status: [(201, 200)].into(),
            ..TranslateSpec::default()
        };
        let t = Translation {
            spec: Arc::new(spec),
            metrics: Arc::default(),
        };
        let mut answer = strangler_diff::Answer {
            status: 201,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::from_static(br#"{"name":"Ada"}"#),
        };
        t.shadow_answer(&mut answer);
        assert_eq!(answer.status, 200);
        assert_eq!(&answer.body[..], br#"{"full_name":"Ada"}"#);
        let mut text = strangler_diff::Answer {
            status: 200,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: Bytes::from_static(b"name"),
        };
        t.shadow_answer(&mut text);
        assert_eq!(&text.body[..], b"name");
        assert_eq!(t.metrics.untranslated.load(Ordering::Relaxed), 1);
    }
}
