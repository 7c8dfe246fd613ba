//! What HTTP/1.x request and response heads share in the relay: body framing from
//! `Content-Length` / `Transfer-Encoding` (RFC 9112 §6), read strictly, and the byte-level
//! checks `httparse` leaves to its caller. Requests are in `request`, responses in `response`.

use super::policy;

/// Largest request or response head.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a head (hyper's default, which a worker behind the proxy may use).
pub const MAX_HEADERS: usize = 100;

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

/// Why a head's framing headers are unusable, and the status that says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramingError {
    /// 400 (malformed) or 501 (a transfer coding the proxy does not implement).
    pub status: u16,
    /// Said in the response body or the log.
    pub why: &'static str,
}

const fn fault(why: &'static str) -> FramingError {
    FramingError { status: 400, why }
}

/// What a head's `Content-Length` and `Transfer-Encoding` say, each read strictly.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BodyHeaders {
    /// The length all `Content-Length` values agree on.
    pub length: Option<u64>,
    /// A `Transfer-Encoding` header: whether its last coding is `chunked`.
    pub chunked: Option<bool>,
}

impl BodyHeaders {
    /// Reads the framing headers of `headers`. `Content-Length`: digits only, every value
    /// (and every element of a list) the same. `Transfer-Encoding`: one header, a list of valid
    /// codings with `chunked` at most once and only last; `only_chunked` (requests): any coding
    /// but a lone `chunked` is refused (501).
    pub fn of(
        headers: &[httparse::Header<'_>],
        only_chunked: bool,
    ) -> Result<BodyHeaders, FramingError> {
        let mut b = BodyHeaders::default();
        for h in headers {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"content-length") {
                for e in policy::elements(h.value) {
                    let n = std::str::from_utf8(e)
                        .ok()
                        .filter(|s| !s.is_empty() && s.len() <= 19)
                        .filter(|s| s.bytes().all(|c| c.is_ascii_digit()))
                        .and_then(|s| s.parse::<u64>().ok())
                        .ok_or(fault("invalid Content-Length"))?;
                    if b.length.is_some_and(|l| l != n) {
                        return Err(fault("conflicting Content-Length values"));
                    }
                    b.length = Some(n);
                }
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                if b.chunked.is_some() {
                    return Err(fault("Transfer-Encoding header repeated"));
                }
                b.chunked = Some(transfer_codings(h.value, only_chunked)?);
            }
        }
        if b.length.is_some() && b.chunked.is_some() {
            return Err(fault("both Content-Length and Transfer-Encoding"));
        }
        Ok(b)
    }
}

/// Whether a `Transfer-Encoding` value ends in `chunked` (checked as [`BodyHeaders::of`] says).
fn transfer_codings(value: &[u8], only_chunked: bool) -> Result<bool, FramingError> {
    let mut codings = 0;
    let mut chunked_at = None;
    for (i, e) in policy::elements(value).enumerate() {
        // A coding may have parameters (`gzip;q=1` is not valid for transfer codings, but
        // `name;param=value` is the grammar); the name is what matters.
        let name = e.split(|&b| b == b';').next().unwrap_or(e).trim_ascii_end();
        if !policy::is_token(name) {
            return Err(fault("invalid Transfer-Encoding"));
        }
        if name.eq_ignore_ascii_case(b"chunked") {
            if chunked_at.is_some() {
                return Err(fault("chunked applied twice"));
            }
            if name.len() != e.len() {
                return Err(fault("chunked takes no parameters"));
            }
            chunked_at = Some(i);
        } else if chunked_at.is_some() {
            return Err(fault("chunked is not the last transfer coding"));
        }
        codings = i + 1;
    }
    let chunked = chunked_at.is_some();
    if only_chunked && (codings != 1 || !chunked) {
        return Err(FramingError {
            status: 501,
            why: "transfer codings other than chunked are not implemented",
        });
    }
    Ok(chunked)
}

/// Whether every LF of `head` ends a CRLF: `httparse` also takes bare LF as a line end, which
/// a recipient that does not could read as part of a header value.
pub fn lines_end_in_crlf(head: &[u8]) -> bool {
    let mut at = 0;
    while let Some(i) = head[at..].iter().position(|&b| b == b'\n') {
        let lf = at + i;
        if lf == 0 || head[lf - 1] != b'\r' {
            return false;
        }
        at = lf + 1;
    }
    true
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

/// Appends `name: value` CRLF.
pub fn write_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends `Content-Length: n` CRLF.
pub fn write_length(out: &mut Vec<u8>, n: u64) {
    use std::fmt::Write as _;
    let _ = write!(Line(out), "Content-Length: {n}\r\n");
}

/// What a head's `Connection` headers say.
#[derive(Default)]
pub struct Connection<'a> {
    /// `close`.
    pub close: bool,
    /// `keep-alive`.
    pub keep_alive: bool,
    /// `upgrade`.
    pub upgrade: bool,
    /// Other tokens: names of further hop-by-hop headers.
    named: Vec<&'a [u8]>,
}

