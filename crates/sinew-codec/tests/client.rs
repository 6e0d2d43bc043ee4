//! The client exchange driver against real upstreams on 127.0.0.1: python3's
//! http.server (HTTP/1.0, close-delimited; HTTP/1.1, kept alive) and nginx.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use sinew_codec::http1::client::{
    send_request, ClientConn, ClientError, ClientSettings, ResponseBody,
};
use sinew_codec::http1::BodyError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

type Conn = ClientConn<OwnedReadHalf, OwnedWriteHalf>;
/// Where a test's connection comes back to: a one-connection pool.
type Slot = Arc<Mutex<Option<Conn>>>;

/// A request body of pieces, with or without its length announced.
struct Pieces {
    pieces: VecDeque<Bytes>,
    sized: bool,
}

impl Pieces {
    fn empty() -> Self {
        Pieces {
            pieces: VecDeque::new(),
            sized: true,
        }
    }
    fn of(pieces: &[&'static [u8]], sized: bool) -> Self {
        Pieces {
            pieces: pieces.iter().map(|p| Bytes::from_static(p)).collect(),
            sized,
        }
    }
}

impl Body for Pieces {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.pieces.pop_front().map(|p| Ok(Frame::data(p))))
    }
    fn is_end_stream(&self) -> bool {
        self.pieces.is_empty()
    }
    fn size_hint(&self) -> SizeHint {
        if self.sized {
            SizeHint::with_exact(self.pieces.iter().map(|p| p.len() as u64).sum())
        } else {
            SizeHint::default()
        }
    }
}

struct Upstream {
    addr: SocketAddr,
    child: Child,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// python3's http.server speaking `version` ("1.0" or "1.1").
fn python_upstream(version: &str) -> Upstream {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/upstream.py");
    let mut child = Command::new("python3")
        .args([script, version])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 is needed for this test");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().expect("the upstream prints its port");
    Upstream {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        child,
    }
}

async fn connect(addr: SocketAddr) -> Conn {
    let (read, write) = TcpStream::connect(addr).await.unwrap().into_split();
    ClientConn::new(read, write)
}

fn get(path: &str) -> Request<Pieces> {
    request(Method::GET, path, Pieces::empty())
}

fn request(method: Method, path: &str, body: Pieces) -> Request<Pieces> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "upstream.test")
        .body(body)
        .unwrap()
}

/// Sends `request` on `conn`; the connection comes back to `slot` if it can be reused.
async fn exchange(
    conn: Conn,
    request: Request<Pieces>,
    slot: &Slot,
) -> Result<Response<ResponseBody<OwnedReadHalf, OwnedWriteHalf, impl FnOnce(Conn)>>, ClientError> {
    let home = slot.clone();
    let check_in = move |conn: Conn| *home.lock().unwrap() = Some(conn);
    send_request(conn, request, ClientSettings::default(), check_in).await
}

