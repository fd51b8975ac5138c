//! The request head as the proxy checks and rewrites it before anything is forwarded:
//! exactly one host (RFC 9112 §3.2), a transfer coding the proxy implements, forwarding
//! headers kept only from trusted peers, hop-by-hop headers removed.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use http::Version;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use strangler_plan::Cidr;

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1), besides `TE`
/// (removed apart: its `trailers` is kept for gRPC).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Why a request head is refused before routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// Two `Host` lines, an HTTP/1.1 request without one, or a host that is not one.
    BadHost(&'static str),
    /// An `X-Forwarded-For`, `Forwarded` or `X-Real-IP` line that is not visible ASCII.
    BadForwarding(&'static str),
    /// A transfer coding other than `chunked` alone (`gzip, chunked`): the proxy would
    /// forward the body with its coding lost.
    UnsupportedTransferEncoding(String),
}

impl HeadError {
    pub fn message(&self) -> String {
        match self {
            HeadError::BadHost(why) => (*why).to_string(),
            HeadError::BadForwarding(name) => {
                format!("the {name} header is not valid text (visible ASCII)")
            }
            HeadError::UnsupportedTransferEncoding(coding) => format!(
                "transfer coding `{coding}` is not supported; send the body with Content-Length or `Transfer-Encoding: chunked`"
            ),
        }
    }
}

/// What the head checks found: the host the client addressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The authority of an absolute-form target, else the `Host` line (RFC 9112 §3.2.2);
    /// `None` only for an HTTP/1.0 request without one.
    pub host: Option<HeaderValue>,
}

/// Checks what must hold before a request is routed.
pub fn check_head(parts: &Parts) -> Result<Head, HeadError> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let line = hosts.next();
    if hosts.next().is_some() {
        return Err(HeadError::BadHost(
            "a request carries one Host header, not two",
        ));
    }
    // An absolute-form target's authority is the host; a conflicting Host line is ignored.
    let host = match parts.uri.authority() {
        Some(authority) => Some(
            HeaderValue::from_str(authority.as_str())
                .map_err(|_| HeadError::BadHost("the target's authority is not a host"))?,
        ),
        None => line.cloned(),
    };
    if host.is_none() && parts.version == Version::HTTP_11 {
        return Err(HeadError::BadHost(
            "an HTTP/1.1 request needs a Host header",
        ));
    }
    if let Some(line) = line
        && (line.is_empty() || line.as_bytes().iter().any(|b| !b.is_ascii_graphic()))
    {
        return Err(HeadError::BadHost("the Host header is not a host"));
    }
    for (name, text) in [
        (&X_FORWARDED_FOR, "X-Forwarded-For"),
        (&FORWARDED, "Forwarded"),
        (&X_REAL_IP, "X-Real-IP"),
    ] {
        if parts
            .headers
            .get_all(name)
            .iter()
            .any(|v| v.to_str().is_err())
        {
            return Err(HeadError::BadForwarding(text));
        }
    }
    for coding in parts.headers.get_all(header::TRANSFER_ENCODING) {
        let text = String::from_utf8_lossy(coding.as_bytes());
        if !text.trim().eq_ignore_ascii_case("chunked") {
            return Err(HeadError::UnsupportedTransferEncoding(
                text.trim().to_string(),
            ));
        }
    }
    Ok(Head { host })
}

/// Whether the request asks to switch protocols (`Connection: upgrade` with `Upgrade`).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes hop-by-hop headers, including every header the `Connection` header names;
/// answers the `TE` it removed.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) -> Option<HeaderValue> {
    if headers.contains_key(header::CONNECTION) {
        // Split the raw bytes: a value with one non-ASCII byte (obs-text) still names the
        // headers in its other tokens.
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .filter_map(|name| HeaderName::from_bytes(name.trim_ascii()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::TE)
}

/// Whether a `TE` value says the client accepts trailers (`te: trailers`, which gRPC sends
/// and HTTP/2 allows as the one `TE` value).
fn accepts_trailers(te: &HeaderValue) -> bool {
    te.as_bytes().split(|b| *b == b',').any(|token| {
        token
            .split(|b| *b == b';')
            .next()
            .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"))
    })
}

/// Where a request came from and how to treat what it says about earlier hops.
#[derive(Debug, Clone, Copy)]
pub struct Peer<'a> {
    pub addr: SocketAddr,
    /// Addresses whose forwarding headers are kept (a load balancer in front).
    pub trusted: &'a [Cidr],
}

impl Peer<'_> {
    pub fn is_trusted(&self) -> bool {
        self.trusted.iter().any(|c| c.contains(self.addr.ip()))
    }
}

