//! `handover run` with real third-party servers, each in the mode the README recommends for
//! it (crates/handover-cli/README.md, "Writing a worker"): gunicorn with its native systemd
//! socket activation, uvicorn behind `--proxy http://`, a Node.js `http` server on fd 3 with
//! the README's drain (and behind the proxy, without one). Each is upgraded five times while keep-alive and one-request-per-
//! connection clients send requests without pause: not one request may fail.
//!
//! gunicorn and uvicorn come from `$HANDOVER_TEST_VENV/bin` (a virtualenv `.ci/run` fills
//! with pip) or `PATH`, Node.js from `PATH`. A missing one skips its test outside CI and fails
//! it in CI.
//!
//! `THIRD_PARTY_NODE_DRAIN=close` gives the Node server on fd 3 a plain `server.close()`, and
//! `THIRD_PARTY_UVICORN=fd` runs uvicorn on the inherited socket (`--fd 3`) instead of behind
//! the proxy: both lose requests, which is why the README does not recommend them, and shows
//! that these tests see it.

#[path = "third_party/load.rs"]
mod load;

use std::path::{Path, PathBuf};

use handover_testkit::cli_kit::*;

const APP_PY: &str = include_str!("third_party/app.py");
const SERVER_JS: &str = include_str!("third_party/server.js");

/// Clients of each kind: 16 connections at a time, as in the README's figures.
const KEEP_ALIVE_CLIENTS: usize = 12;
const CLOSE_CLIENTS: usize = 4;
const UPGRADES: usize = 5;
/// Answers each generation must give under load before the next upgrade.
const ANSWERS_PER_GENERATION: usize = 200;

/// `name` from the test virtualenv or `PATH`; `None` (the test is skipped) outside CI.
fn tool(name: &str) -> Option<PathBuf> {
    let venv = std::env::var_os("HANDOVER_TEST_VENV")
        .map(|v| Path::new(&v).join("bin").join(name))
        .filter(|p| p.is_file());
    let found = venv.or_else(|| {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            !in_ci(),
            "{name} is missing in CI (.ci/run installs it into $HANDOVER_TEST_VENV)"
        );
        eprintln!("skipped: {name} is not installed (set HANDOVER_TEST_VENV or PATH)");
    }
    found
}

fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"))
}

/// Writes `template` as `<dir>/<name>` with `@VERSION@` (and `@DRAIN@`) filled in, by a
/// rename so that a starting worker never reads half a file.
fn write_versioned(ctx: &Ctx, name: &str, template: &str, version: &str) -> PathBuf {
    write_node(ctx, name, template, version, "snippet")
}