/// The body's data and trailers, or its error.
async fn collect<B: Body<Data = Bytes> + Unpin>(
    mut body: B,
) -> Result<(String, Option<HeaderMap>), B::Error> {
    let mut data = Vec::new();
    let mut trailers = None;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        match frame?.into_data() {
            Ok(d) => data.extend_from_slice(&d),
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    Ok((String::from_utf8_lossy(&data).into_owned(), trailers))
}

fn take(slot: &Slot) -> Option<Conn> {
    slot.lock().unwrap().take()
}

#[tokio::test]
async fn one_kept_alive_connection_carries_many_exchanges_with_python() {
    let upstream = python_upstream("1.1");
    let slot = Slot::default();
    let mut conn = connect(upstream.addr).await;
    let mut seen = Vec::new();
    for (i, (method, path, body)) in [
        (Method::GET, "/hello/a", Pieces::empty()),
        (
            Method::POST,
            "/echo",
            Pieces::of(&[b"sized ", b"body"], true),
        ),
        (
            Method::POST,
            "/echo",
            Pieces::of(&[b"chunked ", b"body", b"!"], false),
        ),
        (Method::GET, "/chunked", Pieces::empty()),
        (Method::HEAD, "/hello", Pieces::empty()),
        (Method::GET, "/interim", Pieces::empty()),
        (Method::GET, "/hello/b", Pieces::empty()),
    ]
    .into_iter()
    .enumerate()
    {
        let response = exchange(conn, request(method, path, body), &slot)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let length = response.headers().get("content-length").cloned();
        let (text, trailers) = collect(response.into_body()).await.unwrap();
        if path == "/chunked" {
            assert_eq!(trailers.unwrap()["x-sum"], "3");
        }
        if path == "/hello" {
            assert_eq!(
                length.unwrap(),
                "1234",
                "HEAD keeps the length and has no body"
            );
        }
        seen.push(text);
        conn = take(&slot)
            .unwrap_or_else(|| panic!("exchange {i} ({path}) did not give the connection back"));
    }
    assert_eq!(
        seen,
        [
            "hello /hello/a #1",
            "length 10 #2|sized body",
            "chunked 13 #3|chunked body!",
            "one,two,three",
            "",
            "final #6",
            "hello /hello/b #7",
        ],
        "one connection: the server counted every request on it"
    );
}

#[tokio::test]
async fn an_http10_upstream_closes_and_its_connection_is_not_reused() {
    let upstream = python_upstream("1.0");
    let slot = Slot::default();
    let response = exchange(connect(upstream.addr).await, get("/hello/x"), &slot)
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_10);
    assert_eq!(
        collect(response.into_body()).await.unwrap().0,
        "hello /hello/x #1"
    );
    assert!(take(&slot).is_none(), "HTTP/1.0 without keep-alive");

    let response = exchange(connect(upstream.addr).await, get("/unsized"), &slot)
        .await
        .unwrap();
    assert!(response.headers().get("content-length").is_none());
    assert_eq!(response.body().size_hint().exact(), None);
    assert_eq!(
        collect(response.into_body()).await.unwrap().0,
        "until the close"
    );
    assert!(take(&slot).is_none());
}

#[tokio::test]
async fn a_body_the_upstream_ends_early_is_an_error_and_the_connection_is_dropped() {
    let upstream = python_upstream("1.1");
    let slot = Slot::default();
    let response = exchange(connect(upstream.addr).await, get("/short"), &slot)
        .await
        .unwrap();
    assert_eq!(response.body().size_hint().exact(), Some(1000));
    let mut body = response.into_body();
    let mut got = Vec::new();
    let error = loop {
        match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            Some(Ok(frame)) => got.extend_from_slice(&frame.into_data().unwrap()),
            Some(Err(e)) => break e,
            None => panic!("a cut body ended cleanly"),
        }
    };
    assert_eq!(got, b"only ten b");
    assert!(matches!(error, BodyError::Truncated), "{error}");
    assert!(take(&slot).is_none());
}

#[tokio::test]
async fn failures_before_and_in_the_head_are_classified() {
    let upstream = python_upstream("1.1");
    let slot = Slot::default();
    let error = exchange(connect(upstream.addr).await, get("/vanish"), &slot)
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::NoResponse(_)), "{error}");
    assert!(error.is_retryable());

    let error = exchange(connect(upstream.addr).await, get("/smuggle"), &slot)
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::Malformed(_)), "{error}");
    assert_eq!(error.status(), StatusCode::BAD_GATEWAY);
    assert!(!error.is_retryable());

    let error = exchange(connect(upstream.addr).await, get("/cut-head"), &slot)
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::HeadCut(_)), "{error}");
    assert_eq!(error.status(), StatusCode::BAD_GATEWAY);

    // A kept-alive connection the upstream has since closed: the retryable case a pool
    // meets most.
    let conn = connect(upstream.addr).await;
    let response = exchange(conn, get("/hello"), &slot).await.unwrap();
    collect(response.into_body()).await.unwrap();
    let mut conn = take(&slot).unwrap();
    assert!(conn.is_usable_now(), "open and quiet");
    drop(upstream);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A pool would see it is gone; sent anyway, the request gets the retryable error.
    assert!(!conn.is_usable_now(), "the upstream closed it");
    let error = exchange(conn, get("/hello"), &slot).await.unwrap_err();
    assert!(error.is_retryable(), "{error}");
}

