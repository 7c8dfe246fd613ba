//! HTTP/1.x message heads for the relay: parsed with `httparse`, checked, and written out again
//! for the next hop in one pass, header names and values byte for byte as received.
//!
//! Towards the worker a request always goes as HTTP/1.1 in origin form; hop-by-hop headers
//! (`Connection` and what it names, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`,
//! `Upgrade` unless upgrading) are dropped; `X-Forwarded-For/-Proto/-Host` are set, replacing
//! incoming ones (and `Forwarded`) unless the peer is trusted, in which case they are kept and
//! `X-Forwarded-For` is appended to. Body framing is checked the way RFC 9112 §6 asks of a
//! server: `Content-Length` together with `Transfer-Encoding`, differing lengths, or a transfer
//! coding that does not end in `chunked` are refused (400), closing the door on request
//! smuggling.

use std::fmt::Write as _;

/// Largest request or response head.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a head.
const MAX_HEADERS: usize = 128;

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the connection closes (responses only).
    UntilClose,
}

/// A request refused before it reaches a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// 400, 405 or 431.
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
    /// The client wants the connection kept open afterwards.
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

/// Where forwarding headers come from.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The client's address, as text.
    pub peer: &'a str,
    /// Its `X-Forwarded-*` headers are kept.
    pub trusted: bool,
}

/// Header names the relay handles itself (all lowercase).
fn hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// The comma-separated tokens of a header value, trimmed.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// What a head's `Connection` headers say.
#[derive(Default)]
struct Connection<'a> {
    close: bool,
    keep_alive: bool,
    upgrade: bool,
    /// Other tokens: names of further hop-by-hop headers.
    named: Vec<&'a [u8]>,
}

impl<'a> Connection<'a> {
    fn of(headers: &[httparse::Header<'a>]) -> Connection<'a> {
        let mut c = Connection::default();
        for h in headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        {
            for t in tokens(h.value) {
                if t.eq_ignore_ascii_case(b"close") {
                    c.close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    c.keep_alive = true;
                } else if t.eq_ignore_ascii_case(b"upgrade") {
                    c.upgrade = true;
                } else {
                    c.named.push(t);
                }
            }
        }
        c
    }

    fn names(&self, name: &str) -> bool {
        self.named
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name.as_bytes()))
    }
}

/// The body framing a head's `Content-Length` / `Transfer-Encoding` give, or why they are
/// unusable. `None` when it has neither.
fn body_framing(headers: &[httparse::Header<'_>]) -> Result<Option<Framing>, &'static str> {
    let mut length: Option<u64> = None;
    let mut chunked = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            for t in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                let n = std::str::from_utf8(t)
                    .ok()
                    .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or("invalid Content-Length")?;
                if length.is_some_and(|l| l != n) {
                    return Err("conflicting Content-Length headers");
                }
                length = Some(n);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Only the last coding matters: is the body chunked at the outside?
            if let Some(last) = tokens(h.value).last() {
                chunked = Some(last.eq_ignore_ascii_case(b"chunked"));
            }
        }
    }
    match (length, chunked) {
        (Some(_), Some(_)) => Err("both Content-Length and Transfer-Encoding"),
        (_, Some(true)) => Ok(Some(Framing::Chunked)),
        (_, Some(false)) => Ok(Some(Framing::UntilClose)),
        (Some(n), None) => Ok(Some(Framing::Length(n))),
        (None, None) => Ok(None),
    }
}

/// Whether a head in `input` may be complete: it holds an empty line after `from - 3` (bytes
/// before were looked at already), or it is too long to wait for one. Parsing only then keeps
/// a client that sends its head a byte at a time from costing a parse of the whole head per
/// byte.
pub fn head_may_end(input: &[u8], from: usize) -> bool {
    if input.len() > MAX_HEAD {
        return true;
    }
    let tail = &input[from.saturating_sub(3).min(input.len())..];
    tail.iter().enumerate().any(|(i, &b)| {
        b == b'\n' && (tail.get(i + 1) == Some(&b'\n') || tail.get(i + 1..i + 3) == Some(b"\r\n"))
    })
}

