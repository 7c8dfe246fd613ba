//! What an old generation does with the datagrams its successor forwards on their channel.

use std::collections::HashMap;
use std::io::IoSliceMut;
use std::net::SocketAddr;

use quinn::udp::RecvMeta;
use quinn::AsyncUdpSocket;

use crate::quic::cid::CidKey;
use crate::quic::route::Table;
use crate::quic::wire::{self, Message};

/// The endpoint's receive buffers in this test: smaller than one of the datagrams sent.
const BUF: usize = 1200;

/// A forwarded datagram longer than the endpoint's buffer is dropped and counted, never
/// handed over cut short (a truncated QUIC packet cannot be authenticated); the next one,
/// which fits, is delivered whole.
#[tokio::test]
async fn a_forwarded_datagram_larger_than_the_buffer_is_dropped_not_cut() {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    let socket = super::RoutingSocket::new(
        udp,
        "forwarded_test".into(),
        1,
        Table::new(1, CidKey::new(&[3; 32])),
        HashMap::new(),
        true,
    )
    .unwrap();
    socket.start_serving(None);
    let fds = socket.prepare(2, &[9; 32], |g| format!("gen{g}")).unwrap();
    let (fd, _) = fds.into_iter().next().expect("the successor's end");
    let successor = std::os::unix::net::UnixDatagram::from(fd);
    socket.paused();

    let src: SocketAddr = "127.0.0.1:4433".parse().unwrap();
    let big = vec![0xb1; BUF + 1];
    let fits = vec![0xf2; BUF];
    for payload in [&big, &fits] {
        let mut msg = Vec::new();
        wire::encode(
            &Message::Forward {
                src,
                dst_ip: None,
                ecn: 0,
                payload,
            },
            &mut msg,
        );
        successor.send(&msg).unwrap();
    }

    let mut storage = vec![vec![0u8; BUF]; 4];
    let mut bufs: Vec<IoSliceMut<'_>> = storage.iter_mut().map(|b| IoSliceMut::new(b)).collect();
    let mut meta = [RecvMeta::default(); 4];
    let n = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        std::future::poll_fn(|cx| socket.poll_recv(cx, &mut bufs, &mut meta)),
    )
    .await
    .expect("nothing delivered from the channel")
    .unwrap();
    assert_eq!(n, 1, "delivered: {:?}", &meta[..n]);
    assert_eq!((meta[0].len, meta[0].addr), (BUF, src));
    assert!(bufs[0][..BUF] == fits[..], "not the datagram that fits");
    let s = socket.stats();
    assert_eq!((s.forwarded_in, s.dropped), (1, 1), "{s:?}");
}
