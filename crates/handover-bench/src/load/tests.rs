//! The load client's counting against small fake servers that misbehave on purpose.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::stats::Failure;
use super::{run, LoadConfig, Mode};
use crate::generations::Generations;
use crate::version::Greetings;

#[derive(Clone, Copy)]
enum Behavior {
    /// 200 with the v1 greeting, keep-alive.
    Good,
    /// 200, then close without announcing it.
    OneThenClose,
    /// 200 with `Connection: close`, then close.
    OneAnnounced,
    /// 503.
    Unavailable,
    /// 200 with a body no build sends.
    Bogus,
    /// Read the request, never answer.
    Silent,
}

/// Serves `behavior` on a fresh port; counts the responses it sent.
fn fake(behavior: Behavior) -> (SocketAddr, Arc<AtomicU64>) {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = l.local_addr().unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&sent);
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let sent = Arc::clone(&counter);
            std::thread::spawn(move || serve(s, behavior, &sent));
        }
    });
    (addr, sent)
}

fn serve(mut s: impl Read + Write, behavior: Behavior, sent: &AtomicU64) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.clear();
        let (status, body, close) = match behavior {
            Behavior::Good => ("200 OK", "v1 Welcome Server pid=1", false),
            Behavior::OneThenClose => ("200 OK", "v1 Welcome Server pid=1", false),
            Behavior::OneAnnounced => ("200 OK", "v1 Welcome Server pid=1", true),
            Behavior::Unavailable => ("503 Busy", "", false),
            Behavior::Bogus => ("200 OK", "v9 who", false),
            Behavior::Silent => {
                std::thread::sleep(Duration::from_secs(3));
                return;
            }
        };
        let conn = if close { "Connection: close\r\n" } else { "" };
        let resp = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\n{conn}\r\n{body}",
            body.len()
        );
        if s.write_all(resp.as_bytes()).is_err() {
            return;
        }
        sent.fetch_add(1, Ordering::SeqCst);
        if matches!(behavior, Behavior::OneThenClose | Behavior::OneAnnounced) {
            return;
        }
    }
}

fn load(addr: SocketAddr, mode: Mode, timeout: Duration) -> super::stats::Stats {
    load_with(addr, mode, timeout, Generations::new(1))
}

fn load_with(
    addr: SocketAddr,
    mode: Mode,
    timeout: Duration,
    generations: Generations,
) -> super::stats::Stats {
    let cfg = LoadConfig {
        addr,
        mode,
        conns: 4,
        threads: 2,
        duration: Duration::from_millis(400),
        timeout,
        greetings: Arc::new(Greetings::new("v1 Welcome Server", "v2 Welcome New Server")),
        generations: Arc::new(generations),
        rate: None,
        tls: None,
    };
    run(&cfg, Instant::now()).unwrap().0
}

fn failed(s: &super::stats::Stats, kind: Failure) -> u32 {
    s.total().failed[Failure::ALL.iter().position(|k| *k == kind).unwrap()]
}

#[test]
fn every_response_is_counted_once() {
    for mode in [Mode::Keepalive, Mode::Close] {
        let (addr, sent) = fake(Behavior::Good);
        let s = load(addr, mode, Duration::from_secs(2));
        let t = s.total();
        assert_eq!(t.failed_total(), 0, "{mode:?}");
        assert!(t.ok[0] > 100, "{mode:?}: {t:?}");
        assert_eq!(u64::from(t.ok[0]), sent.load(Ordering::SeqCst), "{mode:?}");
        assert_eq!(s.latency.len(), u64::from(t.ok[0]));
    }
}

#[test]
fn unannounced_close_loses_the_next_request() {
    let (addr, sent) = fake(Behavior::OneThenClose);
    let s = load(addr, Mode::Keepalive, Duration::from_secs(2));
    let t = s.total();
    let lost = failed(&s, Failure::Read) + failed(&s, Failure::Write);
    // Every answer read was sent; an answer still on its way when the run ends is sent but
    // never read, at most one per connection (4).
    let sent = sent.load(Ordering::SeqCst);
    let ok = u64::from(t.ok[0]);
    assert!(ok <= sent && sent - ok <= 4, "{ok} read, {sent} sent");
    assert_eq!(lost, t.failed_total(), "only read/write failures: {t:?}");
    // Each connection carries one answer, then its next request fails (the last few
    // connections may end with the run instead).
    assert!(lost + 4 >= t.ok[0] && lost <= t.ok[0], "{t:?}");
}

