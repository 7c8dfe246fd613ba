//! Proxy mode (`handover run --proxy`): a Python worker that binds the port it is given,
//! upgraded under keep-alive load through the HTTP proxy, rollback, large bodies and half-close
//! through both proxies, upgraded (tunnelled) connections across an upgrade, forwarding headers,
//! 502 and 504.

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use handover_testkit::cli_kit::*;

fn ctl(ctx: &Ctx) -> String {
    ctx.control().to_str().unwrap().to_string()
}

/// `handover upgrade`; panics unless it succeeded.
fn upgrade(ctx: &Ctx) {
    let out = ctx.handover(&["upgrade", "--control", &ctl(ctx)]);
    assert!(
        out.status.success(),
        "upgrade failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts `handover run --proxy <proxy> <extra> -- app.py --port {port}` and waits for the
/// first worker.
fn start(ctx: &Ctx, proxy: &str, extra: &[&str], mode: &str) -> Supervisor {
    let app = write_app(ctx, "v1", mode);
    let mut args = vec!["--proxy", proxy];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", app.to_str().unwrap(), "--port", "{port}"]);
    let sup = ctx.start(&args);
    sup.log.expect(0, "is ready (connected to 127.0.0.1:", LONG);
    sup
}

// ---------------------------------------------------------------------------------------------
// A keep-alive HTTP/1.1 client (std only; never retries, so every failure is seen)
// ---------------------------------------------------------------------------------------------

struct Answer {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(addr: SocketAddr) -> io::Result<Client> {
        let s = TcpStream::connect_timeout(&addr, SHORT)?;
        s.set_read_timeout(Some(LONG))?;
        s.set_nodelay(true)?;
        Ok(Client {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
        })
    }

    fn request(
        &mut self,
        method: &str,
        path: &str,
        extra: &str,
        body: &[u8],
    ) -> io::Result<Answer> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n{extra}\r\n",
            body.len()
        );
        self.writer.write_all(head.as_bytes())?;
        self.writer.write_all(body)?;
        read_answer(&mut self.reader)
    }

    fn get(&mut self, path: &str) -> io::Result<Answer> {
        self.request("GET", path, "", b"")
    }
}

