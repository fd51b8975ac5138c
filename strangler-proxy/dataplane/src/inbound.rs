//! `Inbound`: the client's request body as the proxy forwards it. It enforces the plan's
//! body cap and the longest pause between body bytes, can replay a prefix it already read
//! (a body buffered before the upstream was called), and turns every failure into an
//! [`InboundError`] that says the client caused it, so a bad or slow client is answered
//! 400, 408 or 413 and never counted against the service.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// What went wrong with a client's body.
#[derive(Debug)]
pub enum InboundError {
    /// More bytes than the cap.
    TooLarge { cap: u64 },
    /// No byte for longer than the pause allowed.
    Stalled { pause: Duration },
    /// The body broke off or is malformed (bad chunk size, cut off, client gone).
    Broken(Box<dyn std::error::Error + Send + Sync>),
}

impl fmt::Display for InboundError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InboundError::TooLarge { cap } => write!(f, "request body over {cap} bytes"),
            InboundError::Stalled { pause } => write!(
                f,
                "request body stalled: no byte for {} ms",
                pause.as_millis()
            ),
            InboundError::Broken(err) => write!(f, "request body broken: {err}"),
        }
    }
}

impl std::error::Error for InboundError {}

/// Finds the client's body error in an error's chain (the upstream client wraps it).
pub fn find<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a InboundError> {
    let mut source = Some(err);
    while let Some(e) = source {
        if let Some(found) = e.downcast_ref::<InboundError>() {
            return Some(found);
        }
        source = e.source();
    }
    None
}

/// Whether the proxy is waiting on the client for more of its body, readable while the
/// body is being sent (a route timeout then is the client's doing, not the service's).
#[derive(Debug, Clone, Default)]
pub struct InboundState {
    waiting: Arc<AtomicBool>,
}

impl InboundState {
    pub fn waiting_on_client(&self) -> bool {
        self.waiting.load(Ordering::Relaxed)
    }
}

/// A client's request body, capped and timed.
pub struct Inbound<B> {
    /// Bytes already read from `inner` (a buffered body), sent first.
    prefix: Option<Bytes>,
    inner: B,
    /// Bytes passed on so far, and the most allowed.
    read: u64,
    cap: u64,
    pause: Duration,
    /// Fires when the client paused too long; reset by every frame.
    deadline: Pin<Box<Sleep>>,
    /// An error was returned: the body is over.
    failed: bool,
    state: InboundState,
}

