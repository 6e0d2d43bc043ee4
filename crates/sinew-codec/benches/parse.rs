//! What parsing one typical request head costs (a 300-byte head from a browser-like
//! client: 8 fields, a cookie), the codec beside the parser it replaces:
//!
//! - `httparse`: hyper's tokenizer alone, into borrowed slices.
//! - `httparse_http_types`: that plus the `http` types built the way hyper's server
//!   does (method, URI and values sharing the buffer) — hyper's parse, without any of
//!   Sinew's checks.
//! - `httparse_http_types_checks`: that plus Sinew's checks done afterwards, the way
//!   they would be if the codec kept httparse: a bare-LF pass over the head and the
//!   framing, Host and Connection rules read back from the map.
//! - `codec_scan`: the codec's tokenizing pass alone (every syntax rule, no types).
//! - `codec_parse_unchecked`: the codec's tokenizing and `http` types, none of the checks
//!   after them (target form, Host, framing, connection facts).
//! - `codec_parse`: the codec's whole parse from a read buffer: tokenizing, the `http`
//!   types, framing, Host and connection facts.
//!
//! `dribbled_16k`: a 16 KiB head (a long cookie, a long target) arriving one byte per
//! read, parsed after every byte: `httparse` from the start each time (as hyper does),
//! the codec going on from where it stopped. Linear against quadratic.

use std::hint::black_box;
use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri};
use sinew_codec::http1::{bench_api, HeadLimits, RequestParser};

const HEAD: &[u8] = b"GET /api/v1/orders/48213?include=items HTTP/1.1\r\n\
Host: shop.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0\r\n\
Accept: application/json\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Cookie: session=9f86d081884c7d659a2feaa0c55ad015\r\n\
Connection: keep-alive\r\n\
\r\n";

const MAX_HEADERS: usize = 100;

fn httparse_only(buf: &[u8]) -> usize {
    let mut slots = [MaybeUninit::uninit(); MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len + req.headers.len(),
        _ => panic!("head did not parse"),
    }
}

/// As hyper's server: tokenize, split the head off the read buffer, build the types
/// with the URI and values sharing it.
fn httparse_http_types(buf: &mut BytesMut) -> (Method, Uri, HeaderMap) {
    let mut slots = [MaybeUninit::uninit(); MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let (len, path, fields) = match req.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) => {
            let base = buf.as_ptr() as usize;
            let range = |s: &[u8]| {
                let start = s.as_ptr() as usize - base;
                start..start + s.len()
            };
            let fields: Vec<_> = req
                .headers
                .iter()
                .map(|h| (range(h.name.as_bytes()), range(h.value)))
                .collect();
            (len, range(req.path.unwrap().as_bytes()), fields)
        }
        _ => panic!("head did not parse"),
    };
    let method = Method::from_bytes(req.method.unwrap().as_bytes()).unwrap();
    let head: Bytes = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(path)).unwrap();
    let mut headers = HeaderMap::with_capacity(fields.len());
    for (name, value) in fields {
        let name = HeaderName::from_bytes(&head[name]).unwrap();
        let value = HeaderValue::from_maybe_shared(head.slice(value)).unwrap();
        headers.append(name, value);
    }
    (method, uri, headers)
}

/// Sinew's rules as a second look: bare LF over the bytes, then the fields from the map.
fn sinew_checks_afterwards(buf: &[u8], headers: &HeaderMap) -> bool {
    let bare_lf = memchr::memchr_iter(b'\n', buf).any(|lf| lf == 0 || buf[lf - 1] != b'\r');
    let lengths = headers.get_all(header::CONTENT_LENGTH).iter().count();
    let chunked = headers.contains_key(header::TRANSFER_ENCODING);
    let hosts = headers.get_all(header::HOST).iter().count();
    let close = headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    !bare_lf && lengths <= 1 && !(chunked && lengths > 0) && hosts == 1 && !close
}

fn parse(c: &mut Criterion) {
    assert!(
        (280..=320).contains(&HEAD.len()),
        "a typical head: {}",
        HEAD.len()
    );
    let mut group = c.benchmark_group("request_head_300b");
    group.bench_function("httparse", |b| b.iter(|| httparse_only(black_box(HEAD))));
    // Every whole parse runs as on one keep-alive connection: one read buffer for the
    // run, refilled each iteration (a 300-byte copy, as a socket read would make), the
    // head split off it and frozen, so values share it as they would in a server.
    let mut buf = BytesMut::with_capacity(4096);
    group.bench_function("httparse_http_types", |b| {
        b.iter(|| {
            buf.extend_from_slice(HEAD);
            black_box(httparse_http_types(black_box(&mut buf)))
        })
    });
    group.bench_function("httparse_http_types_checks", |b| {
        b.iter(|| {
            buf.extend_from_slice(HEAD);
            let parsed = httparse_http_types(black_box(&mut buf));
            black_box((sinew_checks_afterwards(HEAD, &parsed.2), parsed))
        })
    });
    group.bench_function("codec_scan", |b| {
        b.iter(|| bench_api::scan_request(black_box(HEAD)))
    });
    group.bench_function("codec_parse_unchecked", |b| {
        b.iter(|| {
            buf.extend_from_slice(HEAD);
            black_box(
                bench_api::parse_unchecked(black_box(&mut buf))
                    .unwrap()
                    .unwrap(),
            )
        })
    });
    let mut parser = RequestParser::new(HeadLimits::default());
    group.bench_function("codec_parse", |b| {
        b.iter(|| {
            buf.extend_from_slice(HEAD);
            let head = parser.parse(black_box(&mut buf)).unwrap().unwrap();
            black_box(head)
        })
    });
    group.finish();
}

fn dribbled(c: &mut Criterion) {
    let mut head = format!("GET /{} HTTP/1.1\r\nHost: a\r\n", "t".repeat(4200)).into_bytes();
    for i in 0..12 {
        head.extend_from_slice(format!("X-Field-{i}: {}\r\n", "v".repeat(1000)).as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    assert!(
        (16 * 1024..18 * 1024).contains(&head.len()),
        "{}",
        head.len()
    );
    let mut group = c.benchmark_group("dribbled_16k");
    group.sample_size(10);
    group.bench_function("httparse_from_the_start_each_read", |b| {
        b.iter(|| {
            let mut done = 0;
            for end in 1..=head.len() {
                let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut req = httparse::Request::new(&mut slots);
                if let Ok(httparse::Status::Complete(n)) = req.parse(&head[..end]) {
                    done = n;
                }
            }
            black_box(done)
        })
    });
    group.bench_function("codec_resumed_each_read", |b| {
        b.iter(|| {
            let mut parser = RequestParser::new(HeadLimits::default());
            let mut buf = BytesMut::with_capacity(head.len());
            let mut parsed = None;
            for &byte in &head {
                buf.extend_from_slice(&[byte]);
                if let Some(h) = parser.parse(&mut buf).unwrap() {
                    parsed = Some(h);
                }
            }
            black_box(parsed.unwrap())
        })
    });
    group.finish();
}

criterion_group!(benches, parse, dribbled);
criterion_main!(benches);
