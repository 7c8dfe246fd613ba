//! Header rewriting: hop-by-hop headers are not forwarded (except what an upgrade needs),
//! `X-Forwarded-For/-Proto/-Host` are set (replacing incoming ones unless the peer is
//! trusted), and the request is made an HTTP/1.1 origin-form request for the worker.

use std::net::IpAddr;

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Uri, Version};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The `Upgrade` header of a request asking for a protocol upgrade (HTTP/1.1 only).
pub fn upgrade_of(parts: &Parts) -> Option<HeaderValue> {
    if parts.version != Version::HTTP_11 {
        return None;
    }
    let asks = parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| parts.headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// Rewrites a client request for the worker.
pub fn prepare_request(
    parts: &mut Parts,
    peer: IpAddr,
    trusted: bool,
    upgrade: Option<&HeaderValue>,
) {
    let h = &mut parts.headers;
    strip_hop_by_hop(h);
    // hyper already answered `Expect: 100-continue` to the client when it read the body.
    h.remove(header::EXPECT);
    if let Some(u) = upgrade {
        h.insert(header::UPGRADE, u.clone());
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if !h.contains_key(header::HOST) {
        if let Some(a) = parts.uri.authority() {
            if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                h.insert(header::HOST, v);
            }
        }
    }
    forwarded(h, peer, trusted);
    // Already origin-form (as HTTP/1.1 clients send): nothing to rebuild.
    if parts.uri.scheme().is_some()
        || parts.uri.authority().is_some()
        || parts.uri.path_and_query().is_none()
    {
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        parts.uri = Uri::try_from(path).unwrap_or_else(|_| Uri::from_static("/"));
    }
    parts.version = Version::HTTP_11;
}

fn forwarded(h: &mut HeaderMap, peer: IpAddr, trusted: bool) {
    let peer = peer.to_canonical().to_string();
    if !trusted {
        h.remove(X_FORWARDED_FOR);
        h.remove(X_FORWARDED_PROTO);
        h.remove(X_FORWARDED_HOST);
        h.remove(header::FORWARDED);
    }
    let xff = if h.contains_key(&X_FORWARDED_FOR) {
        let prior: Vec<&str> = h
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if prior.is_empty() {
            peer
        } else {
            format!("{}, {peer}", prior.join(", "))
        }
    } else {
        peer
    };
    if let Ok(v) = HeaderValue::try_from(xff) {
        h.insert(X_FORWARDED_FOR, v);
    }
    if !h.contains_key(&X_FORWARDED_PROTO) {
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if !h.contains_key(&X_FORWARDED_HOST) {
        if let Some(host) = h.get(header::HOST).cloned() {
            h.insert(X_FORWARDED_HOST, host);
        }
    }
}

/// Removes the hop-by-hop headers of a worker's response (an upgrade keeps its own).
pub fn prepare_response(h: &mut HeaderMap, upgrading: bool) {
    let upgrade = h.get(header::UPGRADE).cloned();
    strip_hop_by_hop(h);
    if let (true, Some(u)) = (upgrading, upgrade) {
        h.insert(header::UPGRADE, u);
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in [
        header::CONNECTION,
        KEEP_ALIVE,
        PROXY_CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        h.remove(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(req: hyper::Request<()>) -> Parts {
        req.into_parts().0
    }

    #[test]
    fn replaces_forwarding_headers_of_untrusted_peers() {
        let mut p = parts(
            hyper::Request::get("http://example.com/a?b=1")
                .version(Version::HTTP_2)
                .header("x-forwarded-for", "6.6.6.6")
                .header("x-forwarded-proto", "https")
                .header("connection", "x-secret")
                .header("x-secret", "1")
                .header("te", "trailers")
                .body(())
                .unwrap(),
        );
        prepare_request(&mut p, "10.0.0.1".parse().unwrap(), false, None);
        assert_eq!(p.headers["x-forwarded-for"], "10.0.0.1");
        assert_eq!(p.headers["x-forwarded-proto"], "http");
        assert_eq!(p.headers["host"], "example.com");
        assert_eq!(p.headers["x-forwarded-host"], "example.com");
        assert!(!p.headers.contains_key("x-secret") && !p.headers.contains_key("te"));
        assert_eq!(p.uri, "/a?b=1");
        assert_eq!(p.version, Version::HTTP_11);
    }

    #[test]
    fn appends_to_forwarding_headers_of_trusted_peers() {
        let mut p = parts(
            hyper::Request::get("/")
                .header("host", "h")
                .header("x-forwarded-for", "1.2.3.4")
                .header("x-forwarded-proto", "https")
                .body(())
                .unwrap(),
        );
        prepare_request(&mut p, "::ffff:10.0.0.1".parse().unwrap(), true, None);
        assert_eq!(p.headers["x-forwarded-for"], "1.2.3.4, 10.0.0.1");
        assert_eq!(p.headers["x-forwarded-proto"], "https");
    }

    #[test]
    fn upgrades_keep_their_headers() {
        let mut p = parts(
            hyper::Request::get("/ws")
                .header("connection", "keep-alive, Upgrade")
                .header("upgrade", "websocket")
                .body(())
                .unwrap(),
        );
        let up = upgrade_of(&p).unwrap();
        prepare_request(&mut p, "127.0.0.1".parse().unwrap(), false, Some(&up));
        assert_eq!(p.headers["upgrade"], "websocket");
        assert_eq!(p.headers["connection"], "upgrade");
        let mut h = HeaderMap::new();
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("connection", HeaderValue::from_static("Upgrade"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        prepare_response(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert!(!h.contains_key("keep-alive"));
        prepare_response(&mut h, false);
        assert!(!h.contains_key("upgrade"));
    }
}
