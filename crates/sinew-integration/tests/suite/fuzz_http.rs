//! Fuzzing the proxy's wire parsers over real sockets: random and mutated HTTP/1 requests
//! (heads and chunked bodies), random and mutated HTTP/2 frame sequences after a valid
//! preface, and malformed upstream responses (heads and chunked bodies) from a raw
//! upstream. Each case is one connection to a real listener with a real upstream behind
//! it; we write the bytes, half-close, and read.
//!
//! The properties, for every case: the proxy answers with a well-formed status line (or
//! HTTP/2 frames beginning with its SETTINGS) or closes; it does so within a deadline
//! once the client has finished sending (never wedges); nothing in the process panics
//! (a panicking connection task would otherwise pass unseen, its connection just
//! dropped); and a good request afterwards is still served. Case counts:
//! `SINEW_FUZZ_CASES` (docs/fuzzing.md).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sinew_fuzz::proptest::prelude::*;
use sinew_integration::{raw, OneRoute, TestProxy, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

/// How long the proxy has to answer or close once the client has sent everything.
const DEADLINE: Duration = Duration::from_secs(3);
/// A socket case costs about this many in-process parser cases.
const SOCKET_COST: u32 = 10;
/// A good request is sent after every this many cases (and after the last).
const HEALTH_EVERY: u32 = 16;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// How long the proxy's answer may pause before the client takes it as complete.
const QUIET: Duration = Duration::from_millis(50);

/// Sends `bytes`, reads what comes back until the proxy closes or pauses, then
/// half-closes and reads until the proxy closes. `None` when it does not close within
/// the deadline of the client finishing.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("connect to the proxy");
    // The proxy may answer and close before reading everything; that is its right.
    let _ = tokio::time::timeout(DEADLINE, stream.write_all(bytes)).await;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // Half-closing at once would make the proxy drop requests it has not answered yet.
    loop {
        match tokio::time::timeout(QUIET, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
        if got.len() > 1 << 20 {
            break;
        }
    }
    let _ = stream.shutdown().await;
    let (closed, rest) = raw::read_to_close(&mut stream, DEADLINE).await;
    got.extend_from_slice(&rest);
    closed.then_some(got)
}

/// `HTTP/1.x NNN` with a status the proxy may send.
fn is_status_line(response: &[u8]) -> bool {
    let Some(rest) = response
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| response.strip_prefix(b"HTTP/1.0 "))
    else {
        return false;
    };
    rest.len() >= 4
        && rest[..3].iter().all(u8::is_ascii_digit)
        && (b'1'..=b'5').contains(&rest[0])
        && (rest[3] == b' ' || rest[3] == b'\r')
}

/// A plain request gets the upstream's 200.
async fn still_serves(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return false;
    };
    let request = b"GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    if stream.write_all(request).await.is_err() {
        return false;
    }
    let (_, response) = raw::read_to_close(&mut stream, DEADLINE).await;
    response.starts_with(b"HTTP/1.1 200")
}

/// Checks one case's outcome: no panic since `panics_before`, and every `HEALTH_EVERY`
/// cases a good request still served.
fn after_case(
    rt: &Runtime,
    addr: SocketAddr,
    panics_before: usize,
    counter: &Mutex<u32>,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        sinew_fuzz::panics_so_far(),
        panics_before,
        "something in the proxy panicked"
    );
    let mut n = counter.lock().unwrap();
    *n += 1;
    if n.is_multiple_of(HEALTH_EVERY) {
        prop_assert!(
            rt.block_on(still_serves(addr)),
            "a good request is no longer served"
        );
    }
    Ok(())
}

/// Requests as clients write them, one of each framing the proxy reads.
const REQUEST_SAMPLES: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET http://a/x?y=1 HTTP/1.1\r\nHost: a\r\nUser-Agent: fuzz\r\nAccept: */*\r\n\r\n",
    b"POST /submit HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nx-test-echo-body: 1\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    b"PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
];

const HTTP1_DICTIONARY: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r\n\r\n",
    b": ",
    b" ",
    b"\t",
    b"\x00",
    b"\x7f",
    b"\xff",
    b"HTTP/1.1",
    b"HTTP/2.0",
    b"Host: b\r\n",
    b"Content-Length: ",
    b"Content-Length: 0\r\n",
    b"Content-Length: -1\r\n",
    b"Content-Length: 18446744073709551616\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip\r\n",
    b"Connection: close\r\n",
    b"Connection: keep-alive, Upgrade\r\n",
    b"Upgrade: h2c\r\n",
    b"TE: trailers\r\n",
    b"0\r\n\r\n",
    b"ffffffffffffffff\r\n",
    b"-1\r\n",
    b";",
    b"%00",
    b"/../",
    b"http://",
    b"[::1]",
    b":443",
];

