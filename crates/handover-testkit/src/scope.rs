//! What every end-to-end test owns, whatever it starts: a temporary directory, the logs of the
//! processes it started, and on drop the cleanup of every one of them.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::thread;

use crate::logs::Log;
use crate::reap::{forget_reaped, kill_all_descendants};
use crate::sys::become_subreaper;

/// One test's directory, logs and processes.
///
/// Tests inside one process are serialised (so `cargo test` behaves like nextest's
/// process-per-test and "every process of this test" is well defined). The test process is made
/// a child subreaper (orphaned processes are reparented to it, so "no zombie" and "no leftover
/// process" can be checked honestly); on drop every live process of the test is SIGKILLed and
/// reaped, and when the test panicked the captured logs are printed.
pub struct Scope {
    /// The test's temporary directory (removed on drop).
    pub dir: tempfile::TempDir,
    logs: Mutex<Vec<(String, Log)>>,
    _serial: MutexGuard<'static, ()>,
}

impl Scope {
    /// Waits for the tests before this one in the process, then makes a fresh temp dir named
    /// `<prefix>XXXXXX`.
    pub fn new(prefix: &str) -> Scope {
        static SERIAL: Mutex<()> = Mutex::new(());
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        become_subreaper();
        // Anything left over from an earlier test in this process (should be nothing).
        kill_all_descendants();
        forget_reaped();
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("tempdir");
        Scope {
            dir,
            logs: Mutex::new(Vec::new()),
            _serial: serial,
        }
    }

    /// `<dir>/<name>`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Keeps `log` (of the process called `name`), to be printed if the test fails.
    pub(crate) fn keep_log(&self, name: &str, log: &Log) {
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name.to_string(), log.clone()));
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        kill_all_descendants();
        if thread::panicking() {
            for (name, log) in self.logs.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                eprintln!(
                    "----- captured output of {name} -----\n{}\n----- end of {name} -----",
                    log.text()
                );
            }
        }
    }
}
