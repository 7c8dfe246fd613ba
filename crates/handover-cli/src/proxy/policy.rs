//! The one header policy of the HTTP proxy, for both of its paths (the HTTP/1 relay's byte heads
//! and the h2c path's hyper header maps): which headers belong to one hop only, which frame the
//! message (and so are the proxy's to write, never a client's to remove), and which carry
//! forwarding information that only a trusted peer may set.

/// Hop-by-hop headers (RFC 9110 §7.6.1, plus the de-facto `Keep-Alive`, `Proxy-Connection`
/// and the h2c upgrade's `HTTP2-Settings`): never forwarded as received; the proxy writes its
/// own `Connection` and `Upgrade` where a message needs them.
pub const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "http2-settings",
    "transfer-encoding",
];

/// Headers that say where a message ends or whom it is for. `Connection` cannot name them
/// away (a client that could remove `Content-Length` after the proxy framed the body by it
/// would make the worker read the body as a second request), and they are dropped from
/// trailers.
pub const FRAMING: [&str; 3] = ["content-length", "transfer-encoding", "host"];

/// Forwarding headers: replaced by the proxy's own unless the peer is trusted.
pub const FORWARDING: [&str; 4] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
];

fn listed(list: &[&str], name: &[u8]) -> bool {
    list.iter().any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
}

/// Whether `name` is a hop-by-hop header.
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    listed(&HOP_BY_HOP, name)
}

/// Whether `name` frames the message or names its host.
pub fn is_framing(name: &[u8]) -> bool {
    listed(&FRAMING, name)
}

/// Whether `name` is a forwarding header.
pub fn is_forwarding(name: &[u8]) -> bool {
    listed(&FORWARDING, name)
}

/// Whether a header named `name` may be removed because a `Connection` header names it.
pub fn connection_may_remove(name: &[u8]) -> bool {
    !is_framing(name)
}

/// Whether `name`, with `_` read as `-`, is a framing or forwarding header though it is not
/// one: servers that map header names to variables (CGI, WSGI, PHP) read `Content_Length` as
/// `Content-Length`, which would let a client frame a body behind the proxy's back or forge
/// `X-Forwarded-For`.
pub fn is_disguised(name: &[u8]) -> bool {
    if !name.contains(&b'_') {
        return false;
    }
    let dashed: Vec<u8> = name
        .iter()
        .map(|&b| if b == b'_' { b'-' } else { b })
        .collect();
    is_framing(&dashed) || is_forwarding(&dashed)
}

/// Whether `name` may appear in a trailer section the proxy passes on (RFC 9110 §6.5.1: no
/// framing, routing or hop-by-hop fields, and nothing that would be taken for a forwarding
/// header).
pub fn trailer_allowed(name: &[u8]) -> bool {
    !(is_framing(name) || is_hop_by_hop(name) || is_forwarding(name) || is_disguised(name))
}

/// Whether `b` may appear in a token (RFC 9110 §5.6.2).
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether `s` is a non-empty token.
pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// The comma-separated elements of a header value, trimmed of optional whitespace; empty
/// elements are kept (as empty slices) for the caller to judge.
pub fn elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(|t| t.trim_ascii_start().trim_ascii_end())
}

/// Whether `host` is a valid `uri-host [ ":" port ]` (RFC 3986 reg-name, IPv4 or a bracketed
/// IP literal), or empty (allowed when the target has no authority, RFC 9112 §3.2).
pub fn is_valid_host(host: &[u8]) -> bool {
    let (name, port) = match host.iter().rposition(|&b| b == b':') {
        // A colon inside brackets belongs to the IP literal.
        Some(i) if !host[i..].contains(&b']') => (&host[..i], Some(&host[i + 1..])),
        _ => (host, None),
    };
    if port.is_some_and(|p| !p.iter().all(u8::is_ascii_digit) || p.len() > 5) {
        return false;
    }
    if let Some(literal) = name.strip_prefix(b"[") {
        let Some(inner) = literal.strip_suffix(b"]") else {
            return false;
        };
        return !inner.is_empty()
            && inner
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b":.vV".contains(&b) || is_unreserved(b));
    }
    if name.is_empty() && port.is_some() {
        return false;
    }
    name.iter()
        .all(|&b| is_unreserved(b) || b"%!$&'()*+,;=".contains(&b))
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_cannot_remove_framing_headers() {
        for name in ["Content-Length", "transfer-encoding", "HOST"] {
            assert!(!connection_may_remove(name.as_bytes()), "{name}");
        }
        assert!(connection_may_remove(b"x-secret"));
    }

    #[test]
    fn underscores_do_not_disguise_framing_or_forwarding_headers() {
        for name in [
            "Content_Length",
            "transfer_encoding",
            "X_Forwarded_For",
            "x-forwarded_for",
        ] {
            assert!(is_disguised(name.as_bytes()), "{name}");
        }
        for name in ["Content-Length", "x_custom", "X-Request_Id"] {
            assert!(!is_disguised(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn hosts() {
        for good in [
            "a",
            "example.com:8080",
            "127.0.0.1:1",
            "[::1]:80",
            "[::1]",
            "",
            "xn--d1a.b",
        ] {
            assert!(is_valid_host(good.as_bytes()), "{good:?}");
        }
        for bad in [
            "a b", "a/b", "a@b", "a:b", "[::1", ":80", "a:123456", "a\\b", "a?b", "a#b",
        ] {
            assert!(!is_valid_host(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn trailers_keep_only_end_to_end_fields() {
        assert!(trailer_allowed(b"x-checksum"));
        for name in [
            "content-length",
            "Transfer-Encoding",
            "host",
            "trailer",
            "x-forwarded-for",
        ] {
            assert!(!trailer_allowed(name.as_bytes()), "{name}");
        }
    }
}
