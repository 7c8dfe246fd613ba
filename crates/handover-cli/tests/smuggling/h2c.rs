//! h2c (HTTP/2 prior knowledge) through the proxy, frames written by hand, since HTTP/2
//! clients refuse to send what these tests need: a request with a connection-specific field
//! (`connection`, `keep-alive`, `proxy-connection`, `transfer-encoding`, `upgrade`, `te`
//! other than `trailers`) or a `content-length` that its DATA frames contradict is malformed
//! (RFC 9113 §8.2.2, §8.1.1): it is refused (stream reset, GOAWAY or 400) and the worker
//! records nothing. Controls show the same hand-written requests are served when well-formed.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;

use crate::strict::client::victim;
use crate::strict::{Strict, READ};
use handover_testkit::cli_kit::{Ctx, SHORT};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const GOAWAY: u8 = 7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let n = payload.len() as u32;
    let mut f = vec![(n >> 16) as u8, (n >> 8) as u8, n as u8, kind, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK header block of literal fields without indexing, new names, no Huffman coding
/// (RFC 7541 §6.2.2): `0x00`, name length, name, value length, value.
fn hpack(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (name, value) in fields {
        assert!(name.len() < 127 && value.len() < 127, "short fields only");
        b.push(0x00);
        b.push(name.len() as u8);
        b.extend_from_slice(name.as_bytes());
        b.push(value.len() as u8);
        b.extend_from_slice(value.as_bytes());
    }
    b
}

/// How the proxy dealt with stream 1.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Status(u16),
    Reset(u32),
    GoAway(u32),
    /// The connection closed with no verdict.
    Closed,
}

/// The Huffman codes of the digits (RFC 7541 Appendix B), as (code, bits).
const DIGITS: [(u32, u32); 10] = [
    (0x0, 5),
    (0x1, 5),
    (0x2, 5),
    (0x19, 6),
    (0x1a, 6),
    (0x1b, 6),
    (0x1c, 6),
    (0x1d, 6),
    (0x1e, 6),
    (0x1f, 6),
];

/// A Huffman-coded run of digits (the padding is all ones).
fn huffman_digits(b: &[u8]) -> Option<String> {
    let bits: Vec<u32> = b
        .iter()
        .flat_map(|&x| (0..8).rev().map(move |i| u32::from((x >> i) & 1)))
        .collect();
    let mut out = String::new();
    let mut at = 0;
    'next: while at < bits.len() {
        for (digit, &(code, n)) in DIGITS.iter().enumerate() {
            let n = n as usize;
            if at + n <= bits.len() && bits[at..at + n].iter().fold(0, |a, &x| a << 1 | x) == code {
                out.push(char::from(b'0' + digit as u8));
                at += n;
                continue 'next;
            }
        }
        // Padding: fewer than 8 one bits.
        return (bits.len() - at < 8 && bits[at..].iter().all(|&x| x == 1)).then_some(out);
    }
    Some(out)
}

/// The `:status` at the start of a response header block: an indexed field of the static
/// table, or a literal with the indexed name `:status` (index 8).
fn status_of(block: &[u8]) -> Option<u16> {
    let first = *block.first()?;
    let indexed = [
        (0x88, 200),
        (0x89, 204),
        (0x8a, 206),
        (0x8b, 304),
        (0x8c, 400),
    ];
    if let Some(&(_, s)) = indexed.iter().find(|(b, _)| *b == first) {
        return Some(s);
    }
    if !matches!(first, 0x48 | 0x08 | 0x18) {
        return None;
    }
    let len_byte = *block.get(1)?;
    let len = usize::from(len_byte & 0x7f);
    let value = block.get(2..2 + len)?;
    let text = if len_byte & 0x80 != 0 {
        huffman_digits(value)?
    } else {
        String::from_utf8(value.to_vec()).ok()?
    };
    text.parse().ok()
}

/// Sends `frames` (after the preface and SETTINGS) on a fresh h2c connection; the verdict.
fn h2c(addr: std::net::SocketAddr, frames: &[Vec<u8>]) -> Verdict {
    let mut s = TcpStream::connect_timeout(&addr, SHORT).expect("connect to the proxy");
    s.set_read_timeout(Some(READ)).unwrap();
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    for f in frames {
        out.extend_from_slice(f);
    }
    // The proxy may reset and close before it has read everything.
    let _ = s.write_all(&out);
    loop {
        let mut head = [0u8; 9];
        match s.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("no verdict on stream 1 within {READ:?}")
            }
            Err(_) => return Verdict::Closed,
        }
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        if s.read_exact(&mut payload).is_err() {
            return Verdict::Closed;
        }
        let code = |p: &[u8]| u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
        match kind {
            SETTINGS if flags & ACK == 0 => {
                let _ = s.write_all(&frame(SETTINGS, ACK, 0, &[]));
            }
            HEADERS if stream == 1 => {
                // No padding or priority is asked for; a server sends none here.
                return match status_of(&payload) {
                    Some(st) => Verdict::Status(st),
                    None => panic!("cannot read the :status of {payload:02x?}"),
                };
            }
            RST_STREAM if stream == 1 && len >= 4 => return Verdict::Reset(code(&payload)),
            GOAWAY if len >= 8 => return Verdict::GoAway(code(&payload[4..])),
            _ => {}
        }
    }
}

