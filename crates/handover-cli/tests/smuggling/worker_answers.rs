//! Bad worker answers (the raw worker's `/raw/<script>`): a response with both framings or bad
//! chunking is not passed on as it is; a body where none may be (204, 304, HEAD) and bytes or
//! a response that come after a complete response never reach another client: the next
//! requests, on other client connections, get their own answers, and the worker connection
//! that carried the bad answer is closed. One supervisor per script, so that one script's
//! poisoned connection cannot be blamed on the next.

use std::io::ErrorKind;

use crate::strict::client::{victim, victims, Conn, Resp};
use crate::strict::{Strict, READ};
use handover_testkit::cli_kit::{Ctx, LONG, SHORT};

/// How the scripted exchange must end for its client.
#[derive(Clone, Copy)]
enum Outcome {
    /// 502 only.
    BadGateway,
    /// 502, or the connection cut before a complete answer (the head may have been passed on).
    BadGatewayOrCut,
    /// This status (the answer's head passed on, without what followed it), or 502.
    StatusOr502(u16),
    /// Its own answer (200), or 502.
    OwnAnswerOr502,
}

/// Runs `method /raw/<script>` on a fresh supervisor, then the victims; why it failed.
fn run(script: &str, method: &str, want: Outcome) -> Result<(), String> {
    let ctx = Ctx::new();
    let sup = Strict::start(&ctx, "raw", &[]);
    let target = format!("/raw/{script}");
    let mut c = Conn::open(sup.addr(), READ);
    c.send(format!("{method} {target} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    let got = c.final_response(method == "HEAD");
    let mut why = Vec::new();
    let is_502 = |r: &Resp| r.status == 502;
    match (want, &got) {
        (_, Ok(r)) if is_502(r) => {}
        (Outcome::BadGatewayOrCut, Err(e))
            if matches!(
                e.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
            ) => {}
        (Outcome::StatusOr502(s), Ok(r)) if r.status == s => {}
        (Outcome::OwnAnswerOr502, Ok(r))
            if r.status == 200 && r.target().as_deref() == Some(target.as_str()) => {}
        (_, Ok(r)) => why.push(format!("{target}: got {} {:?}", r.status, r.text())),
        (_, Err(e)) => why.push(format!("{target}: no valid answer: {e}")),
    }
    // Nothing more on this connection: what followed the answer is not for anyone.
    if got.is_ok() {
        if let Err(e) = c.closed(std::time::Duration::from_millis(300)) {
            if e.starts_with("bytes") {
                why.push(format!("{target}: {e}"));
            }
        }
    }
    if script.starts_with("late") {
        // The worker has written its late response: it is in the proxy's socket buffer.
        sup.sup
            .log
            .expect(0, "raw worker: sent the late response", LONG);
    }
    // Twice round the proxy's threads: the script's own thread serves two of them.
    let n = 2 * victims();
    for i in 0..n {
        if let Err(e) = victim(sup.addr(), &format!("/victim-{i}")) {
            why.push(e);
        }
    }
    // The worker got the script's request and the victims', nothing else.
    let records = sup.records();
    let targets: Vec<String> = records.iter().map(|r| r.target.clone()).collect();
    let mut wanted = vec![target.clone()];
    wanted.extend((0..n).map(|i| format!("/victim-{i}")));
    if targets != wanted {
        why.push(format!("the worker got {targets:?}, wanted {wanted:?}"));
    }
    // The connection that carried the bad answer is closed, not kept for later.
    if let Some(r) = records.iter().find(|r| r.target == target) {
        let closed = format!("raw worker: connection {} closed", r.conn);
        if sup
            .sup
            .log
            .wait_for(0, SHORT, |l| l.contains(&closed))
            .is_none()
        {
            why.push(format!(
                "the proxy kept worker connection {} open after its bad answer",
                r.conn
            ));
        }
    }
    if why.is_empty() {
        Ok(())
    } else {
        Err(why.join("; "))
    }
}

/// Runs every `(script, method, want)`; the failures reported together.
fn run_all(scripts: &[(&str, &str, Outcome)]) {
    let failures: Vec<String> = scripts
        .iter()
        .filter_map(|&(s, m, w)| run(s, m, w).err().map(|e| format!("{s}: {e}")))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A response with both Content-Length and Transfer-Encoding gets 502; one with a bad chunk
/// (a size that is not hex, a bare LF, a bad size after a good chunk) 502 or a cut.
#[test]
fn badly_framed_worker_answers_are_not_passed_on() {
    run_all(&[
        ("cl-te", "GET", Outcome::BadGateway),
        ("bad-chunk-size", "GET", Outcome::BadGatewayOrCut),
        ("bad-chunk-lf", "GET", Outcome::BadGatewayOrCut),
        ("bad-chunk-later", "GET", Outcome::BadGatewayOrCut),
    ]);
}

/// A body after a 204 (plain or chunked), after a 304, or after the head of a HEAD answer (a
/// whole response, shaped like an answer to `/injected`) reaches nobody.
#[test]
fn bodies_where_none_may_be_reach_nobody() {
    run_all(&[
        ("204-body", "GET", Outcome::StatusOr502(204)),
        ("204-chunked", "GET", Outcome::StatusOr502(204)),
        ("304-body", "GET", Outcome::StatusOr502(304)),
        ("head-body", "HEAD", Outcome::StatusOr502(200)),
    ]);
}

/// Bytes after a complete response, a second response in the same write, one written later
/// while the connection sits idle, and one still to come while other clients' requests are
/// served (`slow-second-response`: the victims go while the worker waits to send it) reach
/// nobody.
#[test]
fn unsolicited_bytes_and_responses_reach_nobody() {
    run_all(&[
        ("extra-bytes", "GET", Outcome::OwnAnswerOr502),
        ("second-response", "GET", Outcome::OwnAnswerOr502),
        ("late-second-response", "GET", Outcome::OwnAnswerOr502),
        ("slow-second-response", "GET", Outcome::OwnAnswerOr502),
    ]);
}

/// Bytes sent right after an upgrade request reach the worker only after its `101`, and then
/// they do (the worker echoes them through the tunnel).
#[test]
fn bytes_after_an_upgrade_request_wait_for_the_101() {
    let ctx = Ctx::new();
    let sup = Strict::start(&ctx, "raw", &[]);
    let mut c = Conn::open(sup.addr(), READ);
    c.send(
        b"GET /raw/upgrade-101 HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n\
          early bytes\n",
    );
    let a = c.response(false).expect("an answer to the upgrade");
    assert_eq!(a.status, 101, "{}", a.text());
    let said = sup.sup.log.expect(0, "early bytes before the 101", LONG);
    assert!(
        said.contains("raw worker: 0 early bytes"),
        "the worker got bytes of the tunnel before it agreed to one: {said}"
    );
    let echoed = c
        .bytes(12)
        .expect("the early bytes, echoed through the tunnel");
    assert_eq!(echoed, b"early bytes\n");
}
