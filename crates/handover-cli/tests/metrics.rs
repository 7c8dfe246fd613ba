//! `GET /metrics` on `--admin` (issue 12): the supervisor's counters across three upgrades
//! under load only grow, and agree with what the load client itself counted.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use handover_testkit::cli_kit::*;

/// `GET path` over HTTP/1.1 with `Connection: close`: the body of a 200, or why not.
fn get11(addr: SocketAddr, path: &str) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&addr, SHORT).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(LONG)).map_err(|e| e.to_string())?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).map_err(|e| e.to_string())?;
    let (head, body) = resp
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("incomplete response {resp:?}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("status: {head:?}"));
    }
    Ok(body.to_string())
}

/// What the load clients counted: 200 answers by version, failures.
#[derive(Debug, Default, Clone)]
struct Counted {
    versions: BTreeMap<String, usize>,
    failures: Vec<String>,
}

/// `clients` threads sending `GET /` one connection at a time until stopped (at most
/// [`LONG`], 100,000 requests each).
struct Clients {
    stop: Arc<AtomicBool>,
    counted: Arc<Mutex<Counted>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Clients {
    fn start(addr: SocketAddr, clients: usize) -> Clients {
        let stop = Arc::new(AtomicBool::new(false));
        let counted = Arc::new(Mutex::new(Counted::default()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, counted) = (Arc::clone(&stop), Arc::clone(&counted));
                thread::spawn(move || {
                    let until = Instant::now() + LONG;
                    for _ in 0..100_000 {
                        if stop.load(Ordering::SeqCst) || Instant::now() > until {
                            return;
                        }
                        let r = get11(addr, "/");
                        let mut c = counted.lock().unwrap();
                        match r {
                            Ok(body) => *c.versions.entry(version_of(&body)).or_default() += 1,
                            Err(e) => c.failures.push(e),
                        }
                    }
                })
            })
            .collect();
        Clients {
            stop,
            counted,
            threads,
        }
    }

    fn wait_answers(&self, version: &str, n: usize) {
        let count = || {
            let c = self.counted.lock().unwrap();
            c.versions.get(version).copied().unwrap_or(0)
        };
        let base = count();
        assert!(
            poll_until(LONG, || count() >= base + n),
            "fewer than {n} answers from {version}: {:?}",
            self.counted.lock().unwrap()
        );
    }

    fn finish(self) -> Counted {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        let c = self.counted.lock().unwrap().clone();
        c
    }
}

/// Every sample of a scrape: `name{labels}` → value (comments and `# EOF` skipped).
fn scrape(admin: SocketAddr) -> BTreeMap<String, f64> {
    let text = get11(admin, "/metrics").expect("GET /metrics");
    assert!(text.ends_with("# EOF\n"), "not OpenMetrics text: {text}");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("a sample line");
            let value = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {l:?}"));
            (series.to_string(), value)
        })
        .collect()
}

fn value(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or(0.0)
}

/// The sum of every `handover_proxy_requests_total` series of `class`.
fn requests_of_class(m: &BTreeMap<String, f64>, class: &str) -> f64 {
    let needle = format!("class=\"{class}\"");
    m.iter()
        .filter(|(k, _)| k.starts_with("handover_proxy_requests_total{") && k.contains(&needle))
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn counters_grow_across_upgrades_and_match_the_clients_counts() {
    let ctx = Ctx::new();
    let app = write_app(&ctx, "v1", "http");
    let sup = ctx.start(&[
        "--proxy",
        "http://127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--",
        app.to_str().unwrap(),
        "--port",
        "{port}",
    ]);
    let line = sup.log.expect(0, "admin: http://", LONG);
    let admin: SocketAddr = line
        .split("admin: http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no admin address in {line:?}"));
    sup.log.expect(0, "is ready (connected to 127.0.0.1:", LONG);

    let load = Clients::start(sup.addr(), 3);
    load.wait_answers("v1", 50);
    let mut scrapes = vec![scrape(admin)];
    for (i, version) in ["v2", "v3", "v4"].into_iter().enumerate() {
        write_app(&ctx, version, "http");
        let out = ctx.handover(&["upgrade", "--control", ctx.control().to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        load.wait_answers(version, 50);
        let m = scrape(admin);
        assert_eq!(value(&m, "handover_upgrades_started_total"), (i + 1) as f64);
        assert_eq!(
            value(&m, "handover_upgrades_succeeded_total"),
            (i + 1) as f64
        );
        scrapes.push(m);
    }
    let stats = load.finish();
    assert!(stats.failures.is_empty(), "{:?}", stats.failures);
    // Once the old generations have drained away, the gauges and the drain histogram say so.
    assert!(poll_until(LONG, || {
        let m = scrape(admin);
        value(&m, "handover_generations{state=\"draining\"}") == 0.0
            && value(&m, "handover_drain_duration_seconds_count") == 3.0
    }));
    let last = scrape(admin);
    scrapes.push(last.clone());

    // Monotonic: no counter series ever goes down, none disappears.
    for pair in scrapes.windows(2) {
        for (series, before) in &pair[0] {
            if series.starts_with("handover_generations{") {
                continue; // a gauge
            }
            let after = pair[1].get(series).copied();
            assert!(
                after.is_some_and(|a| a >= *before),
                "{series} went from {before} to {after:?}"
            );
        }
    }
    // Consistent with the client's own counts: every answer it got is one 2xx, of the
    // generation whose version answered (v1 is generation 1, ...).
    let total: usize = stats.versions.values().sum();
    assert_eq!(requests_of_class(&last, "2xx"), total as f64, "{last:#?}");
    for (generation, version) in ["v1", "v2", "v3", "v4"].into_iter().enumerate() {
        let series = format!(
            "handover_proxy_requests_total{{generation=\"{}\",class=\"2xx\"}}",
            generation + 1
        );
        let client = stats.versions.get(version).copied().unwrap_or(0);
        assert_eq!(value(&last, &series), client as f64, "{series}");
    }
    assert_eq!(requests_of_class(&last, "5xx"), 0.0);
    assert_eq!(value(&last, "handover_upgrades_rolled_back_total"), 0.0);
    assert_eq!(value(&last, "handover_restarts_total"), 0.0);
    assert_eq!(value(&last, "handover_generations{state=\"ready\"}"), 1.0);
    println!(
        "metrics after 3 upgrades: {total} answers counted by the client and by /metrics, \
         per generation {:?}",
        stats.versions
    );
}
