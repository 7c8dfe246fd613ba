//! UDP services (`examples/udp_echo.rs`): one datagram socket shared by the generations, read
//! only by the one serving. Under a steady request/response load through 10 upgrades, every
//! datagram is answered exactly once, and never by an older generation after a newer one.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use handover_testkit::hello_kit::*;
use handover_testkit::udp::UdpLoad;

/// Datagrams per second, sent while the upgrades happen.
const RATE: u32 = 5_000;
const UPGRADES: usize = 10;
/// The example's drain timeout: an old process that waits this long did not exit by dropping
/// its socket.
const DRAIN: Duration = Duration::from_secs(10);

/// `<dir>/udp_echo`, the start path of the server.
fn install_udp_echo(ctx: &Ctx) -> PathBuf {
    let bin = example_binary("udp_echo");
    let path = ctx.path("udp_echo");
    if std::fs::hard_link(&bin, &path).is_err() {
        std::fs::copy(&bin, &path).expect("copy udp_echo");
    }
    path
}

/// Spawns `cmd` (some form of udp_echo) and waits for its `serving udp://IP:PORT` line.
fn start(ctx: &Ctx, cmd: Command) -> (Server, SocketAddr) {
    let sp = ctx.spawn("udp_echo", cmd);
    let pid = sp.pid;
    let found = sp
        .log
        .wait_for_or(0, LONG, |l| l.contains("serving udp://"), || !is_alive(pid));
    let Some((_, line)) = found else {
        panic!("udp_echo did not serve; log:\n{}", sp.log.text());
    };
    let addr = line
        .split("serving udp://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse the address in {line:?}"));
    let server = Server {
        pid,
        log: sp.log,
        addrs: Vec::new(),
    };
    (server, addr)
}

fn udp_echo_command(ctx: &Ctx, exe: &PathBuf, listen: &str) -> Command {
    let mut cmd = ctx.command(exe);
    cmd.args(["--listen", listen, "--delay", "2ms"])
        .arg("--drain-timeout")
        .arg(format!("{}s", DRAIN.as_secs()));
    cmd
}

/// The load through `UPGRADES` upgrades by `SIGUSR2`; returns the serving pids, oldest first.
fn upgrade_under_load(server: &mut Server, load: &UdpLoad) -> Vec<i32> {
    let mut generations = vec![server.pid];
    assert!(
        load.wait_answers_from(server.pid, 500, LONG),
        "the first generation does not answer; log:\n{}",
        server.log.text()
    );
    for _ in 0..UPGRADES {
        let old = server.pid;
        let from = server.log.len();
        signal(old, libc::SIGUSR2);
        let new = server.wait_upgrade_complete(from, old);
        let handed_over = Instant::now();
        server.pid = new;
        generations.push(new);
        // A real signal that the new one reads: its answers arrive.
        assert!(
            load.wait_answers_from(new, 200, LONG),
            "pid {new} does not answer after the upgrade; log:\n{}",
            server.log.text()
        );
        server.wait_exited_ok(old);
        // It exited because it dropped its socket, not at the drain deadline.
        assert!(
            handed_over.elapsed() < DRAIN,
            "pid {old} took {:?} to exit after the handover",
            handed_over.elapsed()
        );
    }
    generations
}

#[test]
fn every_datagram_is_answered_exactly_once_through_ten_upgrades() {
    let ctx = Ctx::new();
    let exe = install_udp_echo(&ctx);
    let (mut server, addr) = start(&ctx, udp_echo_command(&ctx, &exe, "udp://127.0.0.1:0"));
    let load = UdpLoad::start(addr, RATE, Duration::from_secs(120));
    let generations = upgrade_under_load(&mut server, &load);
    let stats = load.finish(Duration::from_secs(3), &generations);
    eprintln!("udp: {}", stats.summary());
    assert_eq!(stats.unanswered_count, 0, "{}", stats.summary());
    assert_eq!(stats.duplicates, 0, "{}", stats.summary());
    assert_eq!(stats.stale, 0, "{}", stats.summary());
    assert_eq!(stats.garbage, 0, "{}", stats.summary());
    assert!(
        stats.per_generation.iter().all(|(_, n)| *n > 0),
        "{}",
        stats.summary()
    );
    assert!(
        stats.rate_per_s > RATE as f64 * 0.5,
        "the load did not hold its rate: {}",
        stats.summary()
    );
    // Each old process said it stopped reading, and abandoned nothing at a deadline.
    let text = server.log.text();
    assert_eq!(
        server
            .log
            .count(|l| l.contains("reading no more (draining)")),
        UPGRADES,
        "{text}"
    );
    assert_eq!(
        server.log.count(|l| l.contains(", 0 answers abandoned")),
        UPGRADES,
        "{text}"
    );
    assert!(server.stop().success(), "{}", server.log.text());
}

/// The same over IPv6 loopback, fewer upgrades: the socket and its name travel the same way.
#[test]
fn an_ipv6_datagram_socket_is_handed_over() {
    if UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback here");
        return;
    }
    let ctx = Ctx::new();
    let exe = install_udp_echo(&ctx);
    let (mut server, addr) = start(&ctx, udp_echo_command(&ctx, &exe, "udp://[::1]:0"));
    assert!(addr.is_ipv6());
    one_upgrade_under_load(&mut server, addr);
    assert!(server.stop().success());
}

