//! The request path as named phases, in the order a request meets them:
//!
//! 1. [`accept`]: the head checked, the path normalized, internal paths refused (400, 501,
//!    404); then an aggregate route's `GET` ([`aggregate`]) is answered by asking its
//!    parts of the proxy itself (each part meets every phase below as a request of its own);
//! 2. [`route`]: the trailing-slash rule (308), the route match, near misses counted;
//! 3. [`admit`]: the route's edge policies, JWT authentication (401, 503 before a JWKS
//!    was fetched) and its rate limit (429);
//! 4. [`cache`]: the response cache: a hit answers here, a miss is stored on its way back;
//! 5. [`side`]: which side answers (stage, canary split), whether a shadow leg gets a copy;
//! 6. [`forward`]: the upgrade, body and in-flight checks (403, 413, 408, 400, 503), the
//!    header rewrite, the send with its retry, the fallback to legacy, the tunnel of an
//!    upgraded connection, the shadow tee;
//! 7. [`record`]: every answer, early or not: route metrics, failure cause, fallback,
//!    served-by headers, request id.
//!
//! A phase is a plain function (static dispatch, no allocation of its own): it either
//! passes its state on to the next phase ([`Step::Continue`]) or answers the request itself
//! ([`Step::Answer`]). [`crate::forward::Forwarder::handle`] runs them in order and hands
//! whatever answered, with the [`record::Trail`] of how far the request got, to
//! [`record::record`]. A gateway policy is a phase of its own (or fills the admit seam),
//! with its section of the plan; nothing else changes.

use http::Response;

use crate::forward::{ClientBody, ForwardError};
use crate::metrics::Cause;

pub mod accept;
pub mod admit;
pub mod aggregate;
pub mod cache;
pub mod forward;
pub mod record;
pub mod route;
pub mod side;

/// What a phase comes to: the state the next phase starts from, or the request's answer.
///
/// The answer is held inline: a step lives for one move on the stack, and boxing it would
/// allocate for every answer a phase gives.
#[must_use]
#[allow(clippy::large_enum_variant)]
pub enum Step<S> {
    Continue(S),
    Answer(Answer),
}

/// An answer to the client, with who is charged when it is a failure (`None`: the request
/// was served, or answered as it should be, like a redirect).
pub struct Answer {
    pub response: Response<ClientBody>,
    pub cause: Option<Cause>,
}

impl From<ForwardError> for Answer {
    fn from(error: ForwardError) -> Self {
        Self {
            cause: Some(error.cause),
            response: error.into_response(),
        }
    }
}

impl<S> From<ForwardError> for Step<S> {
    fn from(error: ForwardError) -> Self {
        Step::Answer(error.into())
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A small plan and its table, for the phases' tests.

    use std::collections::HashMap;

    use http::request::Parts;
    use http::{Method, Request};

    use super::side::{self, Chosen};
    use super::{Step, accept, route};
    use crate::routing::{Registry, RouteTable};
    use crate::shadow::ResultSender;
    use strangler_plan::Stage;

    /// A table over `extra` (a `[proxy]` addition, e.g. `trailing_slash = "redirect"`) and
    /// `routes` (TOML `[[routes]]`), every route in `stage`.
    pub fn table(extra: &str, routes: &str, stage: Stage) -> RouteTable {
        let text = format!(
            r#"
            [proxy]
            listen = "127.0.0.1:0"
            admin_listen = "127.0.0.1:0"
            state = "s.db"
            {extra}
            [services.legacy]
            urls = ["http://127.0.0.1:1"]
            legacy = true
            [services.new]
            urls = ["http://127.0.0.1:2"]
            {routes}
            "#
        );
        let plan = strangler_plan::parse(std::path::Path::new("test.toml"), &text).unwrap();
        let stages: HashMap<String, Stage> = plan
            .routes
            .iter()
            .map(|r| (r.name.clone(), stage))
            .collect();
        RouteTable::build(&plan, &stages, 0, &mut Registry::default())
    }

    /// The standard routes: `students` (every method) and `search` (GET only).
    pub const ROUTES: &str = r#"
        [[routes]]
        name = "students"
        paths = ["/students", "/students/{id}"]
        service = "new"
        [[routes]]
        name = "search"
        paths = ["/search"]
        methods = ["GET"]
        service = "new"
    "#;

    /// A request head (with a `Host`) plus `headers`.
    pub fn parts(method: Method, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "example.test");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap().into_parts().0
    }

    /// What the phases before forwarding make of `parts`: who answers, who gets a copy.
    pub fn chosen<'t>(recorder: &ResultSender, table: &'t RouteTable, parts: &Parts) -> Chosen<'t> {
        let Step::Continue(accepted) = accept::accept(parts) else {
            panic!("refused")
        };
        let mut path = accepted.path.clone();
        let Step::Continue(matched) = route::route(table, &parts.method, &mut path, None) else {
            panic!("redirected")
        };
        side::choose(
            recorder,
            &crate::pressure::Governor::new(None, 1),
            table,
            &matched,
            parts,
            accepted.upgrade.is_some(),
            accepted.declared,
            None,
        )
    }
}
