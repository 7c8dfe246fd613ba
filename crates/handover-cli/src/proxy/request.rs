//! Client request heads for the relay: parsed with `httparse`, checked more strictly than it
//! checks (RFC 9112 as a server must read it, and no less strictly than hyper), and written out
//! for the worker in one pass, header names and values byte for byte as received.
//!
//! Towards the worker a request always goes as HTTP/1.1 in origin form, framed by the proxy:
//! one `Content-Length` or `Transfer-Encoding: chunked` of its own (the body is re-framed, see
//! `chunked`), one `Host`. Hop-by-hop headers and those `Connection` names are dropped (never a
//! framing header); `X-Forwarded-For/-Proto/-Host` are set, replacing incoming ones (and
//! `Forwarded`) unless the peer is trusted, in which case they are kept and `X-Forwarded-For`
//! is appended to.
//!
//! Refused before anything reaches a worker: a malformed head, bare LF line ends, obs-fold,
//! whitespace before a colon, a CR or NUL in a value, an invalid target (400); header names
//! that read as framing or forwarding headers with `_` for `-` (400); an HTTP/1.1 request
//! without exactly one valid `Host` (400); `Content-Length` with `Transfer-Encoding`, lengths
//! that differ, a `Transfer-Encoding` that is malformed (400) or anything but a lone `chunked`
//! (501); `CONNECT` (405); a head over 64 KiB or 100 fields (431).

use super::message::{self, BodyHeaders, Connection, Framing, MAX_HEAD, MAX_HEADERS};
use super::policy;

/// A request refused before it reaches a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// 400, 405, 431 or 501.
    pub status: u16,
    /// Said in the response body.
    pub why: &'static str,
}

fn refuse(status: u16, why: &'static str) -> Refusal {
    Refusal { status, why }
}

/// A client request head, parsed and rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Bytes the head took in the input.
    pub len: usize,
    /// Its body.
    pub framing: Framing,
    /// The client connection may stay open afterwards.
    pub keep_alive: bool,
    /// The client speaks HTTP/1.0.
    pub http10: bool,
    /// `HEAD`: the response has no body whatever its headers say.
    pub head: bool,
    /// Safe to send again (RFC 9110 §9.2.2).
    pub idempotent: bool,
    /// Asks for a protocol upgrade (`Connection: upgrade` + `Upgrade`).
    pub upgrade: bool,
}

/// Where a request comes from.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The client's address, as text.
    pub peer: &'a str,
    /// Its `X-Forwarded-*` headers are kept.
    pub trusted: bool,
    /// The address the client connected to (the `--proxy` address): the `Host` of an
    /// HTTP/1.0 request that has none.
    pub local: &'a str,
    /// The client connected over TLS: `X-Forwarded-Proto: https`.
    pub tls: bool,
}

