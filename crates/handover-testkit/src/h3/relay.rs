//! A loopback UDP relay that can hold back a client's datagrams ([`Relay`]).

use super::*;

/// A loopback UDP relay between one client and a server that can hold back the client's
/// datagrams: the first `pass` go through at once, the rest wait until [`Relay::release`].
/// With a first flight of two datagrams and `pass = 1`, the server has begun a handshake it
/// cannot finish until the test says so: the way to put an upgrade between the two halves.
pub struct Relay {
    /// Where the client sends (the relay's client-facing address).
    pub addr: SocketAddr,
    state: Arc<RelayState>,
    threads: Vec<JoinHandle<()>>,
}

#[derive(Default)]
struct RelayState {
    stop: AtomicBool,
    released: AtomicBool,
    /// Datagrams client -> server forwarded, held; server -> client forwarded.
    to_server: AtomicUsize,
    held: AtomicUsize,
    to_client: AtomicUsize,
}

impl Relay {
    /// A relay to `server` letting the client's first `pass` datagrams through.
    pub fn start(server: SocketAddr, pass: usize) -> Relay {
        let front = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind the relay");
        let back = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind the relay");
        back.connect(server).expect("connect the relay");
        for s in [&front, &back] {
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        }
        let addr = front.local_addr().unwrap();
        let state = Arc::new(RelayState::default());
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let up = {
            let (front, back) = (front.try_clone().unwrap(), back.try_clone().unwrap());
            let (state, client) = (Arc::clone(&state), Arc::clone(&client));
            thread::spawn(move || {
                let mut held: Vec<Vec<u8>> = Vec::new();
                let mut buf = vec![0u8; 65_536];
                let started = Instant::now();
                while !state.stop.load(Ordering::SeqCst) && started.elapsed() < MAX_LOAD {
                    if state.released.load(Ordering::SeqCst) {
                        for d in held.drain(..) {
                            let _ = back.send(&d);
                            state.to_server.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    let Ok((n, from)) = front.recv_from(&mut buf) else {
                        continue;
                    };
                    *client.lock().unwrap() = Some(from);
                    let sent = state.to_server.load(Ordering::SeqCst);
                    if sent < pass || state.released.load(Ordering::SeqCst) {
                        let _ = back.send(&buf[..n]);
                        state.to_server.fetch_add(1, Ordering::SeqCst);
                    } else {
                        held.push(buf[..n].to_vec());
                        state.held.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        };
        let down = {
            let (state, client) = (Arc::clone(&state), Arc::clone(&client));
            thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                let started = Instant::now();
                while !state.stop.load(Ordering::SeqCst) && started.elapsed() < MAX_LOAD {
                    let Ok(n) = back.recv(&mut buf) else { continue };
                    if let Some(c) = *client.lock().unwrap() {
                        let _ = front.send_to(&buf[..n], c);
                        state.to_client.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        };
        Relay {
            addr,
            state,
            threads: vec![up, down],
        }
    }

    /// Client datagrams held back so far.
    pub fn held(&self) -> usize {
        self.state.held.load(Ordering::SeqCst)
    }

    /// Server datagrams relayed to the client so far.
    pub fn to_client(&self) -> usize {
        self.state.to_client.load(Ordering::SeqCst)
    }

    /// Sends what was held, in order, and lets everything through from now on.
    pub fn release(&self) {
        self.state.released.store(true, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