/// Parses the request head at the start of `input` and writes it for the worker into `out`
/// (cleared first). `Ok(None)`: the head is not complete yet.
pub fn request(
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
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(refuse(400, "malformed request"));
    };
    if method == "CONNECT" {
        return Err(refuse(405, "CONNECT is not supported by a reverse proxy"));
    }
    let headers = req.headers;
    let conn = Connection::of(headers);
    let framing = match body_framing(headers) {
        Err(why) => return Err(refuse(400, why)),
        Ok(Some(Framing::UntilClose)) => {
            return Err(refuse(400, "Transfer-Encoding does not end in chunked"))
        }
        Ok(Some(f)) => f,
        Ok(None) => Framing::None,
    };
    let framing = if framing == Framing::Length(0) {
        Framing::None
    } else {
        framing
    };
    let http10 = version == 0;
    let keep_alive = !conn.close && (!http10 || conn.keep_alive);
    let upgrade_value = headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("upgrade"))
        .map(|h| h.value)
        .filter(|_| conn.upgrade && !http10);

    // Origin form: an absolute-form target loses its scheme and authority (which becomes the
    // Host when there is none).
    let (path, authority) = split_target(target);
    out.clear();
    out.reserve(input.len().min(MAX_HEAD) + 128);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    if !path.starts_with(['/', '*']) {
        out.push(b'/');
    }
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");

    let mut host: Option<&[u8]> = None;
    let mut xff: Option<Vec<u8>> = None;
    let mut proto = false;
    let mut fwd_host = false;
    for h in headers.iter() {
        let name = h.name;
        if hop_by_hop(name) || conn.names(name) {
            continue;
        }
        if name.eq_ignore_ascii_case("host") {
            host.get_or_insert(h.value);
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            if origin.trusted {
                let v = xff.get_or_insert_with(Vec::new);
                if !v.is_empty() {
                    v.extend_from_slice(b", ");
                }
                v.extend_from_slice(h.value);
            }
            continue; // written once below, with the peer appended
        } else if name.eq_ignore_ascii_case("x-forwarded-proto") {
            if !origin.trusted {
                continue;
            }
            proto = true;
        } else if name.eq_ignore_ascii_case("x-forwarded-host") {
            if !origin.trusted {
                continue;
            }
            fwd_host = true;
        } else if name.eq_ignore_ascii_case("forwarded") && !origin.trusted {
            continue;
        }
        write_header(out, name.as_bytes(), h.value);
    }
    if host.is_none() {
        if let Some(a) = authority {
            write_header(out, b"Host", a.as_bytes());
            host = Some(a.as_bytes());
        }
    }
    out.extend_from_slice(b"X-Forwarded-For: ");
    if let Some(prior) = xff.as_deref().filter(|p| !p.is_empty()) {
        out.extend_from_slice(prior);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(origin.peer.as_bytes());
    out.extend_from_slice(b"\r\n");
    if !proto {
        out.extend_from_slice(b"X-Forwarded-Proto: http\r\n");
    }
    if let (false, Some(h)) = (fwd_host, host) {
        write_header(out, b"X-Forwarded-Host", h);
    }
    if let Some(u) = upgrade_value {
        out.extend_from_slice(b"Connection: upgrade\r\n");
        write_header(out, b"Upgrade", u);
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
        upgrade: upgrade_value.is_some(),
    }))
}

/// `http://host/p?q` → (`/p?q`, `host`); origin form (and `*`) as it is. A query straight
/// after the authority (`http://h?q`) is given without its slash, for the caller to add.
fn split_target(target: &str) -> (&str, Option<&str>) {
    let rest = ["http://", "https://"].iter().find_map(|s| {
        target
            .get(..s.len())
            .filter(|p| p.eq_ignore_ascii_case(s))
            .map(|_| &target[s.len()..])
    });
    let Some(rest) = rest else {
        return (target, None);
    };
    let cut = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(cut);
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    (path, Some(authority))
}

fn write_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// What the relay knows of the request a response answers.
#[derive(Debug, Clone, Copy)]
pub struct Asked {
    /// It was a `HEAD` request.
    pub head: bool,
    /// The client speaks HTTP/1.0.
    pub http10: bool,
    /// The client connection may stay open (as far as the request goes).
    pub keep_alive: bool,
    /// The request asked for an upgrade.
    pub upgrade: bool,
}

