//! The server-side connection driver: accepts a downstream connection's streams and runs
//! each one — the service's answer, then the response head, body and trailers — inside
//! the connection's own future.
//!
//! The streams' futures live in a `FuturesUnordered` polled next to `h2`'s connection,
//! so no stream is spawned as a task: a stream costs one allocation, a frame crosses no
//! task, and a stream's wake (its upstream answered, the client's window opened) polls
//! that stream alone, then the connection once to write what it queued.
//!
//! A graceful shutdown sends GOAWAY and lets the streams in progress finish; the
//! connection ends when they have. A stream the client resets, or every stream of a
//! connection that fails, is dropped wherever it is, its service's future or response
//! body with it.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::Poll;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use h2::server::SendResponse;
use h2::{Reason, SendStream};
use http::header::{self, HeaderMap, HeaderName};
use http::{Request, Response};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Error, RecvBody};

/// How a connection is served: what the server announces in its SETTINGS frame, and how
/// much it buffers.
#[derive(Debug, Clone, Copy)]
pub struct ServerSettings {
    /// SETTINGS_MAX_HEADER_LIST_SIZE: the most a request's header block may decode to
    /// (names, values and 32 bytes per field, RFC 9113 §6.5.2). A larger one is refused
    /// with a 431 by `h2`. Sinew's listeners set it from `max_request_headers_kb`.
    pub max_header_list_size: u32,
    /// SETTINGS_INITIAL_WINDOW_SIZE: how much of each request body the client may send
    /// before the service reads it.
    pub initial_stream_window: u32,
    /// The connection's receive window, all streams together.
    pub initial_connection_window: u32,
    /// SETTINGS_MAX_FRAME_SIZE.
    pub max_frame_size: u32,
    /// SETTINGS_MAX_CONCURRENT_STREAMS: streams beyond are refused (`REFUSED_STREAM`).
    pub max_concurrent_streams: u32,
    /// Response bytes a stream may have queued and not yet written.
    pub max_send_buffer_size: usize,
}

impl Default for ServerSettings {
    /// hyper 1's server defaults (Sinew's HTTP/2 before this driver), so clients see the
    /// same windows and limits: 1 MiB windows rather than the protocol's 64 KiB (a proxy's
    /// client is rarely short of memory, and a small window caps a stream's throughput at
    /// one window per round trip), 200 concurrent streams, 16 KiB frames, 400 KiB queued
    /// per stream, and a 16 KiB header list.
    fn default() -> Self {
        ServerSettings {
            max_header_list_size: 16 * 1024,
            initial_stream_window: 1024 * 1024,
            initial_connection_window: 1024 * 1024,
            max_frame_size: 16 * 1024,
            max_concurrent_streams: 200,
            max_send_buffer_size: 400 * 1024,
        }
    }
}

impl ServerSettings {
    fn builder(&self) -> h2::server::Builder {
        let mut builder = h2::server::Builder::new();
        builder
            .max_header_list_size(self.max_header_list_size)
            .initial_window_size(self.initial_stream_window)
            .initial_connection_window_size(self.initial_connection_window)
            .max_frame_size(self.max_frame_size)
            .max_concurrent_streams(self.max_concurrent_streams)
            .max_send_buffer_size(self.max_send_buffer_size);
        builder
    }
}

