//! Grey release (`handover upgrade --canary`, issue 12) in proxy mode: the weighted split by
//! request, by connection and by client address; a failing canary rolled back by the rule with
//! a bounded number of failed requests; promotion at `--for`; "not enough traffic"; promote and
//! abort by hand under keep-alive load; the refusals.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use handover_testkit::cli_kit::*;

fn ctl(ctx: &Ctx) -> String {
    ctx.control().to_str().unwrap().to_string()
}

/// `handover run --proxy <proxy> -- app.py --port {port}` with `v1` in `mode`, ready.
fn start(ctx: &Ctx, proxy: &str, mode: &str) -> Supervisor {
    let app = write_app(ctx, "v1", mode);
    let sup = ctx.start(&[
        "--proxy",
        proxy,
        "--",
        app.to_str().unwrap(),
        "--port",
        "{port}",
    ]);
    sup.log.expect(0, "is ready (connected to 127.0.0.1:", LONG);
    sup
}

/// A `handover upgrade --canary ...` running in the background (it waits for the decision).
struct Upgrade(Child);

impl Upgrade {
    fn start(ctx: &Ctx, args: &[&str]) -> Upgrade {
        let child = Command::new(handover_exe())
            .args(["upgrade", "--control", &ctl(ctx)])
            .args(args)
            .current_dir(ctx.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot run handover upgrade");
        Upgrade(child)
    }

    /// Waits (at most [`LONG`]) for its exit: the code, stdout and stderr.
    fn finish(mut self) -> (i32, String, String) {
        let deadline = Instant::now() + LONG;
        let status = loop {
            if let Some(s) = self.0.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "handover upgrade still waiting");
            thread::sleep(Duration::from_millis(20));
        };
        let mut out = String::new();
        let mut err = String::new();
        self.0
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        self.0
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (status.code().unwrap_or(-1), out, err)
    }
}

/// Waits until `status` shows the canary serving its share.
fn wait_canary(ctx: &Ctx) -> serde_json::Value {
    ctx.wait_status("a canary", |s| s["state"] == "canary")
}

/// `handover promote` / `handover abort`: exit code and output.
fn decide(ctx: &Ctx, what: &str) -> (i32, String) {
    let out = ctx.handover(&[what, "--control", &ctl(ctx)]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

/// After a decision: `winner` answers 200 more requests, and `loser` none of them, with no
/// failure (whatever `loser` answered before the decision took effect is not counted).
fn only_one_generation_answers_from_now(load: Load, winner: &str, loser: &str) {
    load.wait_ok(winner, 200);
    let before = load.seen().ok.get(loser).copied().unwrap_or(0);
    load.wait_ok(winner, 200);
    let seen = load.finish();
    assert!(seen.failures.is_empty(), "{:?}", seen.failures);
    assert_eq!(seen.ok.get(loser).copied().unwrap_or(0), before, "{seen:?}");
}

/// A keep-alive HTTP/1.1 connection, optionally from a given loopback address.
struct KeepAlive {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl KeepAlive {
    fn connect(addr: SocketAddr, from: Option<IpAddr>) -> io::Result<KeepAlive> {
        let s = match from {
            None => TcpStream::connect_timeout(&addr, SHORT)?,
            Some(ip) => {
                let sock = socket2::Socket::new(
                    socket2::Domain::IPV4,
                    socket2::Type::STREAM,
                    Some(socket2::Protocol::TCP),
                )?;
                sock.bind(&SocketAddr::new(ip, 0).into())?;
                sock.connect_timeout(&addr.into(), SHORT)?;
                sock.into()
            }
        };
        s.set_read_timeout(Some(LONG))?;
        s.set_nodelay(true)?;
        Ok(KeepAlive {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
        })
    }

    /// `GET /`: the status and the body.
    fn get(&mut self) -> io::Result<(u16, String)> {
        self.writer
            .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")?;
        let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(bad("closed before the answer".into()));
        }
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("bad status line {line:?}")))?;
        let mut len = 0;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v
                        .trim()
                        .parse()
                        .map_err(|_| bad(format!("bad length {v:?}")))?;
                }
            }
        }
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body)?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// What keep-alive clients saw.
#[derive(Debug, Default, Clone)]
struct Seen {
    /// Answers 200, by version.
    ok: std::collections::BTreeMap<String, usize>,
    /// Anything else: status 500 answers, errors.
    failures: Vec<String>,
}

