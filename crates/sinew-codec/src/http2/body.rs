//! A message body received on an HTTP/2 stream (a request's on the server side, a
//! response's on the client side): its DATA frames, then its trailers.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::Error;

/// A received body, read from its stream as it is polled.
///
/// Each DATA frame's bytes are given back to the peer's flow-control window when they
/// are handed out, not when they arrive: a service that stops reading stops the peer
/// once the window it was granted is full, and no more than that is ever buffered.
pub struct RecvBody {
    recv: h2::RecvStream,
    state: State,
    /// What is still to come, when the message said its length (`Content-Length`, which
    /// `h2` holds the DATA frames to).
    remaining: Option<u64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Data,
    Trailers,
    Done,
}

impl RecvBody {
    pub(super) fn new(recv: h2::RecvStream, content_length: Option<u64>) -> Self {
        // A stream that ended with its HEADERS frame has no body, whatever it announced.
        let remaining = match content_length {
            _ if recv.is_end_stream() => Some(0),
            known => known,
        };
        RecvBody {
            recv,
            state: State::Data,
            remaining,
        }
    }

    /// The stream ended early by a reset: with `NO_ERROR` the peer only says it needs no
    /// more of this stream (RFC 9113 §8.1: a server may answer before the whole request,
    /// then reset the rest of it), so the body ends here without failing — unless the
    /// body said its length and that much has not come, which is a cut, not an end. Any
    /// other reset fails the body.
    fn stopped(&mut self, e: h2::Error) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.state = State::Done;
        let cut = self.remaining.is_some_and(|n| n > 0);
        match e.reason() {
            Some(h2::Reason::NO_ERROR) if !cut => Poll::Ready(None),
            _ => Poll::Ready(Some(Err(Error(e)))),
        }
    }
}

impl Body for RecvBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        if this.state == State::Data {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Only fails if the stream is already gone; the next poll says so.
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    if let Some(remaining) = &mut this.remaining {
                        *remaining = remaining.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return this.stopped(e),
                None => this.state = State::Trailers,
            }
        }
        if this.state == State::Trailers {
            return match ready!(this.recv.poll_trailers(cx)) {
                Ok(trailers) => {
                    this.state = State::Done;
                    Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))))
                }
                Err(e) => this.stopped(e),
            };
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Done || self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            _ if self.state == State::Done => SizeHint::with_exact(0),
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
