//! A request body that stalls is bounded: with `--client-timeout 1s`, a client that sends a
//! head announcing 100 bytes, then 10 of them, and then nothing, gets 408 or a close within
//! a few seconds, and the worker records no request.

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use crate::strict::client::{victim, Conn};
use crate::strict::Strict;
use handover_testkit::cli_kit::Ctx;

/// How long the proxy may take to give up on the stalled body: the 1 s timeout, with room
/// for a loaded machine (its current head timer polls at a quarter of the timeout).
const BOUND: Duration = Duration::from_secs(6);

#[test]
fn a_stalled_request_body_gets_408_or_a_close() {
    let ctx = Ctx::new();
    let sup = Strict::start(&ctx, "hyper", &["--client-timeout", "1s"]);
    let mut c = Conn::open(sup.addr(), BOUND);
    let start = Instant::now();
    c.send(b"POST /stalled HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789");
    match c.final_response(false) {
        Ok(a) => {
            assert_eq!(a.status, 408, "{}", a.text());
            c.closed(Duration::from_secs(2))
                .unwrap_or_else(|e| panic!("408, but {e}"));
        }
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
            ) => {}
        Err(e) => panic!(
            "neither 408 nor a close {:?} after the body stalled: {e}",
            start.elapsed()
        ),
    }
    assert!(start.elapsed() < BOUND, "{:?}", start.elapsed());
    // The proxy still serves, and the stalled request never became a request.
    victim(sup.addr(), "/after-stall").unwrap();
    let targets: Vec<String> = sup
        .records()
        .into_iter()
        .filter(|r| r.kind == "request")
        .map(|r| r.target)
        .collect();
    assert_eq!(targets, ["/after-stall"]);
}
