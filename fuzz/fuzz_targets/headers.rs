//! Request header rewriting on arbitrary header maps.
//!
//! Properties: never panics; no hop-by-hop header survives (the fixed list, `Upgrade`, and
//! every header a `Connection` header names), except those the proxy sets itself and
//! `te: trailers` (kept for gRPC); the peer
//! is the last `X-Forwarded-For` hop, and the only one when it is not trusted.
#![no_main]

use std::net::{IpAddr, SocketAddr};

use arbitrary::Arbitrary;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use strangler_dataplane::headers::{Head, Peer, rewrite_request_headers, strip_hop_by_hop};
use strangler_plan::Cidr;

/// Names the rewrite treats specially, so the fuzzer meets them more often than by chance.
const KNOWN: [&str; 14] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-request-id",
    "x-custom",
];
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];
/// What the rewrite itself sets, whatever the client sent.
const SET_BY_PROXY: [&str; 6] = [
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-request-id",
    "x-real-ip",
    "forwarded",
];

#[derive(Arbitrary, Debug)]
enum Name {
    Known(u8),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Input {
    headers: Vec<(Name, Vec<u8>)>,
    peer: IpAddr,
    port: u16,
    request_id: Vec<u8>,
    /// Rewrite (true) or only strip (false).
    rewrite: bool,
    /// Whether the peer is a trusted proxy (its forwarding headers are appended to).
    trusted: bool,
}

/// The names a `Connection` value lists, read from its bytes independently of the code.
fn connection_names(value: &[u8]) -> Vec<HeaderName> {
    value
        .split(|b| *b == b',')
        .filter_map(|token| HeaderName::from_bytes(token.trim_ascii()).ok())
        .collect()
}

fuzz_target!(|input: Input| {
    let mut headers = HeaderMap::new();
    for (name, value) in &input.headers {
        let name = match name {
            Name::Known(i) => HeaderName::from_static(KNOWN[usize::from(*i) % KNOWN.len()]),
            Name::Raw(bytes) => match HeaderName::from_bytes(bytes) {
                Ok(name) => name,
                Err(_) => continue,
            },
        };
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(name, value);
        }
    }
    let mut hop_by_hop: Vec<HeaderName> = HOP_BY_HOP
        .iter()
        .map(|n| HeaderName::from_static(n))
        .collect();
    for value in headers.get_all(http::header::CONNECTION) {
        hop_by_hop.extend(connection_names(value.as_bytes()));
    }
    let peer = SocketAddr::new(input.peer, input.port);
    let request_id =
        HeaderValue::from_bytes(&input.request_id).unwrap_or(HeaderValue::from_static("id"));

    let everyone = [
        Cidr::parse("0.0.0.0/0").expect("a range"),
        Cidr::parse("::/0").expect("a range"),
    ];
    let trusted: &[Cidr] = if input.trusted { &everyone } else { &[] };
    if input.rewrite {
        let head = Head {
            host: headers.get(http::header::HOST).cloned(),
        };
        rewrite_request_headers(
            &mut headers,
            &head,
            Peer {
                addr: peer,
                trusted,
            },
            &request_id,
        );
    } else {
        strip_hop_by_hop(&mut headers);
    }

    for name in &hop_by_hop {
        if input.rewrite && SET_BY_PROXY.contains(&name.as_str()) {
            continue;
        }
        // `te: trailers` is kept for gRPC, and only that value.
        if input.rewrite && name == "te" && headers.get_all(name).iter().all(|v| v == "trailers") {
            continue;
        }
        assert!(
            !headers.contains_key(name),
            "hop-by-hop {name} survived: {headers:?}"
        );
    }
    if input.rewrite {
        let forwarded: Vec<&HeaderValue> = headers.get_all("x-forwarded-for").iter().collect();
        assert_eq!(forwarded.len(), 1, "{headers:?}");
        let text = forwarded[0].to_str().ok();
        let last = text.and_then(|v| v.rsplit(',').next()).map(str::trim);
        let ip = match input.peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(input.peer, IpAddr::V4),
            v4 => v4,
        };
        assert_eq!(last, Some(ip.to_string().as_str()), "{headers:?}");
        if !input.trusted {
            assert_eq!(text, Some(ip.to_string().as_str()), "replaced: {headers:?}");
        }
        assert_eq!(headers.get("x-request-id"), Some(&request_id));
        assert!(!headers.contains_key("host"));
    }
});
