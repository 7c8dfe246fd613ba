//! What two consecutive generations tell each other once the readiness handshake is done, over
//! the same channel (which both keep open for as long as they live), and what the old one
//! makes of its successor's end.
//!
//! - Old to new, with the go-ahead: the record of the upgrade that made the new generation
//!   ([`UpgradeRecord`]: who asked, when, how long it took until the go-ahead), so that the
//!   generation answering `handover status` knows it.
//! - New to old, later: [`HANDED_OVER`] when the new generation has handed over in turn, and
//!   [`STOPPING`] when a graceful stop of it begins. With these the old process can tell a
//!   crash (take the listeners back) from an end it must accept ([`judge`]).

use std::io::{ErrorKind, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;

use crate::spawn::ExitStatus;

/// New to old: this generation has handed over to a successor of its own, which now serves.
pub(crate) const HANDED_OVER: u8 = b'H';
/// New to old: a graceful stop of this generation began (it is being stopped on purpose).
pub(crate) const STOPPING: u8 = b'S';
/// New to old: this generation has stopped accepting (at a stop, once its listeners are
/// paused). A supervisor (`handover run`) lets the next worker accept on it; a library
/// predecessor has no use for it. A worker in another language that speaks the handshake says
/// it too (the CLI README, "Which version answers").
pub const STOPPED_ACCEPTING: u8 = b'C';
/// Supervisor to worker: "you are being replaced": stop accepting now and say
/// [`STOPPED_ACCEPTING`]; the stop signal that follows drains at once, without the lame duck
/// (an upgrade never waits for one). A library predecessor never sends it.
pub const REPLACED: u8 = b'P';

/// Longest record line accepted, newline included; anything longer is not a record.
pub(crate) const MAX_RECORD: usize = 512;

/// The upgrade that made a generation, as its predecessor saw it at the go-ahead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UpgradeRecord {
    /// What asked for it (`SIGUSR2`, `control socket`, ...).
    pub trigger: String,
    /// When it was asked for.
    pub started: SystemTime,
    /// From then to the go-ahead.
    pub duration: Duration,
}

impl UpgradeRecord {
    /// One line: `started_unix_ms TAB duration_us TAB trigger LF`. The trigger comes last and
    /// loses any tab or newline, so it can hold spaces (`control socket`).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let ms = self
            .started
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let trigger: String = self
            .trigger
            .chars()
            .map(|c| if c == '\t' || c == '\n' { ' ' } else { c })
            .collect();
        let mut line = format!("{ms}\t{}\t{trigger}\n", self.duration.as_micros()).into_bytes();
        line.truncate(MAX_RECORD - 1);
        if line.last() != Some(&b'\n') {
            line.push(b'\n');
        }
        line
    }

    /// The record in `line` (with or without its newline); `None` if it is not one.
    pub(crate) fn parse(line: &[u8]) -> Option<UpgradeRecord> {
        let line = std::str::from_utf8(line).ok()?;
        let line = line.strip_suffix('\n').unwrap_or(line);
        let mut fields = line.splitn(3, '\t');
        let ms: u64 = fields.next()?.parse().ok()?;
        let us: u64 = fields.next()?.parse().ok()?;
        let trigger = fields.next()?.to_string();
        Some(UpgradeRecord {
            trigger,
            started: UNIX_EPOCH.checked_add(Duration::from_millis(ms))?,
            duration: Duration::from_micros(us),
        })
    }
}

/// The old process's end of the channel to the successor it told to go ahead.
#[derive(Debug)]
pub(crate) struct Successor {
    pub pid: libc::pid_t,
    pub generation: u64,
    channel: UnixStream,
    closed: bool,
    handed_over: bool,
    stopping: bool,
}

impl Successor {
    pub(crate) fn new(pid: libc::pid_t, generation: u64, channel: UnixStream) -> Successor {
        Successor {
            pid,
            generation,
            channel,
            closed: false,
            handed_over: false,
            stopping: false,
        }
    }

