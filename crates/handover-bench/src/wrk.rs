//! Cross-check with wrk (Debian package `wrk`): the same load shape, wrk's own counters.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::load::Mode;

/// wrk's counters, from the `WRKJSON` line its script prints.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct WrkResult {
    /// Responses received.
    pub requests: u64,
    /// Seconds wrk ran.
    pub duration_s: f64,
    /// Connect errors.
    pub connect: u64,
    /// Read errors (EOF/reset before a whole response).
    pub read: u64,
    /// Write errors.
    pub write: u64,
    /// Requests slower than wrk's timeout.
    pub timeout: u64,
    /// Non-2xx responses.
    pub non2xx: u64,
    /// 2xx answered by v1 (only when counting bodies).
    pub v1: u64,
    /// 2xx answered by v2 (only when counting bodies).
    pub v2: u64,
    /// 2xx with neither greeting (only when counting bodies).
    pub wrong: u64,
    /// Whether bodies were counted (a `response()` callback slows wrk down).
    pub counted: bool,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Slowest, ms.
    pub max_ms: f64,
}

const SCRIPT: &str = r#"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) v1 = 0; v2 = 0; wrong = 0; non2xx = 0 end
if COUNT then
  function response(status, headers, body)
    if status < 200 or status > 299 then non2xx = non2xx + 1
    elseif body and string.sub(body, 1, #G1) == G1 then v1 = v1 + 1
    elseif body and string.sub(body, 1, #G2) == G2 then v2 = v2 + 1
    else wrong = wrong + 1 end
  end
end
function done(summary, latency, requests)
  local a = {v1 = 0, v2 = 0, wrong = 0, non2xx = 0}
  for _, t in ipairs(threads) do
    for k, _ in pairs(a) do a[k] = a[k] + (t:get(k) or 0) end
  end
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests":%d,"duration_s":%.3f,"connect":%d,"read":%d,"write":%d,"timeout":%d,"non2xx":%d,"v1":%d,"v2":%d,"wrong":%d,"counted":%s,"p50_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f}\n',
    summary.requests, summary.duration / 1e6, e.connect, e.read, e.write, e.timeout,
    a.non2xx, a.v1, a.v2, a.wrong, tostring(COUNT),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
"#;

/// Whether `wrk` is on the PATH.
pub fn available() -> bool {
    Command::new("wrk")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// How wrk is run.
#[derive(Debug, Clone)]
pub struct WrkLoad<'a> {
    /// Server address.
    pub addr: SocketAddr,
    /// Keep-alive or `Connection: close`.
    pub mode: Mode,
    /// Connections.
    pub conns: usize,
    /// Threads.
    pub threads: usize,
    /// Duration (whole seconds, at least 1).
    pub duration: Duration,
    /// Per-request timeout (wrk takes whole seconds).
    pub timeout: Duration,
    /// Count bodies by greeting (`Some((v1, v2))`).
    pub count: Option<(&'a str, &'a str)>,
    /// Directory for the script and wrk's output.
    pub dir: &'a Path,
}

/// Runs wrk once; kills it if it overruns its duration by 15 s.
pub fn run(w: &WrkLoad) -> io::Result<WrkResult> {
    let (count, g1, g2) = match w.count {
        Some((a, b)) => ("true", a, b),
        None => ("false", "", ""),
    };
    let script = w.dir.join("wrk-count.lua");
    let text = format!("COUNT = {count}\nG1 = {g1:?}\nG2 = {g2:?}\n{SCRIPT}");
    std::fs::write(&script, text)?;
    let out_path = w.dir.join("wrk-out.txt");
    let out = std::fs::File::create(&out_path)?;
    let secs = w.duration.as_secs().max(1);
    let mut cmd = Command::new("wrk");
    cmd.arg(format!("-t{}", w.threads.clamp(1, w.conns.max(1))))
        .arg(format!("-c{}", w.conns))
        .arg(format!("-d{secs}s"))
        .arg("--timeout")
        .arg(format!("{}s", w.timeout.as_secs().max(1)))
        .arg("-s")
        .arg(&script);
    if w.mode == Mode::Close {
        cmd.args(["-H", "Connection: close"]);
    }
    let mut child = cmd
        .arg(format!("http://{}/", w.addr))
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(secs + 15);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other("wrk overran its duration; killed"));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&out_path)?;
    let json = text
        .lines()
        .find_map(|l| l.strip_prefix("WRKJSON "))
        .ok_or_else(|| {
            let tail: String = text.lines().take(3).collect::<Vec<_>>().join(" / ");
            io::Error::other(format!("wrk ({status}) printed no result: {tail}"))
        })?;
    serde_json::from_str(json).map_err(io::Error::other)
}
