//! The client connection against a real HTTP/2 server (the `h2` crate's) over loopback
//! TCP, and against a hand-written one where `h2`'s server would refuse to misbehave.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

use super::client::{handshake, Client, ClientError, ClientSettings, ResponseBody};

const WAIT: Duration = Duration::from_secs(10);

/// A request body fed from a channel: it is pending until the test sends the next frame,
/// as a downstream body that streams in is.
struct ChannelBody(mpsc::Receiver<Result<Frame<Bytes>, io::Error>>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.get_mut().0.poll_recv(cx)
    }
}

fn channel_body() -> (mpsc::Sender<Result<Frame<Bytes>, io::Error>>, ChannelBody) {
    let (tx, rx) = mpsc::channel(4);
    (tx, ChannelBody(rx))
}

fn empty() -> http_body_util::Empty<Bytes> {
    http_body_util::Empty::new()
}

fn get(path: &str) -> Request<http_body_util::Empty<Bytes>> {
    Request::get(format!("http://sinew.test{path}"))
        .body(empty())
        .unwrap()
}

fn post<B>(path: &str, body: B) -> Request<B> {
    Request::post(format!("http://sinew.test{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .unwrap()
}

/// Serves the first connection to a fresh loopback port with `h2`'s server, each stream
/// in its own task running `handler`.
async fn h2_server<H, F>(builder: h2::server::Builder, handler: H) -> SocketAddr
where
    H: Fn(Request<RecvStream>, SendResponse<Bytes>) -> F + Send + 'static,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let mut conn = builder.handshake::<_, Bytes>(tcp).await.unwrap();
        while let Some(Ok((request, respond))) = conn.accept().await {
            tokio::spawn(handler(request, respond));
        }
    });
    addr
}

/// Connects, spawns the connection's task, and waits for the server's SETTINGS.
async fn connect(addr: SocketAddr, settings: ClientSettings) -> Client {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (client, mut conn) = handshake(tcp, settings).await.unwrap();
    let settings_received = conn.settings_received().unwrap();
    tokio::spawn(conn);
    timeout(WAIT, settings_received).await.unwrap().unwrap();
    client
}

/// Reads a request body on the server to its end: bytes and trailers.
async fn read_request(body: &mut RecvStream) -> (Vec<u8>, Option<HeaderMap>) {
    let mut all = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        all.extend_from_slice(&chunk);
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    (all, body.trailers().await.unwrap())
}

/// Sends `data` on the server's stream as its window allows.
async fn send_all(send: &mut h2::SendStream<Bytes>, mut data: Bytes, end: bool) {
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let granted = std::future::poll_fn(|cx| send.poll_capacity(cx))
            .await
            .unwrap()
            .unwrap();
        let piece = data.split_to(granted.min(data.len()));
        send.send_data(piece, end && data.is_empty()).unwrap();
    }
}

async fn collect(body: ResponseBody) -> (Bytes, Option<HeaderMap>) {
    let collected = timeout(WAIT, body.collect()).await.unwrap().unwrap();
    let trailers = collected.trailers().cloned();
    (collected.to_bytes(), trailers)
}

#[tokio::test]
async fn concurrent_streams_stay_within_the_peers_limit() {
    const REQUESTS: usize = 12;
    let open = Arc::new(AtomicUsize::new(0));
    let most_open = Arc::new(AtomicUsize::new(0));
    let mut builder = h2::server::Builder::new();
    builder.max_concurrent_streams(4);
    let addr = {
        let (open, most_open) = (open.clone(), most_open.clone());
        h2_server(builder, move |request, mut respond| {
            let (open, most_open) = (open.clone(), most_open.clone());
            async move {
                let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                most_open.fetch_max(now, Ordering::SeqCst);
                // Long enough that the streams overlap.
                tokio::time::sleep(Duration::from_millis(30)).await;
                open.fetch_sub(1, Ordering::SeqCst);
                let path = Bytes::from(request.uri().path().to_owned());
                let mut send = respond.send_response(Response::new(()), false).unwrap();
                send.send_data(path, true).unwrap();
            }
        })
        .await
    };
    let client = connect(addr, ClientSettings::default()).await;
    assert_eq!(
        client.max_send_streams(),
        4,
        "the peer's SETTINGS are in force"
    );
    let requests = (0..REQUESTS).map(|i| {
        let client = client.clone();
        tokio::spawn(async move {
            let response = client.send_request(get(&format!("/{i}"))).await.unwrap();
            let (body, _) = collect(response.into_body()).await;
            assert_eq!(body, format!("/{i}"));
        })
    });
    for request in requests.collect::<Vec<_>>() {
        timeout(WAIT, request).await.unwrap().unwrap();
    }
    assert_eq!(
        most_open.load(Ordering::SeqCst),
        4,
        "never more than the peer allows"
    );
    assert!(!client.is_closed());
}

