//! Start-up: read what was inherited, hand out listeners, and complete the readiness handshake.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::addr::{is_valid_fd_name, ListenAddr};
use crate::attempt::{UpgradeConfig, Upgraded, GO_AHEAD, READY};
use crate::drain::ServingState;
use crate::env::{self, Parsed};
use crate::error::Error;
use crate::lineage::{AfterGoAhead, Predecessor, UpgradeRecord, MAX_RECORD};
use crate::listener::{self, InheritedSocket, Listener, ListenerInner};
use crate::running::{Finish, LastUpgrade, Running, Signals};
use crate::systemd::Notifier;
use crate::{os, pidfile, spawn};

/// Default time a new generation has to become ready before it is killed.
pub const DEFAULT_UPGRADE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time in-flight work gets to finish after a stop or handover.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time an idle HTTP keep-alive connection is kept open once draining.
pub const DEFAULT_IDLE_GRACE: Duration = Duration::from_secs(1);
/// Default bound on a TLS handshake (see [`Builder::tls_handshake_timeout`]).
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The `LISTEN_FDNAMES` name of the control socket passed between generations.
#[cfg(feature = "control")]
const CONTROL_FD_NAME: &str = "handover-control";

/// Default listen backlog.
pub const DEFAULT_BACKLOG: i32 = 1024;

/// Configures a [`Handover`]. Create with [`Handover::builder`].
#[derive(Debug, Clone)]
pub struct Builder {
    upgrade_timeout: Duration,
    drain_timeout: Duration,
    lame_duck: Duration,
    idle_grace: Duration,
    tls_handshake_timeout: Duration,
    backlog: i32,
    pid_file: Option<PathBuf>,
    executable: Option<PathBuf>,
    control_socket: Option<PathBuf>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            upgrade_timeout: DEFAULT_UPGRADE_TIMEOUT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            lame_duck: Duration::ZERO,
            idle_grace: DEFAULT_IDLE_GRACE,
            tls_handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
            backlog: DEFAULT_BACKLOG,
            pid_file: None,
            executable: None,
            control_socket: None,
        }
    }
}

impl Builder {
    /// How long a new generation may take to call [`Handover::ready`] (default 60 s). Past
    /// it, the new process is killed and this one keeps serving.
    pub fn upgrade_timeout(mut self, t: Duration) -> Self {
        self.upgrade_timeout = t;
        self
    }

    /// How long connections may take to finish once draining starts (default 30 s).
    pub fn drain_timeout(mut self, t: Duration) -> Self {
        self.drain_timeout = t;
        self
    }

    /// How long a graceful stop keeps serving before it drains (default zero: the drain
    /// starts at once). For that long after the first `SIGTERM`/`SIGINT`, [`Running::stop`]
    /// or `handover stop`, the process accepts and serves as before while its [`Health`]
    /// fails (`/healthz` answers 503 with [`crate::http::HealthCheck`]), so that a load
    /// balancer or Kubernetes takes it out of rotation before it stops accepting; then the
    /// usual drain (bounded by the drain timeout) follows. A second stop signal still exits
    /// at once. Upgrades are not stops: they never wait for it, and health stays good
    /// through them; that holds under `handover run` too, which tells a worker it replaces
    /// that it is replaced before the stop signal (the worker then stops accepting at once and
    /// drains at the signal, lame duck or not).
    ///
    /// [`Running::stop`]: crate::Running::stop
    /// [`Health`]: crate::Health
    pub fn lame_duck(mut self, t: Duration) -> Self {
        self.lame_duck = t;
        self
    }

    /// How long an idle HTTP keep-alive connection stays open once draining (default 1 s),
    /// so that a client about to reuse it is not cut off. Used by [`crate::http`].
    pub fn idle_grace(mut self, t: Duration) -> Self {
        self.idle_grace = t;
        self
    }

    /// How long a TLS handshake may take (default 10 s), counted from the accept; past it the
    /// connection is closed. A handshake in progress when draining starts is finished, within
    /// this bound, so the drain waits no longer than that for it. Used by [`crate::tls`] and
    /// [`crate::http::serve_tls`].
    #[cfg(feature = "tls")]
    pub fn tls_handshake_timeout(mut self, t: Duration) -> Self {
        self.tls_handshake_timeout = t;
        self
    }

