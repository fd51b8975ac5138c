//! TLS and HTTP/2 at the edge with real clients and servers: HTTPS with ALPN (a browser-like
//! client gets h2, an HTTP/1.1-only one HTTP/1.1), prior-knowledge h2c on the plain
//! listener, a certificate replaced while the proxy runs, services spoken to over h2c and
//! h2, gRPC (tonic) through the proxy with its statuses and streams intact, and shadow for
//! an HTTP/2 client.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use e2e::{EchoUpstream, TestProxy, eventually};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use reqwest::Version;
use rustls::pki_types::CertificateDer;
use serde_json::{Value, json};
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// A test certificate authority, and certificates for 127.0.0.1 it signs.
struct Pki {
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca_der: CertificateDer<'static>,
    ca_pem: String,
}

/// A certificate (PEM), its key (PEM), and the certificate as a client receives it (DER).
struct Leaf {
    cert: String,
    key: String,
    der: Vec<u8>,
}

impl Pki {
    fn new() -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "strangler test CA");
        let cert = params.self_signed(&key).unwrap();
        Self {
            ca_der: cert.der().clone(),
            ca_pem: cert.pem(),
            ca: rcgen::Issuer::new(params, key),
        }
    }

    fn leaf(&self, name: &str) -> Leaf {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.signed_by(&key, &self.ca).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// Client settings that trust this CA only and offer `alpn`.
    fn client_config(&self, alpn: &[&[u8]]) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }

    /// An HTTPS client that trusts this CA only and offers h2 and http/1.1 in ALPN, as a
    /// browser does, or http/1.1 alone.
    fn client(&self, h2: bool) -> Client<HttpsConnector<HttpConnector>, Empty<Bytes>> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(self.client_config(&[]))
            .https_only()
            .enable_http1();
        let https = if h2 {
            https.enable_http2().build()
        } else {
            https.build()
        };
        Client::builder(TokioExecutor::new()).build(https)
    }
}

/// A GET with `client`: the protocol it was answered in, the status and the JSON body.
async fn get(
    client: &Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    url: &str,
) -> (http::Version, u16, Value) {
    let answer = client.get(url.parse().unwrap()).await.unwrap();
    let (version, status) = (answer.version(), answer.status().as_u16());
    let body = answer.into_body().collect().await.unwrap().to_bytes();
    (version, status, serde_json::from_slice(&body).unwrap())
}

fn write_pair(dir: &Path, leaf: &Leaf) {
    std::fs::write(dir.join("cert.pem"), &leaf.cert).unwrap();
    std::fs::write(dir.join("key.pem"), &leaf.key).unwrap();
}

const TLS: &str = "tls = { cert = \"cert.pem\", key = \"key.pem\" }";

/// A proxy over TLS (the pair `leaf`) in front of one echo upstream, `legacy`.
async fn https_proxy(leaf: &Leaf) -> (TestProxy, EchoUpstream, String) {
    let legacy = EchoUpstream::start("legacy").await;
    let dir = tempfile::tempdir().unwrap();
    write_pair(dir.path(), leaf);
    let plan = e2e::plan_toml(
        dir.path(),
        &[("legacy", format!("\"{}\"", legacy.url()))],
        TLS,
    );
    let p = TestProxy::start(dir, &plan).await;
    let url = p.url.replacen("http://", "https://", 1);
    (p, legacy, url)
}