#[tokio::test]
async fn a_large_response_crosses_small_windows() {
    const SIZE: usize = 4 * 1024 * 1024;
    let expected: Bytes = (0..SIZE)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    let addr = {
        let expected = expected.clone();
        h2_server(h2::server::Builder::new(), move |_request, mut respond| {
            let expected = expected.clone();
            async move {
                let mut send = respond.send_response(Response::new(()), false).unwrap();
                send_all(&mut send, expected, false).await;
                let mut trailers = HeaderMap::new();
                trailers.insert("x-sum", HeaderValue::from_static("done"));
                send.send_trailers(trailers).unwrap();
            }
        })
        .await
    };
    let settings = ClientSettings {
        initial_stream_window: 16 * 1024,
        initial_connection_window: 64 * 1024,
        ..ClientSettings::default()
    };
    let client = connect(addr, settings).await;
    let response = client.send_request(get("/big")).await.unwrap();
    let (body, trailers) = collect(response.into_body()).await;
    assert_eq!(body.len(), SIZE);
    assert!(body == expected, "every byte in order");
    assert_eq!(trailers.unwrap()["x-sum"], "done");
}

#[tokio::test]
async fn a_streamed_request_with_trailers_is_answered_after_its_end() {
    let addr = h2_server(
        h2::server::Builder::new(),
        |request, mut respond| async move {
            let (_, mut body) = request.into_parts();
            let (received, trailers) = read_request(&mut body).await;
            let status = trailers
                .and_then(|t| t.get("x-checksum").cloned())
                .unwrap_or(HeaderValue::from_static("missing"));
            let mut send = respond.send_response(Response::new(()), false).unwrap();
            send_all(&mut send, received.into(), false).await;
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            trailers.insert("x-seen-checksum", status);
            send.send_trailers(trailers).unwrap();
        },
    )
    .await;
    let client = connect(addr, ClientSettings::default()).await;
    let (feed, body) = channel_body();
    tokio::spawn(async move {
        for message in ["one ", "two ", "three"] {
            tokio::time::sleep(Duration::from_millis(10)).await;
            feed.send(Ok(Frame::data(Bytes::from(message))))
                .await
                .unwrap();
        }
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", HeaderValue::from_static("42"));
        feed.send(Ok(Frame::trailers(trailers))).await.unwrap();
    });
    let response = timeout(WAIT, client.send_request(post("/unary", body)))
        .await
        .unwrap()
        .unwrap();
    let (body, trailers) = collect(response.into_body()).await;
    assert_eq!(body, "one two three");
    let trailers = trailers.unwrap();
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-seen-checksum"], "42");
}

