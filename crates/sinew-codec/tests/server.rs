//! The connection driver against real clients over 127.0.0.1: curl and python3's
//! http.client, and raw sockets for pipelining, malformed heads, timeouts and shutdown.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use sinew_codec::buf::with_worker_pool;
use sinew_codec::http1::server::{serve, RequestBody, ServerSettings};
use sinew_codec::http1::{OnUpgrade, Upgraded};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A response body of one piece, with or without a known length.
struct Reply {
    data: Option<Bytes>,
    known_length: bool,
    /// A length to announce instead of the true one.
    claim: Option<u64>,
}

impl Body for Reply {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(self.data.take().map(|d| Ok(Frame::data(d))))
    }
    fn size_hint(&self) -> SizeHint {
        if let Some(claim) = self.claim {
            return SizeHint::with_exact(claim);
        }
        match (&self.data, self.known_length) {
            (Some(d), true) => SizeHint::with_exact(d.len() as u64),
            (None, _) => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// Echoes `METHOD PATH body-length` and the body; `/stream` answers without a length
/// (chunked), `/empty` with 204.
async fn echo(request: Request<RequestBody<OwnedReadHalf>>) -> Response<Reply> {
    let (parts, mut body) = request.into_parts();
    if parts.uri.path() == "/ignore" {
        // Reads one frame at most, then drops the body with the rest unread.
        let first = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await;
        drop(body);
        let first = first
            .and_then(|f| f.ok()?.into_data().ok())
            .map_or(0, |d| d.len());
        return Response::new(Reply {
            data: Some(Bytes::from(format!("ignored after {}\n", first.min(1)))),
            known_length: true,
            claim: None,
        });
    }
    let mut received = Vec::new();
    let mut trailers = None;
    while let Some(frame) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
    {
        match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => received.extend_from_slice(&data),
                Err(frame) => trailers = frame.into_trailers().ok(),
            },
            Err(e) => {
                return Response::builder()
                    .status(StatusCode::BAD_REQUEST)
                    .body(Reply {
                        data: Some(Bytes::from(e.to_string())),
                        known_length: true,
                        claim: None,
                    })
                    .unwrap()
            }
        }
    }
    let path = parts.uri.path().to_owned();
    if path == "/lie" {
        // Announces 100 bytes, sends 5.
        return Response::new(Reply {
            data: Some(Bytes::from_static(b"short")),
            known_length: true,
            claim: Some(100),
        });
    }
    if path == "/empty" {
        return Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(Reply {
                data: None,
                known_length: true,
                claim: None,
            })
            .unwrap();
    }
    let mut text = format!("{} {} {}\n", parts.method, path, received.len()).into_bytes();
    if let Some(t) = trailers {
        text.extend_from_slice(format!("trailers {}\n", t.len()).as_bytes());
    }
    text.extend_from_slice(&received);
    Response::new(Reply {
        data: Some(Bytes::from(text)),
        known_length: path != "/stream",
        claim: None,
    })
}

struct Server {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    shutdown: watch::Sender<bool>,
}

async fn start(settings: ServerSettings) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let (shutdown, watcher) = watch::channel(false);
    let counted = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            counted.fetch_add(1, Ordering::SeqCst);
            let (read, write) = stream.into_split();
            let mut watcher = watcher.clone();
            // Spawned: the connection future must be Send.
            tokio::spawn(async move {
                let stop = async move {
                    let _ = watcher.wait_for(|stop| *stop).await;
                };
                let _ = serve(read, write, echo, settings, stop).await;
            });
        }
    });
    Server {
        addr,
        connections,
        shutdown,
    }
}

/// Runs curl off the runtime's thread (the server runs on it) with `stdin` piped in.
async fn curl_with(args: &[&str], stdin: Vec<u8>) -> String {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new("curl")
            .args(["-s", "--max-time", "10"])
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("curl is needed for this test: apt-get install -y curl");
        let mut input = child.stdin.take().unwrap();
        input.write_all(&stdin).unwrap();
        drop(input);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "curl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .unwrap()
}

async fn curl(args: &[&str]) -> String {
    curl_with(args, Vec::new()).await
}

