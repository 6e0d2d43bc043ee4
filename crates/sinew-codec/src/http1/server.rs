//! The server-side connection driver: reads requests off one connection with the codec,
//! hands each to a service with its body streaming straight from the connection, and
//! writes the responses back, one exchange at a time (keep-alive, and pipelined
//! requests answered in order).
//!
//! No channel and no task per request: a request's body *is* the connection's read side
//! (socket read half, pooled buffer, decoder), moved into the body while the service
//! reads it and handed back through one slot the connection allocates once. The read
//! buffer comes from the worker's pool when bytes arrive and goes back when the
//! connection is idle with nothing buffered (see [`crate::buf`]); the write buffer is
//! taken for each response and given back after it, so an idle connection holds
//! neither.
//!
//! Between requests a caller may take the connection back ([`ServerSettings::idle_handoff`]):
//! [`resume`] then returns [`Ended::Idle`] with the halves and a released buffer, the
//! caller waits for the next bytes with whatever small state it keeps for idle
//! connections (a proxy holds thousands), and calls [`resume`] again. The driver's own
//! state (parser, timers, the body's hand-back slot) exists only while it runs.
//!
//! The header-read timeout runs from a head's first byte to its end, so an idle
//! keep-alive connection is not cut by it. A graceful shutdown closes an idle
//! connection at once and lets one in the middle of an exchange finish it, answering
//! with `Connection: close`.
//!
//! A body the service drops unread is drained after the response, within a bound, so
//! the connection can go on. A request that asks to switch protocols carries an
//! [`OnUpgrade`](super::OnUpgrade): answered with 101 (2xx to CONNECT), the connection
//! leaves this driver through it, bytes already read included.

use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame as BodyFrame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

use super::upgrade::{self, Upgraded};
use super::{
    encode_response_head, write_chunk, write_last_chunk, BodyError, BodyFraming, ChunkedDecoder,
    ChunkedLimits, Frame, HeadError, HeadLimits, OutgoingBody, RequestParser,
};
use crate::buf::{with_worker_pool, BufPool, ConnBuf};

/// How a connection is served.
#[derive(Debug, Clone, Copy)]
pub struct ServerSettings {
    pub limits: HeadLimits,
    pub chunked: ChunkedLimits,
    /// From a head's first byte to its last; `None` waits for ever.
    pub header_read_timeout: Option<Duration>,
    /// From the end of a response (or the connection's start) to the next head's first
    /// byte: a connection quiet this long is closed. `None` waits for ever (the caller
    /// may end idle connections through the shutdown future instead).
    pub idle_timeout: Option<Duration>,
    /// A request body the service left unread is read and thrown away after the
    /// response, so the connection can carry the next request, if at most this many
    /// bytes of it are still to come off the socket; beyond, the connection closes.
    pub drain_limit: u64,
    /// ... and if they come within this time.
    pub drain_timeout: Duration,
    /// Between requests, once nothing has come for this long (and nothing is buffered),
    /// return [`Ended::Idle`] instead of waiting on: the caller keeps the idle connection
    /// in less memory than the driver does and times the rest of the idle timeout
    /// itself. A busy keep-alive connection never pays for the hand-back and the resume.
    /// `None`: never (the driver waits for the idle timeout).
    pub idle_handoff: Option<Duration>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            limits: HeadLimits::default(),
            chunked: ChunkedLimits::default(),
            header_read_timeout: Some(Duration::from_secs(10)),
            idle_timeout: None,
            drain_limit: 64 * 1024,
            drain_timeout: Duration::from_secs(2),
            idle_handoff: None,
        }
    }
}

/// What a read asks for at first, and again once reads come back small: a head or a
/// small body fits (the part of the buffer a read may fill is zeroed first: reading
/// into spare capacity would need `unsafe`).
pub(super) const READ_SIZE: usize = 4096;
/// What a read may grow to while a large body streams: each read that fills what it
/// asked for doubles the next, up to this. At 4 KiB a 1 MiB body cost 256 reads and
/// as many writes on the other side; at 64 KiB, 16 of each.
const MAX_READ_SIZE: usize = 64 * 1024;

/// A connection's read side: the socket's read half and the buffer it reads into.
pub(super) struct ReadSide<R> {
    pub(super) io: R,
    pub(super) buf: ConnBuf,
    /// What the next read asks for: `READ_SIZE` to `MAX_READ_SIZE`.
    read_size: usize,
}

impl<R> ReadSide<R> {
    pub(super) fn new(io: R) -> Self {
        ReadSide {
            io,
            buf: ConnBuf::new(),
            read_size: READ_SIZE,
        }
    }
}

