//! Runs the corpus of `cases` through a real supervisor whose worker is hyper: each case on a
//! fresh connection, then victim requests, each on another fresh connection, which must get
//! their own answers; the worker's records since the case began must be exactly the case's
//! requests and then the victims'. Every case of a group is run; the failures are reported
//! together.

use std::net::SocketAddr;
use std::time::Duration;

use super::cases::{self, Case, Fwd, Hv, Want};
use crate::strict::client::{victim, victims, Conn};
use crate::strict::{latin1, Record, Strict};
use handover_testkit::cli_kit::Ctx;

/// Bound for one answer of the proxy.
const ANSWER: Duration = Duration::from_secs(2);
/// How long a connection that must be closed may stay open after its last answer.
const CLOSE: Duration = Duration::from_secs(2);

/// Header fields that must never arrive in a request's trailers.
const FRAMING: [&str; 4] = ["content-length", "transfer-encoding", "host", "trailer"];

/// Checks a record against what the case wanted; `proxy`: the proxy's address.
fn check_fwd(r: &Record, want: &Fwd, proxy: SocketAddr) -> Result<(), String> {
    if (r.method.as_str(), r.target.as_str()) != (want.method, want.target) {
        return Err(format!(
            "the worker got {} {}, not {} {}",
            r.method, r.target, want.method, want.target
        ));
    }
    if r.body != latin1(&want.body) {
        return Err(format!(
            "{}: the worker got the body {:?}, not {:?}",
            want.target,
            r.body,
            latin1(&want.body)
        ));
    }
    for (name, hv) in &want.headers {
        let got = r.all(name);
        let ok = match hv {
            Hv::Is(v) => got == [*v],
            Hv::Absent => got.is_empty(),
            Hv::ProxyAddr => got == [proxy.to_string().as_str()],
            Hv::NoToken(t) => !got
                .iter()
                .flat_map(|v| v.split(','))
                .any(|x| x.trim().eq_ignore_ascii_case(t)),
        };
        if !ok {
            return Err(format!(
                "{}: header {name}: the worker got {got:?}, wanted {}",
                want.target,
                match hv {
                    Hv::Is(v) => format!("exactly {v:?}"),
                    Hv::Absent => "none".into(),
                    Hv::ProxyAddr => format!("exactly {proxy}"),
                    Hv::NoToken(t) => format!("no token {t:?}"),
                }
            ));
        }
    }
    invariants(r)
}

/// What holds for every request a worker gets, whatever the case: one Host; never both
/// framings; no framing fields in the trailers.
pub fn invariants(r: &Record) -> Result<(), String> {
    if r.all("host").len() != 1 {
        return Err(format!(
            "{}: the worker got Host {:?}, not exactly one",
            r.target,
            r.all("host")
        ));
    }
    if !r.all("content-length").is_empty() && !r.all("transfer-encoding").is_empty() {
        return Err(format!(
            "{}: the worker got both Content-Length and Transfer-Encoding",
            r.target
        ));
    }
    if let Some((k, v)) = r
        .trailers
        .iter()
        .find(|(k, _)| FRAMING.contains(&k.as_str()))
    {
        return Err(format!("{}: the worker got the trailer {k}: {v}", r.target));
    }
    Ok(())
}

/// Sends one case and reads the proxy's answers; the requests the worker must have recorded.
fn exchange<'a>(sup: &Strict, case: &'a Case) -> Result<Vec<&'a Fwd>, String> {
    let mut c = Conn::open(sup.addr(), ANSWER);
    // The proxy may refuse and close before it has read everything.
    c.send(&case.raw);
    let answers = |c: &mut Conn, fwds: &'a [Fwd]| -> Result<Vec<&'a Fwd>, String> {
        for f in fwds {
            let a = c
                .final_response(f.method == "HEAD")
                .map_err(|e| format!("no answer for {}: {e}", f.target))?;
            if a.status != 200 || a.target().as_deref() != Some(f.target) {
                return Err(format!(
                    "wanted the worker's answer for {}, got {} {:?}",
                    f.target,
                    a.status,
                    a.text()
                ));
            }
        }
        Ok(fwds.iter().collect())
    };
    match &case.want {
        Want::Refused(statuses) => {
            let a = c
                .final_response(false)
                .map_err(|e| format!("no answer (wanted {statuses:?}): {e}"))?;
            if !statuses.contains(&a.status) {
                return Err(format!(
                    "wanted {statuses:?}, got {} {:?}",
                    a.status,
                    a.text()
                ));
            }
            c.closed(CLOSE)
                .map_err(|e| format!("refused with {}, but {e}", a.status))?;
            Ok(Vec::new())
        }
        Want::Served(fwds) => answers(&mut c, fwds),
        Want::ServedThenClosed(fwds) => {
            let got = answers(&mut c, fwds)?;
            c.closed(CLOSE).map_err(|e| format!("served, but {e}"))?;
            Ok(got)
        }
        Want::ServedThenMaybe(fwds, extra) => {
            let mut got = answers(&mut c, fwds)?;
            match c.final_response(false) {
                Ok(a) if a.status == 200 && a.target().as_deref() == Some(extra.target) => {
                    got.push(extra);
                }
                Ok(a) => {
                    return Err(format!(
                        "after the first answers: {} {:?}, wanted {} or a close",
                        a.status,
                        a.text(),
                        extra.target
                    ))
                }
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                Err(e) => return Err(format!("neither {} nor a close: {e}", extra.target)),
            }
            Ok(got)
        }
    }
}