fn read_answer(r: &mut impl BufRead) -> io::Result<Answer> {
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(bad("connection closed before the answer".into()));
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {line:?}")))?;
    let mut headers = HashMap::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = match headers.get("content-length") {
        Some(n) => n.parse().map_err(|_| bad(format!("bad length {n}")))?,
        None if status == 101 => 0,
        None => return Err(bad(format!("no content-length: {headers:?}"))),
    };
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// Keep-alive clients sending `GET /` one after another on one connection each; a failure
/// (including a closed connection) is counted, then the client reconnects.
struct KeepAliveLoad {
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<Stats>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl KeepAliveLoad {
    fn start(addr: SocketAddr, clients: usize) -> KeepAliveLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(Stats::default()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, stats) = (Arc::clone(&stop), Arc::clone(&stats));
                thread::spawn(move || {
                    let mut client = None;
                    while !stop.load(Ordering::SeqCst) {
                        let r = match &mut client {
                            Some(c) => Client::get(c, "/"),
                            None => Client::connect(addr).and_then(|mut c| {
                                let r = c.get("/");
                                client = Some(c);
                                r
                            }),
                        };
                        let mut s = stats.lock().unwrap();
                        match r {
                            Ok(a) if a.status == 200 => {
                                s.ok += 1;
                                *s.versions.entry(version_of(&a.text())).or_default() += 1;
                            }
                            Ok(a) => s.failures.push(format!("{}: {}", a.status, a.text())),
                            Err(e) => {
                                s.failures.push(format!("{e}"));
                                client = None;
                            }
                        }
                    }
                })
            })
            .collect();
        KeepAliveLoad {
            stop,
            stats,
            threads,
        }
    }

    fn stats(&self) -> Stats {
        self.stats.lock().unwrap().clone()
    }

    fn wait_answers(&self, version: &str, n: usize) {
        let count = |s: &Stats| s.versions.get(version).copied().unwrap_or(0);
        let base = count(&self.stats());
        let ok = poll_until(LONG, || count(&self.stats()) >= base + n);
        assert!(
            ok,
            "fewer than {n} answers from {version}: {:?}",
            self.stats()
        );
    }

    fn finish(self) -> Stats {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        let s = self.stats.lock().unwrap().clone();
        s
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// Three upgrades while two keep-alive clients send requests without pause: not one request
/// fails, no client connection is closed, every version answers, every old worker exits.
#[test]
fn http_proxy_upgrades_under_keep_alive_load_without_a_failure() {
    let ctx = Ctx::new();
    let sup = start(&ctx, "http://127.0.0.1:0", &[], "http");
    let addr = sup.addr();
    let first = Client::connect(addr).unwrap().get("/").unwrap();
    assert_eq!(first.status, 200, "{}", first.text());
    let mut old_pid = pid_of(&first.text());

    let load = KeepAliveLoad::start(addr, 2);
    load.wait_answers("v1", 20);
    for generation in 2..=4 {
        let version = format!("v{generation}");
        write_app(&ctx, &version, "http");
        upgrade(&ctx);
        load.wait_answers(&version, 20);
        assert!(
            poll_until(LONG, || proc_stat(old_pid).is_none()),
            "the old worker {old_pid} did not exit"
        );
        let now = Client::connect(addr).unwrap().get("/").unwrap();
        assert_eq!(version_of(&now.text()), version);
        old_pid = pid_of(&now.text());
    }
    let stats = load.finish();
    assert!(stats.failures.is_empty(), "failed requests: {stats:?}");
    assert!(stats.ok > 60, "{stats:?}");
    assert_eq!(sup.worker_pids(), vec![old_pid]);
}

/// A new version that exits before it is ready is rolled back: the upgrade reports it and the
/// old worker keeps answering.
#[test]
fn a_failing_new_worker_leaves_the_old_one_serving() {
    let ctx = Ctx::new();
    let sup = start(&ctx, "http://127.0.0.1:0", &[], "http");
    let mut client = Client::connect(sup.addr()).unwrap();
    let before = pid_of(&client.get("/").unwrap().text());
    write_app(&ctx, "v2", "exit3");
    let out = ctx.handover(&["upgrade", "--control", &ctl(&ctx)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("exited with status 3 before it was ready"),
        "{err}"
    );
    assert!(
        err.contains(&format!("(pid {before}) keeps serving")),
        "{err}"
    );
    let after = client.get("/").unwrap();
    assert_eq!(after.status, 200);
    assert_eq!(pid_of(&after.text()), before);
    assert_eq!(version_of(&after.text()), "v1");
}

/// X-Forwarded-For is the peer's address (an incoming one is replaced, as the peer is not a
/// trusted proxy); X-Forwarded-Proto is http. A worker that answers too late gives 504 (a
/// client that uploads slowly does not count), one that stops listening 502.
#[test]
fn forwarding_headers_502_and_504() {
    let ctx = Ctx::new();
    let sup = start(
        &ctx,
        "http://127.0.0.1:0",
        &["--upstream-timeout", "500ms"],
        "http",
    );
    let mut c = Client::connect(sup.addr()).unwrap();
    let a = c
        .request(
            "GET",
            "/",
            "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n",
            b"",
        )
        .unwrap();
    let text = a.text();
    assert!(text.contains("xff=127.0.0.1 "), "{text}");
    assert!(text.contains("proto=http "), "{text}");
    assert!(text.contains("host=test"), "{text}");

    let slow = c.get("/slow?ms=2000").unwrap();
    assert_eq!(slow.status, 504, "{}", slow.text());

    // The time to answer counts from the end of the request: an upload slower than
    // --upstream-timeout is fine.
    let mut up = Client::connect(sup.addr()).unwrap();
    up.writer
        .write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\n\r\n")
        .unwrap();
    for part in ["abc", "def", "ghi"] {
        thread::sleep(Duration::from_millis(300));
        up.writer.write_all(part.as_bytes()).unwrap();
    }
    let a = read_answer(&mut up.reader).unwrap();
    assert_eq!((a.status, a.text().as_str()), (200, "abcdefghi"));

    let mut c = Client::connect(sup.addr()).unwrap();
    assert_eq!(c.get("/unlisten").unwrap().status, 200);
    sup.log.expect(0, "closed the listening socket", LONG);
    let gone = Client::connect(sup.addr()).unwrap().get("/").unwrap();
    assert_eq!(gone.status, 502, "{}", gone.text());
    assert!(
        gone.text().contains("cannot reach the worker"),
        "{}",
        gone.text()
    );
}

/// With the peer trusted, incoming forwarding headers are kept and appended to.
#[test]
fn trusted_proxies_keep_their_forwarding_headers() {
    let ctx = Ctx::new();
    let sup = start(
        &ctx,
        "http://127.0.0.1:0",
        &["--trusted-proxy", "127.0.0.0/8"],
        "http",
    );
    let a = Client::connect(sup.addr())
        .unwrap()
        .request(
            "GET",
            "/",
            "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n",
            b"",
        )
        .unwrap();
    let text = a.text();
    assert!(text.contains("xff=6.6.6.6, 127.0.0.1 "), "{text}");
    assert!(text.contains("proto=https "), "{text}");
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

/// An 8 MiB body goes to the worker and back intact, on a keep-alive connection that then
/// serves another request.
#[test]
fn http_proxy_streams_large_bodies_both_ways() {
    let ctx = Ctx::new();
    let sup = start(&ctx, "http://127.0.0.1:0", &[], "http");
    let mut c = Client::connect(sup.addr()).unwrap();
    let data = pattern(8 << 20);
    let a = c.request("POST", "/echo", "", &data).unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["content-length"], (8 << 20).to_string());
    assert!(a.body == data, "the body came back changed");
    assert_eq!(c.get("/").unwrap().status, 200);
}

/// Through the TCP proxy: 8 MiB are echoed while being sent, the client's half-close reaches
/// the worker (which only then sends its byte count), and the answer still arrives.
#[test]
fn tcp_proxy_passes_half_close_and_large_payloads() {
    let ctx = Ctx::new();
    let app = write_app(&ctx, "v1", "tcpecho");
    let sup = ctx.start(&["--proxy", "tcp://127.0.0.1:0", "--", app.to_str().unwrap()]);
    sup.log.expect(0, "is ready (connected to 127.0.0.1:", LONG);
    let s = TcpStream::connect(sup.addr()).unwrap();
    s.set_read_timeout(Some(LONG)).unwrap();
    let data = pattern(8 << 20);
    let writer = {
        let mut w = s.try_clone().unwrap();
        let data = data.clone();
        thread::spawn(move || {
            w.write_all(&data).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        })
    };
    let mut r = BufReader::new(s);
    let mut banner = String::new();
    r.read_line(&mut banner).unwrap();
    assert!(banner.starts_with("v1 pid="), "{banner}");
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).unwrap();
    writer.join().unwrap();
    let trailer = format!("EOF {}\n", data.len());
    assert!(
        rest.ends_with(trailer.as_bytes()),
        "no {trailer:?} at the end"
    );
    assert!(rest[..data.len()] == data[..], "the data came back changed");
    assert_eq!(rest.len(), data.len() + trailer.len());
}

/// TCP connections stay with the worker that accepted them across an upgrade; new ones go
/// to the new worker.
#[test]
fn tcp_proxy_keeps_connections_on_their_worker_across_an_upgrade() {
    let ctx = Ctx::new();
    let app = write_app(&ctx, "v1", "tcpecho");
    let sup = ctx.start(&["--proxy", "tcp://127.0.0.1:0", "--", app.to_str().unwrap()]);
    sup.log.expect(0, "is ready (connected to 127.0.0.1:", LONG);
    let (mut old, mut old_r) = echo_conn(sup.addr(), "v1");
    write_app(&ctx, "v2", "tcpecho");
    upgrade(&ctx);
    let (_new, _) = echo_conn(sup.addr(), "v2");
    old.write_all(b"still here\n").unwrap();
    let mut line = String::new();
    old_r.read_line(&mut line).unwrap();
    assert_eq!(line, "still here\n");
    old.shutdown(Shutdown::Write).unwrap();
    line.clear();
    old_r.read_line(&mut line).unwrap();
    assert_eq!(line, "EOF 11\n");
}

fn echo_conn(addr: SocketAddr, version: &str) -> (TcpStream, BufReader<TcpStream>) {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(LONG)).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut banner = String::new();
    r.read_line(&mut banner).unwrap();
    assert!(banner.starts_with(&format!("{version} pid=")), "{banner}");
    (s, r)
}

