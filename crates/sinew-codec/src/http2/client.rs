//! The client-side connection: an upstream HTTP/2 connection whose requests are sent from
//! the requests' own tasks.
//!
//! `h2` does the protocol; the connection's future ([`Connection`]) reads and writes the
//! socket and must be polled by one task of its own for as long as the connection lives
//! (something has to read frames while no request is looking). Everything else happens
//! in the task of the request that needs it: [`Client::send_request`] opens the stream,
//! sends the head and the body, and waits for the response on `h2`'s stream directly —
//! no channel to the connection's task, no oneshot back.
//!
//! A request body that is already there (an empty one, or buffered bytes) is sent from
//! the request's task as the stream's window allows, while the response is awaited. A
//! body that streams in (a downstream that is still sending) is pumped from the
//! request's task too until the response head arrives. If the body is still open then,
//! the rest of it goes on in a small task of its own: from then on the request's task
//! belongs to the response body, whose reader may stop reading (the downstream's window
//! is full) while the upstream waits for more request messages before it answers more —
//! a bidirectional gRPC stream would deadlock if one task did both. That task ends with
//! the request body, or when the response body is dropped (the exchange is abandoned).
//!
//! The peer's SETTINGS_MAX_CONCURRENT_STREAMS is `h2`'s to keep: a stream beyond it
//! waits in `h2` until one ends, and [`Client::max_send_streams`] says what the peer
//! allows now, for a pool that prefers opening another connection to waiting.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::noop_waker_ref;
use h2::client::SendRequest;
use h2::{Reason, SendStream};
use http::header::{self, HeaderMap, HeaderName};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::AbortHandle;

use super::server::content_length;
use super::{Error, RecvBody};

/// A request body's own error, kept whole so the caller can tell why it failed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How a client connection is set up: what it announces in its SETTINGS frame, and how
/// much it buffers.
#[derive(Debug, Clone, Copy)]
pub struct ClientSettings {
    /// SETTINGS_INITIAL_WINDOW_SIZE: how much of each response body the upstream may
    /// send before it is read.
    pub initial_stream_window: u32,
    /// The connection's receive window, all streams together.
    pub initial_connection_window: u32,
    /// SETTINGS_MAX_FRAME_SIZE.
    pub max_frame_size: u32,
    /// SETTINGS_MAX_HEADER_LIST_SIZE: the most a response's header block may decode to.
    pub max_header_list_size: u32,
    /// Request bytes a stream may have queued and not yet written.
    pub max_send_buffer_size: usize,
    /// Streams `h2` lets open before the peer's SETTINGS say how many it takes.
    pub initial_max_send_streams: usize,
}

impl Default for ClientSettings {
    /// hyper 1's client limits where they carry over (Sinew's upstream HTTP/2 before this
    /// driver): a 5 MiB connection window, 16 KiB frames, 1 MiB queued per stream, a
    /// 16 KiB header list, 100 streams before the peer says. hyper ran with
    /// `adaptive_window(true)`, which starts each stream at the protocol's 64 KiB and
    /// grows the windows as it measures the bandwidth-delay product with PINGs; `h2` has
    /// no such estimator, so the stream window is fixed instead, at 512 KiB: a 1 MiB body
    /// crosses in two windows (sixteen at 64 KiB), which keeps a 1 Gbit/s stream busy up
    /// to a 4 ms round trip. Measured on loopback (200 sequential 1 MiB responses from an
    /// `h2` server), 256–512 KiB matched hyper's adaptive client (about 90–105 ms
    /// against 95–100 ms) while 1 and 2 MiB were slower (120–145 ms): a bigger window
    /// only buffers more where the round trip is short.
    fn default() -> Self {
        ClientSettings {
            initial_stream_window: 512 * 1024,
            initial_connection_window: 5 * 1024 * 1024,
            max_frame_size: 16 * 1024,
            max_header_list_size: 16 * 1024,
            max_send_buffer_size: 1024 * 1024,
            initial_max_send_streams: 100,
        }
    }
}

