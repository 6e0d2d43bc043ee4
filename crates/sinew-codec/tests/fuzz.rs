//! Fuzz targets for the HTTP/1 codec (docs/fuzzing.md): request heads, response heads
//! and chunked bodies, from mutated real samples and from token soup, each fed whole and
//! cut into random pieces. The properties: never a panic; the same answer however the
//! bytes are cut; whatever the codec accepts, hyper's parser (httparse) reads the same
//! way; and what the encoders write, the parsers read back.

mod support;

use bytes::BytesMut;
use http::Method;
use sinew_codec::http1::{
    encode_request_head, parse_request, parse_response, write_chunk, write_last_chunk, BodyFraming,
    ChunkedLimits, HeadLimits, OutgoingBody, RequestHead, TargetForm,
};
use sinew_fuzz::proptest::collection::vec;
use sinew_fuzz::proptest::prelude::*;
use support::{chunked_in_pieces, request_in_pieces, response_in_pieces};

const DICTIONARY: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b"\t",
    b":",
    b": ",
    b"\r\n\r\n",
    b"GET ",
    b"POST ",
    b"PUT ",
    b"HEAD ",
    b"CONNECT ",
    b"OPTIONS ",
    b" HTTP/1.1\r\n",
    b" HTTP/1.0\r\n",
    b"HTTP/1.1 ",
    b"HTTP/1.0 ",
    b"HTTP/2.0",
    b"HTTP/1.2",
    b"Host: a\r\n",
    b"Host: ",
    b"Content-Length: ",
    b"content-length: 0\r\n",
    b"Transfer-Encoding: ",
    b"Transfer-Encoding: chunked\r\n",
    b"chunked",
    b"gzip",
    b", ",
    b"Connection: ",
    b"close",
    b"keep-alive",
    b"upgrade",
    b"Upgrade: websocket\r\n",
    b"Expect: 100-continue\r\n",
    b"0",
    b"5",
    b"00000000000000005",
    b"18446744073709551615",
    b"18446744073709551616",
    b"ffffffffffffffff",
    b"10000000000000000",
    b"/",
    b"*",
    b"http://a/",
    b"a:443",
    b"[::1]:80",
    b"\0",
    b"\x7f",
    b"\xff",
    b";",
    b"=",
    b"\"",
    b"@",
    b" 200 OK\r\n",
    b"100 Continue",
    b"101",
    b"204",
    b"304",
    b"0\r\n\r\n",
    b"5\r\nhello\r\n",
    b";ext=1",
    b"X-Trailer: t\r\n",
];

/// Cut points: a few offsets (taken modulo the input's length).
fn cuts() -> impl Strategy<Value = Vec<usize>> {
    vec(any::<usize>(), 0..6)
}

/// Default limits, or small ones so 431 is reached often.
fn limits() -> impl Strategy<Value = HeadLimits> {
    prop_oneof![
        3 => Just(HeadLimits::default()),
        1 => (16usize..400, 1usize..12).prop_map(|(bytes, fields)| HeadLimits {
            max_head_bytes: bytes,
            max_headers: fields,
        }),
    ]
}

