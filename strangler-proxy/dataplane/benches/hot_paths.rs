//! The proxy's hot paths: route matching on a plan of 200 routes, the diff engine on 1 KB and
//! 100 KB JSON pairs (equal and differing), request header rewriting, and the shadow leg's
//! own work per request: the tee that copies an answer while passing it on, and the
//! comparison of two answers under the route's rules (191 B and 10 KB bodies).
//!
//! `cargo bench -p strangler-dataplane --bench hot_paths`

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::hint::black_box;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use hyper::body::{Body, Frame};
use serde_json::{Value, json};
use strangler_dataplane::headers::{Head, Peer, rewrite_request_headers};
use strangler_dataplane::routing::{Registry, RouteTable, compile_rules};
use strangler_dataplane::shadow::{self, Asked, Captured, Outcome, TeeBody};
use strangler_diff::{self as diff, Answer, Rules};
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

/// The tiny upstream's answer (`examples/fixed_upstream.rs`).
const SMALL: &str = r#"{"id":"01a20ad3-2f73-7706-9beb-e2f10d07b525","email":"ada@example.org","name":"Ada Lovelace","status":"active","created_at":"2026-11-23T23:52:22.131Z","updated_at":"2026-11-23T23:52:22.131Z"}"#;

/// A plan whose one route is shadowed as in `scripts/bench`, with a `compare` section.
fn shadow_plan() -> strangler_plan::Plan {
    let text = "[proxy]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nstate = \"s.db\"\n\
                [services.legacy]\nurls = [\"http://127.0.0.1:1\"]\nlegacy = true\n\
                [services.candidate]\nurls = [\"http://127.0.0.1:2\"]\n\
                [[routes]]\nname = \"bench\"\npaths = [\"/{*rest}\"]\nservice = \"candidate\"\n\
                shadow = { sample = 100, noise_sample = 0 }\n\
                compare = { ignore = [\"/students/*/created_at\"], headers = [\"content-type\"] }\n";
    strangler_plan::parse(std::path::Path::new("bench.toml"), text).expect("a valid plan")
}

/// An answer body as hyper hands it on: data frames of up to 8 KiB, the last of which ends
/// it (as with a `Content-Length`).
struct Chunks(Bytes);

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let n = self.0.len().min(8 * 1024);
        Poll::Ready((n > 0).then(|| Ok(Frame::data(self.0.split_to(n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

/// Reads a body to its end, as the connection writing it to the client does.
fn drain<B: Body<Data = Bytes, Error = Infallible> + Unpin>(mut body: B) -> usize {
    let mut cx = Context::from_waker(Waker::noop());
    let mut passed = 0;
    while let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut body).poll_frame(&mut cx) {
        passed += frame.data_ref().map_or(0, |d| d.len());
        black_box(frame);
    }
    passed
}

fn tee(c: &mut Criterion) {
    let plan = shadow_plan();
    let cap = plan.routes[0].shadow.max_body_bytes;
    let mut group = c.benchmark_group("shadow tee");
    for (label, body) in [
        ("191 B", Bytes::from_static(SMALL.as_bytes())),
        ("10 KB", Bytes::from(document(10 * 1024).to_string())),
    ] {
        group.bench_function(format!("{label} passed on, no copy"), |b| {
            b.iter(|| drain(TeeBody::passthrough(Chunks(black_box(body.clone())))))
        });
        group.bench_function(format!("{label} passed on and captured"), |b| {
            b.iter(|| {
                let (tee, mut copy) = TeeBody::capture(Chunks(black_box(body.clone())), cap);
                drain(tee);
                match copy.try_recv() {
                    Ok(Captured::Complete(bytes)) => black_box(bytes.len()),
                    other => panic!("expected the whole body, got {other:?}"),
                }
            })
        });
    }
    group.finish();
}

/// An answer as the leg holds it: status, header pairs, body.
fn answer(body: &[u8]) -> Answer {
    Answer {
        status: 200,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("content-length".into(), body.len().to_string()),
            ("date".into(), "Mon, 30 Nov 2026 17:01:00 GMT".into()),
        ],
        body: bytes::Bytes::copy_from_slice(body),
    }
}

fn shadow_comparison(c: &mut Criterion) {
    let plan = shadow_plan();
    let rules = compile_rules(&plan.routes[0].compare);
    let noise = HashSet::new();
    let method = Method::GET;
    let asked = Asked {
        request_id: "0190a6f2-7c1e-7d4b-9a55-3f1f2b8e0c11",
        method: &method,
        path_and_query: "/students/01a20ad3-2f73-7706-9beb-e2f10d07b525",
        body: b"",
    };
    let ten_kb = document(10 * 1024);
    let mut changed = ten_kb.clone();
    for (i, field, value) in [
        (3, "name", json!("Ada L.")),
        (17, "points", json!(121)),
        (30, "status", json!("suspended")),
    ] {
        if let Some(student) = changed["students"].get_mut(i) {
            student[field] = value;
        }
    }
    let small = answer(SMALL.as_bytes());
    let ten_kb = answer(ten_kb.to_string().as_bytes());
    let changed = answer(changed.to_string().as_bytes());
    let mut group = c.benchmark_group("shadow comparison");
    for (label, primary, candidate, expected) in [
        ("191 B equal", &small, &small, 0),
        ("10 KB equal", &ten_kb, &ten_kb, 0),
        ("10 KB, 3 fields differ", &ten_kb, &changed, 3),
    ] {
        // What the leg does with two answers: compare them, then sort out noise and sample.
        let judge = || {
            let differences = diff::compare(primary, candidate, &rules);
            shadow::compared(
                &asked,
                (primary, 1.2),
                (candidate, 1.4),
                differences,
                &noise,
            )
        };
        match judge() {
            Outcome::Compared { differences, .. } => assert_eq!(differences.len(), expected),
            other => panic!("expected a comparison, got {other:?}"),
        }
        group.bench_function(label, |b| b.iter(|| black_box(judge())));
    }
    group.finish();
}

criterion_group!(benches, routing, diffing, headers, tee, shadow_comparison);
criterion_main!(benches);