#[test]
fn announced_close_is_not_a_failure() {
    let (addr, sent) = fake(Behavior::OneAnnounced);
    let s = load(addr, Mode::Keepalive, Duration::from_secs(2));
    assert_eq!(s.total().failed_total(), 0);
    assert_eq!(u64::from(s.total().ok[0]), sent.load(Ordering::SeqCst));
    assert_eq!(s.announced_closes, u64::from(s.total().ok[0]));
}

#[test]
fn bad_status_and_body_are_counted() {
    let (addr, sent) = fake(Behavior::Unavailable);
    let s = load(addr, Mode::Keepalive, Duration::from_secs(2));
    assert_eq!(s.total().ok_total(), 0);
    assert_eq!(
        u64::from(failed(&s, Failure::Status)),
        sent.load(Ordering::SeqCst)
    );
    assert_eq!(s.total().failed_total(), failed(&s, Failure::Status));

    let (addr, sent) = fake(Behavior::Bogus);
    let s = load(addr, Mode::Close, Duration::from_secs(2));
    assert_eq!(
        u64::from(failed(&s, Failure::Body)),
        sent.load(Ordering::SeqCst)
    );
    assert_eq!(s.total().failed_total(), failed(&s, Failure::Body));
}

#[test]
fn silence_times_out_and_refusal_is_connect() {
    let (addr, _) = fake(Behavior::Silent);
    let s = load(addr, Mode::Keepalive, Duration::from_millis(150));
    let n = failed(&s, Failure::Timeout);
    assert!(
        (4..=16).contains(&n),
        "4 slots, 150 ms timeout, 400 ms run: {n}"
    );
    assert_eq!(s.total().failed_total(), n);

    let closed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap();
    let s = load(closed, Mode::Close, Duration::from_secs(1));
    assert!(failed(&s, Failure::Connect) >= 4);
    assert_eq!(s.total().failed_total(), failed(&s, Failure::Connect));
    assert_eq!(s.total().ok_total(), 0);
}

#[test]
fn answers_from_a_replaced_generation_are_stale() {
    // The fake answers as pid 1, but pid 2 had already taken over when the load started.
    let generations = Generations::new(1);
    generations.switched_to(2);
    let (addr, _) = fake(Behavior::Good);
    let s = load_with(addr, Mode::Close, Duration::from_secs(2), generations);
    let t = s.total();
    assert!(t.ok[0] > 10);
    assert_eq!(
        t.stale, t.ok[0],
        "every fresh connection's first answer is stale"
    );

    // Pid 1 still current: nothing is stale.
    let (addr, _) = fake(Behavior::Good);
    let s = load(addr, Mode::Close, Duration::from_secs(2));
    assert_eq!(s.total().stale, 0);
}

#[test]
fn paced_mode_holds_the_rate() {
    let (addr, sent) = fake(Behavior::Good);
    let cfg = LoadConfig {
        addr,
        mode: Mode::Keepalive,
        conns: 8,
        threads: 2,
        duration: Duration::from_millis(500),
        timeout: Duration::from_secs(2),
        greetings: Arc::new(Greetings::new("v1 Welcome Server", "v2 Welcome New Server")),
        generations: Arc::new(Generations::new(1)),
        rate: Some(400.0),
        tls: None,
    };
    let s = run(&cfg, Instant::now()).unwrap().0;
    let t = s.total();
    assert_eq!(t.failed_total(), 0);
    assert_eq!(u64::from(t.ok[0]), sent.load(Ordering::SeqCst));
    // 400 req/s for 0.5 s: every slot's deadlines in [0, 0.5 s), i.e. 200 requests, each
    // sent even if its slot fell behind (a slot late past the end used to drop the rest, so a
    // stall of the machine near the end left the count short).
    assert_eq!(t.ok[0], 200, "{t:?}");
}

