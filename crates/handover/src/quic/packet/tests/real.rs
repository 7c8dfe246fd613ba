//! Real datagrams: quinn clients talk to quinn servers built like handover's generations
//! (tagged CIDs, the lineage keys) on 127.0.0.1, through a relay that records every datagram
//! and can switch to another server as an upgrade does.
//!
//! - Each packet of each datagram is classified as quinn-proto decodes it, and the
//!   server-bound ones, once the client has the server's first Initial, carry the server's
//!   generation tag (Initials included).
//! - A server of the next generation, built from the same secret, answers a packet of the
//!   previous generation's connection with a stateless reset the client accepts; one built
//!   from another secret does not even recognise the CID.
//! - A Retry token issued by one generation validates the client's address at the next.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use quinn_proto::{FixedLengthConnectionIdParser, PartialDecode};
use tokio::net::UdpSocket;

use super::super::{parse, Kind};
use crate::quic::cid::{TaggedCids, CID_LEN};
use crate::quic::keys::Secrets;

/// Which way a recorded datagram went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Dir {
    ToServer,
    ToClient,
}

/// Every datagram the relay passed, in order.
type Capture = Arc<Mutex<Vec<(Dir, Vec<u8>)>>>;

/// A UDP relay between one client and a server that can be switched, recording every
/// datagram. The task ends when the relay is dropped.
struct Relay {
    addr: SocketAddr,
    server: Arc<Mutex<SocketAddr>>,
    capture: Capture,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(server: SocketAddr) -> Relay {
        Relay::start_switching(server, None).await
    }

    /// A relay that switches to `then` by itself once it has passed the server's first
    /// datagram to the client (before the client can answer it).
    async fn start_switching(server: SocketAddr, mut then: Option<SocketAddr>) -> Relay {
        let front = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let back = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = front.local_addr().unwrap();
        let server = Arc::new(Mutex::new(server));
        let capture = Capture::default();
        let (to, log) = (Arc::clone(&server), Arc::clone(&capture));
        let task = tokio::spawn(async move {
            let mut client = None;
            let (mut a, mut b) = (vec![0u8; 65536], vec![0u8; 65536]);
            loop {
                tokio::select! {
                    got = front.recv_from(&mut a) => {
                        let (n, from) = got.unwrap();
                        client = Some(from);
                        log.lock().unwrap().push((Dir::ToServer, a[..n].to_vec()));
                        let server = *to.lock().unwrap();
                        back.send_to(&a[..n], server).await.unwrap();
                    }
                    got = back.recv_from(&mut b) => {
                        let (n, _) = got.unwrap();
                        log.lock().unwrap().push((Dir::ToClient, b[..n].to_vec()));
                        if let Some(next) = then.take() {
                            *to.lock().unwrap() = next;
                        }
                        if let Some(client) = client {
                            front.send_to(&b[..n], client).await.unwrap();
                        }
                    }
                }
            }
        });
        Relay {
            addr,
            server,
            capture,
            task,
        }
    }

    /// From now on, the client's datagrams go to `server`.
    fn switch(&self, server: SocketAddr) {
        *self.server.lock().unwrap() = server;
    }

