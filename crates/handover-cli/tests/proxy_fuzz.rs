//! Differential fuzzing of the HTTP/1 relay, hyper as the reference. Valid requests (with
//! Content-Length and chunked bodies, various fields) are mutated with a fixed-seed generator
//! (bytes replaced, inserted, deleted, runs duplicated, from an alphabet of the bytes that
//! matter to HTTP framing); each mutant is
//!
//! 1. parsed directly by hyper's HTTP/1 server, in process over `tokio::io::duplex`, with the
//!    strict worker's configuration, its write side closed after the bytes (so a partial
//!    request is "no request before EOF", i.e. refused);
//! 2. sent through the proxy on a fresh connection (write side closed likewise), to the
//!    strict worker (hyper again, re-executed from this binary).
//!
//! Then: what the worker got is a prefix of what hyper parsed directly (same method,
//! path-and-query and body bytes, in order); what hyper refuses, the proxy refuses (4xx or
//! 501, or a close without an answer) and forwards nothing; the worker never gets a head it
//! cannot parse; every worker answer the client gets is for a request the worker recorded.
//!
//! `HANDOVER_FUZZ_CASES` (default 1500) and `HANDOVER_FUZZ_SEED` for longer or other runs;
//! a wall-clock cap keeps a slow machine within CI's budget.

mod strict;

use std::io::Cursor;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use handover_testkit::cli_kit::Ctx;
use strict::client::{read_response, victim, Conn};
use strict::hyper_worker::hyper_config;
use strict::{latin1, Strict};

/// Not a test of its own: the strict worker's entry point (see `strict`).
#[test]
fn strict_worker() {
    strict::worker_main();
}

/// Cases run unless `HANDOVER_FUZZ_CASES` says otherwise.
const DEFAULT_CASES: usize = 1500;
/// No new case starts after this long (the count is reported).
const WALL_CAP: Duration = Duration::from_secs(45);
/// Bound for the proxy's whole answer to one case.
const ANSWER: Duration = Duration::from_secs(2);

/// xorshift64*: small, deterministic, good enough for choosing mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// The bytes that matter to HTTP/1 framing (and a few ordinary ones).
const ALPHABET: &[u8] = b"\r\n:,; \t\x000fx-\"=aA9";

/// Valid requests; `/fz/<case>` in each target, for a human reading a failure.
fn seed(kind: usize, case: usize) -> Vec<u8> {
    let p = format!("/fz/{case}");
    match kind % 7 {
        0 => format!("POST {p}/cl?q=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\nX-A: a, b\r\n\r\nhello world"),
        1 => format!("POST {p}/chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;e=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n"),
        2 => format!("GET {p}/get HTTP/1.1\r\nHost: t\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n"),
        3 => format!("PUT {p}/put HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc"),
        4 => format!("POST {p}/close HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbody"),
        5 => format!("GET http://t{p}/abs HTTP/1.1\r\nHost: t\r\n\r\nGET {p}/second HTTP/1.1\r\nHost: t\r\n\r\n"),
        _ => format!("POST {p}/old HTTP/1.0\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi"),
    }
    .into_bytes()
}

/// One to three mutations of `m`.
fn mutate(rng: &mut Rng, m: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(m.len() + 1);
        let special = ALPHABET[rng.below(ALPHABET.len())];
        match rng.below(4) {
            0 if at < m.len() => m[at] = special,
            1 if at < m.len() => {
                m.remove(at);
            }
            2 => m.insert(at, special),
            _ => {
                let end = (at + 1 + rng.below(16)).min(m.len());
                let run = m[at.min(end)..end].to_vec();
                m.splice(at..at, run);
            }
        }
    }
}

/// A request as parsed: method, path-and-query, body.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parsed {
    method: String,
    path: String,
    body: String,
}

/// The whole requests hyper's server parses from `bytes` followed by EOF, in order.
async fn hyper_direct(bytes: Vec<u8>) -> Vec<Parsed> {
    let (client, server) = tokio::io::duplex(1 << 20);
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&got);
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let sink = Arc::clone(&sink);
        async move {
            let method = req.method().to_string();
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_else(|| format!("<no path: {}>", req.uri()));
            let body = req.into_body().collect().await?.to_bytes();
            sink.lock().unwrap().push(Parsed {
                method,
                path,
                body: latin1(&body),
            });
            Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        }
    });
    let conn = tokio::spawn(hyper_config().serve_connection(TokioIo::new(server), service));
    let (mut r, mut w) = tokio::io::split(client);
    let _ = w.write_all(&bytes).await;
    let _ = w.shutdown().await;
    // Read its answers away until it closes, so that it is never blocked writing them.
    let drain = async {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = r.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
    let v = got.lock().unwrap().clone();
    v
}