/// Rewrites a client's request headers for the upstream (the head passed [`check_head`]):
/// hop-by-hop headers removed; `Host` moved to `X-Forwarded-Host`; `X-Forwarded-For` gets
/// the peer appended when it is trusted and is replaced by the peer otherwise; a trusted
/// peer's `Forwarded` gets the peer appended and its `X-Real-IP` and `X-Forwarded-Proto` are
/// kept, while an untrusted client's `Forwarded` and `X-Real-IP` are dropped and its
/// `X-Forwarded-Proto` set; the request id is set.
pub fn rewrite_request_headers(
    headers: &mut HeaderMap,
    head: &Head,
    peer: Peer<'_>,
    request_id: &HeaderValue,
) {
    if strip_hop_by_hop(headers).is_some_and(|te| accepts_trailers(&te)) {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    headers.remove(header::HOST);
    match &head.host {
        Some(host) => headers.insert(X_FORWARDED_HOST, host.clone()),
        None => headers.remove(X_FORWARDED_HOST),
    };
    let trusted = peer.is_trusted();
    let ip = peer.addr.ip();
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    // This runs for every request: the peer's address is formatted once and handed over
    // without a copy, and nothing is built that the request did not ask for.
    let mut chain = String::new();
    let mut forwarded = String::new();
    if trusted {
        // A chain may arrive on several header lines; keep every hop, in order.
        for v in headers.get_all(&X_FORWARDED_FOR).iter() {
            let v = v.to_str().unwrap_or_default().trim();
            if !v.is_empty() {
                chain.push_str(v);
                chain.push_str(", ");
            }
        }
        for v in headers.get_all(&FORWARDED).iter() {
            let v = v.to_str().unwrap_or_default().trim();
            if !v.is_empty() {
                forwarded.push_str(v);
                forwarded.push_str(", ");
            }
        }
    }
    let ip_text = ip.to_string();
    if !forwarded.is_empty() {
        // A trusted proxy's Forwarded chain gets this hop (RFC 7239: IPv6 quoted).
        match ip {
            IpAddr::V6(_) => {
                let _ = write!(forwarded, "for=\"[{ip_text}]\"");
            }
            IpAddr::V4(_) => {
                let _ = write!(forwarded, "for={ip_text}");
            }
        }
    }
    headers.remove(&X_FORWARDED_FOR);
    headers.remove(&FORWARDED);
    if !trusted {
        // What an untrusted client says about earlier hops is dropped.
        headers.remove(&X_REAL_IP);
    }
    let forwarded_for = if chain.is_empty() {
        HeaderValue::from_maybe_shared(bytes::Bytes::from(ip_text)).ok()
    } else {
        chain.push_str(&ip_text);
        HeaderValue::from_maybe_shared(bytes::Bytes::from(chain)).ok()
    };
    if let Some(value) = forwarded_for {
        headers.insert(X_FORWARDED_FOR, value);
    }
    if !forwarded.is_empty()
        && let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(forwarded))
    {
        headers.insert(FORWARDED, value);
    }
    if !trusted || !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    headers.insert(REQUEST_ID_HEADER, request_id.clone());
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(raw: Request<()>) -> Parts {
        raw.into_parts().0
    }

    #[test]
    fn hop_by_hop_headers_are_removed_with_those_connection_names() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, X-Secret".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert(header::TE, "trailers".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-kept"]);
    }

    #[test]
    fn only_te_trailers_is_forwarded() {
        let head = Head { host: None };
        let peer = Peer {
            addr: "127.0.0.1:1".parse().unwrap(),
            trusted: &[],
        };
        let id = HeaderValue::from_static("id");
        for (te, kept) in [
            ("trailers", Some("trailers")),
            ("gzip, Trailers;q=0.5", Some("trailers")),
            ("gzip", None),
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::TE, te.parse().unwrap());
            rewrite_request_headers(&mut h, &head, peer, &id);
            assert_eq!(h.get(header::TE).map(|v| v.to_str().unwrap()), kept, "{te}");
        }
    }

    /// Found by fuzzing (`fuzz/fuzz_targets/headers.rs`): one non-ASCII byte in the
    /// `Connection` value made the whole value unreadable, so the headers it named were
    /// forwarded.
    #[test]
    fn a_connection_value_with_a_non_ascii_byte_still_names_its_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_bytes(b"Ww,\xff\xff0").unwrap(),
        );
        h.insert("ww", HeaderValue::from_static(""));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-kept"]);
    }

    #[test]
    fn the_host_is_one_line_or_the_target_authority() {
        let one = parts(
            Request::get("/x")
                .header("host", "shop.example")
                .body(())
                .unwrap(),
        );
        assert_eq!(
            check_head(&one).unwrap().host.unwrap(),
            "shop.example",
            "one Host line"
        );
        let two = parts(
            Request::get("/x")
                .header("host", "a.example")
                .header("host", "b.example")
                .body(())
                .unwrap(),
        );
        assert!(matches!(check_head(&two), Err(HeadError::BadHost(_))));
        let none = parts(Request::get("/x").body(()).unwrap());
        assert!(matches!(check_head(&none), Err(HeadError::BadHost(_))));
        let old = parts(
            Request::get("/x")
                .version(Version::HTTP_10)
                .body(())
                .unwrap(),
        );
        assert_eq!(check_head(&old).unwrap().host, None, "HTTP/1.0 may omit it");
        let absolute = parts(
            Request::get("http://h1.example/x")
                .header("host", "h2.example")
                .body(())
                .unwrap(),
        );
        assert_eq!(check_head(&absolute).unwrap().host.unwrap(), "h1.example");
    }

    #[test]
    fn only_chunked_alone_is_a_transfer_coding_the_proxy_forwards() {
        for (coding, ok) in [
            ("chunked", true),
            ("Chunked ", true),
            ("gzip, chunked", false),
            ("gzip", false),
        ] {
            let p = parts(
                Request::post("/x")
                    .header("host", "h")
                    .header("transfer-encoding", coding)
                    .body(())
                    .unwrap(),
            );
            assert_eq!(check_head(&p).is_ok(), ok, "{coding}");
        }
    }

    #[test]
    fn forwarding_headers_that_are_not_text_are_refused() {
        let mut p = parts(Request::get("/x").header("host", "h").body(()).unwrap());
        p.headers.insert(
            X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"1.1.1.1\xff").unwrap(),
        );
        assert_eq!(
            check_head(&p),
            Err(HeadError::BadForwarding("X-Forwarded-For"))
        );
    }

    fn rewritten(peer: &str, trusted: &[&str], pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let trusted: Vec<Cidr> = trusted.iter().map(|c| Cidr::parse(c).unwrap()).collect();
        let head = Head {
            host: h.get(header::HOST).cloned(),
        };
        let peer = Peer {
            addr: peer.parse().unwrap(),
            trusted: &trusted,
        };
        rewrite_request_headers(&mut h, &head, peer, &HeaderValue::from_static("req-1"));
        h
    }

    #[test]
    fn forwarding_headers_from_an_untrusted_peer_are_replaced() {
        let h = rewritten(
            "10.1.2.3:5555",
            &[],
            &[
                ("host", "shop.example"),
                ("x-forwarded-for", "1.1.1.1"),
                ("forwarded", "for=6.6.6.6"),
                ("x-real-ip", "6.6.6.6"),
                ("x-forwarded-proto", "https"),
            ],
        );
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert!(h.get("forwarded").is_none(), "dropped");
        assert!(h.get("x-real-ip").is_none(), "dropped");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "shop.example");
        assert!(h.get(header::HOST).is_none());
        assert_eq!(h["x-request-id"], "req-1");
    }

    #[test]
    fn forwarding_headers_from_a_trusted_peer_are_appended_to() {
        let h = rewritten(
            "10.1.2.3:5555",
            &["10.0.0.0/8"],
            &[
                ("host", "shop.example"),
                ("x-forwarded-for", "1.1.1.1"),
                ("x-forwarded-for", "2.2.2.2, 3.3.3.3"),
                ("forwarded", "for=1.1.1.1"),
                ("x-real-ip", "1.1.1.1"),
                ("x-forwarded-proto", "https"),
            ],
        );
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 3.3.3.3, 10.1.2.3");
        assert_eq!(h["forwarded"], "for=1.1.1.1, for=10.1.2.3");
        assert_eq!(h["x-real-ip"], "1.1.1.1");
        assert_eq!(h["x-forwarded-proto"], "https");
    }

    #[test]
    fn ipv6_peers_are_quoted_in_forwarded() {
        let h = rewritten("[2001:db8::7]:443", &[], &[]);
        assert_eq!(h["x-forwarded-for"], "2001:db8::7");
        assert!(h.get("x-forwarded-host").is_none());
        let h = rewritten(
            "[2001:db8::7]:443",
            &["2001:db8::/32"],
            &[("forwarded", "for=192.0.2.1")],
        );
        assert_eq!(h["forwarded"], "for=192.0.2.1, for=\"[2001:db8::7]\"");
        let mapped = rewritten("[::ffff:10.0.0.9]:80", &["10.0.0.0/8"], &[]);
        assert_eq!(mapped["x-forwarded-for"], "10.0.0.9", "mapped IPv4 is IPv4");
    }
}
