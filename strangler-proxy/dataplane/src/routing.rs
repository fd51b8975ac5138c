//! The route table a proxy serves: every plan route with its current stage, compiled for
//! matching. Built off the request path and swapped in atomically; requests only read it.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method, header};

use crate::metrics::{RouteMetrics, ServiceMetrics, Side};
use crate::upstream::Upstream;
use strangler_plan::Stage;
use strangler_plan::path::PathTemplate;
use strangler_plan::{Plan, RouteSpec, Sticky};

/// Name reported for requests no route matches (they go to the legacy service).
pub const UNMATCHED: &str = "default";

/// An upstream service with its counters; shared by every table built from the same plan.
#[derive(Debug, Clone)]
pub struct Service {
    pub upstream: Arc<Upstream>,
    pub metrics: Arc<ServiceMetrics>,
    /// Its name as the `x-strangler-served-by` value, made once.
    pub header: http::HeaderValue,
    /// Requests sent to it now, at most its `max_in_flight` (shared by every worker).
    pub in_flight: Arc<InFlight>,
}

/// A lock-free cap on requests in flight: one atomic add to take a slot, one to give it
/// back (a semaphore takes a lock on release, on every request).
#[derive(Debug)]
pub struct InFlight {
    now: std::sync::atomic::AtomicUsize,
    max: usize,
}

/// A taken slot; dropping it gives the slot back.
#[derive(Debug)]
pub struct Slot(Arc<InFlight>);

impl InFlight {
    pub fn new(max: usize) -> Self {
        Self {
            now: std::sync::atomic::AtomicUsize::new(0),
            max,
        }
    }

