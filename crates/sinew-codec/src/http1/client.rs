//! The client-side exchange driver: one request out on an upstream connection, its
//! response head back, and a response body that streams from the connection and, when
//! it ends cleanly on a connection that can carry another request, gives the connection
//! back to whoever pools it.
//!
//! The request's own task drives everything: no task and no channel per connection or
//! per request. [`send_request`] writes the request head and body while it watches for
//! the response head (a server may answer before the body is all sent: then the rest is
//! not sent and the connection is not reused). The [`ResponseBody`] owns the connection
//! while it is read and calls the [`CheckIn`] it was given once the body ends, so a pool
//! takes the connection back from the task that read the body.
//!
//! Errors say whether the request may be sent again: [`ClientError::NoResponse`] (the
//! connection failed or closed before any byte of a response: a pooled connection the
//! server had closed, a reset) is the one a retry policy may retry; a malformed or cut
//! head is the upstream's protocol error (502); a body cut short is a
//! [`BodyError`] after the head was passed on.

use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::task::{ready, Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap};
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame as BodyFrame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::server::{ReadSide, READ_SIZE};
use super::{
    encode_request_head, write_chunk, write_last_chunk, BodyError, BodyFraming, ChunkedDecoder,
    ChunkedLimits, Frame, HeadError, HeadLimits, OutgoingBody, ResponseParser, Upgraded,
};
use crate::buf::{with_worker_pool, BufPool};

/// How upstream responses are read.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientSettings {
    pub limits: HeadLimits,
    pub chunked: ChunkedLimits,
}

/// An open HTTP/1 connection to an upstream, between exchanges. It holds no read buffer
/// while idle (the buffer is the worker's, see [`crate::buf`]).
pub struct ClientConn<R, W> {
    read: ReadSide<R>,
    write: W,
}

impl<R, W> ClientConn<R, W> {
    /// A connection just opened (or taken out of TLS): its read and write halves.
    pub fn new(read: R, write: W) -> Self {
        ClientConn {
            read: ReadSide::new(read),
            write,
        }
    }

    /// The halves back, with any bytes read but not consumed.
    pub fn into_parts(mut self) -> (R, W, Option<BytesMut>) {
        let buffered = self.read.buf.take_buffered().filter(|b| !b.is_empty());
        (self.read.io, self.write, buffered)
    }

    /// The read half, for a pool that checks whether an idle connection was closed.
    pub fn read_half_mut(&mut self) -> &mut R {
        &mut self.read.io
    }
}

impl<R: AsyncRead + Unpin, W> ClientConn<R, W> {
    /// Whether an idle connection can still carry a request, without waiting: `false` if
    /// the upstream has closed it or reset it, or sent bytes nobody asked for. A pool
    /// asks this when it takes a connection out (no task watches idle connections).
    pub fn is_usable_now(&mut self) -> bool {
        if !self.read.buf.buffered().is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        let mut read = ReadBuf::new(&mut probe);
        let mut cx = Context::from_waker(Waker::noop());
        // Pending is the one good answer: open, and quiet.
        Pin::new(&mut self.read.io)
            .poll_read(&mut cx, &mut read)
            .is_pending()
    }
}

impl<R, W> fmt::Debug for ClientConn<R, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConn")
            .field("buffered", &self.read.buf.buffered().len())
            .finish_non_exhaustive()
    }
}

/// Takes a connection back after an exchange that left it ready for another. A pool
/// implements it (on a handle it already has: no allocation per request); any
/// `FnOnce(ClientConn<R, W>)` is one, `drop` included for no reuse.
pub trait CheckIn<R, W> {
    fn check_in(self, conn: ClientConn<R, W>);
}

impl<R, W, F: FnOnce(ClientConn<R, W>)> CheckIn<R, W> for F {
    fn check_in(self, conn: ClientConn<R, W>) {
        self(conn)
    }
}

