//! QUIC at a crash takeover (feature `quic`, `examples/h3.rs`): the new generation is ready and
//! serving, then crashes while the old one still drains; the old one reads the shared UDP
//! socket again. Its own connection never noticed, and new connections reach it.

use std::time::Duration;

use handover_testkit::h3::{h3_command, hello, setup_h3, start_h3, upgrade_h3, Pinger};
use handover_testkit::hello_kit::*;

#[test]
fn a_crashed_successor_hands_the_quic_socket_back_and_the_old_connection_goes_on() {
    let ctx = Ctx::new();
    let (pki, config) = setup_h3(&ctx);
    // The old generation serves its connections as before (no GOAWAY) through the test.
    let cmd = h3_command(
        &ctx,
        &pki,
        &["--goaway-after", "120s", "--drain-timeout", "120s"],
    );
    let (mut server, addr) = start_h3(&ctx, cmd, &config);
    let first = server.pid;
    let pinger = Pinger::start(addr, config.clone(), Duration::from_millis(50));
    pinger.wait_more(5);
    let (_, second) = upgrade_h3(&mut server, addr, &config);
    pinger.wait_more(5);
    assert!(is_alive(first), "generation 1 must still be draining");

    let from = server.log.len();
    signal(second, libc::SIGKILL);
    let resumed = server.log.wait_for(from, LONG, |l| l.contains("resuming"));
    assert!(
        resumed.is_some(),
        "pid {first} did not take over after pid {second} crashed; log:\n{}",
        server.log.text()
    );
    server.pid = first;
    // New connections: generation 1 reads the socket again (the kit's GET / on a new
    // connection each time, until generation 1 answers; the dead one cannot).
    let mut last = None;
    assert!(
        poll_until(SHORT, || {
            last = hello(addr, &config).ok().map(|(_, p)| p);
            last == Some(first)
        }),
        "new connections answered by {last:?} after the takeover, expected {first}; log:\n{}",
        server.log.text()
    );
    // Its own connection, forwarded to it a moment ago, read by it directly now.
    pinger.wait_more(10);
    let st = pinger.finish();
    let text = server.log.text();
    assert!(st.failures.is_empty(), "{:?}\n{text}", st.failures);
    assert!(st.open_at_end && !st.goaway, "{st:?}\n{text}");
    assert_eq!(st.stable_ids.0, st.stable_ids.1, "reconnected");
    assert!(
        st.answers.iter().all(|&p| p == first),
        "answers not all from pid {first}: {:?}",
        st.answers
    );
    assert!(server.stop().success(), "{text}");
}
