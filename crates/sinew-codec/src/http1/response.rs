//! Response heads (client side): what an upstream answered, how its body is framed
//! (RFC 9112 §6.3, which needs the request's method) and whether the upstream connection
//! can be used again. A malformed response is a [`HeadError`] the proxy answers 502.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, StatusCode, Version};

use super::facts::Facts;
use super::scan::{self, FieldSpans, LineCursor};
use super::{BodyFraming, HeadError, HeadLimits};

/// A parsed response head.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseHead {
    pub status: StatusCode,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// The reason phrase as sent (may be empty); a proxy may pass it on.
    pub reason: Bytes,
    pub headers: HeaderMap,
    /// `None` for 1xx, 204, 304, any response to HEAD, and 2xx to CONNECT.
    pub framing: BodyFraming,
    /// The upstream connection may carry another request after this body: HTTP/1.1
    /// unless `Connection: close`, HTTP/1.0 only with `keep-alive`, and never after a
    /// close-delimited body or a switch of protocol.
    pub keep_alive: bool,
    /// The connection stops being HTTP/1 after this head: 101, or 2xx to CONNECT.
    pub upgraded: bool,
}

impl ResponseHead {
    /// A 1xx other than 101: the final response is still to come.
    pub fn is_interim(&self) -> bool {
        self.status.is_informational() && self.status != StatusCode::SWITCHING_PROTOCOLS
    }
}

#[derive(Debug, Clone, Copy)]
struct StatusLine {
    version: Version,
    status: StatusCode,
    reason: (usize, usize),
}

/// Reads response heads off an upstream connection's read buffer; the counterpart of
/// [`super::RequestParser`], with the same contract between calls.
#[derive(Debug, Clone)]
pub struct ResponseParser(scan::Resumable<StatusLine>);

impl ResponseParser {
    pub fn new(limits: HeadLimits) -> Self {
        ResponseParser(scan::Resumable::new(limits))
    }

    /// Forgets an incomplete head.
    pub fn reset(&mut self) {
        self.0.reset();
    }

    /// The next head from the front of `buf`, for a request made with `method`.
    pub fn parse(
        &mut self,
        buf: &mut BytesMut,
        method: &Method,
    ) -> Result<Option<ResponseHead>, HeadError> {
        match self.0.next(buf, status_line)? {
            Some(head) => build(head.bytes, head.line, &head.spans, method).map(Some),
            None => Ok(None),
        }
    }
}

/// Parses one response head from the start of `bytes` (a response to `method`):
/// `Ok(None)` when it is not all there, else the head and how many bytes it took.
pub fn parse_response(
    bytes: &[u8],
    method: &Method,
    limits: &HeadLimits,
) -> Result<Option<(ResponseHead, usize)>, HeadError> {
    match scan::head_once(bytes, limits, status_line)? {
        Some((head, end)) => Ok(Some((
            build(head.bytes, head.line, &head.spans, method)?,
            end,
        ))),
        None => Ok(None),
    }
}

