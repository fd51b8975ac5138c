//! Request spans (`[telemetry]`): the proxy continues the client's W3C trace, passes it to
//! the upstream with its own span as parent, and exports a span per request (and per
//! shadow leg, a linked child) to an OTLP/HTTP collector — here a receiver the test runs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e::{EchoUpstream, TestProxy, eventually};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::Value;

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// An OTLP/HTTP collector on port 0: every span posted to `/v1/traces`, with its resource's
/// `service.name`.
struct Receiver {
    url: String,
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

impl Receiver {
    async fn start() -> Self {
        let spans: Arc<Mutex<Vec<(String, Span)>>> = Arc::default();
        let kept = Arc::clone(&spans);
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let kept = Arc::clone(&kept);
                async move {
                    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
                        return axum::http::StatusCode::BAD_REQUEST;
                    };
                    for resource_spans in request.resource_spans {
                        let service = resource_spans
                            .resource
                            .iter()
                            .flat_map(|r| &r.attributes)
                            .find(|kv| kv.key == "service.name")
                            .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
                            .unwrap_or_default();
                        for scope in resource_spans.scope_spans {
                            for span in scope.spans {
                                kept.lock().unwrap().push((service.clone(), span));
                            }
                        }
                    }
                    axum::http::StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, spans }
    }

    fn spans(&self) -> Vec<(String, Span)> {
        self.spans.lock().unwrap().clone()
    }
}

fn text(value: Option<&AnyValue>) -> String {
    match value {
        Some(AnyValue::StringValue(s)) => s.clone(),
        other => format!("{other:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
}

/// A proxy with `legacy` and `new` echo upstreams, route `students` in shadow, and `extra`
/// appended to the plan.
async fn proxy(legacy: &EchoUpstream, new: &EchoUpstream, extra: &str) -> TestProxy {
    let routes = format!(
        "[[routes]]\nname = \"students\"\npaths = [\"/students/{{id}}\"]\nservice = \"new\"\nstage = \"shadow\"\n{extra}"
    );
    e2e::two_sided_proxy(legacy, &format!("\"{}\"", new.url()), "", &routes).await
}

/// The `traceparent` the upstream received, as its echo shows it.
fn upstream_traceparent(echo: &Value) -> Option<String> {
    echo["headers"]["traceparent"].as_str().map(str::to_string)
}

#[tokio::test]
async fn a_request_span_continues_the_client_trace_and_the_shadow_leg_is_a_linked_child() {
    let receiver = Receiver::start().await;
    let (legacy, new) = (
        EchoUpstream::start("legacy").await,
        EchoUpstream::start("new").await,
    );
    let telemetry = format!(
        "\n[telemetry]\notlp_endpoint = \"{}\"\nsample = \"100%\"\nservice_name = \"edge-test\"\n",
        receiver.url
    );
    let mut p = proxy(&legacy, &new, &telemetry).await;
    let client_traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let request = p
        .client
        .request(reqwest::Method::GET, "/students/7")
        .header("traceparent", &client_traceparent)
        .header("tracestate", "vendor=abc");
    let echo = p.client.send(request).await.expect(200);

    // The upstream continues the client's trace, as a child of the proxy's span.
    let upstream = upstream_traceparent(&echo).expect("the upstream got a traceparent");
    let parts: Vec<&str> = upstream.split('-').collect();
    assert_eq!(parts[1], CLIENT_TRACE, "{upstream}");
    assert_ne!(
        parts[2], CLIENT_SPAN,
        "the proxy's span is the upstream's parent"
    );
    assert_eq!(parts[3], "01");
    assert_eq!(echo["headers"]["tracestate"], "vendor=abc");
    let proxy_span = parts[2].to_string();

    let spans = eventually(
        Duration::from_secs(10),
        "the request and shadow spans",
        || {
            let spans = receiver.spans();
            async move { (spans.len() >= 2).then_some(spans) }
        },
    )
    .await;
    assert_eq!(spans.len(), 2, "{spans:?}");
    let (service, request_span) = spans
        .iter()
        .find(|(_, s)| s.name == "proxy request")
        .expect("a request span");
    assert_eq!(service, "edge-test");
    assert_eq!(hex(&request_span.trace_id), CLIENT_TRACE);
    assert_eq!(hex(&request_span.span_id), proxy_span);
    assert_eq!(hex(&request_span.parent_span_id), CLIENT_SPAN);
    assert_eq!(request_span.trace_state, "vendor=abc");
    for (key, value) in [
        ("strangler.route", "students"),
        ("strangler.stage", "shadow"),
        ("strangler.side", "legacy"),
        ("strangler.service", "legacy"),
        ("http.response.status_code", "200"),
        ("strangler.shadow", "mirrored"),
    ] {
        assert_eq!(
            attribute(request_span, key).as_deref(),
            Some(value),
            "{key}"
        );
    }
    let (_, leg) = spans
        .iter()
        .find(|(_, s)| s.name == "shadow leg")
        .expect("a shadow span");
    assert_eq!(hex(&leg.trace_id), CLIENT_TRACE);
    assert_eq!(
        hex(&leg.parent_span_id),
        proxy_span,
        "a child of the request"
    );
    assert_eq!(leg.links.len(), 1);
    assert_eq!(
        hex(&leg.links[0].span_id),
        proxy_span,
        "linked to the request"
    );
    assert_eq!(attribute(leg, "strangler.service").as_deref(), Some("new"));
    // The echoes name different services: the candidate's answer differs.
    assert_eq!(
        attribute(leg, "strangler.shadow.outcome").as_deref(),
        Some("different")
    );
    eventually(Duration::from_secs(5), "exported spans counted", || async {
        (p.metric("strangler_spans_total{outcome=\"exported\"}")
            .await
            >= 2)
            .then_some(())
    })
    .await;

    // A request without a traceparent starts a trace of its own.
    let echo = p.client.get("/students/8").await.expect(200);
    let started = upstream_traceparent(&echo).expect("a new trace");
    assert!(!started.contains(CLIENT_TRACE), "{started}");
    p.proxy.take().unwrap().stop().await;
}

#[tokio::test]
async fn without_telemetry_nothing_is_exported_and_trace_headers_pass_unchanged() {
    let receiver = Receiver::start().await;
    let (legacy, new) = (
        EchoUpstream::start("legacy").await,
        EchoUpstream::start("new").await,
    );
    let mut p = proxy(&legacy, &new, "").await;
    let client_traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let request = p
        .client
        .request(reqwest::Method::GET, "/students/7")
        .header("traceparent", &client_traceparent);
    let echo = p.client.send(request).await.expect(200);
    assert_eq!(
        upstream_traceparent(&echo).as_deref(),
        Some(client_traceparent.as_str())
    );
    let echo = p.client.get("/students/8").await.expect(200);
    assert_eq!(upstream_traceparent(&echo), None);
    assert!(
        !p.metrics().await.contains("strangler_spans"),
        "no span counters without [telemetry]"
    );
    p.proxy.take().unwrap().stop().await;
    assert!(receiver.spans().is_empty());
}