/// An upgraded connection (`Upgrade: echo`, 101) stays on the worker that accepted it across
/// an upgrade, which does not get its stop signal meanwhile, until the drain deadline cuts it.
#[test]
fn an_upgraded_connection_survives_an_upgrade_until_the_drain_deadline() {
    let ctx = Ctx::new();
    let sup = start(
        &ctx,
        "http://127.0.0.1:0",
        &["--drain-timeout", "3s"],
        "http",
    );
    let s = TcpStream::connect(sup.addr()).unwrap();
    s.set_read_timeout(Some(LONG)).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    w.write_all(b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .unwrap();
    let a = read_answer(&mut r).unwrap();
    assert_eq!(a.status, 101);
    assert_eq!(a.headers["upgrade"], "echo");
    let mut banner = String::new();
    r.read_line(&mut banner).unwrap();
    assert!(banner.starts_with("v1 pid="), "{banner}");
    let old_pid = pid_of(&banner);

    write_app(&ctx, "v2", "http");
    upgrade(&ctx);
    let upgraded = Instant::now();
    let now = Client::connect(sup.addr()).unwrap().get("/").unwrap();
    assert_eq!(version_of(&now.text()), "v2");
    for i in 0..3 {
        let msg = format!("message {i}\n");
        w.write_all(msg.as_bytes()).unwrap();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert_eq!(line, msg);
    }
    assert!(
        is_alive(old_pid),
        "the old worker was stopped under an open tunnel"
    );
    // The drain deadline cuts the tunnel; then the old worker is told to stop.
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest);
    let lasted = upgraded.elapsed();
    assert!(
        lasted >= Duration::from_millis(2500),
        "cut after {lasted:?}"
    );
    assert!(
        poll_until(LONG, || proc_stat(old_pid).is_none()),
        "the old worker did not exit"
    );
    sup.log.expect(0, "closed an upgraded connection", SHORT);
}

