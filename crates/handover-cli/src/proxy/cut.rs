//! The signal that cuts a worker's remaining connections at its drain deadline. Every proxied
//! TCP connection and tunnel waits on it beside its copy loop, so waiting must be cheap to
//! poll again on every wake-up of that loop: one atomic load once registered (a `watch`
//! channel costs a lock and a new registration per poll).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// Fired once; wakes every waiter.
#[derive(Debug, Default)]
pub struct Cut {
    fired: AtomicBool,
    waiters: Mutex<Waiters>,
}

#[derive(Debug, Default)]
struct Waiters {
    next: u64,
    wakers: HashMap<u64, Waker>,
}

impl Cut {
    /// Fires it: every wait, now or later, resolves.
    pub fn fire(&self) {
        self.fired.store(true, Ordering::SeqCst);
        let wakers = std::mem::take(&mut self.lock().wakers);
        for w in wakers.into_values() {
            w.wake();
        }
    }

    /// Whether it has fired.
    pub fn is_fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    /// Resolves once fired.
    pub fn wait(self: &Arc<Self>) -> Wait {
        Wait {
            cut: Arc::clone(self),
            key: None,
            waker: None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A wait for a [`Cut`].
#[derive(Debug)]
pub struct Wait {
    cut: Arc<Cut>,
    key: Option<u64>,
    /// The waker registered (a task's waker rarely changes: re-registered only if it does).
    waker: Option<Waker>,
}

impl Future for Wait {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.cut.fired.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        if self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            return Poll::Pending;
        }
        let this = &mut *self;
        let mut waiters = this.cut.lock();
        let key = *this.key.get_or_insert_with(|| {
            waiters.next += 1;
            waiters.next
        });
        waiters.wakers.insert(key, cx.waker().clone());
        drop(waiters);
        this.waker = Some(cx.waker().clone());
        // Fired between the first check and the registration: its wake-up may be lost.
        if this.cut.fired.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.cut.lock().wakers.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wakes_every_waiter_and_later_ones() {
        let cut = Arc::new(Cut::default());
        let a = tokio::spawn(cut.wait());
        let b = tokio::spawn(cut.wait());
        tokio::task::yield_now().await;
        assert!(!a.is_finished());
        cut.fire();
        a.await.unwrap();
        b.await.unwrap();
        cut.wait().await;
        assert!(cut.lock().wakers.is_empty());
    }
}
