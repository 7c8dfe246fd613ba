//! A strict worker for the smuggling tests, in Rust: the test binary re-executes itself as the
//! worker that `handover run --proxy` starts, so that the request the worker sees is the one
//! *hyper* parsed (a strict, widely used HTTP/1 parser), not a lenient Python one.
//!
//! * The entry point is a `#[test] fn strict_worker()` at the root of each test binary that
//!   uses this module: it does nothing unless [`MODE_ENV`] is set, so as a test it passes at
//!   once; the supervisor runs `<test binary> --exact strict_worker --nocapture
//!   --test-threads=1` with the mode in the environment and the port in `$PORT`.
//! * Mode `hyper` ([`hyper_worker`]): hyper's HTTP/1.1 server, keep-alive on. Every request
//!   is recorded as one JSON line ([`Record`]) in the file named by [`LOG_ENV`] *before* it is
//!   answered, so once a client has its answer the record is there. Every byte read on a
//!   connection is appended to `<RAW_ENV dir>/conn-<n>.raw`, so a test can check what went
//!   over the wire (no client chunk extensions, say).
//! * Mode `raw` ([`raw_worker`]): a hand-written server whose `/raw/<script>` paths answer
//!   with scripted bytes (bad framing, bodies where none may be, responses nobody asked for).
//! * [`client`]: a raw HTTP/1 client with bounded reads.
#![allow(dead_code)]

pub mod client;
pub mod hyper_worker;
pub mod raw_worker;

use std::fs;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use handover_testkit::cli_kit::{Ctx, Supervisor, LONG, SHORT};

/// Set in a re-executed test binary: which worker to run (`hyper` or `raw`).
pub const MODE_ENV: &str = "HANDOVER_STRICT_WORKER";
/// The worker's request log (JSON lines).
pub const LOG_ENV: &str = "HANDOVER_STRICT_WORKER_LOG";
/// The directory for the raw bytes each worker connection read.
pub const RAW_ENV: &str = "HANDOVER_STRICT_WORKER_RAW";

/// What the worker saw of one request, or of a connection that failed to parse.
///
/// Byte strings (header values, body) are stored one char per byte (Latin-1), which is
/// lossless and unambiguous; header names are as hyper gives them (lowercase), grouped by
/// name in order of first appearance (`HeaderMap` order); the raw file has the wire order.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    /// `request` (a whole request, body and trailers read), `parse-error` (hyper could not
    /// parse what the proxy sent), or `body-error` (the body broke off).
    pub kind: String,
    /// The worker connection (numbered from 1 in accept order).
    pub conn: u64,
    /// The request's number in the process (from 1); 0 for errors.
    pub id: u64,
    pub method: String,
    /// The request target as received.
    pub target: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub trailers: Vec<(String, String)>,
    /// Why, for the error kinds.
    pub error: String,
}

impl Record {
    /// Every value of header `name` (lowercase).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as bytes.
    pub fn body_bytes(&self) -> Vec<u8> {
        bytes_of(&self.body)
    }

    /// One line for failure messages.
    pub fn brief(&self) -> String {
        format!(
            "{} #{} conn {}: {} {} body {:?} {}",
            self.kind, self.id, self.conn, self.method, self.target, self.body, self.error
        )
    }
}

/// Bytes as Latin-1 text (one char per byte).
pub fn latin1(b: &[u8]) -> String {
    b.iter().map(|&c| c as char).collect()
}

/// The inverse of [`latin1`].
pub fn bytes_of(s: &str) -> Vec<u8> {
    s.chars().map(|c| c as u32 as u8).collect()
}

/// Appends one record to the log (one `write` of a whole line, on a file opened for append).
fn record(r: &Record) {
    static LOG: Mutex<Option<fs::File>> = Mutex::new(None);
    let mut guard = LOG.lock().unwrap_or_else(|e| e.into_inner());
    let file = guard.get_or_insert_with(|| {
        let path = std::env::var(LOG_ENV).expect("the strict worker's log path");
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open the strict worker's log")
    });
    let mut line = serde_json::to_vec(r).expect("a record is JSON");
    line.push(b'\n');
    file.write_all(&line)
        .expect("write the strict worker's log");
}