fn request_samples() -> Vec<Vec<u8>> {
    let mut samples: Vec<Vec<u8>> = support::REAL_REQUESTS
        .iter()
        .map(|(_, b)| b.to_vec())
        .collect();
    // Heads followed by bodies and pipelined requests, and known smuggling shapes.
    samples.push(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec());
    samples.push(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec());
    samples.push(b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n".to_vec());
    samples
}

fn response_samples() -> Vec<Vec<u8>> {
    support::REAL_RESPONSES
        .iter()
        .map(|(_, b)| b.to_vec())
        .collect()
}

/// The request property for one input.
fn check_request(input: &[u8], cuts: &[usize], limits: HeadLimits) -> Result<(), TestCaseError> {
    let whole = parse_request(input, &limits);
    let pieces = request_in_pieces(input, cuts, limits);
    prop_assert_eq!(&whole, &pieces, "whole vs pieces at {:?}", cuts);
    if let Ok(Some((head, used))) = &whole {
        prop_assert!(*used <= input.len() && *used <= limits.max_head_bytes);
        prop_assert!(input[..*used].ends_with(b"\r\n\r\n"));
        prop_assert!(head.headers.len() <= limits.max_headers + 1);
        if head.version == http::Version::HTTP_11 {
            prop_assert_eq!(head.headers.get_all("host").iter().count(), 1);
        }
        agrees_with_httparse(&input[..*used], head)?;
        round_trips(head)?;
    }
    Ok(())
}

/// Everything the codec accepts, httparse (hyper's tokenizer) accepts and reads the same
/// way: the codec is only ever stricter. The one exception is a 1.x minor above 1, which
/// the codec reads as 1.1 (RFC 9110 §2.5) and httparse refuses.
fn agrees_with_httparse(head_bytes: &[u8], head: &RequestHead) -> Result<(), TestCaseError> {
    let mut slots = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut slots);
    match req.parse(head_bytes) {
        Ok(httparse::Status::Complete(len)) => {
            prop_assert_eq!(len, head_bytes.len());
            prop_assert_eq!(req.method, Some(head.method.as_str()));
            let minor = req.version.unwrap_or(9);
            prop_assert_eq!(minor == 1, head.version == http::Version::HTTP_11);
            let path = req.path.unwrap_or("");
            match head.target_form {
                TargetForm::Origin | TargetForm::Asterisk => {
                    prop_assert_eq!(path, head.target.to_string())
                }
                _ => {
                    prop_assert!(path.contains(head.target.authority().map_or("", |a| a.as_str())))
                }
            }
            let theirs: Vec<(String, &[u8])> = req
                .headers
                .iter()
                .map(|h| (h.name.to_ascii_lowercase(), h.value))
                .filter(|(name, _)| head.target_form == TargetForm::Origin || name != "host")
                .collect();
            let ours: Vec<(String, &[u8])> = head
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes()))
                .filter(|(name, _)| head.target_form == TargetForm::Origin || name != "host")
                .collect();
            // The map groups repeated names; compare as multisets in field order per name.
            let mut theirs_sorted = theirs.clone();
            theirs_sorted.sort_by(|a, b| a.0.cmp(&b.0));
            let mut ours_sorted = ours;
            ours_sorted.sort_by(|a, b| a.0.cmp(&b.0));
            prop_assert_eq!(ours_sorted, theirs_sorted);
        }
        Ok(httparse::Status::Partial) => prop_assert!(false, "httparse: partial"),
        Err(e) => {
            // The request line, after any empty lines before it.
            let mut rest = head_bytes;
            while let Some(after) = rest.strip_prefix(b"\r\n") {
                rest = after;
            }
            let line = &rest[..rest.iter().position(|&b| b == b'\r').unwrap_or(0)];
            prop_assert!(
                line.len() >= 8 && {
                    let version = &line[line.len() - 8..];
                    version.starts_with(b"HTTP/1.") && version[7] >= b'2'
                },
                "httparse refused what the codec took: {:?}",
                e
            );
        }
    }
    Ok(())
}

/// An origin-form head encoded and parsed again is the same request.
fn round_trips(head: &RequestHead) -> Result<(), TestCaseError> {
    if head.target_form != TargetForm::Origin || head.version != http::Version::HTTP_11 {
        return Ok(());
    }
    let body = match head.framing {
        BodyFraming::Length(n) => OutgoingBody::Length(n),
        BodyFraming::Chunked => OutgoingBody::Chunked,
        _ => OutgoingBody::Empty,
    };
    let mut out = BytesMut::new();
    encode_request_head(&head.method, &head.target, &head.headers, body, &mut out);
    let again = parse_request(
        &out,
        &HeadLimits {
            max_head_bytes: usize::MAX,
            max_headers: usize::MAX,
        },
    );
    let Ok(Some((again, used))) = again else {
        return Err(TestCaseError::fail(format!(
            "re-encoded head did not parse: {again:?}"
        )));
    };
    prop_assert_eq!(used, out.len());
    prop_assert_eq!(&again.method, &head.method);
    prop_assert_eq!(&again.target, &head.target);
    prop_assert_eq!(again.framing, head.framing);
    prop_assert_eq!(again.keep_alive, head.keep_alive);
    for (name, value) in &head.headers {
        if name != http::header::CONTENT_LENGTH && name != http::header::TRANSFER_ENCODING {
            prop_assert!(again.headers.get_all(name).iter().any(|v| v == value));
        }
    }
    Ok(())
}

#[test]
fn fuzz_request_head() {
    sinew_fuzz::run(
        "fuzz_request_head",
        1,
        (
            prop_oneof![
                3 => sinew_fuzz::mutated(request_samples(), DICTIONARY),
                1 => sinew_fuzz::token_soup(DICTIONARY, 24),
            ],
            cuts(),
            limits(),
        ),
        |(input, cuts, limits)| check_request(&input, &cuts, limits),
    );
}

#[test]
fn fuzz_request_head_random_bytes() {
    sinew_fuzz::run(
        "fuzz_request_head_random_bytes",
        1,
        (vec(any::<u8>(), 0..300), cuts(), limits()),
        |(input, cuts, limits)| check_request(&input, &cuts, limits),
    );
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::GET),
        Just(Method::HEAD),
        Just(Method::POST),
        Just(Method::CONNECT),
    ]
}