#[test]
fn fuzz_http1_requests() {
    let rt = runtime();
    let (up, proxy, addr) = rt.block_on(async {
        let up = Upstream::start("alpha").await;
        let (proxy, addr) = OneRoute::to(&[up.addr]).start().await;
        (up, proxy, addr)
    });
    assert!(rt.block_on(still_serves(addr)), "serves before fuzzing");
    let samples = REQUEST_SAMPLES.iter().map(|s| s.to_vec()).collect();
    let counter = Mutex::new(0);
    let strategy = prop_oneof![
        4 => sinew_fuzz::mutated(samples, HTTP1_DICTIONARY),
        1 => sinew_fuzz::token_soup(HTTP1_DICTIONARY, 24),
    ];
    sinew_fuzz::run("fuzz_http1_requests", SOCKET_COST, strategy, |bytes| {
        let panics_before = sinew_fuzz::panics_so_far();
        let response = rt.block_on(exchange(addr, &bytes));
        prop_assert!(response.is_some(), "the proxy neither answered nor closed");
        let response = response.unwrap();
        prop_assert!(
            response.is_empty() || is_status_line(&response),
            "not a status line: {:?}",
            String::from_utf8_lossy(&response[..response.len().min(200)])
        );
        after_case(&rt, addr, panics_before, &counter)
    });
    assert!(rt.block_on(still_serves(addr)), "serves after fuzzing");
    drop((proxy, up));
}