#[tokio::test]
async fn curl_requests_are_served_on_one_kept_alive_connection() {
    let server = start(ServerSettings::default()).await;
    let base = format!("http://127.0.0.1:{}", server.addr.port());
    // Three URLs in one curl run share its connection.
    let out = curl(&[
        &format!("{base}/a"),
        &format!("{base}/b"),
        &format!("{base}/stream"),
    ])
    .await;
    assert_eq!(out, "GET /a 0\nGET /b 0\nGET /stream 0\n");
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);

    let out = curl(&["-d", "a=1&b=2", &format!("{base}/form")]).await;
    assert_eq!(out, "POST /form 7\na=1&b=2");

    // A chunked upload with Expect: 100-continue, from stdin.
    let text = curl_with(&["-T", "-", &format!("{base}/upload")], vec![b'z'; 100_000]).await;
    assert!(
        text.starts_with("PUT /upload 100000\n"),
        "{}",
        &text[..text.len().min(80)]
    );

    let head = curl(&["-s", "-I", &format!("{base}/head")]).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("content-length: 13\r\n"),
        "{head}"
    );
}

#[tokio::test]
async fn python_http_client_keeps_the_connection_and_streams_bodies() {
    let server = start(ServerSettings::default()).await;
    let port = server.addr.port();
    let script = format!(
        r#"
import http.client
c = http.client.HTTPConnection("127.0.0.1", {port}, timeout=10)
c.request("GET", "/one"); r = c.getresponse(); print(r.status, r.read().decode().strip())
c.request("POST", "/two", body=b"hello"); r = c.getresponse(); print(r.status, r.read().decode().replace("\n", "|"))
def gen():
    yield b"abc"
    yield b"defg"
c.request("PUT", "/three", body=gen(), encode_chunked=True); r = c.getresponse(); print(r.status, r.read().decode().replace("\n", "|"))
c.request("GET", "/stream"); r = c.getresponse(); print(r.status, r.getheader("Transfer-Encoding"), r.read().decode().strip())
c.request("GET", "/empty"); r = c.getresponse(); print(r.status, repr(r.read()))
c.request("HEAD", "/four"); r = c.getresponse(); print(r.status, r.getheader("Content-Length"), repr(r.read()))
"#
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(["-c", &script])
            .output()
            .expect("python3 is needed for this test: apt-get install -y python3")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200 GET /one 0\n200 POST /two 5|hello\n200 PUT /three 7|abcdefg\n200 chunked GET /stream 0\n204 b''\n200 13 b''\n"
    );
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
}

