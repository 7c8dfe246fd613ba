//! Worker response heads for the relay: parsed with `httparse`, checked (a worker is trusted
//! to serve, not to frame ambiguously), and written out for the client in one pass.
//!
//! Refused (the client gets 502 and the worker connection is closed): a malformed head,
//! `Content-Length` with `Transfer-Encoding`, lengths that differ, a malformed
//! `Transfer-Encoding`, a 204 that declares a body, a 101 nobody asked for. The proxy writes one
//! `Content-Length` of its own; hop-by-hop headers and those `Connection` names are dropped.

use std::fmt::Write as _;

use super::message::{self, BodyHeaders, Connection, Framing, Line, MAX_HEAD, MAX_HEADERS};

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
pub fn parse(
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
    let conn = Connection::of(headers).ok_or("invalid Connection header")?;
    out.clear();
    let switching = status == 101;
    if switching && !asked.upgrade {
        return Err("the worker switched protocols unasked");
    }
    let interim = (100..200).contains(&status) && !switching;
    let body = BodyHeaders::of(headers, false).map_err(|e| e.why)?;
    if status == 204 && (body.chunked.is_some() || body.length.is_some_and(|n| n > 0)) {
        return Err("a 204 response that declares a body");
    }
    let framing = if interim || switching || asked.head || status == 204 || status == 304 {
        Framing::None
    } else {
        match (body.chunked, body.length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) | (None, None) => Framing::UntilClose,
            (None, Some(n)) => Framing::Length(n),
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
        let name = h.name.as_bytes();
        if conn.drops(name) || name.eq_ignore_ascii_case(b"content-length") {
            continue;
        }
        message::write_header(out, name, h.value);
    }
    // The length a HEAD or 304 response declares is kept (it describes the body a GET would
    // get); a body of chunk data for an HTTP/1.0 client has none, it ends at the close.
    let declared = match framing {
        Framing::Length(n) => Some(n),
        Framing::None if !interim && !switching && status != 204 => body.length,
        _ => None,
    };
    if let (Some(n), false) = (declared, dechunk) {
        message::write_length(out, n);
    }
    // The worker's codings as they are (hop-by-hop, but the body is passed on as it came):
    // `chunked`, `gzip, chunked`, or a close-delimited `gzip`.
    let codings_passed = match body.chunked {
        Some(true) => framing == Framing::Chunked && !dechunk,
        Some(false) => framing == Framing::UntilClose,
        None => false,
    };
    if codings_passed {
        if let Some(te) = headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
        {
            message::write_header(out, b"Transfer-Encoding", te.value);
        }
    }
    if switching {
        if let Some(u) = headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("upgrade"))
        {
            message::write_header(out, b"Upgrade", u.value);
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

/// A complete error response of the proxy's own (`head`: to a HEAD request, so without its
/// body).
pub fn error(out: &mut Vec<u8>, status: u16, why: &str, close: bool, head: bool) {
    let reason = match status {
        400 => "Bad Request",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
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
    if head {
        out.truncate(out.len() - body.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(input: &str, asked: Asked) -> (Response, String) {
        let mut out = Vec::new();
        let r = parse(input.as_bytes(), asked, &mut out)
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
            "HTTP/1.1 200 OK\r\nServer: w\r\nContent-Length: 5\r\n\r\n"
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
        // Connection cannot name the framing away.
        let (r, out) = resp(
            "HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 2\r\n\r\nok",
            GET11,
        );
        assert_eq!(r.framing, Framing::Length(2));
        assert!(out.contains("Content-Length: 2\r\n"), "{out}");
    }

    #[test]
    fn ambiguous_responses_are_refused() {
        let mut out = Vec::new();
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
            "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        ] {
            assert!(parse(bad.as_bytes(), GET11, &mut out).is_err(), "{bad:?}");
        }
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
        let (r, out) = resp(
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n",
            GET11,
        );
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
        let (r, out) = resp(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            GET11,
        );
        assert_eq!(r.framing, Framing::Chunked);
        assert!(
            out.contains("Transfer-Encoding: gzip, chunked\r\n"),
            "{out}"
        );
    }

    #[test]
    fn upgrades_switch_only_when_asked() {
        let switch =
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
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
        error(&mut out, 501, "no", true, false);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 501 Not Implemented\r\n"));
        assert!(s.contains("Connection: close\r\n"));
        let body = s.split("\r\n\r\n").nth(1).unwrap();
        assert!(s.contains(&format!("Content-Length: {}\r\n", body.len())));
        let mut head = Vec::new();
        error(&mut head, 501, "no", true, true);
        assert_eq!(head, s.as_bytes()[..s.len() - body.len()].to_vec());
    }
}