/// Bytes with the unprintable ones escaped, for failure messages.
fn show(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

/// Checks one case; why it failed.
fn check(sup: &Strict, rt: &tokio::runtime::Runtime, bytes: &[u8]) -> Result<(), String> {
    let direct = rt.block_on(hyper_direct(bytes.to_vec()));
    let from = sup.records().len();
    let mut c = Conn::open(sup.addr(), ANSWER);
    c.send(bytes);
    c.finish();
    let all = c.read_all(ANSWER).map_err(|got| {
        format!(
            "the proxy neither answered nor closed within {ANSWER:?} (sent {:?})",
            show(&got)
        )
    })?;
    // The answers, as far as they parse.
    let mut answers = Vec::new();
    let mut cur = Cursor::new(&all[..]);
    while (cur.position() as usize) < all.len() {
        match read_response(&mut cur, false) {
            Ok(a) if (100..200).contains(&a.status) => {}
            Ok(a) => answers.push(a),
            Err(e) => return Err(format!("a malformed answer: {e}: {:?}", show(&all))),
        }
    }
    let records = sup.records().split_off(from);
    let mut why = Vec::new();
    // Records are written before their answers, so the window holds this case's (a late one
    // of an earlier case would show as a record without an answer; its target says whose).
    let mut mine = Vec::new();
    for r in &records {
        match r.kind.as_str() {
            "parse-error" => why.push(format!(
                "the worker could not parse what the proxy sent: {}",
                r.error
            )),
            "request" => mine.push(Parsed {
                method: r.method.clone(),
                path: r.target.clone(),
                body: r.body.clone(),
            }),
            _ => {}
        }
    }
    // The one documented difference: hyper refuses an HTTP/1.0 request with Transfer-Encoding
    // outright, the proxy serves it and then closes (RFC 9112 §6.1); it may forward one.
    let http10_te = direct.is_empty() && mine.len() <= 1 && http10_with_te(bytes);
    if !http10_te && (mine.len() > direct.len() || mine[..] != direct[..mine.len()]) {
        why.push(format!("the worker got {mine:?}; hyper parsed {direct:?}"));
    }
    if direct.is_empty() && !http10_te {
        if let Some(a) = answers.first() {
            if !(400..500).contains(&a.status) && a.status != 501 {
                why.push(format!(
                    "hyper refuses it; the proxy answered {} {:?}",
                    a.status,
                    a.text()
                ));
            }
        }
    }
    // Every worker answer is for a recorded request, in order.
    let answered: Vec<String> = answers.iter().filter_map(|a| a.target()).collect();
    let recorded: Vec<String> = mine.iter().map(|p| p.path.clone()).collect();
    if answered != recorded {
        why.push(format!("answers for {answered:?}, records of {recorded:?}"));
    }
    if why.is_empty() {
        Ok(())
    } else {
        Err(why.join("; "))
    }
}

/// Whether `bytes` starts with an HTTP/1.0 request line and has a Transfer-Encoding field.
fn http10_with_te(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes).to_ascii_lowercase();
    let first = text.split("\r\n").next().unwrap_or("");
    first.ends_with(" http/1.0") && text.contains("\r\ntransfer-encoding:")
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Mutated requests: the proxy never forwards something other than what hyper parses, nor
/// anything hyper refuses.
#[test]
fn mutated_requests_agree_with_hyper() {
    let ctx = Ctx::new();
    let sup = Strict::start(&ctx, "hyper", &[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cases = env_number("HANDOVER_FUZZ_CASES").map_or(DEFAULT_CASES, |n| n as usize);
    let mut rng = Rng(env_number("HANDOVER_FUZZ_SEED").unwrap_or(0x5eed_1234_abcd_0001) | 1);
    let start = Instant::now();
    let mut failures = Vec::new();
    let mut ran = 0;
    for case in 0..cases {
        if start.elapsed() > WALL_CAP {
            break;
        }
        let mut m = seed(rng.below(7), case);
        mutate(&mut rng, &mut m);
        if let Err(e) = check(&sup, &rt, &m) {
            failures.push(format!("case {case} {:?}: {e}", show(&m)));
        }
        ran += 1;
    }
    // Anything the last case made the worker do is recorded by the time another client has
    // its answer: nothing may come between the last case and this one.
    let end = sup.records().len();
    victim(sup.addr(), "/fuzz-done").unwrap();
    let late: Vec<String> = sup.records()[end..]
        .iter()
        .filter(|r| r.target != "/fuzz-done")
        .map(|r| r.brief())
        .collect();
    assert!(late.is_empty(), "records after the last case: {late:?}");
    println!(
        "fuzz: {ran} of {cases} cases in {:?}: {} passed, {} failed",
        start.elapsed(),
        ran - failures.len(),
        failures.len()
    );
    assert!(
        ran >= cases.min(300),
        "only {ran} cases within {WALL_CAP:?}"
    );
    let shown: Vec<&String> = failures.iter().take(25).collect();
    assert!(
        failures.is_empty(),
        "{} of {ran} mutated requests went wrong (first {}):\n{}",
        failures.len(),
        shown.len(),
        shown
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}
