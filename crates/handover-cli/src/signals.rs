//! Signals: names on the command line, and the supervisor's own signals turned into events
//! (`SIGHUP`/`SIGUSR2` upgrade, `SIGTERM`/`SIGINT` stop). `SIGCHLD` belongs to the reaper.

use std::fmt;
use std::str::FromStr;

use handover::sys;
use tokio::signal::unix::{signal, SignalKind};

use crate::events::{Event, Events};

/// A signal given by name or number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal {
    /// Its number.
    pub number: i32,
    /// Its name, such as `SIGTERM`.
    pub name: &'static str,
}

/// The signals `--stop-signal` accepts (their numbers come from the library's one table).
const STOP_SIGNALS: &[&str] = &[
    "SIGHUP", "SIGINT", "SIGQUIT", "SIGKILL", "SIGUSR1", "SIGUSR2", "SIGTERM", "SIGWINCH",
    "SIGCONT", "SIGALRM",
];

impl FromStr for Signal {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.trim().to_ascii_uppercase();
        let full = if upper.starts_with("SIG") {
            upper.clone()
        } else {
            format!("SIG{upper}")
        };
        let found = STOP_SIGNALS
            .iter()
            .filter_map(|&name| Some((name, sys::signal_number(name)?)))
            .find(|&(name, number)| {
                name == full || upper.parse::<i32>().is_ok_and(|n| n == number)
            });
        match found {
            Some((name, number)) => Ok(Signal { number, name }),
            None => Err(format!(
                "unknown signal {s:?}; expected one of {} (with or without SIG), or its number",
                STOP_SIGNALS.join(", ")
            )),
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// Installs the handlers (before any worker starts, so no signal is lost) and forwards the
/// signals as events until the channel closes.
pub fn start(events: Events) -> std::io::Result<()> {
    let mut hup = signal(SignalKind::hangup())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                Some(()) = hup.recv() => upgrade("SIGHUP"),
                Some(()) = usr2.recv() => upgrade("SIGUSR2"),
                Some(()) = term.recv() => stop("SIGTERM"),
                Some(()) = int.recv() => stop("SIGINT"),
                else => break,
            };
            if events.send(event).is_err() {
                break;
            }
        }
    });
    Ok(())
}

fn upgrade(name: &str) -> Event {
    Event::Upgrade {
        trigger: name.to_string(),
        reply: None,
    }
}

fn stop(name: &str) -> Event {
    Event::Stop {
        trigger: name.to_string(),
        from_signal: true,
        reply: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        for s in ["TERM", "SIGTERM", "sigterm", "term", "15"] {
            assert_eq!(s.parse::<Signal>().unwrap().number, libc::SIGTERM, "{s}");
        }
        assert_eq!("QUIT".parse::<Signal>().unwrap().to_string(), "SIGQUIT");
        let e = "SIGNOPE".parse::<Signal>().unwrap_err();
        assert!(e.contains("unknown signal \"SIGNOPE\""), "{e}");
        assert!("99".parse::<Signal>().is_err());
    }
}