/// `sh -c 'export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=<name>; exec <exe> --listen <addr>'`
/// with `fd` as fd 3.
fn with_inherited(ctx: &Ctx, fd: i32, name: &str, exe: &str, listen: &str) -> Command {
    let mut cmd = ctx.command("sh");
    cmd.arg("-c").arg(format!(
        "export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES={name}; exec {exe} --listen {listen}"
    ));
    pass_as_fd3(&mut cmd, fd);
    cmd
}

fn expect_exit_2(ctx: &Ctx, cmd: Command, needle: &str) {
    let p = ctx.spawn("server", cmd);
    let st = p.wait(LONG);
    let text = p.log.text();
    assert_eq!(st.code(), Some(2), "{st:?}; log:\n{text}");
    assert!(text.contains(needle), "expected {needle:?}; log:\n{text}");
}

/// A socket of the wrong kind under the name asked for is refused with exit status 2 and a
/// message naming both kinds, both ways: a UDP socket where hello wants a TCP listener, and
/// a TCP listener where udp_echo wants a datagram socket.
#[test]
fn an_inherited_socket_of_the_other_kind_is_refused() {
    let ctx = Ctx::new();
    let exe = install_udp_echo(&ctx);
    // hello names its listener after the address: give the UDP socket that name.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = udp.local_addr().unwrap().port();
    let cmd = with_inherited(
        &ctx,
        udp.as_raw_fd(),
        &format!("tcp_127.0.0.1_{port}"),
        "./hello",
        &format!("127.0.0.1:{port}"),
    );
    expect_exit_2(
        &ctx,
        cmd,
        &format!("is a datagram (UDP) socket bound to udp://127.0.0.1:{port}, but a stream listener was asked for"),
    );
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tcp.local_addr().unwrap().port();
    let name = format!("udp_127.0.0.1_{port}");
    let cmd = with_inherited(
        &ctx,
        tcp.as_raw_fd(),
        &name,
        exe.to_str().unwrap(),
        &format!("udp://127.0.0.1:{port}"),
    );
    expect_exit_2(
        &ctx,
        cmd,
        &format!("is a stream socket bound to tcp://127.0.0.1:{port}, but a datagram (UDP) socket was asked for"),
    );
}

/// Started by `systemd-socket-activate --datagram -l 127.0.0.1:PORT ./udp_echo --listen
/// udp://127.0.0.1:PORT` (systemd's `ListenDatagram=`): the datagram that made it start is
/// answered by udp_echo in its place, and the socket is handed over at an upgrade.
#[test]
fn started_by_systemd_socket_activate_with_a_datagram_socket() {
    let Some(tool) = which("systemd-socket-activate") else {
        assert!(
            !in_ci(),
            "systemd-socket-activate is not installed, but CI must run this test (apt-get install systemd)"
        );
        eprintln!("SKIPPED: systemd-socket-activate not found in PATH (apt-get install systemd)");
        return;
    };
    let ctx = Ctx::new();
    let exe = install_udp_echo(&ctx);
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut cmd = ctx.command(tool);
    cmd.args(["--datagram", "-l", &addr.to_string()])
        .arg(&exe)
        .args(["--listen", &format!("udp://{addr}")]);
    let p = ctx.spawn("systemd-socket-activate", cmd);
    // It binds, then waits for the first datagram before exec'ing udp_echo in place.
    let bound = p
        .log
        .wait_for_or(0, LONG, |l| l.contains("Listening on"), || !is_alive(p.pid));
    assert!(bound.is_some(), "not listening; log:\n{}", p.log.text());
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(LONG)).unwrap();
    client.send_to(b"first", addr).unwrap();
    let mut buf = [0u8; 64];
    let n = client
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no answer: {e}; log:\n{}", p.log.text()));
    assert_eq!(
        std::str::from_utf8(&buf[..n]).unwrap(),
        format!("first pid={}", p.pid),
        "udp_echo must answer in place of systemd-socket-activate"
    );
    let mut server = Server {
        pid: p.pid,
        log: p.log,
        addrs: Vec::new(),
    };
    one_upgrade_under_load(&mut server, addr);
    assert!(server.stop().success(), "{}", server.log.text());
}

/// One `SIGUSR2` under 1,000 datagrams/s: both generations answer, the old one exits cleanly,
/// and no datagram is unanswered or answered twice.
fn one_upgrade_under_load(server: &mut Server, addr: std::net::SocketAddr) {
    let load = UdpLoad::start(addr, 1_000, Duration::from_secs(60));
    assert!(load.wait_answers_from(server.pid, 100, LONG));
    let old = server.pid;
    let from = server.log.len();
    signal(old, libc::SIGUSR2);
    let new = server.wait_upgrade_complete(from, old);
    assert!(load.wait_answers_from(new, 100, LONG));
    server.wait_exited_ok(old);
    server.pid = new;
    let stats = load.finish(Duration::from_secs(3), &[old, new]);
    assert_eq!(stats.unanswered_count, 0, "{}", stats.summary());
    assert_eq!(stats.duplicates, 0, "{}", stats.summary());
}
