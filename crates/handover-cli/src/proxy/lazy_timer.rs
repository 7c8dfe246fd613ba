//! Deadlines that move forward with every request, on one timer per connection: a Tokio timer
//! per request costs a timer-wheel entry and, when it is the earliest, a wake-up of the
//! thread's reactor. Here the timer is re-armed only when it would fire too early or far too
//! late, and a firing before the real deadline just re-arms it.

use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// A timer that is not armed yet (fires in a year).
pub fn idle() -> Sleep {
    tokio::time::sleep(Duration::from_secs(365 * 24 * 3600))
}

/// Makes `timer` fire at `deadline` or up to `slack` after it.
pub fn arm(timer: Pin<&mut Sleep>, deadline: Instant, slack: Duration) {
    if !(deadline..=deadline + slack).contains(&timer.deadline()) {
        timer.reset(deadline + slack);
    }
}

/// Resolves once `deadline` has passed (`timer` armed for it with [`arm`]).
pub async fn until(mut timer: Pin<&mut Sleep>, deadline: Instant) {
    loop {
        timer.as_mut().await;
        if Instant::now() >= deadline {
            return;
        }
        timer.as_mut().reset(deadline);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn fires_after_the_deadline_and_rearms_rarely() {
        let timer = idle();
        tokio::pin!(timer);
        let slack = Duration::from_secs(10);
        let first = Instant::now() + Duration::from_secs(60);
        arm(timer.as_mut(), first, slack);
        assert_eq!(timer.deadline(), first + slack);
        // A later deadline within the slack keeps the timer as it is.
        let second = first + Duration::from_secs(5);
        arm(timer.as_mut(), second, slack);
        assert_eq!(timer.deadline(), first + slack);
        // An earlier one re-arms it.
        let early = Instant::now() + Duration::from_secs(1);
        arm(timer.as_mut(), early, slack);
        assert_eq!(timer.deadline(), early + slack);
        let start = Instant::now();
        until(timer.as_mut(), early).await;
        assert!(Instant::now() >= early && Instant::now() - start <= Duration::from_secs(11));
        // Fired before a later deadline: waits on until that one.
        let later = Instant::now() + Duration::from_secs(30);
        until(timer.as_mut(), later).await;
        assert!(Instant::now() >= later);
    }
}
