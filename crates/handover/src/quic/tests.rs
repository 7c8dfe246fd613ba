//! The routing socket on loopback, in one process: quinn endpoints on it, a quinn client, and
//! two generations sharing one UDP socket the way two processes do after an upgrade.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::quic::channel;
use crate::quic::cid::{generation_tag, CidKey, TaggedCids};
use crate::quic::keys::Secrets;
use crate::quic::route::Table;
use crate::quic::socket::RoutingSocket;
use crate::tls::rustls;

/// A bound on every wait here: a hang fails the test instead of stalling it.
const LIMIT: Duration = Duration::from_secs(10);

/// Reads `socket` (as quinn does, 8 buffers at a time) until `want` datagrams were delivered,
/// each in a buffer of its own (no GRO batch handed to quinn); panics with `what` after
/// [`LIMIT`].
pub(crate) async fn delivered(
    socket: &dyn quinn::AsyncUdpSocket,
    want: usize,
    what: &str,
) -> Vec<(Vec<u8>, SocketAddr)> {
    use quinn::udp::RecvMeta;
    let mut got: Vec<(Vec<u8>, SocketAddr)> = Vec::new();
    let mut storage = vec![vec![0u8; 65536]; 8];
    tokio::time::timeout(LIMIT, async {
        while got.len() < want {
            let mut bufs: Vec<std::io::IoSliceMut<'_>> = storage
                .iter_mut()
                .map(|b| std::io::IoSliceMut::new(b))
                .collect();
            let mut metas = [RecvMeta::default(); 8];
            let n = std::future::poll_fn(|cx| socket.poll_recv(cx, &mut bufs, &mut metas))
                .await
                .unwrap();
            for (m, b) in metas[..n].iter().zip(&bufs) {
                assert_eq!(m.stride, m.len, "one datagram per buffer for quinn");
                got.push((b[..m.len].to_vec(), m.addr));
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}"));
    got
}

pub(crate) struct Certs {
    pub server: rustls::ServerConfig,
    pub client: quinn::ClientConfig,
}

/// A self-signed certificate for `localhost`, a TLS 1.3 server with it, a client trusting it.
pub(crate) fn certs() -> Certs {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = made.cert.der().clone();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(made.key_pair.serialize_der());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key.into())
        .unwrap();
    server.alpn_protocols = vec![b"test".to_vec()];
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"test".to_vec()];
    let client = quinn::crypto::rustls::QuicClientConfig::try_from(client).unwrap();
    Certs {
        server,
        client: quinn::ClientConfig::new(Arc::new(client)),
    }
}

/// One generation: its routing socket and a quinn endpoint on it.
struct Generation {
    socket: Arc<RoutingSocket>,
    endpoint: quinn::Endpoint,
}

fn generation(
    udp: std::net::UdpSocket,
    number: u64,
    secrets: &Secrets,
    peers: HashMap<u64, std::os::unix::net::UnixDatagram>,
    tls: rustls::ServerConfig,
    forwarding: bool,
) -> Generation {
    let key = secrets.cid_key();
    let socket = Arc::new(
        RoutingSocket::new(
            udp,
            "udp_test".into(),
            number,
            Table::new(number, key.clone()),
            peers,
            forwarding,
        )
        .unwrap(),
    );
    let tag = generation_tag(number);
    let mut config = quinn::EndpointConfig::new(secrets.reset_key());
    config.cid_generator(move || Box::new(TaggedCids::new(tag, key.clone())));
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let server = quinn::ServerConfig::new(Arc::new(crypto), secrets.token_key());
    let endpoint = quinn::Endpoint::new_with_abstract_socket(
        config,
        Some(server),
        Arc::clone(&socket) as Arc<dyn quinn::AsyncUdpSocket>,
        Arc::new(quinn::TokioRuntime),
    )
    .unwrap();
    Generation { socket, endpoint }
}

/// Answers every bidirectional stream of every connection with what it read, prefixed by
/// `who`, until the endpoint is closed.
fn echo(endpoint: quinn::Endpoint, who: &'static str) {
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    tokio::spawn(async move {
                        let got = recv.read_to_end(1 << 16).await.unwrap_or_default();
                        let mut answer = who.as_bytes().to_vec();
                        answer.extend_from_slice(&got);
                        let _ = send.write_all(&answer).await;
                        let _ = send.finish();
                    });
                }
            });
        }
    });
}

async fn ask(conn: &quinn::Connection, what: &str) -> String {
    let run = async {
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(what.as_bytes()).await?;
        send.finish()?;
        let answer = recv.read_to_end(1 << 16).await?;
        Ok::<_, Box<dyn std::error::Error>>(String::from_utf8(answer)?)
    };
    match tokio::time::timeout(LIMIT, run).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => panic!("request {what:?} failed: {e}"),
        Err(_) => panic!("request {what:?} timed out"),
    }
}

