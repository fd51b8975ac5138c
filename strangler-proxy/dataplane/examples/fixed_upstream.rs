//! A tiny upstream for benchmarks: answers every request with the same small JSON body over
//! HTTP/1.1 keep-alive, so what a benchmark measures is the proxy in front of it.
//!
//! `cargo run --release --example fixed_upstream -- 127.0.0.1:9000`

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

const BODY: &str = r#"{"id":"01a20ad3-2f73-7706-9beb-e2f10d07b525","email":"ada@example.org","name":"Ada Lovelace","status":"active","created_at":"2026-11-23T23:52:22.131Z","updated_at":"2026-11-23T23:52:22.131Z"}"#;

async fn answer(_: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::from_static(BODY.as_bytes())));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9000".to_string())
        .parse()
        .map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("address: {e}"))
        })?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("fixed upstream on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}