#[tokio::test]
async fn a_101_hands_the_connection_over_with_the_bytes_after_the_head() {
    let upstream = python_upstream("1.1");
    let slot = Slot::default();
    let request = Request::builder()
        .uri("/upgrade")
        .header("host", "upstream.test")
        .header("connection", "upgrade")
        .header("upgrade", "echo")
        .body(Pieces::empty())
        .unwrap();
    let response = exchange(connect(upstream.addr).await, request, &slot)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(response.headers()["upgrade"], "echo");
    let mut upgraded = response.into_body().into_upgraded().unwrap();
    let mut first = upgraded.read_buf.to_vec();
    while !first.ends_with(b"|") {
        let mut buf = [0u8; 64];
        let n = upgraded.read.read(&mut buf).await.unwrap();
        assert!(n > 0);
        first.extend_from_slice(&buf[..n]);
    }
    assert_eq!(first, b"first words|");
    upgraded.write.write_all(b"now raw bytes\n").await.unwrap();
    let mut echoed = vec![0u8; 14];
    upgraded.read.read_exact(&mut echoed).await.unwrap();
    assert_eq!(echoed, b"NOW RAW BYTES\n");
    assert!(take(&slot).is_none());

    // A 101 nobody asked for is the upstream's error.
    let error = exchange(connect(upstream.addr).await, get("/upgrade"), &slot)
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::UnsolicitedSwitch), "{error}");
}

