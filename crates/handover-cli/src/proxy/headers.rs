//! Header rewriting for h2c requests (hyper's header maps), by the same policy as the HTTP/1
//! relay (`policy`): hop-by-hop headers and those `Connection` names are not forwarded (never a
//! framing header), `X-Forwarded-For/-Proto/-Host` are set (replacing incoming ones unless the
//! peer is trusted), `Host` is the request's `:authority`, and the request is made an HTTP/1.1
//! origin-form request for the worker. hyper's HTTP/2 server has already refused what RFC 9113
//! §8.2 calls malformed (connection-specific fields, a `content-length` that disagrees with the
//! DATA frames); hyper's HTTP/1 client frames the body towards the worker.

use std::net::IpAddr;

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Uri, Version};

use super::policy;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Rewrites a client request for the worker; `Err` says why it is refused (400).
pub fn prepare_request(
    parts: &mut Parts,
    peer: IpAddr,
    trusted: bool,
    tls: bool,
) -> Result<(), &'static str> {
    let h = &mut parts.headers;
    if h.keys()
        .any(|n| policy::is_disguised(n.as_str().as_bytes()))
    {
        return Err("header name disguised as a framing or forwarding header");
    }
    strip_hop_by_hop(h);
    // hyper already answered `Expect: 100-continue` to the client when it read the body.
    h.remove(header::EXPECT);
    // `:authority` is the host (RFC 9113 §8.3.1); a request without it needs one Host.
    match parts.uri.authority() {
        Some(a) => {
            if a.as_str().contains('@') || !policy::is_valid_host(a.as_str().as_bytes()) {
                return Err("invalid :authority");
            }
            let v = HeaderValue::from_str(a.as_str()).map_err(|_| "invalid :authority")?;
            h.insert(header::HOST, v);
        }
        None => {
            let mut hosts = h.get_all(header::HOST).iter();
            match (hosts.next(), hosts.next()) {
                (Some(v), None) if policy::is_valid_host(v.as_bytes()) => {}
                _ => return Err("a request needs one valid :authority or Host"),
            }
        }
    }
    forwarded(h, peer, trusted, tls);
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
    Ok(())
}

fn forwarded(h: &mut HeaderMap, peer: IpAddr, trusted: bool, tls: bool) {
    let peer = peer.to_canonical().to_string();
    if !trusted {
        for name in policy::FORWARDING {
            h.remove(name);
        }
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
        let proto = if tls { "https" } else { "http" };
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
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
        .flat_map(|v| policy::elements(v.as_bytes()))
        .filter(|t| policy::connection_may_remove(t))
        .filter_map(|t| HeaderName::from_bytes(t).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in policy::HOP_BY_HOP {
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
        prepare_request(&mut p, "10.0.0.1".parse().unwrap(), false, false).unwrap();
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
        prepare_request(&mut p, "::ffff:10.0.0.1".parse().unwrap(), true, false).unwrap();
        assert_eq!(p.headers["x-forwarded-for"], "1.2.3.4, 10.0.0.1");
        assert_eq!(p.headers["x-forwarded-proto"], "https");
    }

    #[test]
    fn connection_cannot_name_framing_headers_away_and_hosts_are_checked() {
        let mut p = parts(
            hyper::Request::post("http://example.com/")
                .version(Version::HTTP_2)
                .header("content-length", "3")
                .header("connection", "content-length, x-a")
                .header("x-a", "1")
                .body(())
                .unwrap(),
        );
        prepare_request(&mut p, "10.0.0.1".parse().unwrap(), false, false).unwrap();
        assert_eq!(p.headers["content-length"], "3");
        assert!(!p.headers.contains_key("x-a"));
        let mut p = parts(hyper::Request::get("/").body(()).unwrap());
        assert!(prepare_request(&mut p, "10.0.0.1".parse().unwrap(), false, false).is_err());
        let mut p = parts(
            hyper::Request::get("/")
                .header("content_length", "3")
                .header("host", "h")
                .body(())
                .unwrap(),
        );
        assert!(prepare_request(&mut p, "10.0.0.1".parse().unwrap(), false, false).is_err());
    }
}
