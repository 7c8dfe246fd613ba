//! What a worker finds in its environment. A proxy-mode worker binds its own port, so it must
//! see no socket-inheritance variable at all: `LISTEN_FDS=0` is a non-empty string, and a
//! Node.js worker written the usual way (`if (process.env.LISTEN_FDS) server.listen({fd: 3})`)
//! takes it as true and fails to start.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;

use handover_testkit::cli_kit::*;

/// The proxy-mode worker behind a wrapper that refuses to start when any inheritance variable
/// is set, as that Node.js worker would: the proxy must come up and answer through it.
#[test]
fn proxy_mode_worker_sees_no_inheritance_variables() {
    let ctx = Ctx::new();
    let app = write_app(&ctx, "v1", "http");
    let wrapper = ctx.path("strict-worker.sh");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n\
             if env | grep -E '^(LISTEN_FDS|LISTEN_PID|LISTEN_FDNAMES|HANDOVER_SYNC_FD|HANDOVER_OWNED_FDS|HANDOVER_GENERATION)=' >&2; then\n\
             \x20 echo 'strict-worker: inheritance variables are set: refusing to start' >&2\n\
             \x20 exit 3\n\
             fi\n\
             exec {} \"$@\"\n",
            app.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();

    let sup = ctx.start(&[
        "--proxy",
        "http://127.0.0.1:0",
        "--",
        wrapper.to_str().unwrap(),
        "--port",
        "{port}",
    ]);
    let ready = poll_until(LONG, || {
        sup.log.contains("is ready (connected to 127.0.0.1:")
            || sup.log.contains("refusing to start")
    });
    assert!(ready, "no worker became ready; log:\n{}", sup.log.text());
    assert!(
        !sup.log.contains("refusing to start"),
        "the worker saw an inheritance variable; log:\n{}",
        sup.log.text()
    );
    // The proxy answers in HTTP/1.1 whatever the request's version: read it raw.
    let mut conn = TcpStream::connect_timeout(&sup.addr(), SHORT).expect("connect to the proxy");
    conn.set_read_timeout(Some(LONG)).unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).expect("read the answer");
    assert!(
        answer.starts_with("HTTP/1.1 200 ") && answer.contains("\r\n\r\nv1 pid="),
        "answer through the proxy: {answer:?}; log:\n{}",
        sup.log.text()
    );
}
