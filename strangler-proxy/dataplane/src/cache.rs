//! The response cache: answers to `GET` (and `HEAD`) kept in memory for the routes whose
//! plan section says `cache = { ... }`, one cache per proxy shared by every data-plane
//! thread.
//!
//! An entry is keyed by the route, the side that answered (legacy or new: a stage change
//! never serves one side's answer for the other), the path with its query and, when the
//! upstream's answer says `Vary`, the values of the varied request headers (the names are
//! kept under the key without them, the answer under the key with them). What is stored
//! follows the upstream's `Cache-Control`: `no-store`, `private` and `no-cache` are never
//! stored (this cache does not revalidate), `s-maxage` (the shared cache's lifetime) wins
//! over `max-age`, which wins over the route's `ttl`; `Vary: *` and `Set-Cookie` are never
//! stored, and only `200` answers are.
//!
//! Memory is bounded by [`moka`]: entries are weighed by their body and headers, the least
//! useful evicted first, each expiring after its own lifetime. A lookup takes no lock that
//! serializes threads (moka's reads are lock-free; its bookkeeping is batched), so the
//! cache is one `Arc` the route table hands every thread.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{Either, Full};
use moka::sync::Cache;
use strangler_plan::CacheSettings;

use crate::forward::ClientBody;
use crate::metrics::Side;

/// The header on every answer of a cached route: `hit`, `miss` or `bypass`.
pub const CACHE_HEADER: HeaderName = HeaderName::from_static("x-strangler-cache");

/// What an entry is kept under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    route: Box<str>,
    side: Side,
    /// The normalized path with the client's query.
    target: Box<str>,
    /// The varied request headers' values (empty in a primary key).
    varied: Box<[(HeaderName, Option<HeaderValue>)]>,
}

impl Key {
    /// The key of `route`'s answer on `side` for `target` (path and query).
    pub fn new(route: &str, side: Side, target: &str) -> Self {
        Self {
            route: route.into(),
            side,
            target: target.into(),
            varied: Box::new([]),
        }
    }

    /// This key with the values `request` has for `names`.
    fn varied(&self, names: &[HeaderName], request: &HeaderMap) -> Self {
        Self {
            varied: names
                .iter()
                .map(|n| (n.clone(), request.get(n).cloned()))
                .collect(),
            ..self.clone()
        }
    }
}

/// A stored answer.
#[derive(Debug)]
pub struct Stored {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    stored_at: Instant,
    ttl: Duration,
}

#[derive(Debug, Clone)]
enum Entry {
    Answer(Arc<Stored>),
    /// The answers under this key vary by these request headers.
    Varies(Arc<[HeaderName]>, Duration),
}

impl Entry {
    fn ttl(&self) -> Duration {
        match self {
            Entry::Answer(stored) => stored.ttl,
            Entry::Varies(_, ttl) => *ttl,
        }
    }
}

/// Each entry lives as long as the answer it holds said.
struct PerEntry;

impl moka::Expiry<Key, Entry> for PerEntry {
    fn expire_after_create(&self, _: &Key, entry: &Entry, _: Instant) -> Option<Duration> {
        Some(entry.ttl())
    }

    fn expire_after_update(
        &self,
        _: &Key,
        entry: &Entry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.ttl())
    }
}

/// The proxy's response cache.
pub struct ResponseCache {
    entries: Cache<Key, Entry>,
    /// The plan section it was made for (a reload with other settings makes a new one).
    pub settings: CacheSettings,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("entries", &self.entries.entry_count())
            .field("settings", &self.settings)
            .finish()
    }
}

