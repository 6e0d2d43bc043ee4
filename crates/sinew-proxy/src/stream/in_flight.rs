//! Where a request's stream ends, and Envoy's `stream_idle_timeout`.
//!
//! A request is in flight from its head until the last byte of its response body has gone
//! (or the body is dropped): [`StreamBody`] wraps every response and tells the connection
//! when, so the connection's idle timer starts then, not at the response head — a long
//! download or a gRPC server stream is not idle.
//!
//! A stream with no bytes moving in either direction for its idle timeout (the listener's
//! `stream_idle_timeout`, or its route's `idle_timeout`) is ended, counted and logged with
//! flag `SI`, in whichever phase it stalls:
//! - waiting for the response head: [`head_or_idle`] answers 408, as Envoy does;
//! - the upstream's body stalls while the client reads: [`StreamBody`]'s own timer fails
//!   the body, so the codec resets the stream (HTTP/2) or closes the connection (HTTP/1.1);
//! - the client stops reading: the codec then stops polling the body, so no timer inside it
//!   can fire. The connection's loop (`protocol`) sees that no bytes have been read or
//!   written on the connection (`protocol::io_activity`) for the timeout while a body is
//!   outstanding, and closes the connection; that drops the bodies and, with them, the
//!   upstream connection and the circuit-breaker slot they held.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use super::body::ResponseBody;
use super::conn::ConnContext;
use super::flags::ResponseFlags;
use super::local_reply;

/// Waits for `head` (the upstream exchange) unless the connection moves no bytes for
/// `idle`; then None. `idle` is None when the request timeout would end the wait first.
pub(crate) async fn head_or_idle<F: Future>(
    head: F,
    conn: &ConnContext,
    idle: Option<Duration>,
) -> Option<F::Output> {
    tokio::pin!(head);
    let Some(idle) = idle else {
        return Some(head.await);
    };
    loop {
        let quiet = conn.io_activity.elapsed().unwrap_or_default();
        if quiet >= idle {
            return None;
        }
        tokio::select! {
            out = head.as_mut() => return Some(out),
            _ = tokio::time::sleep(idle - quiet) => {}
        }
    }
}

/// The answer to a request whose stream idled before its response head: 408, as Envoy
/// answers, flagged `SI` and counted.
pub(crate) fn idle_before_head(conn: &ConnContext, grpc: bool) -> Response<ResponseBody> {
    count_idle_timeout(conn);
    local_reply::error(
        StatusCode::REQUEST_TIMEOUT,
        ResponseFlags::STREAM_IDLE_TIMEOUT,
        "stream timeout",
        grpc,
    )
}

fn count_idle_timeout(conn: &ConnContext) {
    if let Some(m) = &conn.slot.config().metrics {
        m.stream_idle_timeouts.inc();
    }
}

/// One request in flight on its connection, from its head until it is dropped: with the
/// response body when there is one, or with the request's future when the codec drops that
/// (the client went away before an answer).
pub(crate) struct InFlight(Arc<ConnContext>);

impl InFlight {
    pub(crate) fn start(conn: Arc<ConnContext>) -> Self {
        conn.request_started();
        Self(conn)
    }
}

impl std::ops::Deref for InFlight {
    type Target = ConnContext;
    fn deref(&self) -> &ConnContext {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// Every response Sinew sends downstream: the body, and the stream's end.
pub struct StreamBody {
    inner: ResponseBody,
    /// The request, in flight until this body drops.
    conn: InFlight,
    /// Zero when the stream has no idle timeout.
    idle: Duration,
    /// Armed the first time the body waits (most responses never do).
    timer: Option<Pin<Box<Sleep>>>,
    /// A frame went out since the timer was last set.
    moved: bool,
    timed_out: bool,
}

impl StreamBody {
    /// `idle` is the stream's idle timeout (zero: none); the connection counts the body as
    /// outstanding until it drops.
    pub(crate) fn new(inner: ResponseBody, conn: InFlight, idle: Duration) -> Self {
        conn.body_started(idle);
        Self {
            inner,
            conn,
            idle,
            timer: None,
            moved: false,
            timed_out: false,
        }
    }

    /// Whether the idle timer has run out; arms or re-arms it as the body waits.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = tokio::time::Instant::now() + self.idle;
        let timer = match &mut self.timer {
            Some(timer) => {
                if std::mem::take(&mut self.moved) {
                    timer.as_mut().reset(deadline);
                }
                timer
            }
            None => self
                .timer
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        timer.as_mut().poll(cx).is_ready()
    }

    /// Ends the stream for idling: counted, and logged with `SI`.
    fn end_idle(&mut self) {
        if std::mem::replace(&mut self.timed_out, true) {
            return;
        }
        count_idle_timeout(&self.conn);
        if let ResponseBody::Watched(watched) = &mut self.inner {
            watched.end_with(ResponseFlags::STREAM_IDLE_TIMEOUT);
        }
    }
}

/// The error a stream idle timeout resets the stream with.
#[derive(Debug)]
struct StreamIdleTimeout;

impl std::fmt::Display for StreamIdleTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stream idle timeout")
    }
}

impl std::error::Error for StreamIdleTimeout {}

impl Body for StreamBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.moved = true;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending if this.idle.is_zero() || !this.idle_expired(cx) => Poll::Pending,
            Poll::Pending => {
                tracing::debug!(peer = %this.conn.peer, "stream idle timeout: resetting the stream");
                this.end_idle();
                Poll::Ready(Some(Err(Box::new(StreamIdleTimeout))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for StreamBody {
    fn drop(&mut self) {
        // The connection's loop closed the connection because nothing moved: this stream
        // was one of those it ended.
        if self.conn.stream_idle_fired.load(Ordering::Relaxed) && !self.inner.is_end_stream() {
            self.end_idle();
        }
        self.conn.body_finished();
    }
}