    /// A slot, or `None` when `max` are taken.
    pub fn try_take(self: &Arc<Self>) -> Option<Slot> {
        use std::sync::atomic::Ordering;
        if self.now.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.now.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(Arc::clone(self)))
    }

    /// Slots taken now.
    pub fn taken(&self) -> usize {
        self.now.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// A name as a header value (plan names are lower-case letters, digits, `-` and `_`).
pub fn header_value(name: &str) -> http::HeaderValue {
    http::HeaderValue::from_str(name).unwrap_or_else(|_| http::HeaderValue::from_static("invalid"))
}

/// Services and per-route counters, kept across table rebuilds (so passive health and
/// counters survive stage changes and plan reloads).
#[derive(Debug, Default)]
pub struct Registry {
    services: HashMap<String, (strangler_plan::ServiceSpec, Service)>,
    routes: HashMap<String, Arc<RouteMetrics>>,
    /// Per route: its shadow leg's in-flight slots, and how many there are.
    shadow_slots: HashMap<String, (usize, Arc<tokio::sync::Semaphore>)>,
    /// The response cache, kept across rebuilds while `[edge.cache]` stays the same.
    cache: Option<Arc<crate::cache::ResponseCache>>,
    /// The JWT verifier, rate-limit buckets and refusal counters.
    edge: crate::edge::EdgeRegistry,
}

impl Registry {
    fn service(&mut self, spec: &strangler_plan::ServiceSpec) -> Service {
        if let Some((known, service)) = self.services.get(&spec.name)
            && known == spec
        {
            return service.clone();
        }
        let service = Service {
            header: header_value(&spec.name),
            in_flight: Arc::new(InFlight::new(spec.max_in_flight)),
            upstream: Arc::new(Upstream::new(spec)),
            metrics: self
                .services
                .get(&spec.name)
                .map(|(_, s)| Arc::clone(&s.metrics))
                .unwrap_or_default(),
        };
        self.services
            .insert(spec.name.clone(), (spec.clone(), service.clone()));
        service
    }

    /// The response cache for `settings`, made when first needed or when they changed.
    fn cache(
        &mut self,
        settings: &strangler_plan::CacheSettings,
    ) -> Arc<crate::cache::ResponseCache> {
        match &self.cache {
            Some(cache) if cache.settings == *settings => Arc::clone(cache),
            _ => Arc::clone(
                self.cache
                    .insert(Arc::new(crate::cache::ResponseCache::new(settings.clone()))),
            ),
        }
    }

    fn route(&mut self, name: &str) -> Arc<RouteMetrics> {
        Arc::clone(self.routes.entry(name.to_string()).or_default())
    }

    fn slots(&mut self, name: &str, size: usize) -> Arc<tokio::sync::Semaphore> {
        match self.shadow_slots.get(name) {
            Some((known, slots)) if *known == size => Arc::clone(slots),
            _ => {
                let slots = Arc::new(tokio::sync::Semaphore::new(size));
                self.shadow_slots
                    .insert(name.to_string(), (size, Arc::clone(&slots)));
                slots
            }
        }
    }
}

/// A plan route with its current stage.
#[derive(Debug)]
pub struct ActiveRoute {
    pub spec: RouteSpec,
    pub stage: Stage,
    pub metrics: Arc<RouteMetrics>,
    /// The service the route moves to.
    pub target: Service,
    /// Shadow requests of this route in flight (bounded by its `max_in_flight`).
    pub shadow_slots: Arc<tokio::sync::Semaphore>,
    /// Its name as the `x-strangler-route` value, made once.
    pub header: http::HeaderValue,
    /// Its `compare` section, compiled for the diff engine.
    pub rules: Arc<strangler_diff::Rules>,
    /// Its `capture` section, compiled (`None`: it captures nothing).
    pub capture: Option<Arc<crate::capture::Capturing>>,
    /// Its `translate` section (`None`: the new service speaks the clients' contract).
    pub translate: Option<crate::translate::Translation>,
    /// Its edge policies, compiled (`None`: none applies, admitted without a look).
    pub admission: Option<Arc<crate::edge::Admission>>,
}

#[derive(Debug)]
struct Matcher {
    template: PathTemplate,
    route: usize,
}

/// What every request is routed by.
#[derive(Debug)]
pub struct RouteTable {
    /// Store generation this table reflects (0: nothing read from the store yet).
    pub generation: i64,
    pub routes: Vec<ActiveRoute>,
    /// Templates, most specific first.
    matchers: Vec<Matcher>,
    pub legacy: Service,
    pub unmatched: Arc<RouteMetrics>,
    pub default_timeout: Duration,
    pub served_by_headers: bool,
    pub max_body_bytes: u64,
    /// Longest pause between a request body's bytes.
    pub body_read_timeout: Duration,
    /// Peers whose forwarding headers are kept.
    pub trusted_proxies: Vec<strangler_plan::Cidr>,
    /// How paths meet templates (trailing slash, letter case).
    pub matching: strangler_plan::PathMatching,
    /// Aggregate routes (`[[aggregates]]`), answered before routes are matched.
    pub aggregates: Vec<crate::phase::aggregate::ActiveAggregate>,
    /// The response cache (`None`: no route caches).
    pub cache: Option<Arc<crate::cache::ResponseCache>>,
    /// The edge policies of unmatched requests (the `[edge]` defaults).
    pub admission: Option<Arc<crate::edge::Admission>>,
}

impl RouteTable {
    /// Builds the table for `plan` with the stages in `statuses` (routes without one use
    /// the plan's initial stage).
    pub fn build(
        plan: &Plan,
        statuses: &HashMap<String, Stage>,
        generation: i64,
        registry: &mut Registry,
    ) -> Self {
        let mut routes = Vec::with_capacity(plan.routes.len());
        let mut matchers = Vec::new();
        for (i, spec) in plan.routes.iter().enumerate() {
            for template in &spec.paths {
                matchers.push(Matcher {
                    template: template.clone(),
                    route: i,
                });
            }
            let target = plan
                .services
                .get(&spec.service)
                .map(|s| registry.service(s))
                .unwrap_or_else(|| missing_service(&spec.service));
            routes.push(ActiveRoute {
                stage: statuses
                    .get(&spec.name)
                    .copied()
                    .unwrap_or(spec.initial_stage),
                metrics: registry.route(&spec.name),
                shadow_slots: registry.slots(&spec.name, spec.shadow.max_in_flight),
                header: header_value(&spec.name),
                rules: Arc::new(compile_rules(&spec.compare)),
                capture: spec.capture.as_ref().map(crate::capture::Capturing::new),
                translate: spec
                    .translate
                    .as_ref()
                    .map(|t| crate::translate::Translation {
                        spec: Arc::new(t.clone()),
                        metrics: registry.route(&spec.name),
                    }),
                admission: registry.edge.admission(&plan.edge, &spec.name, &spec.edge),
                target,
                spec: spec.clone(),
            });
        }
        matchers.sort_by_key(|m| std::cmp::Reverse(m.template.specificity()));
        let legacy = plan
            .services
            .get(&plan.legacy)
            .map(|s| registry.service(s))
            .unwrap_or_else(|| missing_service(&plan.legacy));
        Self {
            generation,
            routes,
            matchers,
            legacy,
            unmatched: registry.route(UNMATCHED),
            admission: registry
                .edge
                .admission(&plan.edge, UNMATCHED, &Default::default()),
            default_timeout: plan.proxy.default_timeout,
            served_by_headers: plan.proxy.served_by_headers,
            max_body_bytes: plan.proxy.max_body_bytes,
            body_read_timeout: plan.proxy.body_read_timeout,
            trusted_proxies: plan.proxy.trusted_proxies.clone(),
            matching: plan.proxy.matching,
            aggregates: plan
                .aggregates
                .iter()
                .map(|spec| crate::phase::aggregate::ActiveAggregate {
                    metrics: registry.route(&spec.name),
                    header: header_value(&spec.name),
                    spec: spec.clone(),
                })
                .collect(),
            cache: if plan.routes.iter().any(|r| r.cache.is_some()) {
                Some(registry.cache(&plan.cache))
            } else {
                // A reload that caches nothing lets the entries go.
                registry.cache = None;
                None
            },
        }
    }

    /// The most specific route whose template matches `segments` and which allows `method`
    /// (literal segments compared as the plan's `case_sensitive` says).
    pub fn find(
        &self,
        method: &Method,
        segments: &[&str],
    ) -> Option<(&ActiveRoute, &PathTemplate)> {
        self.find_with(method, segments, self.matching.case_sensitive)
    }

    /// [`RouteTable::find`] with letter case as given.
    pub fn find_with(
        &self,
        method: &Method,
        segments: &[&str],
        case_sensitive: bool,
    ) -> Option<(&ActiveRoute, &PathTemplate)> {
        self.matchers.iter().find_map(|m| {
            let route = &self.routes[m.route];
            (route.spec.allows(method) && m.template.matches_with(segments, case_sensitive))
                .then_some((route, &m.template))
        })
    }

    pub fn route(&self, name: &str) -> Option<&ActiveRoute> {
        self.routes.iter().find(|r| r.spec.name == name)
    }
}

/// The diff engine's rules for a route's `compare` section. The plan validated every
/// pattern, so none is dropped here.
pub fn compile_rules(spec: &strangler_plan::CompareSpec) -> strangler_diff::Rules {
    use strangler_diff::{ArrayMode, PathPattern};
    let pattern = |p: &String| PathPattern::parse(p).ok();
    strangler_diff::Rules {
        ignore: spec.ignore.iter().filter_map(pattern).collect(),
        tolerance: spec.tolerance,
        arrays: spec
            .sets
            .iter()
            .filter_map(|p| Some((pattern(p)?, ArrayMode::Set)))
            .chain(
                spec.keyed
                    .iter()
                    .filter_map(|(p, key)| Some((pattern(p)?, ArrayMode::Keyed(key.clone())))),
            )
            .collect(),
        headers: spec.headers.clone(),
        numbers: if spec.exact_numbers {
            strangler_diff::Numbers::Exact
        } else {
            strangler_diff::Numbers::Value
        },
    }
}

/// A validated plan names only services it declares; an empty upstream answers 502 rather
/// than the proxy panicking should that ever not hold.
fn missing_service(name: &str) -> Service {
    Service {
        header: header_value(name),
        in_flight: Arc::new(InFlight::new(strangler_plan::DEFAULT_MAX_IN_FLIGHT)),
        upstream: Arc::new(Upstream::new(&strangler_plan::ServiceSpec {
            name: name.to_string(),
            urls: Vec::new(),
            legacy: false,
            run: None,
            max_in_flight: strangler_plan::DEFAULT_MAX_IN_FLIGHT,
            protocol: strangler_plan::UpstreamProtocol::Http1,
            ca: None,
        })),
        metrics: Arc::default(),
    }
}

/// FNV-1a: a stable hash, so every proxy replica and every restart splits keys the same way.
fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Final avalanche so that short, similar keys spread evenly over 0..100.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

thread_local! {
    static DICE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let local = 0u8;
    t ^ (std::ptr::addr_of!(local) as u64).rotate_left(32) | 1
}

/// A pseudo-random number 0..100 (canary without a key, shadow sampling).
pub fn roll() -> u64 {
    DICE.with(|d| {
        let mut x = d.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        d.set(x);
        x % 100
    })
}

/// The sticky key of a request, if it carries one.
pub fn sticky_key<'r>(
    sticky: &Sticky,
    template: &PathTemplate,
    segments: &[&'r str],
    headers: &'r HeaderMap,
) -> Option<&'r [u8]> {
    match sticky {
        Sticky::Header(name) => headers
            .get(name)
            .map(|v| v.as_bytes())
            .filter(|v| !v.is_empty()),
        Sticky::PathParam(name) => template.param(segments, name).map(str::as_bytes),
        Sticky::Cookie(name) => headers.get_all(header::COOKIE).iter().find_map(|v| {
            v.to_str().ok()?.split(';').find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                (k == name && !v.is_empty()).then_some(v.as_bytes())
            })
        }),
    }
}

