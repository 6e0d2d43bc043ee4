//! The bodies that cross the upstream boundary.
//!
//! [`RequestBody`] is what goes up: nothing, a buffered body (replayable for retries), or
//! the downstream body streamed through under a size cap. [`UpstreamBody`] is what comes
//! back: it holds the connection's lease and returns an HTTP/1.1 connection to its pool
//! the moment the response is complete, with no extra task per request.

use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::breaker::Slot;
use crate::pool::EndpointState;

/// A request body on its way upstream.
pub enum RequestBody {
    Empty,
    /// Buffered: it can be sent again on retry.
    Full(Option<Bytes>),
    /// Streamed from downstream; `remaining` bytes more are allowed before it fails with
    /// [`BodyError::TooLarge`].
    Streaming {
        body: Incoming,
        remaining: u64,
    },
}

impl RequestBody {
    pub fn streaming(body: Incoming, limit: Option<u64>) -> Self {
        RequestBody::Streaming {
            body,
            remaining: limit.unwrap_or(u64::MAX),
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
}

/// Why a request body stopped.
#[derive(Debug)]
pub enum BodyError {
    /// The body went over the listener's `max_request_body_bytes`.
    TooLarge,
    Downstream(hyper::Error),
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
            RequestBody::Streaming { body, remaining } => match Pin::new(body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        let len = data.len() as u64;
                        if len > *remaining {
                            return Poll::Ready(Some(Err(BodyError::TooLarge)));
                        }
                        *remaining -= len;
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyError::Downstream(e)))),
                Poll::Ready(None) => Poll::Ready(None),
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

/// What an upstream response holds on to until its body is done.
pub(crate) enum Lease {
    /// An HTTP/1.1 connection, back to the pool when the body ends cleanly.
    Http1 {
        sender: hyper::client::conn::http1::SendRequest<RequestBody>,
        endpoint: Arc<EndpointState>,
    },
    /// One stream of an HTTP/2 connection, given back when the permit drops.
    Http2 { _permit: StreamPermit },
}

/// Counts a stream against its HTTP/2 connection's limit until dropped.
pub(crate) struct StreamPermit(pub(crate) Arc<AtomicU32>);

impl Drop for StreamPermit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}

/// An upstream response body that releases its connection when done.
pub struct UpstreamBody {
    inner: Incoming,
    lease: Option<Lease>,
    /// The request's place under its cluster's `max_requests`, held to the body's end.
    _request_slot: Option<Slot>,
}

impl UpstreamBody {
    pub(crate) fn new(inner: Incoming, lease: Option<Lease>) -> Self {
        Self {
            inner,
            lease,
            _request_slot: None,
        }
    }

    /// Keeps `slot` until this body is done with, so the request counts as in flight
    /// while its response streams.
    pub fn hold(&mut self, slot: Slot) {
        self._request_slot = Some(slot);
    }

    /// Gives an HTTP/1.1 connection back to its pool once the message is complete.
    fn release(&mut self) {
        if let Some(Lease::Http1 { sender, endpoint }) = self.lease.take() {
            endpoint.check_in(sender);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Err(_))) => this.lease = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // hyper stops polling a body that says it has ended, so the clean end may only be
        // visible here. A body dropped half-read takes its connection down with it.
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}
