//! A thread-per-connection HTTP/1.1 server on `std::net` streams, with no async code in its
//! serving path: `handover::blocking`. Request heads are parsed by `httparse`, strictly (a
//! malformed head gets `400` naming the fault, and the connection is closed).
//!
//! `GET /` answers `blocking pid=<pid>`, `GET /sleep/<ms>` the same after that many
//! milliseconds (at most 60000). Keep-alive is the default for HTTP/1.1; once the process
//! drains, every answer says `Connection: close`, and a connection that stays idle for the
//! idle grace is closed (a FIN, after the peer's last request was answered).
//!
//! ```text
//! cargo run --example blocking -- --listen 127.0.0.1:8080
//! curl 127.0.0.1:8080/
//! kill -USR2 <pid>     # the new pid answers; the old one drains and exits
//! ```
//!
//! Flags: `--listen ADDR` (default `127.0.0.1:8080`), `--idle-grace DUR` (1s),
//! `--drain-timeout DUR` (30s).

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use handover::blocking::{BlockingConnection, BlockingListener, Next};
use handover::{Handover, ListenAddr};

/// Longest request head accepted (request line and headers).
const MAX_HEAD: usize = 16 * 1024;
/// Most headers in one request.
const MAX_HEADERS: usize = 64;
/// Longest request body read (and thrown away).
const MAX_BODY: u64 = 1024 * 1024;
/// Bound on each read and write inside a request, so a stalled peer cannot hold a thread.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a closed connection waits for the peer's own FIN (see [`linger_close`]).
const LINGER: Duration = Duration::from_secs(1);
/// Longest `/sleep/<ms>`.
const MAX_SLEEP_MS: u64 = 60_000;

/// A blocking HTTP/1.1 server, upgradable with `kill -USR2 <pid>`.
#[derive(Parser, Debug)]
struct Args {
    /// Address to serve: `IP:PORT`, `tcp://IP:PORT` or `unix:PATH`; port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: ListenAddr,
    /// How long an idle keep-alive connection stays open once the drain began.
    #[arg(long, value_name = "DUR", value_parser = handover::parse_duration, default_value = "1s")]
    idle_grace: Duration,
    /// How long requests in progress get to finish at a stop or handover.
    #[arg(long, value_name = "DUR", value_parser = handover::parse_duration, default_value = "30s")]
    drain_timeout: Duration,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt().with_writer(io::stderr).init();
    let args = Args::parse();
    // Before any thread exists: this reads and clears the inheritance variables.
    let handover = Handover::builder()
        .idle_grace(args.idle_grace)
        .drain_timeout(args.drain_timeout)
        .build();
    let result = handover.and_then(|h| {
        // The handshake and the wait for the drain are async; serving is not. One thread runs
        // them, the connections have threads of their own.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io_error("cannot start the runtime"))?;
        rt.block_on(run(h, &args.listen))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run(mut handover: Handover, addr: &ListenAddr) -> Result<(), handover::Error> {
    let listener = handover
        .listen(addr)?
        .into_blocking()
        .map_err(io_error("cannot make the listener blocking"))?;
    let running = handover.ready().await?;
    tracing::info!("serving {}", listener.local_addr());
    thread::Builder::new()
        .name("accept".into())
        .spawn(move || accept_loop(listener))
        .map_err(io_error("cannot start the accept thread"))?;
    // Returns once drained: every connection dropped, or the drain deadline passed.
    running.wait().await;
    Ok(())
}

fn io_error(context: &'static str) -> impl Fn(io::Error) -> handover::Error {
    move |source| handover::Error::Io { context, source }
}

fn accept_loop(listener: BlockingListener) {
    while let Some(accepted) = listener.accept() {
        let conn = match accepted {
            Ok((conn, _peer)) => conn,
            // Logged, with the pause that keeps this from spinning, by the library.
            Err(_) => continue,
        };
        let spawned = thread::Builder::new()
            .name("conn".into())
            .spawn(move || serve(conn));
        if let Err(e) = spawned {
            tracing::warn!("cannot start a connection thread: {e}; closing the connection");
        }
    }
}

fn serve(conn: BlockingConnection) {
    if let Err(e) = serve_requests(&conn) {
        tracing::debug!("connection ended: {e}");
    }
    linger_close(&conn);
}

/// The keep-alive loop: one request after another until either side closes, a request is
/// bad, or the drain tells this connection to go.
fn serve_requests(conn: &BlockingConnection) -> io::Result<()> {
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    // Bytes read but not yet used: a pipelined next request may already be here.
    let mut buf = Vec::with_capacity(1024);
    loop {
        // Between requests: this returns `Close` once the drain's idle grace is over.
        if buf.is_empty() && conn.wait_request()? == Next::Close {
            return Ok(());
        }
        let request = match read_request(conn, &mut buf)? {
            Head::Closed => return Ok(()),
            Head::Bad(status, why) => {
                respond(conn, status, &format!("{why}\n"), true, true)?;
                return Ok(());
            }
            Head::Request(r) => r,
        };
        let (status, body) = answer(&request);
        // Checked after the work, right before answering: a request in progress when the
        // drain began is answered, and told to reconnect (to the new generation).
        let close = !request.keep_alive || conn.is_draining();
        respond(conn, status, &body, !request.head_only, close)?;
        if close {
            return Ok(());
        }
    }
}

struct Request {
    head_only: bool,
    path: String,
    keep_alive: bool,
}

enum Head {
    Request(Request),
    /// The peer closed the connection between requests.
    Closed,
    /// Not a request this server takes: the status and why.
    Bad(u16, String),
}

/// Reads one request head (and its body, thrown away) from `conn`, starting with `buf`.
fn read_request(conn: &BlockingConnection, buf: &mut Vec<u8>) -> io::Result<Head> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(len)) => {
                let head = check_head(&req);
                buf.drain(..len);
                return match head {
                    Ok((request, body_len)) => {
                        discard_body(conn, buf, body_len)?;
                        Ok(Head::Request(request))
                    }
                    Err((status, why)) => Ok(Head::Bad(status, why)),
                };
            }
            Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
                return Ok(Head::Bad(
                    431,
                    format!("request head longer than {MAX_HEAD} bytes"),
                ))
            }
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => {
                return Ok(Head::Bad(
                    431,
                    format!("more than {MAX_HEADERS} header fields"),
                ))
            }
            Err(e) => return Ok(Head::Bad(400, format!("malformed request head: {e}"))),
        }
        let mut chunk = [0u8; 4096];
        let n = (&*conn).read(&mut chunk)?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(Head::Closed)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection in the middle of a request head",
                ))
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// What this server makes of a complete head: the request and its body length, or a status
/// and the reason for refusing it.
fn check_head(req: &httparse::Request<'_, '_>) -> Result<(Request, u64), (u16, String)> {
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return Err((400, "incomplete request line".into()));
    };
    let mut body_len: Option<u64> = None;
    let mut connection_close = false;
    let mut connection_keep_alive = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err((501, "Transfer-Encoding is not supported".into()));
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = parse_content_length(h.value)
                .ok_or_else(|| (400, "Content-Length is not a decimal number".to_string()))?;
            if body_len.is_some_and(|m| m != n) {
                return Err((400, "conflicting Content-Length fields".into()));
            }
            body_len = Some(n);
        }
        if h.name.eq_ignore_ascii_case("connection") {
            let value = std::str::from_utf8(h.value)
                .map_err(|_| (400, "Connection is not ASCII".to_string()))?;
            for token in value.split(',').map(str::trim) {
                connection_close |= token.eq_ignore_ascii_case("close");
                connection_keep_alive |= token.eq_ignore_ascii_case("keep-alive");
            }
        }
    }
    let body_len = body_len.unwrap_or(0);
    if body_len > MAX_BODY {
        return Err((413, format!("request body longer than {MAX_BODY} bytes")));
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        other => return Err((405, format!("method {other} is not allowed (GET, HEAD)"))),
    };
    // HTTP/1.1 keeps the connection unless told not to; HTTP/1.0 only when asked.
    let keep_alive = if version == 1 {
        !connection_close
    } else {
        connection_keep_alive && !connection_close
    };
    Ok((
        Request {
            head_only,
            path: path.to_string(),
            keep_alive,
        },
        body_len,
    ))
}

