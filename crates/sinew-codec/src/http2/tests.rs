//! The driver against a real HTTP/2 client (the `h2` crate's) over loopback TCP.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, StreamBody};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::{serve, Error, RecvBody, ServerSettings};

type TestBody = UnsyncBoxBody<Bytes, io::Error>;

const WAIT: Duration = Duration::from_secs(10);

fn full(data: impl Into<Bytes>) -> TestBody {
    http_body_util::Full::new(data.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

fn frames(frames: Vec<Result<Frame<Bytes>, io::Error>>) -> TestBody {
    StreamBody::new(stream::iter(frames)).boxed_unsync()
}

/// Serves the first connection to a fresh loopback port with `service`, until `shutdown`.
async fn server<S, F>(
    service: S,
    settings: ServerSettings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> (SocketAddr, JoinHandle<Result<(), Error>>)
where
    S: FnMut(Request<RecvBody>) -> F + Send + 'static,
    F: std::future::Future<Output = Response<TestBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        tcp.set_nodelay(true).unwrap();
        serve(tcp, service, settings, shutdown).await
    });
    (addr, task)
}

/// A client connection; its connection task ends when the server closes.
async fn client(
    addr: SocketAddr,
    builder: &h2::client::Builder,
) -> (h2::client::SendRequest<Bytes>, JoinHandle<()>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (send, conn) = builder.handshake::<_, Bytes>(tcp).await.unwrap();
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    (send, conn)
}

async fn send(
    client: &h2::client::SendRequest<Bytes>,
    request: Request<()>,
    end_of_stream: bool,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let mut ready = client.clone().ready().await.unwrap();
    ready.send_request(request, end_of_stream).unwrap()
}

fn get(path: &str) -> Request<()> {
    Request::get(format!("http://sinew.test{path}"))
        .body(())
        .unwrap()
}

/// Reads a response body to its end, opening the window as it goes: its bytes and
/// trailers.
async fn read_all(body: &mut h2::RecvStream) -> Result<(Vec<u8>, Option<HeaderMap>), h2::Error> {
    let mut all = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        all.extend_from_slice(&chunk);
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    Ok((all, body.trailers().await?))
}

/// Sets its flag when dropped: shows that a future or body was let go.
struct DropGuard(Arc<AtomicBool>, Arc<Notify>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
        self.1.notify_one();
    }
}