/// `clients` keep-alive connections sending `GET /` back to back until stopped (or for at
/// most [`LONG`], or 50,000 requests each). A failed connection counts once and is replaced.
struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, seen) = (Arc::clone(&stop), Arc::clone(&seen));
                thread::spawn(move || {
                    let until = Instant::now() + LONG;
                    let mut conn = None;
                    for _ in 0..50_000 {
                        if stop.load(Ordering::SeqCst) || Instant::now() > until {
                            return;
                        }
                        let c = match conn.take() {
                            Some(c) => Ok(c),
                            None => KeepAlive::connect(addr, None),
                        };
                        let r = c.and_then(|mut c| c.get().map(|a| (a, c)));
                        let mut s = seen.lock().unwrap();
                        match r {
                            Ok(((200, body), c)) => {
                                *s.ok.entry(version_of(&body)).or_default() += 1;
                                conn = Some(c);
                            }
                            Ok(((status, body), c)) => {
                                s.failures.push(format!("{status} {body}"));
                                conn = Some(c);
                            }
                            Err(e) => s.failures.push(e.to_string()),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            seen,
            threads,
        }
    }

    fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until `n` more 200 answers of `version` have arrived.
    fn wait_ok(&self, version: &str, n: usize) {
        let count = |l: &Load| l.seen().ok.get(version).copied().unwrap_or(0);
        let base = count(self);
        assert!(
            poll_until(LONG, || count(self) >= base + n),
            "fewer than {n} answers from {version}: {:?}",
            self.seen()
        );
    }

    fn finish(self) -> Seen {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        let s = self.seen.lock().unwrap().clone();
        s
    }
}

/// `n` requests from `from`, each on a connection of its own (the proxy then opens a fresh
/// worker connection for each: the Python worker's unbatched writes on a long keep-alive
/// connection meet delayed ACKs and would take ~40 ms a request).
fn requests(addr: SocketAddr, from: Option<IpAddr>, n: usize) -> Seen {
    let mut seen = Seen::default();
    for _ in 0..n {
        match KeepAlive::connect(addr, from).and_then(|mut c| c.get()) {
            Ok((200, body)) => *seen.ok.entry(version_of(&body)).or_default() += 1,
            Ok((status, body)) => seen.failures.push(format!("{status} {body}")),
            Err(e) => seen.failures.push(e.to_string()),
        }
    }
    seen
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// 20% over 2,000 requests goes to the canary (18–22%); `abort` under keep-alive load loses
/// nothing and the waiting `upgrade` exits 1 with the reason.
#[test]
fn a_20_percent_canary_gets_a_fifth_of_the_requests_and_abort_loses_nothing() {
    let ctx = Ctx::new();
    let sup = start(&ctx, "http://127.0.0.1:0", "http");
    write_app(&ctx, "v2", "http");
    let up = Upgrade::start(
        &ctx,
        &["--canary", "20%", "--for", "60s", "--min-requests", "1"],
    );
    let s = wait_canary(&ctx);
    assert_eq!(s["schema_version"], 3, "{s:#}");
    assert_eq!(s["canary"]["request"]["share_bp"], 2000, "{s:#}");

    let seen = requests(sup.addr(), None, 2000);
    assert!(seen.failures.is_empty(), "{:?}", seen.failures);
    let v2 = seen.ok.get("v2").copied().unwrap_or(0);
    let share = v2 as f64 / 2000.0;
    println!(
        "canary share over 2,000 requests: {v2} ({:.1}%)",
        share * 100.0
    );
    assert!(
        (0.18..=0.22).contains(&share),
        "canary share {share}: {seen:?}"
    );
    let s = ctx.status();
    assert!(
        s["canary"]["new"]["requests"].as_u64().unwrap() >= v2 as u64,
        "{s:#}"
    );
    assert_eq!(s["canary"]["new"]["status_classes"][1], v2 as u64, "{s:#}");

    // Another upgrade is refused while the canary runs.
    let out = ctx.handover(&["upgrade", "--control", &ctl(&ctx)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("a canary is in progress"), "{err}");

    let load = Load::start(sup.addr(), 4);
    load.wait_ok("v2", 20);
    let (code, text) = decide(&ctx, "abort");
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("rolled back") && text.contains("aborted by hand"),
        "{text}"
    );
    let (code, _, err) = up.finish();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("canary rolled back: aborted by hand"), "{err}");
    // From now on v1 answers everything.
    only_one_generation_answers_from_now(load, "v1", "v2");
    let s = ctx.status();
    assert_eq!(
        s["last_upgrade"]["canary"]["decision"], "rolled_back",
        "{s:#}"
    );
    assert!(s["canary"].is_null(), "{s:#}");
}

/// `--sticky ip`: each client address (127.0.0.2 ... 127.0.0.21) sees one generation only;
/// `promote` under keep-alive load loses nothing and the waiting `upgrade` exits 0.
#[test]
fn sticky_ip_keeps_each_client_on_one_generation_and_promote_loses_nothing() {
    let ctx = Ctx::new();
    let sup = start(&ctx, "http://127.0.0.1:0", "http");
    write_app(&ctx, "v2", "http");
    let up = Upgrade::start(
        &ctx,
        &[
            "--canary",
            "20%",
            "--sticky",
            "ip",
            "--for",
            "60s",
            "--min-requests",
            "1",
        ],
    );
    wait_canary(&ctx);
    let mut on_canary = 0;
    for last in 2..=21u8 {
        let ip = IpAddr::from([127, 0, 0, last]);
        let seen = requests(sup.addr(), Some(ip), 20);
        assert!(seen.failures.is_empty(), "{ip}: {:?}", seen.failures);
        assert_eq!(seen.ok.len(), 1, "{ip} saw both generations: {seen:?}");
        on_canary += usize::from(seen.ok.contains_key("v2"));
    }
    println!("--sticky ip: {on_canary} of 20 client addresses on the canary");

    let load = Load::start(sup.addr(), 4);
    load.wait_ok("v1", 20);
    let (code, text) = decide(&ctx, "promote");
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("promoted") && text.contains("by hand"),
        "{text}"
    );
    let (code, out, err) = up.finish();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("canary promoted"), "{out}");
    only_one_generation_answers_from_now(load, "v2", "v1");
    // The promoted canary is the current generation; the old one drained away.
    let s = ctx.wait_status("one worker", |s| {
        s["workers"].as_array().unwrap().len() == 1
    });
    assert_eq!(s["generation"], 2, "{s:#}");
}