/// Which side answers: the stage decides, a canary by sticky key (or per request).
pub fn choose_side(
    route: &ActiveRoute,
    template: &PathTemplate,
    segments: &[&str],
    headers: &HeaderMap,
) -> Side {
    match route.stage {
        Stage::Legacy | Stage::Shadow => Side::Legacy,
        Stage::Cutover | Stage::Retired => Side::New,
        Stage::Canary { percent } => {
            let bucket = route
                .spec
                .sticky
                .as_ref()
                .and_then(|s| sticky_key(s, template, segments, headers))
                .map_or_else(roll, |key| stable_hash(key) % 100);
            if bucket < u64::from(percent) {
                Side::New
            } else {
                Side::Legacy
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        strangler_plan::parse(
            std::path::Path::new("test.toml"),
            r#"
            [proxy]
            listen = "127.0.0.1:0"
            admin_listen = "127.0.0.1:0"
            state = "s.db"
            [services.legacy]
            urls = ["http://127.0.0.1:1"]
            legacy = true
            [services.new]
            urls = ["http://127.0.0.1:2"]
            [[routes]]
            name = "students"
            paths = ["/students", "/students/{id}"]
            service = "new"
            [[routes]]
            name = "search"
            paths = ["/students/search"]
            methods = ["GET"]
            service = "new"
            [[routes]]
            name = "writes"
            paths = ["/students/{id}/notes"]
            methods = ["POST"]
            service = "new"
            [[routes]]
            name = "finance"
            paths = ["/finance/{*rest}"]
            service = "new"
            "#,
        )
        .unwrap()
    }

    #[test]
    fn most_specific_route_wins_and_methods_filter() {
        let table = RouteTable::build(&plan(), &HashMap::new(), 0, &mut Registry::default());
        let name = |method: Method, path: &str| {
            let segments = strangler_plan::path::split(path);
            table
                .find(&method, &segments)
                .map(|(r, _)| r.spec.name.clone())
                .unwrap_or_else(|| UNMATCHED.to_string())
        };
        let cases = [
            (Method::GET, "/students", "students"),
            (Method::GET, "/students/42", "students"),
            (Method::GET, "/students/search", "search"),
            (Method::POST, "/students/search", "students"),
            (Method::POST, "/students/42/notes", "writes"),
            (Method::GET, "/students/42/notes", UNMATCHED),
            (Method::GET, "/finance/invoices/1/pay", "finance"),
            (Method::GET, "/finance", UNMATCHED),
            (Method::GET, "/", UNMATCHED),
            (Method::GET, "/studentsx", UNMATCHED),
        ];
        for (method, path, expected) in cases {
            assert_eq!(name(method.clone(), path), expected, "{method} {path}");
        }
    }

    #[test]
    fn sticky_keys_split_evenly_and_stay_put() {
        let mut new = 0;
        for i in 0..10_000 {
            let key = format!("student-{i}");
            let bucket = stable_hash(key.as_bytes()) % 100;
            assert_eq!(bucket, stable_hash(key.as_bytes()) % 100);
            if bucket < 30 {
                new += 1;
            }
        }
        assert!((2_700..3_300).contains(&new), "{new} of 10000 under 30%");
    }

    #[test]
    fn in_flight_slots_are_capped_and_given_back() {
        let cap = Arc::new(InFlight::new(2));
        let a = cap.try_take().unwrap();
        let b = cap.try_take().unwrap();
        assert!(cap.try_take().is_none(), "over the cap");
        assert_eq!(cap.taken(), 2, "a refused take holds nothing");
        drop(a);
        let c = cap.try_take().unwrap();
        drop((b, c));
        assert_eq!(cap.taken(), 0);
    }

    #[test]
    fn cookie_keys_are_found() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, "a=1; sid=abc; b=2".parse().unwrap());
        let t = PathTemplate::parse("/x").unwrap();
        let key = sticky_key(&Sticky::Cookie("sid".into()), &t, &[], &headers);
        assert_eq!(key, Some(&b"abc"[..]));
    }
}
