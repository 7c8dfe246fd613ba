//! Start-up with inherited sockets (systemd socket-activation layout): malformed variables are
//! refused loudly, foreign ones are ignored, good ones are used.

use std::fs;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::process::Command;

use handover_testkit::hello_kit::*;

/// `sh -c 'export LISTEN_PID=$$ <vars>; exec ./hello --listen <listen>'`: `$$` is the pid hello
/// will have, since `exec` keeps it.
fn wrapped(ctx: &Ctx, script_prefix: &str, listen: &str) -> Command {
    let mut cmd = ctx.command("sh");
    cmd.arg("-c")
        .arg(format!("{script_prefix} exec ./hello --listen {listen}"));
    cmd
}

/// Runs `cmd`, expects a prompt non-zero exit without serving, and returns the output.
fn expect_refused(ctx: &Ctx, cmd: Command) -> String {
    let p = ctx.spawn("hello", cmd);
    let st = p.wait(LONG);
    let text = p.log.text();
    assert!(
        !st.success(),
        "hello started with malformed inheritance variables exited with {st:?}; log:\n{text}"
    );
    assert!(
        !text.lines().any(|l| parse_serving(l).is_some()),
        "hello served despite malformed inheritance variables; log:\n{text}"
    );
    text
}

fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind")
}

#[test]
fn listen_fds_not_a_number_is_refused() {
    let ctx = Ctx::new();
    let cmd = wrapped(&ctx, "export LISTEN_PID=$$ LISTEN_FDS=abc;", "127.0.0.1:0");
    let text = expect_refused(&ctx, cmd);
    assert!(
        text.contains("LISTEN_FDS") && text.contains("abc"),
        "the error must name LISTEN_FDS and its value; log:\n{text}"
    );
}

#[test]
fn listen_fdnames_count_mismatch_is_refused() {
    let ctx = Ctx::new();
    let l = listener();
    let mut cmd = wrapped(
        &ctx,
        "export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=web:admin;",
        "127.0.0.1:0",
    );
    pass_as_fd3(&mut cmd, l.as_raw_fd());
    let text = expect_refused(&ctx, cmd);
    assert!(
        text.contains("LISTEN_FDNAMES"),
        "the error must name LISTEN_FDNAMES; log:\n{text}"
    );
}

#[test]
fn listen_pid_garbage_is_refused() {
    let ctx = Ctx::new();
    let l = listener();
    let mut cmd = wrapped(&ctx, "export LISTEN_PID=12ab LISTEN_FDS=1;", "127.0.0.1:0");
    pass_as_fd3(&mut cmd, l.as_raw_fd());
    let text = expect_refused(&ctx, cmd);
    assert!(
        text.contains("LISTEN_PID") && text.contains("12ab"),
        "the error must name LISTEN_PID and its value; log:\n{text}"
    );
}

#[test]
fn inherited_fd_that_is_not_a_socket_is_refused() {
    let ctx = Ctx::new();
    std::fs::write(ctx.path("not-a-socket"), "plain file\n").unwrap();
    let cmd = wrapped(
        &ctx,
        "exec 3<not-a-socket; export LISTEN_PID=$$ LISTEN_FDS=1;",
        "127.0.0.1:0",
    );
    let text = expect_refused(&ctx, cmd);
    assert!(
        text.contains("is not a socket"),
        "expected `is not a socket`; log:\n{text}"
    );
}

/// `LISTEN_PID` names another process: the fds are not ours (sd_listen_fds semantics); hello
/// binds its own socket and serves.
#[test]
fn foreign_listen_pid_is_ignored() {
    let ctx = Ctx::new();
    let l = listener();
    let inherited = l.local_addr().unwrap();
    let mut cmd = wrapped(&ctx, "export LISTEN_PID=1 LISTEN_FDS=1;", "127.0.0.1:0");
    pass_as_fd3(&mut cmd, l.as_raw_fd());
    let server = ctx.start_with(cmd, 1);
    let Addr::Tcp(addr) = server.addr() else {
        panic!("tcp expected")
    };
    assert_ne!(
        *addr, inherited,
        "hello used a socket whose LISTEN_PID was not its own"
    );
    assert_eq!(server.hello().0, V1_GREETING);
}

