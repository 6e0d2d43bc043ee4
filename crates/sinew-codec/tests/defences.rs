//! Every request-smuggling and malformed-input defence Sinew had in front of hyper (the
//! head guard, `routing_authority`, hyper's own refusals), replayed on the codec with the
//! exact bytes of the proxy's tests (crates/sinew-integration/tests/suite/malformed.rs,
//! host_authority.rs, limits.rs, and the head guard's unit tests). Each connection is
//! read as a server reads it: head, body by its framing, next head, until the end or
//! the first error, which ends the connection.

use bytes::BytesMut;
use sinew_codec::http1::{
    BodyFraming, ChunkedDecoder, ChunkedError, Frame, HeadError, HeadLimits, RequestHead,
    RequestParser,
};

/// How one request on a connection went.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// Read whole: its target and body.
    Served(String, Vec<u8>),
    /// The head was refused with this status; the connection ends.
    Refused(u16, HeadError),
    /// The chunked body was refused; the connection ends.
    BadBody(ChunkedError),
}

/// Reads `input` as one connection (all bytes already arrived), with `limits`.
fn connection(input: &[u8], limits: HeadLimits) -> Vec<Outcome> {
    let mut parser = RequestParser::new(limits);
    let mut buf = BytesMut::from(input);
    let mut outcomes = Vec::new();
    loop {
        let head: RequestHead = match parser.parse(&mut buf) {
            Ok(Some(head)) => head,
            Ok(None) => return outcomes,
            Err(e) => {
                outcomes.push(Outcome::Refused(e.status().as_u16(), e));
                return outcomes;
            }
        };
        let mut body = Vec::new();
        match head.framing {
            BodyFraming::Length(n) => {
                let n = (n as usize).min(buf.len());
                body.extend_from_slice(&buf.split_to(n));
            }
            BodyFraming::Chunked => {
                let mut decoder = ChunkedDecoder::default();
                loop {
                    match decoder.decode(&mut buf) {
                        Ok(Some(Frame::Data(d))) => body.extend_from_slice(&d),
                        Ok(Some(Frame::End(_))) | Ok(None) => break,
                        Err(e) => {
                            outcomes.push(Outcome::BadBody(e));
                            return outcomes;
                        }
                    }
                }
            }
            _ => {}
        }
        outcomes.push(Outcome::Served(head.target.to_string(), body));
    }
}

fn refused(input: &[u8]) -> (u16, HeadError) {
    match connection(input, HeadLimits::default()).as_slice() {
        [Outcome::Refused(status, e)] => (*status, *e),
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
    }
}

// The bytes of crates/sinew-integration/tests/suite/malformed.rs.
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