impl ClientSettings {
    fn builder(&self) -> h2::client::Builder {
        let mut builder = h2::client::Builder::new();
        builder
            .initial_window_size(self.initial_stream_window)
            .initial_connection_window_size(self.initial_connection_window)
            .max_frame_size(self.max_frame_size)
            .max_header_list_size(self.max_header_list_size)
            .max_send_buffer_size(self.max_send_buffer_size)
            .initial_max_send_streams(self.initial_max_send_streams)
            .enable_push(false);
        builder
    }
}

/// Why a request got no response.
#[derive(Debug)]
pub enum ClientError {
    /// The request body failed; its own error is kept (a size limit, the downstream gone).
    /// The stream has been reset.
    RequestBody(BoxError),
    /// The stream or its connection failed: see [`ClientError::is_retryable`] and
    /// [`ClientError::is_malformed_response`].
    Stream(Error),
}

impl ClientError {
    /// The upstream did not process the request, by its own word: it refused the stream
    /// (`REFUSED_STREAM`, RFC 9113 §8.7), or sent a graceful GOAWAY whose last stream is
    /// before this one (§6.8: streams after it were not processed, and `h2` fails only
    /// those with the GOAWAY's code). Sending the request again elsewhere is safe.
    pub fn is_retryable(&self) -> bool {
        let ClientError::Stream(Error(e)) = self else {
            return false;
        };
        if !e.is_remote() {
            return false;
        }
        match e.reason() {
            Some(Reason::REFUSED_STREAM) => true,
            Some(Reason::NO_ERROR) => e.is_go_away(),
            _ => false,
        }
    }

    /// The upstream broke the protocol: a malformed response head (a connection-specific
    /// field, a bad pseudo-header, an undecodable header block) or a frame `h2` refused.
    /// `h2` reset the stream (or closed the connection) itself; a proxy answers 502.
    pub fn is_malformed_response(&self) -> bool {
        let ClientError::Stream(Error(e)) = self else {
            return false;
        };
        e.is_library()
            && matches!(
                e.reason(),
                Some(
                    Reason::PROTOCOL_ERROR
                        | Reason::COMPRESSION_ERROR
                        | Reason::FRAME_SIZE_ERROR
                        | Reason::FLOW_CONTROL_ERROR
                )
            )
    }

    /// The stream's or connection's error, unless the request body failed.
    pub fn stream_error(&self) -> Option<&Error> {
        match self {
            ClientError::Stream(e) => Some(e),
            ClientError::RequestBody(_) => None,
        }
    }
}

impl From<h2::Error> for ClientError {
    fn from(e: h2::Error) -> Self {
        ClientError::Stream(Error(e))
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::RequestBody(e) => write!(f, "request body: {e}"),
            ClientError::Stream(e) => write!(f, "upstream HTTP/2: {e}"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::RequestBody(e) => Some(&**e),
            ClientError::Stream(e) => Some(e),
        }
    }
}

/// Opens an HTTP/2 connection over `io` (TLS already done, ALPN agreed): sends the
/// preface and SETTINGS. The returned [`Connection`] must be spawned (or otherwise
/// polled) before any request can make progress.
pub async fn handshake<IO>(
    io: IO,
    settings: ClientSettings,
) -> Result<(Client, Connection<IO>), Error>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let (send, mut conn) = settings.builder().handshake::<IO, Bytes>(io).await?;
    let closed = Arc::new(AtomicBool::new(false));
    let ping = conn.ping_pong();
    Ok((
        Client {
            send,
            closed: closed.clone(),
        },
        Connection { conn, closed, ping },
    ))
}

