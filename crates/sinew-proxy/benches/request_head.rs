//! The header work every HTTP/1.1 request pays before it goes upstream, on a realistic
//! browser-style head (12 headers, a ~100-byte cookie, 621 bytes in all).
//!
//! (Parsing it is measured in sinew-codec's own bench, `benches/parse.rs`.)
//!
//! `forward`: the rewriting `http::forward` does to those headers on the way upstream
//! (hop-by-hop removal, `x-request-id`, `X-Forwarded-*`, `Via`) with the default config
//! (request ids on, forwarded headers trusted, `Via: 1.1 sinew`), and to a typical
//! upstream response on the way back. Each iteration gets a fresh clone of the map; the
//! clone and the drop are not timed.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::{HeaderMap, HeaderValue};
use sinew_codec::http1::{HeadLimits, RequestParser};
use sinew_proxy::filters::router::headers::{self, X_REQUEST_ID};

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

const BATCH: BatchSize = BatchSize::NumIterations(64);

/// What `http::forward` does to a request's headers before the route's edits, with the
/// default config (request ids on, forwarded headers trusted, `Via: 1.1 sinew`).
fn forward_request(headers: &mut HeaderMap, client: &HeaderValue, via: &HeaderValue) {
    headers::prepare_request(
        headers,
        false,
        true,
        client,
        false,
        headers::Forwarding::TRUSTED,
        Some(via),
    );
}

/// And to the upstream response on the way back.
fn forward_response(headers: &mut HeaderMap, via: &HeaderValue) {
    headers::prepare_response(headers, false, Some(via));
}

fn forward(c: &mut Criterion) {
    let client = headers::client_address_value(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)));
    let via = HeaderValue::from_static("1.1 sinew");
    let parsed = RequestParser::new(HeadLimits::default())
        .parse(&mut BytesMut::from(HEAD))
        .expect("a valid head")
        .expect("a whole head")
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

criterion_group!(benches, forward);
criterion_main!(benches);