/// A [`Behavior::Good`] server over TLS (the bench's certificate, rustls defaults, which offer
/// resumption); counts responses and full handshakes.
fn fake_tls(pki: &crate::tls::Pki) -> (SocketAddr, Arc<AtomicU64>, Arc<AtomicU64>) {
    let config = crate::tls::test_server_config(pki);
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = l.local_addr().unwrap();
    let (sent, full) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (counter, fulls) = (Arc::clone(&sent), Arc::clone(&full));
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let (config, sent, full) = (
                Arc::clone(&config),
                Arc::clone(&counter),
                Arc::clone(&fulls),
            );
            std::thread::spawn(move || {
                let mut s = s;
                let mut conn = rustls::ServerConnection::new(config).unwrap();
                while conn.is_handshaking() {
                    if conn.complete_io(&mut s).is_err() {
                        return;
                    }
                }
                if conn.handshake_kind() == Some(rustls::HandshakeKind::Full) {
                    full.fetch_add(1, Ordering::SeqCst);
                }
                serve(rustls::StreamOwned::new(conn, s), Behavior::Good, &sent);
            });
        }
    });
    (addr, sent, full)
}

#[test]
fn tls_keepalive_and_close_count_every_response_and_close_is_all_handshakes() {
    let pki = crate::tls::Pki::new().unwrap();
    for mode in [Mode::Keepalive, Mode::Close] {
        let (addr, sent, full) = fake_tls(&pki);
        let cfg = LoadConfig {
            addr,
            mode,
            conns: 4,
            threads: 2,
            duration: Duration::from_millis(400),
            timeout: Duration::from_secs(2),
            greetings: Arc::new(Greetings::new("v1 Welcome Server", "v2 Welcome New Server")),
            generations: Arc::new(Generations::new(1)),
            rate: None,
            tls: Some(Arc::clone(&pki.client)),
        };
        let s = run(&cfg, Instant::now()).unwrap().0;
        let t = s.total();
        assert_eq!(t.failed_total(), 0, "{mode:?}: {t:?}");
        assert!(t.ok[0] > 20, "{mode:?}: {t:?}");
        assert_eq!(u64::from(t.ok[0]), sent.load(Ordering::SeqCst), "{mode:?}");
        // Every connection the client opened was a full handshake (no resumption), and in
        // close mode there is one per request.
        assert_eq!(s.connections, full.load(Ordering::SeqCst), "{mode:?}");
        if mode == Mode::Close {
            assert_eq!(s.connections, u64::from(t.ok[0]));
        } else {
            assert!(s.connections <= 4, "{}", s.connections);
        }
    }
}

#[test]
fn tls_probe_answers_and_a_wrong_ca_fails_the_connect() {
    use crate::probe::{once_over, Probe};
    let (pki, other) = (
        crate::tls::Pki::new().unwrap(),
        crate::tls::Pki::new().unwrap(),
    );
    let (addr, _, _) = fake_tls(&pki);
    let g = Greetings::new("v1 Welcome Server", "v2 Welcome New Server");
    let t = Duration::from_secs(2);
    assert_eq!(
        once_over(addr, &g, t, Some(&pki.client)),
        Probe::Answer {
            status: 200,
            version: Some(crate::version::Version::V1),
            pid: Some(1)
        }
    );
    assert!(!matches!(
        once_over(addr, &g, t, Some(&other.client)),
        Probe::Answer { .. }
    ));
    let cfg = LoadConfig {
        addr,
        mode: Mode::Close,
        conns: 1,
        threads: 1,
        duration: Duration::from_millis(100),
        timeout: t,
        greetings: Arc::new(g),
        generations: Arc::new(Generations::new(1)),
        rate: None,
        tls: Some(Arc::clone(&other.client)),
    };
    let s = run(&cfg, Instant::now()).unwrap().0;
    assert_eq!(s.total().ok[0], 0);
    assert!(failed(&s, Failure::Connect) > 0);
}
