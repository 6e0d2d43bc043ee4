//! Malformed and smuggling-shaped input, sent as raw bytes. RFC 9112 says such a request
//! gets 400 and a closed connection (its framing cannot be trusted, so nothing after it on
//! the connection can be either); bad HTTP/2 gets the connection closed. None of it may
//! crash or wedge the proxy.

use std::net::SocketAddr;
use std::time::Duration;

use sinew_integration::{OneRoute, TestClient, TestProxy, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a case may take to be answered and closed.
const DEADLINE: Duration = Duration::from_secs(3);

struct Harness {
    proxy: TestProxy,
    up: Upstream,
}

async fn harness() -> Harness {
    let up = Upstream::start("alpha").await;
    let (proxy, _) = OneRoute::to(&[up.addr]).start().await;
    Harness { proxy, up }
}

/// What came back for some bytes.
#[derive(Debug)]
struct Exchange {
    response: Vec<u8>,
    /// The proxy closed the connection (EOF or reset) within the deadline.
    closed: bool,
}

impl Exchange {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.response).into_owned()
    }
}

/// Writes `bytes` (keeping our write side open, so only the proxy can close), then reads
/// until the proxy closes or the deadline passes.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Exchange {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // The proxy may answer and close before it has read everything: that is fine.
    let _ = stream.write_all(bytes).await;
    let mut response = Vec::new();
    let until = tokio::time::Instant::now() + DEADLINE;
    let mut buf = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout_at(until, stream.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0)) => break true,
            Ok(Ok(n)) => response.extend_from_slice(&buf[..n]),
            Ok(Err(_)) => break true,
        }
    };
    Exchange { response, closed }
}

/// The case must get `HTTP/1.1 400` and a closed connection; then the proxy must still
/// serve a normal request. A bad head must not reach the upstream at all; a bad chunked
/// body may have started upstream (bodies stream), and is cut off there.
async fn assert_rejected(bytes: &[u8]) {
    assert_rejected_as(bytes, Bad::Head).await;
}

#[derive(PartialEq)]
enum Bad {
    Head,
    Body,
}

async fn assert_rejected_as(bytes: &[u8], bad: Bad) {
    let h = harness().await;
    let addr = h.proxy.addr("web").await;
    let got = exchange(addr, bytes).await;
    assert!(
        got.response.starts_with(b"HTTP/1.1 400"),
        "expected 400 for {:?}, got {:?}",
        String::from_utf8_lossy(bytes),
        got.text()
    );
    assert!(
        got.closed,
        "connection left open after 400 for {:?}; response {:?}",
        String::from_utf8_lossy(bytes),
        got.text()
    );
    if bad == Bad::Head {
        assert_eq!(
            h.up.requests(),
            0,
            "a malformed request reached the upstream: {:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    assert_alive(addr).await;
}

async fn assert_alive(addr: SocketAddr) {
    let reply = TestClient::http1().get(addr, "/", &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "alpha\n");
}

const CL_AND_TE: &[u8] = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\
Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
const TWO_DIFFERENT_CL: &[u8] =
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!";
const TWO_EQUAL_CL: &[u8] =
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello";
const OBS_FOLD: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n";
const BARE_LF: &[u8] = b"GET / HTTP/1.1\nHost: a\n\n";
const BAD_CHUNK_SIZE: &[u8] =
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n";
const CHUNK_SIZE_OVERFLOW: &[u8] =
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
ffffffffffffffffff\r\nhello\r\n0\r\n\r\n";
const SPACE_BEFORE_COLON: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\nX-Spaced : value\r\n\r\n";
const BAD_HEADER_NAME: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\nX(Bad)Name: value\r\n\r\n";
const GARBAGE_REQUEST_LINE: &[u8] = b"\x16\x03\x01 this is not http at all\r\n\r\n";
const TE_NOT_CHUNKED: &[u8] = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nhello";

#[tokio::test]
async fn content_length_with_transfer_encoding_is_400_and_closed() {
    assert_rejected(CL_AND_TE).await;
}

#[tokio::test]
async fn two_different_content_lengths_are_400_and_closed() {
    assert_rejected(TWO_DIFFERENT_CL).await;
}

#[tokio::test]
async fn two_equal_content_lengths_are_400_and_closed() {
    assert_rejected(TWO_EQUAL_CL).await;
}

#[tokio::test]
async fn obs_fold_is_400_and_closed() {
    assert_rejected(OBS_FOLD).await;
}

#[tokio::test]
async fn bare_lf_line_endings_are_400_and_closed() {
    assert_rejected(BARE_LF).await;
}

#[tokio::test]
async fn invalid_chunk_size_is_400_and_closed() {
    assert_rejected_as(BAD_CHUNK_SIZE, Bad::Body).await;
}

#[tokio::test]
async fn overflowing_chunk_size_is_400_and_closed() {
    assert_rejected_as(CHUNK_SIZE_OVERFLOW, Bad::Body).await;
}

#[tokio::test]
async fn space_before_header_colon_is_400_and_closed() {
    assert_rejected(SPACE_BEFORE_COLON).await;
}

#[tokio::test]
async fn invalid_header_name_characters_are_400_and_closed() {
    assert_rejected(BAD_HEADER_NAME).await;
}

#[tokio::test]
async fn garbage_request_line_is_400_and_closed() {
    assert_rejected(GARBAGE_REQUEST_LINE).await;
}

#[tokio::test]
async fn transfer_encoding_not_ending_in_chunked_is_400_and_closed() {
    assert_rejected(TE_NOT_CHUNKED).await;
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HTTP/2 inputs that are connection errors (RFC 9113): each must end with GOAWAY and a
/// closed connection.
fn bad_http2_inputs() -> Vec<(&'static str, Vec<u8>)> {
    let settings = frame(0x4, 0, 0, &[]);
    let with = |bad: Vec<u8>| [PREFACE, &settings, &bad].concat();
    vec![
        // SETTINGS whose length is not a multiple of 6: FRAME_SIZE_ERROR.
        ("settings of bad length", with(frame(0x4, 0, 0, &[0, 1, 0]))),
        // HEADERS on stream 0: PROTOCOL_ERROR.
        ("headers on stream 0", with(frame(0x1, 0x4, 0, &[0x82]))),
        // A header block that is not HPACK: COMPRESSION_ERROR.
        (
            "garbage header block",
            with(frame(0x1, 0x5, 1, &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff])),
        ),
        // A client-initiated even stream id: PROTOCOL_ERROR.
        (
            "even stream id",
            with(frame(0x1, 0x5, 2, &[0x82, 0x86, 0x84])),
        ),
        // Random bytes where frames should be.
        (
            "random bytes after the preface",
            [PREFACE, &[0xde, 0xad, 0xbe, 0xef].repeat(64)[..]].concat(),
        ),
    ]
}

/// Frame types in a server's byte stream, in order (as far as it parses).
fn frame_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let len =
            (usize::from(bytes[0]) << 16) | (usize::from(bytes[1]) << 8) | usize::from(bytes[2]);
        types.push(bytes[3]);
        bytes = &bytes[(9 + len).min(bytes.len())..];
    }
    types
}

