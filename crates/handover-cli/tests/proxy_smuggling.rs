//! Request smuggling through the HTTP proxy (`handover run --proxy http://...`), against a
//! strict worker: this test binary re-executed as a hyper server (`strict`), which records
//! every request it gets, so that a test can tell exactly what crossed the proxy.
//!
//! * `corpus` / `cases`: crafted HTTP/1 requests (CL.TE, TE.CL, TE.TE, chunk tricks,
//!   `Connection`-named framing headers, Host, HTTP/1.0, upgrades, `Expect`), each followed
//!   by a victim request on a fresh connection that must get its own answer.
//! * `worker_answers`: a worker that answers badly (both framings, bad chunks, bodies where
//!   none may be, bytes nobody asked for) must not reach another client.
//! * `slow_body`: a request body that stalls is cut off.
//! * `h2c`: HTTP/2 requests with connection-specific fields or a wrong content-length.

mod strict;

#[path = "smuggling/cases.rs"]
mod cases;
#[path = "smuggling/corpus.rs"]
mod corpus;
#[path = "smuggling/h2c.rs"]
mod h2c;
#[path = "smuggling/slow_body.rs"]
mod slow_body;
#[path = "smuggling/worker_answers.rs"]
mod worker_answers;

/// Not a test of its own: the strict worker's entry point when the supervisor runs this binary
/// as its worker (see `strict`); without the worker's environment it returns at once.
#[test]
fn strict_worker() {
    strict::worker_main();
}
