//! Sinew's stream layer: what a request is once its protocol has been read, whatever
//! that protocol was (docs/architecture.md, layer 3).
//!
//! The codecs below (layer 2) produce requests whose bodies read straight from their
//! connection: HTTP/1 through Sinew's codec ([`sinew_codec::http1::server`]), HTTP/2
//! through its HTTP/2 driver ([`sinew_codec::http2::server`]). [`RequestBody`] is one
//! type for both, so the proxy's phases and the upstream layer see one request type and
//! never which codec made it.
//!
//! An HTTP/1 connection's halves, downstream or upstream, are boxed ([`ConnRead`],
//! [`ConnWrite`]) so that a cleartext and a TLS connection give the same body and
//! upgrade types: one allocation per connection, not per request.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite};

/// A request as the stream layer and its filters see it, whichever codec read it.
pub type DownstreamRequest = http::Request<RequestBody>;

/// The read half of an HTTP/1 connection, plain or TLS.
pub type ConnRead = Box<dyn AsyncRead + Send + Sync + Unpin>;
/// The write half of an HTTP/1 connection, plain or TLS.
pub type ConnWrite = Box<dyn AsyncWrite + Send + Sync + Unpin>;
/// The hand-over of a downstream HTTP/1 connection that switches protocols: in the
/// extensions of a request that asks to (WebSocket, CONNECT).
pub type OnUpgrade = sinew_codec::http1::OnUpgrade<ConnRead, ConnWrite>;
/// An HTTP/1 connection (either side) after it switched protocols.
pub type Upgraded = sinew_codec::http1::Upgraded<ConnRead, ConnWrite>;

/// A downstream request's body, read from its connection as it is polled.
pub enum RequestBody {
    Http1(sinew_codec::http1::server::RequestBody<ConnRead>),
    Http2(sinew_codec::http2::RecvBody),
    /// Transformed by a filter as it is read (decompressed). Boxed and dynamic: only
    /// requests such a filter takes pay for it.
    Filtered(Box<dyn Body<Data = Bytes, Error = BodyError> + Send + Sync + Unpin>),
}

/// Why a downstream body could not be read to its end: its framing broke, or the
/// client went away. Either way the request cannot be completed.
#[derive(Debug)]
pub enum BodyError {
    Http1(sinew_codec::http1::BodyError),
    Http2(sinew_codec::http2::Error),
    /// A filter could not transform the body: it grew past the filter's bound
    /// (`too_large`: a decompression bomb, answered 413) or was malformed (400).
    Filter {
        too_large: bool,
        reason: String,
    },
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Http1(e) => write!(f, "HTTP/1 request body: {e}"),
            BodyError::Http2(e) => write!(f, "HTTP/2 request body: {e}"),
            BodyError::Filter { reason, .. } => write!(f, "request body: {reason}"),
        }
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BodyError::Http1(e) => Some(e),
            BodyError::Http2(e) => Some(e),
            BodyError::Filter { .. } => None,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            RequestBody::Http1(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(BodyError::Http1))),
            RequestBody::Http2(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(BodyError::Http2))),
            RequestBody::Filtered(body) => Pin::new(body.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Http1(body) => body.is_end_stream(),
            RequestBody::Http2(body) => body.is_end_stream(),
            RequestBody::Filtered(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Http1(body) => body.size_hint(),
            RequestBody::Http2(body) => body.size_hint(),
            RequestBody::Filtered(body) => body.size_hint(),
        }
    }
}