/// A canary that answers 500 to everything is rolled back by the rule: the failed requests
/// are at most --min-requests + the clients' concurrency, and then the old generation serves
/// everything with no further failure.
#[test]
fn a_failing_canary_is_rolled_back_with_bounded_failures() {
    const MIN: usize = 20;
    const CLIENTS: usize = 4;
    let ctx = Ctx::new();
    let sup = start(&ctx, "http://127.0.0.1:0", "http");
    write_app(&ctx, "v2", "fail500");
    let load = Load::start(sup.addr(), CLIENTS);
    load.wait_ok("v1", 50);
    let min = MIN.to_string();
    let up = Upgrade::start(
        &ctx,
        &[
            "--canary",
            "50%",
            "--for",
            "60s",
            "--min-requests",
            &min,
            "--max-error-rate",
            "1%",
        ],
    );
    let (code, _, err) = up.finish();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("canary rolled back"), "{err}");
    assert!(err.contains("error rate 100.0%"), "{err}");
    let seen = load.finish();
    let failed = seen.failures.len();
    println!("failed requests before the rollback: {failed} (bound {MIN} + {CLIENTS})");
    assert!(
        failed >= MIN,
        "the canary was judged before --min-requests: {seen:?}"
    );
    assert!(failed <= MIN + CLIENTS, "{failed} failures: {seen:?}");
    assert!(
        seen.failures.iter().all(|f| f.starts_with("500 v2")),
        "{:?}",
        seen.failures
    );
    // After the decision: the old generation only, no failure.
    let after = requests(sup.addr(), None, 300);
    assert!(after.failures.is_empty(), "{:?}", after.failures);
    assert_eq!(after.ok.get("v1"), Some(&300), "{after:?}");
    let s = ctx.status();
    let c = &s["last_upgrade"]["canary"];
    assert_eq!(c["decision"], "rolled_back", "{s:#}");
    assert_eq!(c["new"]["errors"], c["new"]["requests"], "{s:#}");
    assert!(sup.log.contains("canary rolled back"));
}

