//! QUIC across upgrades (feature `quic`, `examples/h3.rs`): real `h3` processes on loopback,
//! certificates made per test, upgrades by `SIGUSR2`, HTTP/3 clients from the kit (quinn + h3)
//! and aioquic.
//!
//! - one connection, a request every 50 ms, through 10 upgrades: the same connection, every
//!   request answered by the generation that holds it;
//! - HTTP/3 load through 10 upgrades: nothing fails, every connection left after GOAWAY is
//!   closed with `H3_NO_ERROR`, each old process exits long before its drain deadline;
//! - the same without forwarding loses requests (the tests can fail);
//! - a failed upgrade with connections open loses none of them;
//! - an idle connection's PINGs are still answered by the old generation after the switch;
//! - a first flight of two datagrams split by the switch completes with the old generation;
//! - aioquic, a second HTTP/3 implementation, keeps its connection through an upgrade.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use handover_testkit::h3::{
    client_config_alpn, client_endpoint, h3_command, setup_h3, start_h3, upgrade_h3, H3Conn,
    H3Load, Pinger, Relay, IDLE_TIMEOUT,
};
use handover_testkit::hello_kit::*;
use handover_testkit::tls::Pki;

const UPGRADES: usize = 10;

#[test]
fn one_connection_survives_ten_upgrades() {
    let ctx = Ctx::new();
    let (pki, config) = setup_h3(&ctx);
    // The old generations keep serving their connections (no GOAWAY) for the whole test.
    let cmd = h3_command(
        &ctx,
        &pki,
        &["--goaway-after", "120s", "--drain-timeout", "120s"],
    );
    let (mut server, addr) = start_h3(&ctx, cmd, &config);
    let first = server.pid;
    let pinger = Pinger::start(addr, config.clone(), Duration::from_millis(50));
    pinger.wait_more(5);
    let mut generations = vec![first];
    for _ in 0..UPGRADES {
        let (_, new) = upgrade_h3(&mut server, addr, &config);
        generations.push(new);
        // Requests on the old connection after the switch: forwarded to the first generation.
        pinger.wait_more(5);
    }
    let st = pinger.finish();
    let text = server.log.text();
    assert!(st.failures.is_empty(), "{:?}\n{text}", st.failures);
    assert!(!st.goaway, "the connection was sent GOAWAY\n{text}");
    assert!(st.open_at_end, "the connection closed\n{text}");
    assert_eq!(st.stable_ids.0, st.stable_ids.1);
    assert!(
        st.answers.len() >= 5 * (UPGRADES + 1),
        "{} answers",
        st.answers.len()
    );
    assert!(
        st.answers.iter().all(|&p| p == first),
        "answers not all from pid {first}: {:?}",
        st.answers
    );
    // Its connection closed, the first generation drains; the others had none left.
    for &pid in &generations[..UPGRADES] {
        server.wait_exited_ok(pid);
    }
    assert!(server.stop().success(), "{}", server.log.text());
}

/// HTTP/3 load through `upgrades` upgrades of `h3 <extra>`; what it saw, and the pids.
fn load_through_upgrades(
    extra: &[&str],
    upgrades: usize,
    drain: Duration,
) -> (handover_testkit::h3::H3Report, Vec<i32>, Server) {
    let ctx = Ctx::new();
    let (pki, config) = setup_h3(&ctx);
    let drain_arg = format!("{}s", drain.as_secs());
    let mut args = vec!["--drain-timeout", &drain_arg];
    args.extend_from_slice(extra);
    let (mut server, addr) = start_h3(&ctx, h3_command(&ctx, &pki, &args), &config);
    let load = H3Load::start(addr, config.clone(), 2, 16);
    load.wait_more(200);
    let mut generations = vec![server.pid];
    // The next upgrade does not wait for the old generation to exit: several drain at once,
    // each forwarded to by every newer one.
    let mut draining = Vec::new();
    for _ in 0..upgrades {
        let old = server.pid;
        let from = server.log.len();
        signal(old, libc::SIGUSR2);
        let new = server.wait_upgrade_complete(from, old);
        draining.push((old, Instant::now()));
        server.pid = new;
        generations.push(new);
        load.wait_seen(new);
        load.wait_more(100);
    }
    // Each old generation exits within its drain deadline.
    for (old, handed_over) in draining {
        let left = (handed_over + drain + SHORT).saturating_duration_since(Instant::now());
        server.wait_exited_ok_within(old, left);
    }
    let report = load.finish();
    assert!(server.stop().success(), "{}", server.log.text());
    // Keep the processes' logs in the report's message.
    drop(ctx);
    (report, generations, server)
}

