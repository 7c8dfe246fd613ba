//! Deadlines: every wait of a test is bounded by one of these, and polls a real condition.

use std::thread;
use std::time::{Duration, Instant};

/// Generous upper bound for anything that should happen "soon" (start-up, an upgrade, an exit).
pub const LONG: Duration = Duration::from_secs(30);
/// Bound for things that must already have happened, give or take scheduling.
pub const SHORT: Duration = Duration::from_secs(5);

/// Polls `f` every 10 ms until it returns true (`true`) or `timeout` passes (`false`).
pub fn poll_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}
