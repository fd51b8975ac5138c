//! `TeeBody`: a body that passes every frame on unchanged and keeps a copy of the data up to
//! a cap, delivered through a oneshot when the stream ends. The shadow leg reads the client's
//! request body and the primary's answer this way, without delaying either.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame};
use tokio::sync::oneshot;

/// What a tee captured.
#[derive(Debug)]
pub enum Captured {
    Complete(Bytes),
    TooLarge,
    /// Not complete within the leg's deadline (a slow client, a long stream).
    Incomplete,
}

/// A body that passes every frame on and keeps a copy of the data up to a cap, delivered
/// when the stream ends. Without a receiver it copies nothing.
pub struct TeeBody<B: Body> {
    inner: B,
    copy: BytesMut,
    cap: usize,
    overflow: bool,
    done: Option<oneshot::Sender<Captured>>,
}

impl<B: Body> TeeBody<B> {
    /// Passes `inner` on unchanged.
    pub fn passthrough(inner: B) -> Self {
        Self {
            inner,
            copy: BytesMut::new(),
            cap: 0,
            overflow: false,
            done: None,
        }
    }

    /// Passes `inner` on and captures up to `cap` bytes of it.
    pub fn capture(inner: B, cap: usize) -> (Self, oneshot::Receiver<Captured>) {
        let (tx, rx) = oneshot::channel();
        (
            Self {
                inner,
                copy: BytesMut::new(),
                cap,
                overflow: false,
                done: Some(tx),
            },
            rx,
        )
    }
}

impl<B: Body> TeeBody<B> {
    /// Delivers the copy (once).
    fn finish(&mut self) {
        if let Some(done) = self.done.take() {
            let captured = if self.overflow {
                Captured::TooLarge
            } else {
                Captured::Complete(std::mem::take(&mut self.copy).freeze())
            };
            let _ = done.send(captured);
        }
    }
}

impl<B: Body> Drop for TeeBody<B> {
    fn drop(&mut self) {
        // A reader that stops at the declared length never polls for the end: the body is
        // complete all the same.
        if self.inner.is_end_stream() {
            self.finish();
        }
    }
}

impl<B> Body for TeeBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if this.done.is_some() {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref()
                        && !this.overflow
                    {
                        if this.copy.len() + data.len() > this.cap {
                            this.overflow = true;
                            this.copy = BytesMut::new();
                        } else {
                            this.copy.extend_from_slice(data);
                        }
                    }
                    if this.inner.is_end_stream() {
                        this.finish();
                    }
                }
                Poll::Ready(None) => this.finish(),
                // An error or an abandoned stream drops the sender: nothing to compare.
                Poll::Ready(Some(Err(_))) => this.done = None,
                Poll::Pending => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