/// A request's HEADERS frame: the pseudo-fields, then `extra`.
fn request(method: &str, path: &str, extra: &[(&str, &str)], end_stream: bool) -> Vec<u8> {
    let mut fields = vec![
        (":method", method),
        (":scheme", "http"),
        (":authority", "t"),
        (":path", path),
    ];
    fields.extend_from_slice(extra);
    let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
    frame(HEADERS, flags, 1, &hpack(&fields))
}

/// The targets of the worker's request records.
fn recorded(sup: &Strict) -> Vec<String> {
    sup.records()
        .into_iter()
        .filter(|r| r.kind == "request")
        .map(|r| r.target)
        .collect()
}

/// Well-formed hand-written requests are served: the framing of these tests is right.
#[test]
fn hand_written_h2c_requests_are_served() {
    let ctx = Ctx::new();
    let sup = Strict::start(&ctx, "hyper", &[]);
    let get = h2c(sup.addr(), &[request("GET", "/h2-get", &[], true)]);
    assert_eq!(get, Verdict::Status(200));
    let te_trailers = h2c(
        sup.addr(),
        &[request(
            "GET",
            "/h2-te-trailers",
            &[("te", "trailers")],
            true,
        )],
    );
    assert_eq!(te_trailers, Verdict::Status(200), "te: trailers is allowed");
    let post = h2c(
        sup.addr(),
        &[
            request("POST", "/h2-post", &[("content-length", "5")], false),
            frame(DATA, END_STREAM, 1, b"hello"),
        ],
    );
    assert_eq!(post, Verdict::Status(200));
    let records = sup.records();
    let post = records
        .iter()
        .find(|r| r.target == "/h2-post")
        .expect("the POST was recorded");
    assert_eq!(post.body, "hello");
    assert_eq!(
        recorded(&sup),
        ["/h2-get", "/h2-te-trailers", "/h2-post"],
        "the worker's requests"
    );
}

/// Connection-specific fields and contradicted content-lengths are refused, and reach nothing.
#[test]
fn malformed_h2c_requests_are_refused() {
    let ctx = Ctx::new();
    let sup = Strict::start(&ctx, "hyper", &[]);
    let with = |name, value| vec![request("GET", "/h2-bad", &[(name, value)], true)];
    let body = |cl, data: &[&[u8]]| {
        let mut f = vec![request("POST", "/h2-bad", &[("content-length", cl)], false)];
        for (i, d) in data.iter().enumerate() {
            let last = i + 1 == data.len();
            f.push(frame(DATA, if last { END_STREAM } else { 0 }, 1, d));
        }
        f
    };
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("connection: keep-alive", with("connection", "keep-alive")),
        ("keep-alive: 5", with("keep-alive", "5")),
        (
            "proxy-connection: keep-alive",
            with("proxy-connection", "keep-alive"),
        ),
        (
            "transfer-encoding: chunked",
            with("transfer-encoding", "chunked"),
        ),
        ("upgrade: h2c", with("upgrade", "h2c")),
        ("te: gzip", with("te", "gzip")),
        ("te: trailers, gzip", with("te", "trailers, gzip")),
        (
            "content-length 10, 5 bytes of DATA",
            body("10", &[b"hello"]),
        ),
        ("content-length 3, 5 bytes of DATA", body("3", &[b"hello"])),
        (
            "content-length 5, 2 + 5 bytes of DATA",
            body("5", &[b"he", b"llo!!"]),
        ),
    ];
    let mut failures = Vec::new();
    for (i, (what, frames)) in cases.iter().enumerate() {
        let verdict = h2c(sup.addr(), frames);
        if !matches!(
            verdict,
            Verdict::Reset(_) | Verdict::GoAway(_) | Verdict::Status(400)
        ) {
            failures.push(format!("{what}: {verdict:?}"));
        }
        // Any request it became is recorded by the time another client has its answer.
        victim(sup.addr(), &format!("/victim-{i}")).unwrap();
    }
    let bad: Vec<String> = recorded(&sup)
        .into_iter()
        .filter(|t| !t.starts_with("/victim-"))
        .collect();
    if !bad.is_empty() {
        failures.push(format!("the worker got {bad:?}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
