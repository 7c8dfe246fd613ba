//! `handover run` under socket activation: the listening socket belongs to a parent
//! (systemd, `systemd-socket-activate`, or this test), which passes it by `LISTEN_FDS`. The
//! supervisor serves it and upgrades on it, a restart of the supervisor loses no connection,
//! and bad activation environments are refused with messages that say what is wrong.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use handover_testkit::cli_kit::*;
use handover_testkit::reap::wait_exit;
use handover_testkit::sys::free_port;

fn ctl(ctx: &Ctx) -> String {
    ctx.control().to_str().unwrap().to_string()
}

/// The wrapper that hands a socket over the way systemd does, std only and without
/// `pre_exec`: the socket arrives as the shell's stdin (std passes stdio without
/// close-on-exec), the shell moves it to fd 3, gives itself back a harmless stdin, and execs
/// the supervisor with `LISTEN_PID` set to its own PID, which `exec` keeps.
const HAND_OVER_FD3: &str = r#"exec 3<&0 0</dev/null; export LISTEN_PID=$$; exec "$0" "$@""#;

/// `sh -c HAND_OVER_FD3 handover <args>` with `socket` at fd 3 and `env` added.
fn activated_command(ctx: &Ctx, socket: OwnedFd, env: &[(&str, &str)], args: &[&str]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", HAND_OVER_FD3])
        .arg(handover_exe())
        .args(args)
        .current_dir(ctx.dir.path())
        .env("XDG_RUNTIME_DIR", ctx.dir.path())
        .env("HANDOVER_LOG", "info")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_FDNAMES")
        .envs(env.iter().copied())
        .stdin(Stdio::from(socket));
    cmd
}

/// Starts the supervisor on `listener` (a copy of its fd; the test keeps its own) and waits
/// until it listens.
fn start_activated(
    ctx: &Ctx,
    listener: &TcpListener,
    env: &[(&str, &str)],
    args: &[&str],
) -> Supervisor {
    let fd = OwnedFd::from(listener.try_clone().unwrap());
    let control = ctl(ctx);
    let mut full = vec!["run", "--control", &control];
    full.extend_from_slice(args);
    ctx.launch(&["sh", "-c", HAND_OVER_FD3], &full, |cmd| {
        cmd.envs(env.iter().copied()).stdin(Stdio::from(fd));
    })
}

/// Runs a supervisor expected to refuse to start: its exit status and its output.
fn refused(ctx: &Ctx, socket: OwnedFd, env: &[(&str, &str)], args: &[&str]) -> (i32, String) {
    let out_path = ctx.path("refused.log");
    let out = fs::File::create(&out_path).unwrap();
    let control = ctl(ctx);
    let mut full = vec!["run", "--control", &control];
    full.extend_from_slice(args);
    let child = activated_command(ctx, socket, env, &full)
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    std::mem::forget(child); // reaped here or by the context
    let status = wait_exit(pid, LONG)
        .ok()
        .flatten()
        .map(|e| e.0)
        .expect("the supervisor did not exit");
    assert!(libc::WIFEXITED(status), "status {status:#x}");
    let out = fs::read_to_string(&out_path).unwrap();
    assert!(
        !out.contains("worker v1"),
        "a worker started despite the refusal: {out}"
    );
    (libc::WEXITSTATUS(status), out)
}

/// `systemd-socket-activate` binds the port, waits for the first connection, then execs
/// `handover run`, which serves that socket (matched by its name, `--fdname`): the
/// connection that woke it up is answered, and three upgrades under load fail no request.
#[test]
fn systemd_socket_activate_starts_the_supervisor_and_upgrades_lose_nothing() {
    let ctx = Ctx::new();
    let worker = ctx.write_worker("worker.py", "v1", "serve");
    let control = ctl(&ctx);
    let args = [
        "run",
        "--control",
        &control,
        "--listen",
        "web=127.0.0.1:0",
        "--",
        worker.to_str().unwrap(),
    ];
    // systemd-socket-activate cannot bind port 0: take a free port (another test could take
    // it in between; the launch would then fail with "Address already in use" in the log).
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let listen = addr.to_string();
    // The first request is what makes systemd-socket-activate start the supervisor; it is
    // sent as soon as the port accepts connections.
    let waker = thread::spawn(move || {
        let deadline = Instant::now() + LONG;
        loop {
            match get(addr, "/") {
                Err(Failure::Refused) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(10))
                }
                other => return other,
            }
        }
    });
    let sup = ctx.launch(
        &["systemd-socket-activate", "-l", &listen, "--fdname=web"],
        &args,
        |_| {},
    );
    let first = waker.join().unwrap();
    sup.log.expect(0, "from socket activation", SHORT);
    assert_eq!(
        sup.addr(),
        addr,
        "the supervisor serves the activated socket"
    );
    let first = first.expect("the connection that activated the service is answered");
    assert_eq!(version_of(&first), "v1");

    let load = Load::start(addr, 4);
    load.wait_answers("v1", 20);
    for generation in 2..=4 {
        let version = format!("v{generation}");
        ctx.write_worker("worker.py", &version, "serve");
        let out = ctx.handover(&["upgrade", "--control", &control]);
        assert!(
            out.status.success(),
            "upgrade to {version}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        load.wait_answers(&version, 20);
    }
    let stats = load.finish();
    eprintln!(
        "systemd-socket-activate: {} answers over 3 upgrades, by version {:?}, {} failed",
        stats.ok,
        stats.versions,
        stats.failures.len()
    );
    assert!(
        stats.failures.is_empty(),
        "{} of {} requests failed: {:?}",
        stats.failures.len(),
        stats.ok + stats.failures.len(),
        &stats.failures[..stats.failures.len().min(5)]
    );
    let out = ctx.handover(&["stop", "--control", &control]);
    assert!(out.status.success());
    let status = sup.wait_exit(LONG);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "exit status {status:#x}"
    );
}

