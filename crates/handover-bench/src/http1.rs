//! The little HTTP/1.1 the benchmark speaks: one fixed `GET /` request and a response parser
//! that finds the status, the body and whether the server announced `Connection: close`.

/// The request bytes for `GET /` on `port`; `close` adds `Connection: close`.
pub fn request(port: u16, close: bool) -> Vec<u8> {
    let conn = if close { "Connection: close\r\n" } else { "" };
    format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{conn}\r\n").into_bytes()
}

/// A complete response found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Where the body starts in the buffer.
    pub body_start: usize,
    /// Where the body (and so the response) ends in the buffer.
    pub body_end: usize,
    /// The server announced it closes the connection after this response.
    pub close: bool,
}

/// What a buffer holds so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parse {
    /// More bytes are needed.
    Incomplete,
    /// The head is complete and has no length: the body runs to end of stream, which the
    /// caller passes as `eof` once it has seen it.
    UntilEof,
    /// A whole response.
    Done(Response),
    /// Not a response this client understands (bad status line, chunked body, ...).
    Invalid(&'static str),
}

/// Parses the response at the start of `buf`; `eof` says the peer closed the stream.
pub fn parse(buf: &[u8], eof: bool) -> Parse {
    let Some(head_end) = find_head_end(buf) else {
        return Parse::Incomplete;
    };
    let head = &buf[..head_end];
    let mut lines = head.split(|&b| b == b'\n').map(trim_cr);
    let Some(status) = lines.next().and_then(status_code) else {
        return Parse::Invalid("bad status line");
    };
    let body_start = head_end + 4;
    let mut length: Option<usize> = None;
    // HTTP/1.0 closes after each response unless it says `keep-alive` (RFC 9112 §9.3): the
    // stdlib Python worker of the supervisor matrix answers so, and its closes are announced.
    let http10 = head.starts_with(b"HTTP/1.0 ");
    let mut keep_alive = false;
    let mut close = false;
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"content-length") {
            match std::str::from_utf8(value).ok().and_then(|s| s.parse().ok()) {
                Some(n) => length = Some(n),
                None => return Parse::Invalid("bad content-length"),
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for t in value.split(|&b| b == b',').map(trim) {
                close |= t.eq_ignore_ascii_case(b"close");
                keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Parse::Invalid("transfer-encoding is not supported");
        }
    }
    let body_end = match length {
        Some(n) if buf.len() >= body_start + n => body_start + n,
        Some(_) => return Parse::Incomplete,
        None if status == 204 || status == 304 => body_start,
        None if eof => buf.len(),
        None => return Parse::UntilEof,
    };
    Parse::Done(Response {
        status,
        body_start,
        body_end,
        close: close || length.is_none() || (http10 && !keep_alive),
    })
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

fn status_code(line: &[u8]) -> Option<u16> {
    let rest = line.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    if rest.get(1) != Some(&b' ') || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nConnection: Close\r\n\r\nhello";

    #[test]
    fn parses_complete_response() {
        let r = match parse(OK, false) {
            Parse::Done(r) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(r.status, 200);
        assert_eq!(&OK[r.body_start..r.body_end], b"hello");
        assert!(r.close);
    }

    #[test]
    fn waits_for_the_whole_body() {
        assert_eq!(parse(&OK[..OK.len() - 1], false), Parse::Incomplete);
        assert_eq!(parse(&OK[..10], false), Parse::Incomplete);
    }

    #[test]
    fn keep_alive_and_errors() {
        let ka = b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(parse(ka, false), Parse::Done(r) if r.status == 503 && !r.close));
        assert!(matches!(
            parse(b"garbage\r\n\r\n", false),
            Parse::Invalid(_)
        ));
        let ten = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert!(matches!(parse(ten, false), Parse::Done(r) if r.close));
        let ten_ka = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok";
        assert!(matches!(parse(ten_ka, false), Parse::Done(r) if !r.close));
        let no_len = b"HTTP/1.0 200 OK\r\n\r\nbody";
        assert_eq!(parse(no_len, false), Parse::UntilEof);
        assert!(matches!(parse(no_len, true), Parse::Done(r) if r.body_end == no_len.len()));
    }
}