/// Runs one case; why it failed.
fn run(sup: &Strict, i: usize, case: &Case) -> Result<(), String> {
    let from = sup.records().len();
    let outcome = exchange(sup, case);
    // Whatever happened on the case's connection, another client must get its own answer.
    // One victim per proxy thread, one after another: one of them is served by the thread
    // that served the case, whose pool holds the case's worker connection.
    let victim_targets: Vec<String> = (0..victims()).map(|k| format!("/victim-{i}-{k}")).collect();
    let mut why = Vec::new();
    if let Err(e) = &outcome {
        why.push(e.clone());
    }
    for t in &victim_targets {
        if let Err(e) = victim(sup.addr(), t) {
            why.push(e);
        }
    }
    let records = sup.records_until(from, victim_targets.last().unwrap());
    // Exactly the case's requests, then the victims'.
    let expected: Vec<&Fwd> = outcome.unwrap_or_default();
    let got: Vec<&Record> = records.iter().filter(|r| r.kind != "body-error").collect();
    let (case_records, rest) = got.split_at(got.len().saturating_sub(victim_targets.len()));
    let briefs = |rs: &[&Record]| rs.iter().map(|r| r.brief()).collect::<Vec<_>>();
    if rest.iter().map(|r| &r.target).ne(victim_targets.iter()) {
        why.push(format!(
            "the victims' requests were not the last the worker got: {:?}",
            briefs(&got)
        ));
    } else if case_records.len() != expected.len() {
        // When the exchange failed, what it expected is unknown: say what came.
        why.push(format!(
            "the worker got {:?}, wanted {:?}",
            briefs(case_records),
            expected.iter().map(|f| f.target).collect::<Vec<_>>()
        ));
    } else {
        for (r, f) in case_records.iter().zip(&expected) {
            if r.kind != "request" {
                why.push(format!("the worker failed: {}", r.brief()));
            } else if let Err(e) = check_fwd(r, f, sup.addr()) {
                why.push(e);
            }
        }
    }
    if let Some(r) = records.iter().find(|r| r.target.contains("smuggled")) {
        why.push(format!("SMUGGLED: the worker got {}", r.brief()));
    }
    for never in &case.never_raw {
        let conns = sup.raw_containing(never);
        if !conns.is_empty() {
            why.push(format!(
                "the worker read the client's bytes {:?} verbatim (on {conns:?}): not re-framed",
                String::from_utf8_lossy(never)
            ));
        }
    }
    if why.is_empty() {
        Ok(())
    } else {
        Err(why.join("; "))
    }
}

/// Runs `cases` (group `group`) on a fresh supervisor, each followed by victim requests on
/// fresh connections; the failures reported together.
fn run_group(group: &str, cases: Vec<Case>) {
    let ctx = Ctx::new();
    let sup = Strict::start(&ctx, "hyper", &[]);
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        if let Err(e) = run(&sup, i, case) {
            failures.push(format!("{group} {i} ({}): {e}", case.name));
        }
    }
    println!(
        "corpus {group}: {} passed, {} failed",
        cases.len() - failures.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The corpus is as large as the issue asks.
#[test]
fn the_corpus_has_at_least_60_cases() {
    let n: usize = cases::groups().iter().map(|(_, c)| c.len()).sum();
    assert!(n >= 60, "only {n} cases");
}

#[test]
fn baseline_requests_are_forwarded_exactly() {
    run_group("baseline", cases::baseline());
}

#[test]
fn cl_te_and_te_cl_are_refused() {
    run_group("cl_te", cases::cl_te());
}

#[test]
fn te_te_obfuscations_are_refused() {
    run_group("te_te", cases::te_te());
}

#[test]
fn chunked_bodies_are_parsed_strictly_and_reframed() {
    run_group("chunked_bodies", cases::chunked_bodies());
}

#[test]
fn connection_cannot_name_framing_headers() {
    run_group("connection", cases::connection());
}

#[test]
fn host_rules_hold() {
    run_group("host", cases::host());
}

#[test]
fn malformed_heads_are_refused() {
    run_group("heads", cases::heads());
}

#[test]
fn expect_100_continue_is_forwarded_exactly() {
    run_group("expect", cases::expect());
}

#[test]
fn upgrades_do_not_smuggle() {
    run_group("upgrades", cases::upgrades());
}