async fn wait_dropped(dropped: &AtomicBool, notify: &Notify) {
    timeout(WAIT, async {
        while !dropped.load(Ordering::SeqCst) {
            let _ = timeout(Duration::from_millis(50), notify.notified()).await;
        }
    })
    .await
    .expect("the guard was dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_streams_share_the_connections_one_task() {
    const STREAMS: usize = 150;
    let arrived = Arc::new(AtomicUsize::new(0));
    let all_arrived = Arc::new(Notify::new());
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let service = {
        let (arrived, all_arrived, gate) = (arrived.clone(), all_arrived.clone(), gate.clone());
        move |req: Request<RecvBody>| {
            let (arrived, all_arrived, gate) = (arrived.clone(), all_arrived.clone(), gate.clone());
            async move {
                if arrived.fetch_add(1, Ordering::SeqCst) + 1 == STREAMS {
                    all_arrived.notify_one();
                }
                // Every stream waits here at once: all are pending together.
                gate.acquire().await.unwrap().forget();
                Response::new(full(req.uri().path().to_owned()))
            }
        }
    };
    let (addr, served) = server(service, ServerSettings::default(), std::future::pending()).await;
    let (client, _conn) = client(addr, &h2::client::Builder::new()).await;
    let before = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let mut responses = Vec::new();
    for i in 0..STREAMS {
        responses.push(send(&client, get(&format!("/stream/{i}")), true).await.0);
    }
    timeout(WAIT, all_arrived.notified()).await.unwrap();
    // 150 services pending on one connection: still the tasks there were before (the
    // server's and the client connection's), not one more per stream.
    let during = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    assert!(
        during <= before,
        "{during} tasks alive with {STREAMS} streams pending (was {before})"
    );
    gate.add_permits(STREAMS);
    let answers = futures_util::future::join_all(responses.into_iter().map(|r| async move {
        let mut body = r.await.unwrap().into_body();
        read_all(&mut body).await.unwrap().0
    }));
    let answers = timeout(WAIT, answers).await.unwrap();
    for (i, body) in answers.iter().enumerate() {
        assert_eq!(body, format!("/stream/{i}").as_bytes());
    }
    assert!(!served.is_finished());
}

#[tokio::test]
async fn a_large_response_goes_only_as_fast_as_the_clients_window_opens() {
    const TOTAL: usize = 4 * 1024 * 1024;
    const CHUNK: usize = 16 * 1024;
    const WINDOW: u32 = 64 * 1024;
    let pulled = Arc::new(AtomicUsize::new(0));
    let service = {
        let pulled = pulled.clone();
        move |_req: Request<RecvBody>| {
            let pulled = pulled.clone();
            async move {
                let chunks = stream::iter(0..TOTAL / CHUNK).map(move |i| {
                    pulled.fetch_add(CHUNK, Ordering::SeqCst);
                    Ok::<_, io::Error>(Frame::data(Bytes::from(vec![(i % 251) as u8; CHUNK])))
                });
                Response::new(StreamBody::new(chunks).boxed_unsync())
            }
        }
    };
    let (addr, _served) = server(service, ServerSettings::default(), std::future::pending()).await;
    let mut builder = h2::client::Builder::new();
    builder
        .initial_window_size(WINDOW)
        .initial_connection_window_size(WINDOW);
    let (client, _conn) = client(addr, &builder).await;
    let (response, _) = send(&client, get("/large"), true).await;
    let response = timeout(WAIT, response).await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // The client reads nothing for a while: the server may have taken from the body
    // what the window allows and the one chunk waiting for more, no further.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let taken = pulled.load(Ordering::SeqCst);
    assert!(
        taken <= WINDOW as usize + 2 * CHUNK,
        "{taken} bytes taken from the body with a {WINDOW}-byte window"
    );
    let mut body = response.into_body();
    let (all, trailers) = timeout(WAIT, read_all(&mut body)).await.unwrap().unwrap();
    assert_eq!(all.len(), TOTAL);
    for (i, chunk) in all.chunks(CHUNK).enumerate() {
        assert!(chunk.iter().all(|&b| b == (i % 251) as u8), "chunk {i}");
    }
    assert!(trailers.is_none());
}

#[tokio::test]
async fn a_grpc_shaped_request_body_arrives_with_its_trailers_and_so_does_the_answer() {
    let service = |req: Request<RecvBody>| async move {
        let (head, mut body) = req.into_parts();
        assert_eq!(head.headers["content-type"], "application/grpc");
        let mut messages = Vec::new();
        let mut trailers = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.expect("the request body reads to its end");
            match frame.into_data() {
                Ok(data) => messages.extend_from_slice(&data),
                Err(frame) => trailers = frame.into_trailers().ok(),
            }
        }
        assert!(body.is_end_stream());
        let trailers = trailers.expect("the request's trailers");
        let mut answer_trailers = HeaderMap::new();
        answer_trailers.insert("grpc-status", "0".parse().unwrap());
        answer_trailers.insert("echo-trailer", trailers["x-client-trailer"].clone());
        let mut response = Response::new(frames(vec![
            Ok(Frame::data(Bytes::from(messages))),
            Ok(Frame::trailers(answer_trailers)),
        ]));
        response
            .headers_mut()
            .insert("content-type", "application/grpc".parse().unwrap());
        response
    };
    let (addr, _served) = server(service, ServerSettings::default(), std::future::pending()).await;
    let (client, _conn) = client(addr, &h2::client::Builder::new()).await;
    let request = Request::post("http://sinew.test/pkg.Service/Method")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut upload) = send(&client, request, false).await;
    // Two length-prefixed messages in three DATA frames, then trailers.
    let first = [&[0u8, 0, 0, 0, 5][..], b"hello"].concat();
    let second = [&[0u8, 0, 0, 0, 5][..], b"world"].concat();
    upload
        .send_data(Bytes::from(first[..3].to_vec()), false)
        .unwrap();
    upload
        .send_data(Bytes::from(first[3..].to_vec()), false)
        .unwrap();
    upload
        .send_data(Bytes::from(second.clone()), false)
        .unwrap();
    let mut client_trailers = HeaderMap::new();
    client_trailers.insert("x-client-trailer", "sent".parse().unwrap());
    upload.send_trailers(client_trailers).unwrap();
    let response = timeout(WAIT, response).await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let (all, trailers) = timeout(WAIT, read_all(&mut body)).await.unwrap().unwrap();
    assert_eq!(all, [first, second].concat());
    let trailers = trailers.expect("the answer's trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["echo-trailer"], "sent");
}

