//! `--supervisors` (issue 16): `handover run` against the supervisors people use, in the
//! same upgrade and idle runs as the library matrix (same client, counting and probe):
//!
//! | row | worker | upgrade action (timed) |
//! |---|---|---|
//! | `handover-socket/hello`, `/node+drain`, `/python` | `hello`; Node.js with the README's drain; the CLI tests' stdlib Python worker | rename, `handover upgrade` |
//! | `handover-proxy/node` | stock Node.js (`server.close()`) on its own `{port}` | rename, `handover upgrade` |
//! | `handover-proxy/hello` | `hello` on its own `{port}` (the proxy's own start-to-serve time, without Node's) | rename, `handover upgrade` |
//! | `handover-socket-usr2/hello`, `handover-proxy-usr2/hello` | the same, upgraded the way systemd's `ExecReload=kill -USR2 $MAINPID` does | rename, `SIGUSR2` to the supervisor (in the bench's process, like the restart row's action: no CLI to start) |
//! | `pm2-cluster/node` | the same stock Node.js server, one cluster instance | rename, `pm2 reload` |
//! | `gunicorn-gthread/wsgi` | a WSGI app, one `gthread` worker | rename, `USR2`, `WINCH` (then `QUIT`) |
//! | `circus/wsgi` | the same app in gunicorn on circus's socket | rename, `circusctl reload` |
//! | `systemd-style-restart/hello` | `hello` on a socket the bench holds | SIGTERM, wait for exit, start with `LISTEN_FDS` |
//! | `nginx-2-upstreams/hello` | `hello` on two ports behind nginx | start the standby, swap the upstream, `nginx -s reload` |
//!
//! | module | one reason to change |
//! |---|---|
//! | `app` | the worker programs and their versions |
//! | `tools` | finding and installing the peers (npm, pip) |
//! | `handover`, `pm2`, `gunicorn`, `circus`, `restart`, `nginx_swap` | one row each |
//! | `footprint` | the supervisor's RSS and open fds over many upgrades |

pub mod app;
pub mod circus;
pub mod footprint;
pub mod gunicorn;
pub mod handover;
pub mod nginx_swap;
pub mod pm2;
pub mod restart;
pub mod tools;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::binaries::Binaries;
use crate::server::peers::PeerStatus;
use crate::server::ServerKind;
use app::App;
use tools::Tools;

/// A row of the matrix, selectable with `--supervisor-rows`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Row {
    /// `handover run --listen` with `hello`.
    HandoverHello,
    /// `handover run --listen` with the Node.js server and the README's drain.
    HandoverNode,
    /// `handover run --listen` with the CLI tests' stdlib Python worker.
    HandoverPython,
    /// `handover run --proxy http://` with the stock Node.js server.
    HandoverProxy,
    /// `handover run --proxy http://` with `hello` on its own port.
    HandoverProxyHello,
    /// `handover-hello`, upgraded by `SIGUSR2` to the supervisor instead of the CLI.
    HandoverHelloUsr2,
    /// `handover-proxy-hello`, upgraded by `SIGUSR2` to the supervisor instead of the CLI.
    HandoverProxyHelloUsr2,
    /// PM2 cluster mode, `pm2 reload`.
    Pm2,
    /// gunicorn gthread, USR2 + WINCH + QUIT.
    Gunicorn,
    /// circus, `circusctl reload`.
    Circus,
    /// A systemd-style restart with the socket held by the bench.
    Restart,
    /// nginx in front of two upstream ports, `nginx -s reload`.
    NginxSwap,
}

impl Row {
    /// Every row, in report order.
    pub const ALL: [Row; 12] = [
        Row::HandoverHello,
        Row::HandoverHelloUsr2,
        Row::HandoverNode,
        Row::HandoverPython,
        Row::HandoverProxy,
        Row::HandoverProxyHello,
        Row::HandoverProxyHelloUsr2,
        Row::Pm2,
        Row::Gunicorn,
        Row::Circus,
        Row::Restart,
        Row::NginxSwap,
    ];

