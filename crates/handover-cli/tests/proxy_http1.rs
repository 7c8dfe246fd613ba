//! HTTP/1.1 protocol edge cases through the HTTP proxy (`handover run --proxy http://...`):
//! raw `TcpStream` clients write exact bytes and parse exact responses (status line, headers,
//! Content-Length, chunked or close-delimited bodies) against a real supervisor and the Python
//! worker of `crates/handover-testkit/fixtures/port_worker.py`.
//!
//! Pipelining, chunked bodies both ways, HTTP/1.0 clients, request smuggling defences, a head
//! over 64 KiB, `Expect: 100-continue`, HEAD, close-delimited worker responses, absolute-form
//! targets, hop-by-hop headers, an early worker response and a garbage request line.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use handover_testkit::cli_kit::*;

/// Bound for one read of a response that should come at once.
const READ: Duration = SHORT;
/// How long a connection that should be closed may stay open after its last response.
const CLOSE: Duration = Duration::from_secs(3);

/// Starts `handover run --proxy http://127.0.0.1:0 -- app.py --port {port}` (worker mode
/// `http`) and waits for the first worker.
fn start(ctx: &Ctx) -> Supervisor {
    let app = write_app(ctx, "v1", "http");
    let sup = ctx.start(&[
        "--proxy",
        "http://127.0.0.1:0",
        "--",
        app.to_str().unwrap(),
        "--port",
        "{port}",
    ]);
    sup.log.expect(0, "is ready (connected to 127.0.0.1:", LONG);
    sup
}

// ---------------------------------------------------------------------------------------------
// The worker's bodies (the same bytes as FIXED, CHUNKS and BIG in port_worker.py)
// ---------------------------------------------------------------------------------------------

/// `GET /fixed` (Content-Length).
fn fixed() -> Vec<u8> {
    let mut b = b"0123456789".repeat(100);
    b.push(b'\n');
    b
}

fn bytes_0_to_255() -> Vec<u8> {
    (0..=255u8).collect()
}

/// `GET /chunked` (three chunks).
fn chunked_body() -> Vec<u8> {
    let mut b = b"alpha\n".to_vec();
    b.extend(bytes_0_to_255().repeat(40));
    b.extend_from_slice(b"omega\n");
    b
}

/// `GET /close-delimited` (no Content-Length, no chunked: ends when the worker closes).
fn big() -> Vec<u8> {
    bytes_0_to_255().repeat(800)
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

// ---------------------------------------------------------------------------------------------
// A raw HTTP/1.x client: exact bytes out, exact parsing in
// ---------------------------------------------------------------------------------------------

/// How a response body was delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    None,
    Length,
    Chunked,
    /// Read until the connection closed.
    Close,
}

#[derive(Debug)]
struct Resp {
    /// `HTTP/1.1` or `HTTP/1.0`.
    version: String,
    status: u16,
    /// In order, names lowercased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    framing: Framing,
}

