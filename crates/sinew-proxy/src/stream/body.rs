//! The response body Sinew sends downstream: streamed from an upstream, or made locally.
//! An enum rather than a boxed trait object, so a proxied response costs no allocation.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use sinew_upstream::body::UpstreamBodyError;
use sinew_upstream::UpstreamBody;

use super::flags::ResponseFlags;

pub enum ResponseBody {
    Upstream(UpstreamBody),
    Local(Option<Bytes>),
    /// Wrapped by a filter that watches the body go by (the access log counts its bytes
    /// and logs when it ends) or transforms it (compression). Boxed and dynamic: only
    /// streams with such a filter pay.
    Watched(Box<dyn WatchedBody>),
}

/// A response body a filter wraps to watch it go by.
pub trait WatchedBody: Body<Data = Bytes, Error = UpstreamBodyError> + Send + Unpin {
    /// The stream is being ended early, for the reason `flags` gives: record it now.
    fn end_with(&mut self, flags: ResponseFlags);
}

impl ResponseBody {
    pub fn empty() -> Self {
        ResponseBody::Local(None)
    }

    pub fn text(text: impl Into<Bytes>) -> Self {
        let bytes = text.into();
        ResponseBody::Local((!bytes.is_empty()).then_some(bytes))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = UpstreamBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamBodyError>>> {
        match self.get_mut() {
            ResponseBody::Upstream(b) => Pin::new(b).poll_frame(cx),
            ResponseBody::Local(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ResponseBody::Watched(b) => Pin::new(b.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Upstream(b) => b.is_end_stream(),
            ResponseBody::Local(b) => b.is_none(),
            ResponseBody::Watched(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream(b) => b.size_hint(),
            ResponseBody::Local(b) => {
                SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64))
            }
            ResponseBody::Watched(b) => b.size_hint(),
        }
    }
}