    /// Waits for the next notice (or the channel's end) and takes note of it. Never resolves
    /// once the channel has ended.
    pub(crate) async fn next_notice(&mut self) {
        if self.closed {
            return std::future::pending().await;
        }
        let mut byte = [0u8; 1];
        match self.channel.read(&mut byte).await {
            Ok(1) => self.note(byte[0]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            _ => self.closed = true,
        }
    }

    /// Takes note of every notice already sent (called once the successor has exited, so
    /// that a notice sent just before the end is not missed).
    pub(crate) fn take_pending_notices(&mut self) {
        let mut buf = [0u8; 64];
        while !self.closed {
            match self.channel.try_read(&mut buf) {
                Ok(0) | Err(_) => self.closed = true,
                Ok(n) => buf[..n].iter().for_each(|b| self.note(*b)),
            }
        }
    }

    fn note(&mut self, byte: u8) {
        match byte {
            HANDED_OVER => self.handed_over = true,
            STOPPING => self.stopping = true,
            STOPPED_ACCEPTING => {}
            other => tracing::debug!(
                "successor pid {} sent an unknown notice {other:#04x}; ignored",
                self.pid
            ),
        }
    }

    /// What its end means for this process (see [`judge`]).
    pub(crate) fn verdict(&self, status: ExitStatus) -> Verdict {
        judge(status, self.handed_over, self.stopping)
    }
}

/// How a successor that had been told to go ahead ended, as far as its predecessor cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It had handed over in turn: its own successor serves.
    HandedOn,
    /// It was stopped on purpose (it said a graceful stop began, exited 0, or was ended by a
    /// stop signal): the service is being stopped, nobody must take over.
    Stopped,
    /// It crashed (a non-zero exit or another signal) while it was the one serving.
    Crashed,
}

/// The rule for a successor's end. Only a crash of the generation that serves lets the old
/// one take over again; a successor stopped on purpose never does, or the service could not
/// be stopped (systemd sends SIGTERM to `MAINPID` only).
pub(crate) fn judge(status: ExitStatus, handed_over: bool, stopping: bool) -> Verdict {
    if handed_over {
        return Verdict::HandedOn;
    }
    if stopping {
        return Verdict::Stopped;
    }
    match status {
        ExitStatus::Code(0) => Verdict::Stopped,
        ExitStatus::Signal(libc::SIGTERM | libc::SIGINT) => Verdict::Stopped,
        _ => Verdict::Crashed,
    }
}

/// Who told this generation to go ahead, as what followed the go-ahead byte shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GoAheadFrom {
    /// A library generation: its record of the upgrade followed (a line that starts with a
    /// digit), and it says nothing after it.
    Library,
    /// A supervisor (`handover run`): no record, at most single-byte notices. `replaced`: its
    /// [`REPLACED`] came in the same read (it replaced this worker before the worker had read
    /// the go-ahead), and must not be lost.
    Supervisor { replaced: bool },
}

/// What came with the go-ahead byte, in the same read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct AfterGoAhead {
    /// A library predecessor's record of the upgrade (`None` from a supervisor, or unreadable).
    pub record: Option<UpgradeRecord>,
    /// Who sent it.
    pub from: GoAheadFrom,
}

impl AfterGoAhead {
    /// Reads `rest`, the bytes after the go-ahead byte: a record if they start with a digit
    /// (as every record does), else a supervisor's notices.
    pub(crate) fn read(rest: &[u8]) -> AfterGoAhead {
        if rest.first().is_some_and(u8::is_ascii_digit) {
            return AfterGoAhead {
                record: UpgradeRecord::parse(rest),
                from: GoAheadFrom::Library,
            };
        }
        AfterGoAhead {
            record: None,
            from: GoAheadFrom::Supervisor {
                replaced: rest.contains(&REPLACED),
            },
        }
    }

    /// A library predecessor sent a record that could not be read.
    pub(crate) fn unreadable(&self) -> bool {
        self.from == GoAheadFrom::Library && self.record.is_none()
    }
}

/// The new process's end of the channel to its predecessor, for the notices.
#[derive(Debug)]
pub(crate) struct Predecessor {
    stream: StdUnixStream,
    from: GoAheadFrom,
}

impl Predecessor {
    pub(crate) fn new(stream: StdUnixStream, from: GoAheadFrom) -> Predecessor {
        Predecessor { stream, from }
    }

    /// Whether the supervisor said [`REPLACED`] with its go-ahead.
    pub(crate) fn was_replaced(&self) -> bool {
        self.from == GoAheadFrom::Supervisor { replaced: true }
    }

    /// A second handle on the channel, to hear [`REPLACED`]: only from a supervisor, the one
    /// predecessor that says anything after the go-ahead (so a library predecessor costs no
    /// reader, and stray bytes of its record could never be taken for a notice).
    pub(crate) fn supervisor_reader(&self) -> Option<std::io::Result<StdUnixStream>> {
        matches!(self.from, GoAheadFrom::Supervisor { .. }).then(|| self.stream.try_clone())
    }