/// A worker's response head, parsed and rewritten for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// Bytes the head took in the input.
    pub len: usize,
    /// Its status code.
    pub status: u16,
    /// An interim (1xx other than 101) response: the final one follows.
    pub interim: bool,
    /// 101 to an upgrade request: both connections become a tunnel.
    pub switching: bool,
    /// The body as the worker sends it.
    pub framing: Framing,
    /// Pass the body's chunk data only (an HTTP/1.0 client does not know chunked).
    pub dechunk: bool,
    /// The worker's connection can take another request once the body is read.
    pub reusable: bool,
    /// The client connection stays open afterwards.
    pub keep_alive: bool,
}

/// Parses the worker's response head at the start of `input` and writes it for the client into
/// `out` (cleared first; nothing for an interim response to an HTTP/1.0 client). `Ok(None)`:
/// not complete yet.
pub fn response(
    input: &[u8],
    asked: Asked,
    out: &mut Vec<u8>,
) -> Result<Option<Response>, &'static str> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut storage);
    let len = match resp.parse(input) {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
        Ok(httparse::Status::Partial) if input.len() <= MAX_HEAD => return Ok(None),
        Ok(_) => return Err("response head too large"),
        Err(_) => return Err("malformed response"),
    };
    let (Some(version), Some(status)) = (resp.version, resp.code) else {
        return Err("malformed response");
    };
    let reason = resp.reason.unwrap_or("");
    let headers = resp.headers;
    let conn = Connection::of(headers);
    out.clear();
    let switching = status == 101;
    if switching && !asked.upgrade {
        return Err("the worker switched protocols unasked");
    }
    let interim = (100..200).contains(&status) && !switching;
    let framing = if interim || switching || asked.head || status == 204 || status == 304 {
        Framing::None
    } else {
        match body_framing(headers) {
            Err(why) => return Err(why),
            Ok(Some(f)) => f,
            Ok(None) => Framing::UntilClose,
        }
    };
    let dechunk = framing == Framing::Chunked && asked.http10;
    let reusable = !conn.close
        && (version == 1 || conn.keep_alive)
        && framing != Framing::UntilClose
        && !switching;
    let keep_alive = asked.keep_alive && framing != Framing::UntilClose && !dechunk;
    let parsed = Response {
        len,
        status,
        interim,
        switching,
        framing,
        dechunk,
        reusable,
        keep_alive,
    };
    if interim && asked.http10 {
        return Ok(Some(parsed));
    }
    out.reserve(len + 64);
    let _ = write!(Line(out), "HTTP/1.1 {status} ");
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in headers.iter() {
        let name = h.name;
        if hop_by_hop(name) || conn.names(name) {
            continue;
        }
        let body_header = name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("content-length");
        if body_header && (dechunk || (framing == Framing::None && !asked.head && status != 304)) {
            continue;
        }
        write_header(out, name.as_bytes(), h.value);
    }
    if switching {
        if let Some(u) = headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("upgrade"))
        {
            write_header(out, b"Upgrade", u.value);
        }
        out.extend_from_slice(b"Connection: upgrade\r\n");
    } else if !interim {
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if asked.http10 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(parsed))
}