/// Serves one connection until it closes: `io` is the connection (its preface not yet
/// read), `service` answers each request, `shutdown` resolves when the connection should
/// shut down gracefully (the server drains, or the connection has been idle too long).
///
/// On `shutdown` the server sends GOAWAY; streams already begun are served to their end,
/// and the connection closes when they are. Before the client's preface has come there
/// is nothing to finish: the connection closes at once.
///
/// Every stream's future runs on the caller's task, polled by this future. When the
/// client resets a stream, the service's future (while it has not answered) or the
/// response body (while it is sent) is dropped; when the connection ends, all of them
/// are. A response body's error resets its stream with `INTERNAL_ERROR`.
///
/// Returns the connection's error, if it ended with one (a protocol error, after which
/// `h2` has sent GOAWAY; the socket failing). The future is `Send` when `io`, the service
/// and its futures and bodies are.
pub async fn serve<IO, S, F, B>(
    io: IO,
    mut service: S,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    S: FnMut(Request<RecvBody>) -> F,
    F: Future<Output = Response<B>>,
    B: Body<Data = Bytes>,
{
    let mut shutdown = pin!(shutdown);
    let handshaken = {
        let mut handshake = pin!(settings.builder().handshake::<IO, Bytes>(io));
        poll_fn(|cx| match handshake.as_mut().poll(cx) {
            Poll::Ready(result) => Poll::Ready(Some(result)),
            Poll::Pending => shutdown.as_mut().poll(cx).map(|()| None),
        })
        .await
    };
    let mut conn = match handshaken {
        Some(handshaken) => handshaken?,
        None => return Ok(()),
    };
    let mut streams = FuturesUnordered::new();
    let mut shutting_down = false;
    poll_fn(|cx| {
        if !shutting_down && shutdown.as_mut().poll(cx).is_ready() {
            shutting_down = true;
            conn.graceful_shutdown();
        }
        // The connection first (frames in, new streams), then the streams that were woken
        // or are new, then the connection again to write what they queued, until no new
        // stream comes.
        let mut streams_polled = false;
        loop {
            let mut accepted = false;
            loop {
                match conn.poll_accept(cx) {
                    Poll::Ready(Some(Ok((request, respond)))) => {
                        accepted = true;
                        if let Some(stream) = start_stream(request, respond, &mut service) {
                            streams.push(stream);
                        }
                    }
                    // The connection has ended (after a GOAWAY either way, or the client
                    // closed it): what is left of its streams cannot be sent, and is
                    // dropped with `streams`.
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(Error(e))),
                    Poll::Ready(None) => return Poll::Ready(Ok(())),
                    Poll::Pending => break,
                }
            }
            if streams_polled && !accepted {
                return Poll::Pending;
            }
            while let Poll::Ready(Some(())) = streams.poll_next_unpin(cx) {}
            streams_polled = true;
        }
    })
    .await
}

/// The future of one stream, or None when its request is malformed in a way `h2` does not
/// check (and the stream has been reset).
fn start_stream<S, F, B>(
    request: Request<h2::RecvStream>,
    mut respond: SendResponse<Bytes>,
    service: &mut S,
) -> Option<impl Future<Output = ()>>
where
    S: FnMut(Request<RecvBody>) -> F,
    F: Future<Output = Response<B>>,
    B: Body<Data = Bytes>,
{
    // `h2` holds the DATA frames to the first `Content-Length` only: more than one that
    // disagree, or one that is not a number, make the request malformed (RFC 9113 §8.1.1,
    // RFC 9110 §8.6), and a proxy must not pass on a length its upstream might read
    // differently.
    let Ok(content_length) = content_length(request.headers()) else {
        respond.send_reset(Reason::PROTOCOL_ERROR);
        return None;
    };
    let request = request.map(|recv| RecvBody::new(recv, content_length));
    Some(answer_stream(service(request), respond))
}

/// A request's `Content-Length`: Err unless every one is the same decimal number.
pub(super) fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ()> {
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let digits = value.as_bytes();
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(());
        }
        let n = std::str::from_utf8(digits)
            .ok()
            .and_then(|text| text.parse::<u64>().ok())
            .ok_or(())?;
        if length.is_some_and(|known| known != n) {
            return Err(());
        }
        length = Some(n);
    }
    Ok(length)
}

/// Waits for the service's answer and sends it: head, body, trailers.
async fn answer_stream<F, B>(answer: F, mut respond: SendResponse<Bytes>)
where
    F: Future<Output = Response<B>>,
    B: Body<Data = Bytes>,
{
    // In a block: the answer's future is gone before the body is sent, and the body's
    // state can take its place.
    let answered = {
        let mut answer = pin!(answer);
        poll_fn(|cx| match answer.as_mut().poll(cx) {
            Poll::Ready(response) => Poll::Ready(Some(response)),
            // Until it answers, the client may reset the stream (or the connection fail):
            // then the answer is dropped, and with it whatever it waits on upstream.
            Poll::Pending => respond.poll_reset(cx).map(|_| None),
        })
        .await
    };
    let Some(response) = answered else {
        return;
    };
    let (mut head, body) = response.into_parts();
    prepare_head(&mut head.headers);
    let end_of_stream = super::note_body_length(&mut head.headers, &body);
    let mut send = match respond.send_response(Response::from_parts(head, ()), end_of_stream) {
        Ok(send) => send,
        // `h2` refused the head (a field it does not allow), or the stream is gone.
        Err(_) => {
            respond.send_reset(Reason::INTERNAL_ERROR);
            return;
        }
    };
    if end_of_stream {
        return;
    }
    if let Sent::Failed = send_body(&mut send, body).await {
        send.send_reset(Reason::INTERNAL_ERROR);
    }
}