    /// Backlog of sockets bound by this process (default 1024).
    pub fn backlog(mut self, backlog: i32) -> Self {
        self.backlog = backlog;
        self
    }

    /// Writes this process's PID to `path` once ready, atomically; each generation rewrites
    /// it, and the final stop removes it.
    pub fn pid_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.pid_file = Some(path.into());
        self
    }

    /// Answers `handover upgrade`, `handover status` and `handover stop` on a Unix socket at
    /// `path` (mode 0600, same uid or root only; the protocol is `handover::control_socket`,
    /// public with the `supervisor` feature). Every
    /// generation answers on the same socket; the final stop removes it.
    #[cfg(feature = "control")]
    pub fn control_socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.control_socket = Some(path.into());
        self
    }

    /// The executable an upgrade runs. By default, the path this process was started from
    /// (`argv[0]` made absolute against the start-up directory, or found in `PATH`), not
    /// canonicalised: a replaced file, or a re-pointed `current -> releases/vN` symlink, is
    /// what runs.
    pub fn executable(mut self, path: impl Into<PathBuf>) -> Self {
        self.executable = Some(path.into());
        self
    }

    /// Reads and removes the inheritance variables, validates inherited sockets and blocks
    /// the upgrade signals until [`Handover::ready`].
    ///
    /// Call this early in `main`, before the async runtime starts threads: it changes the
    /// process environment, which is only sound while the process has one thread.
    pub fn build(self) -> Result<Handover, Error> {
        // Threads started from here on inherit the mask, so an early SIGUSR2/SIGHUP waits
        // instead of killing the process (a new generation already starts with them blocked).
        spawn::set_upgrade_signals_blocked(true);
        let me = spawn::own_pid();
        let parsed = env::parse(|k| std::env::var_os(k), me)?;
        let generation = match &parsed {
            Parsed::Inherited(inh) => inh.generation.unwrap_or(1),
            _ => 1,
        };
        for var in env::PROTOCOL_VARS {
            // Sound here: documented to run before other threads exist.
            std::env::remove_var(var);
        }
        let mut channels = Vec::new();
        let (inherited, readiness) = match parsed {
            Parsed::Inherited(mut inh) => {
                // The previous generation's QUIC channels are Unix datagram sockets, not
                // listeners: kept apart, for `Handover::quic`.
                let (chans, fds): (Vec<_>, Vec<_>) = inh.fds.into_iter().partition(|f| {
                    f.name
                        .as_deref()
                        .is_some_and(|n| n.starts_with(listener::CHANNEL_FD_PREFIX))
                });
                inh.fds = fds;
                channels = listener::adopt_channel_fds(chans)?;
                let sockets = listener::adopt_inherited(&inh.fds, &inh.owned)?;
                let readiness = match inh.readiness_fd {
                    Some(fd) => Some(adopt_readiness_fd(fd)?),
                    None => None,
                };
                tracing::debug!(
                    "inherited {} listening sockets{}",
                    sockets.len(),
                    if readiness.is_some() {
                        " from the previous generation"
                    } else {
                        ""
                    }
                );
                (sockets, readiness)
            }
            Parsed::NotForUs { listen_pid } => {
                tracing::warn!(
                    "LISTEN_PID={listen_pid} is not this process ({me}); ignoring LISTEN_FDS"
                );
                (Vec::new(), None)
            }
            Parsed::Ignored { reason } => {
                tracing::warn!("ignoring inherited sockets: {reason}");
                (Vec::new(), None)
            }
            Parsed::Nothing => (Vec::new(), None),
        };
        let cwd = std::env::current_dir().map_err(Error::Executable)?;
        let args: Vec<OsString> = std::env::args_os().collect();
        let exe = match self.executable {
            Some(p) => os::absolute(&cwd, &p),
            None => resolve_executable(&cwd, args.first()).map_err(Error::Executable)?,
        };
        Ok(Handover {
            shared: ServingState::new(
                self.drain_timeout,
                self.idle_grace,
                self.tls_handshake_timeout,
                self.lame_duck,
            ),
            inherited,
            channels,
            readiness,
            backlog: self.backlog,
            names: HashSet::new(),
            upgrade: UpgradeConfig {
                exe,
                args,
                cwd,
                timeout: self.upgrade_timeout,
                generation,
            },
            control_socket: self.control_socket,
            pid_file: self.pid_file,
            notifier: Notifier::from_env(|k| std::env::var_os(k)),
        })
    }
}