/// `HTTP-version SP status-code SP [ reason-phrase ] CRLF` (RFC 9112 §4). The SP after
/// the code may be missing when the reason is empty, as httparse allowed. Empty lines
/// before it are skipped as for requests: RFC 9112 only asks that of servers, but a
/// stray CRLF after a body is common from upstreams and frames nothing (httparse
/// skipped them too); a bare LF there is still refused.
fn status_line(
    b: &[u8],
    start: usize,
    cursor: &mut LineCursor,
) -> Result<Option<(StatusLine, usize)>, HeadError> {
    let Some((numbers, mut i)) = scan::version(b, start)? else {
        return Ok(None);
    };
    match b.get(i) {
        None => return Ok(None),
        Some(b' ') => i += 1,
        Some(b'\n') => return Err(HeadError::BareLf),
        Some(_) => return Err(HeadError::InvalidVersion),
    }
    let mut code: u16 = 0;
    for k in 0..3 {
        match b.get(i + k) {
            None => return Ok(None),
            Some(&d) if d.is_ascii_digit() => code = code * 10 + u16::from(d - b'0'),
            Some(b'\n') => return Err(HeadError::BareLf),
            Some(_) => return Err(HeadError::InvalidStatus),
        }
    }
    i += 3;
    let reason_start = match b.get(i) {
        None => return Ok(None),
        Some(b' ') => i + 1,
        Some(b'\r') => i,
        Some(b'\n') => return Err(HeadError::BareLf),
        Some(_) => return Err(HeadError::InvalidStatus),
    };
    // reason-phrase = 1*( HTAB / SP / VCHAR / obs-text ), resumed where a read ended.
    let mut j = cursor.scanned_to.max(reason_start);
    loop {
        match b.get(j) {
            None => {
                cursor.scanned_to = j;
                return Ok(None);
            }
            Some(b'\r') => break,
            Some(b'\n') => return Err(HeadError::BareLf),
            Some(&c) if c == b'\t' || (c >= 0x20 && c != 0x7f) => j += 1,
            Some(_) => return Err(HeadError::InvalidStatus),
        }
    }
    let Some(end) = scan::line_end(b, j, HeadError::InvalidStatus)? else {
        return Ok(None);
    };
    let version = scan::http1_version(numbers)?;
    // RFC 9110 §15: codes outside 100..=599 are invalid; a proxy must not pass one on
    // as if it were HTTP (`http::StatusCode` takes up to 999).
    if !(100..=599).contains(&code) {
        return Err(HeadError::InvalidStatus);
    }
    let status = StatusCode::from_u16(code).map_err(|_| HeadError::InvalidStatus)?;
    Ok(Some((
        StatusLine {
            version,
            status,
            reason: (reason_start, j),
        },
        end,
    )))
}

fn build(
    head: Bytes,
    line: StatusLine,
    spans: &FieldSpans,
    method: &Method,
) -> Result<ResponseHead, HeadError> {
    let headers = scan::build_fields(&head, spans)?;
    let facts = Facts::of(&headers);
    let status = line.status;
    let version = line.version;
    let upgraded = status == StatusCode::SWITCHING_PROTOCOLS
        || (*method == Method::CONNECT && status.is_success());
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || *method == Method::HEAD
        || upgraded;
    let framing = if bodiless {
        // Any Content-Length here describes the body a GET would have had; it frames
        // nothing, so it is not judged.
        BodyFraming::None
    } else {
        response_framing(&facts, version)?
    };
    let keep_alive = !upgraded
        && framing != BodyFraming::CloseDelimited
        && !facts.connection_close
        && (version == Version::HTTP_11 || facts.connection_keep_alive);
    Ok(ResponseHead {
        status,
        version,
        reason: head.slice(line.reason.0..line.reason.1),
        headers,
        framing,
        keep_alive,
        upgraded,
    })
}