#[test]
fn fuzz_response_head() {
    sinew_fuzz::run(
        "fuzz_response_head",
        1,
        (
            prop_oneof![
                3 => sinew_fuzz::mutated(response_samples(), DICTIONARY),
                1 => sinew_fuzz::token_soup(DICTIONARY, 24),
                1 => vec(any::<u8>(), 0..200),
            ],
            cuts(),
            method(),
            limits(),
        ),
        |(input, cuts, method, limits)| {
            let whole = parse_response(&input, &method, &limits);
            let pieces = response_in_pieces(&input, &cuts, &method, limits);
            prop_assert_eq!(&whole, &pieces);
            if let Ok(Some((head, used))) = &whole {
                prop_assert!(input[..*used].ends_with(b"\r\n\r\n"));
                let bodiless = head.status.is_informational()
                    || head.status == 204
                    || head.status == 304
                    || method == Method::HEAD
                    || head.upgraded;
                prop_assert_eq!(bodiless, head.framing == BodyFraming::None);
                if head.framing == BodyFraming::CloseDelimited || head.upgraded {
                    prop_assert!(!head.keep_alive);
                }
                // httparse reads the same status (it takes 1.x minors above 1 as errors).
                let mut slots = [httparse::EMPTY_HEADER; 128];
                let mut res = httparse::Response::new(&mut slots);
                if let Ok(httparse::Status::Complete(len)) = res.parse(&input[..*used]) {
                    prop_assert_eq!(len, *used);
                    prop_assert_eq!(res.code, Some(head.status.as_u16()));
                }
            }
            Ok(())
        },
    );
}

/// A valid chunked body: chunks (with optional extensions), then optional trailers.
fn chunked_body() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    (
        vec((vec(any::<u8>(), 0..40), any::<bool>()), 0..6),
        any::<bool>(),
    )
        .prop_map(|(chunks, trailers)| {
            let mut out = BytesMut::new();
            let mut data = Vec::new();
            for (chunk, with_extension) in chunks {
                if with_extension && !chunk.is_empty() {
                    out.extend_from_slice(
                        format!("{:X};name=\"v a l\"\r\n", chunk.len()).as_bytes(),
                    );
                    out.extend_from_slice(&chunk);
                    out.extend_from_slice(b"\r\n");
                } else {
                    write_chunk(&chunk, &mut out);
                }
                data.extend_from_slice(&chunk);
            }
            let mut map = http::HeaderMap::new();
            map.insert("x-checksum", http::HeaderValue::from_static("abc"));
            write_last_chunk(trailers.then_some(&map), &mut out);
            (out.to_vec(), data)
        })
}

#[test]
fn fuzz_chunked_decoder() {
    let limits = ChunkedLimits {
        max_extension_bytes: 64,
        max_trailer_bytes: 64,
        max_trailers: 3,
    };
    let samples = vec![
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n".to_vec(),
        b"3;ext=1\r\nabc\r\n0\r\nX-Trailer: t\r\nY: 2\r\n\r\nGET / HTTP/1.1\r\n".to_vec(),
        b"a\r\n0123456789\r\n0000\r\n\r\n".to_vec(),
    ];
    sinew_fuzz::run(
        "fuzz_chunked_decoder",
        1,
        (
            prop_oneof![
                3 => sinew_fuzz::mutated(samples, DICTIONARY),
                1 => sinew_fuzz::token_soup(DICTIONARY, 24),
                1 => chunked_body().prop_map(|(body, _)| body),
            ],
            cuts(),
        ),
        |(input, cuts)| {
            let whole = chunked_in_pieces(&input, &[], limits);
            let pieces = chunked_in_pieces(&input, &cuts, limits);
            prop_assert_eq!(&whole, &pieces);
            prop_assert!(whole.data.len() <= input.len());
            Ok(())
        },
    );
}

#[test]
fn fuzz_chunked_round_trip() {
    sinew_fuzz::run(
        "fuzz_chunked_round_trip",
        1,
        (chunked_body(), vec(any::<u8>(), 0..20), cuts()),
        |((body, data), after, cuts)| {
            let mut input = body.clone();
            input.extend_from_slice(&after);
            let decoded = chunked_in_pieces(&input, &cuts, ChunkedLimits::default());
            prop_assert_eq!(&decoded.data, &data);
            prop_assert!(matches!(decoded.end, Ok(Some(_))), "{:?}", decoded.end);
            prop_assert_eq!(decoded.after, after.len());
            Ok(())
        },
    );
}
