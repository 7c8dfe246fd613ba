//! HTTPS through upgrades (`--features tls`): real hello processes serving TLS with
//! certificates made here, clients that verify them, real signals.

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use handover::tls::rustls;
use handover_testkit::hello_kit::*;
use handover_testkit::tls::*;

fn ten_upgrades_under(mode: TlsMode, alpn: &[&[u8]]) {
    let ctx = Ctx::new();
    let pki = Pki::new(&ctx.path(""));
    let mut server = start_tls(&ctx, &pki, &[]);
    let check = pki.client(&[b"http/1.1"]);
    let load = TlsLoad::start(server.addr(), pki.client(alpn), 3, mode);
    load.wait_more(20);
    let mut version = Version::V1;
    for _ in 0..10 {
        version = version.other();
        ctx.install(version);
        let (_, new) = upgrade_tls(&mut server, &check);
        load.wait_seen(new);
        load.wait_more(10);
    }
    let stats = load.finish();
    eprintln!("{mode:?}: {}", stats.summary());
    stats.assert_no_failures();
    assert!(stats.by_pid.len() >= 10, "{}", stats.summary());
}

/// Keep-alive HTTP/1.1 over TLS through 10 upgrades: every response arrives, every close the
/// server makes is `close_notify` then FIN.
#[test]
fn https_keep_alive_through_ten_upgrades() {
    ten_upgrades_under(TlsMode::Http1(LoadMode::KeepAlive), &[b"http/1.1"]);
}

/// A new TLS connection per request through 10 upgrades: no handshake or request fails.
#[test]
fn https_close_through_ten_upgrades() {
    ten_upgrades_under(TlsMode::Http1(LoadMode::Close), &[b"http/1.1"]);
}

/// HTTP/2 over TLS (ALPN h2) through 10 upgrades: GOAWAY, open streams finish, clean close.
#[test]
fn h2_over_tls_through_ten_upgrades() {
    ten_upgrades_under(TlsMode::Http2, &[b"h2"]);
}