/// A request body's own error, as the body gave it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why an exchange failed before a response head was returned.
#[derive(Debug)]
pub enum ClientError {
    /// The connection failed, or the upstream closed it, before any byte of a response
    /// (a reset, a pooled connection the upstream had closed). The request may have been
    /// seen by the upstream; a retry policy decides ([`ClientError::is_retryable`]).
    NoResponse(io::Error),
    /// The response head is not valid HTTP/1: the upstream's protocol error (502).
    Malformed(HeadError),
    /// The connection closed or failed in the middle of the response head (502).
    HeadCut(io::Error),
    /// A 101 to a request that did not ask to switch (502).
    UnsolicitedSwitch,
    /// The request body failed (its own error, kept so the caller can tell why: e.g.
    /// the downstream went away, or a size limit) or was longer or shorter than the
    /// length it announced.
    RequestBody(BoxError),
}

impl ClientError {
    /// Nothing of a response came: sending the request again on another connection is
    /// safe as far as this connection can tell.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ClientError::NoResponse(_))
    }

    /// The status a proxy answers with: 502 for the upstream's faults, 503 for a
    /// connection that gave nothing (Envoy's UC), 400 for the request body's own.
    pub fn status(&self) -> StatusCode {
        match self {
            ClientError::NoResponse(_) => StatusCode::SERVICE_UNAVAILABLE,
            ClientError::Malformed(_)
            | ClientError::HeadCut(_)
            | ClientError::UnsolicitedSwitch => StatusCode::BAD_GATEWAY,
            ClientError::RequestBody(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::NoResponse(e) => write!(f, "upstream gave no response: {e}"),
            ClientError::Malformed(e) => write!(f, "malformed upstream response: {}", e.reason()),
            ClientError::HeadCut(e) => write!(f, "upstream response head cut short: {e}"),
            ClientError::UnsolicitedSwitch => f.write_str("upstream switched protocols unasked"),
            ClientError::RequestBody(e) => write!(f, "request body: {e}"),
        }
    }
}

impl std::error::Error for ClientError {}

enum Decoder {
    Length(u64),
    Chunked(ChunkedDecoder),
    /// Until the upstream closes.
    Close,
}

/// A response's body, read from the upstream connection as it is polled. Dropped before
/// its end, it closes the connection.
pub struct ResponseBody<R, W, K> {
    state: Option<Reading<R, W, K>>,
}

struct Reading<R, W, K> {
    conn: ClientConn<R, W>,
    decoder: Decoder,
    /// The exchange left the connection able to carry another once this body ends.
    reusable: bool,
    check_in: K,
    /// The response switched protocols: the connection is the caller's to take.
    upgraded: bool,
}

impl<R, W, K: CheckIn<R, W>> ResponseBody<R, W, K> {
    /// After a 101 (or a 2xx to CONNECT): the connection, with the bytes that came after
    /// the head. `None` for any other response.
    pub fn into_upgraded(mut self) -> Option<Upgraded<R, W>> {
        let reading = self.state.take().filter(|r| r.upgraded)?;
        let (read, write, buffered) = reading.conn.into_parts();
        Some(Upgraded {
            read,
            write,
            read_buf: buffered.map(BytesMut::freeze).unwrap_or_default(),
        })
    }
}

impl<R, W, K: CheckIn<R, W>> Reading<R, W, K> {
    /// The body has ended: the connection goes home if it can carry another exchange.
    fn finish(mut self) {
        // Bytes after the end of a response are not the next response's: the upstream
        // sent something unasked, and the connection cannot be trusted.
        if self.reusable && self.conn.read.buf.release_if_idle() {
            self.check_in.check_in(self.conn);
        }
    }
}

impl<R, W, K> fmt::Debug for ResponseBody<R, W, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody")
            .field("ended", &self.state.is_none())
            .finish_non_exhaustive()
    }
}

impl<R, W, K> Unpin for ResponseBody<R, W, K> {}