    /// Sends one notice; a predecessor that is gone is no error (nobody is left to tell).
    pub(crate) fn tell(&mut self, notice: u8) {
        if let Err(e) = self.stream.write_all(&[notice]) {
            tracing::debug!("cannot tell the previous generation ({e}); it has probably exited");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as a library generation sends it; `trigger` last, as encoded.
    fn record(trigger: &str, duration_us: u64) -> UpgradeRecord {
        UpgradeRecord {
            trigger: trigger.into(),
            started: UNIX_EPOCH + Duration::from_millis(1_767_225_600_123),
            duration: Duration::from_micros(duration_us),
        }
    }

    #[test]
    fn what_follows_the_go_ahead_tells_a_supervisor_from_a_library_predecessor() {
        let r = record("SIGUSR2", 4_321);
        let line = r.encode();
        let library = AfterGoAhead::read(&line);
        assert_eq!(
            (library.record.as_ref(), library.from),
            (Some(&r), GoAheadFrom::Library)
        );
        let alone = AfterGoAhead::read(b"");
        assert!(
            alone.from == GoAheadFrom::Supervisor { replaced: false } && alone.record.is_none()
        );
        // The supervisor replaced the worker before it had read the go-ahead: one read
        // brings both, and REPLACED is kept, not taken for an unreadable record.
        let both = AfterGoAhead::read(&[REPLACED]);
        assert!(
            both.from == GoAheadFrom::Supervisor { replaced: true } && !both.unreadable(),
            "{both:?}"
        );
        let junk = AfterGoAhead::read(b"12x\n");
        assert!(junk.from == GoAheadFrom::Library && junk.unreadable());
        // A REPLACED inside a library record means nothing.
        let mut odd = line.clone();
        odd.insert(3, REPLACED);
        assert_eq!(AfterGoAhead::read(&odd).from, GoAheadFrom::Library);
    }

    #[test]
    fn records_round_trip_and_junk_is_not_a_record() {
        let r = record("control\tsocket", 812_345);
        let line = r.encode();
        assert_eq!(line, b"1767225600123\t812345\tcontrol socket\n");
        let back = UpgradeRecord::parse(&line).unwrap();
        assert_eq!(back.trigger, "control socket");
        assert_eq!(back.started, r.started);
        assert_eq!(back.duration, r.duration);
        for junk in [
            &b""[..],
            b"\n",
            b"12\n",
            b"x\t1\tSIGHUP\n",
            b"1\t-1\tSIGHUP",
            b"\xff\t1\tx",
        ] {
            assert_eq!(UpgradeRecord::parse(junk), None, "{junk:?}");
        }
        let long = UpgradeRecord {
            trigger: "x".repeat(2 * MAX_RECORD),
            ..r
        };
        let line = long.encode();
        assert_eq!(line.len(), MAX_RECORD);
        assert!(UpgradeRecord::parse(&line).is_some());
    }

    #[test]
    fn only_a_crash_of_the_serving_successor_is_a_crash() {
        use ExitStatus::{Code, Signal};
        assert_eq!(judge(Code(1), false, false), Verdict::Crashed);
        assert_eq!(judge(Code(101), false, false), Verdict::Crashed);
        assert_eq!(judge(Signal(libc::SIGKILL), false, false), Verdict::Crashed);
        assert_eq!(judge(Signal(libc::SIGSEGV), false, false), Verdict::Crashed);
        assert_eq!(judge(Code(0), false, false), Verdict::Stopped);
        assert_eq!(judge(Signal(libc::SIGTERM), false, false), Verdict::Stopped);
        assert_eq!(judge(Signal(libc::SIGINT), false, false), Verdict::Stopped);
        // A second SIGTERM makes it exit 1: still a stop on purpose, as it said.
        assert_eq!(judge(Code(1), false, true), Verdict::Stopped);
        assert_eq!(judge(Signal(libc::SIGKILL), false, true), Verdict::Stopped);
        // Whatever happens after it handed over is its own successor's business.
        assert_eq!(judge(Signal(libc::SIGSEGV), true, false), Verdict::HandedOn);
        assert_eq!(judge(Code(0), true, true), Verdict::HandedOn);
    }
}
