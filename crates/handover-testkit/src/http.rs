//! A std-only HTTP/1.1 client over TCP or a unix socket that never retries, so every failure
//! is counted: one request ([`get`]), a request whose answer is read later
//! ([`PendingRequest`]), and the response reader the loads share ([`read_response`]).

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::proc::{socket_inodes, tcp_inode};
use crate::wait::{poll_until, LONG};

/// Where a server listens, as its `serving` log line says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Addr {
    /// `tcp://IP:PORT`
    Tcp(SocketAddr),
    /// `unix:/path`
    Unix(PathBuf),
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Tcp(a) => write!(f, "tcp://{a}"),
            Addr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A client connection to an [`Addr`].
pub enum Stream {
    /// Over TCP (`TCP_NODELAY` set).
    Tcp(TcpStream),
    /// Over a unix stream socket.
    Unix(UnixStream),
}

impl Stream {
    /// Connects, with `timeout` as the connect (TCP), read and write timeout.
    pub fn connect(addr: &Addr, timeout: Duration) -> io::Result<Stream> {
        let s = match addr {
            Addr::Tcp(a) => {
                let s = TcpStream::connect_timeout(a, timeout)?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))?;
                Stream::Tcp(s)
            }
            Addr::Unix(p) => {
                let s = UnixStream::connect(p)?;
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))?;
                Stream::Unix(s)
            }
        };
        Ok(s)
    }

    fn local_tcp_addr(&self) -> Option<SocketAddr> {
        match self {
            Stream::Tcp(s) => s.local_addr().ok(),
            Stream::Unix(_) => None,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

/// One HTTP/1.x response, its body decoded (lossily) as UTF-8.
#[derive(Clone, Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body (after de-chunking).
    pub body: String,
}

impl Response {
    /// The first field called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The server announced it will close the connection after this response.
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    }

    /// Splits a `<greeting> pid=<pid>` body.
    pub fn greeting_pid(&self) -> Option<(String, i32)> {
        let (g, p) = self.body.trim().rsplit_once(" pid=")?;
        Some((g.to_string(), p.trim().parse().ok()?))
    }
}

/// Why [`read_response`] found no response.
#[derive(Debug)]
pub enum ReadError {
    /// The connection was closed before a single byte of a response arrived.
    CleanEof,
    /// A read failed (reset, timeout, ...).
    Io(io::Error),
    /// The bytes are not an HTTP/1.x response, or stop in the middle of one.
    Protocol(String),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::CleanEof => write!(f, "connection closed before any response byte"),
            ReadError::Io(e) => write!(f, "{e} ({:?})", e.kind()),
            ReadError::Protocol(m) => write!(f, "protocol error: {m}"),
        }
    }
}

fn read_line(r: &mut impl BufRead, first: bool) -> Result<String, ReadError> {
    let mut buf = Vec::new();
    let n = r.read_until(b'\n', &mut buf).map_err(ReadError::Io)?;
    if n == 0 {
        return Err(if first {
            ReadError::CleanEof
        } else {
            ReadError::Protocol("connection closed in the middle of a response".into())
        });
    }
    if !buf.ends_with(b"\n") {
        return Err(ReadError::Protocol("connection closed mid-line".into()));
    }
    Ok(String::from_utf8_lossy(&buf).trim_end().to_string())
}

/// Reads one HTTP/1.1 response (Content-Length, chunked, or until EOF).
pub fn read_response(r: &mut impl BufRead) -> Result<Response, ReadError> {
    let status_line = read_line(r, true)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(ReadError::Protocol(format!(
            "bad status line {status_line:?}"
        )));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ReadError::Protocol(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(r, false)?;
        if line.is_empty() {
            break;
        }
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| ReadError::Protocol(format!("bad header {line:?}")))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let mut resp = Response {
        status,
        headers,
        body: String::new(),
    };
    let mut body = Vec::new();
    if let Some(len) = resp.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| ReadError::Protocol(format!("bad content-length {len:?}")))?;
        body.resize(len, 0);
        r.read_exact(&mut body).map_err(ReadError::Io)?;
    } else if resp
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let size_line = read_line(r, false)?;
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| ReadError::Protocol(format!("bad chunk size {size_line:?}")))?;
            if size == 0 {
                while !read_line(r, false)?.is_empty() {}
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..]).map_err(ReadError::Io)?;
            read_line(r, false)?;
        }
    } else if status != 204 && status != 304 {
        r.read_to_end(&mut body).map_err(ReadError::Io)?;
    }
    resp.body = String::from_utf8_lossy(&body).into_owned();
    Ok(resp)
}

/// `GET path HTTP/1.1`, with `Connection: close` when `close`.
pub fn request_bytes(path: &str, close: bool) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{}\r\n",
        if close { "Connection: close\r\n" } else { "" }
    )
    .into_bytes()
}

/// One request on a fresh connection (`Connection: close`), 10 s timeouts.
pub fn get(addr: &Addr, path: &str) -> Result<Response, String> {
    get_timeout(addr, path, Duration::from_secs(10))
}

/// [`get`] with another timeout.
pub fn get_timeout(addr: &Addr, path: &str, timeout: Duration) -> Result<Response, String> {
    let mut s = Stream::connect(addr, timeout)
        .map_err(|e| format!("connect {addr}: {e} ({:?})", e.kind()))?;
    s.write_all(&request_bytes(path, true))
        .map_err(|e| format!("write: {e} ({:?})", e.kind()))?;
    read_response(&mut BufReader::new(s)).map_err(|e| format!("read: {e}"))
}

/// `GET /` → (greeting, pid), checking the status and body shape.
pub fn hello_at(addr: &Addr) -> Result<(String, i32), String> {
    let r = get(addr, "/")?;
    if r.status != 200 {
        return Err(format!("status {} body {:?}", r.status, r.body));
    }
    r.greeting_pid()
        .ok_or_else(|| format!("unexpected body {:?}", r.body))
}

/// A request written on its own connection; the response is read later.
pub struct PendingRequest {
    stream: Stream,
    /// The client's address (TCP only).
    local: Option<SocketAddr>,
    /// When the request was written.
    pub sent_at: Instant,
}

impl PendingRequest {
    /// Connects (30 s timeouts) and writes `GET path` with `Connection: close`.
    pub fn send(addr: &Addr, path: &str) -> PendingRequest {
        let timeout = Duration::from_secs(30);
        let mut stream =
            Stream::connect(addr, timeout).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream
            .write_all(&request_bytes(path, true))
            .expect("write request");
        PendingRequest {
            local: stream.local_tcp_addr(),
            stream,
            sent_at: Instant::now(),
        }
    }

    /// Reads the response in a background thread; the handle yields it with its arrival time.
    pub fn finish_in_background(self) -> JoinHandle<(Result<Response, String>, Instant)> {
        thread::spawn(move || {
            let r = read_response(&mut BufReader::new(self.stream)).map_err(|e| e.to_string());
            (r, Instant::now())
        })
    }

    /// Waits until `pid` has accepted this (TCP) connection: its socket inode shows up in
    /// `/proc/<pid>/fd` (not-yet-accepted connections have no inode).
    pub fn wait_accepted_by(&self, pid: i32, server: &Addr) {
        let (Addr::Tcp(server), Some(local)) = (server, self.local) else {
            panic!("wait_accepted_by needs a tcp connection");
        };
        let ok = poll_until(LONG, || {
            tcp_inode(*server, local).is_some_and(|ino| socket_inodes(pid).contains(&ino))
        });
        assert!(ok, "pid {pid} never accepted the connection from {local}");
    }
}