/// nginx on an ephemeral port, serving `root` (static files, and chunked responses
/// from the sub filter, which drops the length).
struct Nginx {
    addr: SocketAddr,
    child: Child,
    _dir: TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn nginx() -> Nginx {
    assert!(
        Command::new("nginx").arg("-v").output().is_ok(),
        "nginx is not installed: `apt-get install nginx` (scripts/test installs it)"
    );
    let dir = std::env::temp_dir().join(format!("sinew-codec-nginx-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("www")).unwrap();
    let dir = TempDir(dir);
    let big: String = (0..2000).map(|i| format!("line {i:05}\n")).collect();
    std::fs::write(dir.0.join("www/big.txt"), &big).unwrap();
    std::fs::write(dir.0.join("www/small.txt"), "a small file\n").unwrap();
    // An ephemeral port picked by the kernel, then handed to nginx.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = dir.0.display();
    let config = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
error_log {d}/error.log;\nevents {{ worker_connections 64; }}\n\
http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
  keepalive_requests 1000;\n  server {{\n    listen 127.0.0.1:{port};\n    root {d}/www;\n\
    location /chunked/ {{\n      alias {d}/www/;\n      sub_filter 'line' 'LINE';\n\
      sub_filter_once off;\n      sub_filter_types *;\n    }}\n  }}\n}}\n"
    );
    std::fs::write(dir.0.join("nginx.conf"), config).unwrap();
    let child = Command::new("nginx")
        .arg("-p")
        .arg(&dir.0)
        .arg("-c")
        .arg(dir.0.join("nginx.conf"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let nginx = Nginx {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        child,
        _dir: dir,
    };
    for _ in 0..100 {
        if TcpStream::connect(nginx.addr).await.is_ok() {
            return nginx;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("nginx did not listen on {}", nginx.addr);
}

#[tokio::test]
async fn nginx_static_and_chunked_responses_on_one_connection() {
    let nginx = nginx().await;
    let big: String = (0..2000).map(|i| format!("line {i:05}\n")).collect();
    let slot = Slot::default();
    let mut conn = connect(nginx.addr).await;
    for round in 0..3 {
        let response = exchange(conn, get("/big.txt"), &slot).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.body().size_hint().exact(), Some(big.len() as u64));
        assert_eq!(collect(response.into_body()).await.unwrap().0, big);
        conn = take(&slot).expect("nginx keeps the connection");

        let response = exchange(conn, get("/chunked/big.txt"), &slot)
            .await
            .unwrap();
        assert_eq!(
            response.headers()["transfer-encoding"],
            "chunked",
            "round {round}"
        );
        assert_eq!(
            collect(response.into_body()).await.unwrap().0,
            big.replace("line", "LINE")
        );
        conn = take(&slot).expect("a chunked body that ended cleanly");

        let response = exchange(conn, get("/missing"), &slot).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        collect(response.into_body()).await.unwrap();
        conn = take(&slot).unwrap();

        let response = exchange(
            conn,
            request(Method::HEAD, "/small.txt", Pieces::empty()),
            &slot,
        )
        .await
        .unwrap();
        assert_eq!(response.headers()["content-length"], "13");
        assert_eq!(collect(response.into_body()).await.unwrap().0, "");
        conn = take(&slot).unwrap();
    }
    // A response body dropped half read closes the connection instead of reusing it.
    let response = exchange(conn, get("/big.txt"), &slot).await.unwrap();
    let mut body = response.into_body();
    let first = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
    assert!(first.unwrap().is_ok());
    drop(body);
    assert!(take(&slot).is_none());
}

fn response_samples() -> Vec<Vec<u8>> {
    vec![
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello".to_vec(),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nwiki\r\n5\r\npedia\r\n0\r\nX-T: 1\r\n\r\n".to_vec(),
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi".to_vec(),
        b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\nuntil the close".to_vec(),
        b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".to_vec(),
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nETag: \"x\"\r\n\r\n".to_vec(),
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\nraw".to_vec(),
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
    ]
}

const CLIENT_DICTIONARY: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r\n\r\n",
    b" ",
    b":",
    b"HTTP/1.1 ",
    b"HTTP/1.0 ",
    b"100 Continue\r\n\r\n",
    b"0\r\n\r\n",
    b"Content-Length: 3\r\n",
    b"Content-Length: 99999999999999999999\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip, chunked\r\n",
    b"Connection: close\r\n",
    b"ffffffffffffffff\r\n",
    b"\0",
];

/// Upstream responses, mutated and random, to the client driver over a real socket:
/// never a panic or a hang; a head the codec's response parser refuses is `Malformed`;
/// a head it reads with a length is followed by exactly those bytes.
#[test]
fn fuzz_client_exchange() {
    use sinew_fuzz::proptest::prelude::*;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let answer: Arc<Mutex<Vec<u8>>> = Arc::default();
    let addr = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answer = answer.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let answer = answer.lock().unwrap().clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.ends_with(b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = stream.write_all(&answer).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        addr
    });
    let panics_before = sinew_fuzz::panics_so_far();
    // (whole bodies, refused heads, bodies compared byte for byte)
    let tally = std::cell::Cell::new((0u32, 0u32, 0u32));
    let cases = sinew_fuzz::run(
        "fuzz_client_exchange",
        10,
        prop_oneof![
            // Whole samples too: most mutations break the head, and the body paths
            // need heads that pass.
            1 => (0..response_samples().len()).prop_map(|i| response_samples()[i].clone()),
            3 => sinew_fuzz::mutated(response_samples(), CLIENT_DICTIONARY),
            1 => sinew_fuzz::token_soup(CLIENT_DICTIONARY, 16),
        ],
        |input| {
            *answer.lock().unwrap() = input.clone();
            let outcome = runtime.block_on(async {
                let slot = Slot::default();
                let exchanged = async {
                    let conn = connect(addr).await;
                    match exchange(conn, get("/"), &slot).await {
                        Ok(response) => Ok(collect(response.into_body()).await.map(|b| b.0)),
                        Err(e) => Err(e),
                    }
                };
                tokio::time::timeout(Duration::from_secs(3), exchanged).await
            });
            let Ok(outcome) = outcome else {
                return Err(TestCaseError::fail("the exchange hung"));
            };
            prop_assert_eq!(sinew_fuzz::panics_so_far(), panics_before, "a panic");
            let (mut whole, mut refused, mut compared) = tally.get();
            whole += u32::from(matches!(outcome, Ok(Ok(_))));
            refused += u32::from(matches!(outcome, Err(ClientError::Malformed(_))));
            let limits = sinew_codec::http1::HeadLimits::default();
            match sinew_codec::http1::parse_response(&input, &Method::GET, &limits) {
                Err(e) => prop_assert!(
                    matches!(outcome, Err(ClientError::Malformed(_))),
                    "the parser refuses it ({e:?}) but the driver gave {outcome:?}"
                ),
                Ok(Some((head, end))) if !head.is_interim() && !head.upgraded => {
                    if let sinew_codec::http1::BodyFraming::Length(n) = head.framing {
                        let rest = &input[end..];
                        if rest.len() as u64 >= n {
                            let want = String::from_utf8_lossy(&rest[..n as usize]);
                            if let Ok(Ok(got)) = &outcome {
                                compared += 1;
                                prop_assert_eq!(got, &want);
                            } else if let Ok(Err(e)) = &outcome {
                                return Err(TestCaseError::fail(format!("body: {e}")));
                            }
                        }
                    }
                }
                _ => {}
            }
            tally.set((whole, refused, compared));
            Ok(())
        },
    );
    // Not a vacuous run: every kind of outcome came up.
    let (whole, refused, compared) = tally.get();
    eprintln!("{cases} cases: {whole} whole bodies, {refused} refused, {compared} compared");
    assert!(whole > cases / 10 && refused > cases / 10 && compared > cases / 50);
}

/// A body that sends one piece, then either fails or never sends anything again.
struct Stalls {
    first: Option<Bytes>,
    fails: bool,
}

impl Body for Stalls {
    type Data = Bytes;
    type Error = &'static str;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, &'static str>>> {
        match self.first.take() {
            Some(first) => Poll::Ready(Some(Ok(Frame::data(first)))),
            None if self.fails => Poll::Ready(Some(Err("the downstream went away"))),
            None => Poll::Pending,
        }
    }
}

#[tokio::test]
async fn a_response_before_the_request_body_ends_is_returned_and_the_connection_dropped() {
    let upstream = python_upstream("1.1");
    let slot = Slot::default();
    let check_in = {
        let home = slot.clone();
        move |conn: Conn| *home.lock().unwrap() = Some(conn)
    };
    let upload = Request::post("/early")
        .header("host", "upstream.test")
        .body(Stalls {
            first: Some(Bytes::from_static(b"the first part of an upload")),
            fails: false,
        })
        .unwrap();
    let conn = connect(upstream.addr).await;
    let response = tokio::time::timeout(
        Duration::from_secs(3),
        send_request(conn, upload, ClientSettings::default(), check_in),
    )
    .await
    .expect("the response is returned while the body still stalls")
    .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(collect(response.into_body()).await.unwrap().0, "too large");
    assert!(take(&slot).is_none(), "half a request body was sent");

    // The request body's own failure is not the upstream's.
    let upload = Request::post("/echo")
        .header("host", "upstream.test")
        .body(Stalls {
            first: Some(Bytes::from_static(b"part")),
            fails: true,
        })
        .unwrap();
    let conn = connect(upstream.addr).await;
    let error = send_request(conn, upload, ClientSettings::default(), drop::<Conn>)
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::RequestBody(_)), "{error}");
    assert!(!error.is_retryable());
}