fn bound_udp() -> (std::net::UdpSocket, SocketAddr) {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_nonblocking(true).unwrap();
    let a = s.local_addr().unwrap();
    (s, a)
}

async fn client_to(addr: SocketAddr, config: quinn::ClientConfig) -> quinn::Connection {
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    client.set_default_client_config(config);
    tokio::time::timeout(LIMIT, client.connect(addr, "localhost").unwrap())
        .await
        .expect("handshake timed out")
        .expect("handshake failed")
}

/// One generation alone: the endpoint reads nothing before it serves, then works.
#[tokio::test]
async fn one_generation_serves_once_started() {
    let certs = certs();
    let (udp, addr) = bound_udp();
    let secrets = Secrets::random().unwrap();
    let g1 = generation(udp, 1, &secrets, HashMap::new(), certs.server, true);
    echo(g1.endpoint.clone(), "g1:");
    let early = tokio::spawn(client_to(addr, certs.client.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!early.is_finished(), "a handshake completed before serving");
    g1.socket.start_serving(None);
    let conn = tokio::time::timeout(LIMIT, early).await.unwrap().unwrap();
    assert_eq!(ask(&conn, "hi").await, "g1:hi");
    assert!(g1.socket.stats().delivered > 0);
    assert_eq!(g1.socket.stats().forwarded_out, 0);
}

/// An upgrade in one process, as attempt.rs drives it: the channel (`prepare`), the pause,
/// then generation 2 reads the shared socket. Returns the client's connection to generation 1
/// and both generations.
async fn upgrade_in_process(
    forwarding: bool,
) -> (quinn::Connection, Generation, Generation, SocketAddr, Certs) {
    let certs = certs();
    let (udp, addr) = bound_udp();
    let udp2 = udp.try_clone().unwrap();
    let secrets = Secrets::random().unwrap();
    let g1 = generation(
        udp,
        1,
        &secrets,
        HashMap::new(),
        certs.server.clone(),
        forwarding,
    );
    echo(g1.endpoint.clone(), "g1:");
    g1.socket.start_serving(None);
    let old = client_to(addr, certs.client.clone()).await;
    assert_eq!(ask(&old, "before").await, "g1:before");

    let mut fds = g1
        .socket
        .prepare(2, &secrets.to_bytes(), |g| channel::fd_name(g, "udp_test"))
        .unwrap();
    let inherited = channel::claim(&mut fds, "udp_test", 2).unwrap();
    assert_eq!(inherited.parent, forwarding.then_some(1));
    let keys = match inherited.parent {
        Some(p) => channel::read_keys(&inherited.peers[&p], "udp_test", p).unwrap(),
        None => Secrets::from_bytes(secrets.to_bytes()),
    };
    assert_eq!(keys.to_bytes(), secrets.to_bytes());
    let g2 = generation(
        udp2,
        2,
        &keys,
        inherited.peers,
        certs.server.clone(),
        forwarding,
    );
    echo(g2.endpoint.clone(), "g2:");
    g1.socket.paused();
    g2.socket.start_serving(inherited.parent);
    (old, g1, g2, addr, certs)
}

/// Generation 2 becomes the only reader of the shared socket, and a connection made with
/// generation 1 keeps working through it, its datagrams forwarded; a new connection goes to
/// generation 2.
#[tokio::test]
async fn a_connection_survives_the_switch_of_reader() {
    let (old, g1, g2, addr, certs) = upgrade_in_process(true).await;
    for i in 0..20 {
        let q = format!("after {i}");
        assert_eq!(ask(&old, &q).await, format!("g1:{q}"));
    }
    let new = client_to(addr, certs.client.clone()).await;
    assert_eq!(ask(&new, "new").await, "g2:new");
    let (s1, s2) = (g1.socket.stats(), g2.socket.stats());
    assert!(s2.forwarded_out >= 20, "{s2:?}");
    assert!(s1.forwarded_in >= 20, "{s1:?}");
}

/// The same without forwarding (the baseline): the old connection's datagrams reach
/// generation 2, which does not know it, and its next request fails.
#[tokio::test]
async fn without_forwarding_the_old_connection_is_lost() {
    let (old, _g1, g2, addr, certs) = upgrade_in_process(false).await;
    assert!(ask_fails(&old).await, "the old connection still answered");
    let new = client_to(addr, certs.client.clone()).await;
    assert_eq!(ask(&new, "new").await, "g2:new");
    assert_eq!(g2.socket.stats().forwarded_out, 0);
}

/// Whether a request on `conn` fails (reset, closed or timed out) within [`LIMIT`].
async fn ask_fails(conn: &quinn::Connection) -> bool {
    let r = tokio::time::timeout(LIMIT, async {
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(b"x").await?;
        send.finish()?;
        recv.read_to_end(16).await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })
    .await;
    matches!(r, Ok(Err(_)) | Err(_))
}

#[test]
fn cid_keys_of_one_secret_agree() {
    let s = Secrets::random().unwrap();
    let again = Secrets::from_bytes(s.to_bytes());
    let mut gen = TaggedCids::new(7, s.cid_key());
    let cid = quinn::ConnectionIdGenerator::generate_cid(&mut gen);
    let key: CidKey = again.cid_key();
    assert_eq!(key.tag_of(&cid), Some(7));
}

/// Datagrams sent in one GSO batch (which loopback may hand over as one GRO batch) are
/// routed one by one: the older generation's goes out on its channel with the client's
/// address, this generation's two reach its endpoint, each alone.
#[tokio::test]
async fn a_batch_is_split_before_routing() {
    use quinn::udp::{Transmit, UdpSocketState};
    let secrets = Secrets::random().unwrap();
    let key = secrets.cid_key();
    let (udp, addr) = bound_udp();
    let (to_old, old_end) = channel::pair().unwrap();
    let socket = RoutingSocket::new(
        udp,
        "udp_test".into(),
        2,
        Table::new(2, key.clone()),
        HashMap::from([(1, to_old)]),
        true,
    )
    .unwrap();
    socket.start_serving(None);

    let cid = |g: u64| {
        quinn::ConnectionIdGenerator::generate_cid(&mut TaggedCids::new(
            generation_tag(g),
            key.clone(),
        ))
    };
    let packet = |g: u64, fill: u8| {
        let mut p = vec![0x43];
        p.extend_from_slice(&cid(g));
        p.resize(1200, fill);
        p
    };
    let (old, mine1, mine2) = (packet(1, 0xa1), packet(2, 0xb2), packet(2, 0xc3));
    let batch = [&old[..], &mine1, &mine2].concat();
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let client_addr = client.local_addr().unwrap();
    let state = UdpSocketState::new((&client).into()).unwrap();
    let segment_size = (state.max_gso_segments() > 1).then_some(1200);
    let datagrams: Vec<&[u8]> = match segment_size {
        Some(_) => vec![&batch[..]],
        None => batch.chunks(1200).collect(),
    };
    for contents in datagrams {
        let t = Transmit {
            destination: addr,
            ecn: None,
            contents,
            segment_size: segment_size.filter(|_| contents.len() > 1200),
            src_ip: None,
        };
        state.send((&client).into(), &t).unwrap();
    }

    let got =
        crate::quic::tests::delivered(&socket, 2, "this generation's datagrams were not delivered")
            .await;
    assert!(
        got[0] == (mine1, client_addr),
        "first delivered: {:?}",
        got[0].1
    );
    assert!(
        got[1] == (mine2, client_addr),
        "second delivered: {:?}",
        got[1].1
    );

    let mut buf = vec![0u8; crate::quic::wire::MAX_MESSAGE];
    let n = old_end.recv(&mut buf).unwrap();
    match crate::quic::wire::decode(&buf[..n]).unwrap() {
        crate::quic::wire::Message::Forward { src, payload, .. } => {
            assert!(payload == &old[..], "another datagram was forwarded");
            assert_eq!(src, client_addr);
        }
        other => panic!("{other:?}"),
    }
    let s = socket.stats();
    assert_eq!((s.forwarded_out, s.delivered), (1, 2), "{s:?}");
}

/// What `Handover::quic` refuses says what and where.
#[tokio::test]
async fn errors_name_the_socket_and_the_fault() {
    let mut handover = crate::Handover::builder().build().unwrap();
    let mut tls = certs().server;
    tls.max_early_data_size = 1000; // QUIC allows 0 or u32::MAX
    let addr: crate::ListenAddr = "udp://127.0.0.1:0".parse().unwrap();
    let e = handover
        .quic(&addr, tls, crate::quic::Options::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("QUIC endpoint udp_127.0.0.1_0")
            && e.contains("the TLS configuration cannot serve QUIC"),
        "{e}"
    );
    let tcp: crate::ListenAddr = "127.0.0.1:0".parse().unwrap();
    let e = handover
        .quic(&tcp, certs().server, crate::quic::Options::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("udp://IP:PORT"), "{e}");
    // A good one, on a free port, with its real address; the refusals left the name free.
    let ok = handover
        .quic(&addr, certs().server, crate::quic::Options::default())
        .unwrap();
    assert!(matches!(ok.local_addr(), crate::ListenAddr::Udp(a) if a.port() != 0));
    assert_eq!(ok.generation(), 1);
}