impl<'a> Connection<'a> {
    /// Reads every `Connection` header of `headers`; `None` if an element is not a token.
    pub fn of(headers: &[httparse::Header<'a>]) -> Option<Connection<'a>> {
        let mut c = Connection::default();
        for h in headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        {
            for t in policy::elements(h.value).filter(|t| !t.is_empty()) {
                if !policy::is_token(t) {
                    return None;
                }
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
        Some(c)
    }

    /// Whether header `name` is not to be forwarded: hop-by-hop, or named here (framing
    /// headers cannot be named away).
    pub fn drops(&self, name: &[u8]) -> bool {
        policy::is_hop_by_hop(name)
            || (policy::connection_may_remove(name)
                && self.named.iter().any(|n| n.eq_ignore_ascii_case(name)))
    }
}

/// `fmt::Write` into a byte buffer.
pub struct Line<'a>(pub &'a mut Vec<u8>);

impl std::fmt::Write for Line<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framing(headers: &[(&str, &str)], only_chunked: bool) -> Result<BodyHeaders, u16> {
        let hs: Vec<httparse::Header<'_>> = headers
            .iter()
            .map(|(n, v)| httparse::Header {
                name: n,
                value: v.as_bytes(),
            })
            .collect();
        BodyHeaders::of(&hs, only_chunked).map_err(|e| e.status)
    }

    #[test]
    fn transfer_encoding_is_chunked_alone_in_requests() {
        let te = |v| framing(&[("Transfer-Encoding", v)], true);
        assert_eq!(te("chunked").unwrap().chunked, Some(true));
        assert_eq!(te(" Chunked\t").unwrap().chunked, Some(true));
        for (v, status) in [
            ("gzip, chunked", 501),
            ("identity", 501),
            ("xchunked", 501),
            ("", 400),
            ("chunked, chunked", 400),
            ("chunked, gzip", 400),
            ("chunked,", 400),
            (", chunked", 400),
            ("\"chunked\"", 400),
            ("chunked;a=b", 400),
        ] {
            assert_eq!(te(v), Err(status), "{v:?}");
        }
        assert_eq!(
            framing(
                &[
                    ("Transfer-Encoding", "chunked"),
                    ("transfer-encoding", "chunked")
                ],
                true
            ),
            Err(400)
        );
        assert_eq!(
            framing(
                &[("Content-Length", "3"), ("Transfer-Encoding", "chunked")],
                true
            ),
            Err(400)
        );
    }

    #[test]
    fn responses_may_use_other_codings() {
        let te = |v| framing(&[("Transfer-Encoding", v)], false).map(|b| b.chunked);
        assert_eq!(te("gzip, chunked"), Ok(Some(true)));
        assert_eq!(te("gzip"), Ok(Some(false)));
        assert_eq!(te("chunked, gzip"), Err(400));
    }

    #[test]
    fn content_length_is_digits_and_agrees() {
        let cl = |vs: &[&str]| {
            let hs: Vec<(&str, &str)> = vs.iter().map(|v| ("Content-Length", *v)).collect();
            framing(&hs, true).map(|b| b.length)
        };
        assert_eq!(cl(&["5"]), Ok(Some(5)));
        assert_eq!(cl(&["5", "5"]), Ok(Some(5)));
        assert_eq!(cl(&["5, 5"]), Ok(Some(5)));
        for bad in [
            &["5", "6"][..],
            &["+5"],
            &["-1"],
            &["5,"],
            &[""],
            &["0x5"],
            &["5 5"],
        ] {
            assert_eq!(cl(bad), Err(400), "{bad:?}");
        }
        assert_eq!(cl(&["99999999999999999999"]), Err(400));
    }

    #[test]
    fn bare_lf_is_found() {
        assert!(lines_end_in_crlf(b"GET / HTTP/1.1\r\nA: b\r\n\r\n"));
        assert!(!lines_end_in_crlf(b"GET / HTTP/1.1\nA: b\r\n\r\n"));
        assert!(!lines_end_in_crlf(b"\nGET / HTTP/1.1\r\n\r\n"));
    }

    #[test]
    fn a_head_may_end_only_after_an_empty_line() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        for cut in 0..head.len() {
            assert!(!head_may_end(&head[..cut], 0), "cut at {cut}");
        }
        for from in 0..=head.len() {
            assert!(head_may_end(head, from), "from {from}");
        }
        assert!(head_may_end(b"GET / HTTP/1.0\n\n", 15));
        assert!(head_may_end(&vec![b'a'; MAX_HEAD + 1], MAX_HEAD));
    }

    #[test]
    fn lengths_are_written_in_decimal() {
        for n in [0, 7, 10, 1234567890, u64::MAX] {
            let mut out = Vec::new();
            write_length(&mut out, n);
            assert_eq!(out, format!("Content-Length: {n}\r\n").as_bytes());
        }
    }
}