/// The exchange, its body and the idle connection can move between a worker's tasks.
#[test]
fn the_exchange_and_its_body_are_send() {
    fn send<T: Send>(_: &T) {}
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let conn = connect(listener.local_addr().unwrap()).await;
        send(&conn);
        let slot = Slot::default();
        let home = slot.clone();
        let exchange = send_request(conn, get("/"), ClientSettings::default(), move |c| {
            *home.lock().unwrap() = Some(c)
        });
        send(&exchange);
    });
}

/// A proxy reads response after response on pooled connections: each one's read buffer
/// must go back to the worker's pool when its body ends, not be lost to a piece of the
/// body still alive (before, the last piece was split off the buffer, so every response
/// cost a new one).
#[tokio::test]
async fn a_read_buffer_returns_to_the_pool_when_a_small_body_ends() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = vec![0u8; 1024];
        for _ in 0..3 {
            let _ = stream.read(&mut head).await.unwrap();
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
                .await
                .unwrap();
        }
    });
    let slot = Slot::default();
    let mut conn = connect(addr).await;
    for round in 0..3 {
        let response = exchange(conn, get("/"), &slot).await.unwrap();
        // The head's fields share the buffer; a server writing the response lets them
        // go once the head is encoded, before the body.
        let (parts, body) = response.into_parts();
        drop(parts);
        let (text, _) = collect(body).await.unwrap();
        assert_eq!(text, "hello");
        conn = take(&slot).expect("the connection came back");
        // Two: the buffer the request head was written from, and the read buffer.
        let free = sinew_codec::buf::with_worker_pool(|pool| pool.free_count());
        assert_eq!(free, 2, "round {round}: both buffers are back in the pool");
    }
}