    fn captured(&self) -> Vec<(Dir, Vec<u8>)> {
        self.capture.lock().unwrap().clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const ALPN: &[u8] = b"hq-test";

/// A server endpoint on 127.0.0.1 built as a generation with tag `tag` of the lineage of
/// `secrets`: its CIDs, reset key, token key and ticketer.
fn generation(pki: &handover_testkit::tls::Pki, secrets: &Secrets, tag: u8) -> quinn::Endpoint {
    let mut tls = (*crate::tls::server_config(&pki.cert, &pki.key, &[ALPN]).unwrap()).clone();
    tls.ticketer = secrets.ticketer();
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let server_config = quinn::ServerConfig::new(Arc::new(crypto), secrets.token_key());
    let mut endpoint_config = quinn::EndpointConfig::new(secrets.reset_key());
    let key = secrets.cid_key();
    endpoint_config.cid_generator(move || Box::new(TaggedCids::new(tag, key.clone())));
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    quinn::Endpoint::new(
        endpoint_config,
        Some(server_config),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .unwrap()
}

/// A client endpoint trusting the test CA, with a short idle timeout so that a connection
/// whose server is gone without a word ends within the test.
fn client(pki: &handover_testkit::tls::Pki) -> quinn::Endpoint {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(pki.client(&[ALPN])).unwrap();
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(Duration::from_secs(2).try_into().unwrap()));
    config.transport_config(Arc::new(transport));
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    client.set_default_client_config(config);
    client
}

/// Serves echo streams on `server` until it is closed.
fn echo(server: &quinn::Endpoint) -> tokio::task::JoinHandle<()> {
    echo_validating(server, false)
}

/// [`echo`]; with `retry`, a client whose address is not validated yet gets a Retry first.
fn echo_validating(server: &quinn::Endpoint, retry: bool) -> tokio::task::JoinHandle<()> {
    let server = server.clone();
    tokio::spawn(async move {
        while let Some(incoming) = server.accept().await {
            if retry && !incoming.remote_address_validated() {
                incoming.retry().unwrap();
                continue;
            }
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let Ok(got) = recv.read_to_end(1024).await else {
                        return;
                    };
                    let _ = send.write_all(&got).await;
                    let _ = send.finish();
                }
            });
        }
    })
}