impl<R: AsyncRead + Unpin> ReadSide<R> {
    /// Reads what is there into the buffer: the number of bytes, 0 at the end of the
    /// stream. Without a buffer (an idle connection) it waits on a small stack buffer and
    /// takes one from the pool only once bytes have come.
    pub(super) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if !self.buf.is_held() {
            let mut first = [0u8; 512];
            let mut read = ReadBuf::new(&mut first);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut read))?;
            let n = read.filled().len();
            if n > 0 {
                self.buf.get().extend_from_slice(read.filled());
            }
            return Poll::Ready(Ok(n));
        }
        let size = self.read_size;
        let buf = self.buf.get();
        let start = buf.len();
        buf.resize(start + size, 0);
        let mut read = ReadBuf::new(&mut buf[start..]);
        let polled = Pin::new(&mut self.io).poll_read(cx, &mut read);
        let n = read.filled().len();
        buf.truncate(start + n);
        if polled.is_ready() {
            self.read_size = next_read_size(size, n);
        }
        polled.map_ok(|()| n)
    }
}

/// Writes `gathered` (leaving it empty) and then `data`: one vectored write when the
/// socket takes both at once.
async fn write_gathered_then<W: AsyncWrite + Unpin>(
    write: &mut W,
    gathered: &mut BytesMut,
    data: &[u8],
) -> io::Result<()> {
    let mut head = &gathered[..];
    let mut rest = data;
    while !head.is_empty() {
        let slices = [io::IoSlice::new(head), io::IoSlice::new(rest)];
        let n = write.write_vectored(&slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        if n < head.len() {
            head = &head[n..];
        } else {
            rest = &rest[n - head.len()..];
            head = &[];
        }
    }
    gathered.clear();
    write.write_all(rest).await
}

/// The next read's size after one that asked for `asked` and got `got`: double after a
/// full read (more is waiting), back down after one that used less than a quarter.
fn next_read_size(asked: usize, got: usize) -> usize {
    if got == asked {
        (asked * 2).min(MAX_READ_SIZE)
    } else if got < asked / 4 {
        (asked / 2).max(READ_SIZE)
    } else {
        asked
    }
}

/// Where a request body hands the read side back: allocated once per connection. The
/// mutex is never contended: the body puts the read side once, the driver takes it
/// once, and they never run at the same time on a connection's one task unless the
/// service moved the body elsewhere.
struct Home<R> {
    slot: Mutex<Slot<R>>,
}

struct Slot<R> {
    read: Option<ReadSide<R>>,
    rest: Rest,
    waker: Option<Waker>,
}

/// What is left of a request body when its read side comes home.
enum Rest {
    /// Read to its end: the connection can carry another request.
    Nothing,
    /// Dropped before its end: the rest is to be drained (`Decoder` knows how much).
    Unread(Decoder),
    /// Cut short or malformed: where the next request starts is unknown.
    Broken,
}

impl<R> Home<R> {
    /// The body is already home with more left unread than a drain may read: the
    /// response can say the connection will close.
    fn unread_beyond(&self, limit: u64) -> bool {
        let slot = self
            .slot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match (&slot.read, &slot.rest) {
            (Some(side), Rest::Unread(Decoder::Length(n))) => {
                n.saturating_sub(side.buf.buffered().len() as u64) > limit
            }
            (Some(_), Rest::Broken) => true,
            _ => false,
        }
    }

    fn put(&self, read: ReadSide<R>, rest: Rest) {
        let waker = {
            let mut slot = self
                .slot
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            slot.read = Some(read);
            slot.rest = rest;
            slot.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn poll_back(&self, cx: &mut Context<'_>) -> Poll<(ReadSide<R>, Rest)> {
        let mut slot = self
            .slot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match slot.read.take() {
            Some(read) => Poll::Ready((read, std::mem::replace(&mut slot.rest, Rest::Broken))),
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

enum Decoder {
    Length(u64),
    Chunked(ChunkedDecoder),
}

/// A request's body, read from the connection as the service polls it.
pub struct RequestBody<R> {
    streaming: Option<Streaming<R>>,
}

struct Streaming<R> {
    read: Option<ReadSide<R>>,
    decoder: Decoder,
    home: Arc<Home<R>>,
}

impl<R> RequestBody<R> {
    fn empty() -> Self {
        RequestBody { streaming: None }
    }
}

impl<R> Streaming<R> {
    fn hand_back(&mut self, rest: Rest) {
        if let Some(read) = self.read.take() {
            self.home.put(read, rest);
        }
    }
}

impl<R> Drop for RequestBody<R> {
    fn drop(&mut self) {
        // Not read to its end: the driver drains the rest if it can.
        if let Some(streaming) = &mut self.streaming {
            if streaming.read.is_some() {
                let decoder = std::mem::replace(&mut streaming.decoder, Decoder::Length(0));
                streaming.hand_back(Rest::Unread(decoder));
            }
        }
    }
}

impl<R: AsyncRead + Unpin> Body for RequestBody<R> {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<BodyFrame<Bytes>, BodyError>>> {
        let Some(streaming) = &mut self.get_mut().streaming else {
            return Poll::Ready(None);
        };
        loop {
            let Some(read) = streaming.read.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut streaming.decoder {
                Decoder::Length(0) => {
                    streaming.hand_back(Rest::Nothing);
                    return Poll::Ready(None);
                }
                Decoder::Length(remaining) => {
                    if !read.buf.buffered().is_empty() {
                        let buf = read.buf.get();
                        let n = (*remaining).min(buf.len() as u64);
                        let data = buf.split_to(n as usize).freeze();
                        *remaining -= n;
                        if *remaining == 0 {
                            streaming.hand_back(Rest::Nothing);
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
                                streaming.hand_back(Rest::Nothing);
                                return Poll::Ready(trailers.map(|t| Ok(BodyFrame::trailers(t))));
                            }
                            Ok(None) => {}
                            Err(e) => {
                                streaming.hand_back(Rest::Broken);
                                return Poll::Ready(Some(Err(BodyError::Chunked(e))));
                            }
                        }
                    }
                }
            }
            match ready!(read.poll_fill(cx)) {
                Ok(0) => {
                    streaming.hand_back(Rest::Broken);
                    return Poll::Ready(Some(Err(BodyError::Truncated)));
                }
                Ok(_) => {}
                Err(e) => {
                    streaming.hand_back(Rest::Broken);
                    return Poll::Ready(Some(Err(BodyError::Io(e))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.streaming {
            None => true,
            Some(streaming) => {
                streaming.read.is_none() || matches!(streaming.decoder, Decoder::Length(0))
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.streaming {
            None => SizeHint::with_exact(0),
            Some(Streaming {
                decoder: Decoder::Length(n),
                ..
            }) => SizeHint::with_exact(*n),
            Some(_) => SizeHint::default(),
        }
    }
}

/// What waiting for a head came to (one at a time, on the stack).
#[allow(clippy::large_enum_variant)]
enum Wait {
    Head(super::RequestHead),
    Bad(HeadError),
    /// The client closed, timed out, or the server is shutting down between requests.
    Done,
    /// Nothing to read between requests, and the caller takes idle connections back.
    Idle,
}

/// How a connection served by [`serve`] or [`resume`] ended.
pub enum Ended<R, W> {
    /// Closed by either side, or at shutdown, after zero or more exchanges.
    Closed,
    /// A request head was refused: answered with `status` (and `reason` as its body),
    /// then the connection closed. The service never saw it, so whoever logs requests
    /// learns of it here (Envoy logs these with the `DPE` flag).
    BadRequest {
        status: StatusCode,
        reason: &'static str,
    },
    /// Quiet between requests for [`ServerSettings::idle_handoff`]: the connection, to
    /// wait on and [`resume`].
    Idle(IdleConn<R, W>),
}

impl<R, W> fmt::Debug for Ended<R, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ended::Closed => f.write_str("Closed"),
            Ended::BadRequest { status, reason } => f
                .debug_struct("BadRequest")
                .field("status", status)
                .field("reason", reason)
                .finish(),
            Ended::Idle(_) => f.write_str("Idle"),
        }
    }
}

/// A connection between requests: its halves and a read buffer that holds nothing
/// until bytes come (a few dozen bytes in all).
pub struct IdleConn<R, W> {
    side: ReadSide<R>,
    write: W,
}

impl<R, W> IdleConn<R, W> {
    /// A connection that has not been served yet.
    pub fn new(read: R, write: W) -> Self {
        IdleConn {
            side: ReadSide::new(read),
            write,
        }
    }
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> IdleConn<R, W> {
    /// Waits for the next bytes (read into a buffer from the worker's pool, for
    /// [`resume`]): true once some came, false when the client closed.
    pub fn poll_next_bytes(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        self.side.poll_fill(cx).map_ok(|n| n > 0)
    }

    /// Closes the connection (idle timeout, shutdown): the write side is shut down.
    pub async fn close(mut self) -> io::Result<()> {
        self.write.shutdown().await
    }
}

/// [`resume`] on a connection that has not been served yet.
pub fn serve<R, W, S, F, B>(
    read: R,
    write: W,
    service: S,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()>,
) -> impl Future<Output = io::Result<Ended<R, W>>>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
    S: FnMut(Request<RequestBody<R>>) -> F,
    F: Future<Output = Response<B>>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: fmt::Display,
{
    resume(IdleConn::new(read, write), service, settings, shutdown)
}

/// Serves `conn` until it closes (or, with [`ServerSettings::idle_handoff`], until it
/// is idle between requests): `service` answers each request, `shutdown` resolves when
/// the server begins a graceful shutdown.
///
/// A request body the service drops before its end is drained after the response (read
/// and thrown away, within [`ServerSettings::drain_limit`] and
/// [`ServerSettings::drain_timeout`]) so the connection can go on; past either, or if
/// the body was malformed or cut short, the connection closes. A service
/// that keeps the body after answering holds the connection until it lets it go.
/// A request that asks to switch protocols (`Upgrade` with `Connection: upgrade`, or
/// CONNECT) carries an [`OnUpgrade<R, W>`](super::OnUpgrade) in its extensions. If the service answers it
/// with 101 (2xx to CONNECT), the driver writes that head as it is (no body, no framing
/// field, its `Connection` untouched), hands the halves and the bytes read past the head
/// to the `OnUpgrade`, and returns. Any other answer leaves the connection HTTP/1.
/// A 101 to a request that did not ask for it is written and the connection closed.
/// The future is `Send` when the halves, the service and its futures and bodies are.
pub async fn resume<R, W, S, F, B>(
    conn: IdleConn<R, W>,
    mut service: S,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()>,
) -> io::Result<Ended<R, W>>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
    S: FnMut(Request<RequestBody<R>>) -> F,
    F: Future<Output = Response<B>>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: fmt::Display,
{
    let IdleConn { side, mut write } = conn;
    let home = Arc::new(Home {
        slot: Mutex::new(Slot {
            read: None,
            rest: Rest::Broken,
            waker: None,
        }),
    });
    let mut read_side = Some(side);
    let mut parser = RequestParser::new(settings.limits);
    let mut shutdown = pin!(shutdown);
    let mut shutting_down = false;
    let mut head_timer = pin!(tokio::time::sleep(Duration::from_secs(3600)));
    while let Some(side) = read_side.as_mut() {
        let wait = wait_for_head(
            side,
            &mut parser,
            &settings,
            head_timer.as_mut(),
            shutdown.as_mut(),
            &mut shutting_down,
        )
        .await?;
        let head = match wait {
            Wait::Head(head) => head,
            Wait::Done => break,
            Wait::Idle => {
                let side = read_side.take().expect("waited on it");
                return Ok(Ended::Idle(IdleConn { side, write }));
            }
            Wait::Bad(e) => {
                // Rare: boxed, so its state does not size every connection's future.
                // The answer is best effort: a client that sent a bad head and left
                // does not make the refusal any less one.
                let _ = Box::pin(answer_bad_head(&mut write, e)).await;
                return Ok(Ended::BadRequest {
                    status: e.status(),
                    reason: e.reason(),
                });
            }
        };
        // Boxed: an exchange's state (the service's answer, the response being written,
        // a body being drained) exists only while an exchange does; between requests
        // the connection's future keeps only what it needs to wait for the next head.
        let next = Box::pin(exchange(
            head,
            &mut service,
            &mut read_side,
            &mut write,
            &home,
            &settings,
            shutdown.as_mut(),
            &mut shutting_down,
        ))
        .await?;
        match next {
            AfterExchange::KeepAlive => {}
            AfterExchange::Close => break,
            AfterExchange::Gone => return Ok(Ended::Closed),
            AfterExchange::Switched(upgrade, mut side) => {
                let read_buf = side
                    .buf
                    .take_buffered()
                    .map(BytesMut::freeze)
                    .unwrap_or_default();
                upgrade.send(Upgraded {
                    read: side.io,
                    write,
                    read_buf,
                });
                return Ok(Ended::Closed);
            }
        }
        if let Some(side) = read_side.as_mut() {
            side.buf.release_if_idle();
        }
    }
    write.shutdown().await.map(|()| Ended::Closed)
}

/// What an exchange left the connection to do next.
enum AfterExchange<R, W> {
    KeepAlive,
    Close,
    /// The client went away while its answer was prepared.
    Gone,
    /// A 101 (or a 2xx to CONNECT) went out: the connection is the new protocol's.
    Switched(upgrade::UpgradeSender<R, W>, ReadSide<R>),
}

/// One request and its response, from a parsed head to the point where the connection
/// can wait for the next head (or must close).
#[allow(clippy::too_many_arguments)]
async fn exchange<R, W, S, F, B>(
    head: super::RequestHead,
    service: &mut S,
    read_side: &mut Option<ReadSide<R>>,
    write: &mut W,
    home: &Arc<Home<R>>,
    settings: &ServerSettings,
    mut shutdown: Pin<&mut impl Future<Output = ()>>,
    shutting_down: &mut bool,
) -> io::Result<AfterExchange<R, W>>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
    S: FnMut(Request<RequestBody<R>>) -> F,
    F: Future<Output = Response<B>>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: fmt::Display,
{
    if head.expect_continue && !head.framing.is_empty() {
        write.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }
    let method_is_head = head.method == Method::HEAD;
    let head_was_connect = head.method == Method::CONNECT;
    let version = head.version;
    let decoder = match head.framing {
        BodyFraming::Length(n) if n > 0 => Some(Decoder::Length(n)),
        BodyFraming::Chunked => Some(Decoder::Chunked(ChunkedDecoder::new(settings.chunked))),
        _ => None,
    };
    let body = match decoder {
        None => RequestBody::empty(),
        Some(decoder) => RequestBody {
            streaming: Some(Streaming {
                read: read_side.take(),
                decoder,
                home: home.clone(),
            }),
        },
    };
    let mut request = Request::new(body);
    *request.method_mut() = head.method;
    *request.uri_mut() = head.target;
    *request.version_mut() = version;
    *request.headers_mut() = head.headers;
    // Only a request that asks to switch pays for the hand-over (one allocation).
    let upgrade = if head.upgrade || head_was_connect {
        let (sender, on_upgrade) = upgrade::pair::<R, W>();
        request.extensions_mut().insert(on_upgrade);
        Some(sender)
    } else {
        None
    };
    let Some(response) = answer_unless_gone(service(request), read_side.as_mut()).await else {
        // The client closed or reset the connection while its answer was prepared:
        // the answer (and whatever it waits on upstream) is dropped with it.
        return Ok(AfterExchange::Gone);
    };

    // A shutdown that began during the exchange ends the connection after it.
    if !*shutting_down && poll_once(shutdown.as_mut()).await {
        *shutting_down = true;
    }
    let switching = if head_was_connect {
        response.status().is_success()
    } else {
        response.status() == StatusCode::SWITCHING_PROTOCOLS
    };
    let keep_alive = head.keep_alive
        && !*shutting_down
        && !switching
        && (read_side.is_some() || !home.unread_beyond(settings.drain_limit));
    // The write buffer, like the read buffer, is the worker's between exchanges.
    let mut out = with_worker_pool(BufPool::take);
    let written = write_response(
        &mut *write,
        response,
        method_is_head,
        version,
        keep_alive,
        switching,
        &mut out,
    )
    .await;
    with_worker_pool(|pool| pool.give_back(out));
    // The response may have ended the connection itself (a body delimited by the
    // close, for an HTTP/1.0 client).
    let keep_alive = written?;

    if let (true, Some(upgrade)) = (switching, upgrade) {
        let side = match read_side.take() {
            Some(side) => Some(side),
            // The request had a body: the connection is the new protocol's only if
            // the service read it to its end.
            None => {
                let (side, rest) = poll_fn(|cx| home.poll_back(cx)).await;
                recover(side, rest, settings).await
            }
        };
        return Ok(match side {
            Some(side) => AfterExchange::Switched(upgrade, side),
            None => AfterExchange::Close,
        });
    }

    if read_side.is_none() {
        // The body has (or will have) the read side: wait for it to come home.
        let (side, rest) = poll_fn(|cx| home.poll_back(cx)).await;
        *read_side = recover(side, rest, settings).await;
        if read_side.is_none() {
            return Ok(AfterExchange::Close);
        }
    }
    Ok(if keep_alive {
        AfterExchange::KeepAlive
    } else {
        AfterExchange::Close
    })
}

/// Answers a head that could not be read (its status and reason) and closes: RFC 9112,
/// the framing of what follows cannot be trusted.
async fn answer_bad_head<W: AsyncWrite + Unpin>(write: &mut W, e: HeadError) -> io::Result<()> {
    let reason = format!("{}\n", e.reason());
    let mut headers = http::HeaderMap::new();
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    let mut out = BytesMut::new();
    let length = OutgoingBody::Length(reason.len() as u64);
    encode_response_head(e.status(), &headers, length, &mut out);
    out.extend_from_slice(reason.as_bytes());
    write.write_all(&out).await?;
    write.shutdown().await
}

/// The read side, ready for the next request, once the body's rest is read and thrown
/// away; `None` if it cannot be (broken, too long, too slow, or the client went away).
async fn recover<R: AsyncRead + Unpin>(
    mut side: ReadSide<R>,
    rest: Rest,
    settings: &ServerSettings,
) -> Option<ReadSide<R>> {
    let decoder = match rest {
        Rest::Nothing => return Some(side),
        Rest::Broken => return None,
        Rest::Unread(decoder) => decoder,
    };
    let drained = tokio::time::timeout(
        settings.drain_timeout,
        drain(&mut side, decoder, settings.drain_limit),
    )
    .await;
    matches!(drained, Ok(true)).then_some(side)
}

/// Reads a body's rest and drops it: whether its end came with at most `limit` bytes
/// read off the socket.
async fn drain<R: AsyncRead + Unpin>(
    side: &mut ReadSide<R>,
    mut decoder: Decoder,
    limit: u64,
) -> bool {
    let mut read_off_socket: u64 = 0;
    loop {
        match &mut decoder {
            Decoder::Length(remaining) => {
                let buffered = side.buf.buffered().len() as u64;
                let n = (*remaining).min(buffered);
                if n > 0 {
                    let _ = side.buf.get().split_to(n as usize);
                    *remaining -= n;
                }
                if *remaining == 0 {
                    return true;
                }
                // Known already to be past the bound: do not read it at all.
                if *remaining > limit - read_off_socket.min(limit) {
                    return false;
                }
            }
            Decoder::Chunked(chunked) => {
                if side.buf.is_held() {
                    loop {
                        match chunked.decode(side.buf.get()) {
                            Ok(Some(Frame::Data(_))) => continue,
                            Ok(Some(Frame::End(_))) => return true,
                            Ok(None) => break,
                            Err(_) => return false,
                        }
                    }
                }
            }
        }
        if read_off_socket >= limit {
            return false;
        }
        match poll_fn(|cx| side.poll_fill(cx)).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => read_off_socket += n as u64,
        }
    }
}

/// Waits for the service's answer while watching the connection, when the driver holds
/// its read side (the request had no body): a client that closes or resets it gives up
/// the request, and the answer is not waited for (None). Bytes that come instead (the
/// next pipelined request) are kept in the buffer, and watching stops there, so a client
/// cannot make the connection buffer without bound. While a request body holds the read
/// side, the body's own reads see the client go.
async fn answer_unless_gone<R: AsyncRead + Unpin, T>(
    answer: impl Future<Output = T>,
    mut side: Option<&mut ReadSide<R>>,
) -> Option<T> {
    let mut answer = pin!(answer);
    poll_fn(|cx| {
        if let Poll::Ready(answered) = answer.as_mut().poll(cx) {
            return Poll::Ready(Some(answered));
        }
        if let Some(watched) = side.as_deref_mut() {
            if watched.buf.buffered().is_empty() {
                match watched.poll_fill(cx) {
                    Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(None),
                    Poll::Ready(Ok(_)) => side = None,
                    Poll::Pending => {}
                }
            }
        }
        Poll::Pending
    })
    .await
}

/// Polls a future once: whether it is ready.
async fn poll_once(mut future: Pin<&mut impl Future<Output = ()>>) -> bool {
    poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx).is_ready())).await
}

/// Reads until a whole head is in the buffer, the client goes away, the head takes too
/// long (from its first byte), the connection stays idle too long (before a head's first
/// byte), or the server shuts down between requests. One timer serves both timeouts:
/// the idle deadline is armed first, and replaced by the head's once a byte comes.
async fn wait_for_head<R: AsyncRead + Unpin>(
    side: &mut ReadSide<R>,
    parser: &mut RequestParser,
    settings: &ServerSettings,
    mut timer: Pin<&mut tokio::time::Sleep>,
    mut shutdown: Pin<&mut impl Future<Output = ()>>,
    shutting_down: &mut bool,
) -> io::Result<Wait> {
    let mut timing = false;
    // Whether the timer runs for the quiet between requests, and if so what it ends in:
    // the hand-back (true) or the idle timeout's close (false).
    let mut idle_armed: Option<bool> = None;
    loop {
        if side.buf.is_held() {
            match parser.parse(side.buf.get()) {
                Ok(Some(head)) => return Ok(Wait::Head(head)),
                Ok(None) => {}
                Err(e) => return Ok(Wait::Bad(e)),
            }
        }
        let head_begun = !side.buf.buffered().is_empty();
        if head_begun && !timing {
            if let Some(timeout) = settings.header_read_timeout {
                timer.as_mut().reset(Instant::now() + timeout);
                timing = true;
            }
        }
        if !head_begun {
            // Between requests: nothing to keep.
            side.buf.release_if_idle();
            if idle_armed.is_none() {
                let (after, hand_back) = match (settings.idle_timeout, settings.idle_handoff) {
                    (Some(idle), Some(handoff)) if handoff < idle => (Some(handoff), true),
                    (None, Some(handoff)) => (Some(handoff), true),
                    (idle, _) => (idle, false),
                };
                if let Some(after) = after {
                    timer.as_mut().reset(Instant::now() + after);
                    idle_armed = Some(hand_back);
                }
            }
        }
        let idle_timing = idle_armed.is_some() && !head_begun;
        let step = poll_fn(|cx| {
            if !head_begun && !*shutting_down && shutdown.as_mut().poll(cx).is_ready() {
                *shutting_down = true;
            }
            if !head_begun && *shutting_down {
                return Poll::Ready(HeadStep::Closing);
            }
            if (timing || idle_timing) && timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(HeadStep::TimedOut);
            }
            side.poll_fill(cx).map(HeadStep::Read)
        })
        .await;
        match step {
            HeadStep::TimedOut if idle_timing && idle_armed == Some(true) => return Ok(Wait::Idle),
            HeadStep::Closing | HeadStep::TimedOut | HeadStep::Read(Ok(0)) => {
                return Ok(Wait::Done)
            }
            HeadStep::Read(Ok(_)) => {}
            HeadStep::Read(Err(e)) => return Err(e),
        }
    }
}

/// What one wait for more of a head came to.
enum HeadStep {
    Read(io::Result<usize>),
    /// The server is shutting down, between requests.
    Closing,
    /// The header-read timeout, the idle timeout, or the hand-back's delay.
    TimedOut,
}

/// The next step of writing a body: a frame (or its end), or nothing ready yet.
enum Next<T> {
    Frame(Option<T>),
    Waiting,
}

/// Writes a response: its head with the framing its body allows, then the body.
/// Returns whether the connection can carry another exchange.
async fn write_response<W, B>(
    write: &mut W,
    response: Response<B>,
    method_is_head: bool,
    version: Version,
    keep_alive: bool,
    switching: bool,
    out: &mut BytesMut,
) -> io::Result<bool>
where
    W: AsyncWrite + Unpin,
    B: Body<Data = Bytes> + Unpin,
    B::Error: fmt::Display,
{
    let (mut parts, mut body) = response.into_parts();
    let status = parts.status;
    let no_content = switching
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let bodiless = no_content || method_is_head;
    let framing = if no_content && status != StatusCode::NOT_MODIFIED {
        OutgoingBody::Empty
    } else if bodiless {
        // HEAD and 304: the length a GET would have, when the service says it.
        match body.size_hint().exact() {
            Some(n)
                if !parts.headers.contains_key(header::CONTENT_LENGTH)
                    && status != StatusCode::NOT_MODIFIED =>
            {
                OutgoingBody::Length(n)
            }
            _ => OutgoingBody::Bodiless,
        }
    } else {
        match body.size_hint().exact() {
            Some(n) => OutgoingBody::Length(n),
            None if version == Version::HTTP_11 => OutgoingBody::Chunked,
            // An HTTP/1.0 client knows no chunked: the close ends the body.
            None => OutgoingBody::Empty,
        }
    };
    let close_delimited = !bodiless && framing == OutgoingBody::Empty;
    let keep_alive = keep_alive && !close_delimited;
    // A switching head says what the connection becomes; nothing is added to it.
    if !switching && !keep_alive {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    } else if !switching && version == Version::HTTP_10 {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
    }
    if !switching && !parts.headers.contains_key(header::DATE) {
        parts.headers.insert(header::DATE, crate::date::now());
    }
    out.clear();
    encode_response_head(status, &parts.headers, framing, out);
    // The head's fields may share a read buffer (an upstream's, for a proxy): let them
    // go now, so that buffer is whole again when the body that follows it ends.
    drop(parts);
    if bodiless {
        write.write_all(out).await?;
        write.flush().await?;
        return Ok(keep_alive);
    }
    let chunked = framing == OutgoingBody::Chunked;
    // A body longer or shorter than the length it announced would desynchronise the
    // client: the connection is dropped instead.
    let announced = match framing {
        OutgoingBody::Length(n) => Some(n),
        _ => None,
    };
    let mut sent: u64 = 0;
    let mut trailers_written = false;
    let mut body = Pin::new(&mut body);
    loop {
        // What is ready now is gathered into one write; when the body has nothing ready,
        // what was gathered goes out first, so a slow stream (server-sent events, a
        // long poll) reaches the client as it is produced.
        let next = poll_fn(|cx| match body.as_mut().poll_frame(cx) {
            Poll::Pending if !out.is_empty() => Poll::Ready(Next::Waiting),
            Poll::Pending => Poll::Pending,
            Poll::Ready(frame) => Poll::Ready(Next::Frame(frame)),
        })
        .await;
        let frame = match next {
            Next::Waiting => {
                write.write_all(out).await?;
                out.clear();
                write.flush().await?;
                continue;
            }
            Next::Frame(None) => break,
            Next::Frame(Some(frame)) => frame,
        };
        let frame = frame.map_err(|e| io::Error::other(e.to_string()))?;
        match frame.into_data() {
            Ok(data) if announced.is_some_and(|n| sent + data.len() as u64 > n) => {
                return Err(io::Error::other("response body longer than its length"));
            }
            Ok(data) if chunked => write_chunk(&data, out),
            Ok(data) if data.len() >= READ_SIZE => {
                // A large frame goes out from where it is, after what was gathered:
                // copying it into `out` first would copy every byte of a download.
                sent += data.len() as u64;
                write_gathered_then(write, out, &data).await?;
            }
            Ok(data) => {
                sent += data.len() as u64;
                out.extend_from_slice(&data);
            }
            Err(frame) => {
                if let (Ok(trailers), true) = (frame.into_trailers(), chunked) {
                    write_last_chunk(Some(&trailers), out);
                    trailers_written = true;
                }
            }
        }
        // Small frames are gathered; a large one goes out now.
        if out.len() >= READ_SIZE {
            write.write_all(out).await?;
            out.clear();
        }
    }
    if announced.is_some_and(|n| sent != n) {
        return Err(io::Error::other("response body shorter than its length"));
    }
    if chunked && !trailers_written {
        write_last_chunk(None, out);
    }
    write.write_all(out).await?;
    out.clear();
    write.flush().await?;
    Ok(keep_alive)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

    fn size_of_output<A, F>(_: impl FnOnce(A) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// A connection's driver is part of its task for the connection's whole life, idle
    /// or not; an exchange's state is boxed apart (`exchange`). Inline, it was 2,536
    /// bytes with the smallest service there is.
    #[test]
    fn the_connection_driver_stays_under_1_kib() {
        type Service =
            fn(Request<RequestBody<OwnedReadHalf>>) -> std::future::Ready<Response<String>>;
        type Halves = (OwnedReadHalf, OwnedWriteHalf, Service, ServerSettings);
        let size = size_of_output(|(read, write, service, settings): Halves| {
            serve(read, write, service, settings, std::future::pending::<()>())
        });
        assert!(size <= 1024, "the driver's future is {size} bytes");
    }

    /// With `idle_handoff`, the driver answers what was sent (pipelined requests in
    /// order), then, once the connection has been quiet that long, hands it back holding
    /// no buffer; the caller waits for the next bytes and resumes it, and learns when the
    /// client closes.
    #[tokio::test]
    async fn an_idle_connection_is_handed_back_and_resumed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (read, write) = server.into_split();
        let settings = ServerSettings {
            idle_handoff: Some(Duration::from_millis(20)),
            ..ServerSettings::default()
        };
        let answered = std::sync::atomic::AtomicUsize::new(0);
        let service = |req: Request<RequestBody<OwnedReadHalf>>| {
            answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = req.uri().path().to_string();
            async move { Response::new(path) }
        };
        client
            .write_all(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let ended = serve(read, write, service, settings, std::future::pending::<()>())
            .await
            .unwrap();
        let Ended::Idle(mut idle) = ended else {
            panic!("expected an idle hand-back, got {ended:?}");
        };
        assert_eq!(answered.load(std::sync::atomic::Ordering::Relaxed), 2);
        assert!(
            !idle.side.buf.is_held(),
            "an idle connection holds no buffer"
        );
        let mut answers = vec![0u8; 4096];
        let mut got = String::new();
        while !got.contains("/two") {
            let n = client.read(&mut answers).await.unwrap();
            got.push_str(std::str::from_utf8(&answers[..n]).unwrap());
        }
        assert!(
            got.find("/one").unwrap() < got.find("/two").unwrap(),
            "{got}"
        );

        client
            .write_all(b"GET /three HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        assert!(poll_fn(|cx| idle.poll_next_bytes(cx)).await.unwrap());
        let ended = resume(idle, service, settings, std::future::pending::<()>())
            .await
            .unwrap();
        let Ended::Idle(mut idle) = ended else {
            panic!("expected an idle hand-back, got {ended:?}");
        };
        let n = client.read(&mut answers).await.unwrap();
        let third = std::str::from_utf8(&answers[..n]).unwrap();
        assert!(
            third.starts_with("HTTP/1.1 200 ") && third.ends_with("/three"),
            "{third}"
        );

        drop(client);
        assert!(
            !poll_fn(|cx| idle.poll_next_bytes(cx)).await.unwrap(),
            "the client closed"
        );
    }

    /// A refused head is answered here, never reaching the service, so the caller
    /// learns of it from how the connection ended (the proxy logs it).
    #[tokio::test]
    async fn a_refused_head_ends_the_connection_as_a_bad_request() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, server) = tokio::io::duplex(4096);
        let (read, write) = tokio::io::split(server);
        let service = |_: Request<RequestBody<_>>| async {
            panic!("a refused head reached the service");
            #[allow(unreachable_code)]
            Response::new(String::new())
        };
        let (mut client_read, mut client_write) = tokio::io::split(client);
        client_write
            .write_all(
                b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            )
            .await
            .unwrap();
        let ended = serve(
            read,
            write,
            service,
            ServerSettings::default(),
            std::future::pending::<()>(),
        )
        .await
        .unwrap();
        assert!(
            matches!(ended, Ended::BadRequest { status, .. } if status == StatusCode::BAD_REQUEST),
            "{ended:?}"
        );
        let mut answer = String::new();
        client_read.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    }

    #[test]
    fn reads_grow_while_a_large_body_streams_and_shrink_after_it() {
        let mut size = READ_SIZE;
        for _ in 0..8 {
            size = next_read_size(size, size);
        }
        assert_eq!(size, MAX_READ_SIZE, "full reads double up to the cap");
        assert_eq!(
            next_read_size(size, size / 2),
            size,
            "a half-full read keeps it"
        );
        for _ in 0..8 {
            size = next_read_size(size, 100);
        }
        assert_eq!(size, READ_SIZE, "small reads halve it back to the start");
    }

    /// A large frame is written after what was gathered before it, in order, whatever
    /// the socket takes per write.
    #[tokio::test]
    async fn a_large_frame_follows_what_was_gathered_in_order() {
        use tokio::io::AsyncReadExt;
        let (mut client, mut server) = tokio::io::duplex(1000);
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            client.read_to_end(&mut all).await.unwrap();
            all
        });
        let mut gathered = BytesMut::from(&b"HTTP/1.1 200 OK\r\n\r\n"[..]);
        write_gathered_then(&mut server, &mut gathered, &data)
            .await
            .unwrap();
        assert!(gathered.is_empty());
        drop(server);
        let all = reader.await.unwrap();
        assert_eq!(&all[..19], b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(&all[19..], &data[..]);
    }
}