/// Parses the request head at the start of `input` and writes it for the worker into `out`
/// (cleared first). `Ok(None)`: the head is not complete yet.
pub fn parse(
    input: &[u8],
    origin: Origin<'_>,
    out: &mut Vec<u8>,
) -> Result<Option<Request>, Refusal> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut storage);
    let len = match req.parse(input) {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
        Ok(httparse::Status::Partial) if input.len() <= MAX_HEAD => return Ok(None),
        Ok(_) => return Err(refuse(431, "request head too large")),
        Err(httparse::Error::TooManyHeaders) => return Err(refuse(431, "too many header fields")),
        Err(_) => return Err(refuse(400, "malformed request")),
    };
    if !message::lines_end_in_crlf(&input[..len]) {
        return Err(refuse(400, "lines must end in CRLF"));
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(refuse(400, "malformed request"));
    };
    if method == "CONNECT" {
        return Err(refuse(405, "CONNECT is not supported by a reverse proxy"));
    }
    let target = Target::of(method, target)?;
    let headers = req.headers;
    let conn = Connection::of(headers).ok_or(refuse(400, "invalid Connection header"))?;
    let body = BodyHeaders::of(headers, true).map_err(|e| refuse(e.status, e.why))?;
    let http10 = version == 0;
    let framing = match (body.chunked, body.length) {
        (Some(_), _) => Framing::Chunked,
        (None, Some(0) | None) => Framing::None,
        (None, Some(n)) => Framing::Length(n),
    };
    // A chunked body from an HTTP/1.0 client is served, then the connection closed (RFC 9112
    // §6.1: the client may not have framed it as it meant).
    let keep_alive = !conn.close
        && if http10 {
            conn.keep_alive && body.chunked.is_none()
        } else {
            true
        };
    let mut hosts = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"));
    let host = hosts.next().map(|h| h.value);
    if hosts.next().is_some() {
        return Err(refuse(400, "more than one Host header"));
    }
    if host.is_some_and(|h| !policy::is_valid_host(h)) {
        return Err(refuse(400, "invalid Host header"));
    }
    // Every HTTP/1.1 request has a Host, whatever its target's form (RFC 9112 §3.2); an
    // absolute-form target's authority replaces it (§3.2.2).
    if host.is_none() && !http10 {
        return Err(refuse(400, "HTTP/1.1 request without Host"));
    }
    let host: &[u8] = match (target.authority, host) {
        (Some(a), _) => a.as_bytes(),
        (None, Some(h)) => h,
        (None, None) => origin.local.as_bytes(),
    };
    let upgrade = headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("upgrade"))
        .map(|h| h.value)
        .filter(|_| conn.upgrade && !http10)
        .and_then(upgrade_protocols);

    out.clear();
    out.reserve(input.len().min(MAX_HEAD) + 128);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host);
    out.extend_from_slice(b"\r\n");

    let mut xff: Option<Vec<u8>> = None;
    let mut proto = false;
    let mut fwd_host = false;
    for h in headers.iter() {
        let name = h.name.as_bytes();
        if policy::is_disguised(name) {
            return Err(refuse(
                400,
                "header name disguised as a framing or forwarding header",
            ));
        }
        if conn.drops(name) || policy::is_framing(name) {
            continue; // the proxy writes its own framing and Host
        }
        if policy::is_forwarding(name) {
            if !origin.trusted {
                continue;
            }
            if name.eq_ignore_ascii_case(b"x-forwarded-for") {
                let v = xff.get_or_insert_with(Vec::new);
                if !v.is_empty() {
                    v.extend_from_slice(b", ");
                }
                v.extend_from_slice(h.value);
                continue; // written once below, with the peer appended
            }
            proto |= name.eq_ignore_ascii_case(b"x-forwarded-proto");
            fwd_host |= name.eq_ignore_ascii_case(b"x-forwarded-host");
        }
        message::write_header(out, name, h.value);
    }
    match (framing, body.length) {
        (Framing::Chunked, _) => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        (_, Some(n)) => message::write_length(out, n),
        _ => {}
    }
    out.extend_from_slice(b"X-Forwarded-For: ");
    if let Some(prior) = xff.as_deref().filter(|p| !p.is_empty()) {
        out.extend_from_slice(prior);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(origin.peer.as_bytes());
    out.extend_from_slice(b"\r\n");
    if !proto {
        out.extend_from_slice(if origin.tls {
            b"X-Forwarded-Proto: https\r\n"
        } else {
            b"X-Forwarded-Proto: http\r\n"
        });
    }
    if !fwd_host && !host.is_empty() {
        message::write_header(out, b"X-Forwarded-Host", host);
    }
    if let Some(u) = &upgrade {
        out.extend_from_slice(b"Connection: upgrade\r\n");
        message::write_header(out, b"Upgrade", u);
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(Request {
        len,
        framing,
        keep_alive,
        http10,
        head: method == "HEAD",
        idempotent: matches!(
            method,
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        ),
        upgrade: upgrade.is_some(),
    }))
}

/// The protocols of an `Upgrade` value that may reach the worker: all but `h2c` (the proxy
/// speaks HTTP/1.1 to its workers; a client wanting HTTP/2 gets it from the proxy by prior
/// knowledge). `None` when none is left.
fn upgrade_protocols(value: &[u8]) -> Option<Vec<u8>> {
    let mut kept = Vec::new();
    for p in policy::elements(value).filter(|p| !p.is_empty()) {
        if p.eq_ignore_ascii_case(b"h2c") {
            continue;
        }
        if !kept.is_empty() {
            kept.extend_from_slice(b", ");
        }
        kept.extend_from_slice(p);
    }
    (!kept.is_empty()).then_some(kept)
}

/// A request target, in the origin form the worker gets.
struct Target<'a> {
    /// Path and query (`*` for a server-wide `OPTIONS`).
    path: std::borrow::Cow<'a, str>,
    /// The authority of an absolute-form target.
    authority: Option<&'a str>,
}