#[test]
fn http3_load_through_ten_upgrades_loses_nothing() {
    let drain = Duration::from_secs(20);
    let (report, generations, server) = load_through_upgrades(&[], UPGRADES, drain);
    eprintln!("h3 load: {}", report.summary());
    let text = server.log.text();
    assert!(
        report.stats.failures.is_empty(),
        "{}\n{text}",
        report.summary()
    );
    for pid in &generations {
        assert!(
            report.stats.by_pid.contains_key(pid),
            "pid {pid} answered nothing: {}",
            report.summary()
        );
    }
    // Each old generation sent GOAWAY and closed its connections with H3_NO_ERROR.
    assert!(report.clean_closes >= UPGRADES, "{}", report.summary());
    // Each exited once its connections were gone, not at the deadline.
    assert_eq!(
        server
            .log
            .count(|l| l.contains(", 0 connections abandoned")),
        UPGRADES + 1,
        "{text}"
    );
}

#[test]
fn without_forwarding_the_same_load_loses_requests() {
    let drain = Duration::from_secs(3);
    let (report, _, server) = load_through_upgrades(&["--no-quic-forwarding"], 3, drain);
    eprintln!("h3 load without forwarding: {}", report.summary());
    assert!(
        !report.stats.failures.is_empty(),
        "nothing failed without forwarding: the test cannot tell\n{}\n{}",
        report.summary(),
        server.log.text()
    );
}