impl<B> Inbound<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// `inner`, at most `cap` bytes, with at most `pause` between frames; the state says
    /// whether the body is waiting on the client.
    pub fn new(inner: B, cap: u64, pause: Duration) -> (Self, InboundState) {
        let state = InboundState::default();
        let body = Self {
            prefix: None,
            inner,
            read: 0,
            cap,
            pause,
            deadline: Box::pin(tokio::time::sleep(pause)),
            failed: false,
            state: state.clone(),
        };
        (body, state)
    }

    /// Reads the body until it ends or more than `limit` bytes are in. Answers whether it
    /// ended; the bytes read are sent first when the body is forwarded.
    pub async fn buffer(&mut self, limit: u64) -> Result<bool, InboundError> {
        let mut buffered = BytesMut::new();
        let result = loop {
            if self.inner.is_end_stream() {
                break Ok(true);
            }
            match std::future::poll_fn(|cx| self.poll_inner(cx)).await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        buffered.extend_from_slice(data);
                    }
                    if buffered.len() as u64 > limit {
                        break Ok(false);
                    }
                }
                Some(Err(err)) => break Err(err),
                None => break Ok(true),
            }
        };
        if !buffered.is_empty() {
            self.prefix = Some(buffered.freeze());
        }
        result
    }

    /// Reads the whole body (with what is already buffered) and hands it out, to be edited
    /// and given back with [`Inbound::put_back`]; `None` when it runs over `limit` (what
    /// was read stays to be sent).
    pub async fn take_whole(&mut self, limit: u64) -> Result<Option<Bytes>, InboundError> {
        let before = self.prefix.take();
        let ended = self.buffer(limit).await?;
        let whole = match (before, self.prefix.take()) {
            (Some(a), Some(b)) => {
                let mut joined = BytesMut::with_capacity(a.len() + b.len());
                joined.extend_from_slice(&a);
                joined.extend_from_slice(&b);
                joined.freeze()
            }
            (a, b) => a.or(b).unwrap_or_default(),
        };
        if ended {
            Ok(Some(whole))
        } else {
            self.put_back(whole);
            Ok(None)
        }
    }

    /// Sends `bytes` before the rest of the body (after [`Inbound::take_whole`]: instead of
    /// the body).
    pub fn put_back(&mut self, bytes: Bytes) {
        self.prefix = (!bytes.is_empty()).then_some(bytes);
    }

    fn poll_inner(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, InboundError>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        self.state
            .waiting
            .store(polled.is_pending(), Ordering::Relaxed);
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.read += data.len() as u64;
                    if self.read > self.cap {
                        self.failed = true;
                        return Poll::Ready(Some(Err(InboundError::TooLarge { cap: self.cap })));
                    }
                }
                let next = Instant::now() + self.pause;
                self.deadline.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => {
                self.failed = true;
                Poll::Ready(Some(Err(InboundError::Broken(err.into()))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.failed = true;
                    Poll::Ready(Some(Err(InboundError::Stalled { pause: self.pause })))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<B> Body for Inbound<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = InboundError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(prefix) = self.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        self.poll_inner(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && (self.failed || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let prefix = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + prefix);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + prefix);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use http_body_util::BodyExt;

    use super::*;

    /// Frames, then (optionally) a stall: pending forever.
    struct Script {
        frames: VecDeque<Bytes>,
        stall: bool,
    }

    impl Body for Script {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            match self.frames.pop_front() {
                Some(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                None if self.stall => Poll::Pending,
                None => Poll::Ready(None),
            }
        }

        fn is_end_stream(&self) -> bool {
            self.frames.is_empty() && !self.stall
        }
    }

    fn script(parts: &[&'static str], stall: bool) -> Script {
        Script {
            frames: parts
                .iter()
                .map(|p| Bytes::from_static(p.as_bytes()))
                .collect(),
            stall,
        }
    }

    #[tokio::test]
    async fn a_body_under_the_cap_passes_whole() {
        let (body, _) = Inbound::new(script(&["ab", "cd"], false), 4, Duration::from_secs(1));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "abcd");
    }

    #[tokio::test]
    async fn a_body_over_the_cap_fails_as_too_large() {
        let (body, _) = Inbound::new(script(&["ab", "cde"], false), 4, Duration::from_secs(1));
        let err = body.collect().await.unwrap_err();
        assert!(matches!(err, InboundError::TooLarge { cap: 4 }), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_fails_after_the_pause() {
        let (mut body, state) = Inbound::new(script(&["ab"], true), 100, Duration::from_secs(10));
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "ab");
        assert!(!state.waiting_on_client());
        let err = body.collect().await.unwrap_err();
        assert!(state.waiting_on_client(), "it was the client we waited for");
        assert!(matches!(err, InboundError::Stalled { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_buffered_body_is_replayed_then_the_rest_streams() {
        let (mut body, _) = Inbound::new(
            script(&["ab", "cd", "ef"], false),
            100,
            Duration::from_secs(1),
        );
        assert!(
            !body.buffer(3).await.unwrap(),
            "4 bytes are over 3: not whole"
        );
        assert_eq!(body.collect().await.unwrap().to_bytes(), "abcdef");

        let (mut whole, _) =
            Inbound::new(script(&["ab", "cd"], false), 100, Duration::from_secs(1));
        assert!(whole.buffer(10).await.unwrap(), "it ended within the limit");
        assert_eq!(whole.collect().await.unwrap().to_bytes(), "abcd");

        let (mut large, _) =
            Inbound::new(script(&["abc", "def"], false), 5, Duration::from_secs(1));
        assert!(matches!(
            large.buffer(10).await,
            Err(InboundError::TooLarge { cap: 5 })
        ));
    }

    #[test]
    fn the_error_is_found_in_a_chain() {
        #[derive(Debug)]
        struct Wrapper(InboundError);
        impl fmt::Display for Wrapper {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("client error")
            }
        }
        impl std::error::Error for Wrapper {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let err = Wrapper(InboundError::TooLarge { cap: 1 });
        assert!(matches!(
            find(&err),
            Some(InboundError::TooLarge { cap: 1 })
        ));
    }
}