/// RFC 9112 §6.3 for a response that can have a body.
fn response_framing(facts: &Facts, version: Version) -> Result<BodyFraming, HeadError> {
    if facts.framing_too_long {
        return Err(HeadError::FramingHeaderTooLong);
    }
    if let Some(codings) = facts.codings {
        if version == Version::HTTP_10 {
            return Err(HeadError::TransferEncodingInHttp10);
        }
        // RFC 9112 §6.3 lets Transfer-Encoding override Content-Length here, and hyper
        // did; both together are how response splitting looks, and nginx refuses them
        // from an upstream too.
        if facts.content_lengths > 0 {
            return Err(HeadError::ContentLengthWithTransferEncoding);
        }
        // Chunked last frames the body. Chunked anywhere else (twice, with parameters,
        // or under another coding) is refused: RFC 9112 §6.3 would read such a body to
        // the close, but a coding over chunked framing hides where the message ends.
        // A list without chunked leaves the body delimited by the close (item 4).
        if codings.chunked > 1 || codings.chunked_with_params {
            return Err(HeadError::TransferEncodingNotChunkedLast);
        }
        return match (codings.last_is_chunked, codings.chunked) {
            (true, _) => Ok(BodyFraming::Chunked),
            (false, 0) => Ok(BodyFraming::CloseDelimited),
            (false, _) => Err(HeadError::TransferEncodingNotChunkedLast),
        };
    }
    // Repeated lengths, even equal, are refused: hyper merged equal ones, nginx refuses
    // them ("duplicate header line"), and so does the request side.
    Ok(match facts.single_content_length()? {
        Some(n) => BodyFraming::Length(n),
        None => BodyFraming::CloseDelimited,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_for(
        method: &Method,
        bytes: &[u8],
    ) -> Result<Option<(ResponseHead, usize)>, HeadError> {
        parse_response(bytes, method, &HeadLimits::default())
    }

    fn head_for(method: &Method, bytes: &[u8]) -> ResponseHead {
        match parse_for(method, bytes) {
            Ok(Some((head, used))) => {
                assert_eq!(used, bytes.len());
                head
            }
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
        }
    }

    fn head(bytes: &[u8]) -> ResponseHead {
        head_for(&Method::GET, bytes)
    }

    fn rejected(bytes: &[u8], expected: HeadError) {
        assert_eq!(
            parse_for(&Method::GET, bytes).map(|_| ()),
            Err(expected),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
        let mut parser = ResponseParser::new(HeadLimits::default());
        let mut buf = BytesMut::new();
        let mut outcome = Ok(None);
        for &b in bytes {
            buf.extend_from_slice(&[b]);
            outcome = parser.parse(&mut buf, &Method::GET);
            if !matches!(outcome, Ok(None)) {
                break;
            }
        }
        assert_eq!(outcome.map(|_| ()), Err(expected), "byte by byte");
    }

    #[test]
    fn a_sized_response_gives_status_reason_fields_and_length() {
        let h = head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: x\r\n\r\n");
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(h.version, Version::HTTP_11);
        assert_eq!(h.reason, "OK");
        assert_eq!(h.headers["server"], "x");
        assert_eq!(h.framing, BodyFraming::Length(5));
        assert!(h.keep_alive && !h.upgraded && !h.is_interim());
    }

    #[test]
    fn a_reason_may_be_empty_absent_or_unusual() {
        assert_eq!(
            head(b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n").reason,
            ""
        );
        assert_eq!(
            head(b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n").reason,
            ""
        );
        let h = head(b"HTTP/1.1 599 Totally \tCustom caf\xe9\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(h.status.as_u16(), 599);
        assert_eq!(&h.reason[..], b"Totally \tCustom caf\xe9");
    }

    #[test]
    fn chunked_response_is_chunked() {
        let h = head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(h.framing, BodyFraming::Chunked);
        let h = head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(h.framing, BodyFraming::Chunked);
    }

    #[test]
    fn without_length_or_chunked_the_body_runs_to_the_close() {
        let h = head(b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(h.framing, BodyFraming::CloseDelimited);
        assert!(!h.keep_alive);
        let h = head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert_eq!(h.framing, BodyFraming::CloseDelimited);
    }

    #[test]
    fn head_1xx_204_304_and_connect_responses_have_no_body() {
        let sized = b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n";
        assert_eq!(head_for(&Method::HEAD, sized).framing, BodyFraming::None);
        assert!(head_for(&Method::HEAD, sized).keep_alive);
        for status in [
            "204 No Content",
            "304 Not Modified",
            "100 Continue",
            "103 Early Hints",
        ] {
            let res = format!("HTTP/1.1 {status}\r\nContent-Length: 99\r\n\r\n");
            assert_eq!(head(res.as_bytes()).framing, BodyFraming::None, "{status}");
        }
        let h = head_for(
            &Method::CONNECT,
            b"HTTP/1.1 200 Connection Established\r\n\r\n",
        );
        assert_eq!(h.framing, BodyFraming::None);
        assert!(h.upgraded && !h.keep_alive);
        // A refused CONNECT has a body like any response.
        let h = head_for(
            &Method::CONNECT,
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 3\r\n\r\n",
        );
        assert_eq!(h.framing, BodyFraming::Length(3));
    }

    #[test]
    fn interim_and_switching_responses_are_told_apart() {
        let h = head(b"HTTP/1.1 100 Continue\r\n\r\n");
        assert!(h.is_interim() && !h.upgraded);
        let h = head(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n");
        assert!(!h.is_interim() && h.upgraded && !h.keep_alive);
        assert_eq!(h.framing, BodyFraming::None);
    }

    #[test]
    fn upstream_keep_alive_follows_version_and_connection() {
        assert!(
            !head(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").keep_alive
        );
        assert!(!head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive);
        assert!(
            head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n")
                .keep_alive
        );
    }

    #[test]
    fn content_length_beside_chunked_in_a_response_is_an_error() {
        rejected(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            HeadError::ContentLengthWithTransferEncoding,
        );
    }

    #[test]
    fn repeated_content_length_in_a_response_is_an_error() {
        rejected(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            HeadError::DuplicateContentLength,
        );
        rejected(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            HeadError::DuplicateContentLength,
        );
        rejected(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
            HeadError::InvalidContentLength,
        );
        rejected(
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            HeadError::InvalidContentLength,
        );
    }

    #[test]
    fn chunked_not_last_in_a_response_is_an_error() {
        rejected(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            HeadError::TransferEncodingNotChunkedLast,
        );
        rejected(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            HeadError::TransferEncodingNotChunkedLast,
        );
    }

    #[test]
    fn transfer_encoding_in_an_http10_response_is_an_error() {
        rejected(
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            HeadError::TransferEncodingInHttp10,
        );
    }

    #[test]
    fn malformed_response_lines_are_errors() {
        rejected(
            b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
            HeadError::BareLf,
        );
        rejected(
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\n\r\n",
            HeadError::BareLf,
        );
        rejected(
            b"HTTP/1.1 200 OK\r\nX: 1\r\n folded\r\n\r\n",
            HeadError::ObsFold,
        );
        rejected(
            b"HTTP/1.1 200 OK\r\nX : 1\r\n\r\n",
            HeadError::SpaceBeforeColon,
        );
        rejected(b"HTTP/1.1 20 OK\r\n\r\n", HeadError::InvalidStatus);
        rejected(b"HTTP/1.1 2000 OK\r\n\r\n", HeadError::InvalidStatus);
        rejected(b"HTTP/1.1 099 Low\r\n\r\n", HeadError::InvalidStatus);
        // Found by fuzz_http1_upstream_responses: 604 was passed on to the client.
        rejected(b"HTTP/1.1 604 Odd\r\n\r\n", HeadError::InvalidStatus);
        rejected(b"HTTP/1.1 999 Odd\r\n\r\n", HeadError::InvalidStatus);
        rejected(b"HTTP/1.1 200 O\x01K\r\n\r\n", HeadError::InvalidStatus);
        rejected(b"HTTP/1.1  200 OK\r\n\r\n", HeadError::InvalidStatus);
        rejected(b"HTTP/2 200 OK\r\n\r\n", HeadError::InvalidVersion);
        rejected(b"HTTP/2.0 200 OK\r\n\r\n", HeadError::UnsupportedVersion);
        rejected(b"ICY 200 OK\r\n\r\n", HeadError::InvalidVersion);
        rejected(
            b"HTTP/1.1 200 OK\r\nX: a\0\r\n\r\n",
            HeadError::InvalidHeaderValue,
        );
    }

    #[test]
    fn an_overlong_response_head_is_an_error() {
        let limits = HeadLimits {
            max_head_bytes: 40,
            max_headers: 10,
        };
        let res = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "v".repeat(40));
        assert_eq!(
            parse_response(res.as_bytes(), &Method::GET, &limits).map(|_| ()),
            Err(HeadError::HeadTooLarge)
        );
    }

    #[test]
    fn a_response_arriving_a_byte_at_a_time_parses_like_one_piece() {
        let whole = b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nnot found";
        let (expected, used) = parse_for(&Method::GET, whole).unwrap().unwrap();
        let mut parser = ResponseParser::new(HeadLimits::default());
        let mut buf = BytesMut::new();
        for (i, &b) in whole.iter().enumerate() {
            buf.extend_from_slice(&[b]);
            if let Some(head) = parser.parse(&mut buf, &Method::GET).unwrap() {
                assert_eq!(i + 1, used);
                assert_eq!(head, expected);
                assert_eq!(&buf[..], b"");
                return;
            }
        }
        panic!("never complete");
    }
}