#[test]
fn a_failed_upgrade_loses_no_quic_connection() {
    let ctx = Ctx::new();
    let (pki, config) = setup_h3(&ctx);
    let (server, addr) = start_h3(&ctx, h3_command(&ctx, &pki, &[]), &config);
    let pid = server.pid;
    let pinger = Pinger::start(addr, config.clone(), Duration::from_millis(50));
    let load = H3Load::start(addr, config.clone(), 1, 8);
    load.wait_more(200);
    pinger.wait_more(3);
    // The next binary exits before it is ready: the upgrade is rolled back.
    let real = ctx.path("h3.real");
    std::fs::rename(ctx.path("h3"), &real).unwrap();
    std::fs::write(ctx.path("h3"), "#!/bin/sh\nexit 3\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(ctx.path("h3"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let from = server.log.len();
    server.signal(libc::SIGUSR2);
    let why = server.wait_upgrade_failed(from, LONG);
    assert!(why.contains("status 3"), "{why}");
    load.wait_more(200);
    pinger.wait_more(5);
    let report = load.finish();
    let st = pinger.finish();
    let text = server.log.text();
    assert!(
        report.stats.failures.is_empty(),
        "{}\n{text}",
        report.summary()
    );
    assert_eq!(report.stats.by_pid.keys().collect::<Vec<_>>(), vec![&pid]);
    assert!(st.failures.is_empty() && !st.goaway, "{st:?}\n{text}");
    assert!(st.answers.iter().all(|&p| p == pid));
    // And it still upgrades.
    std::fs::rename(&real, ctx.path("h3")).unwrap();
    let mut server = server;
    let (old, _) = upgrade_h3(&mut server, addr, &config);
    server.wait_exited_ok(old);
    assert!(server.stop().success(), "{}", server.log.text());
}

/// An idle connection opened before the switch, on a runtime of the test's: whether its
/// keep-alive PINGs are still answered after it (then it outlives several idle timeouts).
fn idle_connection_after_switch(extra: &[&str]) -> (bool, String) {
    let ctx = Ctx::new();
    let (pki, config) = setup_h3(&ctx);
    let mut args = vec!["--goaway-after", "60s", "--drain-timeout", "60s"];
    args.extend_from_slice(extra);
    let (mut server, addr) = start_h3(&ctx, h3_command(&ctx, &pki, &args), &config);
    let first = server.pid;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let endpoint = rt.block_on(async { client_endpoint(addr) });
    let mut conn = rt
        .block_on(H3Conn::connect(&endpoint, addr, &config))
        .unwrap();
    let (status, body) = rt.block_on(conn.get("/")).unwrap();
    assert_eq!(
        (status, body.ends_with(&format!("pid={first}"))),
        (200, true),
        "{body}"
    );
    upgrade_h3(&mut server, addr, &config);
    // Only PINGs (and their ACKs) from now on: several idle timeouts' worth of them.
    let before = conn.quic.stats();
    let alive = poll_until(IDLE_TIMEOUT * 3, || {
        let now = conn.quic.stats();
        conn.quic.close_reason().is_some()
            || now.frame_tx.ping
                >= before.frame_tx.ping + 2 * (IDLE_TIMEOUT.as_millis() as u64 / 500)
    }) && conn.quic.close_reason().is_none();
    let end = conn.quic.stats();
    let seen = format!(
        "close reason {:?}; PINGs sent {} -> {}, datagrams received {} -> {}",
        conn.quic.close_reason(),
        before.frame_tx.ping,
        end.frame_tx.ping,
        before.udp_rx.datagrams,
        end.udp_rx.datagrams
    );
    if alive {
        // And it still carries requests, to the generation that holds it.
        let (status, body) = rt.block_on(conn.get("/")).unwrap();
        assert_eq!(
            (status, body.ends_with(&format!("pid={first}"))),
            (200, true),
            "{body}"
        );
    }
    drop(conn);
    drop(ctx);
    (alive, seen)
}

#[test]
fn pings_on_an_old_connection_are_answered_after_the_switch() {
    let (alive, seen) = idle_connection_after_switch(&[]);
    assert!(alive, "the idle connection died after the switch: {seen}");
    // The same without forwarding: nobody answers its PINGs, it times out.
    let (alive, seen) = idle_connection_after_switch(&["--no-quic-forwarding"]);
    assert!(
        !alive,
        "the idle connection lived on without forwarding: {seen}"
    );
}

/// A ClientHello that spans two datagrams: many long ALPN entries after `h3`.
fn big_first_flight(pki: &Pki) -> quinn::ClientConfig {
    let filler: Vec<Vec<u8>> = (0..8u8).map(|i| vec![b'a' + i; 200]).collect();
    let mut alpn: Vec<&[u8]> = vec![b"h3"];
    alpn.extend(filler.iter().map(|f| f.as_slice()));
    client_config_alpn(pki, &alpn)
}

/// A first flight split by the switch: the first datagram reaches the serving generation,
/// the rest arrives after the upgrade. Which pid answers on that connection (or why none),
/// the old pid and the new.
fn split_first_flight(extra: &[&str]) -> (Result<i32, String>, i32, i32) {
    let ctx = Ctx::new();
    let (pki, config) = setup_h3(&ctx);
    let mut args = vec!["--goaway-after", "60s"];
    args.extend_from_slice(extra);
    let (mut server, addr) = start_h3(&ctx, h3_command(&ctx, &pki, &args), &config);
    let old = server.pid;
    let relay = Relay::start(addr, 1);
    let big = big_first_flight(&pki);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let endpoint = rt.block_on(async { client_endpoint(addr) });
    let relay_addr = relay.addr;
    let handshake = rt.spawn(async move {
        let mut conn = H3Conn::connect(&endpoint, relay_addr, &big).await?;
        conn.get("/").await.map_err(|e| format!("{e:?}"))
    });
    // The client's second datagram is held, and the server has answered the first (an ACK of
    // its Initial): the handshake is under way at this generation.
    assert!(
        poll_until(LONG, || relay.held() >= 1 && relay.to_client() >= 1),
        "no split first flight: held {}, to the client {}",
        relay.held(),
        relay.to_client()
    );
    let (_, new) = upgrade_h3(&mut server, addr, &config);
    relay.release();
    let answered = rt.block_on(handshake).unwrap().and_then(|(status, body)| {
        let pid = body.rsplit_once("pid=").and_then(|(_, p)| p.parse().ok());
        match (status, pid) {
            (200, Some(p)) => Ok(p),
            _ => Err(format!("status {status} body {body:?}")),
        }
    });
    drop(ctx);
    (answered, old, new)
}

#[test]
fn a_first_flight_split_by_the_switch_completes_with_the_old_generation() {
    let (answered, old, new) = split_first_flight(&[]);
    assert_eq!(
        answered,
        Ok(old),
        "the handshake begun by pid {old} did not complete there (new pid {new})"
    );
    // Without forwarding the rest of the flight goes to the new generation: the handshake
    // begun by the old one cannot complete there.
    let (answered, old, _) = split_first_flight(&["--no-quic-forwarding"]);
    assert_ne!(
        answered,
        Ok(old),
        "completed with the old generation without forwarding"
    );
}

/// aioquic (PyPI), another HTTP/3 implementation: `GET /`, an upgrade, `GET /` again on the
/// same connection (answered by the old generation), then a new connection (the new one).
#[test]
fn aioquic_keeps_its_connection_through_an_upgrade() {
    let Some(python) = aioquic_python() else {
        return;
    };
    let ctx = Ctx::new();
    let (pki, config) = setup_h3(&ctx);
    let cmd = h3_command(&ctx, &pki, &["--goaway-after", "60s"]);
    let (mut server, addr) = start_h3(&ctx, cmd, &config);
    let ca = ctx.path("ca.pem");
    std::fs::write(&ca, pki.ca_pem()).unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../handover-testkit/fixtures/h3_client.py"
    );
    let mut child = Command::new(python)
        .arg(script)
        .args(["--port", &addr.port().to_string(), "--ca"])
        .arg(&ca)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the aioquic client");
    let mut stdin = child.stdin.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next = |what: &str| {
        rx.recv_timeout(LONG)
            .unwrap_or_else(|e| panic!("no answer from aioquic for {what}: {e}"))
    };
    let old = server.pid;
    assert_eq!(
        next("the first GET"),
        format!("200 Welcome Server pid={old}")
    );
    let (_, new) = upgrade_h3(&mut server, addr, &config);
    writeln!(stdin, "again").unwrap();
    assert_eq!(
        next("a GET on the same connection"),
        format!("200 Welcome Server pid={old}")
    );
    writeln!(stdin, "new").unwrap();
    assert_eq!(
        next("a GET on a new connection"),
        format!("200 Welcome Server pid={new}")
    );
    drop(stdin);
    let st = child.wait().unwrap();
    assert!(st.success(), "aioquic client: {st:?}");
    // Its connection closed by the client, the old generation drains and exits.
    server.wait_exited_ok(old);
    assert!(server.stop().success(), "{}", server.log.text());
}