/// A healthy canary is promoted at --for (`upgrade` exits 0 with the decision); a canary with
/// too little traffic is rolled back at --for with that reason.
#[test]
fn a_healthy_canary_is_promoted_at_for_and_too_little_traffic_rolls_back() {
    let ctx = Ctx::new();
    let sup = start(&ctx, "http://127.0.0.1:0", "http");
    write_app(&ctx, "v2", "http");
    let load = Load::start(sup.addr(), 2);
    load.wait_ok("v1", 20);
    let t0 = Instant::now();
    let up = Upgrade::start(
        &ctx,
        &["--canary", "30%", "--for", "2s", "--min-requests", "10"],
    );
    let (code, out, err) = up.finish();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        t0.elapsed() >= Duration::from_secs(2),
        "promoted before --for"
    );
    assert!(out.contains("canary promoted: generation 2"), "{out}");
    assert!(out.contains("decision: promoted (healthy for 2s"), "{out}");
    load.wait_ok("v2", 100);
    let seen = load.finish();
    assert!(seen.failures.is_empty(), "{:?}", seen.failures);
    let s = ctx.status();
    assert_eq!(s["last_upgrade"]["ok"], true, "{s:#}");
    assert_eq!(s["last_upgrade"]["canary"]["decision"], "promoted", "{s:#}");

    // No traffic at all: not enough for --min-requests.
    write_app(&ctx, "v3", "http");
    let up = Upgrade::start(
        &ctx,
        &["--canary", "10%", "--for", "1s", "--min-requests", "100"],
    );
    let (code, _, err) = up.finish();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not enough traffic"), "{err}");
    assert!(err.contains("fewer than --min-requests 100"), "{err}");
    let after = requests(sup.addr(), None, 50);
    assert_eq!(after.ok.get("v2"), Some(&50), "{after:?}");
}

/// tcp:// splits by connection: 20% of 500 connections reach the canary.
#[test]
fn tcp_splits_by_connection() {
    let ctx = Ctx::new();
    let sup = start(&ctx, "tcp://127.0.0.1:0", "tcpecho");
    write_app(&ctx, "v2", "tcpecho");
    let up = Upgrade::start(
        &ctx,
        &["--canary", "20%", "--for", "60s", "--min-requests", "1"],
    );
    wait_canary(&ctx);
    let mut v2 = 0;
    for _ in 0..500 {
        let s = TcpStream::connect_timeout(&sup.addr(), SHORT).unwrap();
        s.set_read_timeout(Some(LONG)).unwrap();
        let mut banner = String::new();
        BufReader::new(&s).read_line(&mut banner).unwrap();
        v2 += usize::from(version_of(&banner) == "v2");
    }
    println!("tcp:// canary share over 500 connections: {v2}");
    assert!((90..=110).contains(&v2), "{v2} of 500 on the canary");
    let (code, _) = decide(&ctx, "abort");
    assert_eq!(code, 0);
    assert_eq!(up.finish().0, 1);
}

