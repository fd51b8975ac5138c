//! The edge policies of the plan that this module owns: response caching (`[edge.cache]`
//! defaults, a route's `cache = { ... }`) and aggregate routes (`[[aggregates]]`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::file::{Ctx, PlanError, RouteSpec, parse_size};
use crate::path::{PathTemplate, TemplateSegment, split};

/// Memory the response cache may hold when `[edge.cache]` sets none.
pub const DEFAULT_CACHE_MAX_MEMORY: u64 = 64 * 1024 * 1024;
/// Largest answer body stored when `[edge.cache]` sets none.
pub const DEFAULT_CACHE_MAX_ENTRY: u64 = 1024 * 1024;
/// Time an answer is kept when neither the route nor the upstream says.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(30);
/// Time an aggregate waits for each part when it sets none.
pub const DEFAULT_AGGREGATE_TIMEOUT: Duration = Duration::from_secs(2);

/// `[edge.cache]`: the response cache's defaults.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCacheDefaults {
    max_memory: Option<Spanned<String>>,
    max_entry: Option<Spanned<String>>,
    ttl: Option<Spanned<String>>,
    authenticated: Option<bool>,
}

/// A route's `cache = { ... }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRouteCache {
    ttl: Option<Spanned<String>>,
    authenticated: Option<bool>,
}

/// One `[[aggregates]]` entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAggregate {
    name: Spanned<String>,
    path: Spanned<String>,
    parts: Spanned<BTreeMap<String, Spanned<String>>>,
    timeout: Option<Spanned<String>>,
    partial_status: Option<Spanned<i64>>,
}

/// The response cache of the whole proxy (`[edge.cache]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// Bytes of answers (bodies and headers) kept at most; the least useful go first.
    pub max_memory: u64,
    /// An answer with a larger body is passed on, never stored.
    pub max_entry: u64,
    /// A route's TTL when it sets none.
    pub ttl: Duration,
    /// A route's `authenticated` when it sets none.
    pub authenticated: bool,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            max_memory: DEFAULT_CACHE_MAX_MEMORY,
            max_entry: DEFAULT_CACHE_MAX_ENTRY,
            ttl: DEFAULT_CACHE_TTL,
            authenticated: false,
        }
    }
}

/// A route's caching (`cache = { ttl = "30s", authenticated = false }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteCache {
    /// How long an answer is kept when the upstream's `Cache-Control` gives no lifetime.
    pub ttl: Duration,
    /// Requests with `Authorization` or a cookie are answered from the cache (and stored)
    /// too: the route's answers are the same for every client. Otherwise they bypass it.
    pub authenticated: bool,
}

/// An aggregate route: one `GET` answered by several parts, each asked through the proxy's
/// own routing, merged into one JSON object keyed by part name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateSpec {
    /// Its name, in metrics and answers.
    pub name: String,
    pub path: PathTemplate,
    /// Part name → path with `{param}` placeholders from `path` (a query may follow `?`).
    pub parts: Vec<(String, String)>,
    /// Time each part has to answer.
    pub timeout: Duration,
    /// Status of an answer where some part failed (200 or 207).
    pub partial_status: u16,
}

impl AggregateSpec {
    /// The part paths for a request whose path (split into `segments`) matched `path`:
    /// each placeholder replaced by the request's value.
    pub fn part_paths(&self, segments: &[&str]) -> Vec<(String, String)> {
        self.parts
            .iter()
            .map(|(name, template)| {
                let mut out = String::with_capacity(template.len());
                let mut rest = template.as_str();
                while let Some(open) = rest.find('{') {
                    out.push_str(&rest[..open]);
                    let after = &rest[open + 1..];
                    let Some(close) = after.find('}') else {
                        break;
                    };
                    let param = &after[..close];
                    out.push_str(self.path.param(segments, param).unwrap_or_default());
                    rest = &after[close + 1..];
                }
                out.push_str(rest);
                (name.clone(), out)
            })
            .collect()
    }
}

