//! The upstream clients, one per protocol a service may speak (`http1`, `h2c`, `h2`),
//! each with its own connection pool; a request goes through the one its service's
//! protocol names.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use hyper::body::Body;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::ClientConfig;
use strangler_plan::UpstreamProtocol;

/// Idle upstream connections are closed after this; below the upstreams' own idle timeouts
/// so the proxy, not the upstream, closes an idle connection.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// Idle connections kept per upstream instance.
const POOL_MAX_IDLE_PER_HOST: usize = 512;
/// Connecting to an upstream that does not answer fails after this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A client per upstream protocol, sending bodies of type `B`.
#[derive(Clone)]
pub struct Clients<B> {
    http1: Client<HttpConnector, B>,
    h2c: Client<HttpConnector, B>,
    h2: Client<HttpsConnector<HttpConnector>, B>,
}

impl<B> Clients<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Clients whose `h2` connections trust what `tls` trusts.
    pub fn new(tls: &Arc<ClientConfig>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
            .pool_timer(TokioTimer::new());
        let http1 = builder.build(connector.clone());
        builder.http2_only(true).timer(TokioTimer::new());
        let h2c = builder.build(connector.clone());
        let mut tcp = connector;
        tcp.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(ClientConfig::clone(tls))
            .https_only()
            .enable_http2()
            .wrap_connector(tcp);
        Self {
            http1,
            h2c,
            h2: builder.build(https),
        }
    }

    /// The HTTP/1.1 client (what the proxy's aggregates ask its own listener with).
    pub fn http1(&self) -> &Client<HttpConnector, B> {
        &self.http1
    }

    /// Sends `request` with the client of `protocol`.
    pub fn request(&self, protocol: UpstreamProtocol, request: Request<B>) -> ResponseFuture {
        match protocol {
            UpstreamProtocol::Http1 => self.http1.request(request),
            UpstreamProtocol::H2c => self.h2c.request(request),
            UpstreamProtocol::H2 => self.h2.request(request),
        }
    }
}
