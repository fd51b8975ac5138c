//! A fixed upstream for benchmarks: answers every request with the same JSON body over
//! HTTP/1.1 keep-alive, so what a benchmark measures is the proxy in front of it. By default
//! the body is one small student record (180 bytes); with `--body-bytes N` it is a list of
//! student records of about N bytes, built once at start.
//!
//! `cargo run --release --example fixed_upstream -- 127.0.0.1:9000 [--body-bytes 10240]`

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

const BODY: &str = r#"{"id":"01a20ad3-2f73-7706-9beb-e2f10d07b525","email":"ada@example.org","name":"Ada Lovelace","status":"active","created_at":"2026-11-23T23:52:22.131Z","updated_at":"2026-11-23T23:52:22.131Z"}"#;

/// A page of student records of about `bytes` bytes (at least one record), the same at
/// every start.
fn students(bytes: usize) -> Bytes {
    const NAMES: [&str; 6] = [
        "Ada Lovelace",
        "Grace Hopper",
        "Alan Turing",
        "Edsger Dijkstra",
        "Barbara Liskov",
        "Donald Knuth",
    ];
    let record = |i: usize| -> Value {
        let name = NAMES[i % NAMES.len()];
        let login = name.to_lowercase().replace(' ', ".");
        json!({
            "id": format!("01a20ad3-2f73-7706-9beb-{:012x}", 0xe2f1_0d07_b525_u64 + i as u64),
            "email": format!("{login}{i}@example.org"),
            "name": name,
            "status": if i % 7 == 3 { "suspended" } else { "active" },
            "credits": 30 + (i * 13) % 150,
            "gpa": ((200 + (i * 37) % 200) as f64) / 100.0,
            "courses": [format!("CS{}", 100 + i % 50), format!("MA{}", 200 + i % 30)],
            "created_at": "2026-11-23T23:52:22.131Z",
            "updated_at": "2026-11-23T23:52:22.131Z",
        })
    };
    // Records are added while the document gets nearer the size asked.
    let document = |records: &[String]| {
        format!(
            r#"{{"students":[{}],"total":{},"next":null}}"#,
            records.join(","),
            records.len()
        )
    };
    let mut records = vec![record(0).to_string()];
    let mut length = document(&records).len();
    loop {
        let next = record(records.len()).to_string();
        let longer = length + next.len() + 1 + (records.len() + 1).to_string().len()
            - records.len().to_string().len();
        if longer.abs_diff(bytes) >= length.abs_diff(bytes) {
            break;
        }
        records.push(next);
        length = longer;
    }
    let text = document(&records);
    assert_eq!(text.len(), length, "the length kept while adding records");
    Bytes::from(text)
}

fn usage(message: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("{message}\nusage: fixed_upstream ADDR [--body-bytes N]"),
    )
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut addr = "127.0.0.1:9000".to_string();
    let mut body = Bytes::from_static(BODY.as_bytes());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--body-bytes" => {
                let n: usize = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| usage("--body-bytes wants a number of bytes"))?;
                body = students(n);
            }
            _ if arg.starts_with('-') => return Err(usage(&format!("unknown option {arg}"))),
            _ => addr = arg,
        }
    }
    let addr: SocketAddr = addr.parse().map_err(|e| usage(&format!("address: {e}")))?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!(
        "fixed upstream on {}, {}-byte body",
        listener.local_addr()?,
        body.len()
    );
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let answer = move |_: Request<hyper::body::Incoming>| {
                let mut response = Response::new(Full::new(body.clone()));
                response.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static("application/json"),
                );
                async move { Ok::<_, Infallible>(response) }
            };
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}
