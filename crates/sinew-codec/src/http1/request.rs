//! Request heads (server side): the request line, the fields, the body framing
//! (RFC 9112 §6.3) and the connection facts, read in one pass with every
//! request-smuggling defence applied on the way.

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::Authority;
use http::{Method, Uri, Version};

use super::facts::Facts;
use super::scan::{self, FieldSpans, HeadProgress, HeadScan, LineCursor};
use super::{BodyFraming, HeadError, HeadLimits};

/// The longest request target `http::Uri` holds; hyper answered 414 beyond it too.
const MAX_TARGET_LEN: usize = u16::MAX as usize - 1;

/// The four forms of request target (RFC 9112 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetForm {
    /// `/path?query`: the usual form.
    Origin,
    /// `http://host/path`: to a proxy. Its authority has replaced `Host`.
    Absolute,
    /// `host:port`: CONNECT only.
    Authority,
    /// `*`: OPTIONS only.
    Asterisk,
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestHead {
    pub method: Method,
    pub target: Uri,
    pub target_form: TargetForm,
    /// HTTP/1.0 or HTTP/1.1 (a 1.x above 1.1 is read as 1.1, RFC 9110 §2.5).
    pub version: Version,
    /// The fields as received, except that a target with an authority (absolute or
    /// authority form) has put that authority in `Host` (RFC 9112 §3.2.2: a proxy MUST
    /// ignore the received Host and replace it), so everything downstream of the codec
    /// sees the one authority the request is routed on. HTTP/1.1 always has one `Host`.
    pub headers: HeaderMap,
    pub framing: BodyFraming,
    /// The client wants the connection kept open after this exchange: HTTP/1.1 unless
    /// `Connection: close`, HTTP/1.0 only with `Connection: keep-alive`.
    pub keep_alive: bool,
    /// `Expect: 100-continue` in HTTP/1.1 (RFC 9110 §10.1.1: ignored in HTTP/1.0).
    /// Other expectations are left in the fields for the server to judge.
    pub expect_continue: bool,
    /// An HTTP/1.1 upgrade request: `Upgrade` with `upgrade` in `Connection`
    /// (RFC 9110 §7.8). hyper looked only at `Upgrade`; a sender MUST send both, and a
    /// lone `Upgrade` is not a request to switch. CONNECT is told by its method.
    pub upgrade: bool,
}

/// Offsets of the request line's parts.
#[derive(Debug, Clone, Copy)]
struct RequestLine {
    method: (usize, usize),
    target: (usize, usize),
    version: Version,
}

/// Reads request heads off a connection's read buffer, one after another.
///
/// Between calls the caller only appends to the buffer (or calls [`RequestParser::reset`]
/// when it starts another one): an incomplete head is remembered by offsets into it.
#[derive(Debug, Clone)]
pub struct RequestParser(scan::Resumable<RequestLine>);

impl RequestParser {
    pub fn new(limits: HeadLimits) -> Self {
        RequestParser(scan::Resumable::new(limits))
    }

    /// Forgets an incomplete head.
    pub fn reset(&mut self) {
        self.0.reset();
    }

    /// The next head from the front of `buf`: `Ok(None)` until it is all there; once it
    /// is, it is split off `buf` (the body and any pipelined requests stay).
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<RequestHead>, HeadError> {
        match self.0.next(buf, request_line)? {
            Some(head) => build(head.bytes, head.line, &head.spans).map(Some),
            None => Ok(None),
        }
    }
}

/// Parses one request head from the start of `bytes`: `Ok(None)` when it is not all
/// there, else the head and how many bytes it took. The head's fields are copied out of
/// `bytes` once; [`RequestParser::parse`] shares the read buffer instead.
pub fn parse_request(
    bytes: &[u8],
    limits: &HeadLimits,
) -> Result<Option<(RequestHead, usize)>, HeadError> {
    match scan::head_once(bytes, limits, request_line)? {
        Some((head, end)) => Ok(Some((build(head.bytes, head.line, &head.spans)?, end))),
        None => Ok(None),
    }
}

/// For the bench: the same tokenizing and `http` types as [`RequestParser::parse`]
/// without any of the checks after them (target forms, Host, framing, connection).
pub(crate) fn parse_unchecked(
    buf: &mut BytesMut,
    limits: &HeadLimits,
) -> Result<Option<(Method, Uri, HeaderMap)>, HeadError> {
    let (window, _) = scan::head_window(buf.len(), limits.max_head_bytes);
    let mut progress = HeadProgress::default();
    let mut spans = FieldSpans::new();
    match scan::head(
        &buf[..window],
        &mut progress,
        limits.max_headers,
        &mut spans,
        request_line,
    )? {
        HeadScan::Complete { line, end } => {
            let head = buf.split_to(end).freeze();
            let method = Method::from_bytes(&head[line.method.0..line.method.1])
                .map_err(|_| HeadError::InvalidMethod)?;
            let target = Uri::from_maybe_shared(head.slice(line.target.0..line.target.1))
                .map_err(|_| HeadError::InvalidTarget)?;
            let headers = scan::build_fields(&head, &spans)?;
            Ok(Some((method, target, headers)))
        }
        HeadScan::Partial => Ok(None),
    }
}