fn adopt_readiness_fd(fd: i32) -> Result<std::os::unix::net::UnixStream, Error> {
    let bad = |reason: String| Error::Inherited {
        fd,
        name: Some(env::HANDOVER_SYNC_FD.to_string()),
        reason,
    };
    match os::is_socket(fd) {
        Err(e) => return Err(bad(format!("is not open ({e})"))),
        Ok(false) => return Err(bad("is not a socket".into())),
        Ok(true) => {}
    }
    let s: std::os::unix::net::UnixStream = os::claim_inherited(fd);
    let sock = socket2::SockRef::from(&s);
    sock.set_cloexec(true)
        .map_err(|e| bad(format!("cannot set close-on-exec: {e}")))?;
    Ok(s)
}

/// `argv[0]` with a slash is a path (made absolute); without one it was found in `PATH`.
fn resolve_executable(cwd: &Path, argv0: Option<&OsString>) -> std::io::Result<PathBuf> {
    match argv0.and_then(|a| os::find_program(Path::new(a), cwd)) {
        Some(p) => Ok(p),
        None => std::env::current_exe(),
    }
}

/// This process's part in the handover protocol, before it serves. Created by
/// [`Handover::builder`] or [`Handover::from_env`].
///
/// Ask it for listeners with [`Handover::listen`], then call [`Handover::ready`] when the
/// server can take traffic.
#[derive(Debug)]
pub struct Handover {
    shared: Arc<ServingState>,
    inherited: Vec<InheritedSocket>,
    /// Channels to older generations (`quicfwd_g<N>_<socket>`), claimed by `Handover::quic`.
    #[cfg_attr(not(feature = "quic"), allow(dead_code))]
    channels: Vec<(std::os::fd::OwnedFd, String)>,
    readiness: Option<std::os::unix::net::UnixStream>,
    backlog: i32,
    names: HashSet<String>,
    upgrade: UpgradeConfig,
    pid_file: Option<PathBuf>,
    notifier: Option<Notifier>,
    control_socket: Option<PathBuf>,
}

impl Handover {
    /// A builder with the defaults.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// This process's health, for a health endpoint built before [`Handover::ready`] (it
    /// turns healthy once `ready()` has completed).
    pub fn health(&self) -> crate::Health {
        crate::Health::new(Arc::clone(&self.shared))
    }

    /// [`Builder::build`] with the defaults.
    pub fn from_env() -> Result<Self, Error> {
        Builder::default().build()
    }

    /// Whether a previous generation started this process (an upgrade in progress).
    pub fn is_upgrade(&self) -> bool {
        self.readiness.is_some()
    }

    /// Resolves when this process starts draining; usable before [`Handover::ready`], for
    /// serving loops started early.
    pub fn drain_signal(&self) -> crate::DrainSignal {
        crate::DrainSignal::new(Arc::clone(&self.shared))
    }

    /// A listener for `addr`, named after the address (see [`Handover::listen_named`]).
    pub fn listen(&mut self, addr: &ListenAddr) -> Result<Listener, Error> {
        self.listen_named(&addr.fd_name(), addr)
    }