/// An upstream HTTP/2 connection's I/O: reads frames, writes what streams queued, answers
/// PINGs and SETTINGS. Resolves when the connection ends.
pub struct Connection<IO> {
    conn: h2::client::Connection<IO, Bytes>,
    /// Set when this future ends or is dropped, so [`Client::is_closed`] need not ask `h2`.
    closed: Arc<AtomicBool>,
    ping: Option<h2::PingPong>,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Connection<IO> {
    /// A future that resolves once the peer's SETTINGS have been applied (so that
    /// [`Client::max_send_streams`] is the peer's word, not the initial guess). It sends
    /// a PING: the peer's SETTINGS must be its first frame (RFC 9113 §3.4) and `h2`
    /// applies frames in order, so by the PING's answer they are in force. One round
    /// trip; None if it was taken already. The connection must be polled meanwhile.
    pub fn settings_received(&mut self) -> Option<impl Future<Output = Result<(), Error>>> {
        let mut ping = self.ping.take()?;
        Some(async move {
            ping.send_ping(h2::Ping::opaque())?;
            poll_fn(|cx| ping.poll_pong(cx)).await?;
            Ok(())
        })
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Future for Connection<IO> {
    type Output = Result<(), Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let ended = std::task::ready!(Pin::new(&mut this.conn).poll(cx));
        this.closed.store(true, Ordering::Release);
        Poll::Ready(ended.map_err(Error))
    }
}

impl<IO> Drop for Connection<IO> {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Release);
    }
}

/// A handle that sends requests on one connection; clones share it.
#[derive(Clone)]
pub struct Client {
    send: SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
}

impl Client {
    /// The connection has ended, failed, or had a GOAWAY: no new stream can go on it.
    pub fn is_closed(&self) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return true;
        }
        // A fresh handle has no stream of its own waiting to open, so this is `h2`'s word
        // on the connection alone: an error once it failed or the peer sent GOAWAY.
        let mut probe = self.send.clone();
        let mut cx = Context::from_waker(noop_waker_ref());
        matches!(probe.poll_ready(&mut cx), Poll::Ready(Err(_)))
    }

    /// How many streams the peer allows open at once now (its
    /// SETTINGS_MAX_CONCURRENT_STREAMS; before its SETTINGS came, the initial guess).
    pub fn max_send_streams(&self) -> usize {
        self.send.current_max_send_streams()
    }

    /// Sends `request` and waits for its response head, from the caller's task. The
    /// request's URI must carry its scheme and authority (they become `:scheme` and
    /// `:authority`) unless its version is HTTP/1.x, in which case `h2` sends `http`.
    /// Connection-specific fields are removed from the head (RFC 9113 §8.2.2), and a body
    /// of known length gets a `Content-Length`.
    ///
    /// Dropping the future before the response resets the stream (`CANCEL`).
    pub async fn send_request<B>(
        &self,
        request: Request<B>,
    ) -> Result<Response<ResponseBody>, ClientError>
    where
        B: Body<Data = Bytes> + Unpin + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let mut send = self.send.clone().ready().await?;
        let (mut head, body) = request.into_parts();
        prepare_request_head(&mut head.headers);
        let end_of_stream = super::note_body_length(&mut head.headers, &body);
        let (mut response, stream) =
            send.send_request(Request::from_parts(head, ()), end_of_stream)?;
        let mut pump = (!end_of_stream).then(|| Pump {
            stream,
            body,
            pending: None,
        });
        // The body goes out while the response is awaited: an upstream may answer only
        // after the whole request, or before it (an early error).
        let answered = poll_fn(|cx| {
            if let Some(sending) = &mut pump {
                match sending.poll_send(cx) {
                    Poll::Pending => {}
                    Poll::Ready(Ok(())) => pump = None,
                    Poll::Ready(Err(Pumped::Body(e))) => {
                        return Poll::Ready(Err(ClientError::RequestBody(e)))
                    }
                    // The stream is gone: its response says why.
                    Poll::Ready(Err(Pumped::StreamGone)) => pump = None,
                }
            }
            Pin::new(&mut response).poll(cx).map_err(ClientError::from)
        })
        .await?;
        let pump_task = pump.map(|mut rest| {
            AbortOnDrop(
                tokio::spawn(async move { poll_fn(|cx| rest.poll_send(cx)).await }).abort_handle(),
            )
        });
        let (parts, recv) = answered.into_parts();
        // A length that is not one number: `h2` holds the DATA to the first, but the body
        // does not promise one.
        let length = content_length(&parts.headers).ok().flatten();
        Ok(Response::from_parts(
            parts,
            ResponseBody {
                body: RecvBody::new(recv, length),
                _request_rest: pump_task,
            },
        ))
    }
}