/// RFC 9110 section 8.6: one or more digits, nothing else.
fn parse_content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

fn discard_body(conn: &BlockingConnection, buf: &mut Vec<u8>, len: u64) -> io::Result<()> {
    let from_buf = (len as usize).min(buf.len());
    buf.drain(..from_buf);
    let rest = len - from_buf as u64;
    let copied = io::copy(&mut conn.take(rest), &mut io::sink())?;
    if copied < rest {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the peer closed the connection in the middle of a request body",
        ));
    }
    Ok(())
}

/// The application: `(status, body)` for a request.
fn answer(request: &Request) -> (u16, String) {
    let hello = format!("blocking pid={}", std::process::id());
    if request.path == "/" {
        return (200, hello);
    }
    if let Some(ms) = request.path.strip_prefix("/sleep/") {
        return match ms.parse::<u64>() {
            // Digits only: `parse` would also take a leading `+`.
            Ok(n) if n <= MAX_SLEEP_MS && ms.bytes().all(|b| b.is_ascii_digit()) => {
                thread::sleep(Duration::from_millis(n));
                (200, hello)
            }
            _ => (
                400,
                format!("/sleep/<ms> wants a number of milliseconds up to {MAX_SLEEP_MS}\n"),
            ),
        };
    }
    (404, format!("no such path: {}\n", request.path))
}

/// Writes one response; `send_body` false for `HEAD` (the length is still the body's).
fn respond(
    conn: &BlockingConnection,
    status: u16,
    body: &str,
    send_body: bool,
    close: bool,
) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        _ => "",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n",
        body.len()
    );
    if status == 405 {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    if close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    if send_body {
        out.push_str(body);
    }
    (&*conn).write_all(out.as_bytes())
}

/// Closes with a FIN and then waits (briefly) for the peer's: closing a socket with unread
/// bytes in it sends a reset, which can destroy the last answer before the peer read it.
fn linger_close(conn: &BlockingConnection) {
    if conn.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let end = Instant::now() + LINGER;
    let mut sink = [0u8; 4096];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() || conn.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match (&*conn).read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