    /// The row's name in reports (the server kind's name).
    pub fn name(self) -> &'static str {
        match self {
            Row::HandoverHello => "handover-socket/hello",
            Row::HandoverNode => "handover-socket/node+drain",
            Row::HandoverPython => "handover-socket/python",
            Row::HandoverProxy => "handover-proxy/node",
            Row::HandoverProxyHello => "handover-proxy/hello",
            Row::HandoverHelloUsr2 => "handover-socket-usr2/hello",
            Row::HandoverProxyHelloUsr2 => "handover-proxy-usr2/hello",
            Row::Pm2 => "pm2-cluster/node",
            Row::Gunicorn => "gunicorn-gthread/wsgi",
            Row::Circus => "circus/wsgi",
            Row::Restart => "systemd-style-restart/hello",
            Row::NginxSwap => "nginx-2-upstreams/hello",
        }
    }
}

/// The number in a pid file.
pub fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The selected rows that can run here, and a status line for each selected row.
pub fn prepare(
    rows: &[Row],
    tools: &Tools,
    bins: &Binaries,
    drain_timeout: Duration,
) -> (Vec<Arc<dyn ServerKind>>, Vec<PeerStatus>) {
    let mut kinds: Vec<Arc<dyn ServerKind>> = Vec::new();
    let mut status = Vec::new();
    for &row in Row::ALL.iter().filter(|r| rows.contains(r)) {
        let made = kind(row, tools, bins, drain_timeout);
        let st = match made {
            Ok((kind, detail)) => {
                debug_assert_eq!(kind.name(), row.name());
                kinds.push(kind);
                PeerStatus {
                    name: row.name(),
                    available: true,
                    detail,
                }
            }
            Err(why) => PeerStatus {
                name: row.name(),
                available: false,
                detail: format!("skipped: {why}"),
            },
        };
        crate::plan::progress(&format!("supervisor row {}: {}", st.name, st.detail));
        status.push(st);
    }
    (kinds, status)
}

type Made = Result<(Arc<dyn ServerKind>, String), String>;

fn kind(row: Row, t: &Tools, bins: &Binaries, drain_timeout: Duration) -> Made {
    let handover =
        |app: App, interpreter: Option<&Result<std::path::PathBuf, String>>, proxy, by_signal| {
            let interpreter = match interpreter {
                Some(Ok(p)) => Some(p.clone()),
                Some(Err(e)) => return Err(e.clone()),
                None => None,
            };
            let h = t.handover.clone()?;
            let detail = format!("{} ({})", h.display(), app.label());
            let k = handover::HandoverRun {
                handover: h,
                interpreter,
                app,
                proxy,
                by_signal,
                drain_timeout,
            };
            Ok((Arc::new(k) as Arc<dyn ServerKind>, detail))
        };
    match row {
        Row::HandoverHello => handover(App::Hello(bins.clone()), None, false, false),
        Row::HandoverHelloUsr2 => handover(App::Hello(bins.clone()), None, false, true),
        Row::HandoverNode => handover(App::Node(true), Some(&t.node), false, false),
        Row::HandoverPython => handover(App::PyWorker, Some(&t.python), false, false),
        Row::HandoverProxy => handover(App::Node(false), Some(&t.node), true, false),
        Row::HandoverProxyHello => handover(App::Hello(bins.clone()), None, true, false),
        Row::HandoverProxyHelloUsr2 => handover(App::Hello(bins.clone()), None, true, true),
        Row::Pm2 => {
            let pm2 = t.pm2.clone()?;
            let detail = format!("{} {}", tools::PM2, pm2.display());
            let k = pm2::Pm2 { pm2, drain_timeout };
            Ok((Arc::new(k), detail))
        }
        Row::Gunicorn => {
            let gunicorn = t.gunicorn.clone()?;
            let detail = format!("{} {}", tools::PIP[0], gunicorn.display());
            let k = gunicorn::Gunicorn {
                gunicorn,
                drain_timeout,
            };
            Ok((Arc::new(k), detail))
        }
        Row::Circus => {
            let circusd = t.circusd.clone()?;
            let detail = format!("{} {}", tools::PIP[1], circusd.display());
            let k = circus::Circus {
                circusd,
                drain_timeout,
            };
            Ok((Arc::new(k), detail))
        }
        Row::Restart => Ok((
            Arc::new(restart::Restart::new(bins.clone(), drain_timeout)),
            "hello on a socket held by the bench".into(),
        )),
        Row::NginxSwap => {
            let nginx = t.nginx.clone()?;
            let detail = format!("{} with hello on two ports", nginx.display());
            let k = nginx_swap::NginxSwap {
                nginx,
                user: crate::server::peers::nginx::user_directive(),
                bins: bins.clone(),
                drain_timeout,
            };
            Ok((Arc::new(k), detail))
        }
    }
}
