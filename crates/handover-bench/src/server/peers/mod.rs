//! The peers measured side by side with handover (issue 3): Go facebookgo/grace, Go
//! cloudflare/tableflip and nginx's binary upgrade. Each is detected and built here (Go
//! programs offline from Debian's packaged sources in GOPATH mode); a peer whose toolchain or
//! package is missing is skipped with a reason in the report, never installed.

pub mod go;
pub mod nginx;

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use super::ServerKind;

/// A peer selectable with `--peers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Peer {
    /// Go facebookgo/grace (`gracehttp.Serve`, upgrade on SIGUSR2).
    Grace,
    /// Go cloudflare/tableflip (upgrade on SIGHUP).
    Tableflip,
    /// nginx binary upgrade (USR2, WINCH, QUIT).
    Nginx,
    /// No peers.
    None,
}

impl Peer {
    /// Every real peer, in report order.
    pub const ALL: [Peer; 3] = [Peer::Grace, Peer::Tableflip, Peer::Nginx];

    /// Name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Peer::Grace => "go/grace",
            Peer::Tableflip => "go/tableflip",
            Peer::Nginx => "nginx",
            Peer::None => "none",
        }
    }
}

/// Whether a peer could be set up, and how.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    /// Peer name.
    pub name: &'static str,
    /// Set up and measured.
    pub available: bool,
    /// Version and build time, or why it was skipped.
    pub detail: String,
}

/// Options the peers share with the hello runs.
#[derive(Debug, Clone)]
pub struct PeerOpts {
    /// Graceful-stop deadline given to servers that take one.
    pub drain_timeout: std::time::Duration,
}

/// Detects and builds the selected peers in `build_dir`; returns the kinds that are ready and
/// a status line for every selected peer.
pub fn prepare(
    selected: &[Peer],
    build_dir: &Path,
    opts: &PeerOpts,
) -> (Vec<Arc<dyn ServerKind>>, Vec<PeerStatus>) {
    let mut kinds: Vec<Arc<dyn ServerKind>> = Vec::new();
    let mut status = Vec::new();
    for &peer in Peer::ALL.iter().filter(|p| selected.contains(p)) {
        crate::plan::progress(&format!("peer {}: setting up ...", peer.name()));
        let made = match peer {
            Peer::Grace | Peer::Tableflip => go::setup(peer, build_dir, opts),
            Peer::Nginx => nginx::setup(),
            Peer::None => continue,
        };
        let st = match made {
            Ok((kind, detail)) => {
                kinds.push(kind);
                PeerStatus {
                    name: peer.name(),
                    available: true,
                    detail,
                }
            }
            Err(why) => PeerStatus {
                name: peer.name(),
                available: false,
                detail: format!("skipped: {why}"),
            },
        };
        crate::plan::progress(&format!("peer {}: {}", st.name, st.detail));
        status.push(st);
    }
    (kinds, status)
}

/// A status line for every selected peer, none set up, saying `why`.
pub fn skipped(selected: &[Peer], why: &str) -> Vec<PeerStatus> {
    Peer::ALL
        .iter()
        .filter(|p| selected.contains(p))
        .map(|p| PeerStatus {
            name: p.name(),
            available: false,
            detail: format!("skipped: {why}"),
        })
        .collect()
}

/// Sends `sig` to `pid`.
pub(crate) fn kill(pid: u32, sig: libc::c_int) -> std::io::Result<()> {
    // SAFETY: kill with a positive pid.
    if unsafe { libc::kill(pid as libc::pid_t, sig) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