impl<'a> Target<'a> {
    /// Checks `target` as hyper's URI parser (the `http` crate) does, and takes it apart.
    fn of(method: &str, target: &'a str) -> Result<Target<'a>, Refusal> {
        let bad = || refuse(400, "invalid request target");
        if target == "*" {
            return if method == "OPTIONS" {
                Ok(Target {
                    path: "*".into(),
                    authority: None,
                })
            } else {
                Err(bad())
            };
        }
        let uri: hyper::Uri = target.parse().map_err(|_| bad())?;
        if target.starts_with('/') {
            // Origin form: passed on as received (hyper reads it the same way at the worker).
            return Ok(Target {
                path: target.into(),
                authority: None,
            });
        }
        let scheme = uri.scheme_str().ok_or_else(bad)?;
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err(bad());
        }
        let authority = uri.authority().ok_or_else(bad)?.as_str();
        // userinfo in an http(s) URI is deprecated and a known way to confuse hosts.
        if authority.contains('@') || !policy::is_valid_host(authority.as_bytes()) {
            return Err(bad());
        }
        // The authority as it is in `target` (for the borrow), after `scheme://`.
        let at = target.find("://").ok_or_else(bad)? + 3;
        let authority = &target[at..at + authority.len()];
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        Ok(Target {
            path: path.into(),
            authority: Some(authority),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: Origin<'static> = Origin {
        peer: "10.0.0.1",
        trusted: false,
        local: "127.0.0.1:8080",
        tls: false,
    };

    fn req(input: &str, origin: Origin<'_>) -> Result<(Request, String), Refusal> {
        let mut out = Vec::new();
        let r = parse(input.as_bytes(), origin, &mut out)?.expect("complete");
        Ok((r, String::from_utf8(out).unwrap()))
    }

    fn status(input: &str) -> u16 {
        match req(input, PEER) {
            Ok(_) => 200,
            Err(r) => r.status,
        }
    }

    #[test]
    fn rewrites_a_request_for_the_worker() {
        let input = "GET http://example.com/a?b=1 HTTP/1.1\r\nHost: other\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nAccept: */*\r\n\r\nnext";
        let (r, out) = req(input, PEER).unwrap();
        assert_eq!(
            out,
            "GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: example.com\r\n\r\n"
        );
        assert_eq!(r.framing, Framing::None);
        assert!(r.keep_alive && r.idempotent && !r.upgrade && !r.http10);
        assert_eq!(r.len, input.len() - "next".len());
    }

    #[test]
    fn connection_cannot_name_framing_headers_away() {
        let (r, out) = req(
            "POST /a HTTP/1.1\r\nHost: x\r\nConnection: Content-Length, Host, X-A\r\nX-A: 1\r\nContent-Length: 5\r\n\r\n",
            PEER,
        )
        .unwrap();
        assert_eq!(r.framing, Framing::Length(5));
        assert!(
            out.contains("Content-Length: 5\r\n") && out.contains("Host: x\r\n"),
            "{out}"
        );
        assert!(!out.contains("X-A"), "{out}");
        let (r, out) = req(
            "POST /a HTTP/1.1\r\nHost: x\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n",
            PEER,
        )
        .unwrap();
        assert_eq!(r.framing, Framing::Chunked);
        assert!(out.contains("Transfer-Encoding: chunked\r\n"), "{out}");
    }

    #[test]
    fn framing_is_the_proxys_own() {
        let (_, out) = req(
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\ncontent-length: 5\r\n\r\n",
            PEER,
        )
        .unwrap();
        assert_eq!(out.matches("Content-Length").count(), 1, "{out}");
        assert!(out.contains("Content-Length: 5\r\n"));
        let (r, out) = req(
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
            PEER,
        )
        .unwrap();
        assert_eq!(r.framing, Framing::None);
        assert!(out.contains("Content-Length: 0\r\n"));
    }

    #[test]
    fn trusted_peers_keep_their_forwarding_headers() {
        let (_, out) = req(
            "POST / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\nContent-Length: 3\r\n\r\nabc",
            Origin { trusted: true, ..PEER },
        )
        .unwrap();
        assert!(
            out.contains("X-Forwarded-For: 1.2.3.4, 10.0.0.1\r\n"),
            "{out}"
        );
        assert!(out.contains("X-Forwarded-Proto: https\r\n") && !out.contains("Proto: http\r\n"));
    }

    #[test]
    fn hosts() {
        assert_eq!(status("GET / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), 400);
        assert_eq!(status("GET http://u@h/ HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
        assert_eq!(status("GET ftp://h/ HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
        let (_, out) = req("GET / HTTP/1.0\r\n\r\n", PEER).unwrap();
        assert!(
            out.starts_with("GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"),
            "{out}"
        );
        assert_eq!(status("GET http://h/ HTTP/1.1\r\n\r\n"), 400);
        let (_, out) = req("GET http://h:1 HTTP/1.1\r\nHost: x\r\n\r\n", PEER).unwrap();
        assert!(out.starts_with("GET / HTTP/1.1\r\nHost: h:1\r\n"), "{out}");
        let (_, out) = req("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", PEER).unwrap();
        assert!(out.starts_with("OPTIONS * HTTP/1.1\r\n"), "{out}");
        assert_eq!(status("GET * HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    }

    #[test]
    fn heads_are_strict() {
        for bad in [
            "GET / HTTP/1.1\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n folded\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX(: 1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nContent_Length: 5\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: a b\r\n\r\n",
            "GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET a HTTP/1.1\r\nHost: a\r\n\r\n",
            "\x01\x02 nonsense\r\n\r\n",
        ] {
            assert_eq!(status(bad), 400, "{bad:?}");
        }
        assert_eq!(
            status("CONNECT example.com:443 HTTP/1.1\r\nHost: a\r\n\r\n"),
            405
        );
    }

    #[test]
    fn transfer_encodings() {
        let te = |v: &str| {
            status(&format!(
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {v}\r\n\r\n"
            ))
        };
        assert_eq!(te("chunked"), 200);
        assert_eq!(te("gzip, chunked"), 501);
        assert_eq!(te("identity"), 501);
        assert_eq!(te("chunked, chunked"), 400);
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
        let (r, out) = req(
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n",
            PEER,
        )
        .unwrap();
        assert!(r.http10 && !r.keep_alive && r.framing == Framing::Chunked);
        assert!(out.contains("Transfer-Encoding: chunked\r\n"));
    }

    #[test]
    fn upgrades_and_http10() {
        let (r, out) = req(
            "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            PEER,
        )
        .unwrap();
        assert!(r.upgrade);
        assert!(
            out.ends_with("Connection: upgrade\r\nUpgrade: websocket\r\n\r\n"),
            "{out}"
        );
        let (r, out) = req(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAAA\r\n\r\n",
            PEER,
        )
        .unwrap();
        assert!(!r.upgrade);
        assert!(
            !out.to_ascii_lowercase().contains("upgrade") && !out.contains("HTTP2"),
            "{out}"
        );
        let (r, _) = req("GET / HTTP/1.0\r\n\r\n", PEER).unwrap();
        assert!(r.http10 && !r.keep_alive);
        let (r, _) = req("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", PEER).unwrap();
        assert!(r.keep_alive);
        let (r, _) = req(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            PEER,
        )
        .unwrap();
        assert!(!r.keep_alive);
    }

    #[test]
    fn incomplete_and_oversized_heads() {
        let mut out = Vec::new();
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost: a\r\n", PEER, &mut out),
            Ok(None)
        );
        let big = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(
            parse(big.as_bytes(), PEER, &mut out).unwrap_err().status,
            431
        );
    }

    /// A small deterministic generator (xorshift64*), for the mutation test.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Valid requests with bytes flipped, dropped, repeated or inserted: parsing never panics,
    /// and what is accepted is a whole head that parses again to the same framing.
    #[test]
    fn mutated_heads_never_panic() {
        let seeds: [&[u8]; 3] = [
            b"POST http://h/p?q HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nConnection: keep-alive, x\r\nX: 1\r\n\r\nhello",
            b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nUpgrade: ws\r\nConnection: upgrade\r\n\r\n",
            b"PUT /a HTTP/1.1\r\nHost: a:1\r\nTransfer-Encoding: chunked\r\nX-Forwarded-For: 1.1.1.1\r\n\r\n",
        ];
        let specials = b"\r\n:, ;\t\x00\x7f\xffHTTP/1._-";
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut out = Vec::new();
        let (mut accepted, mut refused) = (0, 0);
        for round in 0..20_000 {
            let mut m = seeds[round % seeds.len()].to_vec();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(m.len() + 1);
                match rng.below(4) {
                    0 if at < m.len() => m[at] = specials[rng.below(specials.len())],
                    1 if at < m.len() => {
                        m.remove(at);
                    }
                    2 => m.insert(at, specials[rng.below(specials.len())]),
                    _ => {
                        let end = (at + rng.below(16)).min(m.len());
                        let piece = m[at..end].to_vec();
                        m.splice(at..at, piece);
                    }
                }
            }
            let origin = Origin {
                trusted: round % 2 == 0,
                ..PEER
            };
            match parse(&m, origin, &mut out) {
                Ok(Some(r)) => {
                    accepted += 1;
                    assert!(r.len <= m.len() && out.ends_with(b"\r\n\r\n"));
                    let again = parse(&out, origin, &mut Vec::new())
                        .expect("the rewritten head is accepted")
                        .expect("whole");
                    assert_eq!(again.framing, r.framing);
                    assert_eq!(again.len, out.len());
                }
                Err(_) => refused += 1,
                Ok(None) => {}
            }
        }
        assert!(
            accepted > 1_000 && refused > 1_000,
            "{accepted} accepted, {refused} refused"
        );
    }
}
