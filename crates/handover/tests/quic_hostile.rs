//! QUIC routing against hostile input and a crashed generation (feature `quic`,
//! `examples/h3.rs`): real `h3` processes on loopback, upgrades by `SIGUSR2`, the kit's HTTP/3
//! clients and its spray of hostile datagrams.
//!
//! - one connection, a request every 50 ms, through 3 upgrades while the port is sprayed with
//!   garbage, truncated long headers, short headers to forged and random CIDs and a flood of
//!   Initials: no request fails, the connection stays, every process exits normally, and the
//!   routers' counters show the garbage dropped and nothing of it forwarded;
//! - a generation killed (SIGKILL) with a connection open: the client gets a stateless reset
//!   from the serving generation at its next packet, not an idle timeout;
//! - a first flight split by the switch, with a flood of Initials between its halves,
//!   completes with the old generation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use handover_testkit::h3::{
    client_config_alpn, client_endpoint, h3_command, hello, setup_h3, start_h3, upgrade_h3, H3Conn,
    Pinger, Relay,
};
use handover_testkit::hello_kit::*;
use handover_testkit::spray::Spray;
use handover_testkit::tls::Pki;

const UPGRADES: usize = 3;
/// Initials with random DCIDs in the flood.
const FLOOD: u64 = 10_000;
/// The spray's rate, datagrams per second: a flood, yet one a debug build on a loaded 2-core
/// machine reads without the kernel dropping most of it.
const RATE: u64 = 4_000;

/// The routing counters each generation of the `h3` example logs once its connections are
/// gone (`routing of generation N: RoutingStats { delivered: .., .. }`), by generation.
fn routing_stats(log: &str) -> BTreeMap<u64, BTreeMap<String, u64>> {
    let mut by = BTreeMap::new();
    for line in log.lines() {
        let Some(rest) = line.split("routing of generation ").nth(1) else {
            continue;
        };
        let (generation, fields) = rest.split_once(": RoutingStats {").expect(line);
        let fields = fields.trim().trim_end_matches('}');
        let counters = fields
            .split(',')
            .filter_map(|f| {
                let (k, v) = f.split_once(':')?;
                Some((k.trim().to_string(), v.trim().parse().expect(line)))
            })
            .collect();
        let previous = by.insert(generation.parse().expect(line), counters);
        assert!(previous.is_none(), "generation logged twice: {line}");
    }
    by
}

fn sum(stats: &BTreeMap<u64, BTreeMap<String, u64>>, counter: &str) -> u64 {
    stats.values().map(|c| c[counter]).sum()
}

#[test]
fn a_connection_survives_upgrades_under_a_spray_of_hostile_datagrams() {
    let ctx = Ctx::new();
    let (pki, config) = setup_h3(&ctx);
    // The first generation keeps the connection (no GOAWAY) for the whole test.
    let cmd = h3_command(
        &ctx,
        &pki,
        &["--goaway-after", "120s", "--drain-timeout", "120s"],
    );
    let (mut server, addr) = start_h3(&ctx, cmd, &config);
    let first = server.pid;
    let pinger = Pinger::start(addr, config.clone(), Duration::from_millis(50));
    pinger.wait_more(5);

    let spray = Spray::start(addr, RATE);
    let mut generations = vec![first];
    for _ in 0..UPGRADES {
        let (_, new) = upgrade_h3(&mut server, addr, &config);
        generations.push(new);
        pinger.wait_more(5);
    }
    spray.wait_initials(FLOOD);
    let (sent, took) = spray.finish();
    pinger.wait_more(5);
    let st = pinger.finish();
    // The socket every generation shares: what its receive buffer could not hold.
    let kernel_drops = udp_drops(addr).expect("the server's socket in /proc/net/udp");

    for &pid in &generations[..UPGRADES] {
        server.wait_exited_ok(pid);
    }
    assert!(server.stop().success(), "{}", server.log.text());
    let text = server.log.text();
    eprintln!(
        "spray: {sent:?} ({} datagrams) in {took:?}; kernel drops {kernel_drops}; \
         pinger: {} answers, {} datagrams sent",
        sent.total(),
        st.answers.len(),
        st.datagrams_sent
    );

    assert!(st.failures.is_empty(), "{:?}\n{text}", st.failures);
    assert!(!st.goaway, "the connection was sent GOAWAY\n{text}");
    assert!(st.open_at_end, "the connection closed\n{text}");
    assert_eq!(st.stable_ids.0, st.stable_ids.1, "another connection");
    assert!(
        st.answers.iter().all(|&p| p == first),
        "answers not all from pid {first}: {:?}",
        st.answers
    );
    assert!(!text.contains("panicked"), "{text}");

    let stats = routing_stats(&text);
    eprintln!("routing: {stats:?}");
    let numbers: Vec<u64> = (1..=UPGRADES as u64 + 1).collect();
    assert_eq!(
        stats.keys().copied().collect::<Vec<_>>(),
        numbers,
        "every generation logs its routing\n{text}"
    );
    // What was forwarded is the kept connection's datagrams (and its close, sent after its
    // counters were read): none of the spray's.
    let forwarded = sum(&stats, "forwarded_out");
    assert!(forwarded > 0, "the kept connection was never forwarded");
    assert!(
        forwarded <= st.datagrams_sent + 8,
        "{forwarded} forwarded, the kept connection sent {}: spray forwarded\n{stats:?}",
        st.datagrams_sent
    );
    assert_eq!(forwarded, sum(&stats, "forwarded_in"), "lost on a channel");
    // Every unparseable datagram the serving generations read was dropped by the router
    // (not given to quinn, not forwarded); the kernel may have dropped some before.
    let dropped = sum(&stats, "dropped");
    assert!(
        dropped + kernel_drops >= sent.unparseable(),
        "{dropped} dropped + {kernel_drops} by the kernel < {} unparseable sent\n{stats:?}",
        sent.unparseable()
    );
    assert!(
        dropped <= sent.unparseable(),
        "dropped more than the garbage: {stats:?}"
    );
    // The rest of the spray reached the serving generations' quinn.
    let delivered = sum(&stats, "delivered");
    let parseable = sent.total() - sent.unparseable();
    assert!(
        delivered + kernel_drops >= parseable,
        "{delivered} delivered + {kernel_drops} < {parseable} parseable sent"
    );
}