/// Fields that only mean something to one HTTP/1 connection: removed, with those
/// `Connection` names, before `h2` (which refuses them) sees the head. `TE` may say only
/// `trailers` (RFC 9113 §8.2.2), which gRPC needs; any other `TE` is dropped.
fn prepare_request_head(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        for name in super::connection_named_fields(headers) {
            if name != header::TE {
                headers.remove(name);
            }
        }
        headers.remove(header::CONNECTION);
    }
    for name in [
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(name);
    }
    let only_trailers = headers
        .get_all(header::TE)
        .iter()
        .all(|value| value.as_bytes().eq_ignore_ascii_case(b"trailers"));
    if !only_trailers {
        headers.remove(header::TE);
    }
}

/// A request body on its way out: its frames, each DATA frame in pieces as the upstream's
/// window allows.
struct Pump<B> {
    stream: SendStream<Bytes>,
    body: B,
    /// Bytes taken from the body and not yet sent; true when they are its last.
    pending: Option<(Bytes, bool)>,
}

/// How pumping a request body stopped early.
enum Pumped {
    /// The body failed; the stream has been reset.
    Body(BoxError),
    /// The upstream reset the stream, or the connection ended.
    StreamGone,
}

impl<B> Pump<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// Sends what the body has and the window allows; Ready when the body has all gone
    /// (or cannot go).
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Pumped>> {
        loop {
            if let Some((data, last)) = &mut self.pending {
                if data.is_empty() {
                    let last = *last;
                    self.pending = None;
                    if last {
                        self.stream
                            .send_data(Bytes::new(), true)
                            .map_err(|_| Pumped::StreamGone)?;
                        return Poll::Ready(Ok(()));
                    }
                    continue;
                }
                self.stream.reserve_capacity(data.len());
                let granted = self.stream.capacity();
                if granted == 0 {
                    match self.stream.poll_capacity(cx) {
                        Poll::Ready(Some(Ok(_))) => continue,
                        Poll::Ready(Some(Err(_)) | None) => {
                            return Poll::Ready(Err(Pumped::StreamGone))
                        }
                        // Waiting for the upstream's window: its reset ends the wait.
                        Poll::Pending => return self.poll_reset(cx),
                    }
                }
                let piece = data.split_to(granted.min(data.len()));
                let ends = *last && data.is_empty();
                self.stream
                    .send_data(piece, ends)
                    .map_err(|_| Pumped::StreamGone)?;
                if ends {
                    self.pending = None;
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            let frame = match Pin::new(&mut self.body).poll_frame(cx) {
                // Waiting for the downstream: the upstream's reset ends the wait.
                Poll::Pending => return self.poll_reset(cx),
                Poll::Ready(frame) => frame,
            };
            match frame {
                None => {
                    self.stream
                        .send_data(Bytes::new(), true)
                        .map_err(|_| Pumped::StreamGone)?;
                    return Poll::Ready(Ok(()));
                }
                Some(Err(e)) => {
                    self.stream.send_reset(Reason::CANCEL);
                    return Poll::Ready(Err(Pumped::Body(e.into())));
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.pending = Some((data, self.body.is_end_stream())),
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            // No more DATA: capacity still reserved goes back to others.
                            self.stream.reserve_capacity(0);
                            self.stream
                                .send_trailers(trailers)
                                .map_err(|_| Pumped::StreamGone)?;
                            return Poll::Ready(Ok(()));
                        }
                    }
                },
            }
        }
    }

    fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Pumped>> {
        match self.stream.poll_reset(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => Poll::Ready(Err(Pumped::StreamGone)),
        }
    }
}

/// Aborts the task sending the rest of a request body when the response body goes: the
/// exchange is over, and the stream is reset once nothing holds it.
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A response body, read from its stream as it is polled: the upstream's window opens
/// again as bytes are handed on ([`RecvBody`]), then trailers. Dropping it before its end
/// resets the stream (`CANCEL`).
pub struct ResponseBody {
    body: RecvBody,
    /// The task sending the rest of the request body, if it outlived the response head.
    _request_rest: Option<AbortOnDrop>,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("end_stream", &self.body.is_end_stream())
            .field("request_streaming", &self._request_rest.is_some())
            .finish()
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