    /// A listener for `addr` under `name`. Must run inside a tokio runtime.
    ///
    /// An inherited socket is used when one matches, in this order: the same name in
    /// `LISTEN_FDNAMES`; else the same local address exactly (IP and port, or Unix path;
    /// never for port 0). Otherwise a new socket is bound. The next generation gets it under
    /// `name`, so asking for the same name and address again always finds it, even when
    /// port 0 picked a free port.
    ///
    /// A `udp://` address is an error here ([`Error::Bind`]): datagram sockets are served by
    /// [`Handover::datagram_named`].
    pub fn listen_named(&mut self, name: &str, addr: &ListenAddr) -> Result<Listener, Error> {
        if matches!(addr, ListenAddr::Udp(_)) {
            return Err(Error::Bind {
                addr: addr.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "a udp:// address is a datagram socket: use Handover::datagram, not listen",
                ),
            });
        }
        let inner = match self.claim(name, addr)? {
            Some(s) => {
                let owned_path = match (&s.addr, s.owned) {
                    (ListenAddr::Unix(p), true) => Some(p.clone()),
                    _ => None,
                };
                tracing::debug!("using inherited socket for {} as {name}", s.addr);
                ListenerInner::from_socket(s.socket, s.addr, name.to_string(), owned_path).map_err(
                    |source| Error::Bind {
                        addr: addr.clone(),
                        source,
                    },
                )?
            }
            None => {
                let bind_err = |source| Error::Bind {
                    addr: addr.clone(),
                    source,
                };
                let (socket, owned_path) = listener::bind(addr, self.backlog).map_err(bind_err)?;
                let local = match addr {
                    ListenAddr::Tcp(_) => socket
                        .local_addr()
                        .ok()
                        .and_then(|a| a.as_socket())
                        .map(ListenAddr::Tcp)
                        .unwrap_or_else(|| addr.clone()),
                    ListenAddr::Unix(_) | ListenAddr::Udp(_) => addr.clone(),
                };
                ListenerInner::from_socket(socket, local, name.to_string(), owned_path)
                    .map_err(bind_err)?
            }
        };
        let inner = Arc::new(inner);
        self.shared
            .listeners
            .lock()
            .expect("not poisoned")
            .push(Arc::clone(&inner));
        Ok(Listener {
            inner,
            shared: Arc::clone(&self.shared),
        })
    }

    /// A UDP socket for `addr` (`udp://IP:PORT`), named after the address (see
    /// [`Handover::datagram_named`]).
    pub fn datagram(&mut self, addr: &ListenAddr) -> Result<crate::Datagram, Error> {
        self.datagram_named(&addr.fd_name(), addr)
    }

    /// A UDP socket for `addr` under `name`, matched to an inherited socket exactly as
    /// [`Handover::listen_named`] does (a datagram socket passed by systemd's
    /// `ListenDatagram=` included), else bound anew. Must run inside a tokio runtime. See
    /// [`crate::Datagram`] for how it behaves at a handover.
    pub fn datagram_named(
        &mut self,
        name: &str,
        addr: &ListenAddr,
    ) -> Result<crate::Datagram, Error> {
        let socket = self.shared_udp_socket(name, addr)?;
        crate::datagram::Datagram::new(socket, name.to_string(), Arc::clone(&self.shared)).map_err(
            |source| Error::Bind {
                addr: addr.clone(),
                source,
            },
        )
    }

    /// The UDP socket for `addr` under `name` (inherited, else bound), registered to be passed
    /// to the next generation.
    pub(crate) fn shared_udp_socket(
        &mut self,
        name: &str,
        addr: &ListenAddr,
    ) -> Result<socket2::Socket, Error> {
        let ListenAddr::Udp(sa) = addr else {
            return Err(Error::Bind {
                addr: addr.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "a datagram socket needs a udp://IP:PORT address",
                ),
            });
        };
        let bind_err = |source| Error::Bind {
            addr: addr.clone(),
            source,
        };
        let socket = match self.claim(name, addr)? {
            Some(s) => {
                tracing::debug!("using inherited socket for {} as {name}", s.addr);
                s.socket
            }
            None => os::bind_udp(*sa).map_err(bind_err)?,
        };
        let dup = socket.try_clone().map_err(bind_err)?;
        self.shared
            .extra_fds
            .lock()
            .expect("not poisoned")
            .push((dup.into(), name.to_string()));
        Ok(socket)
    }

    /// The state this process's listeners and connections share.
    #[cfg_attr(not(feature = "quic"), allow(dead_code))]
    pub(crate) fn shared(&self) -> &Arc<ServingState> {
        &self.shared
    }

    /// This process's generation (1 for the first).
    #[cfg_attr(not(feature = "quic"), allow(dead_code))]
    pub(crate) fn generation(&self) -> u64 {
        self.upgrade.generation
    }

    /// The inherited channels to older generations not claimed yet (see `quic/channel.rs`).
    #[cfg_attr(not(feature = "quic"), allow(dead_code))]
    pub(crate) fn channels(&mut self) -> &mut Vec<(std::os::fd::OwnedFd, String)> {
        &mut self.channels
    }

    /// Reserves `name` and takes the inherited socket that matches it, by name, else by
    /// address (never for port 0). A socket inherited under `name` that is of the other kind
    /// (datagram for a stream listener, or the reverse) is an error, not a silent rebind.
    fn claim(&mut self, name: &str, addr: &ListenAddr) -> Result<Option<InheritedSocket>, Error> {
        if !is_valid_fd_name(name) {
            return Err(Error::InvalidName(name.to_string()));
        }
        if !self.names.insert(name.to_string()) {
            return Err(Error::DuplicateName(name.to_string()));
        }
        let by_name = self
            .inherited
            .iter()
            .position(|s| s.name.as_deref() == Some(name));
        let by_addr = || {
            let port_zero =
                matches!(addr, ListenAddr::Tcp(sa) | ListenAddr::Udp(sa) if sa.port() == 0);
            (!port_zero)
                .then(|| self.inherited.iter().position(|s| &s.addr == addr))
                .flatten()
        };
        let Some(i) = by_name.or_else(by_addr) else {
            return Ok(None);
        };
        let s = self.inherited.remove(i);
        let want_datagram = matches!(addr, ListenAddr::Udp(_));
        let is_datagram = matches!(s.addr, ListenAddr::Udp(_));
        if want_datagram != is_datagram {
            use std::os::fd::AsRawFd;
            let (is, wanted) = match is_datagram {
                true => ("a datagram (UDP) socket", "a stream listener"),
                false => ("a stream socket", "a datagram (UDP) socket"),
            };
            return Err(Error::Inherited {
                fd: s.socket.as_raw_fd(),
                name: s.name.clone(),
                reason: format!(
                    "is {is} bound to {}, but {wanted} was asked for under this name ({addr})",
                    s.addr
                ),
            });
        }
        Ok(Some(s))
    }

    /// Declares the server ready and starts accepting. Must run inside a tokio runtime.
    ///
    /// In a new generation this tells the previous one, which stops accepting and answers;
    /// only then do this process's listeners accept (if the previous one has died, it goes
    /// ahead at once). The wait for that answer is bounded by the upgrade timeout
    /// ([`Error::Handshake`] after it), and a stop signal meanwhile ends it
    /// ([`Error::Stopped`]). Inherited sockets nobody asked for are closed. Then the PID file
    /// is written, systemd is notified and the upgrade/stop signals are handled.
    pub async fn ready(mut self) -> Result<Running, Error> {
        tracing::debug!("ready() called");
        let take_hup = !spawn::sighup_ignored();
        if !take_hup {
            tracing::info!("SIGHUP is ignored (started under nohup?); upgrade with SIGUSR2");
        }
        let mut signals = Signals::install(take_hup).map_err(|source| Error::Io {
            context: "cannot install signal handlers",
            source,
        })?;
        spawn::set_upgrade_signals_blocked(false);
        #[cfg(feature = "control")]
        let control = match self.control_socket.clone() {
            Some(path) => Some(self.open_control_socket(&path)?),
            None => None,
        };
        for (_, name) in self.channels.drain(..) {
            tracing::info!("closing inherited channel {name}, which no QUIC endpoint claimed");
        }
        for s in self.inherited.drain(..) {
            tracing::info!(
                "closing inherited socket {} ({}) that this version does not use",
                s.addr,
                s.name.as_deref().unwrap_or("unnamed")
            );
        }
        let me = spawn::own_pid();
        let mut record = None;
        let mut predecessor = None;
        if let Some(readiness) = self.readiness.take() {
            let timeout = self.upgrade.timeout;
            let answered = tokio::select! {
                r = handshake(readiness) => r.map_err(Error::Handshake)?,
                _ = tokio::time::sleep(timeout) => {
                    return Err(Error::Handshake(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("the previous generation did not answer within {timeout:?} (the upgrade timeout)"),
                    )));
                }
                _ = signals.term.recv() => return Err(Error::Stopped { signal: "SIGTERM" }),
                _ = signals.int.recv() => return Err(Error::Stopped { signal: "SIGINT" }),
            };
            if let Some((r, link)) = answered {
                record = r;
                predecessor = Some(link);
            }
        }
        self.shared.start_serving();
        if let Some(path) = &self.pid_file {
            pidfile::write_pid_file(path, me).map_err(Error::PidFile)?;
        }
        let finish = Finish {
            pid_file: self.pid_file.clone(),
            notifier: self.notifier.take(),
            control_socket: self.control_socket.clone(),
            generation: self.upgrade.generation,
            started: std::time::Instant::now(),
            // The upgrade that made this generation, as the previous one told it.
            last_upgrade: std::sync::Mutex::new(record.map(|r| LastUpgrade {
                trigger: r.trigger,
                started: r.started,
                duration: r.duration,
                generation: Some(self.upgrade.generation),
                result: Ok(Upgraded {
                    new_pid: me,
                    generation: self.upgrade.generation,
                }),
            })),
            resumed: std::sync::Mutex::new(None),
            predecessor: std::sync::Mutex::new(predecessor),
        };
        finish.notify(&format!("MAINPID={me}\nREADY=1"));
        let running = Running::start(
            Arc::clone(&self.shared),
            self.upgrade.clone(),
            signals,
            finish,
        );
        #[cfg(feature = "control")]
        if let Some(server) = control {
            crate::control_handler::start(server, running.clone());
        }
        Ok(running)
    }

    /// Takes the control socket from the previous generation, or creates it; either way it is
    /// passed on at the next upgrade.
    #[cfg(feature = "control")]
    fn open_control_socket(
        &mut self,
        path: &Path,
    ) -> Result<crate::control_socket::ControlServer, Error> {
        use crate::control_socket::ControlServer;
        let io_err = |source| Error::Io {
            context: "cannot open the control socket",
            source,
        };
        let inherited = self
            .inherited
            .iter()
            .position(|s| s.name.as_deref() == Some(CONTROL_FD_NAME));
        let server = match inherited {
            Some(i) => {
                let s = self.inherited.remove(i);
                let fd: std::os::fd::OwnedFd = s.socket.into();
                ControlServer::from_listener(fd.into()).map_err(io_err)?
            }
            None => ControlServer::bind(path).map_err(io_err)?,
        }
        .remove_on_drop(false);
        let dup = server.try_clone_fd().map_err(io_err)?;
        self.shared
            .extra_fds
            .lock()
            .expect("not poisoned")
            .push((dup, CONTROL_FD_NAME.to_string()));
        Ok(server)
    }
}