/// How long the client may wait for the reset: far below its idle timeout.
const RESET_WITHIN: Duration = Duration::from_secs(3);

#[test]
fn a_killed_generations_connection_is_reset_by_the_serving_one() {
    let ctx = Ctx::new();
    let (pki, config) = setup_h3(&ctx);
    let cmd = h3_command(
        &ctx,
        &pki,
        &["--goaway-after", "120s", "--drain-timeout", "120s"],
    );
    let (mut server, addr) = start_h3(&ctx, cmd, &config);
    let first = server.pid;
    // A client that would wait 60 s for an idle timeout, and pings every 200 ms.
    let mut patient = config.clone();
    let mut transport = quinn::TransportConfig::default();
    transport
        .keep_alive_interval(Some(Duration::from_millis(200)))
        .max_idle_timeout(Some(Duration::from_secs(60).try_into().unwrap()));
    patient.transport_config(Arc::new(transport));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (endpoint, mut conn) = rt.block_on(async {
        let endpoint = client_endpoint(addr);
        let conn = H3Conn::connect(&endpoint, addr, &patient)
            .await
            .expect("connect");
        (endpoint, conn)
    });
    let answered_by = |conn: &mut H3Conn| {
        let (status, body) = rt.block_on(conn.get("/")).expect("GET /");
        assert_eq!(status, 200, "{body}");
        body.rsplit_once(" pid=")
            .unwrap()
            .1
            .trim()
            .parse::<i32>()
            .unwrap()
    };
    assert_eq!(answered_by(&mut conn), first);
    let (_, second) = upgrade_h3(&mut server, addr, &config);
    // Forwarded to the first generation, which holds it.
    assert_eq!(answered_by(&mut conn), first);

    let from = server.log.len();
    signal(first, libc::SIGKILL);
    let killed = wait_exit(first, SHORT).expect("the first generation exits");
    assert!(
        killed.is_some_and(|e| e.signal() == Some(libc::SIGKILL)),
        "{killed:?}"
    );
    let dead_at = Instant::now();
    let quic = conn.quic.clone();
    let ended = rt.block_on(async {
        // A request, besides the keep-alive PINGs: the next packet is what is answered.
        let request = conn.get("/");
        let closed = async {
            let closed = tokio::time::timeout(RESET_WITHIN, quic.closed()).await;
            (closed, dead_at.elapsed())
        };
        let (answer, (closed, took)) = tokio::join!(request, closed);
        eprintln!("the killed generation's connection: {closed:?} {took:?} after the kill");
        (answer.is_err(), closed)
    });
    match ended.1 {
        Ok(quinn::ConnectionError::Reset) => {}
        Ok(other) => panic!(
            "ended by {other}, not a stateless reset\n{}",
            server.log.text()
        ),
        Err(_) => panic!(
            "not reset within {RESET_WITHIN:?} of the kill\n{}",
            server.log.text()
        ),
    }
    assert!(ended.0, "a request was answered by a killed generation");
    // The serving generation found its predecessor gone, and serves on.
    server.log.expect(from, "generation 1 is gone", SHORT);
    let (_, pid) = hello(addr, &config).expect("a new connection");
    assert_eq!(pid, second);
    rt.block_on(endpoint.wait_idle());
    assert!(server.stop().success(), "{}", server.log.text());
}