/// `fmt::Write` into a byte buffer.
struct Line<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Line<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// A complete error response of the proxy's own.
pub fn error_response(out: &mut Vec<u8>, status: u16, why: &str, close: bool) {
    let reason = match status {
        400 => "Bad Request",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        504 => "Gateway Timeout",
        _ => "Error",
    };
    out.clear();
    let body = format!("{status} {reason}: {why}\n");
    let _ = write!(
        Line(out),
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{}\r\n{body}",
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: Origin<'static> = Origin {
        peer: "10.0.0.1",
        trusted: false,
    };

    fn req(input: &str, origin: Origin<'_>) -> Result<(Request, String), Refusal> {
        let mut out = Vec::new();
        let r = request(input.as_bytes(), origin, &mut out)?.expect("complete");
        Ok((r, String::from_utf8(out).unwrap()))
    }

    #[test]
    fn rewrites_a_request_for_the_worker() {
        let input = "GET http://example.com/a?b=1 HTTP/1.1\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nAccept: */*\r\n\r\nnext";
        let (r, out) = req(input, PEER).unwrap();
        assert_eq!(
            out,
            "GET /a?b=1 HTTP/1.1\r\nAccept: */*\r\nHost: example.com\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: example.com\r\n\r\n"
        );
        assert_eq!(r.framing, Framing::None);
        assert!(r.keep_alive && r.idempotent && !r.upgrade && !r.http10);
        assert_eq!(r.len, input.len() - "next".len());
    }

    #[test]
    fn trusted_peers_keep_their_forwarding_headers() {
        let (_, out) = req(
            "POST / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\nContent-Length: 3\r\n\r\nabc",
            Origin { peer: "10.0.0.1", trusted: true },
        )
        .unwrap();
        assert!(
            out.contains("X-Forwarded-For: 1.2.3.4, 10.0.0.1\r\n"),
            "{out}"
        );
        assert!(out.contains("X-Forwarded-Proto: https\r\n") && !out.contains("Proto: http\r\n"));
        assert!(out.contains("Content-Length: 3\r\n"));
    }

    #[test]
    fn upgrades_and_http10() {
        let (r, out) = req(
            "GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            PEER,
        )
        .unwrap();
        assert!(r.upgrade);
        assert!(
            out.ends_with("Connection: upgrade\r\nUpgrade: websocket\r\n\r\n"),
            "{out}"
        );
        let (r, _) = req("GET / HTTP/1.0\r\n\r\n", PEER).unwrap();
        assert!(r.http10 && !r.keep_alive);
        let (r, _) = req("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", PEER).unwrap();
        assert!(r.keep_alive);
        let (r, _) = req("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", PEER).unwrap();
        assert!(!r.keep_alive);
    }

    #[test]
    fn refuses_ambiguous_framing() {
        for (input, status) in [
            (
                "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
                400,
            ),
            ("POST / HTTP/1.1\r\nContent-Length: 3, 4\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                400,
            ),
            ("\x01\x02 nonsense\r\n\r\n", 400),
            ("CONNECT example.com:443 HTTP/1.1\r\n\r\n", 405),
        ] {
            assert_eq!(req(input, PEER).unwrap_err().status, status, "{input:?}");
        }
        let (r, _) = req(
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            PEER,
        )
        .unwrap();
        assert_eq!(r.framing, Framing::Length(5));
        let (r, out) = req(
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            PEER,
        )
        .unwrap();
        assert_eq!(r.framing, Framing::Chunked);
        assert!(out.contains("Transfer-Encoding: gzip, chunked\r\n"));
    }

    #[test]
    fn a_head_may_end_only_after_an_empty_line() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        for cut in 0..head.len() {
            assert!(!head_may_end(&head[..cut], 0), "cut at {cut}");
        }
        // Looking from any point up to the end finds it.
        for from in 0..=head.len() {
            assert!(head_may_end(head, from), "from {from}");
        }
        assert!(head_may_end(b"GET / HTTP/1.0\n\n", 15));
        assert!(head_may_end(&vec![b'a'; MAX_HEAD + 1], MAX_HEAD));
    }

    #[test]
    fn incomplete_and_oversized_heads() {
        let mut out = Vec::new();
        assert_eq!(
            request(b"GET / HTTP/1.1\r\nHost: a\r\n", PEER, &mut out),
            Ok(None)
        );
        let big = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(
            request(big.as_bytes(), PEER, &mut out).unwrap_err().status,
            431
        );
    }

    fn resp(input: &str, asked: Asked) -> (Response, String) {
        let mut out = Vec::new();
        let r = response(input.as_bytes(), asked, &mut out)
            .unwrap()
            .expect("complete");
        (r, String::from_utf8(out).unwrap())
    }

    const GET11: Asked = Asked {
        head: false,
        http10: false,
        keep_alive: true,
        upgrade: false,
    };

    #[test]
    fn rewrites_a_response_for_the_client() {
        let (r, out) = resp(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nKeep-Alive: timeout=5\r\nConnection: x-a\r\nX-A: 1\r\nServer: w\r\n\r\nhello",
            GET11,
        );
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: w\r\n\r\n"
        );
        assert_eq!(
            (r.framing, r.reusable, r.keep_alive),
            (Framing::Length(5), true, true)
        );
        let (r, out) = resp("HTTP/1.0 200 OK\r\n\r\nbody", GET11);
        assert_eq!(r.framing, Framing::UntilClose);
        assert!(!r.reusable && !r.keep_alive);
        assert!(out.ends_with("Connection: close\r\n\r\n"));
        let (r, _) = resp(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            GET11,
        );
        assert!(!r.reusable && r.keep_alive);
    }

    #[test]
    fn bodies_that_are_not_there() {
        let head = Asked {
            head: true,
            ..GET11
        };
        let (r, out) = resp("HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", head);
        assert_eq!(r.framing, Framing::None);
        assert!(out.contains("Content-Length: 50"));
        let (r, _) = resp("HTTP/1.1 204 No Content\r\n\r\n", GET11);
        assert_eq!(r.framing, Framing::None);
        assert!(r.reusable);
        let (r, out) = resp("HTTP/1.1 100 Continue\r\n\r\n", GET11);
        assert!(r.interim);
        assert_eq!(out, "HTTP/1.1 100 Continue\r\n\r\n");
        let (r, out) = resp(
            "HTTP/1.1 100 Continue\r\n\r\n",
            Asked {
                http10: true,
                ..GET11
            },
        );
        assert!(r.interim && out.is_empty());
    }

    #[test]
    fn chunked_to_http10_clients_is_decoded() {
        let old = Asked {
            http10: true,
            ..GET11
        };
        let (r, out) = resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", old);
        assert!(r.dechunk && !r.keep_alive && r.reusable);
        assert!(!out.contains("Transfer-Encoding") && out.ends_with("Connection: close\r\n\r\n"));
        let (r, out) = resp("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n", old);
        assert!(r.keep_alive == old.keep_alive);
        let _ = out;
    }

    #[test]
    fn upgrades_switch_only_when_asked() {
        let mut out = Vec::new();
        let switch =
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        assert!(response(switch.as_bytes(), GET11, &mut out).is_err());
        let (r, out) = resp(
            switch,
            Asked {
                upgrade: true,
                ..GET11
            },
        );
        assert!(r.switching && !r.reusable);
        assert!(
            out.ends_with("Upgrade: websocket\r\nConnection: upgrade\r\n\r\n"),
            "{out}"
        );
    }

    #[test]
    fn error_responses_are_complete() {
        let mut out = Vec::new();
        error_response(&mut out, 502, "cannot reach the worker", true);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 502 Bad Gateway\r\n"));
        assert!(s.contains("Connection: close\r\n"));
        let body = s.split("\r\n\r\n").nth(1).unwrap();
        assert!(s.contains(&format!("Content-Length: {}\r\n", body.len())));
    }

    /// A small deterministic generator (xorshift64*), for the mutation tests.
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

    /// Valid messages with bytes flipped, dropped, repeated or inserted: parsing never panics,
    /// and what is accepted is a whole head that the output repeats as a whole head.
    #[test]
    fn mutated_heads_never_panic() {
        let seeds: [&[u8]; 4] = [
            b"POST http://h/p?q HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nConnection: keep-alive, x\r\nX: 1\r\n\r\nhello",
            b"GET / HTTP/1.0\r\nTransfer-Encoding: gzip, chunked\r\nUpgrade: ws\r\nConnection: upgrade\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nabc",
            b"HTTP/1.0 101 Switching\r\nUpgrade: ws\r\nKeep-Alive: 1\r\n\r\n",
        ];
        let specials = b"\r\n:, ;\t\x00\x7f\xffHTTP/1.";
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
                peer: "::1",
                trusted: round % 2 == 0,
            };
            let parsed = request(&m, origin, &mut out);
            match &parsed {
                Ok(Some(_)) => accepted += 1,
                Err(_) => refused += 1,
                Ok(None) => {}
            }
            if let Ok(Some(r)) = parsed {
                assert!(r.len <= m.len() && out.ends_with(b"\r\n\r\n"));
                assert_eq!(
                    request(&out, origin, &mut Vec::new()).map(|o| o.is_some()),
                    Ok(true)
                );
            }
            let asked = Asked {
                head: round % 3 == 0,
                http10: round % 5 == 0,
                keep_alive: true,
                upgrade: round % 2 == 0,
            };
            if let Ok(Some(r)) = response(&m, asked, &mut out) {
                assert!(r.len <= m.len());
                assert!(out.is_empty() || out.ends_with(b"\r\n\r\n"));
            }
        }
        // Both ways are exercised.
        assert!(
            accepted > 1_000 && refused > 1_000,
            "{accepted} accepted, {refused} refused"
        );
    }
}