/// The venv's Python when it has aioquic (`.ci/run` installs it); `None` (skipped) outside CI.
fn aioquic_python() -> Option<std::path::PathBuf> {
    let venv =
        std::env::var_os("HANDOVER_TEST_VENV").unwrap_or_else(|| "/opt/handover-test-venv".into());
    let python = std::path::Path::new(&venv).join("bin/python");
    let has = Command::new(&python)
        .args(["-c", "import aioquic"])
        .status()
        .is_ok_and(|s| s.success());
    if has {
        return Some(python);
    }
    assert!(
        !in_ci(),
        "aioquic is missing in CI (.ci/run installs it into $HANDOVER_TEST_VENV)"
    );
    eprintln!("skipped: aioquic is not installed in {}", python.display());
    None
}

// ---------------------------------------------------------------------------------------------
// Figures (not a test: measurements for the README, run by hand)
// ---------------------------------------------------------------------------------------------

/// The README's QUIC figures, on whatever machine runs it:
///
/// ```text
/// HANDOVER_E2E_RELEASE=1 cargo test --release -p handover --features quic --test quic \
///     -- --ignored --nocapture figures
/// ```
///
/// 1. steady HTTP/3 throughput and p99 latency, handover's endpoint (forwarding compiled in)
///    against `--plain-quinn` on the same address, 5 interleaved pairs of runs;
/// 2. the forwarding path's added latency: sequential requests on one connection before the
///    switch (read by its own generation) and after it (every client datagram forwarded);
/// 3. failed requests of the HTTP/3 load through 5 upgrades, with and without forwarding.
#[test]
#[ignore = "measurements for the README; run by hand (see the doc comment)"]
fn figures() {
    let secs = std::env::var("H3_FIGURES_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5u64);
    let pairs = std::env::var("H3_FIGURES_PAIRS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5usize);
    let mut runs: Vec<(f64, Duration, f64, Duration)> = Vec::new();
    for _ in 0..pairs {
        let (t_h, p_h) = steady(&[], secs);
        let (t_p, p_p) = steady(&["--plain-quinn"], secs);
        eprintln!(
            "pair: handover {t_h:.0} req/s p99 {p_h:?}; plain quinn {t_p:.0} req/s p99 {p_p:?}"
        );
        runs.push((t_h, p_h, t_p, p_p));
    }
    let median_f = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let median_d = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let ratios: Vec<f64> = runs.iter().map(|r| r.0 / r.2).collect();
    eprintln!(
        "FIGURE steady: handover median {:.0} req/s (p99 {:?}), plain quinn median {:.0} req/s (p99 {:?}); median ratio of pairs {:.3} ({ratios:.3?})",
        median_f(runs.iter().map(|r| r.0).collect()),
        median_d(runs.iter().map(|r| r.1).collect()),
        median_f(runs.iter().map(|r| r.2).collect()),
        median_d(runs.iter().map(|r| r.3).collect()),
        median_f(ratios.clone()),
    );

    let (before, after) = forwarded_latency(400);
    eprintln!(
        "FIGURE forwarding: sequential GET / on one connection, p50 {:?} -> {:?} (+{:?}), p99 {:?} -> {:?}",
        quantile(&before, 0.5),
        quantile(&after, 0.5),
        quantile(&after, 0.5).saturating_sub(quantile(&before, 0.5)),
        quantile(&before, 0.99),
        quantile(&after, 0.99),
    );

    for extra in [&[][..], &["--no-quic-forwarding"][..]] {
        let (report, _, _) = load_through_upgrades(extra, 5, Duration::from_secs(5));
        eprintln!(
            "FIGURE upgrades {extra:?}: 5 upgrades, {} ok, {} failed {:?}",
            report.stats.ok,
            report.stats.failures.len(),
            handover_testkit::h3::failures_by_kind(&report.stats)
        );
    }
}

/// HTTP/3 load for `secs` against a fresh `h3 <extra>`: throughput and p99.
fn steady(extra: &[&str], secs: u64) -> (f64, Duration) {
    let ctx = Ctx::new();
    let (pki, config) = setup_h3(&ctx);
    let (server, addr) = start_h3(&ctx, h3_command(&ctx, &pki, extra), &config);
    // A warm-up, then the measured run (a fixed length: this is a measurement).
    let warm = H3Load::start(addr, config.clone(), 1, 16);
    warm.wait_more(200);
    let warm = warm.finish();
    assert!(warm.stats.failures.is_empty(), "{}", warm.summary());
    let load = H3Load::start(addr, config, 1, 16);
    std::thread::sleep(Duration::from_secs(secs));
    let report = load.finish();
    assert!(report.stats.failures.is_empty(), "{}", report.summary());
    assert!(server.stop().success());
    (report.throughput(), report.quantile(0.99))
}

/// `n` sequential requests on one connection before the switch and `n` after it.
fn forwarded_latency(n: usize) -> (Vec<Duration>, Vec<Duration>) {
    let ctx = Ctx::new();
    let (pki, config) = setup_h3(&ctx);
    let cmd = h3_command(
        &ctx,
        &pki,
        &["--goaway-after", "60s", "--drain-timeout", "60s"],
    );
    let (mut server, addr) = start_h3(&ctx, cmd, &config);
    let first = server.pid;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let endpoint = rt.block_on(async { client_endpoint(addr) });
    let mut conn = rt
        .block_on(H3Conn::connect(&endpoint, addr, &config))
        .unwrap();
    let timed = |conn: &mut H3Conn| -> Vec<Duration> {
        (0..n)
            .map(|_| {
                let t = Instant::now();
                let (status, body) = rt.block_on(conn.get("/")).unwrap();
                assert!(
                    status == 200 && body.ends_with(&format!("pid={first}")),
                    "{body}"
                );
                t.elapsed()
            })
            .collect()
    };
    let before = timed(&mut conn);
    upgrade_h3(&mut server, addr, &config);
    let after = timed(&mut conn);
    drop(conn);
    (before, after)
}

fn quantile(v: &[Duration], q: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[((v.len() - 1) as f64 * q).round() as usize]
}
