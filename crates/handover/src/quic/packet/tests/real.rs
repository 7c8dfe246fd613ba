//! Real datagrams: a quinn client talks to a quinn server (with handover's tagged CIDs) on
//! 127.0.0.1 through a relay that records every datagram; each packet of each datagram must
//! be classified as quinn-proto decodes it, and the server-bound ones, once the client has the
//! server's first Initial, must carry the server's generation tag (Initials included).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use quinn_proto::{FixedLengthConnectionIdParser, PartialDecode};
use tokio::net::UdpSocket;

use super::super::{parse, Kind};
use crate::quic::cid::{CidKey, TaggedCids, CID_LEN};

/// Which way a recorded datagram went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Dir {
    ToServer,
    ToClient,
}

type Capture = Arc<Mutex<Vec<(Dir, Vec<u8>)>>>;

/// Relays between the first client that writes to `front` and `server`, recording each
/// datagram. Runs until the task is aborted.
async fn relay(front: UdpSocket, server: SocketAddr, capture: Capture) {
    let back = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    back.connect(server).await.unwrap();
    let mut client = None;
    let (mut a, mut b) = (vec![0u8; 65536], vec![0u8; 65536]);
    loop {
        tokio::select! {
            got = front.recv_from(&mut a) => {
                let (n, from) = got.unwrap();
                client = Some(from);
                capture.lock().unwrap().push((Dir::ToServer, a[..n].to_vec()));
                back.send(&a[..n]).await.unwrap();
            }
            got = back.recv(&mut b) => {
                let n = got.unwrap();
                capture.lock().unwrap().push((Dir::ToClient, b[..n].to_vec()));
                if let Some(to) = client {
                    front.send_to(&b[..n], to).await.unwrap();
                }
            }
        }
    }
}

/// The packets of a datagram, split where quinn-proto says each coalesced packet ends.
fn packets(datagram: &[u8], cid_len: usize) -> Vec<Vec<u8>> {
    let parser = FixedLengthConnectionIdParser::new(cid_len);
    let versions = quinn_proto::DEFAULT_SUPPORTED_VERSIONS;
    let mut out = Vec::new();
    let mut rest = Some(BytesMut::from(datagram));
    while let Some(bytes) = rest.take() {
        let whole = bytes.to_vec();
        let (_decoded, tail) = PartialDecode::new(bytes, &parser, versions, true)
            .unwrap_or_else(|e| panic!("quinn-proto: {e}, {whole:02x?}"));
        let len = whole.len() - tail.as_ref().map_or(0, |t| t.len());
        out.push(whole[..len].to_vec());
        rest = tail;
    }
    out
}

#[tokio::test]
async fn real_quinn_traffic_is_classified() {
    const TAG: u8 = 0xa7;
    let dir = tempfile::tempdir().unwrap();
    let pki = handover_testkit::tls::Pki::new(dir.path());
    let tls = crate::tls::server_config(&pki.cert, &pki.key, &[b"hq-test"]).unwrap();
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let key = CidKey::new(&[0x42; 32]);
    let mut endpoint_config = quinn::EndpointConfig::default();
    let factory_key = key.clone();
    endpoint_config.cid_generator(move || Box::new(TaggedCids::new(TAG, factory_key.clone())));
    let server_socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let server_addr = server_socket.local_addr().unwrap();
    let server = quinn::Endpoint::new(
        endpoint_config,
        Some(server_config),
        server_socket,
        Arc::new(quinn::TokioRuntime),
    )
    .unwrap();

    let capture = Capture::default();
    let front = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let front_addr = front.local_addr().unwrap();
    let relay = tokio::spawn(relay(front, server_addr, Arc::clone(&capture)));

    let client_crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(pki.client(&[b"hq-test"])).unwrap();
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    client.set_default_client_config(quinn::ClientConfig::new(Arc::new(client_crypto)));

    let talk = async {
        let serve = async {
            let conn = server.accept().await.unwrap().await.unwrap();
            let (mut send, mut recv) = conn.accept_bi().await.unwrap();
            let got = recv.read_to_end(64).await.unwrap();
            send.write_all(&got).await.unwrap();
            send.finish().unwrap();
            // Until the client has read the answer and closed.
            conn.closed().await;
        };
        let ask = async {
            let conn = client
                .connect(front_addr, "localhost")
                .unwrap()
                .await
                .unwrap();
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            send.write_all(b"ping").await.unwrap();
            send.finish().unwrap();
            let got = recv.read_to_end(64).await.unwrap();
            assert_eq!(got, b"ping");
            conn.close(0u32.into(), b"done");
        };
        tokio::join!(serve, ask);
        client.wait_idle().await;
    };
    tokio::time::timeout(Duration::from_secs(20), talk)
        .await
        .expect("the exchange finished within 20 s");
    relay.abort();

    let capture = capture.lock().unwrap().clone();
    // quinn's client issues 8-byte CIDs (its default generator); the server ours.
    let mut kinds = HashMap::<(Dir, Kind), usize>::new();
    let mut client_dcid = None;
    let mut initial_to_our_cid = 0;
    for (i, (dir, datagram)) in capture.iter().enumerate() {
        let cid_len = match dir {
            Dir::ToServer => CID_LEN,
            Dir::ToClient => 8,
        };
        for packet in packets(datagram, cid_len) {
            let header = parse(&packet, cid_len)
                .unwrap_or_else(|| panic!("datagram {i} ({dir:?}) not parsed: {packet:02x?}"));
            super::agree(&packet, cid_len);
            *kinds.entry((*dir, header.kind)).or_insert(0) += 1;
            if *dir == Dir::ToServer {
                match (header.kind, key.tag_of(header.dcid)) {
                    // The client's own choice, not a CID of ours, the same until the server
                    // answered (no Retry here).
                    (Kind::Initial, None) => {
                        let first = client_dcid.get_or_insert_with(|| header.dcid.to_vec());
                        assert_eq!(first.as_slice(), header.dcid);
                    }
                    // After the server's first Initial: the server's CID, in Initials too
                    // (the ACK coalesced with the client's Finished). The router must send
                    // these by tag, not treat them as new connections.
                    (Kind::Initial, Some(tag)) => {
                        assert!(client_dcid.is_some(), "datagram {i}: our CID first");
                        assert_eq!(tag, TAG);
                        initial_to_our_cid += 1;
                    }
                    (Kind::Handshake | Kind::Short, tag) => {
                        assert_eq!(tag, Some(TAG), "datagram {i}");
                    }
                    other => panic!("a client sent {other:?}"),
                }
            }
        }
        // The first packet is what routing looks at.
        assert!(parse(datagram, cid_len).is_some());
    }
    for want in [
        (Dir::ToServer, Kind::Initial),
        (Dir::ToServer, Kind::Handshake),
        (Dir::ToServer, Kind::Short),
        (Dir::ToClient, Kind::Initial),
        (Dir::ToClient, Kind::Handshake),
        (Dir::ToClient, Kind::Short),
    ] {
        assert!(kinds.contains_key(&want), "no {want:?} in {kinds:?}");
    }
    // The client's own Initial DCID: at least 8 bytes of its choosing (RFC 9000, 7.2).
    assert!(client_dcid.unwrap().len() >= 8);
    assert!(
        initial_to_our_cid > 0,
        "no client Initial to the server's CID"
    );
}