impl Resp {
    /// Every value of header `name`.
    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.all(name).into_iter().next()
    }

    /// The comma-separated tokens of every `name` header, lowercased.
    fn tokens(&self, name: &str) -> Vec<String> {
        tokens(self.all(name))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn tokens<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    values
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// One line, which must end with CRLF; without it.
fn read_line(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    if !line.ends_with(b"\r\n") {
        return Err(bad(format!(
            "line not ended by CRLF: {:?}",
            String::from_utf8_lossy(&line)
        )));
    }
    line.truncate(line.len() - 2);
    Ok(line)
}

/// Reads one response; `head` when it answers a HEAD request (no body whatever the headers).
fn read_response(r: &mut impl BufRead, head: bool) -> io::Result<Resp> {
    let line = read_line(r)?;
    let line = String::from_utf8(line).map_err(|e| bad(format!("status line: {e}")))?;
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or("").to_string();
    let code = parts.next().unwrap_or("");
    if !(version == "HTTP/1.1" || version == "HTTP/1.0")
        || code.len() != 3
        || !code.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad(format!("bad status line {line:?}")));
    }
    let status: u16 = code.parse().unwrap();
    let mut headers = Vec::new();
    loop {
        let line = read_line(r)?;
        if line.is_empty() {
            break;
        }
        let line = String::from_utf8_lossy(&line).into_owned();
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("bad header line {line:?}")))?;
        if name.is_empty() || name.contains(|c: char| c.is_ascii_whitespace()) {
            return Err(bad(format!("bad header name in {line:?}")));
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut resp = Resp {
        version,
        status,
        headers,
        body: Vec::new(),
        framing: Framing::None,
    };
    if head || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(resp);
    }
    let te = resp.tokens("transfer-encoding");
    let lengths = resp.tokens("content-length");
    if !te.is_empty() {
        if te.last().map(String::as_str) != Some("chunked") {
            return Err(bad(format!("transfer-encoding {te:?} is not chunked last")));
        }
        if !lengths.is_empty() {
            return Err(bad("both transfer-encoding and content-length"));
        }
        resp.body = read_chunked(r)?;
        resp.framing = Framing::Chunked;
    } else if let Some(first) = lengths.first() {
        if lengths.iter().any(|l| l != first) {
            return Err(bad(format!("different content-lengths {lengths:?}")));
        }
        let n: usize = first
            .parse()
            .map_err(|_| bad(format!("bad content-length {first:?}")))?;
        resp.body = vec![0; n];
        r.read_exact(&mut resp.body)?;
        resp.framing = Framing::Length;
    } else {
        r.read_to_end(&mut resp.body)?;
        resp.framing = Framing::Close;
    }
    Ok(resp)
}

/// A chunked body (extensions and trailers checked for shape, then dropped).
fn read_chunked(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = String::from_utf8_lossy(&read_line(r)?).into_owned();
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| bad(format!("bad chunk size line {line:?}")))?;
        if size == 0 {
            break;
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        if !read_line(r)?.is_empty() {
            return Err(bad("chunk data not followed by CRLF"));
        }
    }
    loop {
        let line = read_line(r)?;
        if line.is_empty() {
            return Ok(body);
        }
        if !line.contains(&b':') {
            return Err(bad(format!(
                "bad trailer line {:?}",
                String::from_utf8_lossy(&line)
            )));
        }
    }
}

/// One client connection.
struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Conn {
    fn open(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect_timeout(&addr, SHORT).expect("connect to the proxy");
        s.set_read_timeout(Some(READ)).unwrap();
        s.set_write_timeout(Some(READ)).unwrap();
        s.set_nodelay(true).unwrap();
        Conn {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).expect("write to the proxy");
    }

    fn try_response(&mut self, head: bool) -> io::Result<Resp> {
        read_response(&mut self.r, head)
    }

    /// The next response (not to a HEAD); panics if there is none.
    fn response(&mut self) -> Resp {
        self.try_response(false)
            .unwrap_or_else(|e| panic!("no valid response: {e}"))
    }

    /// The next response, to a HEAD request.
    fn head_response(&mut self) -> Resp {
        self.try_response(true)
            .unwrap_or_else(|e| panic!("no valid response to HEAD: {e}"))
    }

    /// Sends a GET (HTTP/1.1, `Host: t`, `extra` header lines) and reads its response.
    fn get(&mut self, path: &str, extra: &str) -> Resp {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n").as_bytes());
        self.response()
    }

    /// Whether the peer closes the connection (EOF or reset) within [`CLOSE`], with nothing
    /// more sent; why not otherwise.
    fn closed(&mut self) -> Result<(), String> {
        let extra = self.r.buffer().to_vec();
        if !extra.is_empty() {
            return Err(format!(
                "bytes after the last response: {:?}",
                String::from_utf8_lossy(&extra)
            ));
        }
        let s = self.r.get_mut();
        s.set_read_timeout(Some(CLOSE)).unwrap();
        let mut buf = [0u8; 512];
        match s.read(&mut buf) {
            Ok(0) => Ok(()),
            Ok(n) => Err(format!(
                "bytes after the last response: {:?}",
                String::from_utf8_lossy(&buf[..n])
            )),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                ) =>
            {
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(format!(
                    "the connection is still open {CLOSE:?} after the response"
                ))
            }
            Err(e) => Err(format!("reading for the close: {e}")),
        }
    }

    /// Panics unless [`Conn::closed`].
    fn expect_closed(&mut self, what: &str) {
        if let Err(e) = self.closed() {
            panic!("{what}: {e}");
        }
    }
}

