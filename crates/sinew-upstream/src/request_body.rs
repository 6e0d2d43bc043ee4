//! The request body on its way upstream: nothing, a buffered body (replayable for
//! retries), or the downstream body streamed through under a size cap, from which a copy
//! can be taken for shadow requests as it passes (the copy itself is [`crate::tee`]'s).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use sinew_stream::RequestBody as DownstreamBody;

use crate::tee::{BodyTee, ShadowBody};

/// A request body on its way upstream.
pub enum RequestBody {
    Empty,
    /// Buffered: it can be sent again on retry.
    Full(Option<Bytes>),
    /// Streamed from downstream; `remaining` bytes more are allowed before it fails with
    /// [`BodyError::TooLarge`].
    Streaming {
        body: DownstreamBody,
        remaining: u64,
        /// A copy being made for shadow requests (see [`RequestBody::shadow_copy`]).
        tee: Option<Box<BodyTee>>,
    },
}

impl RequestBody {
    pub fn streaming(body: DownstreamBody, limit: Option<u64>) -> Self {
        RequestBody::Streaming {
            body,
            remaining: limit.unwrap_or(u64::MAX),
            tee: None,
        }
    }

    /// A copy for another attempt, if this body can be replayed.
    pub fn try_clone(&self) -> Option<RequestBody> {
        match self {
            RequestBody::Empty => Some(RequestBody::Empty),
            RequestBody::Full(b) => Some(RequestBody::Full(b.clone())),
            RequestBody::Streaming { .. } => None,
        }
    }

    /// A copy of this body for a shadow request, or None when it is known to be larger
    /// than `cap` bytes. A streamed body's copy is made as it streams (see [`crate::tee`]).
    pub fn shadow_copy(&mut self, cap: usize) -> Option<ShadowBody> {
        match self {
            RequestBody::Empty => Some(ShadowBody::Ready(Bytes::new())),
            RequestBody::Full(b) => {
                let b = b.clone().unwrap_or_default();
                (b.len() <= cap).then_some(ShadowBody::Ready(b))
            }
            RequestBody::Streaming { body, tee, .. } => {
                let hint = http_body::Body::size_hint(body);
                if hint.lower() > cap as u64 {
                    return None;
                }
                let tee = tee.get_or_insert_with(|| Box::new(BodyTee::new(hint.exact())));
                Some(ShadowBody::Pending(tee.wait(cap)))
            }
        }
    }
}

/// Why a request body stopped.
#[derive(Debug)]
pub enum BodyError {
    /// The body went over the listener's `max_request_body_bytes`.
    TooLarge,
    Downstream(sinew_stream::BodyError),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge => write!(f, "request body over the size limit"),
            BodyError::Downstream(e) => write!(f, "downstream body: {e}"),
        }
    }
}

impl std::error::Error for BodyError {}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            RequestBody::Streaming {
                body,
                remaining,
                tee,
            } => match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        let len = data.len() as u64;
                        if len > *remaining {
                            *tee = None;
                            return Poll::Ready(Some(Err(BodyError::TooLarge)));
                        }
                        *remaining -= len;
                        if tee.as_mut().is_some_and(|t| !t.copy(data)) {
                            *tee = None;
                        }
                    }
                    // A client stops polling a body that says it has ended: this may be the
                    // last look at it.
                    if body.is_end_stream() {
                        if let Some(t) = tee.take() {
                            (*t).finish();
                        }
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => {
                    *tee = None;
                    Poll::Ready(Some(Err(BodyError::Downstream(e))))
                }
                Poll::Ready(None) => {
                    if let Some(t) = tee.take() {
                        (*t).finish();
                    }
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Full(b) => b.is_none(),
            RequestBody::Streaming { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            RequestBody::Streaming { body, .. } => body.size_hint(),
        }
    }
}
