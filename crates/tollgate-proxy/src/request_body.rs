//! The request body on its way upstream. It streams frame by frame; nothing here buffers a
//! whole body.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

/// Why a request body could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    /// More bytes than the API or gateway allows.
    #[error("request body exceeds {limit} bytes")]
    TooLarge {
        /// The cap.
        limit: u64,
    },
    /// The client sent nothing for the read timeout.
    #[error("client sent no body bytes for {0:?}")]
    IdleTimeout(Duration),
    /// The client's stream broke (bad chunking, reset).
    #[error("client body: {0}")]
    Client(#[source] hyper::Error),
}

pin_project_lite::pin_project! {
    /// The client's request body on its way upstream: enforces the body cap while streaming
    /// and cuts off a client that goes quiet mid-body.
    pub struct RequestBody {
        #[pin]
        inner: Incoming,
        seen: u64,
        limit: Option<u64>,
        idle: Duration,
        #[pin]
        timer: Sleep,
    }
}

impl RequestBody {
    /// Wraps a client body.
    pub fn new(inner: Incoming, limit: Option<u64>, idle: Duration) -> Self {
        Self {
            inner,
            seen: 0,
            limit,
            idle,
            timer: tokio::time::sleep(idle),
        }
    }

    /// The next frame, counted against the cap; the idle timer restarts on each one.
    fn poll_next_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let mut this = self.project();
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.seen += data.len() as u64;
                    if let Some(limit) = *this.limit
                        && *this.seen > limit
                    {
                        return Poll::Ready(Some(Err(RequestBodyError::TooLarge { limit })));
                    }
                }
                this.timer.as_mut().reset(Instant::now() + *this.idle);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(RequestBodyError::Client(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                ready!(this.timer.poll(cx));
                Poll::Ready(Some(Err(RequestBodyError::IdleTimeout(*this.idle))))
            }
        }
    }
}

/// What the upstream request carries.
pub enum UpstreamBody {
    /// No body (GET and friends): nothing to poll, no timer.
    Empty,
    /// The client's body, streaming.
    Streaming(Pin<Box<RequestBody>>),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        match self.get_mut() {
            Self::Empty => Poll::Ready(None),
            Self::Streaming(b) => b.as_mut().poll_next_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Streaming(b) => b.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::Streaming(b) => b.inner.size_hint(),
        }
    }
}
