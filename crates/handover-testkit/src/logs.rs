//! Captured output: the lines a process tree writes to its stdout and stderr (every generation
//! of a server shares the same pipes), read by background threads. Every wait has a deadline.

use std::io::{BufRead, BufReader, Read};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Default)]
struct LogState {
    lines: Vec<String>,
    /// Capture threads still reading (their pipe is not at EOF yet).
    open: usize,
}

/// Lines written by a process tree to its stdout/stderr, ANSI colours removed.
#[derive(Clone, Default)]
pub struct Log {
    inner: Arc<(Mutex<LogState>, Condvar)>,
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Log {
    fn state(&self) -> MutexGuard<'_, LogState> {
        self.inner.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads `reader` line by line in a background thread, each line stored as `prefix` + line.
    pub(crate) fn capture<R: Read + Send + 'static>(&self, reader: R, prefix: &'static str) {
        let log = self.clone();
        self.state().open += 1;
        thread::spawn(move || {
            let mut r = BufReader::new(reader);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = strip_ansi(String::from_utf8_lossy(&buf).trim_end());
                        log.push(format!("{prefix}{line}"));
                    }
                }
            }
            log.state().open -= 1;
            log.inner.1.notify_all();
        });
    }

    /// Waits until every captured pipe is at EOF (all writers, including descendants that
    /// inherited it, have exited), so that nothing a dead process wrote is still in flight.
    pub(crate) fn wait_eof(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.state();
        while st.open > 0 {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self
                .inner
                .1
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// Adds a line, waking the waiters.
    fn push(&self, line: String) {
        self.state().lines.push(line);
        self.inner.1.notify_all();
    }

    /// Number of lines so far: use it as the `from` of a later wait.
    pub fn len(&self) -> usize {
        self.state().lines.len()
    }

    /// No line yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.state().lines.clone()
    }

    /// Every line so far, joined with newlines (for assertion messages).
    pub fn text(&self) -> String {
        self.lines().join("\n")
    }

    /// The first line at index >= `from` matching `pred`, with its index; no waiting.
    pub fn find(&self, from: usize, pred: impl Fn(&str) -> bool) -> Option<(usize, String)> {
        let st = self.state();
        st.lines
            .iter()
            .enumerate()
            .skip(from)
            .find(|(_, l)| pred(l))
            .map(|(i, l)| (i, l.clone()))
    }

    /// How many lines so far match `pred`.
    pub fn count(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.state().lines.iter().filter(|l| pred(l)).count()
    }

    /// Whether a line so far contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.find(0, |l| l.contains(needle)).is_some()
    }

    /// Waits for the first line at index >= `from` matching `pred`. `give_up` is polled between
    /// wake-ups: once it returns true, the wait ends within a second (lines a process wrote just
    /// before exiting may still be in the pipe).
    pub fn wait_for_or(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
        mut give_up: impl FnMut() -> bool,
    ) -> Option<(usize, String)> {
        let deadline = Instant::now() + timeout;
        match self.wait_until(from, deadline, &pred, &mut give_up) {
            Ok(found) => Some(found),
            Err(seen) if give_up() => {
                let grace = deadline.min(Instant::now() + Duration::from_secs(1));
                self.wait_until(seen, grace, &pred, &mut || false).ok()
            }
            Err(_) => None,
        }
    }

    /// The first matching line at index >= `from`, or `Err(lines seen)` at the deadline or as
    /// soon as `give_up` returns true.
    fn wait_until(
        &self,
        from: usize,
        deadline: Instant,
        pred: &dyn Fn(&str) -> bool,
        give_up: &mut dyn FnMut() -> bool,
    ) -> Result<(usize, String), usize> {
        let mut seen = from;
        loop {
            {
                let st = self.state();
                if let Some(i) = (seen..st.lines.len()).find(|&i| pred(&st.lines[i])) {
                    return Ok((i, st.lines[i].clone()));
                }
                seen = seen.max(st.lines.len());
                let now = Instant::now();
                if now >= deadline {
                    return Err(seen);
                }
                let slice = (deadline - now).min(Duration::from_millis(50));
                let _ = self.inner.1.wait_timeout(st, slice);
            }
            if give_up() {
                return Err(seen);
            }
        }
    }

    /// Waits up to `timeout` for the first line at index >= `from` matching `pred`.
    pub fn wait_for(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<(usize, String)> {
        self.wait_for_or(from, timeout, pred, || false)
    }

    /// The first line at index >= `from` containing `needle`, waiting up to `timeout`;
    /// panics with the whole log when it does not come.
    pub fn expect(&self, from: usize, needle: &str, timeout: Duration) -> String {
        match self.wait_for(from, timeout, |l| l.contains(needle)) {
            Some((_, line)) => line,
            None => panic!(
                "no line containing {needle:?} within {timeout:?}; log:\n{}",
                self.text()
            ),
        }
    }
}
