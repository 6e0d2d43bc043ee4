//! The bodies that cross the upstream boundary.
//!
//! [`RequestBody`] is what goes up: nothing, a buffered body (replayable for retries), or
//! the downstream body streamed through under a size cap. [`UpstreamBody`] is what comes
//! back: an HTTP/1.1 response read by Sinew's codec, which returns its connection to the
//! pool from inside the body the moment the response is complete (no task, no channel),
//! or a stream of a shared HTTP/2 connection.

use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use sinew_stream::{ConnRead, ConnWrite, RequestBody as DownstreamBody, Upgraded};

use sinew_codec::http1::client::{CheckIn, ClientConn, ResponseBody};

use crate::breaker::Slot;
use crate::pool::{EndpointState, Http1Conn};
use crate::tee::BodyTee;

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
                    // hyper stops polling a body that says it has ended: this may be the
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

/// An upstream HTTP/1 response body as Sinew's codec reads it.
type Http1Body = ResponseBody<ConnRead, ConnWrite, PoolReturn>;

/// Where an HTTP/1 connection goes when its response has ended cleanly: back to its
/// endpoint's pool, with the place it holds under the cluster's connection limit. If the
/// body ends any other way, this drops with it and the slot is freed.
pub(crate) struct PoolReturn {
    pub(crate) endpoint: Arc<EndpointState>,
    pub(crate) slot: Slot,
}

impl CheckIn<ConnRead, ConnWrite> for PoolReturn {
    fn check_in(self, conn: ClientConn<ConnRead, ConnWrite>) {
        self.endpoint.check_in(Http1Conn {
            conn,
            slot: self.slot,
        });
    }
}

/// Counts a stream against its HTTP/2 connection's limit until dropped.
pub(crate) struct StreamPermit(pub(crate) Arc<AtomicU32>);

impl Drop for StreamPermit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}

enum Inner {
    /// Read by Sinew's codec; the connection goes home from inside it when it ends.
    Http1(Http1Body),
    /// One stream of a shared HTTP/2 connection, given back when the permit drops.
    Http2(Incoming, #[allow(dead_code)] StreamPermit),
    /// Handed over after a protocol switch.
    Switched,
}

/// Why an upstream response body stopped before its end.
#[derive(Debug)]
pub enum UpstreamBodyError {
    Http1(sinew_codec::http1::BodyError),
    Http2(hyper::Error),
}

impl std::fmt::Display for UpstreamBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamBodyError::Http1(e) => write!(f, "upstream HTTP/1 body: {e}"),
            UpstreamBodyError::Http2(e) => write!(f, "upstream HTTP/2 body: {e}"),
        }
    }
}

impl std::error::Error for UpstreamBodyError {}

/// An upstream response body that releases its connection when done.
pub struct UpstreamBody {
    inner: Inner,
    /// The request's place under its cluster's `max_requests`, held to the body's end.
    _request_slot: Option<Slot>,
}

impl UpstreamBody {
    pub(crate) fn http1(body: Http1Body) -> Self {
        Self {
            inner: Inner::Http1(body),
            _request_slot: None,
        }
    }

    pub(crate) fn http2(body: Incoming, permit: StreamPermit) -> Self {
        Self {
            inner: Inner::Http2(body, permit),
            _request_slot: None,
        }
    }

    /// Keeps `slot` until this body is done with, so the request counts as in flight
    /// while its response streams.
    pub fn hold(&mut self, slot: Slot) {
        self._request_slot = Some(slot);
    }

    /// After a 101: the upstream connection, with the bytes that came after the head.
    /// The body is empty from then on.
    pub fn take_upgraded(&mut self) -> Option<Upgraded> {
        match std::mem::replace(&mut self.inner, Inner::Switched) {
            Inner::Http1(body) => body.into_upgraded(),
            other => {
                self.inner = other;
                None
            }
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = UpstreamBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamBodyError>>> {
        match &mut self.get_mut().inner {
            Inner::Http1(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(UpstreamBodyError::Http1))),
            Inner::Http2(body, _) => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(UpstreamBodyError::Http2))),
            Inner::Switched => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Http1(body) => body.is_end_stream(),
            Inner::Http2(body, _) => body.is_end_stream(),
            Inner::Switched => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Http1(body) => body.size_hint(),
            Inner::Http2(body, _) => body.size_hint(),
            Inner::Switched => SizeHint::with_exact(0),
        }
    }
}