/// Reads from `stream` until it closes or 3 s pass; whether it closed, and the bytes.
async fn read_to_close(stream: &mut TcpStream) -> (bool, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (false, String::from_utf8_lossy(&got).into_owned()),
            Ok(Ok(0)) | Ok(Err(_)) => return (true, String::from_utf8_lossy(&got).into_owned()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let server = start(ServerSettings::default()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(
            b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n\
POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nxyz\
POST /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n\
GET /4 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let (closed, text) = read_to_close(&mut stream).await;
    assert!(closed, "Connection: close was not honoured: {text}");
    let bodies: Vec<&str> = text
        .split("HTTP/1.1 200 OK\r\n")
        .skip(1)
        .map(|r| r.split("\r\n\r\n").nth(1).unwrap_or(""))
        .collect();
    assert_eq!(
        bodies,
        [
            "GET /1 0\n",
            "POST /2 3\nxyz",
            "POST /3 2\nhi",
            "GET /4 0\n"
        ],
        "{text}"
    );
    assert!(text.contains("connection: close\r\n"), "{text}");
}

#[tokio::test]
async fn malformed_heads_get_their_status_and_a_closed_connection() {
    let server = start(ServerSettings::default()).await;
    for (bytes, status) in [
        (&b"GET / HTTP/1.1\nHost: a\n\n"[..], "400"),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
            "400",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "501",
        ),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", "505"),
    ] {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        let (closed, text) = read_to_close(&mut stream).await;
        assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{text}");
        assert!(closed, "left open after {status}");
    }
    // A bad chunked body is the service's error to answer; the connection then closes.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        .await
        .unwrap();
    let (closed, text) = read_to_close(&mut stream).await;
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    assert!(closed);
}

#[tokio::test]
async fn the_header_timeout_runs_from_a_heads_first_byte() {
    let server = start(ServerSettings {
        header_read_timeout: Some(Duration::from_millis(300)),
        ..ServerSettings::default()
    })
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // Idle for longer than the header timeout: still open.
    tokio::time::sleep(Duration::from_millis(700)).await;
    stream
        .write_all(b"GET /again HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let n = stream.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "an idle connection was cut"
    );
    // Half a head, then silence: cut off.
    stream.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
    let started = tokio::time::Instant::now();
    let (closed, _) = read_to_close(&mut stream).await;
    assert!(closed, "a half head outlived the timeout");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_lets_an_exchange_finish() {
    let server = start(ServerSettings::default()).await;
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    let mut busy = TcpStream::connect(server.addr).await.unwrap();
    // An exchange in flight: its head is in, its body is not.
    busy.write_all(b"POST /late HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nab")
        .await
        .unwrap();
    while server.connections.load(Ordering::SeqCst) < 2 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.shutdown.send(true).unwrap();
    let (closed, text) = read_to_close(&mut idle).await;
    assert!(closed && text.is_empty(), "idle: {closed} {text:?}");
    busy.write_all(b"cd").await.unwrap();
    let (closed, text) = read_to_close(&mut busy).await;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        text.contains("connection: close\r\n") && text.ends_with("POST /late 4\nabcd"),
        "{text}"
    );
    assert!(closed);
}

#[tokio::test]
async fn an_idle_connection_gives_its_buffers_back() {
    // The test runtime is one thread: the server's connection uses this thread's pool.
    let server = start(ServerSettings::default()).await;
    let before = with_worker_pool(|pool| pool.free_count());
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    // Both the read buffer and the response's write buffer are back in the pool.
    while with_worker_pool(|pool| pool.free_count()) < before + 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the buffer did not come back"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The connection is still open and takes the buffer again for the next request.
    stream
        .write_all(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).ends_with("GET /next 0\n"));
}

#[tokio::test]
async fn a_response_body_shorter_than_its_length_ends_the_connection() {
    let server = start(ServerSettings::default()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /lie HTTP/1.1\r\nHost: a\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let (closed, text) = read_to_close(&mut stream).await;
    // Whatever of the response went out (here: nothing, it was still buffered), the
    // connection ends rather than leave the client waiting for 95 more bytes.
    assert!(closed, "{text}");
    assert!(
        !text.contains("GET /next"),
        "a request was answered after a broken body: {text}"
    );
}

/// Requests and damaged requests, as a client might write them on one connection.
fn connection_samples() -> Vec<Vec<u8>> {
    vec![
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
        b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /q HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
        b"PUT /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n3;x\r\nabc\r\n0\r\nT: 1\r\n\r\n".to_vec(),
        b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nHEAD /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".to_vec(),
        b"GET /empty HTTP/1.1\r\nHost: a\r\n\r\nGET /stream HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
        // Bodies the service leaves unread, drained before the next request.
        b"POST /ignore HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789GET /q HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
        b"POST /ignore HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3;e=1\r\nabc\r\n0\r\n\r\nGET /q HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
        // An upgrade the service declines: the connection stays HTTP/1.
        b"GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nGET /q HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
    ]
}

const SERVER_DICTIONARY: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r\n\r\n",
    b" ",
    b":",
    b"0\r\n\r\n",
    b"Content-Length: 3\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Connection: close\r\n",
    b"GET / HTTP/1.1\r\n",
    b"Host: a\r\n",
    b"ffffffffffffffffff",
    b"\0",
    b"Expect: 100-continue\r\n",
];

/// Damaged input never panics the driver, and every connection ends once the client
/// has finished writing: with responses, a refusal, or a close, within 3 s.
#[test]
fn fuzz_server_connection() {
    use sinew_fuzz::proptest::prelude::*;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = runtime.block_on(start(ServerSettings {
        header_read_timeout: Some(Duration::from_millis(500)),
        ..ServerSettings::default()
    }));
    let addr = server.addr;
    let panics_before = sinew_fuzz::panics_so_far();
    let answered = std::cell::Cell::new(0u32);
    let cases = sinew_fuzz::run(
        "fuzz_server_connection",
        10,
        prop_oneof![
            3 => sinew_fuzz::mutated(connection_samples(), SERVER_DICTIONARY),
            1 => sinew_fuzz::token_soup(SERVER_DICTIONARY, 16),
        ],
        |input| {
            let ended: (bool, String) = runtime.block_on(async {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                // The server may answer and close before reading everything.
                let _ = stream.write_all(&input).await;
                let _ = stream.shutdown().await;
                read_to_close(&mut stream).await
            });
            if ended.1.starts_with("HTTP/1.1 ") {
                answered.set(answered.get() + 1);
            }
            prop_assert!(ended.0, "the connection outlived the client by 3 s");
            prop_assert_eq!(sinew_fuzz::panics_so_far(), panics_before, "a panic");
            Ok(())
        },
    );
    // Not a vacuous run: many cases got an answer (a response or a refusal).
    assert!(
        answered.get() > cases / 4,
        "{} of {cases} answered",
        answered.get()
    );
    // Still serving.
    let text = runtime.block_on(async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        read_to_close(&mut stream).await.1
    });
    assert!(text.ends_with("GET /after 0\n"), "{text}");
}

