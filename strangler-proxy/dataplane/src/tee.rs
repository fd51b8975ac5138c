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

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use http_body_util::BodyExt;

    use super::*;

    /// A body of data frames that knows when it is done (like a body with a
    /// `Content-Length`), optionally failing after its frames.
    struct Frames {
        frames: VecDeque<Bytes>,
        fail_at_end: bool,
    }

    fn frames(parts: &[&'static str]) -> Frames {
        Frames {
            frames: parts
                .iter()
                .map(|p| Bytes::from_static(p.as_bytes()))
                .collect(),
            fail_at_end: false,
        }
    }

    impl Body for Frames {
        type Data = Bytes;
        type Error = &'static str;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            match self.frames.pop_front() {
                Some(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                None if self.fail_at_end => Poll::Ready(Some(Err("connection reset"))),
                None => Poll::Ready(None),
            }
        }

        fn is_end_stream(&self) -> bool {
            self.frames.is_empty() && !self.fail_at_end
        }
    }

    #[tokio::test]
    async fn passes_every_byte_on_and_keeps_a_copy_under_the_cap() {
        let (tee, copy) = TeeBody::capture(frames(&["ab", "cd", "ef"]), 6);
        let passed = tee.collect().await.unwrap().to_bytes();
        assert_eq!(passed, "abcdef");
        match copy.await.unwrap() {
            Captured::Complete(bytes) => assert_eq!(bytes, "abcdef"),
            other => panic!("expected the whole body, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn over_the_cap_the_client_still_gets_everything_and_the_copy_says_too_large() {
        let (tee, copy) = TeeBody::capture(frames(&["abc", "def", "g"]), 5);
        let passed = tee.collect().await.unwrap().to_bytes();
        assert_eq!(passed, "abcdefg");
        assert!(matches!(copy.await.unwrap(), Captured::TooLarge));
    }

    #[tokio::test]
    async fn a_reader_that_stops_at_the_declared_length_still_completes_the_copy() {
        let (mut tee, copy) = TeeBody::capture(frames(&["ab", "cd"]), 100);
        // Read the data frames only, as a reader that stops at Content-Length does.
        let mut read = Vec::new();
        while !tee.is_end_stream() {
            let frame = tee.frame().await.unwrap().unwrap();
            read.extend_from_slice(frame.data_ref().unwrap());
        }
        assert_eq!(read, b"abcd");
        // The last frame already delivered it; dropping changes nothing.
        drop(tee);
        match copy.await.unwrap() {
            Captured::Complete(bytes) => assert_eq!(bytes, "abcd"),
            other => panic!("expected the whole body, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn dropped_before_the_end_delivers_nothing() {
        let (mut tee, copy) = TeeBody::capture(frames(&["ab", "cd"]), 100);
        let _first = tee.frame().await.unwrap().unwrap();
        drop(tee);
        assert!(copy.await.is_err(), "an abandoned body is not compared");
    }

    #[tokio::test]
    async fn a_stream_error_passes_on_and_delivers_nothing() {
        let body = Frames {
            fail_at_end: true,
            ..frames(&["ab"])
        };
        let (tee, copy) = TeeBody::capture(body, 100);
        assert_eq!(tee.collect().await.unwrap_err(), "connection reset");
        assert!(copy.await.is_err());
    }

    #[tokio::test]
    async fn passthrough_copies_nothing() {
        let tee = TeeBody::passthrough(frames(&["ab", "cd"]));
        assert_eq!(tee.copy.capacity(), 0);
        let passed = tee.collect().await.unwrap().to_bytes();
        assert_eq!(passed, "abcd");
    }

    #[tokio::test]
    async fn an_empty_body_never_polled_is_complete_when_dropped() {
        // Content-Length: 0: the reader sees the end before polling once.
        let (tee, copy) = TeeBody::capture(frames(&[]), 100);
        assert!(tee.is_end_stream());
        drop(tee);
        match copy.await.unwrap() {
            Captured::Complete(bytes) => assert!(bytes.is_empty()),
            other => panic!("expected an empty body, got {other:?}"),
        }
    }
}
