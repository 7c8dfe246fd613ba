//! Busy-polling after activity: once a proxy thread has moved bytes, it keeps polling its
//! sockets (without sleeping in the kernel) for a short while, so that the answer it is
//! waiting for (the worker's response, the client's next request) is picked up at once
//! instead of after a thread wake-up. A wake-up costs tens of microseconds on a virtual
//! machine, twice per proxied request; this is how the proxy's added latency stays low.
//!
//! The spin is bounded (`budget` after the last activity) and yields to the scheduler on every
//! turn: it polls the reactor without blocking (Tokio's `yield_now` runs the I/O driver
//! before the task again) and gives the core away when another thread wants it. An idle proxy
//! does not spin at all.

use std::cell::Cell;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

std::thread_local! {
    /// Until when this thread spins (`None`: spinning is off on this thread).
    static UNTIL: Cell<Option<Instant>> = const { Cell::new(None) };
    /// How long a spin lasts after activity on this thread.
    static BUDGET: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    /// The spinner, while it sleeps.
    static SLEEPER: Cell<Option<Waker>> = const { Cell::new(None) };
    /// Connections on this thread waiting for the worker's answer.
    static WAITING: Cell<usize> = const { Cell::new(0) };
}

/// Spinning pays while a few answers are awaited; with more, the thread is woken by one of
/// them soon anyway, and a spin would only take the core from the workers and clients.
const MAX_WAITING: usize = 4;

/// A connection waiting for its worker's answer (a request sent, bytes written to a TCP
/// worker): the thread spins while there are a few of these.
#[derive(Debug)]
pub struct Waiting(());

impl Waiting {
    /// Starts waiting (and spinning, if this thread spins).
    pub fn start() -> Waiting {
        WAITING.with(|w| w.set(w.get() + 1));
        kick();
        Waiting(())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        WAITING.with(|w| w.set(w.get().saturating_sub(1)));
    }
}

/// Whether this thread should go on spinning.
fn spinning() -> bool {
    (1..=MAX_WAITING).contains(&WAITING.with(Cell::get))
        && UNTIL.with(Cell::get).is_some_and(|u| Instant::now() < u)
}

/// Something moved on this thread: spin for the budget from now (no-op where spinning is off).
#[inline]
pub fn kick() {
    let budget = BUDGET.with(Cell::get);
    if budget.is_zero() {
        return;
    }
    UNTIL.with(|u| u.set(Some(Instant::now() + budget)));
    if let Some(w) = SLEEPER.with(Cell::take) {
        w.wake();
    }
}

/// Runs on each proxy thread: spins for `budget` after each [`kick`]; never returns.
pub async fn run(budget: Duration) {
    if budget.is_zero() {
        return std::future::pending().await;
    }
    BUDGET.with(|b| b.set(budget));
    loop {
        Sleep.await;
        while spinning() {
            // Lets the reactor poll without blocking, then runs ready tasks.
            tokio::task::yield_now().await;
            // Hands the core to another runnable thread (sched_yield).
            std::thread::yield_now();
        }
    }
}

/// Waits for the next kick.
struct Sleep;

impl std::future::Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if spinning() {
            return Poll::Ready(());
        }
        SLEEPER.with(|s| s.set(Some(cx.waker().clone())));
        Poll::Pending
    }
}

/// A TCP proxy's connection to its worker: waiting from when bytes are written to it until
/// bytes come back.
#[derive(Debug)]
pub struct ToWorker<S> {
    inner: S,
    waiting: Option<Waiting>,
    /// Some byte came back (the TCP proxy's error count: a reset before it is the worker's).
    answered: bool,
}

impl<S> ToWorker<S> {
    /// Wraps the connection to the worker.
    pub fn new(inner: S) -> ToWorker<S> {
        ToWorker {
            inner,
            waiting: None,
            answered: false,
        }
    }

    /// Whether the worker has sent anything yet.
    pub fn has_answered(&self) -> bool {
        self.answered
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ToWorker<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        // Bytes back, or an error: the answer is no longer awaited.
        let answered = match &r {
            Poll::Ready(Ok(())) => buf.filled().len() > before,
            Poll::Ready(Err(_)) => true,
            Poll::Pending => false,
        };
        if answered {
            self.waiting = None;
        }
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.answered = true;
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ToWorker<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) && self.waiting.is_none() {
            self.waiting = Some(Waiting::start());
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.waiting = None;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spins_only_while_a_few_answers_are_awaited() {
        // The state is per thread: a thread of its own.
        std::thread::spawn(|| {
            BUDGET.with(|b| b.set(Duration::from_secs(60)));
            assert!(!spinning(), "nothing awaited");
            let one = Waiting::start();
            assert!(spinning());
            let more: Vec<Waiting> = (0..MAX_WAITING).map(|_| Waiting::start()).collect();
            assert!(!spinning(), "too many awaited");
            drop(more);
            assert!(spinning());
            drop(one);
            assert!(!spinning());
            BUDGET.with(|b| b.set(Duration::ZERO));
            UNTIL.with(|u| u.set(None));
            let _w = Waiting::start();
            assert!(!spinning(), "turned off");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn the_spinner_lets_other_tasks_run_and_stops_after_its_budget() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::spawn(run(Duration::from_millis(30)));
            tokio::task::yield_now().await;
            let w = Waiting::start();
            assert!(spinning());
            // Timers and other tasks go on while it spins (on this very thread), and the
            // spin ends with its budget.
            tokio::time::sleep(Duration::from_millis(60)).await;
            assert!(!spinning());
            drop(w);
        });
    }
}
