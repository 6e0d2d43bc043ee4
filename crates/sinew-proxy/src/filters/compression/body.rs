//! A body passed through an encoder or decoder as it streams: each data frame is coded
//! when it arrives and what the coder gave is sent on at once; the end of the body (or
//! its trailers) finishes the coding first. One type for the three uses — responses
//! compressed, requests and responses decompressed — generic over the body and coder,
//! so each use is compiled for its own types.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use sinew_upstream::body::UpstreamBodyError;

use super::coder::{CodingError, Decoder, Encoder};
use crate::stream::body::{ResponseBody, WatchedBody};
use crate::stream::flags::ResponseFlags;

/// What codes a body chunk by chunk.
pub(crate) trait Coding {
    fn chunk(&mut self, chunk: &[u8]) -> Result<Bytes, CodingError>;
    fn finish(&mut self) -> Result<Bytes, CodingError>;
}

impl Coding for Encoder {
    fn chunk(&mut self, chunk: &[u8]) -> Result<Bytes, CodingError> {
        Encoder::chunk(self, chunk).map_err(|e| CodingError::Malformed(e.to_string()))
    }
    fn finish(&mut self) -> Result<Bytes, CodingError> {
        Encoder::finish(self).map_err(|e| CodingError::Malformed(e.to_string()))
    }
}

impl Coding for Decoder {
    fn chunk(&mut self, chunk: &[u8]) -> Result<Bytes, CodingError> {
        Decoder::chunk(self, chunk)
    }
    fn finish(&mut self) -> Result<Bytes, CodingError> {
        Decoder::finish(self)
    }
}

/// How a body's error type says the coding failed.
pub(crate) trait FromCoding {
    fn from_coding(e: CodingError) -> Self;
}

impl FromCoding for UpstreamBodyError {
    fn from_coding(e: CodingError) -> Self {
        UpstreamBodyError::Filter(e.to_string())
    }
}

impl FromCoding for sinew_stream::BodyError {
    fn from_coding(e: CodingError) -> Self {
        sinew_stream::BodyError::Filter {
            too_large: e == CodingError::TooLarge,
            reason: e.to_string(),
        }
    }
}

/// `inner` passed through `coder`.
pub(crate) struct Coded<B, C> {
    inner: B,
    coder: C,
    /// The body's trailers, sent after the coding's last bytes.
    trailers: Option<HeaderMap>,
    /// The inner body ended (or failed): nothing more is read from it.
    done: bool,
}

impl<B, C> Coded<B, C> {
    pub(crate) fn new(inner: B, coder: C) -> Self {
        Coded {
            inner,
            coder,
            trailers: None,
            done: false,
        }
    }
}

impl<B, C> Body for Coded<B, C>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: FromCoding,
    C: Coding + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        // Bounded: each turn reads a frame from the inner body, and only a data frame
        // the coder swallowed whole (no output yet) turns again.
        loop {
            if this.done {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            let coded = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.coder.chunk(&data),
                    Err(frame) => {
                        this.done = true;
                        this.trailers = frame.into_trailers().ok();
                        this.coder.finish()
                    }
                },
                Some(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    this.done = true;
                    this.coder.finish()
                }
            };
            match coded {
                Ok(out) if out.is_empty() => continue,
                Ok(out) => return Poll::Ready(Some(Ok(Frame::data(out)))),
                Err(e) => {
                    this.done = true;
                    this.trailers = None;
                    return Poll::Ready(Some(Err(B::Error::from_coding(e))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        // The coded length is known only at the end: the body is sent chunked (HTTP/1.1)
        // or as DATA frames without a content-length (HTTP/2).
        SizeHint::default()
    }
}

/// A response body coded on its way downstream is one a filter watches go by: it
/// passes an early end on to whatever it wraps (the access log wraps it in turn).
impl<C: Coding + Send + Unpin> WatchedBody for Coded<ResponseBody, C> {
    fn end_with(&mut self, flags: ResponseFlags) {
        if let ResponseBody::Watched(inner) = &mut self.inner {
            inner.end_with(flags);
        }
    }
}
