//! The restart backoff: how long to wait before starting a worker again after one exited
//! unexpectedly (or never became ready).

use std::time::Duration;

/// A worker that served at least this long counts as healthy: the backoff starts over.
pub const STABLE_AFTER: Duration = Duration::from_secs(10);

/// Doubling delays from `initial` up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A backoff starting at `initial`, never above `max` (nor below `initial`).
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        let max = max.max(initial);
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay before the next restart; the one after is twice as long.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// Starts over (a worker has served for [`STABLE_AFTER`]).
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_maximum_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(500));
        let seq: Vec<_> = (0..5).map(|_| b.next_delay()).collect();
        assert_eq!(seq, [ms(100), ms(200), ms(400), ms(500), ms(500)]);
        b.reset();
        assert_eq!(b.next_delay(), ms(100));
        let mut odd = Backoff::new(ms(100), ms(10));
        assert_eq!(odd.next_delay(), ms(100));
        assert_eq!(odd.next_delay(), ms(100));
    }
}