/// The file for the raw bytes of worker connection `conn`.
fn raw_file(conn: u64) -> fs::File {
    let dir = PathBuf::from(std::env::var(RAW_ENV).expect("the strict worker's raw dir"));
    fs::File::create(dir.join(format!("conn-{conn}.raw"))).expect("create a raw file")
}

/// The body the workers answer with: enough for a client to tell whose answer it got.
pub fn answer_text(id: u64, conn: u64, method: &str, target: &str) -> String {
    format!("id={id} conn={conn} method={method} target={target}\n")
}

/// The `target=` of a worker's answer body.
pub fn answered_target(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let t = text.trim_end().split(" target=").nth(1)?;
    Some(t.to_string())
}

/// Runs the worker when this process was started as one; returns at once otherwise.
pub fn worker_main() {
    let Ok(mode) = std::env::var(MODE_ENV) else {
        return;
    };
    let port: u16 = std::env::var("PORT")
        .expect("$PORT from the supervisor")
        .parse()
        .expect("$PORT is a port");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the worker's port");
        println!("strict worker ({mode}) serving 127.0.0.1:{port}");
        match mode.as_str() {
            "hyper" => hyper_worker::serve(listener).await,
            "raw" => raw_worker::serve(listener).await,
            other => panic!("unknown strict worker mode {other:?}"),
        }
    });
}

/// A supervisor in proxy mode whose worker is this test binary, re-executed.
pub struct Strict {
    pub sup: Supervisor,
    log: PathBuf,
    raw: PathBuf,
}

impl Strict {
    /// Starts `handover run --proxy http://127.0.0.1:0 <extra> -- <this binary> ...` with
    /// worker `mode` and waits until the proxy has reached the worker.
    pub fn start(ctx: &Ctx, mode: &str, extra: &[&str]) -> Strict {
        let exe = std::env::current_exe().expect("the test binary's path");
        let log = ctx.path("strict-worker.jsonl");
        let raw = ctx.path("raw");
        fs::create_dir_all(&raw).unwrap();
        fs::write(&log, b"").unwrap();
        let mut args = vec!["--proxy", "http://127.0.0.1:0"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[
            "--",
            exe.to_str().unwrap(),
            "--exact",
            "strict_worker",
            "--nocapture",
            "--test-threads=1",
        ]);
        let sup = ctx.start_with(&args, |cmd| {
            cmd.env(MODE_ENV, mode)
                .env(LOG_ENV, &log)
                .env(RAW_ENV, &raw);
        });
        sup.log.expect(0, "is ready (connected to 127.0.0.1:", LONG);
        Strict { sup, log, raw }
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.sup.addr()
    }

    /// Every record so far.
    pub fn records(&self) -> Vec<Record> {
        let text = fs::read_to_string(&self.log).expect("read the worker's log");
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad record {l:?}: {e}")))
            .collect()
    }

    /// Records from index `from` on, waiting (bounded) until one answers `target`.
    pub fn records_until(&self, from: usize, target: &str) -> Vec<Record> {
        let mut last = Vec::new();
        let found = handover_testkit::cli_kit::poll_until(SHORT, || {
            let all = self.records();
            last = all[from.min(all.len())..].to_vec();
            last.iter().any(|r| r.target == target)
        });
        assert!(
            found,
            "the worker never recorded {target}; it recorded: {:#?}",
            last.iter().map(Record::brief).collect::<Vec<_>>()
        );
        last
    }

    /// Every raw byte the worker read, per connection file.
    pub fn raw(&self) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = fs::read_dir(&self.raw)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                (name, fs::read(e.path()).unwrap_or_default())
            })
            .collect();
        out.sort();
        out
    }

    /// The worker connections whose raw bytes contain `needle`.
    pub fn raw_containing(&self, needle: &[u8]) -> Vec<String> {
        self.raw()
            .into_iter()
            .filter(|(_, b)| b.windows(needle.len().max(1)).any(|w| w == needle))
            .map(|(n, _)| n)
            .collect()
    }
}

/// Bound for reading an answer that should come at once.
pub const READ: Duration = Duration::from_secs(3);
