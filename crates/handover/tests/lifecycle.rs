//! What the outside world sees across generations: the PID file, sd_notify messages and unix
//! socket listeners.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use handover_testkit::hello_kit::*;

fn read_pid_file(path: &Path) -> Result<i32, String> {
    let s = fs::read_to_string(path).map_err(|e| format!("read: {e}"))?;
    s.trim().parse().map_err(|_| format!("not a pid: {s:?}"))
}

fn wait_pid_file(path: &Path, pid: i32) {
    let mut last = Err(String::new());
    let ok = poll_until(SHORT, || {
        last = read_pid_file(path);
        last == Ok(pid)
    });
    assert!(ok, "pid file {} never said {pid}: {last:?}", path.display());
}

/// The PID file names each generation in turn (never missing or partial while the server runs),
/// survives the old generation's exit, and is removed at the final stop.
#[test]
fn pid_file_follows_generations_and_is_removed_at_stop() {
    let ctx = Ctx::new();
    let pid_file = ctx.path("hello.pid");
    let mut server = ctx.start(&["--pid-file", pid_file.to_str().unwrap()]);
    wait_pid_file(&pid_file, server.pid);

    // Watch the file while upgrades happen.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::<Result<i32, String>>::new()));
    let watcher = {
        let (stop, seen, path) = (stop.clone(), seen.clone(), pid_file.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let r = read_pid_file(&path);
                let mut seen = seen.lock().unwrap();
                if seen.last() != Some(&r) {
                    seen.push(r);
                }
                drop(seen);
                thread::sleep(std::time::Duration::from_millis(1));
            }
        })
    };

    let mut pids = vec![server.pid];
    let mut version = Version::V1;
    for _ in 0..3 {
        version = version.other();
        ctx.install(version);
        let (old, new) = server.upgrade(libc::SIGUSR2);
        pids.push(new);
        wait_pid_file(&pid_file, new);
        // `upgrade` waited for the old generation to exit: it must not have removed the file.
        assert!(!is_alive(old));
        assert_eq!(
            read_pid_file(&pid_file),
            Ok(new),
            "pid file after pid {old} exited"
        );
    }
    stop.store(true, Ordering::SeqCst);
    watcher.join().unwrap();
    let seen = seen.lock().unwrap().clone();
    let bad: Vec<_> = seen
        .iter()
        .filter(|r| !matches!(r, Ok(p) if pids.contains(p)))
        .collect();
    assert!(
        bad.is_empty(),
        "the pid file was missing or wrong during upgrades: {bad:?} (sequence {seen:?}, generations {pids:?})"
    );

    let st = server.stop();
    assert!(st.success(), "stop of generation {}: {st:?}", server.pid);
    assert!(
        !pid_file.exists(),
        "pid file still there after the final stop: {:?}",
        fs::read_to_string(&pid_file)
    );
}

/// READY=1 at start, RELOADING=1 when an upgrade starts, MAINPID=<new> and READY=1 from the new
/// generation, STOPPING=1 at the graceful stop, in that order.
#[test]
fn notify_socket_follows_the_lifecycle() {
    let ctx = Ctx::new();
    let notify = Notify::bind(ctx.path("notify.sock"));
    let mut cmd = ctx.hello_command();
    cmd.args(["--listen", "127.0.0.1:0"])
        .env("NOTIFY_SOCKET", &notify.path);
    let mut server = ctx.start_with(cmd, 1);
    let first = server.pid;
    let ready = notify.expect_field(0, "READY=1");

    ctx.install(Version::V2);
    let (old, new) = server.upgrade(libc::SIGUSR2);
    assert_eq!(old, first);
    let reloading = notify.expect_field(ready + 1, "RELOADING=1");
    let mainpid = notify.expect_field(reloading + 1, &format!("MAINPID={new}"));
    let ready2 = notify.expect_field(reloading + 1, "READY=1");
    assert!(
        ready2 >= mainpid,
        "READY=1 from the new generation came before MAINPID={new}: {:?}",
        notify.messages()
    );

    // The old generation drains and exits after the handover: it must not tell the service
    // manager that the service is stopping.
    let before_stop = notify.len();
    let msgs = notify.messages();
    assert!(
        !msgs.iter().any(|m| m.lines().any(|l| l == "STOPPING=1")),
        "STOPPING=1 sent before the final stop (by the old generation?): {msgs:?}"
    );

    let st = server.stop();
    assert!(st.success(), "{st:?}");
    notify.expect_field(before_stop, "STOPPING=1");
}

/// A unix socket listener is handed over (the file stays while generations change, new
/// connections keep working under load) and removed at the final stop.
#[test]
fn unix_socket_listener_survives_upgrades_and_is_removed_at_stop() {
    let ctx = Ctx::new();
    let sock = ctx.path("s.sock");
    let mut cmd = ctx.hello_command();
    cmd.arg("--listen").arg(format!("unix:{}", sock.display()));
    let mut server = ctx.start_with(cmd, 1);
    assert_eq!(server.addr(), &Addr::Unix(sock.clone()));
    assert_eq!(server.hello().0, V1_GREETING);

    let load = Load::start(server.addr(), 2, LoadMode::Close);
    load.wait_more(20);
    let mut version = Version::V1;
    for _ in 0..2 {
        version = version.other();
        ctx.install(version);
        let (old, new) = server.upgrade(libc::SIGUSR2);
        assert!(!is_alive(old));
        assert!(sock.exists(), "socket file removed when pid {old} exited");
        assert_eq!(server.hello(), (version.greeting().to_string(), new));
        load.wait_seen(new);
    }
    let stats = load.finish();
    stats.assert_no_failures();

    let st = server.stop();
    assert!(st.success(), "{st:?}");
    assert!(!sock.exists(), "socket file left after the final stop");
}

/// Two listeners (tcp and unix) are both handed over, at the same addresses.
#[test]
fn tcp_and_unix_listeners_are_both_handed_over() {
    let ctx = Ctx::new();
    let sock = ctx.path("both.sock");
    let mut cmd = ctx.hello_command();
    cmd.args(["--listen", "127.0.0.1:0", "--listen"])
        .arg(format!("unix:{}", sock.display()));
    let mut server = ctx.start_with(cmd, 2);
    let (tcp, unix) = (server.tcp_addr().clone(), server.unix_addr().clone());
    assert_eq!(unix, Addr::Unix(sock.clone()));

    ctx.install(Version::V2);
    let (_, new) = server.upgrade(libc::SIGUSR2);
    for addr in [&tcp, &unix] {
        assert_eq!(
            hello_at(addr).unwrap_or_else(|e| panic!("{addr}: {e}")),
            (V2_GREETING.to_string(), new),
            "{addr}"
        );
    }
    let fds = fd_targets(new);
    let listeners = fds.iter().filter(|t| t.contains("socket:")).count();
    assert!(listeners >= 2, "new generation fds: {fds:#?}");

    let st = server.stop();
    assert!(st.success(), "{st:?}");
    assert!(!sock.exists(), "socket file left after the final stop");
}
