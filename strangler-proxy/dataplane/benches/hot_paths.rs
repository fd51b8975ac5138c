//! The proxy's hot paths: route matching on a plan of 200 routes, the diff engine on 1 KB and
//! 100 KB JSON pairs (equal and differing), and request header rewriting.
//!
//! `cargo bench -p strangler-proxy --bench hot_paths`

use std::collections::HashMap;
use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use serde_json::{Value, json};
use strangler_dataplane::headers::{Head, Peer, rewrite_request_headers};
use strangler_dataplane::routing::{Registry, RouteTable};
use strangler_diff::{self as diff, Rules};
use strangler_plan::path::{normalize, split};

fn plan_with_200_routes() -> strangler_plan::Plan {
    let mut text = String::from(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nstate = \"s.db\"\n\
         [services.legacy]\nurls = [\"http://127.0.0.1:1\"]\nlegacy = true\n\
         [services.new]\nurls = [\"http://127.0.0.1:2\"]\n",
    );
    for i in 0..200 {
        let path = match i % 4 {
            0 => format!("/domain{i}/{{id}}"),
            1 => format!("/domain{i}/{{id}}/items/{{item}}"),
            2 => format!("/domain{i}/{{*rest}}"),
            _ => format!("/domain{i}/search"),
        };
        text.push_str(&format!(
            "[[routes]]\nname = \"r{i}\"\npaths = [\"{path}\"]\nservice = \"new\"\n"
        ));
    }
    strangler_plan::parse(std::path::Path::new("bench.toml"), &text).expect("a valid plan")
}

fn routing(c: &mut Criterion) {
    let plan = plan_with_200_routes();
    let table = RouteTable::build(&plan, &HashMap::new(), 1, &mut Registry::default());
    let mut group = c.benchmark_group("route matching, 200 routes");
    for (name, path) in [
        ("first route", "/domain0/42"),
        ("last route", "/domain199/search"),
        ("catch-all", "/domain198/a/b/c"),
        ("unmatched", "/nowhere/at/all"),
        ("needs normalizing", "//domain101/../domain101/7/items/%41"),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let normal = normalize(black_box(path)).expect("a path");
                let segments = split(&normal);
                black_box(
                    table
                        .find(&Method::GET, &segments)
                        .map(|(r, _)| r.spec.name.len()),
                )
            })
        });
    }
    group.finish();
}

/// A JSON document of about `bytes` bytes: a list of student records.
fn document(bytes: usize) -> Value {
    let one = json!({ "id": "01a20ad3-2f73-7706-9beb-e2f10d07b525", "email": "ada@example.org",
                      "name": "Ada Lovelace", "status": "active", "points": 120,
                      "tags": ["a", "b"], "created_at": "2026-11-23T23:52:22.131Z" });
    let per = one.to_string().len();
    json!({ "students": vec![one; (bytes / per).max(1)], "next": null })
}

fn diffing(c: &mut Criterion) {
    let mut group = c.benchmark_group("diff engine");
    let rules = Rules::with_default_headers();
    for (size, label) in [(1024, "1 KB"), (100 * 1024, "100 KB")] {
        let a = document(size);
        let mut b = a.clone();
        if let Some(first) = b["students"].get_mut(0) {
            first["name"] = json!("Ada L.");
        }
        let (ab, bb) = (a.to_string().into_bytes(), b.to_string().into_bytes());
        group.bench_function(format!("{label} equal"), |bench| {
            bench.iter(|| black_box(diff::diff_bodies(black_box(&ab), black_box(&ab), &rules)))
        });
        group.bench_function(format!("{label} differing"), |bench| {
            bench.iter(|| black_box(diff::diff_bodies(black_box(&ab), black_box(&bb), &rules)))
        });
    }
    group.finish();
}

fn headers(c: &mut Criterion) {
    let peer: SocketAddr = "10.0.0.7:51234".parse().expect("an address");
    let id = HeaderValue::from_static("req-1");
    let mut template = HeaderMap::new();
    for (k, v) in [
        ("host", "school.example"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64)"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, br"),
        ("connection", "keep-alive, x-hop"),
        ("x-hop", "1"),
        ("keep-alive", "timeout=5"),
        ("x-forwarded-for", "203.0.113.9"),
        (
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
        ("cookie", "sid=abc; theme=dark"),
    ] {
        template.insert(
            http::header::HeaderName::from_static(k),
            HeaderValue::from_static(v),
        );
    }
    let trusted = [strangler_plan::Cidr::parse("10.0.0.0/8").expect("a range")];
    c.bench_function("request header rewriting", |b| {
        b.iter_batched(
            || template.clone(),
            |mut h| {
                let head = Head {
                    host: h.get(http::header::HOST).cloned(),
                };
                rewrite_request_headers(
                    &mut h,
                    &head,
                    Peer {
                        addr: peer,
                        trusted: &trusted,
                    },
                    &id,
                );
                black_box(h)
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, routing, diffing, headers);
criterion_main!(benches);
