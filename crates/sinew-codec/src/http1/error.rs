//! Why a head could not be read, and the status a server answers it with.

use std::fmt;

use http::StatusCode;

/// A head that cannot be trusted. Every variant ends the connection: after a malformed
/// head the framing of what follows is unknown. For a request, [`HeadError::status`] is
/// the answer; for an upstream's response the proxy answers 502 whatever the variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeadError {
    /// A line ended in LF without CR (RFC 9112 §2.2 allows accepting it; Sinew refuses,
    /// because hops that disagree about line endings disagree about framing).
    BareLf,
    /// A CR not followed by LF where a line could end.
    BareCr,
    /// A field line starting with whitespace: obsolete line folding (RFC 9112 §5.2).
    ObsFold,
    /// Whitespace between a field name and its colon (RFC 9112 §5.1: MUST be 400).
    SpaceBeforeColon,
    /// A field name that is empty or not a token, or a line with no colon.
    InvalidHeaderName,
    /// A field value with a control character (NUL, bare CR, DEL...).
    InvalidHeaderValue,
    /// The request line's method is not a token.
    InvalidMethod,
    /// The request target is not a URI the form allows.
    InvalidTarget,
    /// Authority-form for a method other than CONNECT, CONNECT without it, or
    /// asterisk-form for a method other than OPTIONS (RFC 9112 §3.2.3, §3.2.4).
    TargetFormNotAllowed,
    /// A request target longer than `http::Uri` can hold (hyper answered 414 too).
    UriTooLong,
    /// Not `HTTP/DIGIT.DIGIT`, or the start line is not three parts.
    InvalidVersion,
    /// A well-formed version whose major is not 1 (RFC 9110 §15.6.6: 505).
    UnsupportedVersion,
    /// The head is longer than `HeadLimits::max_head_bytes`.
    HeadTooLarge,
    /// More field lines than `HeadLimits::max_headers`.
    TooManyHeaders,
    /// `Content-Length` is not one run of digits, or overflows u64.
    InvalidContentLength,
    /// More than one `Content-Length` line, even with equal values (RFC 9112 §6.3 lets a
    /// recipient merge equal values; Sinew refuses, as its head guard did).
    DuplicateContentLength,
    /// `Content-Length` and `Transfer-Encoding` together (RFC 9112 §6.3: "ought to be
    /// handled as an error"; hyper dropped the length and went on).
    ContentLengthWithTransferEncoding,
    /// A request's transfer codings do not end in `chunked` (RFC 9112 §6.3: 400), or
    /// `chunked` appears twice or carries parameters.
    TransferEncodingNotChunkedLast,
    /// A coding other than `chunked` before it: Sinew implements only `chunked`
    /// (RFC 9112 §6.1: SHOULD answer 501; hyper passed such requests on).
    UnsupportedTransferCoding,
    /// `Transfer-Encoding` in an HTTP/1.0 message (RFC 9112 §6.1: faulty framing).
    TransferEncodingInHttp10,
    /// A `Content-Length` or `Transfer-Encoding` value longer than any honest one; the
    /// head guard refused these rather than reading them partly.
    FramingHeaderTooLong,
    /// An HTTP/1.1 request without `Host` (RFC 9112 §3.2: MUST be 400).
    MissingHost,
    /// More than one `Host` line, even with equal values (RFC 9112 §3.2: MUST be 400).
    DuplicateHost,
    /// A `Host` value that is not `host[:port]` (RFC 9112 §3.2: MUST be 400).
    InvalidHost,
    /// A status line whose code is not three digits from 100 to 999, or whose reason
    /// phrase holds a control character.
    InvalidStatus,
}

impl HeadError {
    /// The status a server answers this request head with.
    pub fn status(self) -> StatusCode {
        match self {
            HeadError::HeadTooLarge | HeadError::TooManyHeaders => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            HeadError::UriTooLong => StatusCode::URI_TOO_LONG,
            HeadError::UnsupportedVersion => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            HeadError::UnsupportedTransferCoding => StatusCode::NOT_IMPLEMENTED,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// A short reason, fit for a local reply body and a log line.
    pub fn reason(self) -> &'static str {
        match self {
            HeadError::BareLf => "bare LF in head",
            HeadError::BareCr => "bare CR in head",
            HeadError::ObsFold => "obsolete line folding",
            HeadError::SpaceBeforeColon => "whitespace before header colon",
            HeadError::InvalidHeaderName => "invalid header name",
            HeadError::InvalidHeaderValue => "invalid header value",
            HeadError::InvalidMethod => "invalid method",
            HeadError::InvalidTarget => "invalid request target",
            HeadError::TargetFormNotAllowed => "request target form not allowed for method",
            HeadError::UriTooLong => "request target too long",
            HeadError::InvalidVersion => "invalid HTTP version",
            HeadError::UnsupportedVersion => "HTTP version not supported",
            HeadError::HeadTooLarge => "head too large",
            HeadError::TooManyHeaders => "too many headers",
            HeadError::InvalidContentLength => "invalid Content-Length",
            HeadError::DuplicateContentLength => {
                "ambiguous request framing (Content-Length repeated)"
            }
            HeadError::ContentLengthWithTransferEncoding => {
                "ambiguous request framing (Content-Length with Transfer-Encoding)"
            }
            HeadError::TransferEncodingNotChunkedLast => "Transfer-Encoding not ending in chunked",
            HeadError::UnsupportedTransferCoding => "transfer coding not implemented",
            HeadError::TransferEncodingInHttp10 => "Transfer-Encoding in HTTP/1.0",
            HeadError::FramingHeaderTooLong => "framing header too long",
            HeadError::MissingHost => "missing Host header",
            HeadError::DuplicateHost => "more than one Host header",
            HeadError::InvalidHost => "invalid Host header",
            HeadError::InvalidStatus => "invalid status line",
        }
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for HeadError {}

/// Why a message body (a request's, or an upstream's response) could not be read to its
/// end. The connection it came on cannot be reused.
#[derive(Debug)]
pub enum BodyError {
    Chunked(super::ChunkedError),
    Io(std::io::Error),
    /// The peer closed the connection before the body's end.
    Truncated,
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Chunked(e) => write!(f, "message body: {e}"),
            BodyError::Io(e) => write!(f, "message body: {e}"),
            BodyError::Truncated => f.write_str("message body: connection closed before its end"),
        }
    }
}

impl std::error::Error for BodyError {}
