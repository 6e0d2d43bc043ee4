//! The header work every HTTP/1.1 request pays before it goes upstream, on a realistic
//! browser-style head (12 headers, a ~100-byte cookie, 621 bytes in all).
//!
//! `parse`: Sinew's head guard watching the raw bytes (it runs in front of hyper, on every
//! byte of every head), beside `httparse` alone and `httparse` plus building the
//! `http::Request` and `HeaderMap` the way hyper's server does, so the guard's share of
//! the parse can be read off directly.
//!
//! `forward`: the rewriting `http::forward` does to those headers on the way upstream
//! (hop-by-hop removal, `x-request-id`, `X-Forwarded-*`, `Via`) with the default config
//! (request ids on, forwarded headers trusted, `Via: 1.1 sinew`), and to a typical
//! upstream response on the way back. Each iteration gets a fresh clone of the map; the
//! clone and the drop are not timed.

use std::hint::black_box;
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};
use sinew_proxy::bench_api::{HeadCheck, Scanner};
use sinew_proxy::http::headers::{self, X_REQUEST_ID};

const HEAD: &[u8] = b"GET /api/v1/orders/48213?include=items&page=2 HTTP/1.1\r\n\
Host: shop.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36\r\n\
Accept: application/json, text/plain, */*\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9,de;q=0.8\r\n\
Cookie: session=9f86d081884c7d659a2feaa0c55ad015; theme=dark; cart=3; _ga=GA1.2.1234567890.1700000000\r\n\
Referer: https://shop.example.com/orders\r\n\
Cache-Control: no-cache\r\n\
Sec-Fetch-Mode: cors\r\n\
X-Request-Id: 3b1f0c52-7d4e-4a9b-8f21-6c0d9e7a5b43\r\n\
Sec-Fetch-Site: same-origin\r\n\
Connection: keep-alive\r\n\
\r\n";

/// hyper's default limit on request headers (`DEFAULT_MAX_HEADERS` in its `role.rs`); like
/// hyper, the slots are left uninitialised rather than zeroed for each parse.
const MAX_HEADERS: usize = 100;

/// Parses a request head as hyper 1.x does: `httparse` into borrowed slices, then an
/// `http::Request` whose URI and header values share the read buffer. (hyper skips the
/// header value check httparse already made; safe code cannot, so this pays it twice.)
fn parse_like_hyper(buf: &Bytes) -> Request<()> {
    let mut slots = [MaybeUninit::uninit(); MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        other => panic!("head did not parse: {other:?}"),
    };
    let head = buf.slice(..len);
    let method = Method::from_bytes(req.method.unwrap().as_bytes()).unwrap();
    let uri = Uri::from_maybe_shared(head.slice_ref(req.path.unwrap().as_bytes())).unwrap();
    let mut headers = HeaderMap::new();
    headers.reserve(req.headers.len());
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).unwrap();
        let value = HeaderValue::from_maybe_shared(head.slice_ref(h.value)).unwrap();
        headers.append(name, value);
    }
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = if req.version == Some(1) {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    *request.headers_mut() = headers;
    request
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");

    // One scanner for the whole run, like one keep-alive connection carrying request
    // after request; the handler asks about each request once.
    let check = HeadCheck::new();
    let mut scanner = Scanner::new(check.clone());
    scanner.feed(HEAD);
    assert_eq!(
        check.next_request_problem(),
        None,
        "the head is well formed"
    );
    group.bench_function("head_guard", |b| {
        b.iter(|| {
            scanner.feed(black_box(HEAD));
            black_box(check.next_request_problem())
        })
    });

    group.bench_function("httparse", |b| {
        b.iter(|| {
            let mut slots = [MaybeUninit::uninit(); MAX_HEADERS];
            let mut req = httparse::Request::new(&mut []);
            black_box(
                req.parse_with_uninit_headers(black_box(HEAD), &mut slots)
                    .unwrap(),
            );
            black_box(req.headers.len())
        })
    });

    // hyper's read buffer, shared (reference-counted) as it is once hyper splits it.
    let buf = Bytes::from(HEAD.to_vec());
    drop(buf.clone());
    assert_eq!(parse_like_hyper(&buf).headers().len(), 12);
    group.bench_function("httparse_to_request", |b| {
        b.iter(|| black_box(parse_like_hyper(black_box(&buf))))
    });
    group.finish();
}

/// Maps per batch in the `forward` benches: enough to hide the timer, few enough to stay
/// in the allocator's caches (criterion's `SmallInput` would keep ~10% of all the
/// iterations' maps alive at once, and the numbers then measure page faults).
const BATCH: BatchSize = BatchSize::NumIterations(64);

/// What `http::forward` does to a request's headers before the route's edits, with the
/// default config (request ids on, forwarded headers trusted, `Via: 1.1 sinew`).
fn forward_request(headers: &mut HeaderMap, client: &HeaderValue, via: &HeaderValue) {
    headers::prepare_request(headers, false, true, client, false, true, Some(via));
}

/// And to the upstream response on the way back.
fn forward_response(headers: &mut HeaderMap, via: &HeaderValue) {
    headers::prepare_response(headers, false, Some(via));
}

fn forward(c: &mut Criterion) {
    let client = headers::client_address_value(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)));
    let via = HeaderValue::from_static("1.1 sinew");
    let parsed = parse_like_hyper(&Bytes::from_static(HEAD))
        .into_parts()
        .0
        .headers;

    // Variants of the parsed head: without `Connection` (hop-by-hop removal's fast path),
    // without a request id (one is generated), and behind a load balancer that set
    // `X-Forwarded-For` (trusted, so appended to).
    let mut no_connection = parsed.clone();
    no_connection.remove(http::header::CONNECTION);
    let mut no_id = parsed.clone();
    no_id.remove(&X_REQUEST_ID);
    let mut behind_lb = parsed.clone();
    behind_lb.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
    behind_lb.insert("x-forwarded-proto", HeaderValue::from_static("https"));

    let mut response = HeaderMap::new();
    for (name, value) in [
        ("content-type", "application/json"),
        ("content-length", "1832"),
        ("date", "Tue, 04 Jun 2024 10:15:00 GMT"),
        ("cache-control", "private, max-age=0"),
        ("etag", "\"5f2a-18c4b3e0\""),
        ("vary", "Accept-Encoding"),
        ("server", "orders/2.14"),
        ("x-request-id", "3b1f0c52-7d4e-4a9b-8f21-6c0d9e7a5b43"),
    ] {
        response.insert(name, HeaderValue::from_static(value));
    }
    let mut response_keep_alive = response.clone();
    response_keep_alive.insert("connection", HeaderValue::from_static("keep-alive"));

    let mut sample = parsed.clone();
    forward_request(&mut sample, &client, &via);
    assert!(!sample.contains_key(http::header::CONNECTION));
    assert_eq!(sample["x-forwarded-for"], "10.1.2.3");
    assert_eq!(sample[http::header::VIA], "1.1 sinew");

    let mut group = c.benchmark_group("forward");
    for (name, headers) in [
        ("request", &parsed),
        ("request_no_connection", &no_connection),
        ("request_new_id", &no_id),
        ("request_behind_lb", &behind_lb),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched(
                || headers.clone(),
                |mut h| {
                    forward_request(black_box(&mut h), &client, &via);
                    h
                },
                BATCH,
            )
        });
    }
    for (name, headers) in [
        ("response", &response),
        ("response_keep_alive", &response_keep_alive),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched(
                || headers.clone(),
                |mut h| {
                    forward_response(black_box(&mut h), &via);
                    h
                },
                BATCH,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, parse, forward);
criterion_main!(benches);
