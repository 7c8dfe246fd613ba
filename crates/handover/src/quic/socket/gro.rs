//! GRO batches with datagrams of different owners. With UDP GRO the kernel hands over one
//! buffer holding several datagrams of `stride` bytes each (the last one may be shorter), and
//! nothing says the datagrams of one batch belong to one connection, or to one generation: a
//! client's burst can mix packets of an old connection and of a new one, and an attacker's
//! datagram can sit between them. Each must be cut out exactly and routed on its own.

use std::collections::HashMap;
use std::time::Instant;

use quinn::udp::{Transmit, UdpSocketState};
use quinn::ConnectionIdGenerator;

use super::split;
use crate::quic::channel;
use crate::quic::cid::{generation_tag, CidKey, TaggedCids};
use crate::quic::route::{dispatch, ForwardError, Sink, Table};
use crate::quic::wire::{self, Message};

const KEY: [u8; 32] = [7; 32];
const STRIDE: usize = 1200;

fn cid(key: &CidKey, generation: u64) -> Vec<u8> {
    TaggedCids::new(generation_tag(generation), key.clone())
        .generate_cid()
        .to_vec()
}

/// A short-header packet to `dcid`, `len` bytes of `fill` after it.
fn short(dcid: &[u8], fill: u8, len: usize) -> Vec<u8> {
    let mut p = vec![0x43];
    p.extend_from_slice(dcid);
    p.resize(len, fill);
    p
}

/// A datagram no router can parse: a long header (QUIC v1) whose DCID length is 0xff, over
/// the 20 bytes QUIC allows.
fn garbage(len: usize) -> Vec<u8> {
    let mut p = vec![0xc3, 0, 0, 0, 1, 0xff];
    p.resize(len, 0xee);
    p
}

/// The four datagrams of the batch: generation 2's own, generation 1's (older, alive),
/// garbage, generation 2's again, shorter (the tail of a GRO batch).
fn batch(key: &CidKey) -> [Vec<u8>; 4] {
    [
        short(&cid(key, 2), 0xa1, STRIDE),
        short(&cid(key, 1), 0xb2, STRIDE),
        garbage(STRIDE),
        short(&cid(key, 2), 0xc3, 700),
    ]
}

#[derive(Debug, PartialEq, Eq)]
enum Done {
    Delivered(Vec<u8>),
    Forwarded(u64, Vec<u8>),
    Dropped,
}

#[derive(Default)]
struct Record(Vec<Done>);

impl Sink for Record {
    fn deliver(&mut self, datagram: &[u8]) {
        self.0.push(Done::Delivered(datagram.to_vec()));
    }
    fn forward(&mut self, generation: u64, datagram: &[u8]) -> Result<(), ForwardError> {
        self.0.push(Done::Forwarded(generation, datagram.to_vec()));
        Ok(())
    }
    fn dropped(&mut self) {
        self.0.push(Done::Dropped);
    }
}

#[test]
fn a_read_is_cut_at_the_stride_with_a_shorter_last_datagram() {
    let cut = |len, stride| split(len, stride).collect::<Vec<_>>();
    assert_eq!(
        cut(4300, 1200),
        [(0, 1200), (1200, 1200), (2400, 1200), (3600, 700)]
    );
    assert_eq!(cut(3600, 1200), [(0, 1200), (1200, 1200), (2400, 1200)]);
    // No GRO: quinn-udp gives stride == len.
    assert_eq!(cut(57, 57), [(0, 57)]);
    assert_eq!(cut(57, 4000), [(0, 57)], "stride over the length");
    assert!(cut(0, 1200).is_empty());
    assert_eq!(cut(3, 0), [(0, 1), (1, 1), (2, 1)], "a zero stride ends");
}

/// The cut and the routing together, the way `read_udp` does them: every datagram of the
/// batch, exactly its bytes, goes its own way.
#[test]
fn each_datagram_of_a_batch_is_routed_on_its_own() {
    let key = CidKey::new(&KEY);
    let parts = batch(&key);
    let buf = parts.concat();
    let mut table = Table::new(2, key);
    table.add_live(1);
    let mut sink = Record::default();
    let now = Instant::now();
    for (start, len) in split(buf.len(), STRIDE) {
        dispatch(&mut table, &buf[start..start + len], now, &mut sink);
    }
    let [own, older, _, tail] = parts;
    assert_eq!(
        sink.0,
        [
            Done::Delivered(own),
            Done::Forwarded(1, older),
            Done::Dropped,
            Done::Delivered(tail),
        ]
    );
}

/// The same through the real socket: the batch sent with GSO in one `sendmsg` (loopback then
/// hands it to the reader as one GRO batch where the kernel supports both), read by the routing
/// socket of generation 2 with generation 1 alive behind a channel.
#[tokio::test]
async fn a_mixed_batch_read_off_the_socket_is_split_and_routed() {
    let key = CidKey::new(&KEY);
    let parts = batch(&key);
    let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    server.set_nonblocking(true).unwrap();
    let addr = server.local_addr().unwrap();
    let (to_old, old_end) = channel::pair().unwrap();
    let socket = super::RoutingSocket::new(
        server,
        "udp_test".into(),
        2,
        Table::new(2, key),
        HashMap::from([(1, to_old)]),
        true,
    )
    .unwrap();
    socket.start_serving(None);

    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let client_addr = client.local_addr().unwrap();
    let state = UdpSocketState::new((&client).into()).unwrap();
    let buf = parts.concat();
    let sends: Vec<(&[u8], Option<usize>)> = if state.max_gso_segments() >= parts.len() {
        vec![(&buf[..], Some(STRIDE))]
    } else {
        parts.iter().map(|p| (&p[..], None)).collect()
    };
    for (contents, segment_size) in sends {
        let t = Transmit {
            destination: addr,
            ecn: None,
            contents,
            segment_size,
            src_ip: None,
        };
        state.send((&client).into(), &t).unwrap();
    }

    let got =
        crate::quic::tests::delivered(&socket, 2, "generation 2's datagrams were not delivered")
            .await;
    let [own, older, _, tail] = parts;
    assert!(
        got[0] == (own, client_addr),
        "first delivered is not the own one"
    );
    assert!(
        got[1] == (tail, client_addr),
        "second delivered is not the tail"
    );

    let mut msg = vec![0u8; wire::MAX_MESSAGE];
    let n = old_end.recv(&mut msg).unwrap();
    match wire::decode(&msg[..n]).unwrap() {
        Message::Forward { src, payload, .. } => {
            assert!(
                payload == &older[..],
                "not generation 1's datagram forwarded"
            );
            assert_eq!(src, client_addr);
        }
        other => panic!("{other:?}"),
    }
    old_end.set_nonblocking(true).unwrap();
    assert!(old_end.recv(&mut msg).is_err(), "more than one forwarded");
    let s = socket.stats();
    assert_eq!(
        (s.delivered, s.forwarded_out, s.dropped),
        (2, 1, 1),
        "{s:?}"
    );
}