/// A request in flight when the upgrade completes finishes on the old worker, which gets the
/// stop signal only afterwards.
#[test]
fn the_old_worker_is_stopped_only_after_its_requests_finished() {
    let ctx = Ctx::new();
    let sup = start(&ctx, "http://127.0.0.1:0", &[], "http");
    let addr = sup.addr();
    let from = sup.log.len();
    let slow = thread::spawn(move || Client::connect(addr).unwrap().get("/slow?ms=1500").unwrap());
    sup.log.expect(from, "slow request started", LONG);
    write_app(&ctx, "v2", "http");
    upgrade(&ctx);
    let a = slow.join().unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(version_of(&a.text()), "v1");
    sup.log.expect(from, "got SIGTERM", LONG);
    let text = sup.log.text();
    let done_at = text.find("slow request done").unwrap();
    let term_at = text.find("got SIGTERM").unwrap();
    assert!(
        done_at < term_at,
        "SIGTERM before the request finished:\n{text}"
    );
}

/// HTTP/2 without TLS (prior knowledge) is accepted and forwarded as HTTP/1.1.
#[test]
fn h2c_clients_are_served() {
    use http_body_util::BodyExt;
    let ctx = Ctx::new();
    let sup = start(&ctx, "http://127.0.0.1:0", &[], "http");
    let addr = sup.addr();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        for _ in 0..3 {
            let req = hyper::Request::get(format!("http://{addr}/"))
                .header("x-forwarded-for", "6.6.6.6")
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            let resp = tokio::time::timeout(LONG, sender.send_request(req))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(resp.status(), 200);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let text = String::from_utf8_lossy(&body);
            assert!(text.starts_with("v1 pid="), "{text}");
            assert!(text.contains("xff=127.0.0.1 "), "{text}");
            assert!(text.contains(&format!("host={addr}")), "{text}");
        }
    });
}