/// A socket at fd 3 with LISTEN_PID/LISTEN_FDS for hello, asked for by address: hello serves on
/// it (the port is still bound by the test, so a fresh bind would fail) and hands it over.
#[test]
fn inherited_socket_is_used_and_handed_over() {
    let ctx = Ctx::new();
    let l = listener();
    let addr = l.local_addr().unwrap();
    let mut cmd = wrapped(
        &ctx,
        "export LISTEN_PID=$$ LISTEN_FDS=1;",
        &addr.to_string(),
    );
    pass_as_fd3(&mut cmd, l.as_raw_fd());
    let mut server = ctx.start_with(cmd, 1);
    assert_eq!(server.addr(), &Addr::Tcp(addr));
    assert_eq!(server.hello().0, V1_GREETING);

    // Let the server own the socket alone from now on.
    drop(l);
    ctx.install(Version::V2);
    let (_, new) = server.upgrade(libc::SIGUSR2);
    assert_eq!(
        hello_at(&Addr::Tcp(addr)).unwrap(),
        (V2_GREETING.to_string(), new)
    );
}

/// Two inherited sockets, only one asked for: the other is closed once the server is ready.
#[test]
fn unrequested_inherited_socket_is_closed() {
    let ctx = Ctx::new();
    let (wanted, unwanted) = (listener(), listener());
    let addr = wanted.local_addr().unwrap();
    let mut cmd = wrapped(
        &ctx,
        "export LISTEN_PID=$$ LISTEN_FDS=2 LISTEN_FDNAMES=web:spare;",
        &addr.to_string(),
    );
    pass_fds(&mut cmd, &[wanted.as_raw_fd(), unwanted.as_raw_fd()]);
    let server = ctx.start_with(cmd, 1);
    assert_eq!(server.addr(), &Addr::Tcp(addr));
    let inode = |l: &TcpListener| {
        fs::read_link(format!("/proc/self/fd/{}", l.as_raw_fd()))
            .unwrap()
            .display()
            .to_string()
    };
    let (wanted_ino, unwanted_ino) = (inode(&wanted), inode(&unwanted));
    let fds = fd_targets(server.pid);
    assert!(
        fds.iter().any(|t| t.ends_with(&wanted_ino)),
        "the socket in use is not open: {fds:#?}"
    );
    assert!(
        poll_until(SHORT, || !fd_targets(server.pid)
            .iter()
            .any(|t| t.ends_with(&unwanted_ino))),
        "the unrequested inherited socket {unwanted_ino} is still open: {:#?}",
        fd_targets(server.pid)
    );
}

/// Started by `systemd-socket-activate -l 127.0.0.1:PORT ./hello --listen 127.0.0.1:PORT`.
#[test]
fn started_by_systemd_socket_activate() {
    let Some(tool) = which("systemd-socket-activate") else {
        assert!(
            !in_ci(),
            "systemd-socket-activate is not installed, but CI must run this test (apt-get install systemd)"
        );
        eprintln!("SKIPPED: systemd-socket-activate not found in PATH (apt-get install systemd)");
        return;
    };
    let ctx = Ctx::new();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = ctx.command(tool);
    cmd.args(["-l", &listen, "./hello", "--listen", &listen]);
    let p = ctx.spawn("systemd-socket-activate", cmd);

    // It binds, then waits for the first connection before exec'ing hello in place.
    let bound = p
        .log
        .wait_for_or(0, LONG, |l| l.contains("Listening on"), || !is_alive(p.pid));
    assert!(
        bound.is_some(),
        "systemd-socket-activate did not listen; log:\n{}",
        p.log.text()
    );
    let addr = Addr::Tcp(listen.parse().unwrap());
    let (greeting, pid) = hello_at(&addr)
        .unwrap_or_else(|e| panic!("first request failed: {e}; log:\n{}", p.log.text()));
    assert_eq!(greeting, V1_GREETING);
    assert_eq!(
        pid, p.pid,
        "hello must run in place of systemd-socket-activate"
    );
    let serving = p.log.wait_for(0, LONG, |l| parse_serving(l).is_some());
    let serving = serving.map(|(_, l)| parse_serving(&l).unwrap());
    assert_eq!(serving, Some(addr.clone()), "log:\n{}", p.log.text());

    let mut server = Server {
        pid: p.pid,
        log: p.log,
        addrs: vec![addr.clone()],
    };
    ctx.install(Version::V2);
    let (_, new) = server.upgrade(libc::SIGUSR2);
    assert_eq!(hello_at(&addr).unwrap(), (V2_GREETING.to_string(), new));
    let st = server.stop();
    assert!(st.success(), "stop: {st:?}");
}