impl Ctx<'_> {
    /// `[edge.cache]`, defaults filled in.
    pub(crate) fn cache_settings(
        &self,
        raw: Option<&Spanned<RawCacheDefaults>>,
    ) -> Result<CacheSettings, PlanError> {
        let mut settings = CacheSettings::default();
        let Some(raw) = raw.map(Spanned::get_ref) else {
            return Ok(settings);
        };
        let size = |value: &Spanned<String>, field: &str| {
            parse_size(value.get_ref())
                .ok_or_else(|| self.at(value, field, "must be a size like 64MiB or 512KiB"))
        };
        if let Some(v) = &raw.max_memory {
            settings.max_memory = size(v, "edge.cache.max_memory")?;
        }
        if let Some(v) = &raw.max_entry {
            settings.max_entry = size(v, "edge.cache.max_entry")?;
            if settings.max_entry > settings.max_memory {
                return Err(self.at(
                    v,
                    "edge.cache.max_entry",
                    "must not be larger than edge.cache.max_memory",
                ));
            }
        }
        if let Some(v) = &raw.ttl {
            settings.ttl = self.duration(v, "edge.cache.ttl")?;
        }
        if let Some(a) = raw.authenticated {
            settings.authenticated = a;
        }
        Ok(settings)
    }

    /// Route `i`'s `cache` section, with the `[edge.cache]` defaults.
    pub(crate) fn route_cache(
        &self,
        raw: &Spanned<RawRouteCache>,
        route: &RouteSpec,
        i: usize,
        defaults: &CacheSettings,
    ) -> Result<RouteCache, PlanError> {
        let r = raw.get_ref();
        let methods_cacheable = route.methods.as_ref().is_none_or(|methods| {
            methods
                .iter()
                .any(|m| *m == http::Method::GET || *m == http::Method::HEAD)
        });
        if !methods_cacheable {
            return Err(self.at(
                raw,
                &format!("routes[{i}].cache"),
                "only GET and HEAD answers are cached, and this route allows neither",
            ));
        }
        let ttl = match &r.ttl {
            None => defaults.ttl,
            Some(t) => self.duration(t, &format!("routes[{i}].cache.ttl"))?,
        };
        Ok(RouteCache {
            ttl,
            authenticated: r.authenticated.unwrap_or(defaults.authenticated),
        })
    }

    /// `[[aggregates]]`: each path a template, each part a path whose placeholders the
    /// aggregate's path has and which a route answers for `GET` (never an aggregate).
    pub(crate) fn aggregates(
        &self,
        raw: &[Spanned<RawAggregate>],
        routes: &[RouteSpec],
    ) -> Result<Vec<AggregateSpec>, PlanError> {
        let mut aggregates: Vec<AggregateSpec> = Vec::new();
        let mut raws: Vec<&RawAggregate> = Vec::new();
        for (i, spanned) in raw.iter().enumerate() {
            let a = spanned.get_ref();
            let field = |f: &str| format!("aggregates[{i}].{f}");
            let name = a.name.get_ref().clone();
            if !crate::file::is_name(&name) {
                return Err(self.at(
                    &a.name,
                    &field("name"),
                    "a name is lower-case letters, digits, - and _",
                ));
            }
            if aggregates.iter().any(|o| o.name == name) || routes.iter().any(|r| r.name == name) {
                return Err(self.at(
                    &a.name,
                    &field("name"),
                    format!("`{name}` already names a route or an aggregate"),
                ));
            }
            let path = PathTemplate::parse(a.path.get_ref()).map_err(|m| {
                self.at(
                    &a.path,
                    &field("path"),
                    format!("`{}` {m}", a.path.get_ref()),
                )
            })?;
            if let Some(other) = aggregates.iter().find(|o| o.path.shape() == path.shape()) {
                return Err(self.at(
                    &a.path,
                    &field("path"),
                    format!("aggregate `{}` has the same path", other.name),
                ));
            }
            if a.parts.get_ref().is_empty() {
                return Err(self.at(&a.parts, &field("parts"), "must name at least one part"));
            }
            let mut parts = Vec::new();
            for (part, value) in a.parts.get_ref() {
                let f = field(&format!("parts.{part}"));
                if part.starts_with('_') || part.is_empty() {
                    return Err(self.at(
                        value,
                        &f,
                        "a part name must not start with _ (the answer's _errors is the proxy's)",
                    ));
                }
                check_part(value.get_ref(), &path).map_err(|m| self.at(value, &f, m))?;
                parts.push((part.clone(), value.get_ref().clone()));
            }
            let timeout = match &a.timeout {
                None => DEFAULT_AGGREGATE_TIMEOUT,
                Some(t) => self.duration(t, &field("timeout"))?,
            };
            let partial_status = match &a.partial_status {
                None => 200,
                Some(s) if matches!(*s.get_ref(), 200 | 207) => *s.get_ref() as u16,
                Some(s) => {
                    return Err(self.at(s, &field("partial_status"), "must be 200 or 207"));
                }
            };
            aggregates.push(AggregateSpec {
                name,
                path,
                parts,
                timeout,
                partial_status,
            });
            raws.push(a);
        }
        // Every part must reach a route (placeholders filled with a sample value), and
        // none an aggregate (the fan-out would call itself).
        for (i, (aggregate, a)) in aggregates.iter().zip(raws).enumerate() {
            for (part, sample) in aggregate.part_paths(&sample_segments(&aggregate.path)) {
                let value = &a.parts.get_ref()[&part];
                let f = format!("aggregates[{i}].parts.{part}");
                let path = sample.split('?').next().unwrap_or_default();
                let segments = split(path);
                if let Some(other) = aggregates.iter().find(|o| o.path.matches(&segments)) {
                    return Err(self.at(
                        value,
                        &f,
                        format!(
                            "`{}` is aggregate `{}`: a part must be a route",
                            value.get_ref(),
                            other.name
                        ),
                    ));
                }
                let routed = routes.iter().any(|r| {
                    r.allows(&http::Method::GET) && r.paths.iter().any(|t| t.matches(&segments))
                });
                if !routed {
                    return Err(self.at(
                        value,
                        &f,
                        format!("`{}` matches no route that allows GET", value.get_ref()),
                    ));
                }
            }
        }
        Ok(aggregates)
    }
}