/// The tokenizing pass alone, for the bench: whether a whole head was found.
pub(crate) fn scan_only(
    b: &[u8],
    max_fields: usize,
    spans: &mut FieldSpans,
) -> Result<bool, HeadError> {
    let mut progress = HeadProgress::default();
    let scanned = scan::head(b, &mut progress, max_fields, spans, request_line)?;
    Ok(matches!(scanned, HeadScan::Complete { .. }))
}

/// `method SP request-target SP HTTP-version CRLF` (RFC 9112 §3), single spaces only.
/// An incomplete line is resumed from `cursor` (bytes before it were read already), so a
/// long target arriving a byte at a time is still read once.
fn request_line(
    b: &[u8],
    start: usize,
    cursor: &mut LineCursor,
) -> Result<Option<(RequestLine, usize)>, HeadError> {
    let method_end = if cursor.mark > start {
        cursor.mark
    } else {
        let mut i = cursor.scanned_to.max(start);
        loop {
            match b.get(i) {
                None => {
                    cursor.scanned_to = i;
                    return Ok(None);
                }
                Some(&c) if scan::is_tchar(c) => i += 1,
                Some(b' ') if i > start => break,
                Some(b'\n') => return Err(HeadError::BareLf),
                Some(_) => return Err(HeadError::InvalidMethod),
            }
        }
        cursor.mark = i;
        i
    };
    let method = (start, method_end);
    let target_start = method_end + 1;
    let mut i = cursor.scanned_to.max(target_start);
    loop {
        match b.get(i) {
            None => {
                cursor.scanned_to = i;
                return Ok(None);
            }
            // A request target has no fragment (RFC 9112 §3.2). hyper let `http::Uri`
            // drop it silently, so `/a#b` was routed as `/a`; it is refused here.
            Some(b'#') => return Err(HeadError::InvalidTarget),
            // Visible ASCII; `http::Uri` checks the URI grammar afterwards.
            Some(0x21..=0x7e) => i += 1,
            Some(b' ') if i > target_start => break,
            Some(b'\n') => return Err(HeadError::BareLf),
            // `GET /\r\n`: HTTP/0.9, which has no version.
            Some(b'\r') if i > target_start => return Err(HeadError::InvalidVersion),
            Some(_) => return Err(HeadError::InvalidTarget),
        }
    }
    // The version (ten bytes at most) is read again from here until it is whole.
    cursor.scanned_to = i;
    let target = (target_start, i);
    let Some((numbers, i)) = scan::version(b, i + 1)? else {
        return Ok(None);
    };
    let Some(end) = scan::line_end(b, i, HeadError::InvalidVersion)? else {
        return Ok(None);
    };
    let version = scan::http1_version(numbers)?;
    Ok(Some((
        RequestLine {
            method,
            target,
            version,
        },
        end,
    )))
}