#[test]
fn the_proxy_suites_malformed_heads_are_refused_with_400_and_nothing_after_them_is_read() {
    for (input, expected) in [
        (CL_AND_TE, HeadError::ContentLengthWithTransferEncoding),
        (TWO_DIFFERENT_CL, HeadError::DuplicateContentLength),
        (TWO_EQUAL_CL, HeadError::DuplicateContentLength),
        (OBS_FOLD, HeadError::ObsFold),
        (BARE_LF, HeadError::BareLf),
        (SPACE_BEFORE_COLON, HeadError::SpaceBeforeColon),
        (BAD_HEADER_NAME, HeadError::InvalidHeaderName),
        (GARBAGE_REQUEST_LINE, HeadError::InvalidMethod),
        (TE_NOT_CHUNKED, HeadError::TransferEncodingNotChunkedLast),
    ] {
        // One outcome only: the smuggled request after CL_AND_TE is never read.
        assert_eq!(
            refused(input),
            (400, expected),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn the_proxy_suites_malformed_chunked_bodies_are_refused() {
    assert_eq!(
        connection(BAD_CHUNK_SIZE, HeadLimits::default()),
        [Outcome::BadBody(ChunkedError::InvalidSize)]
    );
    assert_eq!(
        connection(CHUNK_SIZE_OVERFLOW, HeadLimits::default()),
        [Outcome::BadBody(ChunkedError::SizeOverflow)]
    );
    assert_eq!(ChunkedError::InvalidSize.status().as_u16(), 400);
}

#[test]
fn a_smuggling_head_after_an_upgrade_request_that_did_not_switch_is_refused() {
    // malformed.rs: an_upgrade_request_that_did_not_switch_leaves_the_guard_on
    let mut input =
        b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n".to_vec();
    input.extend_from_slice(TWO_EQUAL_CL);
    assert_eq!(
        connection(&input, HeadLimits::default()),
        [
            Outcome::Served("/".into(), vec![]),
            Outcome::Refused(400, HeadError::DuplicateContentLength)
        ]
    );
}

#[test]
fn the_head_guards_cases_read_the_same() {
    // head_guard.rs: accepts_crlf_requests_with_bodies_of_every_kind (LFs inside bodies
    // are data, not line endings).
    let input = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\
POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\na\nb\n\
POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\n\n\n\n\r\n0\r\nT: 1\r\n\r\n\
GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(
        connection(input, HeadLimits::default()),
        [
            Outcome::Served("/".into(), vec![]),
            Outcome::Served("/".into(), b"a\nb\n".to_vec()),
            Outcome::Served("/".into(), b"\n\n\n".to_vec()),
            Outcome::Served("/".into(), vec![]),
        ]
    );
    // flags_the_request_whose_head_has_a_bare_lf: the second request, and only it.
    let input = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\nHost: a\n\n";
    assert_eq!(
        connection(input, HeadLimits::default()),
        [
            Outcome::Served("/".into(), vec![]),
            Outcome::Refused(400, HeadError::BareLf)
        ]
    );
    assert_eq!(
        refused(b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n"),
        (400, HeadError::BareLf)
    );
    // refuses_framing_headers_too_long_to_read_whole
    let mut input = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: ".to_vec();
    input.extend(std::iter::repeat_n(b'0', 200));
    input.extend_from_slice(b"5\r\n\r\nhello");
    assert_eq!(refused(&input), (400, HeadError::FramingHeaderTooLong));
    // head_guard_regression_first_segment_is_a_prefix_of_the_http2_preface: the codec
    // has no preface special case to fool (HTTP/2 is sniffed before it); `P` then
    // `OST ...` is one head like any other.
    let mut parser = RequestParser::new(HeadLimits::default());
    let mut buf = BytesMut::from(&b"P"[..]);
    assert_eq!(parser.parse(&mut buf), Ok(None));
    buf.extend_from_slice(
        b"OST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
    );
    assert_eq!(
        parser.parse(&mut buf),
        Err(HeadError::DuplicateContentLength)
    );
}

#[test]
fn the_host_rules_of_routing_authority_hold() {
    // host_authority.rs
    assert_eq!(
        refused(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        (400, HeadError::DuplicateHost)
    );
    assert_eq!(
        refused(b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"),
        (400, HeadError::DuplicateHost)
    );
    assert_eq!(
        refused(b"GET http://a/ HTTP/1.1\r\nX: y\r\n\r\n"),
        (400, HeadError::MissingHost)
    );
    let mut parser = RequestParser::new(HeadLimits::default());
    let mut buf = BytesMut::from(&b"GET http://a/x HTTP/1.1\r\nHost: b\r\n\r\n"[..]);
    let head = parser.parse(&mut buf).unwrap().unwrap();
    assert_eq!(
        head.headers.get_all("host").iter().collect::<Vec<_>>(),
        ["a"]
    );
    // connection_naming_host_does_not_strip_the_routed_host: the codec strips nothing.
    let mut buf = BytesMut::from(
        &b"GET / HTTP/1.1\r\nHost: a\r\nConnection: host, x-gone\r\nX-Gone: 1\r\n\r\n"[..],
    );
    let head = parser.parse(&mut buf).unwrap().unwrap();
    assert_eq!(head.headers["host"], "a");
}

#[test]
fn request_headers_over_the_limit_get_431() {
    // limits.rs: 16 KiB limit, 8 KiB of headers fit, 24 KiB do not.
    let limits = HeadLimits {
        max_head_bytes: 16 * 1024,
        ..HeadLimits::default()
    };
    let head = |size: usize| {
        format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
            "u".repeat(size)
        )
        .into_bytes()
    };
    assert!(matches!(
        connection(&head(8 * 1024), limits).as_slice(),
        [Outcome::Served(..)]
    ));
    assert_eq!(
        connection(&head(24 * 1024), limits),
        [Outcome::Refused(431, HeadError::HeadTooLarge)]
    );
}