#[tokio::test]
async fn a_bidirectional_stream_echoes_each_message_before_the_next_is_sent() {
    let addr = h2_server(
        h2::server::Builder::new(),
        |request, mut respond| async move {
            // The head goes at once; then each request message is answered as it comes.
            let mut send = respond.send_response(Response::new(()), false).unwrap();
            let (_, mut body) = request.into_parts();
            while let Some(chunk) = body.data().await {
                let chunk = chunk.unwrap();
                let _ = body.flow_control().release_capacity(chunk.len());
                send_all(&mut send, chunk, false).await;
            }
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            send.send_trailers(trailers).unwrap();
        },
    )
    .await;
    let client = connect(addr, ClientSettings::default()).await;
    let (feed, body) = channel_body();
    let exchange = async move {
        // The first message must go before the server answers anything but the head.
        feed.send(Ok(Frame::data(Bytes::from("ping 0"))))
            .await
            .unwrap();
        let response = client.send_request(post("/bidi", body)).await.unwrap();
        let mut response = response.into_body();
        for i in 0..5 {
            let echoed = response
                .frame()
                .await
                .unwrap()
                .unwrap()
                .into_data()
                .unwrap();
            assert_eq!(echoed, format!("ping {i}"));
            if i < 4 {
                let next = Bytes::from(format!("ping {}", i + 1));
                feed.send(Ok(Frame::data(next))).await.unwrap();
            }
        }
        drop(feed);
        let trailers = response
            .frame()
            .await
            .unwrap()
            .unwrap()
            .into_trailers()
            .unwrap();
        assert_eq!(trailers["grpc-status"], "0");
        assert!(response.frame().await.is_none());
    };
    timeout(WAIT, exchange).await.expect("no deadlock");
}

#[tokio::test]
async fn a_refused_stream_may_be_retried() {
    let addr = h2_server(
        h2::server::Builder::new(),
        |_request, mut respond| async move {
            respond.send_reset(Reason::REFUSED_STREAM);
        },
    )
    .await;
    let client = connect(addr, ClientSettings::default()).await;
    let error = timeout(WAIT, client.send_request(get("/refused")))
        .await
        .unwrap()
        .unwrap_err();
    assert!(error.is_retryable(), "{error}");
    assert!(!error.is_malformed_response());
    // A reset stream leaves the connection usable.
    assert!(!client.is_closed());
}

#[tokio::test]
async fn an_upstream_error_reset_is_not_retryable() {
    let addr = h2_server(
        h2::server::Builder::new(),
        |_request, mut respond| async move {
            respond.send_reset(Reason::INTERNAL_ERROR);
        },
    )
    .await;
    let client = connect(addr, ClientSettings::default()).await;
    let error = client.send_request(get("/boom")).await.unwrap_err();
    assert!(!error.is_retryable());
    assert!(!error.is_malformed_response());
    let stream = error.stream_error().unwrap();
    assert_eq!(
        stream.reason_code(),
        Some(u32::from(Reason::INTERNAL_ERROR))
    );
}

/// A hand-written HTTP/2 server for what `h2`'s server will not send: it takes the
/// preface, sends an empty SETTINGS, and when the first HEADERS frame comes sends the
/// frames `answer` returns, then holds the connection open until the client closes it.
async fn raw_server(answer: fn() -> Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut preface = [0u8; 24];
        tcp.read_exact(&mut preface).await.unwrap();
        assert_eq!(&preface, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        tcp.write_all(&frame(4, 0, 0, &[])).await.unwrap();
        loop {
            let mut head = [0u8; 9];
            if tcp.read_exact(&mut head).await.is_err() {
                return;
            }
            let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; length];
            if tcp.read_exact(&mut payload).await.is_err() {
                return;
            }
            match (head[3], head[4]) {
                // The client's SETTINGS: acknowledged.
                (4, 0) => tcp.write_all(&frame(4, 1, 0, &[])).await.unwrap(),
                (1, _) => tcp.write_all(&answer()).await.unwrap(),
                _ => {}
            }
        }
    });
    addr
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

