//! The public API: [`Handover::quic`] builds a quinn endpoint on the shared UDP socket, with
//! generation-tagged connection IDs, the lineage keys and the routing socket, and returns it as
//! an [`Endpoint`] the drain waits for.

use std::sync::Arc;

use crate::addr::ListenAddr;
use crate::drain::{ConnGuard, DrainSignal, UpgradeHook};
use crate::error::Error;
use crate::handover::Handover;
use crate::quic::channel;
use crate::quic::cid::{generation_tag, TaggedCids};
use crate::quic::keys::Secrets;
use crate::quic::route::Table;
use crate::quic::socket::{RoutingSocket, RoutingStats};
use crate::tls::rustls;

/// How [`Handover::quic`] sets up its endpoint.
#[derive(Debug, Clone)]
pub struct Options {
    /// Route datagrams between generations at an upgrade (default `true`). Without it the
    /// endpoint behaves like a [`crate::Datagram`]: only the serving generation reads the
    /// socket, so the old generation's connections starve at an upgrade (the baseline that
    /// shows what forwarding is for).
    pub forwarding: bool,
    /// quinn's transport settings (idle timeout, stream limits, ...); quinn's defaults if
    /// `None`.
    pub transport: Option<Arc<quinn::TransportConfig>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            forwarding: true,
            transport: None,
        }
    }
}

/// A quinn endpoint whose connections survive upgrades, from [`Handover::quic`].
///
/// Accept with `endpoint().accept()` as with any quinn endpoint, and keep accepting while
/// draining: a handshake that was in flight at the upgrade finishes here, with this
/// generation. The drain counts the endpoint as one connection: [`crate::Running::wait`]
/// returns once it is dropped (or at the drain deadline), so drop it when its connections
/// are closed (e.g. after `endpoint().wait_idle()`).
pub struct Endpoint {
    endpoint: quinn::Endpoint,
    addr: ListenAddr,
    generation: u64,
    socket: Arc<RoutingSocket>,
    shared: Arc<crate::drain::ServingState>,
    _guard: ConnGuard,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("addr", &self.addr)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// The quinn endpoint: `accept()`, `wait_idle()`, `close()`, ...
    pub fn endpoint(&self) -> &quinn::Endpoint {
        &self.endpoint
    }

    /// The address it is bound to (`udp://IP:PORT`, with the real port when `0` was asked for).
    pub fn local_addr(&self) -> &ListenAddr {
        &self.addr
    }

    /// This process's generation, which the connection IDs it issues name.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// What the routing socket has done so far.
    pub fn stats(&self) -> RoutingStats {
        self.socket.stats()
    }

    /// Resolves when this process starts draining (handing over or stopping): time to send
    /// HTTP/3 GOAWAY on its connections.
    pub fn drain_signal(&self) -> DrainSignal {
        DrainSignal::new(Arc::clone(&self.shared))
    }
}

/// What the shared socket's receive buffer is asked to hold: datagrams queue there while no
/// generation reads (the switch itself, or a serving process starved of CPU), and the default
/// (about 200 KiB) is a fraction of a second of a busy server's traffic. The kernel caps it at
/// `net.core.rmem_max`.
const RECV_BUFFER: usize = 4 * 1024 * 1024;

/// Best effort: a smaller buffer works, only with more loss under bursts.
fn grow_receive_buffer(socket: &std::net::UdpSocket, name: &str) {
    let s = socket2::SockRef::from(socket);
    if s.recv_buffer_size().is_ok_and(|n| n >= RECV_BUFFER) {
        return;
    }
    if let Err(e) = s.set_recv_buffer_size(RECV_BUFFER) {
        tracing::debug!("{name}: cannot grow the receive buffer: {e}");
    }
    if let Ok(n) = s.recv_buffer_size() {
        tracing::debug!("{name}: receive buffer {n} bytes");
    }
}

/// Tells the routing socket of each step of an upgrade attempt.
struct Hook {
    socket: Arc<RoutingSocket>,
    secret: [u8; 32],
    name: String,
}

impl UpgradeHook for Hook {
    fn prepare(&self, generation: u64) -> std::io::Result<Vec<(std::os::fd::OwnedFd, String)>> {
        self.socket.prepare(generation, &self.secret, |g| {
            channel::fd_name(g, &self.name)
        })
    }

    fn paused(&self) {
        self.socket.paused();
    }

    fn resumed(&self) {
        self.socket.resumed();
    }

    fn abandoned(&self) {
        self.socket.abandoned();
    }
}