/// The test holds the listening socket, as systemd's socket unit does, and starts the
/// supervisor on it twice. Connections made while no supervisor runs wait in the backlog and
/// are all answered by the second one: none is refused, none fails.
#[test]
fn a_socket_held_by_the_parent_outlives_a_supervisor_restart() {
    let ctx = Ctx::new();
    let worker = ctx.write_worker("worker.py", "v1", "serve");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let listen = addr.to_string();
    let args = ["--listen", listen.as_str(), "--", worker.to_str().unwrap()];

    let first = start_activated(&ctx, &listener, &[("LISTEN_FDS", "1")], &args);
    first.log.expect(0, "from socket activation", SHORT);
    assert_eq!(first.addr(), addr);
    assert_eq!(version_of(&get(addr, "/").expect("v1 answers")), "v1");
    signal(first.pid, libc::SIGTERM);
    let status = first.wait_exit(LONG);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "exit status {status:#x}"
    );
    assert!(first.worker_pids().is_empty());

    // Nobody serves now; the socket is still open in this process.
    const WAITING: usize = 20;
    let mut waiting: Vec<TcpStream> = (0..WAITING)
        .map(|i| {
            let mut s = TcpStream::connect_timeout(&addr, SHORT)
                .unwrap_or_else(|e| panic!("connection {i} while no supervisor runs: {e}"));
            s.write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
                .unwrap();
            s.set_read_timeout(Some(LONG)).unwrap();
            s
        })
        .collect();

    ctx.write_worker("worker.py", "v2", "serve");
    let second = start_activated(&ctx, &listener, &[("LISTEN_FDS", "1")], &args);
    assert_eq!(second.addr(), addr);
    let mut answered = 0;
    for (i, s) in waiting.iter_mut().enumerate() {
        let mut answer = String::new();
        s.read_to_string(&mut answer)
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        assert!(
            answer.starts_with("HTTP/1.0 200") && answer.contains("\r\n\r\nv2 pid="),
            "connection {i} made while no supervisor ran: {answer:?}"
        );
        answered += 1;
    }
    eprintln!(
        "{answered} of {WAITING} connections made between the two supervisors answered by v2"
    );
    signal(second.pid, libc::SIGTERM);
    second.wait_exit(LONG);
}

/// The worker sees only what the supervisor passes: its own `LISTEN_PID`, and the socket
/// under the `--listen` name, not the name systemd gave it.
#[test]
fn the_worker_sees_the_supervisors_variables_not_systemds() {
    let ctx = Ctx::new();
    let worker = ctx.write_worker("worker.py", "v1", "serve");
    let wrapper = ctx.path("show-env.sh");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nenv | grep '^LISTEN_' | sed 's/^/worker env: /' >&2\nexec {} \"$@\"\n",
            worker.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let listen = addr.to_string();
    let sup = start_activated(
        &ctx,
        &listener,
        &[("LISTEN_FDS", "1"), ("LISTEN_FDNAMES", "app.socket")],
        &["--listen", listen.as_str(), "--", wrapper.to_str().unwrap()],
    );
    sup.log.expect(0, "is ready (READY=1)", LONG);
    let worker_pid = pid_of(&get(addr, "/").unwrap());
    let shown = sup.log.text();
    assert!(
        shown.contains(&format!(
            "worker env: LISTEN_FDNAMES=tcp_127.0.0.1_{}",
            addr.port()
        )),
        "{shown}"
    );
    assert!(shown.contains("worker env: LISTEN_FDS=1"), "{shown}");
    assert!(
        shown.contains(&format!("worker env: LISTEN_PID={worker_pid}")),
        "{shown}"
    );
    assert!(!shown.contains("app.socket\n"), "{shown}");
}