#[tokio::test]
async fn a_connection_specific_response_field_is_a_protocol_error() {
    let addr = raw_server(|| {
        // HPACK: `:status: 200` (static index 8), then `connection: close` as a literal
        // without indexing (RFC 7541 §6.2.2).
        let mut block = vec![0x88, 0x00, 10];
        block.extend_from_slice(b"connection");
        block.push(5);
        block.extend_from_slice(b"close");
        // HEADERS on stream 1, END_STREAM | END_HEADERS.
        frame(1, 0x5, 1, &block)
    })
    .await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, conn) = handshake(tcp, ClientSettings::default()).await.unwrap();
    tokio::spawn(conn);
    let error = timeout(WAIT, client.send_request(get("/malformed")))
        .await
        .unwrap()
        .unwrap_err();
    assert!(error.is_malformed_response(), "{error:?}");
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn a_goaway_before_the_stream_was_processed_may_be_retried() {
    let addr = raw_server(|| {
        // GOAWAY, last stream 0 (none processed), NO_ERROR.
        frame(7, 0, 0, &[0; 8])
    })
    .await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, conn) = handshake(tcp, ClientSettings::default()).await.unwrap();
    tokio::spawn(conn);
    let error = timeout(WAIT, client.send_request(get("/late")))
        .await
        .unwrap()
        .unwrap_err();
    assert!(error.is_retryable(), "{error:?}");
    assert!(timeout(WAIT, async {
        while !client.is_closed() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .is_ok());
}

/// A server whose streams wait for the client's reset and report its code.
async fn reset_watching_server(
    resets: mpsc::UnboundedSender<Reason>,
    started: mpsc::UnboundedSender<()>,
    answer_first: bool,
) -> SocketAddr {
    h2_server(h2::server::Builder::new(), move |request, mut respond| {
        let (resets, started) = (resets.clone(), started.clone());
        async move {
            // Keep the request body open (unread) while waiting.
            let _request = request;
            let reason = if answer_first {
                // After the head, the reset is watched on the response's stream.
                let mut send = respond.send_response(Response::new(()), false).unwrap();
                let _ = started.send(());
                std::future::poll_fn(|cx| send.poll_reset(cx)).await
            } else {
                let _ = started.send(());
                std::future::poll_fn(|cx| respond.poll_reset(cx)).await
            };
            let _ = resets.send(reason.unwrap());
        }
    })
    .await
}

#[tokio::test]
async fn dropping_the_request_before_its_response_resets_the_stream() {
    let (resets, mut reset_seen) = mpsc::unbounded_channel();
    let (started, mut stream_started) = mpsc::unbounded_channel();
    let addr = reset_watching_server(resets, started, false).await;
    let client = connect(addr, ClientSettings::default()).await;
    let (feed, body) = channel_body();
    feed.send(Ok(Frame::data(Bytes::from("part"))))
        .await
        .unwrap();
    let request = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .send_request(post("/abandoned", body))
                .await
                .map(|_| ())
        }
    });
    timeout(WAIT, stream_started.recv()).await.unwrap().unwrap();
    request.abort();
    let reason = timeout(WAIT, reset_seen.recv()).await.unwrap().unwrap();
    assert_eq!(reason, Reason::CANCEL);
    drop(feed);
}

#[tokio::test]
async fn dropping_the_response_body_while_the_request_streams_resets_the_stream() {
    let (resets, mut reset_seen) = mpsc::unbounded_channel();
    let (started, mut stream_started) = mpsc::unbounded_channel();
    let addr = reset_watching_server(resets, started, true).await;
    let client = connect(addr, ClientSettings::default()).await;
    let (feed, body) = channel_body();
    let response = timeout(WAIT, client.send_request(post("/half", body)))
        .await
        .unwrap()
        .unwrap();
    timeout(WAIT, stream_started.recv()).await.unwrap().unwrap();
    // The request body is still open (its rest would go from the pump's task): dropping
    // the response ends the exchange.
    drop(response);
    let reason = timeout(WAIT, reset_seen.recv()).await.unwrap().unwrap();
    assert_eq!(reason, Reason::CANCEL);
    drop(feed);
}

