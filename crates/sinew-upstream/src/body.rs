//! The response body that comes back from upstream ([`UpstreamBody`]): an HTTP/1.1
//! response read by Sinew's codec, which returns its connection to the pool from inside
//! the body the moment the response is complete (no task, no channel; see
//! `PoolReturn`), or a stream of a shared HTTP/2 connection read by the codec's client,
//! which frees its place on that connection when dropped (and resets the stream if it
//! had not ended).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use sinew_stream::{ConnRead, ConnWrite, Upgraded};

use sinew_codec::http1::client::ResponseBody;
use sinew_codec::http2::ResponseBody as Http2Body;

use crate::breaker::Slot;
use crate::pool::{PoolReturn, StreamPermit};

/// An upstream HTTP/1 response body as Sinew's codec reads it.
type Http1Body = ResponseBody<ConnRead, ConnWrite, PoolReturn>;

enum Inner {
    /// Read by Sinew's codec; the connection goes home from inside it when it ends.
    Http1(Http1Body),
    /// One stream of a shared HTTP/2 connection, given back when the permit drops.
    Http2(Http2Body, #[allow(dead_code)] StreamPermit),
    /// Handed over after a protocol switch.
    Switched,
}

/// Why an upstream response body stopped before its end.
#[derive(Debug)]
pub enum UpstreamBodyError {
    Http1(sinew_codec::http1::BodyError),
    Http2(sinew_codec::http2::Error),
    /// A filter could not transform the body (a response that does not decompress, or
    /// grows past the decompression bound): the stream is cut off.
    Filter(String),
}

impl std::fmt::Display for UpstreamBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamBodyError::Http1(e) => write!(f, "upstream HTTP/1 body: {e}"),
            UpstreamBodyError::Http2(e) => write!(f, "upstream HTTP/2 body: {e}"),
            UpstreamBodyError::Filter(reason) => write!(f, "upstream body: {reason}"),
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

    pub(crate) fn http2(body: Http2Body, permit: StreamPermit) -> Self {
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