/// The second step, on the frozen head: the `http` types, then the rules that need the
/// whole head (framing, Host, connection).
fn build(head: Bytes, line: RequestLine, spans: &FieldSpans) -> Result<RequestHead, HeadError> {
    let method = Method::from_bytes(&head[line.method.0..line.method.1])
        .map_err(|_| HeadError::InvalidMethod)?;
    if line.target.1 - line.target.0 > MAX_TARGET_LEN {
        return Err(HeadError::UriTooLong);
    }
    let target_bytes = head.slice(line.target.0..line.target.1);
    let asterisk = &target_bytes[..] == b"*";
    let origin = target_bytes.first() == Some(&b'/');
    let target = Uri::from_maybe_shared(target_bytes).map_err(|_| HeadError::InvalidTarget)?;
    let target_form = if asterisk {
        TargetForm::Asterisk
    } else if origin {
        TargetForm::Origin
    } else if target.scheme().is_some() {
        match target.authority() {
            Some(authority) if !authority.host().is_empty() => TargetForm::Absolute,
            _ => return Err(HeadError::InvalidTarget),
        }
    } else if target.authority().is_some() {
        TargetForm::Authority
    } else {
        return Err(HeadError::InvalidTarget);
    };
    let connect = method == Method::CONNECT;
    match target_form {
        TargetForm::Authority if !connect => return Err(HeadError::TargetFormNotAllowed),
        TargetForm::Authority => {
            // RFC 9112 §3.2.3: `uri-host ":" port`, nothing else.
            let authority = target.authority().map(Authority::as_str).unwrap_or("");
            if authority.contains('@') || target.port_u16().is_none() {
                return Err(HeadError::InvalidTarget);
            }
        }
        _ if connect => return Err(HeadError::TargetFormNotAllowed),
        TargetForm::Asterisk if method != Method::OPTIONS => {
            return Err(HeadError::TargetFormNotAllowed)
        }
        _ => {}
    }

    let version = line.version;
    let http11 = version == Version::HTTP_11;
    let mut headers = scan::build_fields(&head, spans)?;
    let facts = Facts::of(&headers);

    // Host (RFC 9112 §3.2): exactly one in HTTP/1.1, at most one in HTTP/1.0, and a
    // valid `host[:port]` (or empty) when present.
    if facts.hosts > 1 {
        return Err(HeadError::DuplicateHost);
    }
    if facts.hosts == 0 && http11 {
        return Err(HeadError::MissingHost);
    }
    if facts.host_invalid {
        return Err(HeadError::InvalidHost);
    }

    let framing = request_framing(&facts, version)?;

    if let Some(authority) = target.authority() {
        if headers.get(header::HOST).map(HeaderValue::as_bytes)
            != Some(authority.as_str().as_bytes())
        {
            // The target parsed as a URI, so its authority is a valid field value.
            let value =
                HeaderValue::from_str(authority.as_str()).map_err(|_| HeadError::InvalidTarget)?;
            headers.insert(header::HOST, value);
        }
    }

    let keep_alive = if http11 {
        !facts.connection_close
    } else {
        facts.connection_keep_alive && !facts.connection_close
    };
    Ok(RequestHead {
        method,
        target,
        target_form,
        version,
        headers,
        framing,
        keep_alive,
        expect_continue: http11 && facts.expect_continue,
        upgrade: http11 && facts.upgrade && facts.connection_upgrade,
    })
}