/// The certificate a new TLS connection to `addr` is shown.
async fn served_certificate(pki: &Pki, addr: SocketAddr) -> Vec<u8> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::from(addr.ip());
    let tls = tokio_rustls::TlsConnector::from(Arc::new(pki.client_config(&[b"h2"])))
        .connect(name, tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn https_speaks_http2_or_http1_as_alpn_settles() {
    let pki = Pki::new();
    let leaf = pki.leaf("edge one");
    let (_p, _legacy, url) = https_proxy(&leaf).await;

    let browser = pki.client(true);
    let (version, status, seen) = get(&browser, &format!("{url}/students/7?x=1")).await;
    assert_eq!((version, status), (Version::HTTP_2, 200));
    assert_eq!(seen["service"], "legacy");
    assert_eq!(seen["path"], "/students/7");
    assert_eq!(seen["query"], "x=1");
    let host = url.trim_start_matches("https://");
    assert_eq!(seen["headers"]["x-forwarded-host"], host, "{seen}");

    let old = pki.client(false);
    let (version, status, seen) = get(&old, &format!("{url}/students/7")).await;
    assert_eq!((version, status), (Version::HTTP_11, 200));
    assert_eq!(seen["path"], "/students/7");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_plain_listener_takes_h2c_with_prior_knowledge_and_http1_alike() {
    let legacy = EchoUpstream::start("legacy").await;
    let dir = tempfile::tempdir().unwrap();
    let plan = e2e::plan_toml(
        dir.path(),
        &[("legacy", format!("\"{}\"", legacy.url()))],
        "",
    );
    let p = TestProxy::start(dir, &plan).await;
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for _ in 0..3 {
        let answer = h2c.get(format!("{}/anything", p.url)).send().await.unwrap();
        assert_eq!(answer.version(), Version::HTTP_2);
        assert_eq!(answer.status(), 200);
        let seen: Value = answer.json().await.unwrap();
        assert_eq!(seen["path"], "/anything");
    }
    let answer = reqwest::get(format!("{}/anything", p.url)).await.unwrap();
    assert_eq!(answer.version(), Version::HTTP_11);
    assert_eq!(answer.status(), 200);
    assert_eq!(legacy.hits(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replaced_certificate_is_served_without_a_restart() {
    let pki = Pki::new();
    let first = pki.leaf("edge first");
    let (p, _legacy, _url) = https_proxy(&first).await;
    let addr = p.proxy.as_ref().unwrap().listen;
    assert_eq!(served_certificate(&pki, addr).await, first.der);

    let second = pki.leaf("edge second");
    write_pair(p.dir.path(), &second);
    eventually(
        Duration::from_secs(20),
        "the new certificate served",
        || async { (served_certificate(&pki, addr).await == second.der).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_that_does_not_match_its_certificate_stops_the_start() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (pki.leaf("one"), pki.leaf("two"));
    write_pair(
        dir.path(),
        &Leaf {
            key: two.key,
            ..one
        },
    );
    let plan = e2e::plan_toml(
        dir.path(),
        &[("legacy", "\"http://127.0.0.1:9\"".into())],
        TLS,
    );
    let path = dir.path().join("migration-plan.toml");
    std::fs::write(&path, plan).unwrap();
    let err = strangler_control::Proxy::start(strangler_plan::load(&path).unwrap())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("does not belong to the certificate") && err.contains("key.pem"),
        "{err}"
    );
}

/// An HTTP/2-only upstream (TLS when `tls` is given) that answers with what it received.
async fn h2_upstream(tls: Option<Arc<rustls::ServerConfig>>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|request: http::Request<Incoming>| {
                    let header = |name: &str| {
                        request
                            .headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string)
                    };
                    let seen = json!({
                        "version": format!("{:?}", request.version()),
                        "path": request.uri().path(),
                        "te": header("te"),
                        "x-forwarded-host": header("x-forwarded-host"),
                    });
                    async move {
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(
                            seen.to_string(),
                        ))))
                    }
                });
                let http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                let _ = match tls {
                    None => http2.serve_connection(TokioIo::new(stream), service).await,
                    Some(config) => {
                        let Ok(stream) =
                            tokio_rustls::TlsAcceptor::from(config).accept(stream).await
                        else {
                            return;
                        };
                        http2.serve_connection(TokioIo::new(stream), service).await
                    }
                };
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn services_are_spoken_to_over_h2c_and_h2_as_the_plan_says() {
    let pki = Pki::new();
    let leaf = pki.leaf("upstream");
    let cleartext = h2_upstream(None).await;
    let secure = h2_upstream(Some(server_config(&leaf, &[b"h2"]))).await;
    let legacy = EchoUpstream::start("legacy").await;

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &pki.ca_pem).unwrap();
    let mut plan = e2e::plan_toml(
        dir.path(),
        &[("legacy", format!("\"{}\"", legacy.url()))],
        "",
    );
    plan.push_str(&format!(
        "[services.cleartext]\nurls = [\"http://{cleartext}\"]\nprotocol = \"h2c\"\n\
         [services.secure]\nurls = [\"https://{secure}\"]\nprotocol = \"h2\"\nca = \"ca.pem\"\n"
    ));
    for name in ["cleartext", "secure"] {
        plan.push_str(&format!(
            "[[routes]]\nname = \"{name}\"\npaths = [\"/{name}/{{*rest}}\"]\nservice = \"{name}\"\nstage = \"cutover\"\n"
        ));
    }
    let p = TestProxy::start(dir, &plan).await;

    for name in ["cleartext", "secure"] {
        let answer = reqwest::Client::new()
            .get(format!("{}/{name}/a", p.url))
            .header("te", "trailers")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{name}");
        assert_eq!(
            answer.version(),
            Version::HTTP_11,
            "the client's own protocol"
        );
        let seen: Value = answer.json().await.unwrap();
        assert_eq!(seen["version"], "HTTP/2.0", "{name}: {seen}");
        assert_eq!(seen["path"], format!("/{name}/a"));
        assert_eq!(seen["te"], "trailers", "{name}: `te: trailers` is kept");
        assert!(seen["x-forwarded-host"].is_string(), "{seen}");
    }
    assert_eq!(legacy.hits(), 0);
}

/// A proxy in front of an echo `legacy` and a gRPC server at `addr` (spoken to over
/// h2c), with the calls of its service `grpc_service` (`package.Service`) cut over to it.
async fn grpc_proxy(addr: SocketAddr, grpc_service: &str) -> (TestProxy, EchoUpstream) {
    let legacy = EchoUpstream::start("legacy").await;
    let dir = tempfile::tempdir().unwrap();
    let mut plan = e2e::plan_toml(
        dir.path(),
        &[("legacy", format!("\"{}\"", legacy.url()))],
        "",
    );
    plan.push_str(&format!(
        "[services.grpc]\nurls = [\"http://{addr}\"]\nprotocol = \"h2c\"\n\
         [[routes]]\nname = \"grpc\"\npaths = [\"/{grpc_service}/{{method}}\"]\nmethods = [\"POST\"]\nservice = \"grpc\"\nstage = \"cutover\"\n"
    ));
    (TestProxy::start(dir, &plan).await, legacy)
}

/// A gRPC channel to `url` (h2c).
async fn channel(url: &str) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_passes_through_with_its_statuses_and_streams() {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("billing", ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let (p, legacy) = grpc_proxy(grpc, "grpc.health.v1.Health").await;
    let mut through = HealthClient::new(channel(&p.url).await);
    let mut direct = HealthClient::new(channel(&format!("http://{grpc}")).await);
    let ask = |service: &str| {
        tonic::Request::new(HealthCheckRequest {
            service: service.to_string(),
        })
    };

    // Unary.
    let answer = through.check(ask("billing")).await.unwrap().into_inner();
    assert_eq!(answer.status, ServingStatus::Serving as i32);

    // A trailers-only error reaches the client as the server sent it.
    let via_proxy = through.check(ask("nobody")).await.unwrap_err();
    let from_server = direct.check(ask("nobody")).await.unwrap_err();
    assert_eq!(via_proxy.code(), tonic::Code::NotFound);
    assert_eq!(
        (via_proxy.code(), via_proxy.message()),
        (from_server.code(), from_server.message())
    );

    // Server streaming: each change arrives while the call stays open.
    let mut updates = through.watch(ask("billing")).await.unwrap().into_inner();
    let first = updates.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    reporter
        .set_service_status("billing", ServingStatus::NotServing)
        .await;
    let second = tokio::time::timeout(Duration::from_secs(10), updates.message())
        .await
        .expect("the stream's next message passes through at once")
        .unwrap()
        .unwrap();
    assert_eq!(second.status, ServingStatus::NotServing as i32);
    assert_eq!(legacy.hits(), 0);
}

/// A message of the chat service below.
#[derive(Clone, PartialEq, prost::Message)]
struct Note {
    #[prost(string, tag = "1")]
    text: String,
}

/// A bidirectional gRPC stream: answers each note upper-cased as it arrives, and ends the
/// call with INVALID_ARGUMENT on the note "fail".
struct Chat;

impl tonic::server::StreamingService<Note> for Chat {
    type Response = Note;
    type ResponseStream = tokio_stream::wrappers::ReceiverStream<Result<Note, tonic::Status>>;
    type Future = std::future::Ready<Result<tonic::Response<Self::ResponseStream>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<tonic::Streaming<Note>>) -> Self::Future {
        let mut notes = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            while let Ok(Some(note)) = notes.message().await {
                let reply = if note.text == "fail" {
                    Err(tonic::Status::invalid_argument("told to fail"))
                } else {
                    Ok(Note {
                        text: note.text.to_uppercase(),
                    })
                };
                let last = reply.is_err();
                if tx.send(reply).await.is_err() || last {
                    return;
                }
            }
        });
        std::future::ready(Ok(tonic::Response::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Serves [`Chat`] over h2c on a port of its own.
async fn chat_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = hyper::service::service_fn(|request: http::Request<Incoming>| async {
                let mut grpc =
                    tonic::server::Grpc::new(tonic_prost::ProstCodec::<Note, Note>::default());
                Ok::<_, Infallible>(grpc.streaming(Chat, request).await)
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grpc_stream_flows_both_ways_and_ends_with_the_servers_status() {
    let chat = chat_server().await;
    let (p, legacy) = grpc_proxy(chat, "test.Chat").await;
    let mut grpc = tonic::client::Grpc::new(channel(&p.url).await);
    grpc.ready().await.unwrap();
    let (notes, outbound) = tokio::sync::mpsc::channel::<Note>(4);
    let note = |text: &str| Note {
        text: text.to_string(),
    };
    notes.send(note("hello")).await.unwrap();
    let mut replies = grpc
        .streaming(
            tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(outbound)),
            http::uri::PathAndQuery::from_static("/test.Chat/Talk"),
            tonic_prost::ProstCodec::<Note, Note>::default(),
        )
        .await
        .unwrap()
        .into_inner();
    /// The next reply, which must come while the call is open.
    async fn next(replies: &mut tonic::Streaming<Note>) -> Result<Option<Note>, tonic::Status> {
        tokio::time::timeout(Duration::from_secs(10), replies.message())
            .await
            .expect("each reply passes through while the call is open")
    }
    // Each reply comes back while the client's side of the stream is still open.
    assert_eq!(next(&mut replies).await.unwrap().unwrap().text, "HELLO");
    notes.send(note("again")).await.unwrap();
    assert_eq!(next(&mut replies).await.unwrap().unwrap().text, "AGAIN");
    notes.send(note("fail")).await.unwrap();
    let status = next(&mut replies).await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (tonic::Code::InvalidArgument, "told to fail")
    );
    assert_eq!(legacy.hits(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http2_clients_request_is_mirrored_and_compared() {
    let legacy = EchoUpstream::start("legacy").await;
    let candidate = EchoUpstream::start("candidate").await;
    let p = e2e::two_sided_proxy(
        &legacy,
        &format!("\"{}\"", candidate.url()),
        "",
        "[[routes]]\nname = \"students\"\npaths = [\"/students/{id}\"]\nservice = \"new\"\nstage = \"shadow\"\n",
    )
    .await;
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for i in 0..3 {
        let answer = h2c
            .get(format!("{}/students/{i}", p.url))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.version(), Version::HTTP_2);
        let seen: Value = answer.json().await.unwrap();
        assert_eq!(seen["service"], "legacy", "legacy answers in shadow");
    }
    let r = eventually(Duration::from_secs(30), "3 comparisons", || async {
        let r = p.shadow_report("students");
        (r["compared"].as_i64().unwrap_or(0) >= 3).then_some(r)
    })
    .await;
    assert_eq!(r["compared"], 3, "{r}");
    assert_eq!(r["mismatched"], 3, "the two echo their own names: {r}");
    assert_eq!(candidate.hits(), 3);
    let paths = r["mismatching_paths"].as_array().unwrap();
    assert!(paths.iter().any(|p| p["path"] == "/service"), "{r}");
}

/// A leaf's pair as a rustls server's settings, offering `alpn`.
fn server_config(leaf: &Leaf, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(leaf.der.clone())],
        <rustls::pki_types::PrivateKeyDer as rustls::pki_types::pem::PemObject>::from_pem_slice(
            leaf.key.as_bytes(),
        )
        .unwrap(),
    )
    .unwrap();
    server.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(server)
}

/// An issuer's JWKS (the test key `rsa1`) over HTTPS with `leaf`'s certificate: its address,
/// and how many fetches were served and how many TLS handshakes failed.
async fn jwks_over_https(
    leaf: &Leaf,
) -> (
    SocketAddr,
    Arc<std::sync::atomic::AtomicUsize>,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let jwk: Value = serde_json::from_str(
        &std::fs::read_to_string(e2e::tokens::keys_dir().join("rsa1.jwk.json")).unwrap(),
    )
    .unwrap();
    let body = Bytes::from(json!({ "keys": [jwk] }).to_string());
    let (served, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config(leaf, &[b"http/1.1"]));
    let (s, r) = (Arc::clone(&served), Arc::clone(&refused));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, body, served, refused) = (
                acceptor.clone(),
                body.clone(),
                Arc::clone(&s),
                Arc::clone(&r),
            );
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    refused.fetch_add(1, Ordering::SeqCst);
                    return;
                };
                let service = hyper::service::service_fn(move |_: http::Request<Incoming>| {
                    served.fetch_add(1, Ordering::SeqCst);
                    let body = body.clone();
                    async move { Ok::<_, Infallible>(http::Response::new(Full::new(body))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, served, refused)
}

/// A JWKS fetched over HTTPS: with the plan's `jwks_ca` naming the CA that signed the
/// issuer's certificate, a token signed with the set's key is admitted; without it the
/// issuer is never trusted (every handshake refused), and tokens stay 503.
#[tokio::test(flavor = "multi_thread")]
async fn a_jwks_over_https_is_trusted_through_the_plans_ca() {
    use std::sync::atomic::Ordering;
    let pki = Pki::new();
    let (jwks, served, refused) = jwks_over_https(&pki.leaf("issuer")).await;
    let token = e2e::tokens::sign(
        jsonwebtoken::Algorithm::RS256,
        "rsa1",
        Some("rsa1"),
        &e2e::tokens::claims("s-1"),
    );
    for trusted in [true, false] {
        let legacy = EchoUpstream::start("legacy").await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("issuer-ca.pem"), &pki.ca_pem).unwrap();
        let ca = if trusted {
            "jwks_ca = \"issuer-ca.pem\"\n"
        } else {
            ""
        };
        let plan = format!(
            "{}\n[edge.auth]\nissuer = \"https://id.test\"\naudience = \"school\"\njwks_url = \"https://{jwks}/jwks.json\"\n{ca}",
            e2e::plan_toml(
                dir.path(),
                &[("legacy", format!("\"{}\"", legacy.url()))],
                ""
            )
        );
        let p = TestProxy::start(dir, &plan).await;
        let client = reqwest::Client::new();
        let status = || async {
            client
                .get(format!("{}/students/1", p.url))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        };
        if trusted {
            eventually(
                Duration::from_secs(10),
                "the HTTPS JWKS verifying the token",
                || async { (status().await == 200).then_some(()) },
            )
            .await;
            assert!(served.load(Ordering::SeqCst) >= 1);
        } else {
            let before = refused.load(Ordering::SeqCst);
            eventually(
                Duration::from_secs(10),
                "two refused handshakes",
                || async { (refused.load(Ordering::SeqCst) >= before + 2).then_some(()) },
            )
            .await;
            assert_eq!(
                status().await,
                503,
                "an untrusted issuer's keys must not verify"
            );
        }
    }
}
