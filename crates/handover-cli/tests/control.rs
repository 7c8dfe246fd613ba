//! The control socket and the command line: garbage is refused without harm, other users are
//! refused, `status --json` has its documented fields, and bad input is explained.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use handover_testkit::cli_kit::*;

fn exchange(path: &Path, bytes: &[u8]) -> serde_json::Value {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(LONG)).unwrap();
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert_eq!(reply.matches('\n').count(), 1, "one JSON line: {reply:?}");
    serde_json::from_str(&reply).unwrap_or_else(|e| panic!("{e}: {reply:?}"))
}

/// Malformed, unknown and oversized requests each get `{"ok":false,"error":...}` and the
/// supervisor goes on serving; the socket has mode 0600; a second supervisor on the same
/// socket is refused; as root, a request from another uid is refused by SO_PEERCRED.
#[test]
fn the_control_socket_refuses_garbage_and_strangers() {
    let ctx = Ctx::new();
    let worker = ctx.write_worker("worker.py", "v1", "serve");
    let sup = ctx.start(&["--listen", "127.0.0.1:0", "--", worker.to_str().unwrap()]);
    sup.log.expect(0, ") is ready (", LONG);
    let control = ctx.control();
    let mode = std::fs::symlink_metadata(&control)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");

    let long = vec![b'x'; 10_000];
    let cases: [(&[u8], &str); 5] = [
        (b"garbage\n", "not JSON"),
        (b"{\"request\":\"reboot\"}\n", "unknown request \"reboot\""),
        (b"{\"verb\":\"status\"}\n", "no \"request\" field"),
        (b"\n", "empty request"),
        (&long, "too long"),
    ];
    for (input, needle) in cases {
        let reply = exchange(&control, input);
        assert_eq!(reply["ok"], false, "{reply}");
        let error = reply["error"].as_str().unwrap();
        assert!(error.contains(needle), "{error:?} lacks {needle:?}");
    }
    let reply = exchange(&control, b"{\"request\":\"status\"}\n");
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["result"]["state"], "running");
    assert_eq!(version_of(&get(sup.addr(), "/").unwrap()), "v1");

    // Another supervisor with the same control socket: refused, the first one unharmed.
    let out = run_bounded(
        Command::new(handover_exe())
            .args(["run", "--control", control.to_str().unwrap()])
            .args(["--listen", "127.0.0.1:0", "--", worker.to_str().unwrap()]),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("another process is serving this control socket"),
        "{stderr}"
    );
    assert_eq!(ctx.status()["state"], "running");

    if handover::sys::euid() == 0 {
        // Let uid 65534 reach the socket, so that only the peer check stands in its way.
        std::fs::set_permissions(ctx.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&control, std::fs::Permissions::from_mode(0o666)).unwrap();
        let out = run_bounded(
            Command::new(handover_exe())
                .args(["status", "--control", control.to_str().unwrap()])
                .uid(65534)
                .gid(65534),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("permission denied: uid 65534 may not control this server"),
            "{stderr}"
        );
        sup.log.expect(0, "refused a client with uid 65534", LONG);
    }
    assert_eq!(ctx.status()["state"], "running");
}

