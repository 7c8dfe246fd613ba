//! Knowing when a request body has been sent: `--upstream-timeout` counts from then, so a
//! long upload is not mistaken for a worker that does not answer.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;

use super::pool::ReqBody;

/// A request body that says when its last byte has been taken.
pub struct Tracked {
    inner: ReqBody,
    done: Option<oneshot::Sender<()>>,
}

impl Tracked {
    /// `inner`, and what resolves once it has been read to the end (or dropped).
    pub fn new(inner: ReqBody) -> (Tracked, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let done = if inner.is_end_stream() {
            let _ = tx.send(());
            None
        } else {
            Some(tx)
        };
        (Tracked { inner, done }, rx)
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        // hyper stops polling a body with a known length once it has all of it.
        let finished = match &r {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => true,
            Poll::Ready(Some(Ok(_))) => self.inner.is_end_stream(),
            Poll::Pending => false,
        };
        if finished {
            if let Some(tx) = self.done.take() {
                let _ = tx.send(());
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