#[tokio::test]
async fn expect_100_continue_gets_100_before_the_body_is_sent() {
    let server = start(ServerSettings::default()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(
            b"POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf))
        .await
        .expect("no 100 Continue")
        .unwrap();
    assert_eq!(&buf[..n], b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"body").await.unwrap();
    let n = stream.read(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(
        text.starts_with("HTTP/1.1 200 OK\r\n") && text.ends_with("POST /e 4\nbody"),
        "{text}"
    );
}

#[tokio::test]
async fn an_http10_client_gets_an_unknown_length_body_delimited_by_the_close() {
    let server = start(ServerSettings::default()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let (closed, text) = read_to_close(&mut stream).await;
    assert!(closed, "{text}");
    let lower = text.to_ascii_lowercase();
    assert!(
        !lower.contains("transfer-encoding") && !lower.contains("content-length"),
        "{text}"
    );
    assert!(
        lower.contains("connection: close\r\n") && text.ends_with("GET /stream 0\n"),
        "{text}"
    );
}

type Switch = OnUpgrade<OwnedReadHalf, OwnedWriteHalf>;

/// How many `OnUpgrade`s of declined requests resolved to an error.
static DECLINED_HANDLES_SETTLED: AtomicUsize = AtomicUsize::new(0);

/// Switches `/chat` upgrades to an upper-casing echo and accepts CONNECT the same way;
/// declines upgrades to `/decline` with 200, then checks that its handle settles.
async fn switcher(mut request: Request<RequestBody<OwnedReadHalf>>) -> Response<Reply> {
    let on_upgrade = request.extensions_mut().remove::<Switch>();
    let empty = || Reply {
        data: None,
        known_length: true,
        claim: None,
    };
    let Some(on_upgrade) = on_upgrade else {
        return Response::new(Reply {
            data: Some(Bytes::from_static(b"plain\n")),
            known_length: true,
            claim: None,
        });
    };
    if request.uri().path() == "/decline" {
        tokio::spawn(async move {
            if on_upgrade.await.is_err() {
                DECLINED_HANDLES_SETTLED.fetch_add(1, Ordering::SeqCst);
            }
        });
        return Response::new(Reply {
            data: Some(Bytes::from_static(b"declined\n")),
            known_length: true,
            claim: None,
        });
    }
    let connect = request.method() == http::Method::CONNECT;
    tokio::spawn(async move {
        let Ok(Upgraded {
            mut read,
            mut write,
            read_buf,
        }) = on_upgrade.await
        else {
            return;
        };
        write
            .write_all(&read_buf.to_ascii_uppercase())
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        loop {
            let n = read.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            write
                .write_all(&buf[..n].to_ascii_uppercase())
                .await
                .unwrap();
        }
    });
    if connect {
        return Response::new(empty());
    }
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        .body(empty())
        .unwrap()
}

async fn start_switcher() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (read, write) = stream.into_split();
            tokio::spawn(async move {
                let never = std::future::pending::<()>();
                let _ = serve(read, write, switcher, ServerSettings::default(), never).await;
            });
        }
    });
    addr
}

/// Reads until `got` ends with `want` (3 s at most).
async fn read_until(stream: &mut TcpStream, got: &mut Vec<u8>, want: &[u8]) {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while !got.ends_with(want) {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("waited for {want:?}, got {:?}", Bytes::from(got.clone())))
            .unwrap();
        assert!(
            n > 0,
            "closed before {want:?}: {:?}",
            Bytes::from(got.clone())
        );
        got.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn a_websocket_upgrade_hands_the_connection_over_with_bytes_sent_early() {
    let addr = start_switcher().await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The first frame's bytes ride in the same write as the head, as a client that
    // does not wait for the 101 sends them: the driver has read them with the head.
    stream
        .write_all(
            b"GET /chat HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\n\r\nearly bytes|",
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    read_until(&mut stream, &mut got, b"EARLY BYTES|").await;
    let text = String::from_utf8_lossy(&got).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{head}"
    );
    assert!(head.contains("upgrade: websocket"), "{head}");
    assert!(head.contains("connection: Upgrade"), "{head}");
    assert!(!head.contains("content-length") && !head.contains("transfer-encoding"));
    assert_eq!(rest, "EARLY BYTES|");
    // Both directions now carry the new protocol's bytes, HTTP-looking or not.
    for message in [&b"second frame"[..], b"GET / HTTP/1.1\r\n\r\n"] {
        stream.write_all(message).await.unwrap();
        let mut echoed = Vec::new();
        read_until(&mut stream, &mut echoed, &message.to_ascii_uppercase()).await;
    }
    stream.shutdown().await.unwrap();
    let (closed, tail) = read_to_close(&mut stream).await;
    assert!(closed && tail.is_empty(), "{tail:?}");
}

#[tokio::test]
async fn connect_with_2xx_becomes_a_tunnel() {
    let addr = start_switcher().await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\nping")
        .await
        .unwrap();
    let mut got = Vec::new();
    read_until(&mut stream, &mut got, b"PING").await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        "HTTP/1.1 200 OK\r\n\r\nPING",
        "a 2xx to CONNECT has no framing field"
    );
}