/// One echo exchange on `conn`.
async fn ping(conn: &quinn::Connection) -> Result<(), String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(b"ping").await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    let got = recv.read_to_end(64).await.map_err(|e| e.to_string())?;
    (got == b"ping")
        .then_some(())
        .ok_or_else(|| format!("echo {got:?}"))
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
    let secrets = Secrets::random().unwrap();
    let key = secrets.cid_key();
    let server = generation(&pki, &secrets, TAG);
    let serving = echo(&server);
    let relay = Relay::start(server.local_addr().unwrap()).await;
    let client = client(&pki);

    let talk = async {
        let conn = client
            .connect(relay.addr, "localhost")
            .unwrap()
            .await
            .unwrap();
        ping(&conn).await.unwrap();
        conn.close(0u32.into(), b"done");
        client.wait_idle().await;
    };
    tokio::time::timeout(Duration::from_secs(20), talk)
        .await
        .expect("the exchange finished within 20 s");
    serving.abort();

    // quinn's client issues 8-byte CIDs (its default generator); the server ours.
    let mut kinds = HashMap::<(Dir, Kind), usize>::new();
    let mut client_dcid = None;
    let mut initial_to_our_cid = 0;
    for (i, (dir, datagram)) in relay.captured().iter().enumerate() {
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

/// Connects through a relay to generation 1 of `first`, switches the relay to `next` (a
/// server that never saw the connection), sends on the connection and returns how it ended.
async fn after_switch_to(first: &Secrets, next: &Secrets) -> quinn::ConnectionError {
    let dir = tempfile::tempdir().unwrap();
    let pki = handover_testkit::tls::Pki::new(dir.path());
    let old = generation(&pki, first, 1);
    let new = generation(&pki, next, 2);
    let (_old_serving, _new_serving) = (echo(&old), echo(&new));
    let relay = Relay::start(old.local_addr().unwrap()).await;
    let client = client(&pki);
    let run = async {
        let conn = client
            .connect(relay.addr, "localhost")
            .unwrap()
            .await
            .unwrap();
        ping(&conn).await.unwrap();
        relay.switch(new.local_addr().unwrap());
        // The new server has no such connection: the exchange cannot succeed.
        assert!(ping(&conn).await.is_err());
        conn.closed().await
    };
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the connection ended within 20 s")
}

#[tokio::test]
async fn the_next_generation_resets_a_connection_it_does_not_have() {
    // Same secret: the new server recognises the CID as its lineage's (validate) and its
    // reset token matches the one the old server gave with the CID, so the client takes the
    // reset at once.
    let first = Secrets::random().unwrap();
    let next = Secrets::from_bytes(first.to_bytes());
    let end = after_switch_to(&first, &next).await;
    assert!(matches!(end, quinn::ConnectionError::Reset), "{end:?}");
}

#[tokio::test]
async fn a_server_of_another_lineage_sends_no_reset() {
    // Another secret: the CID is not one of its own, so it sends nothing and the client
    // waits out its idle timeout (2 s).
    let first = Secrets::random().unwrap();
    let stranger = Secrets::random().unwrap();
    let end = after_switch_to(&first, &stranger).await;
    assert!(matches!(end, quinn::ConnectionError::TimedOut), "{end:?}");
}

/// Connects to a server of `first` that answers with a Retry; the relay hands the client's
/// next Initial (with the token) to a server of `next`. Returns whether that server found the
/// client's address validated (it read the token), and how the client's connection went.
async fn retry_token_across(
    first: &Secrets,
    next: &Secrets,
) -> (bool, Result<(), quinn::ConnectionError>) {
    let dir = tempfile::tempdir().unwrap();
    let pki = handover_testkit::tls::Pki::new(dir.path());
    let old = generation(&pki, first, 1);
    let new = generation(&pki, next, 2);
    // Only the old one sends a Retry; the new one takes what comes and says whether the
    // Initial's token validated the address.
    let _old_serving = echo_validating(&old, true);
    let new_serving = new.clone();
    let validated = tokio::spawn(async move {
        let incoming = new_serving.accept().await.unwrap();
        let validated = incoming.remote_address_validated();
        let server = new_serving.clone();
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            if let Ok((mut send, mut recv)) = conn.accept_bi().await {
                let got = recv.read_to_end(64).await.unwrap_or_default();
                let _ = send.write_all(&got).await;
                let _ = send.finish();
                conn.closed().await;
            }
            drop(server);
        });
        validated
    });
    let relay =
        Relay::start_switching(old.local_addr().unwrap(), Some(new.local_addr().unwrap())).await;
    let client = client(&pki);
    let run = async {
        let conn = client.connect(relay.addr, "localhost").unwrap().await?;
        ping(&conn).await.unwrap();
        conn.close(0u32.into(), b"done");
        Ok(())
    };
    let result = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the handshake ended within 20 s");
    // The relay's record: the old server's one datagram was the Retry.
    let from_old = relay.captured();
    let first_reply = from_old
        .iter()
        .find(|(dir, _)| *dir == Dir::ToClient)
        .unwrap();
    assert_eq!(parse(&first_reply.1, 8).map(|h| h.kind), Some(Kind::Retry));
    (validated.await.unwrap(), result)
}

#[tokio::test]
async fn a_retry_token_from_one_generation_validates_at_the_next() {
    let first = Secrets::random().unwrap();
    let next = Secrets::from_bytes(first.to_bytes());
    let (validated, result) = retry_token_across(&first, &next).await;
    assert!(validated, "the next generation did not accept the token");
    result.unwrap();
}

#[tokio::test]
async fn a_retry_token_from_another_lineage_is_not_understood() {
    // The stranger cannot open the token, so it proceeds as if there were none (RFC 9000,
    // 8.1.3) and does not echo the Retry's CID in its transport parameters: the client, which
    // did get a Retry, refuses the handshake.
    let first = Secrets::random().unwrap();
    let stranger = Secrets::random().unwrap();
    let (validated, result) = retry_token_across(&first, &stranger).await;
    assert!(!validated);
    let err = result.unwrap_err();
    assert!(
        matches!(err, quinn::ConnectionError::TransportError(_)),
        "{err:?}"
    );
}
