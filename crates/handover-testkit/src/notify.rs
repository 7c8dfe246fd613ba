//! A stand-in for systemd's notify socket (`NOTIFY_SOCKET`): a unix datagram socket whose
//! datagrams are kept, one message each, and waited on with a deadline.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::wait::LONG;

/// A unix datagram socket standing in for systemd's notify socket. Each datagram is one message.
pub struct Notify {
    /// The socket's path (the `NOTIFY_SOCKET` to give the server).
    pub path: PathBuf,
    msgs: Arc<(Mutex<Vec<String>>, Condvar)>,
    stop: Arc<AtomicBool>,
}

impl Notify {
    /// Binds `path` and starts receiving in a background thread.
    pub fn bind(path: PathBuf) -> Notify {
        let sock = UnixDatagram::bind(&path).expect("bind notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let msgs: Arc<(Mutex<Vec<String>>, Condvar)> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (msgs.clone(), stop.clone());
        thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !s.load(Ordering::SeqCst) {
                if let Ok(n) = sock.recv(&mut buf) {
                    m.0.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                    m.1.notify_all();
                }
            }
        });
        Notify { path, msgs, stop }
    }

    /// Every message so far.
    pub fn messages(&self) -> Vec<String> {
        self.msgs.0.lock().unwrap().clone()
    }

    /// How many messages so far.
    pub fn len(&self) -> usize {
        self.msgs.0.lock().unwrap().len()
    }

    /// No message yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Index of the first message at or after `from` that has a line equal to `field`.
    fn wait_field(&self, from: usize, field: &str, timeout: Duration) -> Option<usize> {
        let deadline = Instant::now() + timeout;
        let mut g = self.msgs.0.lock().unwrap();
        loop {
            if let Some(i) = (from..g.len()).find(|&i| g[i].lines().any(|l| l == field)) {
                return Some(i);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            g = self.msgs.1.wait_timeout(g, deadline - now).unwrap().0;
        }
    }

    /// Waits up to [`LONG`] for the first message at or after index `from` with a line equal
    /// to `field`; its index. Panics with all messages on timeout.
    pub fn expect_field(&self, from: usize, field: &str) -> usize {
        self.wait_field(from, field, LONG).unwrap_or_else(|| {
            panic!(
                "no notify message with {field:?} (from index {from}); got {:?}",
                self.messages()
            )
        })
    }
}

impl Drop for Notify {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