#[tokio::test]
async fn a_request_bodys_size_follows_its_content_length() {
    let service = |req: Request<RecvBody>| async move {
        let mut body = req.into_body();
        let mut seen = vec![body.size_hint().exact()];
        while let Some(frame) = body.frame().await {
            frame.unwrap();
            seen.push(body.size_hint().exact());
        }
        assert!(body.is_end_stream());
        Response::new(full(format!("{seen:?}")))
    };
    let (addr, _served) = server(service, ServerSettings::default(), std::future::pending()).await;
    let (client, _conn) = client(addr, &h2::client::Builder::new()).await;
    let request = Request::post("http://sinew.test/")
        .header("content-length", "11")
        .body(())
        .unwrap();
    let (response, mut upload) = send(&client, request, false).await;
    upload
        .send_data(Bytes::from_static(b"hello "), false)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    upload
        .send_data(Bytes::from_static(b"world"), true)
        .unwrap();
    let mut body = timeout(WAIT, response).await.unwrap().unwrap().into_body();
    let (all, _) = read_all(&mut body).await.unwrap();
    assert_eq!(
        String::from_utf8(all).unwrap(),
        "[Some(11), Some(5), Some(0)]"
    );
    // Without a body at all: empty from the start.
    let (response, _) = send(&client, get("/"), true).await;
    let mut body = timeout(WAIT, response).await.unwrap().unwrap().into_body();
    assert_eq!(read_all(&mut body).await.unwrap().0, b"[Some(0)]");
}