impl ResponseCache {
    pub fn new(settings: CacheSettings) -> Self {
        let entries = Cache::builder()
            .max_capacity(settings.max_memory)
            .weigher(|key: &Key, entry: &Entry| {
                let own = key.target.len() + key.route.len() + 64;
                let size = match entry {
                    Entry::Answer(stored) => {
                        own + stored.body.len()
                            + stored
                                .headers
                                .iter()
                                .map(|(n, v)| n.as_str().len() + v.len() + 32)
                                .sum::<usize>()
                    }
                    Entry::Varies(names, _) => own + names.len() * 32,
                };
                u32::try_from(size).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntry)
            .build();
        Self { entries, settings }
    }

    /// The answer stored for `key` and a request with `headers`, as the client gets it.
    pub fn lookup(&self, key: &Key, headers: &HeaderMap) -> Option<Response<ClientBody>> {
        let stored = match self.entries.get(key)? {
            Entry::Answer(stored) => stored,
            Entry::Varies(names, _) => match self.entries.get(&key.varied(&names, headers))? {
                Entry::Answer(stored) => stored,
                Entry::Varies(..) => return None,
            },
        };
        let mut response = Response::new(Either::Right(Full::new(stored.body.clone())));
        *response.status_mut() = stored.status;
        *response.headers_mut() = stored.headers.clone();
        let age = stored.stored_at.elapsed().as_secs();
        response
            .headers_mut()
            .insert(header::AGE, HeaderValue::from(age));
        Some(response)
    }

    /// A collector of the answer to `request`, stored under `key` when it is complete, or
    /// `None` when the answer (`status`, `headers`) must not be stored.
    pub fn fill(
        self: &Arc<Self>,
        key: Key,
        request: &HeaderMap,
        status: StatusCode,
        headers: &HeaderMap,
        route_ttl: Duration,
    ) -> Option<Fill> {
        let Storable { ttl, vary } = storable(status, headers, route_ttl)?;
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.settings.max_entry) {
            return None;
        }
        let key = if vary.is_empty() {
            key
        } else {
            let varied = key.varied(&vary, request);
            self.entries
                .insert(key, Entry::Varies(Arc::from(vary), ttl));
            varied
        };
        Some(Fill {
            cache: Arc::clone(self),
            key,
            status,
            headers: headers.clone(),
            ttl,
            body: BytesMut::new(),
        })
    }

    /// Drops the entries of `route` (every route when `None`) whose path starts with
    /// `prefix` (every path when `None`); answers how many answers went.
    pub fn purge(&self, route: Option<&str>, prefix: Option<&str>) -> u64 {
        let mut purged = 0;
        for (key, entry) in &self.entries {
            let chosen = route.is_none_or(|r| *key.route == *r)
                && prefix.is_none_or(|p| key.target.starts_with(p));
            if chosen {
                self.entries.invalidate(&*key);
                if matches!(entry, Entry::Answer(_)) {
                    purged += 1;
                }
            }
        }
        self.entries.run_pending_tasks();
        purged
    }

    /// Answers stored now.
    pub fn len(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Answer(_)))
            .count() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the entries weigh now.
    pub fn weight(&self) -> u64 {
        self.entries.weighted_size()
    }
}

/// How an answer may be stored.
#[derive(Debug, PartialEq)]
struct Storable {
    ttl: Duration,
    vary: Vec<HeaderName>,
}

/// Whether an answer with `status` and `headers` may be kept by a shared cache, and for how
/// long (the upstream's `s-maxage`, else its `max-age`, else `route_ttl`).
fn storable(status: StatusCode, headers: &HeaderMap, route_ttl: Duration) -> Option<Storable> {
    if status != StatusCode::OK || headers.contains_key(header::SET_COOKIE) {
        return None;
    }
    let (mut max_age, mut s_maxage) = (None, None);
    for value in headers.get_all(header::CACHE_CONTROL) {
        for directive in value.to_str().ok()?.split(',') {
            let (name, arg) = match directive.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                None => (directive.trim(), None),
            };
            let seconds = || arg.and_then(|a| a.parse::<u64>().ok());
            match name.to_ascii_lowercase().as_str() {
                "no-store" | "private" | "no-cache" => return None,
                "max-age" => max_age = Some(seconds()?),
                "s-maxage" => s_maxage = Some(seconds()?),
                _ => {}
            }
        }
    }
    let ttl = s_maxage.or(max_age).map_or(route_ttl, Duration::from_secs);
    if ttl.is_zero() {
        return None;
    }
    let mut vary = Vec::new();
    for value in headers.get_all(header::VARY) {
        for name in value.to_str().ok()?.split(',') {
            let name = name.trim();
            if name == "*" {
                return None;
            }
            if !name.is_empty() {
                vary.push(HeaderName::from_bytes(name.as_bytes()).ok()?);
            }
        }
    }
    vary.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    vary.dedup();
    Some(Storable { ttl, vary })
}

/// An answer being collected while it streams to the client; stored when it ended whole
/// within the entry cap, dropped otherwise.
pub struct Fill {
    cache: Arc<ResponseCache>,
    key: Key,
    status: StatusCode,
    headers: HeaderMap,
    ttl: Duration,
    body: BytesMut,
}

impl Fill {
    /// Adds a piece of the body; `false` when the answer grew over the cap (give it up).
    pub fn push(&mut self, data: &Bytes) -> bool {
        if (self.body.len() + data.len()) as u64 > self.cache.settings.max_entry {
            return false;
        }
        self.body.extend_from_slice(data);
        true
    }

