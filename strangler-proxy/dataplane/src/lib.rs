//! The data plane: everything a request meets on its way through the proxy.
//!
//! Layout:
//! - [`routing`]: the route table (most specific template wins), the canary split, and the
//!   registry that keeps upstreams and counters across table rebuilds;
//! - [`upstream`]: a service's instances, round-robin, passive health;
//! - [`protocols`]: the upstream clients, one per protocol (`http1`, `h2c`, `h2`);
//! - [`headers`]: the request head checked (one host, a transfer coding the proxy
//!   implements) and rewritten (hop-by-hop out, forwarding headers by trust);
//! - [`inbound`]: the client's body, capped, timed, optionally buffered first;
//! - [`forward`]: `Forwarder` (the table, the upstream clients) and its `handle`, which runs
//!   a request through the phases and records the answer; the proxy's own errors, answered
//!   as JSON naming who caused them;
//! - [`phase`]: the request path as named phases, in the order a request meets them:
//!   accept & normalize, an aggregate's fan-out, match the route, admit (the [`edge`]
//!   policies), the cache lookup, choose the side, forward
//!   (with the shadow tee, fallback, upgrade), respond & record (every answer, early or
//!   not);
//! - [`cache`]: the response cache, one per proxy (moka, bounded by weight), keyed by
//!   route, side, path and varied headers, filled as answers stream back;
//! - [`edge`]: the policies the admit phase applies: JWT authentication (keys from files
//!   or a JWKS fetched off the request path) and per-key token buckets;
//! - [`tee`]: `TeeBody`, the copy of a body taken while it streams;
//! - [`shadow`]: the shadow leg (mirror, compare) and the channel its results leave by;
//! - [`capture`]: a mismatching exchange kept whole (redacted) for `strangler replay`, built
//!   on the comparer thread for routes with a `capture` section;
//! - [`trace`]: the W3C trace context continued per request and the spans handed to the
//!   exporter's bounded queue (`[telemetry]`);
//! - [`translate`]: a route's `translate` section applied where the new service is called
//!   (its request, its answer, its shadow answer before the diff);
//! - [`pressure`]: per thread, how busy it is and the share of shadow legs it admits
//!   (shadow yields when the proxy is busy);
//! - [`metrics`]: lock-free counters and histograms, Prometheus text;
//! - [`listener`]: one thread per core, each with its own runtime, listener and pool;
//!   HTTP/1.1 and HTTP/2 on every connection, over TLS when the plan gives a certificate;
//! - [`tls`]: the listener's certificate, reloaded when its files change; the trust put
//!   in `h2` services.
//!
//! API boundary: the data plane never touches the state store (it does not depend on the
//! store crate). It reads a [`routing::RouteTable`] that the control plane swaps in, and
//! hands shadow results to a [`shadow::ResultSender`] whose other end the control plane
//! drains.
#![forbid(unsafe_code)]

pub mod cache;
pub mod capture;
pub mod edge;
pub mod forward;
pub mod headers;
pub mod inbound;
pub mod listener;
pub mod metrics;
pub mod phase;
pub mod pressure;
pub mod protocols;
pub mod routing;
pub mod shadow;
pub mod tee;
pub mod tls;
pub mod trace;
pub mod translate;
pub mod upstream;