/// A first flight of two datagrams split by the switch (the rest held by a relay until the
/// upgrade is done), with a flood of 5,000 Initials between the two halves: more than the
/// 4,096 newest handshakes an upgrade hands on, so the client's own DCID is no longer among
/// them (`quic/route/flood.rs`). The handshake still completes with the old generation: the
/// client has the server's first Initial (its ACK) and sends its retransmission to the
/// server's CID, which names the old generation.
#[test]
fn a_split_first_flight_completes_with_the_old_generation_despite_a_flood() {
    let ctx = Ctx::new();
    let (pki, config) = setup_h3(&ctx);
    // The new generation may be left a half handshake (the client's second datagram alone):
    // a short drain, so that the stop does not wait out quinn's handshake timeout.
    let cmd = h3_command(
        &ctx,
        &pki,
        &["--goaway-after", "60s", "--drain-timeout", "5s"],
    );
    let (mut server, addr) = start_h3(&ctx, cmd, &config);
    let old = server.pid;
    let relay = Relay::start(addr, 1);
    let big = big_first_flight(&pki);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let endpoint = rt.block_on(async { client_endpoint(addr) });
    let relay_addr = relay.addr;
    let handshake = rt.spawn(async move {
        let mut conn = H3Conn::connect(&endpoint, relay_addr, &big).await?;
        let answer = conn.get("/").await.map_err(|e| format!("{e:?}"))?;
        Ok::<_, String>((answer, Instant::now()))
    });
    // The second datagram held, the server's answer to the first relayed.
    assert!(
        poll_until(LONG, || relay.held() >= 1 && relay.to_client() >= 1),
        "no split first flight: held {}, to the client {}",
        relay.held(),
        relay.to_client()
    );
    let drops_before = udp_drops(addr).expect("the server's socket in /proc/net/udp");
    let spray = Spray::start(addr, 10_000);
    spray.wait_initials(5_000);
    let (sent, took) = spray.finish();
    // Enough of them reached the router to push the genuine one out (the kernel drops a
    // datagram when it arrives, so none is dropped after this).
    let dropped = udp_drops(addr).unwrap() - drops_before;
    assert!(
        sent.initials.saturating_sub(dropped) > 4_096,
        "{sent:?}, {dropped} dropped by the kernel: too few Initials read"
    );
    let (_, new) = upgrade_h3(&mut server, addr, &config);
    // A retransmission by the client is held too (its loss timer fired meanwhile).
    assert!(
        poll_until(LONG, || relay.held() >= 2),
        "the client retransmitted nothing"
    );
    let held = relay.held();
    let released = Instant::now();
    relay.release();
    let outcome = rt.block_on(handshake).unwrap();
    eprintln!("flood {sent:?} in {took:?}; {held} client datagrams held; old {old}, new {new}");
    let ((status, body), at) =
        outcome.unwrap_or_else(|e| panic!("the handshake failed: {e}\n{}", server.log.text()));
    assert_eq!(status, 200, "{body}");
    assert!(
        body.ends_with(&format!("pid={old}")),
        "answered {body:?}, not by the old generation {old}"
    );
    eprintln!(
        "answered {:?} after the release",
        at.duration_since(released)
    );
    drop(relay);
    assert!(server.stop().success(), "{}", server.log.text());
}

/// A ClientHello that spans two datagrams: many long ALPN entries after `h3`.
fn big_first_flight(pki: &Pki) -> quinn::ClientConfig {
    let filler: Vec<Vec<u8>> = (0..8u8).map(|i| vec![b'a' + i; 200]).collect();
    let mut alpn: Vec<&[u8]> = vec![b"h3"];
    alpn.extend(filler.iter().map(|f| f.as_slice()));
    client_config_alpn(pki, &alpn)
}