    /// The body ended whole: store the answer.
    pub fn finish(self) {
        let stored = Stored {
            status: self.status,
            headers: self.headers,
            body: self.body.freeze(),
            stored_at: Instant::now(),
            ttl: self.ttl,
        };
        self.cache
            .entries
            .insert(self.key, Entry::Answer(Arc::new(stored)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (n, v) in pairs {
            map.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    const TTL: Duration = Duration::from_secs(30);

    #[test]
    fn cache_control_decides_what_is_stored_and_for_how_long() {
        let secs = |n| Some(Duration::from_secs(n));
        for (status, pairs, ttl) in [
            (200, vec![], secs(30)),
            (200, vec![("cache-control", "max-age=5")], secs(5)),
            (
                200,
                vec![("cache-control", "public, max-age=5, s-maxage=9")],
                secs(9),
            ),
            (
                200,
                vec![
                    ("cache-control", "max-age=5"),
                    ("cache-control", "s-maxage=7"),
                ],
                secs(7),
            ),
            (200, vec![("cache-control", "no-store")], None),
            (200, vec![("cache-control", "private, max-age=60")], None),
            (200, vec![("cache-control", "no-cache")], None),
            (200, vec![("cache-control", "max-age=0")], None),
            (200, vec![("cache-control", "max-age=soon")], None),
            (200, vec![("vary", "*")], None),
            (200, vec![("set-cookie", "a=b")], None),
            (404, vec![], None),
            (500, vec![], None),
        ] {
            let got = storable(StatusCode::from_u16(status).unwrap(), &headers(&pairs), TTL);
            assert_eq!(got.map(|s| s.ttl), ttl, "{status} {pairs:?}");
        }
        let varied = storable(
            StatusCode::OK,
            &headers(&[("vary", "Accept-Language, accept")]),
            TTL,
        );
        assert_eq!(
            varied.unwrap().vary,
            [
                HeaderName::from_static("accept"),
                HeaderName::from_static("accept-language")
            ]
        );
    }

    fn store(
        cache: &Arc<ResponseCache>,
        key: &Key,
        request: &HeaderMap,
        answer: &[(&str, &str)],
        body: &str,
    ) {
        let mut fill = cache
            .fill(key.clone(), request, StatusCode::OK, &headers(answer), TTL)
            .unwrap();
        assert!(fill.push(&Bytes::copy_from_slice(body.as_bytes())));
        fill.finish();
    }

    async fn body(response: Response<ClientBody>) -> String {
        use http_body_util::BodyExt;
        let bytes = response
            .into_body()
            .collect()
            .await
            .ok()
            .unwrap()
            .to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn entries_are_apart_by_side_and_by_varied_header() {
        let cache = Arc::new(ResponseCache::new(CacheSettings::default()));
        let legacy = Key::new("students", Side::Legacy, "/students/1");
        let new = Key::new("students", Side::New, "/students/1");
        store(&cache, &legacy, &HeaderMap::new(), &[], "legacy");
        assert_eq!(
            body(cache.lookup(&legacy, &HeaderMap::new()).unwrap()).await,
            "legacy"
        );
        assert!(
            cache.lookup(&new, &HeaderMap::new()).is_none(),
            "never the other side's answer"
        );

        let fr = headers(&[("accept-language", "fr")]);
        let de = headers(&[("accept-language", "de")]);
        let page = Key::new("students", Side::New, "/students/2");
        store(
            &cache,
            &page,
            &fr,
            &[("vary", "accept-language")],
            "bonjour",
        );
        assert_eq!(body(cache.lookup(&page, &fr).unwrap()).await, "bonjour");
        assert!(cache.lookup(&page, &de).is_none());
        store(&cache, &page, &de, &[("vary", "accept-language")], "hallo");
        assert_eq!(body(cache.lookup(&page, &de).unwrap()).await, "hallo");
        assert_eq!(body(cache.lookup(&page, &fr).unwrap()).await, "bonjour");

        assert_eq!(cache.purge(Some("students"), Some("/students/2")), 2);
        assert!(cache.lookup(&page, &fr).is_none());
        assert_eq!(cache.purge(None, None), 1);
        assert!(cache.is_empty());
    }

    #[test]
    fn an_answer_over_the_entry_cap_is_not_stored() {
        let settings = CacheSettings {
            max_entry: 4,
            ..CacheSettings::default()
        };
        let cache = Arc::new(ResponseCache::new(settings));
        let key = Key::new("r", Side::Legacy, "/a");
        let declared = headers(&[("content-length", "5")]);
        assert!(
            cache
                .fill(
                    key.clone(),
                    &HeaderMap::new(),
                    StatusCode::OK,
                    &declared,
                    TTL
                )
                .is_none()
        );
        let mut fill = cache
            .fill(
                key.clone(),
                &HeaderMap::new(),
                StatusCode::OK,
                &HeaderMap::new(),
                TTL,
            )
            .unwrap();
        assert!(fill.push(&Bytes::from_static(b"abc")));
        assert!(!fill.push(&Bytes::from_static(b"de")));
    }
}
