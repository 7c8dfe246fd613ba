//! The control socket of a library-mode server (`hello --control PATH`): the same protocol
//! `handover upgrade|status|stop` speaks, answered by whichever generation is serving.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;

use handover::control_socket::{self, ClientError, Request, Response, ServerKind};
use handover_testkit::hello_kit::*;

#[test]
fn status_upgrade_failure_and_stop_through_the_control_socket() {
    let ctx = Ctx::new();
    let sock = ctx.path("control.sock");
    let sock_arg = sock.to_str().unwrap().to_string();
    let mut server = ctx.start(&["--control", &sock_arg]);
    let first = server.pid;

    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "control socket mode");

    let Response::Status(st) = control_socket::request(&sock, Request::Status).unwrap() else {
        panic!("status reply expected")
    };
    assert_eq!(st.kind, ServerKind::Library);
    assert_eq!(st.pid as i32, first);
    assert_eq!(st.generation, 1);
    assert_eq!(st.listeners, vec![server.addr().to_string()]);
    assert!(st.last_upgrade.is_none());

    // Upgrade: the reply names the new pid, which is the one answering HTTP.
    ctx.install(Version::V2);
    let Response::Upgraded(up) = control_socket::request(&sock, Request::Upgrade).unwrap() else {
        panic!("upgrade reply expected")
    };
    let new = up.pid as i32;
    assert_ne!(new, first);
    assert_eq!(up.previous_pids, vec![first as u32]);
    server.pid = new;
    server.wait_exited_ok(first);
    assert_eq!(server.hello(), (V2_GREETING.to_string(), new));

    // The new generation answers on the same socket.
    let Response::Status(st) = control_socket::request(&sock, Request::Status).unwrap() else {
        panic!("status reply expected")
    };
    assert_eq!((st.pid as i32, st.generation), (new, 2));

    // A failing upgrade is an error reply with the cause; the same pid keeps serving.
    ctx.install_script("#!/bin/sh\nexit 3\n");
    match control_socket::request(&sock, Request::Upgrade) {
        Err(ClientError::Failed(reason)) => {
            assert!(reason.contains("exited with status 3"), "reason: {reason}")
        }
        other => panic!("a failed upgrade must be an error reply, got {other:?}"),
    }
    assert_eq!(server.hello(), (V2_GREETING.to_string(), new));
    let Response::Status(st) = control_socket::request(&sock, Request::Status).unwrap() else {
        panic!("status reply expected")
    };
    let last = st.last_upgrade.expect("last upgrade recorded");
    assert!(!last.ok);
    assert!(last.error.unwrap().contains("exited with status 3"));

    // Garbage gets an error reply and changes nothing.
    let mut raw = UnixStream::connect(&sock).unwrap();
    raw.write_all(b"this is not json\n").unwrap();
    let mut line = String::new();
    BufReader::new(&raw).read_line(&mut line).unwrap();
    assert!(line.contains("\"ok\":false"), "reply: {line}");
    assert_eq!(server.hello(), (V2_GREETING.to_string(), new));

    // Stop: graceful, exit 0, socket file removed.
    let Response::Stopping(stop) = control_socket::request(&sock, Request::Stop).unwrap() else {
        panic!("stop reply expected")
    };
    assert_eq!(stop.pid as i32, new);
    match wait_exit(new, LONG) {
        Ok(Some(st)) => assert!(st.success(), "exit {st:?}"),
        Ok(None) => {}
        Err(e) => panic!("did not stop: {e}; log:\n{}", server.log.text()),
    }
    assert!(
        poll_until(SHORT, || !sock.exists()),
        "control socket not removed at the final stop"
    );
    assert_no_zombies();
}

/// `handover stop` with a lame duck: the control socket still answers, `status` says
/// `lame_duck` while `/healthz` fails and `/` is served; a SIGTERM then exits at once.
#[test]
fn a_stop_by_control_socket_enters_the_lame_duck_and_status_shows_it() {
    let ctx = Ctx::new();
    let sock = ctx.path("control.sock");
    let sock_arg = sock.to_str().unwrap().to_string();
    let server = ctx.start(&["--control", &sock_arg, "--lame-duck", "60s"]);
    let Response::Stopping(_) = control_socket::request(&sock, Request::Stop).unwrap() else {
        panic!("stop reply expected")
    };
    let Response::Status(st) = control_socket::request(&sock, Request::Status).unwrap() else {
        panic!("status reply expected")
    };
    assert_eq!(st.state, control_socket::ServerState::LameDuck, "{st:?}");
    assert_eq!(server.get("/healthz").unwrap().status, 503);
    assert_eq!(server.hello(), (V1_GREETING.to_string(), server.pid));
    server.signal(libc::SIGTERM);
    match wait_exit(server.pid, SHORT) {
        Ok(Some(st)) => assert_eq!(st.code(), Some(1), "{st:?}"),
        other => panic!("no exit within {SHORT:?}: {other:?}"),
    }
}
