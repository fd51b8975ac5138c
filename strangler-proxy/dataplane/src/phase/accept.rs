//! Accept & normalize: what must hold of a request before it is routed. One `Host` (or an
//! absolute-form target), forwarding headers that are text, no transfer coding but
//! `chunked` (400, 501); a path that normalizes (400) and is not a participant's internal
//! endpoint (404). Passes on the normalized path and what the head says about the body
//! and a protocol switch.

use http::header::{self, HeaderValue};
use http::request::Parts;
use strangler_plan::path::normalize;

use super::Step;
use crate::forward::{ForwardError, ForwardErrorKind};
use crate::headers::{self, Head, HeadError};
use crate::routing::UNMATCHED;

/// A request the proxy accepts, as the later phases read it.
#[derive(Debug)]
pub struct Accepted {
    /// The host the client addressed.
    pub head: Head,
    /// The normalized path (the one the route table and the upstream see).
    pub path: String,
    /// The body's length as `Content-Length` declares it.
    pub declared: Option<u64>,
    /// The protocol asked for by `Connection: upgrade` with `Upgrade`: the request is
    /// tunnelled, never mirrored or retried.
    pub upgrade: Option<HeaderValue>,
}

/// Checks the head and normalizes the path.
pub fn accept(parts: &Parts) -> Step<Accepted> {
    let head = match headers::check_head(parts) {
        Ok(head) => head,
        Err(err) => {
            let kind = match err {
                HeadError::UnsupportedTransferEncoding(_) => ForwardErrorKind::UnsupportedCoding,
                HeadError::BadHost(_) | HeadError::BadForwarding(_) => ForwardErrorKind::BadHead,
            };
            return ForwardError::new(kind, err.message(), UNMATCHED, None).into();
        }
    };
    let path = match normalize(parts.uri.path()) {
        Ok(path) => path,
        Err(err) => {
            return ForwardError::new(
                ForwardErrorKind::BadPath,
                format!("{err}: {}", parts.uri.path()),
                UNMATCHED,
                None,
            )
            .into();
        }
    };
    if is_internal(&path) {
        return ForwardError::new(
            ForwardErrorKind::Internal,
            format!(
                "{path} is an internal endpoint between participants; it is not served through the proxy"
            ),
            UNMATCHED,
            None,
        )
        .into();
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let upgrade = headers::wants_upgrade(&parts.headers)
        .then(|| parts.headers.get(header::UPGRADE).cloned())
        .flatten();
    Step::Continue(Accepted {
        head,
        path,
        declared,
        upgrade,
    })
}

/// Paths whose first segment starts with `_` (the event feed `/_events`) are how participants
/// talk to each other; clients never reach them through the proxy, or anyone could read every
/// change or forge one.
pub fn is_internal(path: &str) -> bool {
    path.strip_prefix('/').is_some_and(|p| p.starts_with('_'))
}

#[cfg(test)]
mod tests {
    use http::{Method, StatusCode};

    use super::*;
    use crate::metrics::Cause;
    use crate::phase::testing::parts;

    fn answered(step: Step<Accepted>) -> (StatusCode, Option<Cause>) {
        match step {
            Step::Answer(answer) => (answer.response.status(), answer.cause),
            Step::Continue(accepted) => panic!("accepted {accepted:?}"),
        }
    }

    fn accepted(step: Step<Accepted>) -> Accepted {
        match step {
            Step::Continue(accepted) => accepted,
            Step::Answer(answer) => panic!("answered {}", answer.response.status()),
        }
    }

    #[test]
    fn a_bad_head_is_the_clients_fault() {
        let two_hosts = parts(Method::GET, "/students", &[("host", "other.test")]);
        assert_eq!(
            answered(accept(&two_hosts)),
            (StatusCode::BAD_REQUEST, Some(Cause::Client))
        );
        let gzip = parts(
            Method::POST,
            "/students",
            &[("transfer-encoding", "gzip, chunked")],
        );
        assert_eq!(
            answered(accept(&gzip)),
            (StatusCode::NOT_IMPLEMENTED, Some(Cause::Client))
        );
    }

    #[test]
    fn a_path_that_does_not_normalize_is_refused() {
        let slash = parts(Method::GET, "/students/a%2Fb", &[]);
        assert_eq!(
            answered(accept(&slash)),
            (StatusCode::BAD_REQUEST, Some(Cause::Client))
        );
    }

    #[test]
    fn internal_endpoints_are_not_found_even_when_disguised() {
        for uri in [
            "/_events",
            "/_events?after=0",
            "/x/../_events",
            "/%5Fevents",
        ] {
            assert_eq!(
                answered(accept(&parts(Method::GET, uri, &[]))),
                (StatusCode::NOT_FOUND, Some(Cause::Client)),
                "{uri}"
            );
        }
        assert!(!is_internal("/students/_7"), "only the first segment");
    }

    #[test]
    fn passes_on_the_normalized_path_the_declared_length_and_the_upgrade() {
        let plain = accepted(accept(&parts(
            Method::POST,
            "/students/./7/?x=1",
            &[("content-length", "12")],
        )));
        assert_eq!(plain.path, "/students/7/");
        assert_eq!(plain.declared, Some(12));
        assert_eq!(plain.upgrade, None);
        assert_eq!(plain.head.host.as_ref().unwrap(), "example.test");

        let upgrade = accepted(accept(&parts(
            Method::GET,
            "/chat",
            &[
                ("connection", "keep-alive, Upgrade"),
                ("upgrade", "websocket"),
            ],
        )));
        assert_eq!(upgrade.upgrade.unwrap(), "websocket");
        // `Upgrade` without `Connection: upgrade` asks for nothing.
        let stray = accepted(accept(&parts(Method::GET, "/chat", &[("upgrade", "h2c")])));
        assert_eq!(stray.upgrade, None);
    }
}