#[tokio::test]
async fn disagreeing_content_lengths_reset_the_stream_before_the_service() {
    let called = Arc::new(AtomicUsize::new(0));
    let service = {
        let called = called.clone();
        move |_req: Request<RecvBody>| {
            called.fetch_add(1, Ordering::SeqCst);
            async { Response::new(full("answered")) }
        }
    };
    let (addr, _served) = server(service, ServerSettings::default(), std::future::pending()).await;
    let (client, _conn) = client(addr, &h2::client::Builder::new()).await;
    let request = Request::post("http://sinew.test/")
        .header("content-length", "3")
        .header("content-length", "4")
        .body(())
        .unwrap();
    let (response, mut upload) = send(&client, request, false).await;
    let _ = upload.send_data(Bytes::from_static(b"abc"), true);
    let err = timeout(WAIT, response).await.unwrap().unwrap_err();
    assert_eq!(err.reason(), Some(h2::Reason::PROTOCOL_ERROR), "{err}");
    // The connection goes on.
    let (response, _) = send(&client, get("/"), true).await;
    let mut body = timeout(WAIT, response).await.unwrap().unwrap().into_body();
    assert_eq!(read_all(&mut body).await.unwrap().0, b"answered");
    assert_eq!(called.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_client_reset_drops_the_pending_answer() {
    let dropped = Arc::new(AtomicBool::new(false));
    let notify = Arc::new(Notify::new());
    let called = Arc::new(Notify::new());
    let service = {
        let (dropped, notify, called) = (dropped.clone(), notify.clone(), called.clone());
        move |_req: Request<RecvBody>| {
            let guard = DropGuard(dropped.clone(), notify.clone());
            let called = called.clone();
            async move {
                let _guard = guard;
                called.notify_one();
                // An upstream that never answers.
                std::future::pending::<Response<TestBody>>().await
            }
        }
    };
    let (addr, served) = server(service, ServerSettings::default(), std::future::pending()).await;
    let (client, _conn) = client(addr, &h2::client::Builder::new()).await;
    let (_response, mut stream) = send(&client, get("/slow"), true).await;
    timeout(WAIT, called.notified()).await.unwrap();
    assert!(!dropped.load(Ordering::SeqCst));
    stream.send_reset(h2::Reason::CANCEL);
    wait_dropped(&dropped, &notify).await;
    assert!(!served.is_finished(), "the connection outlives its stream");
}

#[tokio::test]
async fn a_client_reset_drops_the_body_being_sent() {
    let dropped = Arc::new(AtomicBool::new(false));
    let notify = Arc::new(Notify::new());
    let service = {
        let (dropped, notify) = (dropped.clone(), notify.clone());
        move |_req: Request<RecvBody>| {
            let guard = DropGuard(dropped.clone(), notify.clone());
            async move {
                // One frame, then an upstream that stalls; the guard lives in the body.
                let first = stream::iter([Ok::<_, io::Error>(Frame::data(Bytes::from_static(
                    b"first",
                )))]);
                let stall =
                    stream::pending().map(move |never: Infallible| -> Result<_, io::Error> {
                        let _ = &guard;
                        match never {}
                    });
                Response::new(StreamBody::new(first.chain(stall)).boxed_unsync())
            }
        }
    };
    let (addr, _served) = server(service, ServerSettings::default(), std::future::pending()).await;
    let (client, _conn) = client(addr, &h2::client::Builder::new()).await;
    let (response, mut stream) = send(&client, get("/stream"), true).await;
    let mut body = timeout(WAIT, response).await.unwrap().unwrap().into_body();
    let first = timeout(WAIT, body.data()).await.unwrap().unwrap().unwrap();
    assert_eq!(first, "first");
    assert!(!dropped.load(Ordering::SeqCst));
    stream.send_reset(h2::Reason::CANCEL);
    wait_dropped(&dropped, &notify).await;
}

#[tokio::test]
async fn a_failing_body_resets_its_stream_with_internal_error() {
    let service = |_req: Request<RecvBody>| async {
        Response::new(frames(vec![
            Ok(Frame::data(Bytes::from_static(b"partial"))),
            Err(io::Error::other("upstream went away")),
        ]))
    };
    let (addr, _served) = server(service, ServerSettings::default(), std::future::pending()).await;
    let (client, _conn) = client(addr, &h2::client::Builder::new()).await;
    let (response, _) = send(&client, get("/"), true).await;
    // The reset may overtake the head and the first frame (both still queued when the
    // body fails): either way the stream ends with INTERNAL_ERROR.
    let err = match timeout(WAIT, response).await.unwrap() {
        Ok(response) => {
            let mut body = response.into_body();
            timeout(WAIT, read_all(&mut body))
                .await
                .unwrap()
                .unwrap_err()
        }
        Err(err) => err,
    };
    assert_eq!(err.reason(), Some(h2::Reason::INTERNAL_ERROR), "{err}");
}

#[tokio::test]
async fn shutdown_sends_goaway_and_the_stream_in_flight_finishes() {
    let called = Arc::new(Notify::new());
    let gate = Arc::new(Notify::new());
    let service = {
        let (called, gate) = (called.clone(), gate.clone());
        move |_req: Request<RecvBody>| {
            let (called, gate) = (called.clone(), gate.clone());
            async move {
                called.notify_one();
                gate.notified().await;
                Response::new(full("finished after GOAWAY"))
            }
        }
    };
    let (shut, shutdown) = oneshot::channel::<()>();
    let (addr, served) = server(service, ServerSettings::default(), async move {
        let _ = shutdown.await;
    })
    .await;
    let (client, conn) = client(addr, &h2::client::Builder::new()).await;
    let (response, _) = send(&client, get("/in-flight"), true).await;
    timeout(WAIT, called.notified()).await.unwrap();
    shut.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!served.is_finished(), "the connection waits for its stream");
    // After GOAWAY the client opens no new stream (h2's client refuses to); one it had
    // opened anyway would not be served (RFC 9113 §6.8) and fail when the connection
    // closes.
    let late = async {
        let mut ready = client.clone().ready().await?;
        Ok::<_, h2::Error>(ready.send_request(get("/late"), true)?.0)
    }
    .await;
    gate.notify_one();
    let mut body = timeout(WAIT, response).await.unwrap().unwrap().into_body();
    assert_eq!(
        read_all(&mut body).await.unwrap().0,
        b"finished after GOAWAY"
    );
    if let Ok(late) = late {
        assert!(timeout(WAIT, late).await.unwrap().is_err());
    }
    timeout(WAIT, served).await.unwrap().unwrap().unwrap();
    timeout(WAIT, conn).await.unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_before_the_preface_closes_at_once() {
    let (shut, shutdown) = oneshot::channel::<()>();
    let service = |_req: Request<RecvBody>| async { Response::new(full("")) };
    let (addr, served) = server(service, ServerSettings::default(), async move {
        let _ = shutdown.await;
    })
    .await;
    let mut silent = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!served.is_finished());
    shut.send(()).unwrap();
    timeout(WAIT, served).await.unwrap().unwrap().unwrap();
    // The server's SETTINGS, then the end of the stream.
    let mut rest = Vec::new();
    let read = tokio::io::AsyncReadExt::read_to_end(&mut silent, &mut rest);
    timeout(WAIT, read).await.unwrap().unwrap();
}

#[tokio::test]
async fn connection_specific_fields_are_removed_and_date_and_length_added() {
    let service = |_req: Request<RecvBody>| async {
        let mut response = Response::new(full("twelve bytes"));
        let headers = response.headers_mut();
        for (name, value) in [
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "only for one connection"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("te", "trailers"),
            ("x-kept", "yes"),
        ] {
            headers.append(name, value.parse().unwrap());
        }
        response
    };
    let (addr, _served) = server(service, ServerSettings::default(), std::future::pending()).await;
    let (client, _conn) = client(addr, &h2::client::Builder::new()).await;
    let (response, _) = send(&client, get("/"), true).await;
    let response = timeout(WAIT, response).await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers();
    for gone in [
        "connection",
        "x-hop",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "te",
    ] {
        assert!(!headers.contains_key(gone), "{gone} reached the client");
    }
    assert_eq!(headers["x-kept"], "yes");
    assert_eq!(headers["content-length"], "12");
    let date = headers["date"].to_str().unwrap();
    assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
    let mut body = response.into_body();
    assert_eq!(read_all(&mut body).await.unwrap().0, b"twelve bytes");
}

#[tokio::test]
async fn a_header_list_over_the_limit_is_refused() {
    let settings = ServerSettings {
        max_header_list_size: 1024,
        ..ServerSettings::default()
    };
    let service = |_req: Request<RecvBody>| async { Response::new(full("small enough")) };
    let (addr, _served) = server(service, settings, std::future::pending()).await;
    let (client, _conn) = client(addr, &h2::client::Builder::new()).await;
    let big = Request::get("http://sinew.test/")
        .header("x-big", "a".repeat(1300))
        .body(())
        .unwrap();
    let (response, _) = send(&client, big, true).await;
    let refused = timeout(WAIT, response).await.unwrap();
    // `h2` answers 431 itself; the service never sees the request.
    assert_eq!(
        refused.unwrap().status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    let (response, _) = send(&client, get("/"), true).await;
    let mut body = timeout(WAIT, response).await.unwrap().unwrap().into_body();
    assert_eq!(read_all(&mut body).await.unwrap().0, b"small enough");
}

#[tokio::test]
async fn a_connection_that_ends_drops_every_streams_future() {
    const STREAMS: usize = 3;
    let dropped = Arc::new(AtomicUsize::new(0));
    let called = Arc::new(AtomicUsize::new(0));
    let all_called = Arc::new(Notify::new());
    struct CountDrop(Arc<AtomicUsize>);
    impl Drop for CountDrop {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let service = {
        let (dropped, called, all_called) = (dropped.clone(), called.clone(), all_called.clone());
        move |_req: Request<RecvBody>| {
            let guard = CountDrop(dropped.clone());
            if called.fetch_add(1, Ordering::SeqCst) + 1 == STREAMS {
                all_called.notify_one();
            }
            async move {
                let _guard = guard;
                std::future::pending::<Response<TestBody>>().await
            }
        }
    };
    let (addr, served) = server(service, ServerSettings::default(), std::future::pending()).await;
    let (client, conn) = client(addr, &h2::client::Builder::new()).await;
    let mut pending = Vec::new();
    for i in 0..STREAMS {
        pending.push(send(&client, get(&format!("/{i}")), true).await);
    }
    timeout(WAIT, all_called.notified()).await.unwrap();
    assert_eq!(dropped.load(Ordering::SeqCst), 0);
    // The client goes away without a word: its socket closes.
    conn.abort();
    let _ = conn.await;
    let _ = timeout(WAIT, served)
        .await
        .expect("the connection's future ends");
    assert_eq!(dropped.load(Ordering::SeqCst), STREAMS);
}