/// Says READY to the previous generation and waits for its go-ahead (or its death). With the
/// go-ahead come the record of this upgrade (if the previous generation sends one: older
/// versions do not) and the channel, kept to send it notices; `None` when it is gone.
async fn handshake(
    readiness: std::os::unix::net::UnixStream,
) -> std::io::Result<Option<(Option<UpgradeRecord>, Predecessor)>> {
    readiness.set_nonblocking(true)?;
    let mut readiness = tokio::net::UnixStream::from_std(readiness)?;
    if let Err(e) = readiness.write_all(&[READY]).await {
        tracing::warn!("previous generation is gone ({e}); serving alone");
        return Ok(None);
    }
    tracing::debug!("handshake: READY sent");
    // The go-ahead byte and the record line are sent in one write, so they arrive together.
    let mut buf = [0u8; MAX_RECORD + 1];
    let n = match readiness.read(&mut buf).await {
        Ok(0) | Err(_) => {
            tracing::warn!("previous generation closed the handshake; serving alone");
            return Ok(None);
        }
        Ok(n) => n,
    };
    tracing::debug!("handshake: go-ahead read");
    if buf[0] != GO_AHEAD {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unexpected answer {:#04x}", buf[0]),
        ));
    }
    let after = AfterGoAhead::read(&buf[1..n]);
    if after.unreadable() {
        tracing::warn!(
            "the previous generation sent an unreadable upgrade record; `status` will not show it"
        );
    }
    let predecessor = Predecessor::new(readiness.into_std()?, after.from);
    Ok(Some((after.record, predecessor)))
}