/// What the worker saw of a request sent with `X-Echo-Request`.
struct Echo {
    path: String,
    method: String,
    /// Names lowercased, in order.
    headers: Vec<(String, String)>,
}

impl Echo {
    fn of(resp: &Resp) -> Echo {
        assert_eq!(resp.status, 200, "{}", resp.text());
        let text = resp.text();
        let mut lines = text.lines();
        let mut field = |name: &str| {
            let l = lines.next().unwrap_or("");
            l.strip_prefix(&format!("{name}="))
                .unwrap_or_else(|| panic!("no {name}= in the worker's echo {text:?}"))
                .to_string()
        };
        let (path, method, _version) = (field("path"), field("method"), field("version"));
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Echo {
            path,
            method,
            headers,
        }
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Panics if the worker logged `request <method_path>`; first waits for the worker to log a
/// request sent afterwards on a new connection, so that the log is up to date.
fn assert_not_forwarded(sup: &Supervisor, method_path: &str) {
    let from = sup.log.len();
    let after = format!("/after-check-{}", from);
    let a = Conn::open(sup.addr()).get(&after, "X-Echo-Request: 1\r\n");
    assert_eq!(Echo::of(&a).path, after);
    sup.log.expect(from, &format!("request GET {after}"), LONG);
    let needle = format!("request {method_path}");
    assert!(
        !sup.log.contains(&needle),
        "the worker got {method_path}:\n{}",
        sup.log.text()
    );
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// Requests written in one write on one connection get their responses in order, even when
/// the first is slow; a pipelined POST's body is not taken for the next request.
#[test]
fn pipelined_requests_are_answered_in_order() {
    let ctx = Ctx::new();
    let sup = start(&ctx);
    let mut c = Conn::open(sup.addr());
    c.send(
        b"GET /slow?ms=300 HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /second HTTP/1.1\r\nHost: t\r\nX-Echo-Request: 1\r\n\r\n",
    );
    let first = c.response();
    assert_eq!(first.status, 200, "{}", first.text());
    assert!(first.text().starts_with("v1 pid="), "{}", first.text());
    let second = c.response();
    assert_eq!(Echo::of(&second).path, "/second");

    c.send(
        b"POST /body?pipelined HTTP/1.1\r\nHost: t\r\nContent-Length: 17\r\n\r\n\
          GET /x HTTP/1.1\r\n\
          GET /fixed HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let post = c.response();
    assert_eq!(
        (post.status, post.text().as_str()),
        (200, "GET /x HTTP/1.1\r\n")
    );
    let third = c.response();
    assert_eq!(third.status, 200);
    assert!(third.body == fixed(), "{}", third.text());
}

/// A chunked request body (chunk sizes in both cases, an extension, a trailer, written in
/// pieces that split size lines and data) reaches the worker intact, so does an empty
/// chunked body, and the connection goes on serving.
#[test]
fn chunked_request_bodies_reach_the_worker_intact() {
    let ctx = Ctx::new();
    let sup = start(&ctx);
    let mut c = Conn::open(sup.addr());
    let data = pattern(10240);
    let mut expected = b"hello".to_vec();
    expected.extend_from_slice(b"abcdefghijklmnopqrstuvwxyz");
    expected.extend_from_slice(&data);

    let big_chunk_head = format!("{:x}\r\n", data.len());
    let mut pieces: Vec<Vec<u8>> = vec![
        b"POST /body?chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
        b"5\r\nhel".to_vec(),
        b"lo\r\n1A;name=value\r".to_vec(),
        b"\nabcdefghijklmnopqrstuvwxyz\r\n".to_vec(),
    ];
    let mut p = big_chunk_head.into_bytes();
    p.extend_from_slice(&data[..5000]);
    pieces.push(p);
    let mut p = data[5000..].to_vec();
    p.extend_from_slice(b"\r\n0\r\n");
    pieces.push(p);
    pieces.push(b"X-Trailer: 1\r\n\r\n".to_vec());
    for (i, piece) in pieces.iter().enumerate() {
        if i > 0 {
            // Not a wait for readiness: keeps the pieces in separate segments.
            thread::sleep(Duration::from_millis(20));
        }
        c.send(piece);
    }
    let a = c.response();
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.body.len(), expected.len(), "the body's length changed");
    assert!(a.body == expected, "the body came back changed");

    c.send(b"POST /body?empty HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    let a = c.response();
    assert_eq!((a.status, a.body.len()), (200, 0), "{}", a.text());

    let a = c.get("/fixed", "");
    assert_eq!(a.status, 200);
    assert!(a.body == fixed(), "{}", a.text());
}

/// A chunked response (several chunks, an extension, a trailer) reaches the client intact,
/// and the connection stays usable.
#[test]
fn chunked_responses_reach_the_client_intact() {
    let ctx = Ctx::new();
    let sup = start(&ctx);
    let mut c = Conn::open(sup.addr());
    for round in 0..2 {
        let a = c.get("/chunked", "");
        assert_eq!(a.status, 200, "round {round}");
        assert!(a.body == chunked_body(), "round {round}: the body changed");
        let a = c.get("/fixed", "");
        assert_eq!(a.status, 200, "round {round}");
        assert!(a.body == fixed(), "round {round}: {}", a.text());
    }
}

/// An HTTP/1.0 request without `Connection: keep-alive` is answered, then the proxy closes the
/// connection; with it, the response says `Connection: keep-alive` and the connection serves
/// the next request.
#[test]
fn http10_clients_get_keep_alive_only_when_they_ask() {
    let ctx = Ctx::new();
    let sup = start(&ctx);

    let mut c = Conn::open(sup.addr());
    c.send(b"GET /fixed HTTP/1.0\r\nHost: t\r\n\r\n");
    let a = c.response();
    assert_eq!(a.status, 200);
    assert!(a.body == fixed(), "{}", a.text());
    c.expect_closed("HTTP/1.0 without keep-alive");

    let mut c = Conn::open(sup.addr());
    for round in 0..2 {
        c.send(b"GET /fixed HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n");
        let a = c.response();
        assert_eq!(a.status, 200, "round {round}");
        assert!(a.body == fixed(), "round {round}: {}", a.text());
        assert!(
            a.tokens("connection").contains(&"keep-alive".to_string()),
            "round {round}: an HTTP/1.0 client is not told the connection stays open: {:?}",
            a.headers
        );
    }
    c.send(b"GET /fixed HTTP/1.0\r\nHost: t\r\n\r\n");
    let a = c.response();
    assert_eq!(a.status, 200);
    assert!(a.body == fixed(), "{}", a.text());
    c.expect_closed("HTTP/1.0 without keep-alive after keep-alive requests");
}

/// An HTTP/1.0 client is never sent a chunked body (it could not read it): a worker's chunked
/// response reaches it whole, delimited by its length or by the close.
#[test]
fn http10_clients_never_get_chunked_bodies() {
    let ctx = Ctx::new();
    let sup = start(&ctx);
    for extra in ["", "Connection: keep-alive\r\n"] {
        let mut c = Conn::open(sup.addr());
        c.send(format!("GET /chunked HTTP/1.0\r\nHost: t\r\n{extra}\r\n").as_bytes());
        let a = c.try_response(false).unwrap_or_else(|e| {
            panic!("{extra:?}: no valid response: {e}");
        });
        assert_eq!(a.status, 200, "{extra:?}");
        assert_ne!(
            a.framing,
            Framing::Chunked,
            "{extra:?}: chunked to an HTTP/1.0 client ({} response)",
            a.version
        );
        assert!(a.body == chunked_body(), "{extra:?}: the body changed");
    }
}

/// Request smuggling defences: Content-Length with Transfer-Encoding (either order), and two
/// different Content-Length values (two headers or one list), get 400 and a closed
/// connection.
#[test]
fn ambiguous_request_framing_gets_400_and_a_close() {
    let ctx = Ctx::new();
    let sup = start(&ctx);
    let cases: [(&str, &[u8]); 4] = [
        (
            "content-length then transfer-encoding",
            b"POST /body?cl-te HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\
              Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "transfer-encoding then content-length",
            b"POST /body?te-cl HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\
              Content-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "two content-length headers",
            b"POST /body?cl-cl HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\
              Content-Length: 6\r\n\r\nhello!",
        ),
        (
            "a content-length list",
            b"POST /body?cl-list HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 6\r\n\r\nhello!",
        ),
    ];
    // Every case is tried; the failures are reported together.
    let mut failures = Vec::new();
    for (what, request) in cases {
        let mut c = Conn::open(sup.addr());
        c.send(request);
        match c.try_response(false) {
            Err(e) => failures.push(format!("{what}: no valid response: {e}")),
            Ok(a) if a.status != 400 => {
                failures.push(format!("{what}: got {} {:?}", a.status, a.text()));
            }
            Ok(_) => {
                if let Err(e) = c.closed() {
                    failures.push(format!("{what}: 400, but {e}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // The proxy still serves.
    assert_eq!(Conn::open(sup.addr()).get("/fixed", "").status, 200);
}

/// A request head over 64 KiB (one huge header) gets 431 (or 400) and never reaches the
/// worker; a 16 KiB header is forwarded.
#[test]
fn a_request_head_over_64_kib_is_refused() {
    let ctx = Ctx::new();
    let sup = start(&ctx);

    let fine = "f".repeat(16 * 1024);
    let a = Conn::open(sup.addr()).get("/fine", &format!("X-Echo-Request: 1\r\nX-Big: {fine}\r\n"));
    let echo = Echo::of(&a);
    assert_eq!(echo.path, "/fine");
    assert_eq!(echo.all("x-big"), vec![fine.as_str()]);

    let huge = "h".repeat(72 * 1024);
    let mut c = Conn::open(sup.addr());
    let head =
        format!("GET /huge HTTP/1.1\r\nHost: t\r\nX-Echo-Request: 1\r\nX-Huge: {huge}\r\n\r\n");
    // The proxy may answer and close before it has read everything.
    let _ = c.w.write_all(head.as_bytes());
    let a = c
        .try_response(false)
        .unwrap_or_else(|e| panic!("no valid response to a huge head: {e}"));
    assert!(
        a.status == 431 || a.status == 400,
        "a {}-byte head got {} {}",
        head.len(),
        a.status,
        a.text().chars().take(200).collect::<String>()
    );
    assert_not_forwarded(&sup, "GET /huge");
}

/// `Expect: 100-continue`: the client sends only the head, gets `100 Continue`, then sends
/// the body and gets the final response with it echoed.
#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let ctx = Ctx::new();
    let sup = start(&ctx);
    let mut c = Conn::open(sup.addr());
    let body = pattern(20000);
    c.send(
        format!(
            "POST /body?expect HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\
             Expect: 100-continue\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    let interim = c
        .try_response(false)
        .unwrap_or_else(|e| panic!("no 100 Continue within {READ:?} of the head: {e}"));
    assert_eq!(
        interim.status,
        100,
        "{:?} {}",
        interim.headers,
        interim.text()
    );
    c.send(&body);
    let last = loop {
        let a = c.response();
        if a.status != 100 {
            break a;
        }
    };
    assert_eq!(last.status, 200, "{}", last.text());
    assert!(last.body == body, "the body came back changed");
    let a = c.get("/fixed", "");
    assert_eq!(a.status, 200);
    assert!(a.body == fixed(), "{}", a.text());
}

/// A HEAD response has no body (even one that announces a length or chunked), and a GET that
/// follows on the same connection gets its whole body.
#[test]
fn head_responses_have_no_body() {
    let ctx = Ctx::new();
    let sup = start(&ctx);
    let mut c = Conn::open(sup.addr());
    for (path, body) in [("/fixed", fixed()), ("/chunked", chunked_body())] {
        c.send(format!("HEAD {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let h = c.head_response();
        assert_eq!(h.status, 200, "HEAD {path}");
        if let Some(n) = h.header("content-length") {
            assert_eq!(
                n,
                body.len().to_string(),
                "HEAD {path}: not the GET's length"
            );
        }
        let a = c.get(path, "");
        assert_eq!(a.status, 200, "GET {path} after HEAD");
        assert!(
            a.body == body,
            "GET {path} after HEAD: the body changed: {:?}",
            a.text().chars().take(200).collect::<String>()
        );
    }
    // The same, pipelined: any body after the HEAD's head would be read as the GET's answer.
    c.send(b"HEAD /chunked HTTP/1.1\r\nHost: t\r\n\r\nGET /fixed HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.head_response().status, 200);
    let a = c.response();
    assert_eq!(a.status, 200);
    assert!(a.body == fixed(), "{}", a.text());
}

/// A worker response with neither Content-Length nor chunked (ended by the worker's close;
/// HTTP/1.1 and HTTP/1.0 status lines) reaches the client whole, then the proxy closes the
/// client connection.
#[test]
fn close_delimited_worker_responses_end_with_a_close() {
    let ctx = Ctx::new();
    let sup = start(&ctx);
    // Both are tried; the failures are reported together.
    let mut failures = Vec::new();
    for path in ["/close-delimited", "/close-delimited?v=1.0"] {
        let mut c = Conn::open(sup.addr());
        let a = c.get(path, "");
        assert_eq!(a.status, 200, "{path}");
        assert_eq!(
            a.body.len(),
            big().len(),
            "{path}: the body's length changed"
        );
        assert!(a.body == big(), "{path}: the body changed");
        if a.framing != Framing::Close {
            if let Err(e) = c.closed() {
                failures.push(format!("{path} (relayed {:?}): {e}", a.framing));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(Conn::open(sup.addr()).get("/fixed", "").status, 200);
}

/// An absolute-form target reaches the worker in origin form, with the Host header.
#[test]
fn absolute_form_targets_reach_the_worker_in_origin_form() {
    let ctx = Ctx::new();
    let sup = start(&ctx);
    let mut c = Conn::open(sup.addr());
    c.send(
        b"GET http://example.com/x?y=1 HTTP/1.1\r\nHost: example.com\r\nX-Echo-Request: 1\r\n\r\n",
    );
    let echo = Echo::of(&c.response());
    assert_eq!(echo.method, "GET");
    assert_eq!(echo.path, "/x?y=1");
    assert_eq!(echo.all("host"), vec!["example.com"]);
}

/// Hop-by-hop headers: what the client's `Connection` names, `Keep-Alive` and the
/// `Connection` token itself do not reach the worker; what the worker's `Connection` names
/// (and its `Keep-Alive`) do not reach the client.
#[test]
fn hop_by_hop_headers_are_not_forwarded() {
    let ctx = Ctx::new();
    let sup = start(&ctx);
    let mut c = Conn::open(sup.addr());
    let a = c.get(
        "/hop",
        "Connection: keep-alive, x-secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\n\
         X-Echo-Request: 1\r\nX-Kept: yes\r\n",
    );
    let echo = Echo::of(&a);
    assert_eq!(echo.path, "/hop");
    assert!(echo.all("x-secret").is_empty(), "{:?}", echo.headers);
    assert!(echo.all("keep-alive").is_empty(), "{:?}", echo.headers);
    assert!(
        !tokens(echo.all("connection")).contains(&"x-secret".to_string()),
        "{:?}",
        echo.headers
    );
    assert_eq!(echo.all("x-kept"), vec!["yes"]);

    let a = c.get("/conn-header", "");
    assert_eq!((a.status, a.text().as_str()), (200, "ok\n"));
    assert_eq!(a.header("x-public"), Some("ok"), "{:?}", a.headers);
    assert!(a.header("x-private").is_none(), "{:?}", a.headers);
    assert!(
        !a.tokens("connection").contains(&"x-private".to_string()),
        "{:?}",
        a.headers
    );
    assert!(
        !a.all("keep-alive").contains(&"timeout=7"),
        "the worker's Keep-Alive reached the client: {:?}",
        a.headers
    );
    // Still usable.
    let a = c.get("/fixed", "");
    assert_eq!(a.status, 200);
    assert!(a.body == fixed(), "{}", a.text());
}

/// A worker that answers 413 at once to a POST declaring 50 MB, without reading the body:
/// the client, which has sent only part of the body, gets the 413.
#[test]
fn an_early_worker_response_reaches_the_client() {
    let ctx = Ctx::new();
    let sup = start(&ctx);
    let mut c = Conn::open(sup.addr());
    c.send(b"POST /early-413 HTTP/1.1\r\nHost: t\r\nContent-Length: 50000000\r\n\r\n");
    // Part of the body; the proxy may already have answered and closed.
    let _ = c.w.write_all(&pattern(64 * 1024));
    let a = c
        .try_response(false)
        .unwrap_or_else(|e| panic!("no valid response: {e}"));
    assert_eq!(a.status, 413, "{}", a.text());
    assert_eq!(a.text(), "too large\n");
}

/// A garbage request line gets 400 and a closed connection; the supervisor serves other
/// clients meanwhile and afterwards.
#[test]
fn a_bad_request_line_gets_400_and_a_close() {
    let ctx = Ctx::new();
    let sup = start(&ctx);
    let mut other = Conn::open(sup.addr());
    assert_eq!(other.get("/fixed", "").status, 200);

    let mut c = Conn::open(sup.addr());
    c.send(b"\x01\x02 nonsense\r\n\r\n");
    let a = c
        .try_response(false)
        .unwrap_or_else(|e| panic!("no valid response to garbage: {e}"));
    assert_eq!(a.status, 400, "{}", a.text());
    c.expect_closed("after a bad request line");

    assert!(is_alive(sup.pid), "the supervisor died");
    let a = other.get("/fixed", "");
    assert_eq!(a.status, 200, "the open connection stopped serving");
    assert!(a.body == fixed());
    let a = Conn::open(sup.addr()).get("/fixed", "");
    assert_eq!(a.status, 200, "a new connection is not served");
}

/// `--client-timeout`: a client that starts a request head and stalls gets 408 and a close; an
/// idle keep-alive connection is closed without a word; a busy one is not.
#[test]
fn slow_and_idle_clients_are_timed_out() {
    let ctx = Ctx::new();
    let app = write_app(&ctx, "v1", "http");
    let sup = ctx.start(&[
        "--proxy",
        "http://127.0.0.1:0",
        "--client-timeout",
        "1s",
        "--",
        app.to_str().unwrap(),
        "--port",
        "{port}",
    ]);
    sup.log.expect(0, "is ready (connected to 127.0.0.1:", LONG);

    let mut stalled = Conn::open(sup.addr());
    stalled.send(b"GET /fixed HTTP/1.1\r\nHost: x\r\n");
    let mut idle = Conn::open(sup.addr());
    assert_eq!(idle.get("/fixed", "").status, 200);
    // Requests every 100 ms for longer than the timeout: the connection stays open.
    let mut busy = Conn::open(sup.addr());
    for _ in 0..15 {
        assert_eq!(busy.get("/fixed", "").status, 200);
        std::thread::sleep(Duration::from_millis(100));
    }
    let a = stalled
        .try_response(false)
        .unwrap_or_else(|e| panic!("no answer to a stalled head: {e}"));
    assert_eq!(a.status, 408, "{}", a.text());
    stalled.expect_closed("after 408");
    idle.expect_closed("an idle keep-alive connection");
    assert_eq!(busy.get("/fixed", "").status, 200);
}

/// A head that arrives a few bytes at a time (separate segments) is answered as usual.
#[test]
fn a_head_sent_in_pieces_is_answered() {
    let ctx = Ctx::new();
    let sup = start(&ctx);
    let mut c = Conn::open(sup.addr());
    for piece in b"GET /fixed HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n".chunks(3) {
        c.send(piece);
        // Separate segments (Nagle is off): not a readiness wait.
        thread::sleep(Duration::from_millis(2));
    }
    let a = c.try_response(false).expect("an answer");
    assert_eq!(a.status, 200);
    assert!(a.body == fixed());
    assert_eq!(c.get("/fixed", "").status, 200, "the connection goes on");
}
