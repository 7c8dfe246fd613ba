//! `handover run --admin ADDR --lame-duck DUR`, end to end: `/healthz` answers 200 once the
//! worker is ready and all through an upgrade, 503 from `handover stop` on while the worker
//! still serves for the lame duck, `status` shows `lame_duck`, and the supervisor exits once
//! the lame duck and the drain are over. Other paths answer 404.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use handover_testkit::cli_kit::*;

const LAME_DUCK: Duration = Duration::from_secs(3);

/// `200` for a 200, else the status line `get` reported.
fn healthz(admin: SocketAddr) -> String {
    match get(admin, "/healthz") {
        Ok(body) => {
            assert_eq!(body, "ok\n");
            "200".into()
        }
        Err(Failure::Other(e)) => e,
        Err(Failure::Refused) => "refused".into(),
    }
}

fn admin_addr(sup: &Supervisor) -> SocketAddr {
    let line = sup.log.expect(0, "admin: http://", LONG);
    line.split("admin: http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
}

#[test]
fn admin_healthz_follows_start_upgrade_and_lame_duck() {
    let ctx = Ctx::new();
    let worker = ctx.write_worker("worker.py", "v1", "serve");
    let sup = ctx.start(&[
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--lame-duck",
        "3s",
        "--",
        worker.to_str().unwrap(),
    ]);
    let admin = admin_addr(&sup);
    sup.log.expect(0, ") is ready (", LONG);
    assert_eq!(healthz(admin), "200");
    assert!(
        healthz_path_is_404(admin, "/nothing"),
        "other paths answer 404"
    );

    // An upgrade: probes on fresh connections all along see 200.
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut ok, mut bad) = (0usize, Vec::new());
            let until = Instant::now() + LONG;
            while !stop.load(Ordering::SeqCst) && Instant::now() < until {
                match healthz(admin).as_str() {
                    "200" => ok += 1,
                    other => bad.push(other.to_string()),
                }
            }
            (ok, bad)
        })
    };
    ctx.write_worker("worker.py", "v2", "serve");
    let control = ctx.control();
    let out = ctx.handover(&["upgrade", "--control", control.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "upgrade failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stop.store(true, Ordering::SeqCst);
    let (ok, bad) = prober.join().unwrap();
    assert!(bad.is_empty(), "health failed during the upgrade: {bad:?}");
    assert!(ok > 0);
    // Socket mode: the old worker may accept from the shared socket until it acts on its stop
    // signal, so wait until it is gone before asking which version answers.
    ctx.wait_status("the old worker gone", |s| {
        s["workers"].as_array().is_some_and(|w| w.len() == 1)
    });
    assert_eq!(version_of(&get(sup.addr(), "/").unwrap()), "v2");

    // The stop: lame duck first.
    let t0 = Instant::now();
    let out = ctx.handover(&["stop", "--no-wait", "--control", control.to_str().unwrap()]);
    assert!(out.status.success());
    let s = ctx.wait_status("lame_duck", |s| s["state"] == "lame_duck");
    assert!(t0.elapsed() < LAME_DUCK, "{s:#}");
    let h = healthz(admin);
    assert!(h.contains("503"), "/healthz in lame duck: {h}");
    // The worker still takes new connections and answers them.
    for _ in 0..3 {
        assert_eq!(version_of(&get(sup.addr(), "/").unwrap()), "v2");
    }
    assert!(
        t0.elapsed() < LAME_DUCK,
        "the checks ran inside the lame duck ({:?})",
        t0.elapsed()
    );
    let status = sup.wait_exit(LONG);
    assert_eq!(status, 0, "exit status");
    assert!(
        t0.elapsed() >= LAME_DUCK,
        "stopped after {:?}, before the lame duck was over",
        t0.elapsed()
    );
    assert!(sup.log.contains("lame duck over; workers drain"));
}

/// Whether `path` on the admin listener answers 404.
fn healthz_path_is_404(admin: SocketAddr, path: &str) -> bool {
    matches!(get(admin, path), Err(Failure::Other(e)) if e.contains(" 404"))
}
