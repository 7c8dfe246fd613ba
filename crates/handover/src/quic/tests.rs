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
) -> Generation {
    let key = secrets.cid_key();
    let socket = Arc::new(
        RoutingSocket::new(
            udp,
            "udp_test".into(),
            number,
            Table::new(number, key.clone()),
            peers,
            true,
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
    let g1 = generation(udp, 1, &secrets, HashMap::new(), certs.server);
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

/// An upgrade in one process: generation 2 becomes the only reader of the shared socket, and
/// a connection made with generation 1 keeps working through it, its datagrams forwarded;
/// a new connection goes to generation 2.
#[tokio::test]
async fn a_connection_survives_the_switch_of_reader() {
    let certs = certs();
    let (udp, addr) = bound_udp();
    let udp2 = udp.try_clone().unwrap();
    let secrets = Secrets::random().unwrap();
    let g1 = generation(udp, 1, &secrets, HashMap::new(), certs.server.clone());
    echo(g1.endpoint.clone(), "g1:");
    g1.socket.start_serving(None);
    let old = client_to(addr, certs.client.clone()).await;
    assert_eq!(ask(&old, "before").await, "g1:before");

    // The upgrade: the channel, then the pause, then the new generation starts reading.
    let fds = g1
        .socket
        .prepare(2, &secrets.to_bytes(), |g| channel::fd_name(g, "udp_test"))
        .unwrap();
    let mut fds: Vec<_> = fds.into_iter().collect();
    let inherited = channel::claim(&mut fds, "udp_test", 2).unwrap();
    assert_eq!(inherited.parent, Some(1));
    let parent = &inherited.peers[&1];
    let keys = channel::read_keys(parent, "udp_test", 1).unwrap();
    assert_eq!(keys.to_bytes(), secrets.to_bytes());
    let g2 = generation(udp2, 2, &keys, inherited.peers, certs.server);
    echo(g2.endpoint.clone(), "g2:");
    g1.socket.paused();
    g2.socket.start_serving(Some(1));

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

#[test]
fn cid_keys_of_one_secret_agree() {
    let s = Secrets::random().unwrap();
    let again = Secrets::from_bytes(s.to_bytes());
    let mut gen = TaggedCids::new(7, s.cid_key());
    let cid = quinn::ConnectionIdGenerator::generate_cid(&mut gen);
    let key: CidKey = again.cid_key();
    assert_eq!(key.tag_of(&cid), Some(7));
}