/// `handover status --json` has the documented fields, before and after an upgrade; the
/// table shows the same.
#[test]
fn status_json_has_the_documented_fields() {
    let ctx = Ctx::new();
    let worker = ctx.write_worker("worker.py", "v1", "serve");
    // No --control: the socket is $XDG_RUNTIME_DIR/handover/web.sock (the harness points
    // XDG_RUNTIME_DIR at the test's directory), which `--name web` finds, and so does a
    // bare `handover status` as the only socket there.
    let sup = ctx.launch(
        &[],
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "--name",
            "web",
            "--",
            worker.to_str().unwrap(),
        ],
        |_| {},
    );
    let dir = ctx.path("handover");
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{} has mode {mode:o}", dir.display());
    std::os::unix::fs::symlink(dir.join("web.sock"), ctx.control()).unwrap();
    let by_name = || {
        let out = ctx.handover(&["status", "--json", "--name", "web"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    assert!(poll_until(LONG, || by_name()["state"] == "running"));
    let out = ctx.handover(&["status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = ctx.wait_status("a ready worker", |s| s["state"] == "running");
    assert_eq!(s["schema_version"], 3);
    assert_eq!(s["kind"], "supervisor");
    assert_eq!(s["name"], "web");
    assert_eq!(s["pid"], sup.pid);
    assert_eq!(s["generation"], 1);
    assert_eq!(s["restarts"], 0);
    assert!(s["uptime_ms"].is_u64());
    assert_eq!(
        s["listeners"],
        serde_json::json!([format!("tcp://{}", sup.addr())])
    );
    assert!(s["last_upgrade"].is_null());
    // Only a library-mode process takes over again from a crashed successor.
    assert!(s["resumed"].is_null(), "{s:#}");
    // No canary runs, none ran.
    assert!(s["canary"].is_null(), "{s:#}");
    let workers = s["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 1, "{s:#}");
    let w = &workers[0];
    assert_eq!(w["generation"], 1);
    assert_eq!(w["state"], "ready");
    assert!(w["uptime_ms"].is_u64());
    let pid = w["pid"].as_i64().unwrap() as i32;
    assert_eq!(pid, pid_of(&get(sup.addr(), "/").unwrap()));

    ctx.write_worker("worker.py", "v2", "serve");
    let out = ctx.handover(&["upgrade", "--control", ctx.control().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = ctx.status();
    let up = &s["last_upgrade"];
    assert_eq!(up["ok"], true, "{s:#}");
    assert_eq!(up["trigger"], "control socket");
    assert_eq!(up["generation"], 2);
    assert!(up["pid"].is_u64() && up["started_unix_ms"].is_u64() && up["duration_ms"].is_u64());
    assert!(up["error"].is_null());
    assert_eq!(s["workers"][0]["generation"], 2, "newest first: {s:#}");

    let out = ctx.handover(&["status", "--control", ctx.control().to_str().unwrap()]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(table.starts_with("web: running, generation 2"), "{table}");
    assert!(table.contains("GEN") && table.contains("ready"), "{table}");
    assert!(
        table.contains("last upgrade: ok to generation 2"),
        "{table}"
    );
}

/// Bad input is explained: a malformed address, a missing program (named), an unknown
/// readiness mode, no server to talk to.
#[test]
fn bad_input_is_explained() {
    let ctx = Ctx::new();
    let control = ctx.control();
    let control = control.to_str().unwrap();
    let cases: [(&[&str], i32, &[&str]); 5] = [
        (
            &["run", "--listen", "localhost", "--", "x"],
            2,
            &["invalid listen address \"localhost\": missing port"],
        ),
        (
            &[
                "run",
                "--control",
                control,
                "--listen",
                "127.0.0.1:0",
                "--",
                "./no-such-server",
            ],
            1,
            &["cannot run ./no-such-server", "No such file"],
        ),
        (
            &[
                "run",
                "--control",
                control,
                "--listen",
                "127.0.0.1:0",
                "--",
                "no-such-server-in-path",
            ],
            1,
            &["no-such-server-in-path: not found in PATH"],
        ),
        (
            &[
                "run",
                "--listen",
                "127.0.0.1:0",
                "--ready",
                "ping",
                "--",
                "x",
            ],
            2,
            &["unknown readiness mode \"ping\""],
        ),
        (
            &["upgrade", "--control", control],
            1,
            &[
                "cannot connect to the control socket",
                "control.sock",
                "is the server running",
            ],
        ),
    ];
    for (args, code, needles) in cases {
        let out = ctx.handover(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        for n in needles {
            assert!(stderr.contains(n), "{args:?}: {stderr:?} lacks {n:?}");
        }
    }
    assert!(
        !ctx.control().exists(),
        "a failed start leaves no control socket"
    );
}