#[tokio::test]
async fn a_failed_request_body_is_reported_with_its_cause_and_resets_the_stream() {
    let (resets, mut reset_seen) = mpsc::unbounded_channel();
    let (started, mut stream_started) = mpsc::unbounded_channel();
    let addr = reset_watching_server(resets, started, false).await;
    let client = connect(addr, ClientSettings::default()).await;
    let (feed, body) = channel_body();
    let (done_tx, done_rx) = oneshot::channel();
    tokio::spawn(async move {
        let _ = done_tx.send(client.send_request(post("/fails", body)).await);
    });
    feed.send(Ok(Frame::data(Bytes::from("part"))))
        .await
        .unwrap();
    timeout(WAIT, stream_started.recv()).await.unwrap().unwrap();
    feed.send(Err(io::Error::other("downstream went away")))
        .await
        .unwrap();
    let error = timeout(WAIT, done_rx).await.unwrap().unwrap().unwrap_err();
    let ClientError::RequestBody(cause) = &error else {
        panic!("expected the body's error, got {error:?}");
    };
    assert_eq!(cause.to_string(), "downstream went away");
    assert!(cause.downcast_ref::<io::Error>().is_some());
    let reason = timeout(WAIT, reset_seen.recv()).await.unwrap().unwrap();
    assert_eq!(reason, Reason::CANCEL);
}

#[tokio::test]
async fn connection_specific_request_fields_are_dropped_and_a_known_length_is_sent() {
    let (heads, mut head_seen) = mpsc::unbounded_channel();
    let addr = h2_server(h2::server::Builder::new(), move |request, mut respond| {
        let heads = heads.clone();
        async move {
            let (parts, mut body) = request.into_parts();
            let (received, _) = read_request(&mut body).await;
            let _ = heads.send((parts.headers, received));
            respond.send_response(Response::new(()), true).unwrap();
        }
    })
    .await;
    let client = connect(addr, ClientSettings::default()).await;
    let request = Request::post("http://sinew.test/form")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "1")
        .header("keep-alive", "timeout=5")
        .header("te", "gzip")
        .header("x-kept", "yes")
        .body(http_body_util::Full::new(Bytes::from("hello")))
        .unwrap();
    let response = client.send_request(request).await.unwrap();
    assert!(response.body().is_end_stream());
    let (headers, received) = timeout(WAIT, head_seen.recv()).await.unwrap().unwrap();
    assert_eq!(received, b"hello");
    assert_eq!(headers["content-length"], "5");
    assert_eq!(headers["x-kept"], "yes");
    for gone in ["connection", "x-hop", "keep-alive", "te"] {
        assert!(!headers.contains_key(gone), "{gone} was sent");
    }
}

#[tokio::test]
async fn an_early_complete_answer_to_a_streaming_request_ends_cleanly() {
    // The server answers in full without reading the request, and drops it: `h2` resets
    // the rest of the request with NO_ERROR (RFC 9113 §8.1), which is no failure.
    let addr = h2_server(
        h2::server::Builder::new(),
        |request, mut respond| async move {
            let mut send = respond.send_response(Response::new(()), false).unwrap();
            send.send_data(Bytes::from("early"), true).unwrap();
            drop(request);
        },
    )
    .await;
    let client = connect(addr, ClientSettings::default()).await;
    let (feed, body) = channel_body();
    feed.send(Ok(Frame::data(Bytes::from("first of many"))))
        .await
        .unwrap();
    let response = timeout(WAIT, client.send_request(post("/early", body)))
        .await
        .unwrap()
        .unwrap();
    let (body, _) = collect(response.into_body()).await;
    assert_eq!(body, "early");
    drop(feed);
}

#[tokio::test]
async fn a_response_cut_short_of_its_length_fails_even_with_no_error() {
    let addr = h2_server(
        h2::server::Builder::new(),
        |_request, mut respond| async move {
            let head = Response::builder()
                .header("content-length", "10")
                .body(())
                .unwrap();
            let mut send = respond.send_response(head, false).unwrap();
            send.send_data(Bytes::from("four"), false).unwrap();
            // Let the DATA go before the reset.
            tokio::time::sleep(Duration::from_millis(20)).await;
            send.send_reset(Reason::NO_ERROR);
        },
    )
    .await;
    let client = connect(addr, ClientSettings::default()).await;
    let response = client.send_request(get("/cut")).await.unwrap();
    assert_eq!(response.body().size_hint().exact(), Some(10));
    let result = timeout(WAIT, response.into_body().collect()).await.unwrap();
    let error = result.expect_err("six bytes are missing");
    assert_eq!(error.reason_code(), Some(u32::from(Reason::NO_ERROR)));
}
