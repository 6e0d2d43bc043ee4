//! HTTP/1.0 and HTTP/1.1 (RFC 9112): the codec Sinew owns.
//!
//! Bytes in, heads and body frames out; heads and body frames in, bytes out. The codec is
//! sans-IO: it parses from and encodes into `bytes` buffers, and the connection driver
//! that owns the socket decides when to read and write. Parsing is built for a proxy:
//!
//! - **One pass per head.** [`RequestParser`] and [`ResponseParser`] tokenize a head once,
//!   checking every rule while its bytes are in cache, then build the `http` types from
//!   the frozen head (header values share the read buffer; nothing is copied). A head
//!   that arrives in pieces is not re-tokenized on every read: the parser keeps its
//!   place (the start line once read, the span of each whole field line, a value waiting
//!   for its LF) and goes on from there, so each line is read once and the answer, first
//!   error included, is the same however the bytes were cut. Only a line still
//!   incomplete is read again from its start (its name, or the whole request line; a
//!   value is only searched in its new bytes).
//! - **Head timing is the driver's.** The header-read timeout runs from a head's first
//!   byte (the read buffer turning non-empty) to [`RequestParser::parse`] returning it;
//!   the codec keeps no clock.
//! - **Smuggling defences in the parser.** Bare LF anywhere in a head or in chunked
//!   framing, obs-fold, whitespace before a colon, more than one `Content-Length`,
//!   `Content-Length` beside `Transfer-Encoding`, a transfer coding list that does not
//!   end in `chunked`, overlong framing headers, `Transfer-Encoding` in HTTP/1.0,
//!   missing or repeated `Host`: each is an error with the status to answer
//!   ([`HeadError::status`]), and the connection must close after it (its framing cannot
//!   be trusted, so nothing after it on the connection can be either).
//! - **Framing decided once.** A head carries its [`BodyFraming`] (RFC 9112 §6.3) and the
//!   connection facts a server or client needs (keep-alive, `Expect: 100-continue`,
//!   upgrade); [`ChunkedDecoder`] reads chunked bodies without copying their data.
//!
//! Two connection drivers sit on the codec: [`server`] serves a downstream connection,
//! [`client`] runs one exchange at a time on an upstream connection; both hand a
//! connection that switches protocols over as [`Upgraded`].
//!
//! Where hyper (Sinew's HTTP/1 before this codec) and RFC 9112 differ, the codec follows
//! the RFC, and the code says so where it happens.

mod chunked;
pub mod client;
mod encode;
mod error;
mod facts;
mod request;
mod response;
mod scan;
pub mod server;
mod upgrade;

pub use chunked::{ChunkedDecoder, ChunkedError, ChunkedLimits, Frame};
pub use encode::{
    encode_request_head, encode_response_head, write_chunk, write_last_chunk, ChunkSizeLine,
    OutgoingBody,
};
pub use error::{BodyError, HeadError};
pub use request::{parse_request, RequestHead, RequestParser, TargetForm};
pub use response::{parse_response, ResponseHead, ResponseParser};
pub use upgrade::{OnUpgrade, UpgradeError, Upgraded};

/// How the body after a head is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body: a request without `Content-Length` or `Transfer-Encoding`, or a response
    /// that cannot have one (to HEAD, 1xx, 204, 304, 2xx to CONNECT).
    None,
    /// Exactly this many bytes (`Content-Length`; 0 is an empty body).
    Length(u64),
    /// Chunked transfer coding: read with [`ChunkedDecoder`].
    Chunked,
    /// Responses only: the body runs until the server closes the connection.
    CloseDelimited,
}

impl BodyFraming {
    /// The body is known to be empty before reading anything.
    pub fn is_empty(self) -> bool {
        matches!(self, BodyFraming::None | BodyFraming::Length(0))
    }
}

/// Limits on a head. Beyond `max_head_bytes` or `max_headers` the head is refused with
/// 431 (as hyper did).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// The whole head: request or status line, fields and the empty line.
    pub max_head_bytes: usize,
    /// Field lines in the head.
    pub max_headers: usize,
}

impl Default for HeadLimits {
    /// 64 KiB and 100 fields. Sinew's listeners set `max_head_bytes` from
    /// `max_request_headers_kb` (as they set hyper's `max_buf_size`); 100 fields is
    /// hyper's `DEFAULT_MAX_HEADERS`.
    fn default() -> Self {
        HeadLimits {
            max_head_bytes: 64 * 1024,
            max_headers: 100,
        }
    }
}

/// Internals the benches time on their own; not an API.
#[doc(hidden)]
pub mod bench_api {
    use super::scan::FieldSpans;
    use super::HeadError;

    /// The parse without the checks after tokenizing (target forms, Host, framing,
    /// connection facts): what the checks cost is the difference.
    pub fn parse_unchecked(
        buf: &mut bytes::BytesMut,
    ) -> Result<Option<(http::Method, http::Uri, http::HeaderMap)>, HeadError> {
        super::request::parse_unchecked(buf, &super::HeadLimits::default())
    }

    /// The tokenizing pass alone (no `http` types): whether a whole head was found.
    pub fn scan_request(bytes: &[u8]) -> Result<bool, HeadError> {
        let mut spans = FieldSpans::new();
        super::request::scan_only(bytes, 100, &mut spans)
    }
}