/// RFC 9112 §6.3 for requests, with Sinew's stricter rules where the RFC lets a
/// recipient be lenient (each is a known request-smuggling shape).
fn request_framing(facts: &Facts, version: Version) -> Result<BodyFraming, HeadError> {
    if facts.framing_too_long {
        return Err(HeadError::FramingHeaderTooLong);
    }
    if let Some(codings) = facts.codings {
        if version == Version::HTTP_10 {
            return Err(HeadError::TransferEncodingInHttp10);
        }
        if facts.content_lengths > 0 {
            return Err(HeadError::ContentLengthWithTransferEncoding);
        }
        if !codings.last_is_chunked || codings.chunked > 1 || codings.chunked_with_params {
            return Err(HeadError::TransferEncodingNotChunkedLast);
        }
        if codings.count > 1 {
            return Err(HeadError::UnsupportedTransferCoding);
        }
        return Ok(BodyFraming::Chunked);
    }
    Ok(match facts.single_content_length()? {
        Some(n) => BodyFraming::Length(n),
        None => BodyFraming::None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadError> {
        parse_request(bytes, &HeadLimits::default())
    }

    fn head(bytes: &[u8]) -> RequestHead {
        match parse(bytes) {
            Ok(Some((head, used))) => {
                assert_eq!(used, bytes.len(), "{:?}", String::from_utf8_lossy(bytes));
                head
            }
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
        }
    }

    fn error(bytes: &[u8]) -> HeadError {
        match parse(bytes) {
            Err(e) => e,
            other => panic!("{:?} parsed: {other:?}", String::from_utf8_lossy(bytes)),
        }
    }

    /// The error, and that it is the same fed whole and a byte at a time.
    fn rejected(bytes: &[u8], expected: HeadError, status: u16) {
        assert_eq!(
            error(bytes),
            expected,
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
        assert_eq!(expected.status().as_u16(), status);
        let mut parser = RequestParser::new(HeadLimits::default());
        let mut buf = BytesMut::new();
        let mut outcome = Ok(None);
        for &b in bytes {
            buf.extend_from_slice(&[b]);
            outcome = parser.parse(&mut buf);
            if !matches!(outcome, Ok(None)) {
                break;
            }
        }
        assert_eq!(outcome, Err(expected), "byte by byte");
    }

    #[test]
    fn a_simple_get_gives_method_target_version_and_fields() {
        let h = head(b"GET /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n");
        assert_eq!(h.method, Method::GET);
        assert_eq!(h.target.path(), "/a/b");
        assert_eq!(h.target.query(), Some("c=d"));
        assert_eq!(h.target_form, TargetForm::Origin);
        assert_eq!(h.version, Version::HTTP_11);
        assert_eq!(h.headers["host"], "example.com");
        assert_eq!(h.headers["accept"], "*/*");
        assert_eq!(h.framing, BodyFraming::None);
        assert!(h.keep_alive);
        assert!(!h.expect_continue && !h.upgrade);
    }

    #[test]
    fn an_incomplete_head_is_none_at_every_cut() {
        let whole = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n";
        for cut in 0..whole.len() {
            assert_eq!(parse(&whole[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn the_head_is_split_off_and_the_body_stays_in_the_buffer() {
        let mut parser = RequestParser::new(HeadLimits::default());
        let mut buf = BytesMut::from(
            &b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n"[..],
        );
        let h = parser.parse(&mut buf).unwrap().unwrap();
        assert_eq!(h.framing, BodyFraming::Length(3));
        assert_eq!(&buf[..], b"abcGET / HTTP/1.1\r\n");
    }

    #[test]
    fn field_values_are_trimmed_and_may_be_empty_or_obs_text() {
        let h = head(
            b"GET / HTTP/1.1\r\nHost:a\r\nX-Empty:\r\nX-Pad: \t v v \t\r\nX-Latin: caf\xe9\r\n\r\n",
        );
        assert_eq!(h.headers["host"], "a");
        assert_eq!(h.headers["x-empty"], "");
        assert_eq!(h.headers["x-pad"], "v v");
        assert_eq!(h.headers["x-latin"].as_bytes(), b"caf\xe9");
    }

    #[test]
    fn repeated_fields_are_all_kept_in_order() {
        let h = head(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nx-a: 2\r\n\r\n");
        let values: Vec<_> = h.headers.get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        let h = head(b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(h.method, Method::GET);
    }

    // Line endings.

    #[test]
    fn bare_lf_ending_the_request_line_is_400() {
        rejected(b"GET / HTTP/1.1\nHost: a\r\n\r\n", HeadError::BareLf, 400);
    }

    #[test]
    fn bare_lf_in_a_header_line_is_400() {
        rejected(
            b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n",
            HeadError::BareLf,
            400,
        );
    }

    #[test]
    fn bare_lf_ending_the_head_is_400() {
        rejected(b"GET / HTTP/1.1\r\nHost: a\r\n\n", HeadError::BareLf, 400);
        rejected(b"GET / HTTP/1.1\nHost: a\n\n", HeadError::BareLf, 400);
    }

    #[test]
    fn bare_lf_before_the_request_line_is_400() {
        rejected(
            b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
            HeadError::BareLf,
            400,
        );
    }

    #[test]
    fn bare_lf_right_after_a_colon_is_400() {
        rejected(
            b"GET / HTTP/1.1\r\nHost: a\r\nX:\n\r\n",
            HeadError::BareLf,
            400,
        );
    }

    #[test]
    fn bare_cr_in_a_value_is_400() {
        rejected(
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
            HeadError::InvalidHeaderValue,
            400,
        );
    }

    #[test]
    fn bare_cr_where_a_line_would_end_is_400() {
        rejected(
            b"GET / HTTP/1.1\r\nHost: a\r\n\rX: y\r\n\r\n",
            HeadError::BareCr,
            400,
        );
    }

    // Field syntax (what hyper's httparse refused too).

    #[test]
    fn obs_fold_is_400() {
        rejected(
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n",
            HeadError::ObsFold,
            400,
        );
        rejected(
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n\ttwo\r\n\r\n",
            HeadError::ObsFold,
            400,
        );
    }

    #[test]
    fn space_before_the_colon_is_400() {
        rejected(
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Spaced : value\r\n\r\n",
            HeadError::SpaceBeforeColon,
            400,
        );
        rejected(
            b"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n",
            HeadError::SpaceBeforeColon,
            400,
        );
    }

    #[test]
    fn invalid_header_name_characters_are_400() {
        rejected(
            b"GET / HTTP/1.1\r\nHost: a\r\nX(Bad)Name: value\r\n\r\n",
            HeadError::InvalidHeaderName,
            400,
        );
        rejected(
            b"GET / HTTP/1.1\r\nHost: a\r\n: empty name\r\n\r\n",
            HeadError::InvalidHeaderName,
            400,
        );
        rejected(
            b"GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n",
            HeadError::InvalidHeaderName,
            400,
        );
        rejected(
            b"GET / HTTP/1.1\r\nHost: a\r\nX\xc3\xa9: v\r\n\r\n",
            HeadError::InvalidHeaderName,
            400,
        );
    }

    #[test]
    fn control_characters_in_a_value_are_400() {
        rejected(
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n",
            HeadError::InvalidHeaderValue,
            400,
        );
        rejected(
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n",
            HeadError::InvalidHeaderValue,
            400,
        );
        rejected(
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01\r\n\r\n",
            HeadError::InvalidHeaderValue,
            400,
        );
    }

    // Request line.

    #[test]
    fn garbage_request_line_is_400() {
        rejected(
            b"\x16\x03\x01 this is not http at all\r\n\r\n",
            HeadError::InvalidMethod,
            400,
        );
    }

    #[test]
    fn a_method_that_is_not_a_token_is_400() {
        rejected(
            b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
            HeadError::InvalidMethod,
            400,
        );
        rejected(
            b" GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            HeadError::InvalidMethod,
            400,
        );
    }

    #[test]
    fn extension_methods_are_taken() {
        let h = head(b"PURGE /x HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(h.method.as_str(), "PURGE");
    }

    #[test]
    fn two_spaces_or_a_tab_in_the_request_line_are_400() {
        rejected(
            b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
            HeadError::InvalidTarget,
            400,
        );
        rejected(
            b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
            HeadError::InvalidVersion,
            400,
        );
        rejected(
            b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n",
            HeadError::InvalidMethod,
            400,
        );
    }

    #[test]
    fn a_target_with_non_ascii_or_controls_is_400() {
        rejected(
            b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n",
            HeadError::InvalidTarget,
            400,
        );
        rejected(
            b"GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n",
            HeadError::InvalidTarget,
            400,
        );
        rejected(
            b"GET /a\0 HTTP/1.1\r\nHost: a\r\n\r\n",
            HeadError::InvalidTarget,
            400,
        );
    }

    #[test]
    fn a_target_that_is_not_a_uri_is_400() {
        rejected(
            b"GET http://[::1/ HTTP/1.1\r\nHost: a\r\n\r\n",
            HeadError::InvalidTarget,
            400,
        );
        rejected(
            b"GET relative/path HTTP/1.1\r\nHost: a\r\n\r\n",
            HeadError::InvalidTarget,
            400,
        );
    }

    #[test]
    fn a_target_with_a_fragment_is_400() {
        // Found by fuzz_request_head: `http::Uri` drops the fragment, so the target
        // read was not the target sent.
        rejected(
            b"GET /#eadyz HTTP/1.1\r\nHost: a\r\n\r\n",
            HeadError::InvalidTarget,
            400,
        );
        rejected(
            b"GET /a?b#c HTTP/1.1\r\nHost: a\r\n\r\n",
            HeadError::InvalidTarget,
            400,
        );
        rejected(
            b"GET http://a/#x HTTP/1.1\r\nHost: a\r\n\r\n",
            HeadError::InvalidTarget,
            400,
        );
    }

    #[test]
    fn http09_request_line_without_version_is_400() {
        rejected(b"GET /\r\n\r\n", HeadError::InvalidVersion, 400);
    }

    #[test]
    fn a_malformed_version_is_400() {
        for line in [
            &b"GET / HTTP/1.1x\r\nHost: a\r\n\r\n"[..],
            b"GET / http/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/11\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.\r\nHost: a\r\n\r\n",
            b"GET / HTTPS/1.1\r\nHost: a\r\n\r\n",
        ] {
            rejected(line, HeadError::InvalidVersion, 400);
        }
    }

    #[test]
    fn another_major_version_is_505() {
        rejected(
            b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
            HeadError::UnsupportedVersion,
            505,
        );
        rejected(
            b"GET / HTTP/0.9\r\nHost: a\r\n\r\n",
            HeadError::UnsupportedVersion,
            505,
        );
        rejected(
            b"GET / HTTP/3.0\r\nHost: a\r\n\r\n",
            HeadError::UnsupportedVersion,
            505,
        );
    }

    #[test]
    fn a_higher_http1_minor_version_is_read_as_1_1() {
        assert_eq!(
            head(b"GET / HTTP/1.2\r\nHost: a\r\n\r\n").version,
            Version::HTTP_11
        );
    }

    #[test]
    fn a_target_longer_than_a_uri_can_hold_is_414() {
        let mut req = b"GET /".to_vec();
        req.extend(std::iter::repeat_n(b'a', MAX_TARGET_LEN));
        req.extend_from_slice(b" HTTP/1.1\r\nHost: a\r\n\r\n");
        let limits = HeadLimits {
            max_head_bytes: 1 << 20,
            ..HeadLimits::default()
        };
        assert_eq!(
            parse_request(&req, &limits).map(|_| ()),
            Err(HeadError::UriTooLong)
        );
        assert_eq!(HeadError::UriTooLong.status().as_u16(), 414);
    }

    // Target forms.

    #[test]
    fn absolute_form_target_authority_replaces_host() {
        let h = head(b"GET http://a/x?y HTTP/1.1\r\nHost: b\r\n\r\n");
        assert_eq!(h.target_form, TargetForm::Absolute);
        assert_eq!(h.headers.get_all("host").iter().collect::<Vec<_>>(), ["a"]);
        assert_eq!(h.target.path(), "/x");
    }

    #[test]
    fn http10_absolute_form_without_host_gets_the_target_authority_as_host() {
        let h = head(b"GET http://a:8080/ HTTP/1.0\r\n\r\n");
        assert_eq!(h.headers["host"], "a:8080");
    }

    #[test]
    fn http11_absolute_form_without_host_is_400() {
        rejected(
            b"GET http://a/ HTTP/1.1\r\nX: y\r\n\r\n",
            HeadError::MissingHost,
            400,
        );
    }

    #[test]
    fn absolute_form_without_a_host_is_400() {
        rejected(
            b"GET http:/x HTTP/1.1\r\nHost: a\r\n\r\n",
            HeadError::InvalidTarget,
            400,
        );
    }

    #[test]
    fn connect_takes_authority_form_with_a_port() {
        let h = head(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
        assert_eq!(h.target_form, TargetForm::Authority);
        assert_eq!(h.target.authority().unwrap().as_str(), "example.com:443");
        assert_eq!(h.headers["host"], "example.com:443");
    }

    #[test]
    fn connect_without_authority_form_or_port_is_400() {
        rejected(
            b"CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n",
            HeadError::TargetFormNotAllowed,
            400,
        );
        rejected(
            b"CONNECT http://a:1/ HTTP/1.1\r\nHost: a\r\n\r\n",
            HeadError::TargetFormNotAllowed,
            400,
        );
        rejected(
            b"CONNECT example.com HTTP/1.1\r\nHost: a\r\n\r\n",
            HeadError::InvalidTarget,
            400,
        );
        rejected(
            b"CONNECT u@example.com:1 HTTP/1.1\r\nHost: a\r\n\r\n",
            HeadError::InvalidTarget,
            400,
        );
    }

    #[test]
    fn authority_form_for_a_method_other_than_connect_is_400() {
        rejected(
            b"GET example.com:80 HTTP/1.1\r\nHost: a\r\n\r\n",
            HeadError::TargetFormNotAllowed,
            400,
        );
    }

    #[test]
    fn asterisk_form_is_for_options_only() {
        let h = head(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(h.target_form, TargetForm::Asterisk);
        rejected(
            b"GET * HTTP/1.1\r\nHost: a\r\n\r\n",
            HeadError::TargetFormNotAllowed,
            400,
        );
    }

    // Host (RFC 9112 §3.2).

    #[test]
    fn http11_without_host_is_400() {
        rejected(
            b"GET / HTTP/1.1\r\nX: y\r\n\r\n",
            HeadError::MissingHost,
            400,
        );
    }

    #[test]
    fn http10_without_host_is_taken() {
        assert!(head(b"GET / HTTP/1.0\r\n\r\n")
            .headers
            .get("host")
            .is_none());
    }

    #[test]
    fn two_host_headers_are_400_even_when_equal() {
        rejected(
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            HeadError::DuplicateHost,
            400,
        );
        rejected(
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
            HeadError::DuplicateHost,
            400,
        );
        rejected(
            b"GET / HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n",
            HeadError::DuplicateHost,
            400,
        );
    }

    #[test]
    fn an_invalid_host_value_is_400() {
        rejected(
            b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n",
            HeadError::InvalidHost,
            400,
        );
        rejected(
            b"GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n",
            HeadError::InvalidHost,
            400,
        );
        rejected(
            b"GET / HTTP/1.1\r\nHost: a:1:2\r\n\r\n",
            HeadError::InvalidHost,
            400,
        );
        rejected(
            b"GET / HTTP/1.1\r\nHost: a?b\r\n\r\n",
            HeadError::InvalidHost,
            400,
        );
        rejected(
            b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            HeadError::InvalidHost,
            400,
        );
        rejected(
            b"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n",
            HeadError::InvalidHost,
            400,
        );
        rejected(
            b"GET / HTTP/1.1\r\nHost: a:port\r\n\r\n",
            HeadError::InvalidHost,
            400,
        );
        rejected(
            b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
            HeadError::InvalidHost,
            400,
        );
    }

    #[test]
    fn hosts_with_ports_and_ip_literals_are_valid() {
        for host in ["a:80", "127.0.0.1:8080", "[::1]:443", "my_host.local", ""] {
            let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
            assert_eq!(head(req.as_bytes()).headers["host"], host);
        }
    }

    // Framing (RFC 9112 §6.3) and request smuggling.

    #[test]
    fn content_length_gives_a_sized_body() {
        let h = head(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 42\r\n\r\n");
        assert_eq!(h.framing, BodyFraming::Length(42));
        let h = head(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(h.framing, BodyFraming::Length(0));
        assert!(h.framing.is_empty());
    }

    #[test]
    fn chunked_gives_a_chunked_body() {
        for te in ["chunked", "Chunked", "CHUNKED", " chunked ", ", chunked"] {
            let req = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {te}\r\n\r\n");
            assert_eq!(head(req.as_bytes()).framing, BodyFraming::Chunked, "{te:?}");
        }
    }

    #[test]
    fn content_length_beside_chunked_is_400() {
        rejected(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            HeadError::ContentLengthWithTransferEncoding,
            400,
        );
        rejected(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            HeadError::ContentLengthWithTransferEncoding,
            400,
        );
    }

    #[test]
    fn two_different_content_lengths_are_400() {
        rejected(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            HeadError::DuplicateContentLength,
            400,
        );
    }

    #[test]
    fn two_equal_content_lengths_are_400() {
        rejected(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            HeadError::DuplicateContentLength,
            400,
        );
    }

    #[test]
    fn a_content_length_list_is_400() {
        rejected(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
            HeadError::InvalidContentLength,
            400,
        );
    }

    #[test]
    fn a_content_length_that_is_not_digits_is_400() {
        for cl in ["+5", "-1", "5 5", "0x10", "five", "", "1.0"] {
            let req = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {cl}\r\n\r\n");
            rejected(req.as_bytes(), HeadError::InvalidContentLength, 400);
        }
    }

    #[test]
    fn a_content_length_past_u64_is_400() {
        rejected(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n",
            HeadError::InvalidContentLength,
            400,
        );
        let h = head(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\n");
        assert_eq!(h.framing, BodyFraming::Length(u64::MAX));
    }

    #[test]
    fn an_overlong_content_length_is_400() {
        let mut req = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: ".to_vec();
        req.extend(std::iter::repeat_n(b'0', 200));
        req.extend_from_slice(b"5\r\n\r\n");
        rejected(&req, HeadError::FramingHeaderTooLong, 400);
    }

    #[test]
    fn an_overlong_transfer_encoding_is_400() {
        let te = format!("{}chunked", " ".repeat(0) + &"x, ".repeat(30));
        let req = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {te}\r\n\r\n");
        rejected(req.as_bytes(), HeadError::FramingHeaderTooLong, 400);
    }

    #[test]
    fn transfer_encoding_not_ending_in_chunked_is_400() {
        for te in [
            "gzip",
            "chunked, gzip",
            "identity",
            "",
            "chunked;x=1",
            "chunked, chunked",
        ] {
            let req = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {te}\r\n\r\n");
            rejected(
                req.as_bytes(),
                HeadError::TransferEncodingNotChunkedLast,
                400,
            );
        }
    }

    #[test]
    fn chunked_split_over_two_transfer_encoding_lines_counts_the_last_line() {
        rejected(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
            HeadError::TransferEncodingNotChunkedLast,
            400,
        );
        rejected(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            HeadError::TransferEncodingNotChunkedLast,
            400,
        );
    }

    #[test]
    fn another_coding_before_chunked_is_501() {
        rejected(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            HeadError::UnsupportedTransferCoding,
            501,
        );
        rejected(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
            HeadError::UnsupportedTransferCoding,
            501,
        );
    }

    #[test]
    fn transfer_encoding_in_http10_is_400() {
        rejected(
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            HeadError::TransferEncodingInHttp10,
            400,
        );
    }

    #[test]
    fn a_framing_header_name_in_any_case_is_judged() {
        rejected(
            b"POST / HTTP/1.1\r\nHost: a\r\ncontent-LENGTH: 5\r\nTRANSFER-encoding: chunked\r\n\r\n",
            HeadError::ContentLengthWithTransferEncoding,
            400,
        );
    }

    #[test]
    fn framing_header_lookalikes_do_not_frame() {
        let h = head(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Lengthy: 5\r\nX-Transfer-Encoding: chunked\r\n\r\n");
        assert_eq!(h.framing, BodyFraming::None);
    }

    // Limits.

    #[test]
    fn a_head_over_the_byte_limit_is_431_complete_or_not() {
        let limits = HeadLimits {
            max_head_bytes: 64,
            max_headers: 100,
        };
        let big = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n", "v".repeat(64));
        assert_eq!(
            parse_request(big.as_bytes(), &limits).map(|_| ()),
            Err(HeadError::HeadTooLarge)
        );
        assert_eq!(
            parse_request(&big.as_bytes()[..70], &limits).map(|_| ()),
            Err(HeadError::HeadTooLarge)
        );
        assert_eq!(HeadError::HeadTooLarge.status().as_u16(), 431);
        // Exactly at the limit is fine.
        let exact = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "v".repeat(64 - 32)
        );
        assert_eq!(exact.len(), 64);
        assert!(parse_request(exact.as_bytes(), &limits).unwrap().is_some());
    }

    #[test]
    fn a_head_over_the_limit_arriving_in_pieces_is_431() {
        let limits = HeadLimits {
            max_head_bytes: 100,
            max_headers: 100,
        };
        let mut parser = RequestParser::new(limits);
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: a\r\n"[..]);
        assert_eq!(parser.parse(&mut buf), Ok(None));
        let mut outcome = Ok(None);
        for _ in 0..20 {
            buf.extend_from_slice(b"X-Filler: 1234567\r\n");
            outcome = parser.parse(&mut buf);
            if outcome.is_err() {
                break;
            }
        }
        assert_eq!(outcome, Err(HeadError::HeadTooLarge));
    }

    #[test]
    fn more_fields_than_the_limit_is_431() {
        let limits = HeadLimits {
            max_head_bytes: 1 << 16,
            max_headers: 3,
        };
        let ok = b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n";
        assert!(parse_request(ok, &limits).unwrap().is_some());
        let over = b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        assert_eq!(
            parse_request(over, &limits).map(|_| ()),
            Err(HeadError::TooManyHeaders)
        );
        assert_eq!(HeadError::TooManyHeaders.status().as_u16(), 431);
    }

    #[test]
    fn many_fields_beyond_the_inline_spans_are_kept() {
        let mut req = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 0..90 {
            req.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        let h = head(&req);
        assert_eq!(h.headers.len(), 91);
        assert_eq!(h.headers["x-89"], "89");
    }

    // Connection facts.

    #[test]
    fn keep_alive_follows_version_and_connection() {
        let cases: [(&[u8], bool); 7] = [
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                false,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, CLOSE\r\n\r\n",
                false,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n",
                false,
            ),
            (b"GET / HTTP/1.0\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
            (
                b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
                false,
            ),
        ];
        for (req, keep) in cases {
            assert_eq!(
                head(req).keep_alive,
                keep,
                "{:?}",
                String::from_utf8_lossy(req)
            );
        }
    }

    #[test]
    fn expect_100_continue_is_reported_for_http11_only() {
        let h =
            head(b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n");
        assert!(h.expect_continue);
        let h = head(b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n");
        assert!(!h.expect_continue);
        let h = head(b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: something-else\r\n\r\n");
        assert!(!h.expect_continue);
    }

    #[test]
    fn an_upgrade_needs_the_connection_option_and_http11() {
        let h =
            head(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
        assert!(h.upgrade);
        let h = head(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n");
        assert!(!h.upgrade);
        let h = head(b"GET / HTTP/1.0\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n");
        assert!(!h.upgrade);
    }

    // Resuming.

    #[test]
    fn a_head_arriving_a_byte_at_a_time_parses_like_one_piece() {
        let whole = b"\r\nPOST /upload?x=1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nX-Long: 0123456789\r\n\r\n5\r\nhello";
        let (expected, used) = parse(whole).unwrap().unwrap();
        let mut parser = RequestParser::new(HeadLimits::default());
        let mut buf = BytesMut::new();
        for (i, &b) in whole.iter().enumerate() {
            buf.extend_from_slice(&[b]);
            match parser.parse(&mut buf).unwrap() {
                None => assert!(i + 1 < used, "complete at {i}"),
                Some(head) => {
                    assert_eq!(i + 1, used);
                    assert_eq!(head, expected);
                    return;
                }
            }
        }
        panic!("never complete");
    }

    #[test]
    fn the_first_error_is_reported_whatever_the_cut() {
        // A space before a colon comes before a bare LF: every cut must say so.
        let bad = b"GET / HTTP/1.1\r\nHost: a\r\nX-A : 1\r\nX-B: 2\n\r\n";
        for cut in 1..bad.len() {
            let mut parser = RequestParser::new(HeadLimits::default());
            let mut buf = BytesMut::from(&bad[..cut]);
            let first = parser.parse(&mut buf);
            buf.extend_from_slice(&bad[cut..]);
            let outcome = match first {
                Ok(None) => parser.parse(&mut buf),
                other => other,
            };
            assert_eq!(outcome, Err(HeadError::SpaceBeforeColon), "cut {cut}");
        }
    }

    #[test]
    fn a_reset_parser_takes_a_new_buffer() {
        let mut parser = RequestParser::new(HeadLimits::default());
        let mut buf = BytesMut::from(&b"GET /first HTTP/1.1\r\nHost: a\r\nX-Long-Header: aaaa"[..]);
        assert_eq!(parser.parse(&mut buf), Ok(None));
        parser.reset();
        let mut other = BytesMut::from(&b"GET /second HTTP/1.1\r\nHost: b\r\n\r\n"[..]);
        assert_eq!(
            parser.parse(&mut other).unwrap().unwrap().target.path(),
            "/second"
        );
        // Without a reset a shorter buffer is noticed, not indexed out of bounds.
        let mut buf = BytesMut::from(&b"GET /first HTTP/1.1\r\nHost: a\r\nX-Long-Header: aaaa"[..]);
        assert_eq!(parser.parse(&mut buf), Ok(None));
        let mut short = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: b\r\n\r\n"[..]);
        assert!(parser.parse(&mut short).unwrap().is_some());
    }
}