/// The refusals: promote/abort with no canary; --canary in socket mode, with the reason.
#[test]
fn refusals_say_why() {
    let ctx = Ctx::new();
    let _sup = start(&ctx, "http://127.0.0.1:0", "http");
    for what in ["promote", "abort"] {
        let (code, text) = decide(&ctx, what);
        assert_eq!(code, 1, "{text}");
        assert!(text.contains("no canary is in progress"), "{text}");
    }
    drop(_sup);
    drop(ctx);

    let ctx = Ctx::new();
    let worker = ctx.write_worker("server.py", "v1", "serve");
    let sup = ctx.start(&["--listen", "127.0.0.1:0", "--", worker.to_str().unwrap()]);
    sup.log.expect(0, "is ready", LONG);
    let up = Upgrade::start(&ctx, &["--canary", "10%"]);
    let (code, _, err) = up.finish();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--canary needs proxy mode"), "{err}");
    assert!(err.contains("the kernel, not handover, picks"), "{err}");
}

/// An old worker that crashes mid-canary is restarted as any crash is, and the canary goes
/// on; a stop during the canary drains both and tells the waiting `upgrade`.
#[test]
fn the_canary_survives_an_old_worker_crash_and_a_stop_drains_both() {
    let ctx = Ctx::new();
    let sup = start(&ctx, "http://127.0.0.1:0", "http");
    write_app(&ctx, "v2", "http");
    let up = Upgrade::start(
        &ctx,
        &["--canary", "50%", "--for", "60s", "--min-requests", "1"],
    );
    let s = wait_canary(&ctx);
    let old_pid = s["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["generation"] == 1)
        .and_then(|w| w["pid"].as_i64())
        .expect("generation 1 in status") as i32;
    signal(old_pid, libc::SIGKILL);
    let s = ctx.wait_status("a restarted old worker", |s| {
        s["restarts"] == 1 && s["generation"] == 3
    });
    assert_eq!(s["state"], "canary", "{s:#}");
    assert_eq!(s["canary"]["new"]["generation"], 2, "{s:#}");
    // Both sides answer again: the canary (v2) and the replacement (written as v2 too, so
    // told apart by pid).
    let seen = requests(sup.addr(), None, 40);
    assert!(seen.failures.is_empty(), "{:?}", seen.failures);

    let out = ctx.handover(&["stop", "--control", &ctl(&ctx)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, _, err) = up.finish();
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("the canary was cancelled: the server is stopping"),
        "{err}"
    );
    let raw = sup.wait_exit(LONG);
    assert_eq!(raw, 0, "the supervisor's wait status");
    assert!(sup.log.contains("generation 2 (pid"), "{}", sup.log.text());
}

/// A canary whose worker dies while it serves its share is rolled back: `handover upgrade`
/// exits 1 naming the crash, the old generation serves everything again with no failure, and
/// `last_upgrade` records the rollback.
#[test]
fn a_canary_worker_that_crashes_is_rolled_back() {
    let ctx = Ctx::new();
    let sup = start(&ctx, "http://127.0.0.1:0", "http");
    write_app(&ctx, "v2", "http");
    let up = Upgrade::start(
        &ctx,
        &["--canary", "50%", "--for", "60s", "--min-requests", "1"],
    );
    let s = wait_canary(&ctx);
    let canary_pid = s["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["generation"] == 2)
        .and_then(|w| w["pid"].as_i64())
        .expect("generation 2 in status") as i32;
    signal(canary_pid, libc::SIGKILL);
    let (code, _, err) = up.finish();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("canary rolled back"), "{err}");
    assert!(err.contains("the canary worker"), "{err}");
    let after = requests(sup.addr(), None, 100);
    assert!(after.failures.is_empty(), "{:?}", after.failures);
    assert_eq!(after.ok.get("v1"), Some(&100), "{after:?}");
    let s = ctx.status();
    assert_eq!(s["state"], "running", "{s:#}");
    assert_eq!(
        s["last_upgrade"]["canary"]["decision"], "rolled_back",
        "{s:#}"
    );
    assert_eq!(
        s["restarts"], 0,
        "a rolled-back canary is not restarted: {s:#}"
    );
}