/// `python3 -m http.server --bind 127.0.0.1 {port}` (HTTP/1.0, one connection per request,
/// dies at once on SIGTERM) is upgraded twice under keep-alive load without a failure.
#[test]
fn python_http_server_module_is_upgraded_under_load() {
    let ctx = Ctx::new();
    fs::write(ctx.path("index.html"), "hello\n").unwrap();
    let dir = ctx.dir.path().to_str().unwrap().to_string();
    let sup = ctx.start(&[
        "--proxy",
        "http://127.0.0.1:0",
        "--",
        python(),
        "-m",
        "http.server",
        "--bind",
        "127.0.0.1",
        "--directory",
        &dir,
        "{port}",
    ]);
    sup.log.expect(0, "is ready (connected to 127.0.0.1:", LONG);
    let stop = Arc::new(AtomicBool::new(false));
    let addr = sup.addr();
    let load: Vec<_> = (0..2)
        .map(|_| {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let (mut ok, mut failures) = (0usize, Vec::new());
                let mut c = Client::connect(addr).unwrap();
                while !stop.load(Ordering::SeqCst) {
                    match c.get("/index.html") {
                        Ok(a) if a.status == 200 && a.body == b"hello\n" => ok += 1,
                        Ok(a) => failures.push(format!("{}: {}", a.status, a.text())),
                        Err(e) => {
                            failures.push(e.to_string());
                            c = Client::connect(addr).unwrap();
                        }
                    }
                }
                (ok, failures)
            })
        })
        .collect();
    let mut pids = sup.worker_pids();
    for generation in 2..=3 {
        upgrade(&ctx);
        ctx.wait_status("the upgrade", |s| s["generation"] == generation);
        let old = pids[0];
        assert!(
            poll_until(LONG, || proc_stat(old).is_none()),
            "{old} still runs"
        );
        pids = sup.worker_pids();
    }
    stop.store(true, Ordering::SeqCst);
    for t in load {
        let (ok, failures) = t.join().unwrap();
        assert!(failures.is_empty(), "failures: {failures:?}");
        assert!(ok > 10, "only {ok} answers");
    }
}

/// SIGTERM stops a proxying supervisor gracefully: the worker drains and the supervisor
/// exits 0. A crashed worker is replaced, and requests reach the replacement.
#[test]
fn crash_restart_and_stop_in_proxy_mode() {
    let ctx = Ctx::new();
    let sup = start(&ctx, "http://127.0.0.1:0", &[], "http");
    let first = pid_of(
        &Client::connect(sup.addr())
            .unwrap()
            .get("/")
            .unwrap()
            .text(),
    );
    let from = sup.log.len();
    signal(first, libc::SIGKILL);
    sup.log.expect(from, "unexpectedly; restarting it", LONG);
    assert!(
        poll_until(LONG, || {
            Client::connect(sup.addr())
                .and_then(|mut c| c.get("/"))
                .is_ok_and(|a| a.status == 200 && pid_of(&a.text()) != first)
        }),
        "the replacement never answered"
    );
    signal(sup.pid, libc::SIGTERM);
    let status = sup.wait_exit(LONG);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{status:#x}"
    );
}

/// A worker that closes keep-alive connections without saying so leaves stale connections in
/// the pool: requests that meet one are sent again when that is safe (never sent, or
/// idempotent without a body); others get 502.
#[test]
fn stale_pooled_connections_are_retried() {
    let ctx = Ctx::new();
    let sup = start(&ctx, "http://127.0.0.1:0", &[], "http");
    let mut c = Client::connect(sup.addr()).unwrap();
    for i in 0..50 {
        let a = c.get("/drop").unwrap();
        assert_eq!(
            (a.status, a.text().as_str()),
            (200, "dropped\n"),
            "round {i}"
        );
        let a = c.get("/").unwrap();
        assert_eq!(a.status, 200, "round {i}: {}", a.text());
    }
    // Sent, then the connection closed unanswered: a GET is sent again, a POST is not.
    let a = c.get("/drop-next").unwrap();
    assert_eq!(a.text(), "armed\n");
    let a = c.get("/").unwrap();
    assert_eq!(a.status, 200, "{}", a.text());
    // Whichever upstream connection the POST goes out on (the pool may open a fresh one
    // while the last is being put back), the worker drops it after reading it.
    assert_eq!(c.get("/drop-next-any").unwrap().status, 200);
    let a = c.request("POST", "/", "", b"x").unwrap();
    assert_eq!(a.status, 502, "{}", a.text());
    assert_eq!(c.get("/").unwrap().status, 200);
}