#[tokio::test]
async fn bad_http2_frames_get_goaway_and_a_closed_connection() {
    let h = harness().await;
    let addr = h.proxy.addr("web").await;
    for (name, bytes) in bad_http2_inputs() {
        let got = exchange(addr, &bytes).await;
        assert!(
            got.closed,
            "{name}: connection left open: {:?}",
            got.response
        );
        assert!(
            frame_types(&got.response).contains(&0x7),
            "{name}: no GOAWAY among the frames {:?}",
            frame_types(&got.response)
        );
    }
    assert_eq!(h.up.requests(), 0);
    assert_alive(addr).await;
    // HTTP/2 still works too.
    let reply = TestClient::http2().get(addr, "/", &[]).await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn proxy_survives_every_malformed_input_at_once() {
    let h = harness().await;
    let addr = h.proxy.addr("web").await;
    let mut inputs: Vec<Vec<u8>> = [
        CL_AND_TE,
        TWO_DIFFERENT_CL,
        TWO_EQUAL_CL,
        OBS_FOLD,
        BARE_LF,
        BAD_CHUNK_SIZE,
        CHUNK_SIZE_OVERFLOW,
        SPACE_BEFORE_COLON,
        BAD_HEADER_NAME,
        GARBAGE_REQUEST_LINE,
        TE_NOT_CHUNKED,
    ]
    .iter()
    .map(|b| b.to_vec())
    .collect();
    inputs.extend(bad_http2_inputs().into_iter().map(|(_, b)| b));
    // Half a request and then silence; a lone preface; nothing at all.
    inputs.push(b"GET / HTTP/1.1\r\nHost: a\r\nX-Half".to_vec());
    inputs.push(PREFACE.to_vec());
    inputs.push(Vec::new());
    let tasks: Vec<_> = inputs
        .into_iter()
        .map(|bytes| tokio::spawn(async move { exchange(addr, &bytes).await }))
        .collect();
    // Meanwhile, normal requests keep being served.
    for _ in 0..20 {
        assert_alive(addr).await;
    }
    for t in tasks {
        t.await.expect("exchange task");
    }
    assert_alive(addr).await;
    let reply = TestClient::http2().get(addr, "/", &[]).await;
    assert_eq!(reply.status, 200);
}

/// A request that asks to upgrade but is answered without a switch (no 101) leaves the
/// connection HTTP/1.1: the requests after it are checked like any others.
#[tokio::test]
async fn an_upgrade_request_that_did_not_switch_leaves_the_guard_on() {
    let h = harness().await;
    let addr = h.proxy.addr("web").await;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(
            b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        )
        .await
        .unwrap();
    let (head, body) = sinew_integration::raw::read_response(&mut stream, DEADLINE).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "alpha\n");
    // The same connection, now with a smuggling-shaped head.
    stream.write_all(TWO_EQUAL_CL).await.unwrap();
    let (closed, rest) = sinew_integration::raw::read_to_close(&mut stream, DEADLINE).await;
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.starts_with("HTTP/1.1 400"), "{rest}");
    assert!(closed, "connection left open after 400: {rest}");
    assert_eq!(
        h.up.requests(),
        1,
        "the second request reached the upstream"
    );
}

/// ... and the request head timeout still applies to them.
#[tokio::test]
async fn an_upgrade_request_that_did_not_switch_keeps_the_head_timeout() {
    let up = Upstream::start("alpha").await;
    let (proxy, _) = OneRoute::to(&[up.addr])
        .http("      request_headers_timeout: 300ms")
        .start()
        .await;
    let addr = proxy.addr("web").await;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = sinew_integration::raw::read_response(&mut stream, DEADLINE).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Half a head, then silence: cut off at the head timeout.
    stream.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
    let started = tokio::time::Instant::now();
    let (closed, _) = sinew_integration::raw::read_to_close(&mut stream, DEADLINE).await;
    assert!(closed, "a half head outlived request_headers_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}