/// A raw upstream that answers every request it reads with the bytes in `reply`, then
/// closes the connection.
async fn raw_upstream(reply: Arc<Mutex<Vec<u8>>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let reply = reply.clone();
            tokio::spawn(async move {
                // Read the request head (bounded), then answer.
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65_536 {
                    match tokio::time::timeout(DEADLINE, stream.read(&mut buf)).await {
                        Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                let bytes = reply.lock().unwrap().clone();
                let _ = stream.write_all(&bytes).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

/// Responses as servers write them.
const RESPONSE_SAMPLES: &[&[u8]] = &[
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nGrpc-Status: 0\r\n\r\n",
    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\nbody until close",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n",
    b"HTTP/1.1 301 Moved\r\nLocation: /x\r\nSet-Cookie: a=b\r\nSet-Cookie: c=d\r\nContent-Length: 2\r\n\r\nok",
];

#[test]
fn fuzz_http1_upstream_responses() {
    let rt = runtime();
    let reply = Arc::new(Mutex::new(RESPONSE_SAMPLES[0].to_vec()));
    let (good, proxy, addr) = rt.block_on(async {
        let good = Upstream::start("good").await;
        let fuzzed = raw_upstream(reply.clone()).await;
        // Two routes: /health goes to a good upstream, everything else to the raw one.
        let yaml = format!(
            "
listeners:
  - name: web
    address: 127.0.0.1:0
    http:
      virtual_hosts:
        - name: all
          domains: ['*']
          routes:
            - match: {{prefix: /health}}
              cluster: good
            - match: {{prefix: /}}
              cluster: fuzzed
              timeout: 2s
clusters:
  - name: good
    endpoints: [{{address: {good}}}]
  - name: fuzzed
    endpoints: [{{address: {fuzzed}}}]
",
            good = good.addr,
        );
        let proxy = TestProxy::start(&yaml).await;
        let addr = proxy.addr("web").await;
        (good, proxy, addr)
    });
    assert!(rt.block_on(still_serves(addr)), "serves before fuzzing");
    let samples = RESPONSE_SAMPLES.iter().map(|s| s.to_vec()).collect();
    let counter = Mutex::new(0);
    let strategy = prop_oneof![
        4 => sinew_fuzz::mutated(samples, HTTP1_DICTIONARY),
        1 => sinew_fuzz::token_soup(HTTP1_DICTIONARY, 24),
    ];
    sinew_fuzz::run(
        "fuzz_http1_upstream_responses",
        SOCKET_COST,
        strategy,
        |bytes| {
            let panics_before = sinew_fuzz::panics_so_far();
            *reply.lock().unwrap() = bytes;
            let request = b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
            let response = rt.block_on(exchange(addr, request));
            prop_assert!(response.is_some(), "the proxy neither answered nor closed");
            let response = response.unwrap();
            prop_assert!(
                response.is_empty() || is_status_line(&response),
                "not a status line: {:?}",
                String::from_utf8_lossy(&response[..response.len().min(200)])
            );
            after_case(&rt, addr, panics_before, &counter)
        },
    );
    assert!(rt.block_on(still_serves(addr)), "serves after fuzzing");
    drop((proxy, good));
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// `GET /` for authority `a`, HPACK-encoded from the static table.
const GET_BLOCK: &[u8] = &[0x82, 0x86, 0x84, 0x41, 0x01, b'a'];
/// `POST /` with a content-length of 5.
const POST_BLOCK: &[u8] = &[0x83, 0x86, 0x84, 0x41, 0x01, b'a', 0x5c, 0x01, b'5'];

/// Frame sequences a client sends after the preface.
fn h2_samples() -> Vec<Vec<u8>> {
    let settings = frame(4, 0, 0, &[0, 3, 0, 0, 0, 100, 0, 4, 0, 1, 0, 0]);
    let settings_ack = frame(4, 1, 0, &[]);
    let get = frame(1, 0x5, 1, GET_BLOCK);
    let post = frame(1, 0x4, 3, POST_BLOCK);
    let data = frame(0, 0x1, 3, b"hello");
    let padded = frame(0, 0x9, 3, &[2, b'h', b'i', 0, 0]);
    let window = frame(8, 0, 0, &[0, 0, 0xff, 0xff]);
    let ping = frame(6, 0, 0, &[1, 2, 3, 4, 5, 6, 7, 8]);
    let rst = frame(3, 0, 1, &[0, 0, 0, 8]);
    let priority = frame(2, 0, 5, &[0, 0, 0, 1, 16]);
    let continued = [
        frame(1, 0x1, 5, &GET_BLOCK[..3]),
        frame(9, 0x4, 5, &GET_BLOCK[3..]),
    ]
    .concat();
    let goaway = frame(7, 0, 0, &[0, 0, 0, 0, 0, 0, 0, 0]);
    vec![
        [settings.clone(), get.clone()].concat(),
        [
            settings.clone(),
            settings_ack.clone(),
            post,
            data,
            window.clone(),
        ]
        .concat(),
        [settings.clone(), ping, get.clone(), rst].concat(),
        [settings.clone(), priority, continued, goaway].concat(),
        [settings, window, padded, get].concat(),
    ]
}

const H2_DICTIONARY: &[&[u8]] = &[
    &[0, 0, 0],
    &[0xff, 0xff, 0xff],
    &[0, 0, 0, 1],
    &[0x7f, 0xff, 0xff, 0xff],
    &[0x80, 0, 0, 0],
    &[0, 0, 0, 0, 0],
    &[1],
    &[4],
    &[9],
    &[0x25],
    &[0xff],
    &[0x3f, 0xe1, 0x1f],
    &[0x10],
];

#[test]
fn fuzz_http2_frames() {
    let rt = runtime();
    let (up, proxy, addr) = rt.block_on(async {
        let up = Upstream::start("alpha").await;
        let (proxy, addr) = OneRoute::to(&[up.addr]).start().await;
        (up, proxy, addr)
    });
    assert!(rt.block_on(still_serves(addr)), "serves before fuzzing");
    let counter = Mutex::new(0);
    let strategy = prop_oneof![
        4 => sinew_fuzz::mutated(h2_samples(), H2_DICTIONARY),
        1 => sinew_fuzz::token_soup(H2_DICTIONARY, 32),
    ];
    sinew_fuzz::run("fuzz_http2_frames", SOCKET_COST, strategy, |frames| {
        let panics_before = sinew_fuzz::panics_so_far();
        let bytes = [PREFACE, &frames].concat();
        let response = rt.block_on(exchange(addr, &bytes));
        prop_assert!(response.is_some(), "the proxy neither answered nor closed");
        let response = response.unwrap();
        // A server's first frame is its SETTINGS (RFC 9113 §3.4).
        prop_assert!(
            response.is_empty() || (response.len() >= 9 && response[3] == 4),
            "does not begin with SETTINGS: {:?}",
            &response[..response.len().min(64)]
        );
        after_case(&rt, addr, panics_before, &counter)
    });
    assert!(rt.block_on(still_serves(addr)), "serves after fuzzing");
    drop((proxy, up));
}

#[test]
fn http2_samples_are_served() {
    // The mutated target means something only if its samples are good requests.
    let rt = runtime();
    let (_up, _proxy, addr) = rt.block_on(async {
        let up = Upstream::start("alpha").await;
        let (proxy, addr) = OneRoute::to(&[up.addr]).start().await;
        (up, proxy, addr)
    });
    let response = rt
        .block_on(exchange(addr, &[PREFACE, &h2_samples()[0]].concat()))
        .expect("an answer");
    // A HEADERS frame (type 1) on stream 1 comes back: `:status` 200 is 0x88 in HPACK.
    let mut at = 0;
    let mut statuses = Vec::new();
    while at + 9 <= response.len() {
        let len =
            u32::from_be_bytes([0, response[at], response[at + 1], response[at + 2]]) as usize;
        if response[at + 3] == 1 && at + 9 < response.len() {
            statuses.push(response[at + 9]);
        }
        at += 9 + len;
    }
    assert_eq!(statuses.first(), Some(&0x88), "{response:?}");
}
