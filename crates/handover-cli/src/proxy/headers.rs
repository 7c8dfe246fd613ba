//! Header rewriting for h2c requests (hyper's header maps): hop-by-hop headers are not forwarded,
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

/// Rewrites a client request for the worker.
pub fn prepare_request(parts: &mut Parts, peer: IpAddr, trusted: bool) {
    let h = &mut parts.headers;
    strip_hop_by_hop(h);
    // hyper already answered `Expect: 100-continue` to the client when it read the body.
    h.remove(header::EXPECT);
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

/// Removes the hop-by-hop headers of a worker's response.
pub fn prepare_response(h: &mut HeaderMap) {
    strip_hop_by_hop(h);
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
        prepare_request(&mut p, "10.0.0.1".parse().unwrap(), false);
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
        prepare_request(&mut p, "::ffff:10.0.0.1".parse().unwrap(), true);
        assert_eq!(p.headers["x-forwarded-for"], "1.2.3.4, 10.0.0.1");
        assert_eq!(p.headers["x-forwarded-proto"], "https");
    }
}