/// `LISTEN_PID` naming another process means the variables were inherited by accident
/// (`sd_listen_fds(3)`): they are ignored with a warning, the supervisor binds its own
/// socket, and the worker gets fresh variables.
#[test]
fn listen_pid_of_another_process_is_ignored() {
    let ctx = Ctx::new();
    let worker = ctx.write_worker("worker.py", "v1", "serve");
    let sup = ctx.start_with(
        &["--listen", "127.0.0.1:0", "--", worker.to_str().unwrap()],
        |cmd| {
            cmd.env("LISTEN_PID", "1")
                .env("LISTEN_FDS", "1")
                .env("LISTEN_FDNAMES", "stale");
        },
    );
    sup.log.expect(0, "LISTEN_PID=1 is not this process", SHORT);
    assert!(!sup.log.contains("from socket activation"));
    sup.log.expect(0, "is ready (READY=1)", LONG);
    assert_eq!(version_of(&get(sup.addr(), "/").unwrap()), "v1");
}

/// Activation environments that cannot work are refused before any worker starts, with the
/// variable or fd named: exit status 2 for a malformed environment (as the library's
/// servers), 1 when the sockets and the command line disagree.
#[test]
fn bad_activation_is_refused_with_the_reason() {
    let ctx = Ctx::new();
    let worker = ctx.write_worker("worker.py", "v1", "serve");
    let worker = worker.to_str().unwrap();
    let tcp = || {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        (OwnedFd::from(l), port)
    };

    // A name that no --listen asks for, on an address no --listen asks for.
    let (fd, port) = tcp();
    let (code, out) = refused(
        &ctx,
        fd,
        &[("LISTEN_FDS", "1"), ("LISTEN_FDNAMES", "other")],
        &["--listen", "web=127.0.0.1:0", "--", worker],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "socket activation: fd 3 (LISTEN_FDNAMES \"other\", tcp://127.0.0.1:{port}) matches no --listen, by name or by address; add --listen other=tcp://127.0.0.1:{port}"
        )),
        "{out}"
    );

    // The right name on the wrong address.
    let (fd, port) = tcp();
    let (code, out) = refused(
        &ctx,
        fd,
        &[("LISTEN_FDS", "1"), ("LISTEN_FDNAMES", "web")],
        &["--listen", "web=127.0.0.1:1", "--", worker],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("fd 3 (LISTEN_FDNAMES \"web\", tcp://127.0.0.1:{port}) does not fit --listen web=tcp://127.0.0.1:1")),
        "{out}"
    );

    // Proxy mode binds its own address: an activated socket would go unused.
    let (fd, _) = tcp();
    let (code, out) = refused(
        &ctx,
        fd,
        &[("LISTEN_FDS", "1")],
        &["--proxy", "http://127.0.0.1:0", "--", worker, "{port}"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("socket activation passed 1 socket(s), but --proxy binds its own address"),
        "{out}"
    );

    // Garbage in LISTEN_FDS.
    let (fd, _) = tcp();
    let (code, out) = refused(
        &ctx,
        fd,
        &[("LISTEN_FDS", "three")],
        &["--listen", "127.0.0.1:0", "--", worker],
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(
            "handover: socket activation: LISTEN_FDS=\"three\" is not a number of file descriptors"
        ),
        "{out}"
    );

    // More fds announced than passed.
    let (fd, _) = tcp();
    let (code, out) = refused(
        &ctx,
        fd,
        &[("LISTEN_FDS", "2")],
        &["--listen", "127.0.0.1:0", "--", worker],
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("fd 4") && out.contains("is not open"), "{out}");

    // A datagram socket is a `udp://` socket: a stream `--listen` does not take it, and the
    // error says which `--listen` would.
    let udp_socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_addr = udp_socket.local_addr().unwrap();
    let (code, out) = refused(
        &ctx,
        OwnedFd::from(udp_socket),
        &[("LISTEN_FDS", "1")],
        &["--listen", "127.0.0.1:0", "--", worker],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("fd 3")
            && out.contains("matches no --listen")
            && out.contains(&format!("add --listen udp://{udp_addr}")),
        "{out}"
    );

    // A socket that is not listening.
    let (code, out) = refused(
        &ctx,
        OwnedFd::from(std::net::TcpStream::connect(tcp_peer()).unwrap()),
        &[("LISTEN_FDS", "1")],
        &["--listen", "127.0.0.1:0", "--", worker],
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("is a socket that is not listening"), "{out}");
}

/// A listener to connect to, kept open for the test's life.
fn tcp_peer() -> SocketAddr {
    static PEER: std::sync::OnceLock<TcpListener> = std::sync::OnceLock::new();
    PEER.get_or_init(|| TcpListener::bind("127.0.0.1:0").unwrap())
        .local_addr()
        .unwrap()
}
