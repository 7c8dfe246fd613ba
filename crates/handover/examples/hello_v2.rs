//! `hello` v2: the `hello` example's server (`hello/server.rs`) with the greeting
//! `Welcome New Server`, so one `cargo build --examples` gives v1 and v2 of the upgrade tests.
//! `HELLO_GREETING` at build time still overrides it.

use std::process::ExitCode;

/// What `GET /` answers before ` pid=<pid>` unless `HELLO_GREETING` was set at build time.
const DEFAULT_GREETING: &str = "Welcome New Server";

#[path = "hello/server.rs"]
mod server;

fn main() -> ExitCode {
    server::main()
}