/// Connection-specific fields have no meaning in HTTP/2 and make a response malformed
/// (RFC 9113 §8.2.2): removed, with the fields `Connection` names. `TE` belongs to
/// requests alone (RFC 9110 §10.1.4). A response without `Date` gets one (RFC 9110
/// §6.6.1), as over HTTP/1.
fn prepare_head(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        for name in super::connection_named_fields(headers) {
            headers.remove(name);
        }
        headers.remove(header::CONNECTION);
    }
    for name in [
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::TE,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(name);
    }
    headers.entry(header::DATE).or_insert_with(crate::date::now);
}

/// How sending a body ended.
enum Sent {
    /// To its end (last DATA frame or trailers).
    Whole,
    /// The client reset the stream, or the connection failed: nothing more can go.
    Gone,
    /// The body failed, or `h2` refused what it gave (trailers it does not allow): the
    /// stream is to be reset.
    Failed,
}

/// Sends a response body, each DATA frame as the client's window allows.
async fn send_body<B: Body<Data = Bytes>>(send: &mut SendStream<Bytes>, body: B) -> Sent {
    let mut body = pin!(body);
    loop {
        let frame = poll_fn(|cx| match body.as_mut().poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(Some(frame)),
            // While the body has nothing (a slow upstream), a reset from the client ends
            // the stream, and the body is dropped.
            Poll::Pending => send.poll_reset(cx).map(|_| None),
        })
        .await;
        let frame = match frame {
            None => return Sent::Gone,
            // The body ended without saying so on its last frame: an empty one ends the
            // stream.
            Some(None) => {
                return match send.send_data(Bytes::new(), true) {
                    Ok(()) => Sent::Whole,
                    Err(_) => Sent::Gone,
                }
            }
            Some(Some(Err(_))) => return Sent::Failed,
            Some(Some(Ok(frame))) => frame,
        };
        match frame.into_data() {
            Ok(data) => {
                let last = body.is_end_stream();
                match send_data(send, data, last).await {
                    Sent::Whole if last => return Sent::Whole,
                    Sent::Whole => {}
                    ended => return ended,
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    // No more DATA: capacity still reserved goes back to other streams.
                    send.reserve_capacity(0);
                    return match send.send_trailers(trailers) {
                        Ok(()) => Sent::Whole,
                        Err(_) => Sent::Failed,
                    };
                }
            }
        }
    }
}

/// Sends one DATA frame of the body, in pieces as the stream is granted capacity: `h2` is
/// never handed more than the client's window allows, so nothing piles up unsent.
async fn send_data(send: &mut SendStream<Bytes>, mut data: Bytes, last: bool) -> Sent {
    if data.is_empty() {
        if last && send.send_data(data, true).is_err() {
            return Sent::Gone;
        }
        return Sent::Whole;
    }
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let granted = poll_fn(|cx| loop {
            let capacity = send.capacity();
            if capacity > 0 {
                return Poll::Ready(Some(capacity));
            }
            match send.poll_capacity(cx) {
                Poll::Ready(Some(Ok(_))) => continue,
                Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(None),
                // Waiting for the client's window: its reset ends the wait.
                Poll::Pending => return send.poll_reset(cx).map(|_| None),
            }
        })
        .await;
        let Some(granted) = granted else {
            return Sent::Gone;
        };
        let piece = data.split_to(granted.min(data.len()));
        if send.send_data(piece, last && data.is_empty()).is_err() {
            return Sent::Gone;
        }
    }
    Sent::Whole
}