/// A part's path: starts with `/`, and every `{name}` is a parameter of `aggregate`.
fn check_part(part: &str, aggregate: &PathTemplate) -> Result<(), String> {
    if !part.starts_with('/') {
        return Err(format!("`{part}` must start with /"));
    }
    let mut rest = part;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("`{part}`: a `{{` without its `}}`"))?;
        let name = &after[..close];
        let is_param = aggregate
            .segments()
            .iter()
            .any(|s| matches!(s, TemplateSegment::Param(n) if n == name));
        if !is_param {
            return Err(format!(
                "`{part}`: placeholder {{{name}}} is not a parameter of the aggregate's path `{aggregate}`"
            ));
        }
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("`{part}`: a `}}` without its `{{`"));
    }
    Ok(())
}

/// Segments of a path `template` matches, every parameter `1`.
fn sample_segments(template: &PathTemplate) -> Vec<&str> {
    template
        .segments()
        .iter()
        .map(|s| match s {
            TemplateSegment::Literal(l) => l.as_str(),
            TemplateSegment::Param(_) | TemplateSegment::Tail(_) => "1",
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::file::parse;
    use crate::file::tests::BASE;

    const ROUTES: &str = r#"
[[routes]]
name = "students"
paths = ["/students/{id}"]
service = "students"

[[routes]]
name = "invoices"
paths = ["/invoices"]
methods = ["GET"]
service = "students"
"#;

    fn check(extra: &str) -> Result<crate::Plan, crate::PlanError> {
        crate::file::tests::check(&format!("{ROUTES}{extra}"))
    }

    /// The 1-based line of `extra` (added after the routes) that holds `needle`.
    fn line_of(extra: &str, needle: &str) -> usize {
        let text = format!("{BASE}{ROUTES}{extra}");
        let at = text.find(needle).unwrap();
        text[..at].matches('\n').count() + 1
    }

    #[test]
    fn cache_sections_are_read_with_their_defaults() {
        let plan = check(
            "cache = { ttl = \"5s\" }\n[edge.cache]\nmax_memory = \"8MiB\"\nauthenticated = true\n",
        )
        .unwrap();
        assert_eq!(plan.cache.max_memory, 8 << 20);
        assert_eq!(plan.cache.max_entry, super::DEFAULT_CACHE_MAX_ENTRY);
        let invoices = &plan.routes[1];
        let cache = invoices.cache.unwrap();
        assert_eq!(cache.ttl, std::time::Duration::from_secs(5));
        assert!(cache.authenticated, "the [edge.cache] default applies");
        assert_eq!(plan.routes[0].cache, None);
    }

    #[test]
    fn bad_cache_settings_name_their_line_and_field() {
        for (extra, at, field) in [
            (
                "cache = { ttl = \"soon\" }\n",
                "cache",
                "routes[1].cache.ttl",
            ),
            ("cache = { size = 1 }\n", "cache", ""),
            (
                "[edge.cache]\nmax_memory = \"lots\"\n",
                "max_memory",
                "edge.cache.max_memory",
            ),
            (
                "[edge.cache]\nmax_memory = \"1MiB\"\nmax_entry = \"2MiB\"\n",
                "max_entry",
                "edge.cache.max_entry",
            ),
        ] {
            let err = check(extra).unwrap_err();
            let line = line_of(extra, at);
            assert_eq!(
                (err.line, err.field.as_str()),
                (line, field),
                "{extra}: {err}"
            );
        }
        let err = parse(
            Path::new("plan.toml"),
            &format!("{BASE}{ROUTES}")
                .replace("methods = [\"GET\"]", "methods = [\"POST\"]\ncache = {}"),
        )
        .unwrap_err();
        assert_eq!(err.field, "routes[1].cache");
        assert!(err.message.contains("GET and HEAD"), "{err}");
    }

    const OVERVIEW: &str = r#"
[[aggregates]]
name = "overview"
path = "/students/{id}/overview"
timeout = "1s"
parts = { student = "/students/{id}", invoices = "/invoices?student_id={id}" }
"#;

    #[test]
    fn an_aggregate_is_read_and_fills_its_parts() {
        let plan = check(OVERVIEW).unwrap();
        let overview = &plan.aggregates[0];
        assert_eq!(overview.partial_status, 200);
        let segments = ["students", "42", "overview"];
        assert_eq!(
            overview.part_paths(&segments),
            [
                (
                    "invoices".to_string(),
                    "/invoices?student_id=42".to_string()
                ),
                ("student".to_string(), "/students/42".to_string()),
            ]
        );
    }

    #[test]
    fn bad_aggregates_name_their_line_and_field() {
        for (from, to, field, says) in [
            (
                "student_id={id}",
                "student_id={sid}",
                "aggregates[0].parts.invoices",
                "{sid}",
            ),
            (
                "/students/{id}\"",
                "/teachers/{id}\"",
                "aggregates[0].parts.student",
                "no route",
            ),
            (
                "timeout = \"1s\"",
                "timeout = \"1s\"\npartial_status = 500",
                "aggregates[0].partial_status",
                "200 or 207",
            ),
            (
                "name = \"overview\"",
                "name = \"students\"",
                "aggregates[0].name",
                "already",
            ),
            (
                "student = ",
                "_errors = ",
                "aggregates[0].parts._errors",
                "_errors",
            ),
        ] {
            let err = check(&OVERVIEW.replace(from, to)).unwrap_err();
            assert_eq!(err.field, field, "{err}");
            assert!(
                err.line > BASE.lines().count() + ROUTES.lines().count(),
                "{err}"
            );
            assert!(err.message.contains(says), "{err}");
        }
    }

    #[test]
    fn aggregates_are_refused_beside_a_tls_listener() {
        let base = BASE.replace(
            "state = \"data/strangler.db\"\n",
            "state = \"data/strangler.db\"\ntls = { cert = \"c.pem\", key = \"k.pem\" }\n",
        );
        let err = parse(Path::new("plan.toml"), &format!("{base}{ROUTES}{OVERVIEW}")).unwrap_err();
        assert_eq!(err.field, "aggregates[0]", "{err}");
        assert!(err.message.contains("plain listener"), "{err}");
    }
}
