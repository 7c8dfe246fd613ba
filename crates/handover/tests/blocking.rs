//! `examples/blocking.rs` end to end: a thread-per-connection server on the blocking
//! listener, upgraded by `SIGUSR2` under keep-alive and one-request-per-connection load
//! without a failed request, and an idle keep-alive connection closed one idle grace into the
//! drain.

use std::io::{BufReader, ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use handover_testkit::hello_kit::*;

const UPGRADES: usize = 10;

/// Installs the blocking example as `<dir>/blocking` and starts it on a free loopback port.
fn start(ctx: &Ctx, idle_grace: &str) -> Server {
    let exe = ctx.path("blocking");
    std::fs::copy(example_binary("blocking"), &exe).expect("copy the blocking example");
    let mut cmd = ctx.command(&exe);
    cmd.args(["--listen", "127.0.0.1:0", "--idle-grace", idle_grace]);
    ctx.start_with(cmd, 1)
}

/// Eight keep-alive clients and four opening a connection per request, back to back, through
/// ten upgrades: not one request fails, and every generation answered some of each.
#[test]
fn blocking_server_keepalive_and_close_load_through_ten_upgrades_loses_nothing() {
    let ctx = Ctx::new();
    let mut server = start(&ctx, "1s");
    let keep_alive = Load::start(server.addr(), 8, LoadMode::KeepAlive);
    let close = Load::start(server.addr(), 4, LoadMode::Close);
    keep_alive.wait_more(200);
    close.wait_more(50);
    let mut pids = vec![server.pid];
    let began = Instant::now();
    for _ in 0..UPGRADES {
        // Waits for the handover, the old process's exit with status 0 and `GET /` from the
        // new one.
        let (_, new) = server.upgrade(libc::SIGUSR2);
        pids.push(new);
        // The keep-alive clients moved over: the drain's `Connection: close` did it.
        keep_alive.wait_seen(new);
        close.wait_seen(new);
        keep_alive.wait_more(100);
    }
    eprintln!("{UPGRADES} upgrades took {:?}", began.elapsed());
    let (keep_alive, close) = (keep_alive.finish(), close.finish());
    eprintln!("keep-alive: {}", keep_alive.summary());
    eprintln!("close: {}", close.summary());
    keep_alive.assert_no_failures();
    close.assert_no_failures();
    for pid in &pids {
        for (what, stats) in [("keep-alive", &keep_alive), ("close", &close)] {
            assert!(
                stats.by_pid.contains_key(pid),
                "generation {pid} answered no {what} request: {}",
                stats.summary()
            );
        }
    }
    let exit = server.stop();
    assert!(exit.success(), "the last generation ended with {exit:?}");
    assert_no_zombies();
}

/// A keep-alive connection that sits idle through a handover is closed by the old
/// generation with a FIN (no reset) one idle grace after the drain began: not at once, not at
/// the drain deadline; the old generation exits right after.
#[test]
fn an_idle_keepalive_connection_is_closed_one_grace_into_the_drain() {
    let grace = Duration::from_secs(1);
    let ctx = Ctx::new();
    let mut server = start(&ctx, "1s");
    let Addr::Tcp(addr) = server.addr().clone() else {
        panic!("a TCP listener")
    };
    let old = server.pid;
    let mut idle = std::net::TcpStream::connect(addr).expect("connect");
    idle.set_read_timeout(Some(LONG)).unwrap();
    idle.write_all(&request_bytes("/", false)).unwrap();
    let mut reader = BufReader::new(idle.try_clone().unwrap());
    let first = read_response(&mut reader).expect("a response");
    assert_eq!(first.greeting_pid().map(|(_, p)| p), Some(old));
    assert!(!first.closes(), "keep-alive while serving");

    let from = server.log.len();
    let signalled = Instant::now();
    server.signal(libc::SIGUSR2);
    let new = server.wait_upgrade_complete(from, old);
    // The old generation logs this once it has told the new one to go ahead: its drain began
    // between the signal and now.
    let handed_over = Instant::now();
    let mut rest = Vec::new();
    let end = reader.read_to_end(&mut rest);
    let closed = Instant::now();
    match end {
        Ok(0) => {}
        Ok(_) => panic!("unexpected bytes on the idle connection: {rest:?}"),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {
            panic!("the idle connection was reset, not closed")
        }
        Err(e) => panic!("reading the idle connection: {e}"),
    }
    let after_signal = closed - signalled;
    let after_handover = closed - handed_over;
    eprintln!(
        "idle connection closed {after_signal:?} after SIGUSR2, {after_handover:?} after the handover was seen (grace {grace:?})"
    );
    assert!(
        after_signal >= grace,
        "closed {after_signal:?} after the signal: before the idle grace was over"
    );
    assert!(
        after_handover < grace + Duration::from_millis(1500),
        "closed {after_handover:?} after the handover: the idle grace is {grace:?}"
    );
    server.pid = new;
    server.wait_exited_ok(old);
    server.wait_answering_pid(new);
}

/// The example parses request heads strictly: each kind of bad head gets its status and a
/// body naming the fault, and the connection is closed; a good request after a pipelined one
/// and a `HEAD` are answered.
#[test]
fn the_blocking_server_refuses_bad_heads_with_a_status_naming_the_fault() {
    let ctx = Ctx::new();
    let server = start(&ctx, "1s");
    let Addr::Tcp(addr) = server.addr().clone() else {
        panic!("a TCP listener")
    };
    let exchange = |raw: &[u8]| -> Response {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(LONG)).unwrap();
        s.write_all(raw).unwrap();
        read_response(&mut BufReader::new(s))
            .unwrap_or_else(|e| panic!("no response to {:?}: {e}", String::from_utf8_lossy(raw)))
    };
    let long_head = format!(
        "GET / HTTP/1.1\r\nX-Long: {}\r\n\r\n",
        "a".repeat(17 * 1024)
    );
    let cases: [(&[u8], u16, &str); 7] = [
        (
            b"GET / HTTP/1.1\r\nHost\r\n\r\n",
            400,
            "malformed request head",
        ),
        (b"GET /\x01 HTTP/1.1\r\n\r\n", 400, "malformed request head"),
        (
            b"GET / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            400,
            "Content-Length is not a decimal number",
        ),
        (
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx",
            400,
            "conflicting Content-Length fields",
        ),
        (
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            501,
            "Transfer-Encoding is not supported",
        ),
        (
            b"POST / HTTP/1.1\r\n\r\n",
            405,
            "method POST is not allowed",
        ),
        (
            long_head.as_bytes(),
            431,
            "request head longer than 16384 bytes",
        ),
    ];
    for (raw, status, why) in cases {
        let r = exchange(raw);
        assert_eq!(
            (r.status, r.closes()),
            (status, true),
            "for {:?}: {r:?}",
            String::from_utf8_lossy(raw)
        );
        assert!(
            r.body.contains(why),
            "for {:?}: body {:?}",
            String::from_utf8_lossy(raw),
            r.body
        );
    }

    // Two pipelined requests on one connection, the second a HEAD: both answered, in order.
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(LONG)).unwrap();
    s.write_all(
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\nHEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut reader = BufReader::new(s);
    let first = read_response(&mut reader).expect("the GET");
    assert_eq!(first.greeting_pid().map(|(_, p)| p), Some(server.pid));
    assert!(!first.closes());
    let mut head = String::new();
    reader
        .read_to_string(&mut head)
        .expect("the HEAD's answer, then the end");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head:?}");
    assert!(head.contains("Connection: close\r\n"), "{head:?}");
    assert!(
        head.ends_with("\r\n\r\n"),
        "a HEAD answer has no body: {head:?}"
    );
}