#[tokio::test]
async fn a_declined_upgrade_keeps_the_connection_http1_and_settles_the_handle() {
    let addr = start_switcher().await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"GET /decline HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\
GET /next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let (closed, text) = read_to_close(&mut stream).await;
    assert!(closed);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    assert!(
        text.contains("declined\n") && text.ends_with("plain\n"),
        "{text}"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(DECLINED_HANDLES_SETTLED.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_unread_body_within_the_bound_is_drained_and_the_connection_goes_on() {
    let server = start(ServerSettings::default()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let mut wire = Vec::new();
    // 40 000 bytes with a length, then 40 000 in small chunks (framing counts too),
    // neither read by the service, then a request that is.
    wire.extend_from_slice(b"POST /ignore HTTP/1.1\r\nHost: a\r\nContent-Length: 40000\r\n\r\n");
    wire.extend_from_slice(&[b'x'; 40_000]);
    wire.extend_from_slice(
        b"POST /ignore HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    for _ in 0..40 {
        wire.extend_from_slice(b"3e8\r\n");
        wire.extend_from_slice(&[b'y'; 1000]);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\nx-trailer: 1\r\n\r\n");
    wire.extend_from_slice(
        b"POST /last HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    );
    let (mut read, mut write) = stream.split();
    let writing = async {
        write.write_all(&wire).await.unwrap();
    };
    let reading = async {
        let mut got = Vec::new();
        read.read_to_end(&mut got).await.unwrap();
        String::from_utf8(got).unwrap()
    };
    let ((), text) = tokio::join!(writing, reading);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 3, "{text}");
    assert_eq!(text.matches("ignored after 1\n").count(), 2, "{text}");
    assert!(text.ends_with("POST /last 3\nabc"), "{text}");
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_unread_body_past_the_bound_or_too_slow_closes_the_connection() {
    let server = start(ServerSettings {
        drain_limit: 16 * 1024,
        drain_timeout: Duration::from_millis(300),
        ..ServerSettings::default()
    })
    .await;
    // Too long: 1 MB announced; the answer comes, then the close, without the driver
    // reading the megabyte.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"POST /ignore HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\nfirst")
        .await
        .unwrap();
    let (closed, text) = read_to_close(&mut stream).await;
    assert!(closed, "{text}");
    assert!(
        text.starts_with("HTTP/1.1 200 OK") && text.ends_with("ignored after 1\n"),
        "{text}"
    );
    assert!(
        text.contains("connection: close\r\n"),
        "the answer says the connection ends: {text}"
    );

    // Too long in chunks: each chunk small, the stream of them endless.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(
            b"POST /ignore HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n",
        )
        .await
        .unwrap();
    let chunk = [b"400\r\n".as_slice(), &[b'z'; 1024], b"\r\n"].concat();
    let mut head = [0u8; 256];
    let n = stream.read(&mut head).await.unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 200 OK"));
    let mut sent = 0;
    let cut = loop {
        match tokio::time::timeout(Duration::from_secs(3), stream.write_all(&chunk)).await {
            Ok(Ok(())) => sent += chunk.len(),
            Ok(Err(_)) => break true,
            Err(_) => break false,
        }
        if sent > 4 * 1024 * 1024 {
            break false;
        }
    };
    assert!(
        cut,
        "the server kept reading an endless body ({sent} bytes)"
    );
    assert!(sent >= 16 * 1024 - 1024, "cut before the bound: {sent}");

    // Too slow: 100 bytes announced, 10 sent, then nothing.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let started = std::time::Instant::now();
    stream
        .write_all(b"POST /ignore HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let (closed, text) = read_to_close(&mut stream).await;
    assert!(closed, "{text}");
    assert!(text.ends_with("ignored after 1\n"), "{text}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
}

#[tokio::test]
async fn the_idle_timeout_closes_a_quiet_connection_between_requests() {
    let server = start(ServerSettings {
        idle_timeout: Some(Duration::from_millis(300)),
        header_read_timeout: Some(Duration::from_secs(5)),
        ..ServerSettings::default()
    })
    .await;
    // Never used.
    let mut quiet = TcpStream::connect(server.addr).await.unwrap();
    let started = std::time::Instant::now();
    let (closed, text) = read_to_close(&mut quiet).await;
    assert!(closed && text.is_empty(), "{text}");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );

    // Used, then quiet: served twice 200 ms apart (each wait shorter than the timeout),
    // then closed 300 ms after the last answer.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    for path in ["/a", "/b"] {
        tokio::time::sleep(Duration::from_millis(200)).await;
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut got = Vec::new();
        read_until(&mut stream, &mut got, format!("GET {path} 0\n").as_bytes()).await;
    }
    let answered = std::time::Instant::now();
    let (closed, text) = read_to_close(&mut stream).await;
    assert!(closed && text.is_empty(), "{text}");
    let waited = answered.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(2),
        "{waited:?}"
    );

    // A head begun is under the head timeout, not the idle one.
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /slow HTTP/1.1\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    slow.write_all(b"Host: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (_, text) = read_to_close(&mut slow).await;
    assert!(text.ends_with("GET /slow 0\n"), "{text}");
}

/// A body fed piece by piece through a channel, ending when the sender drops.
struct Trickle(tokio::sync::mpsc::Receiver<Bytes>);

impl Body for Trickle {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|piece| piece.map(|p| Ok(Frame::data(p))))
    }
}

#[tokio::test]
async fn a_streamed_response_reaches_the_client_piece_by_piece_with_a_date() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (feed, pieces) = tokio::sync::mpsc::channel::<Bytes>(4);
    let pieces = std::sync::Mutex::new(Some(pieces));
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, write) = stream.into_split();
        let service = move |_request: Request<RequestBody<OwnedReadHalf>>| {
            let body = Trickle(pieces.lock().unwrap().take().expect("one request"));
            std::future::ready(Response::new(body))
        };
        let _ = serve(
            read,
            write,
            service,
            ServerSettings::default(),
            std::future::pending(),
        )
        .await;
    });
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /events HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    feed.send(Bytes::from_static(b"first event\n"))
        .await
        .unwrap();
    // The second piece is produced only once the client has the first: a driver that
    // gathered pieces until its buffer filled would never send it.
    let mut got = Vec::new();
    // Chunked: each piece is followed by its CRLF.
    read_until(&mut stream, &mut got, b"first event\n\r\n").await;
    let head = String::from_utf8_lossy(&got).to_lowercase();
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(
        head.contains("\r\ndate: "),
        "a response carries Date: {head}"
    );
    feed.send(Bytes::from_static(b"second event\n"))
        .await
        .unwrap();
    read_until(&mut stream, &mut got, b"second event\n\r\n").await;
    drop(feed);
    read_until(&mut stream, &mut got, b"0\r\n\r\n").await;
}

/// Signals when dropped: the service's answer was given up.
struct DroppedSignal(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for DroppedSignal {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

#[tokio::test]
async fn a_client_that_closes_while_its_answer_is_prepared_cancels_it() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (dropped_tx, dropped) = tokio::sync::oneshot::channel();
    let dropped_tx = std::sync::Mutex::new(Some(dropped_tx));
    let served = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, write) = stream.into_split();
        let service = move |_request: Request<RequestBody<OwnedReadHalf>>| {
            let guard = DroppedSignal(dropped_tx.lock().unwrap().take());
            // An answer that never comes (an upstream that never responds).
            async move {
                let _guard = guard;
                std::future::pending::<Response<Reply>>().await
            }
        };
        serve(
            read,
            write,
            service,
            ServerSettings::default(),
            std::future::pending(),
        )
        .await
    });
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(stream);
    tokio::time::timeout(Duration::from_secs(2), dropped)
        .await
        .expect("the answer was given up when the client left")
        .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(2), served).await;
    assert!(ended.is_ok(), "the connection ended");
}