/// [`write_versioned`] with the Node server's `@DRAIN@` too.
fn write_node(ctx: &Ctx, name: &str, template: &str, version: &str, drain: &str) -> PathBuf {
    let text = template
        .replace("@VERSION@", version)
        .replace("@DRAIN@", drain);
    let (path, tmp) = (ctx.path(name), ctx.path(&format!(".{name}.tmp")));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

/// Upgrades `sup` five times under load, rewriting the application (`write(version)`)
/// before each upgrade, then stops it; returns the load's tally after checking it.
fn upgrade_five_times_under_load(
    ctx: &Ctx,
    sup: &Supervisor,
    what: &str,
    write: impl Fn(&str),
) -> load::Tally {
    let control = ctx.control().to_str().unwrap().to_string();
    let load = load::Load::start(sup.addr(), KEEP_ALIVE_CLIENTS, CLOSE_CLIENTS);
    load.wait_answers("v1", ANSWERS_PER_GENERATION, LONG);
    for generation in 2..=UPGRADES + 1 {
        let old = sup.worker_pids();
        let version = format!("v{generation}");
        write(&version);
        let out = ctx.handover(&["upgrade", "--control", &control]);
        assert!(
            out.status.success(),
            "upgrade to {version} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        load.wait_answers(&version, ANSWERS_PER_GENERATION, LONG);
        // The old generation drains and is reaped before the next upgrade.
        for pid in old {
            assert!(
                poll_until(LONG, || proc_stat(pid).is_none()),
                "{what}: the old worker {pid} did not exit"
            );
        }
    }
    let tally = load.finish();
    eprintln!(
        "{what}: {} answers over {UPGRADES} upgrades ({KEEP_ALIVE_CLIENTS} keep-alive and \
         {CLOSE_CLIENTS} close clients, {} connections, {} of them keep-alive), by version \
         {:?}; {} failed: {:?}",
        tally.ok,
        tally.connections,
        tally.keep_alive_connections,
        tally.versions,
        tally.failures.len(),
        &tally.failures[..tally.failures.len().min(5)]
    );
    assert!(
        tally.failures.is_empty(),
        "{what}: {} of {} requests failed; first: {:?}",
        tally.failures.len(),
        tally.ok + tally.failures.len(),
        &tally.failures[..tally.failures.len().min(10)]
    );
    for v in 1..=UPGRADES + 1 {
        assert!(
            tally.versions.contains_key(&format!("v{v}")),
            "v{v} never answered: {:?}",
            tally.versions
        );
    }
    let out = ctx.handover(&["stop", "--control", &control]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = sup.wait_exit(LONG);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{what}: the supervisor's exit status {status:#x}"
    );
    tally
}

/// gunicorn takes the socket by its own systemd socket activation (`LISTEN_FDS`,
/// `LISTEN_PID`) and says `READY=1` itself; `SIGTERM` is its graceful stop. gthread workers
/// keep connections alive, so the keep-alive clients are really kept.
#[test]
fn gunicorn_upgraded_five_times_under_load_without_a_failed_request() {
    let Some(gunicorn) = tool("gunicorn") else {
        return;
    };
    let ctx = Ctx::new();
    write_versioned(&ctx, "app.py", APP_PY, "v1");
    let dir = ctx.dir.path().to_str().unwrap().to_string();
    let sup = ctx.start_with(
        &[
            "--listen",
            "127.0.0.1:0",
            "--drain-timeout",
            "30s",
            "--",
            gunicorn.to_str().unwrap(),
            "--preload",
            "--workers",
            "2",
            "--worker-class",
            "gthread",
            "--threads",
            "8",
            "--chdir",
            &dir,
            "app:wsgi",
        ],
        |cmd| {
            // A rewritten app.py of the same size in the same second must not be read
            // from a stale .pyc.
            cmd.env("PYTHONDONTWRITEBYTECODE", "1");
        },
    );
    sup.log.expect(0, "is ready (READY=1)", LONG);
    upgrade_five_times_under_load(&ctx, &sup, "gunicorn", |v| {
        write_versioned(&ctx, "app.py", APP_PY, v);
    });
}

/// With `--preload` gunicorn imports the application before its `READY=1`, so a new
/// version that cannot be imported is a rolled-back upgrade, not a crash after it was ready.
#[test]
fn gunicorn_that_cannot_import_its_app_is_rolled_back() {
    let Some(gunicorn) = tool("gunicorn") else {
        return;
    };
    let ctx = Ctx::new();
    write_versioned(&ctx, "app.py", APP_PY, "v1");
    let dir = ctx.dir.path().to_str().unwrap().to_string();
    let sup = ctx.start_with(
        &[
            "--listen",
            "127.0.0.1:0",
            "--",
            gunicorn.to_str().unwrap(),
            "--preload",
            "--worker-class",
            "gthread",
            "--chdir",
            &dir,
            "app:wsgi",
        ],
        |cmd| {
            cmd.env("PYTHONDONTWRITEBYTECODE", "1");
        },
    );
    sup.log.expect(0, "is ready (READY=1)", LONG);
    write_versioned(&ctx, "app.py", "raise SystemExit('broken release')\n", "v2");
    let control = ctx.control().to_str().unwrap().to_string();
    let out = ctx.handover(&["upgrade", "--control", &control]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the broken upgrade succeeded");
    assert!(err.contains("before it was ready"), "{err}");
    // v1 still answers.
    let load = load::Load::start(sup.addr(), 0, 1);
    load.wait_answers("v1", 5, LONG);
    let tally = load.finish();
    assert!(tally.failures.is_empty(), "{tally:?}");
}

/// uvicorn behind `--proxy http://`: its own stop closes keep-alive connections with
/// requests already on the wire (see the README), the proxy's hand-over does not depend on it.
#[test]
fn uvicorn_upgraded_five_times_under_load_without_a_failed_request() {
    let Some(uvicorn) = tool("uvicorn") else {
        return;
    };
    let ctx = Ctx::new();
    write_versioned(&ctx, "app.py", APP_PY, "v1");
    let dir = ctx.dir.path().to_str().unwrap().to_string();
    let uvicorn = uvicorn.to_str().unwrap();
    let on_fd = std::env::var("THIRD_PARTY_UVICORN").as_deref() == Ok("fd");
    let common = ["--drain-timeout", "30s", "--", uvicorn, "--app-dir", &dir];
    let args: Vec<&str> = if on_fd {
        // Not recommended: shown to lose requests (THIRD_PARTY_UVICORN=fd).
        let mut a = vec!["--listen", "127.0.0.1:0", "--ready", "delay:2s"];
        a.extend(common);
        a.extend(["--fd", "3", "app:asgi"]);
        a
    } else {
        let mut a = vec!["--proxy", "http://127.0.0.1:0"];
        a.extend(common);
        a.extend(["--host", "127.0.0.1", "--port", "{port}", "app:asgi"]);
        a
    };
    let sup = ctx.start_with(&args, |cmd| {
        cmd.env("PYTHONDONTWRITEBYTECODE", "1");
    });
    sup.log.expect(0, "is ready (", LONG);
    upgrade_five_times_under_load(&ctx, &sup, "uvicorn", |v| {
        write_versioned(&ctx, "app.py", APP_PY, v);
    });
}

/// How the Node server on fd 3 is made ready: the supervisor's handshake (`--ready notify`,
/// the default, what the README recommends) or, with `THIRD_PARTY_NODE_READY=http`, its own
/// health port (`--ready http:/healthz`): no handshake, so old and new versions overlap.
fn node_readiness() -> (Vec<&'static str>, &'static str) {
    match std::env::var("THIRD_PARTY_NODE_READY").as_deref() {
        Ok("http") => (
            vec!["--ready", "http:/healthz"],
            "is ready (GET http://127.0.0.1:",
        ),
        _ => (vec![], "is ready (READY on its handshake channel)"),
    }
}

/// `handover run --listen 127.0.0.1:0` of the Node server on fd 3, ready as
/// [`node_readiness`] says, logging at debug level (the hand-off's steps).
fn start_node_on_fd3(ctx: &Ctx, node: &Path, drain: &str) -> Supervisor {
    let script = write_node(ctx, "server.js", SERVER_JS, "v1", drain);
    let (ready, ready_line) = node_readiness();
    let mut args = vec!["--listen", "127.0.0.1:0"];
    args.extend(ready);
    args.extend(["--drain-timeout", "30s", "--"]);
    args.extend([node.to_str().unwrap(), script.to_str().unwrap()]);
    let sup = ctx.start_with(&args, |cmd| {
        cmd.env("HANDOVER_LOG", "debug");
    });
    sup.log.expect(0, ready_line, LONG);
    sup
}

/// A Node.js `http` server on fd 3 (`server.listen({ fd: 3 })`) speaking the supervisor's
/// handshake, with the README's drain: stop accepting, `Connection: close` on every answer,
/// idle connections closed after a grace.
#[test]
fn node_http_server_upgraded_five_times_under_load_without_a_failed_request() {
    let Some(node) = tool("node") else {
        return;
    };
    let drain = std::env::var("THIRD_PARTY_NODE_DRAIN").unwrap_or_else(|_| "snippet".into());
    let ctx = Ctx::new();
    let sup = start_node_on_fd3(&ctx, &node, &drain);
    upgrade_five_times_under_load(&ctx, &sup, "node", |v| {
        write_node(&ctx, "server.js", SERVER_JS, v, &drain);
    });
}

/// The README's Node server on fd 3, ten upgrades while eight clients open a connection per
/// request without pause: with the handshake (it accepts once told, and says when it has
/// stopped accepting) not one connection made after a new worker's first answer is answered
/// by an older one. `THIRD_PARTY_NODE_READY=http` (no handshake) shows the overlap this
/// closes: the old worker accepts until its SIGTERM handler has run.
#[test]
fn node_http_server_speaking_the_handshake_takes_over_without_a_stale_answer() {
    let Some(node) = tool("node") else {
        return;
    };
    let ctx = Ctx::new();
    let sup = start_node_on_fd3(&ctx, &node, "snippet");
    upgrade_without_a_stale_answer(&ctx, &sup, 10, LONG, |i| {
        write_node(
            &ctx,
            "server.js",
            SERVER_JS,
            &format!("v{}", i + 2),
            "snippet",
        );
    });
    // Each old worker said `C` (Node sends no `STOPPING=1`): the new one was let go then, not
    // at the old one's exit or the hand-off's 1 s bound.
    let said = sup
        .log
        .lines()
        .iter()
        .filter(|l| l.contains("has stopped accepting"))
        .count();
    assert_eq!(said, 10, "old workers that said C, of 10");
}

/// The same Node.js server behind `--proxy http://`, with nothing but a plain
/// `server.close()` at its stop (which on fd 3 loses requests): the proxy loses none.
#[test]
fn node_http_server_behind_the_proxy_needs_no_drain_code() {
    let Some(node) = tool("node") else {
        return;
    };
    let ctx = Ctx::new();
    let script = write_node(&ctx, "server.js", SERVER_JS, "v1", "close");
    let sup = ctx.start(&[
        "--proxy",
        "http://127.0.0.1:0",
        "--drain-timeout",
        "30s",
        "--",
        node.to_str().unwrap(),
        script.to_str().unwrap(),
    ]);
    sup.log.expect(0, "is ready (connected to 127.0.0.1:", LONG);
    upgrade_five_times_under_load(&ctx, &sup, "node behind the proxy", |v| {
        write_node(&ctx, "server.js", SERVER_JS, v, "close");
    });
}