impl<R: AsyncRead + Unpin, W, K: CheckIn<R, W>> Body for ResponseBody<R, W, K> {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<BodyFrame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        loop {
            let Some(reading) = this.state.as_mut() else {
                return Poll::Ready(None);
            };
            if reading.upgraded {
                return Poll::Ready(None);
            }
            let read = &mut reading.conn.read;
            match &mut reading.decoder {
                Decoder::Length(0) => {
                    if let Some(reading) = this.state.take() {
                        reading.finish();
                    }
                    return Poll::Ready(None);
                }
                Decoder::Length(remaining) => {
                    if !read.buf.buffered().is_empty() {
                        let buf = read.buf.get();
                        let n = (*remaining).min(buf.len() as u64);
                        *remaining -= n;
                        if *remaining > 0 {
                            let data = buf.split_to(n as usize).freeze();
                            return Poll::Ready(Some(Ok(BodyFrame::data(data))));
                        }
                        // The last piece: a small one is copied out, so the buffer it
                        // came from is no longer shared when the connection goes home
                        // and can return to the pool whole; split off, it would be
                        // lost to the pool and each response would cost a new one.
                        let data = if n <= LAST_PIECE_COPIED as u64 {
                            let data = Bytes::copy_from_slice(&buf[..n as usize]);
                            buf.advance(n as usize);
                            data
                        } else {
                            buf.split_to(n as usize).freeze()
                        };
                        if let Some(reading) = this.state.take() {
                            reading.finish();
                        }
                        return Poll::Ready(Some(Ok(BodyFrame::data(data))));
                    }
                }
                Decoder::Chunked(decoder) => {
                    if read.buf.is_held() {
                        match decoder.decode(read.buf.get()) {
                            Ok(Some(Frame::Data(data))) => {
                                return Poll::Ready(Some(Ok(BodyFrame::data(data))))
                            }
                            Ok(Some(Frame::End(trailers))) => {
                                if let Some(reading) = this.state.take() {
                                    reading.finish();
                                }
                                return Poll::Ready(trailers.map(|t| Ok(BodyFrame::trailers(t))));
                            }
                            Ok(None) => {}
                            Err(e) => {
                                this.state = None;
                                return Poll::Ready(Some(Err(BodyError::Chunked(e))));
                            }
                        }
                    }
                }
                Decoder::Close => {
                    if !read.buf.buffered().is_empty() {
                        let data = read.buf.get().split().freeze();
                        return Poll::Ready(Some(Ok(BodyFrame::data(data))));
                    }
                }
            }
            let read = &mut reading.conn.read;
            match ready!(read.poll_fill(cx)) {
                Ok(0) => {
                    let close_delimited = matches!(reading.decoder, Decoder::Close);
                    // The close is the end of a close-delimited body (the connection is
                    // done either way).
                    this.state = None;
                    return Poll::Ready(if close_delimited {
                        None
                    } else {
                        Some(Err(BodyError::Truncated))
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    this.state = None;
                    return Poll::Ready(Some(Err(BodyError::Io(e))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            None => true,
            Some(reading) => reading.upgraded || matches!(reading.decoder, Decoder::Length(0)),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            None => SizeHint::with_exact(0),
            Some(reading) if reading.upgraded => SizeHint::with_exact(0),
            Some(Reading {
                decoder: Decoder::Length(n),
                ..
            }) => SizeHint::with_exact(*n),
            Some(_) => SizeHint::default(),
        }
    }
}

/// The largest last piece of a body that is copied rather than split off the buffer.
const LAST_PIECE_COPIED: usize = 4096;

/// Methods whose requests have no body by custom: an empty one is sent without framing.
fn bodyless_by_custom(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET
            | Method::HEAD
            | Method::DELETE
            | Method::OPTIONS
            | Method::TRACE
            | Method::CONNECT
    )
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// How the request body went.
enum Sent {
    /// All of it is on the wire.
    Whole,
    /// Writing failed: the upstream may still have answered (and closed).
    WriteFailed,
}

/// Sends `request` on `conn` and reads the response head: the response, whose body
/// streams from the connection and hands it to `check_in` when it ends cleanly on a
/// connection that can carry another exchange (at once, for a response without a body).
///
/// The request goes out as given (its `Host` and fields), in origin form (authority form
/// for CONNECT), framed by its body: no framing for an empty body of GET, HEAD, DELETE,
/// OPTIONS, TRACE or CONNECT, `Content-Length` when the body's size is exact, chunked
/// otherwise; framing fields in its map are replaced. Interim responses (100, 102, 103)
/// are read and skipped. A 101 to a request with `Upgrade`, or a 2xx to CONNECT, is
/// returned with a body that is empty and whose
/// [`into_upgraded`](ResponseBody::into_upgraded) hands the connection over.
/// Timeouts are the caller's (wrap the future, and the body's reads).
pub async fn send_request<R, W, B, K>(
    mut conn: ClientConn<R, W>,
    request: Request<B>,
    settings: ClientSettings,
    check_in: K,
) -> Result<Response<ResponseBody<R, W, K>>, ClientError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
    K: CheckIn<R, W>,
{
    let (parts, body) = request.into_parts();
    let method = parts.method;
    let asks_upgrade = has_token(&parts.headers, header::CONNECTION, "upgrade")
        && parts.headers.contains_key(header::UPGRADE);
    let asks_close = has_token(&parts.headers, header::CONNECTION, "close");
    let framing = match body.size_hint().exact() {
        Some(0) if bodyless_by_custom(&method) => OutgoingBody::Empty,
        Some(n) => OutgoingBody::Length(n),
        None if body.is_end_stream() && bodyless_by_custom(&method) => OutgoingBody::Empty,
        None => OutgoingBody::Chunked,
    };
    let mut out = with_worker_pool(BufPool::take);
    encode_request_head(&method, &parts.uri, &parts.headers, framing, &mut out);

    let mut parser = ResponseParser::new(settings.limits);
    let (head, sent) = {
        let ClientConn { read, write } = &mut conn;
        let mut sending = pin!(send_body(write, body, framing, &mut out));
        let mut receiving = pin!(read_head(read, &mut parser, &method));
        let mut sent = None;
        let head = poll_fn(|cx| {
            if sent.is_none() {
                if let Poll::Ready(result) = sending.as_mut().poll(cx) {
                    sent = Some(result);
                }
            }
            if matches!(sent, Some(Err(_))) {
                // The request body failed on our side: nothing to wait for.
                if let Some(Err(e)) = sent.take() {
                    return Poll::Ready(Err(ClientError::RequestBody(e)));
                }
            }
            receiving.as_mut().poll(cx)
        })
        .await;
        (head, sent)
    };
    out.clear();
    with_worker_pool(|pool| pool.give_back(out));
    let head = head?;
    // A response before the request was all sent ends the exchange early: the upstream
    // has stopped reading it, and what it would make of the rest is unknown.
    let body_sent = matches!(sent, Some(Ok(Sent::Whole)));

    let switching = head.upgraded;
    if switching && head.status == StatusCode::SWITCHING_PROTOCOLS && !asks_upgrade {
        return Err(ClientError::UnsolicitedSwitch);
    }
    let decoder = match head.framing {
        BodyFraming::None => Decoder::Length(0),
        BodyFraming::Length(n) => Decoder::Length(n),
        BodyFraming::Chunked => Decoder::Chunked(ChunkedDecoder::new(settings.chunked)),
        BodyFraming::CloseDelimited => Decoder::Close,
    };
    let reusable = head.keep_alive && !asks_close && body_sent && !switching;
    let mut reading = Reading {
        conn,
        decoder,
        reusable,
        check_in,
        upgraded: switching,
    };
    let state = if !switching && head.framing.is_empty() {
        reading.decoder = Decoder::Length(0);
        reading.finish();
        None
    } else {
        Some(reading)
    };
    let mut response = Response::new(ResponseBody { state });
    *response.status_mut() = head.status;
    *response.version_mut() = head.version;
    *response.headers_mut() = head.headers;
    Ok(response)
}

/// Writes the request head (in `out`) and body: small frames are gathered, and what is
/// gathered goes out whenever the body has nothing ready.
async fn send_body<W, B>(
    write: &mut W,
    body: B,
    framing: OutgoingBody,
    out: &mut BytesMut,
) -> Result<Sent, BoxError>
where
    W: AsyncWrite + Unpin,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    enum Next<T> {
        Frame(T),
        End,
        Flush,
    }
    let mut body = pin!(body);
    let chunked = framing == OutgoingBody::Chunked;
    let announced = match framing {
        OutgoingBody::Length(n) => Some(n),
        _ => None,
    };
    let mut sent: u64 = 0;
    let mut trailers_written = false;
    let mut body_left = framing != OutgoingBody::Empty;
    while body_left {
        let next = poll_fn(|cx| match body.as_mut().poll_frame(cx) {
            Poll::Ready(Some(frame)) => Poll::Ready(Next::Frame(frame)),
            Poll::Ready(None) => Poll::Ready(Next::End),
            Poll::Pending if !out.is_empty() => Poll::Ready(Next::Flush),
            Poll::Pending => Poll::Pending,
        })
        .await;
        let frame = match next {
            Next::End => {
                body_left = false;
                continue;
            }
            Next::Flush => {
                if write.write_all(out).await.is_err() {
                    return Ok(Sent::WriteFailed);
                }
                out.clear();
                continue;
            }
            Next::Frame(frame) => frame.map_err(Into::into)?,
        };
        match frame.into_data() {
            Ok(data) if chunked => write_chunk(&data, out),
            Ok(data) => {
                sent += data.len() as u64;
                if announced.is_some_and(|n| sent > n) {
                    return Err("longer than its Content-Length".into());
                }
                out.extend_from_slice(&data);
            }
            Err(frame) => {
                if let (Ok(trailers), true) = (frame.into_trailers(), chunked) {
                    write_last_chunk(Some(&trailers), out);
                    trailers_written = true;
                }
            }
        }
        if out.len() >= READ_SIZE {
            if write.write_all(out).await.is_err() {
                return Ok(Sent::WriteFailed);
            }
            out.clear();
        }
    }
    if announced.is_some_and(|n| sent != n) {
        return Err("shorter than its Content-Length".into());
    }
    if chunked && !trailers_written {
        write_last_chunk(None, out);
    }
    if write.write_all(out).await.is_err() || write.flush().await.is_err() {
        return Ok(Sent::WriteFailed);
    }
    out.clear();
    Ok(Sent::Whole)
}

/// Reads until a final (or switching) response head is in the buffer, skipping interim
/// ones.
async fn read_head<R: AsyncRead + Unpin>(
    read: &mut ReadSide<R>,
    parser: &mut ResponseParser,
    method: &Method,
) -> Result<super::ResponseHead, ClientError> {
    let mut any_byte = false;
    loop {
        if read.buf.is_held() {
            match parser.parse(read.buf.get(), method) {
                Ok(Some(head)) if head.is_interim() => {
                    parser.reset();
                    continue;
                }
                Ok(Some(head)) => return Ok(head),
                Ok(None) => {}
                Err(e) => return Err(ClientError::Malformed(e)),
            }
        }
        let filled = poll_fn(|cx| read.poll_fill(cx)).await;
        let failed = match filled {
            Ok(0) => io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"),
            Ok(_) => {
                any_byte = true;
                continue;
            }
            Err(e) => e,
        };
        return Err(if any_byte {
            ClientError::HeadCut(failed)
        } else {
            ClientError::NoResponse(failed)
        });
    }
}
