//! The seed's demo server. `GET /` answers `<greeting> pid=<pid>`; the greeting is fixed at
//! compile time from `HELLO_GREETING` (default `Welcome Server`), so building twice gives a v1
//! and a v2. `GET /sleep/<ms>` answers the same after that many milliseconds. `GET /healthz`
//! answers 200 while serving and through upgrades, 503 from a stop on (with `--lame-duck DUR`
//! it keeps serving that long after `SIGTERM` before it drains).
//!
//! ```text
//! cargo build --release --example hello
//! target/release/examples/hello --listen 127.0.0.1:8080 &
//! kill -USR2 $!    # after replacing the binary: the new PID answers
//! ```
//!
//! Built with `--features tls`, `--tls-cert PATH --tls-key PATH` serves HTTPS (HTTP/2 and
//! HTTP/1.1 by ALPN). Each generation reads the files when it starts, so replacing them and
//! upgrading rotates the certificate.
//!
//! `hello_v2` is the same server with the greeting `Welcome New Server`: one build gives both
//! versions (the tests' v1 and v2).

use std::process::ExitCode;

/// What `GET /` answers before ` pid=<pid>` unless `HELLO_GREETING` was set at build time.
const DEFAULT_GREETING: &str = "Welcome Server";

#[path = "hello/server.rs"]
mod server;

fn main() -> ExitCode {
    server::main()
}