/// Replacing the files and upgrading rotates the certificate: new connections get the new
/// one, a keep-alive connection opened on the old one finishes cleanly, nothing fails.
#[test]
fn certificate_rotation_by_upgrade() {
    let ctx = Ctx::new();
    let mut pki = Pki::new(&ctx.path(""));
    let first = pki.leaf.clone();
    let mut server = start_tls(&ctx, &pki, &[]);
    let client = pki.client(&[b"http/1.1"]);
    let load = TlsLoad::start(
        server.addr(),
        client.clone(),
        2,
        TlsMode::Http1(LoadMode::KeepAlive),
    );
    load.wait_more(10);

    // A keep-alive connection on the old certificate, used once.
    let mut old_conn = BufReader::new(connect(tcp(server.addr()), &client).unwrap());
    assert_eq!(peer_leaf(old_conn.get_ref()), first);
    old_conn
        .get_mut()
        .write_all(&request_bytes("/sleep/1500", false))
        .unwrap();

    let second = pki.issue();
    assert_ne!(first, second);
    let (old, new) = upgrade_tls(&mut server, &client);

    // The request in flight at the handover is answered by the old process, which says it
    // closes, and closes with close_notify.
    let resp = read_response(&mut old_conn).unwrap();
    assert_eq!(resp.greeting_pid().map(|g| g.1), Some(old), "{}", resp.body);
    assert!(
        resp.closes(),
        "no Connection: close from the draining process"
    );
    expect_clean_close(&mut old_conn).unwrap();

    let (resp, leaf) = https_get(server.addr(), &client, "/").unwrap();
    assert_eq!(resp.greeting_pid().map(|g| g.1), Some(new));
    assert_eq!(
        leaf, second,
        "a new connection still got the old certificate"
    );
    if let Some(curl) = which("curl") {
        let ca = ctx.path("ca.pem");
        std::fs::write(&ca, pki.ca_pem()).unwrap();
        let out = std::process::Command::new(curl)
            .args(["-sS", "--fail", "--cacert"])
            .arg(&ca)
            .args([
                "--resolve",
                &format!("localhost:{}:127.0.0.1", tcp(server.addr()).port()),
            ])
            .arg(format!("https://localhost:{}/", tcp(server.addr()).port()))
            .output()
            .unwrap();
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && body.contains(&format!("pid={new}")),
            "curl: {body} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    load.wait_seen(new);
    let stats = load.finish();
    stats.assert_no_failures();
}

/// A replaced key that does not match the certificate: the new generation cannot start, the
/// upgrade is rolled back, and the old one serves on with the old certificate.
#[test]
fn a_bad_certificate_file_fails_the_upgrade_not_the_server() {
    let ctx = Ctx::new();
    let mut pki = Pki::new(&ctx.path(""));
    let first = pki.leaf.clone();
    let server = start_tls(&ctx, &pki, &[]);
    let client = pki.client(&[b"http/1.1"]);
    let key = std::fs::read(&pki.key).unwrap();
    pki.issue();
    std::fs::write(&pki.key, key).unwrap(); // old key, new certificate
    let from = server.log.len();
    server.signal(libc::SIGUSR2);
    let line = server.wait_upgrade_failed(from, LONG);
    assert!(
        server
            .log
            .contains("the key does not match the certificate"),
        "{line}"
    );
    let (resp, leaf) = https_get(server.addr(), &client, "/").unwrap();
    assert_eq!(resp.greeting_pid().map(|g| g.1), Some(server.pid));
    assert_eq!(leaf, first);
}

/// A handshake the old process is in the middle of when the handover happens is finished by
/// it, and its request answered: counted by the drain, not cut.
#[test]
fn handshake_in_progress_at_the_handover_is_finished() {
    let ctx = Ctx::new();
    let pki = Pki::new(&ctx.path(""));
    let server = start_tls(&ctx, &pki, &[]);
    let client = pki.client(&[b"http/1.1"]);
    let old_pid = server.pid;

    // ClientHello out, the server's whole flight in (so the old process has the connection),
    // and the client's Finished held back.
    let mut sock = TcpStream::connect(tcp(server.addr())).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut conn = rustls::ClientConnection::new(client.clone(), localhost()).unwrap();
    conn.write_tls(&mut sock).unwrap();
    while conn.is_handshaking() {
        assert!(
            conn.read_tls(&mut sock).unwrap() > 0,
            "server closed mid-handshake"
        );
        conn.process_new_packets().unwrap();
    }
    assert!(
        conn.wants_write(),
        "the client's Finished is still to be sent"
    );

    // A second connection, idle: the old process closes it an idle grace after its drain
    // starts, which tells this test the drain is under way (`upgrade complete` is logged just
    // before it starts).
    let mut idle = BufReader::new(connect(tcp(server.addr()), &client).unwrap());
    idle.get_mut()
        .write_all(&request_bytes("/", false))
        .unwrap();
    assert_eq!(
        read_response(&mut idle)
            .unwrap()
            .greeting_pid()
            .map(|g| g.1),
        Some(old_pid)
    );

    let old = old_pid;
    let from = server.log.len();
    signal(old, libc::SIGUSR2);
    server.wait_upgrade_complete(from, old);
    expect_clean_close(&mut idle).unwrap();
    // The old process has been draining for an idle grace, still waiting for our Finished.
    assert!(is_alive(old));
    conn.writer().write_all(&request_bytes("/", false)).unwrap();
    while conn.wants_write() {
        conn.write_tls(&mut sock).unwrap();
    }
    let mut stream = BufReader::new(rustls::StreamOwned::new(conn, sock));
    let resp = read_response(&mut stream).expect("the handshake in progress was cut");
    assert_eq!(resp.greeting_pid().map(|g| g.1), Some(old));
    assert!(resp.closes());
    expect_clean_close(&mut stream).unwrap();
    server.wait_exited_ok(old);
}

/// An idle keep-alive TLS connection is closed with close_notify then FIN after the idle grace
/// once the drain starts.
#[test]
fn idle_tls_connection_gets_close_notify() {
    let ctx = Ctx::new();
    let pki = Pki::new(&ctx.path(""));
    let mut server = start_tls(&ctx, &pki, &[]);
    let client = pki.client(&[b"http/1.1"]);
    let mut idle = BufReader::new(connect(tcp(server.addr()), &client).unwrap());
    idle.get_mut()
        .write_all(&request_bytes("/", false))
        .unwrap();
    let resp = read_response(&mut idle).unwrap();
    assert!(!resp.closes());
    ctx.install(Version::V2);
    let (old, _) = upgrade_tls(&mut server, &client);
    // upgrade_tls waited for the old process to exit, so the close has happened.
    expect_clean_close(&mut idle).unwrap_or_else(|e| panic!("idle connection of {old}: {e}"));
}

/// A client stalled in its handshake is closed at the handshake timeout, and the drain waits
/// for it no longer than that (the drain timeout here is 60 s); a good client is served.
#[test]
fn a_stalled_handshake_is_bounded_by_the_handshake_timeout() {
    let ctx = Ctx::new();
    let pki = Pki::new(&ctx.path(""));
    let mut server = start_tls(
        &ctx,
        &pki,
        &["--tls-handshake-timeout", "2s", "--drain-timeout", "60s"],
    );
    let client = pki.client(&[b"http/1.1"]);
    let old = server.pid;

    // Half a ClientHello, then nothing.
    let mut hello = Vec::new();
    rustls::ClientConnection::new(client.clone(), localhost())
        .unwrap()
        .write_tls(&mut hello)
        .unwrap();
    let mut stalled = TcpStream::connect(tcp(server.addr())).unwrap();
    stalled.write_all(&hello[..hello.len() / 2]).unwrap();
    let local = stalled.local_addr().unwrap();
    let accepted = poll_until(LONG, || {
        tcp_inode(tcp(server.addr()), local).is_some_and(|ino| socket_inodes(old).contains(&ino))
    });
    assert!(
        accepted,
        "the old process never accepted the stalled connection"
    );

    let start = Instant::now();
    ctx.install(Version::V2);
    let (_, new) = upgrade_tls(&mut server, &client);
    let drained = start.elapsed();
    https_hello(server.addr(), &client).unwrap();
    assert!(
        drained < Duration::from_secs(2 + 5),
        "the drain waited {drained:?} for a stalled handshake"
    );
    stalled.set_read_timeout(Some(SHORT)).unwrap();
    let mut rest = Vec::new();
    let r = stalled.read_to_end(&mut rest);
    assert!(r.is_ok(), "stalled client saw {r:?}, not a clean close");
    assert_ne!(new, old);
}

/// Plain HTTP and garbage on the TLS port get an alert and a clean close (no reset), and do
/// not disturb a good client.
#[test]
fn plain_http_and_garbage_are_closed_cleanly() {
    let ctx = Ctx::new();
    let pki = Pki::new(&ctx.path(""));
    let server = start_tls(&ctx, &pki, &[]);
    let client = pki.client(&[b"http/1.1"]);
    let mut good = BufReader::new(connect(tcp(server.addr()), &client).unwrap());
    let garbage_hello: &[u8] =
        b"\x16\x03\x01\x00\x30\x01\x00\x00\x2cnot a client hello at all, just junk bytes!!";
    // More than rustls reads before it gives up: closing with it unread would be a reset.
    let mut post = b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 40000\r\n\r\n".to_vec();
    post.resize(post.len() + 40000, b'x');
    let inputs: [(&str, &[u8]); 4] = [
        ("plain HTTP", &request_bytes("/", false)),
        ("plain HTTP with a 40 kB body", &post),
        ("garbage ClientHello", garbage_hello),
        ("binary junk", &[0u8; 300]),
    ];
    for (what, bytes) in inputs {
        let mut s = TcpStream::connect(tcp(server.addr())).unwrap();
        s.set_read_timeout(Some(SHORT)).unwrap();
        s.write_all(bytes).unwrap();
        let mut got = Vec::new();
        let r = s.read_to_end(&mut got);
        assert!(
            r.is_ok(),
            "{what}: {r:?} (a reset instead of a clean close)"
        );
        assert_eq!(
            got.first(),
            Some(&0x15),
            "{what}: no TLS alert before the close: {got:?}"
        );
        // The good connection, opened before, still works.
        good.get_mut()
            .write_all(&request_bytes("/", false))
            .unwrap();
        let resp = read_response(&mut good).unwrap();
        assert_eq!(resp.greeting_pid().map(|g| g.1), Some(server.pid), "{what}");
    }
    assert!(is_alive(server.pid));
    https_hello(server.addr(), &Arc::clone(&client)).unwrap();
}