impl Handover {
    /// A QUIC endpoint on the UDP socket at `addr` (`udp://IP:PORT`), named after the address
    /// (see [`Handover::quic_named`]). Feature `quic`; see [`crate::quic`].
    pub fn quic(
        &mut self,
        addr: &ListenAddr,
        tls: rustls::ServerConfig,
        options: Options,
    ) -> Result<Endpoint, Error> {
        self.quic_named(&addr.fd_name(), addr, tls, options)
    }

    /// A QUIC endpoint on the UDP socket at `addr` under `name`, inherited or bound as
    /// [`Handover::datagram_named`] does. Must run inside a tokio runtime.
    ///
    /// `tls` must allow TLS 1.3 (QUIC's only version) with the ring provider's
    /// `TLS13_AES_128_GCM_SHA256`, and its `max_early_data_size` must be 0 (no 0-RTT) or
    /// `u32::MAX`. Its session-ticket encrypter is replaced by one every generation shares,
    /// and its ALPN list, if empty, becomes `h3`.
    /// The endpoint reads nothing until [`Handover::ready`] has completed.
    pub fn quic_named(
        &mut self,
        name: &str,
        addr: &ListenAddr,
        mut tls: rustls::ServerConfig,
        options: Options,
    ) -> Result<Endpoint, Error> {
        let fail = |what: &str, e: &dyn std::fmt::Display| Error::Bind {
            addr: addr.clone(),
            source: std::io::Error::other(format!("QUIC endpoint {name}: {what}: {e}")),
        };
        // Checked before the socket is claimed, so that a refusal leaves nothing behind.
        if tls.max_early_data_size != 0 && tls.max_early_data_size != u32::MAX {
            let m = tls.max_early_data_size;
            return Err(fail(
                "the TLS configuration cannot serve QUIC",
                &format!("max_early_data_size is {m}; QUIC allows 0 (no 0-RTT) or u32::MAX"),
            ));
        }
        quinn::crypto::rustls::QuicServerConfig::try_from(tls.clone())
            .map_err(|e| fail("the TLS configuration cannot serve QUIC", &e))?;
        let socket: std::net::UdpSocket = self.shared_udp_socket(name, addr)?.into();
        let local = socket
            .local_addr()
            .map_err(|e| fail("no local address", &e))?;
        grow_receive_buffer(&socket, name);
        let generation = self.generation();
        let inherited = if options.forwarding {
            channel::claim(self.channels(), name, generation)?
        } else {
            channel::Inherited::default()
        };
        let secrets = match inherited.parent {
            Some(p) => channel::read_keys(&inherited.peers[&p], name, p)
                .map_err(|e| fail("no keys from the previous generation", &e))?,
            None => Secrets::random().map_err(|e| fail("cannot make keys", &e))?,
        };
        let tag = generation_tag(generation);
        let cid_key = secrets.cid_key();
        let socket = Arc::new(
            RoutingSocket::new(
                socket,
                name.to_string(),
                generation,
                Table::new(generation, cid_key.clone()),
                inherited.peers,
                options.forwarding,
            )
            .map_err(|e| fail("cannot set up the socket", &e))?,
        );

        let mut config = quinn::EndpointConfig::new(secrets.reset_key());
        config.cid_generator(move || Box::new(TaggedCids::new(tag, cid_key.clone())));
        tls.ticketer = secrets.ticketer();
        if tls.alpn_protocols.is_empty() {
            tls.alpn_protocols = vec![b"h3".to_vec()];
        }
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| fail("the TLS configuration cannot serve QUIC", &e))?;
        let mut server = quinn::ServerConfig::new(Arc::new(crypto), secrets.token_key());
        if let Some(t) = options.transport {
            server.transport_config(t);
        }
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            config,
            Some(server),
            Arc::clone(&socket) as Arc<dyn quinn::AsyncUdpSocket>,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|e| fail("cannot start the endpoint", &e))?;

        let shared = Arc::clone(self.shared());
        shared.add_upgrade_hook(Arc::new(Hook {
            socket: Arc::clone(&socket),
            secret: secrets.to_bytes(),
            name: name.to_string(),
        }));
        let start = Arc::clone(&socket);
        let parent = inherited.parent;
        let serving = Arc::clone(&shared);
        tokio::spawn(async move {
            serving.serving().await;
            start.start_serving(parent);
        });
        tracing::debug!("QUIC endpoint {name} on {local}, generation {generation}");
        Ok(Endpoint {
            endpoint,
            addr: ListenAddr::Udp(local),
            generation,
            socket,
            _guard: shared.track(),
            shared,
        })
    }
}
