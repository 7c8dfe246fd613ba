//! A raw HTTP/1 client for the smuggling tests: writes exact bytes, reads answers strictly
//! (a malformed answer is an error, not a guess), every read bounded in time.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use handover_testkit::cli_kit::SHORT;

/// One answer from the proxy.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    /// Names lowercased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The target the worker's answer names, if it is one.
    pub fn target(&self) -> Option<String> {
        super::answered_target(&self.body)
    }
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

fn line(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut l = Vec::new();
    r.read_until(b'\n', &mut l)?;
    if l.is_empty() {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
    }
    if !l.ends_with(b"\r\n") {
        return Err(bad(format!(
            "line not ended by CRLF: {:?}",
            String::from_utf8_lossy(&l)
        )));
    }
    l.truncate(l.len() - 2);
    Ok(l)
}

/// Reads one answer (interim ones included); `head`: it answers a HEAD request.
pub fn read_response(r: &mut impl BufRead, head: bool) -> io::Result<Resp> {
    let status_line = String::from_utf8_lossy(&line(r)?).into_owned();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let code = parts.next().unwrap_or("");
    if !matches!(version, "HTTP/1.1" | "HTTP/1.0")
        || code.len() != 3
        || !code.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad(format!("bad status line {status_line:?}")));
    }
    let status: u16 = code.parse().unwrap();
    let mut headers = Vec::new();
    loop {
        let l = line(r)?;
        if l.is_empty() {
            break;
        }
        let l = String::from_utf8_lossy(&l).into_owned();
        let (k, v) = l
            .split_once(':')
            .ok_or_else(|| bad(format!("bad header line {l:?}")))?;
        headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
    }
    let mut resp = Resp {
        status,
        headers,
        body: Vec::new(),
    };
    if head || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(resp);
    }
    let te = resp
        .header("transfer-encoding")
        .map(str::to_ascii_lowercase);
    if let Some(te) = te {
        if te.trim() != "chunked" || resp.header("content-length").is_some() {
            return Err(bad(format!("bad framing in {:?}", resp.headers)));
        }
        loop {
            let l = String::from_utf8_lossy(&line(r)?).into_owned();
            let size = usize::from_str_radix(l.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| bad(format!("bad chunk size line {l:?}")))?;
            if size == 0 {
                break;
            }
            let at = resp.body.len();
            resp.body.resize(at + size, 0);
            r.read_exact(&mut resp.body[at..])?;
            if !line(r)?.is_empty() {
                return Err(bad("chunk data not followed by CRLF"));
            }
        }
        while !line(r)?.is_empty() {}
    } else if let Some(n) = resp.header("content-length") {
        let n: usize = n.parse().map_err(|_| bad(format!("bad length {n:?}")))?;
        resp.body = vec![0; n];
        r.read_exact(&mut resp.body)?;
    } else {
        r.read_to_end(&mut resp.body)?;
    }
    Ok(resp)
}

/// One client connection to the proxy.
pub struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Conn {
    /// Connects, with reads bounded by `read`.
    pub fn open(addr: SocketAddr, read: Duration) -> Conn {
        let s = TcpStream::connect_timeout(&addr, SHORT).expect("connect to the proxy");
        s.set_read_timeout(Some(read)).unwrap();
        s.set_write_timeout(Some(SHORT)).unwrap();
        s.set_nodelay(true).unwrap();
        Conn {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        }
    }

    /// Writes `bytes`; false if the proxy had closed already (it may refuse early).
    pub fn send(&mut self, bytes: &[u8]) -> bool {
        self.w.write_all(bytes).is_ok()
    }

    /// Closes the write side: the proxy sees EOF after what was sent.
    pub fn finish(&mut self) {
        let _ = self.w.shutdown(Shutdown::Write);
    }

    /// The next answer, interim ones included.
    pub fn response(&mut self, head: bool) -> io::Result<Resp> {
        read_response(&mut self.r, head)
    }

    /// The next final answer (interim `100 Continue` skipped).
    pub fn final_response(&mut self, head: bool) -> io::Result<Resp> {
        loop {
            let r = self.response(head)?;
            if !(100..200).contains(&r.status) {
                return Ok(r);
            }
        }
    }

    /// The next `n` bytes, whatever they are (after an upgrade).
    pub fn bytes(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut b = vec![0; n];
        self.r.read_exact(&mut b)?;
        Ok(b)
    }

    /// Ok if the proxy closes the connection (EOF or reset) within `within` with nothing more
    /// sent; why not otherwise.
    pub fn closed(&mut self, within: Duration) -> Result<(), String> {
        let extra = self.r.buffer().to_vec();
        if !extra.is_empty() {
            return Err(format!(
                "bytes after the last answer: {:?}",
                String::from_utf8_lossy(&extra)
            ));
        }
        let s = self.r.get_mut();
        s.set_read_timeout(Some(within)).unwrap();
        let mut buf = [0u8; 512];
        match s.read(&mut buf) {
            Ok(0) => Ok(()),
            Ok(n) => Err(format!(
                "bytes after the last answer: {:?}",
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
                Err(format!("still open {within:?} after the last answer"))
            }
            Err(e) => Err(format!("reading for the close: {e}")),
        }
    }

    /// Everything the proxy sends until it closes, or until `within` has passed (then
    /// `Err` with what came).
    pub fn read_all(&mut self, within: Duration) -> Result<Vec<u8>, Vec<u8>> {
        let deadline = Instant::now() + within;
        let mut out = self.r.buffer().to_vec();
        self.r.consume(out.len());
        let s = self.r.get_mut();
        let mut buf = [0u8; 16384];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(out);
            }
            s.set_read_timeout(Some(left)).unwrap();
            match s.read(&mut buf) {
                Ok(0) => return Ok(out),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    return Ok(out)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(out),
            }
        }
    }
}

/// How many victims follow an exchange so that one of them is served by the proxy thread
/// that served it (and so may be handed its pooled worker connection): the proxy deals client
/// connections round-robin to one thread per CPU, each with its own pool.
pub fn victims() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2)
}

/// `GET <target>` on a fresh connection: the victim request that must get its own answer.
pub fn victim(addr: SocketAddr, target: &str) -> Result<Resp, String> {
    let mut c = Conn::open(addr, super::READ);
    c.send(format!("GET {target} HTTP/1.1\r\nHost: victim\r\n\r\n").as_bytes());
    let r = c
        .final_response(false)
        .map_err(|e| format!("victim {target}: no answer: {e}"))?;
    if r.status != 200 || r.target().as_deref() != Some(target) {
        return Err(format!(
            "victim {target} got someone else's answer: {} {:?}",
            r.status,
            r.text()
        ));
    }
    Ok(r)
}
