//! Request/response RPC protocols (SOFA Bolt, Dubbo): the one interface a protocol
//! implements so that Sinew's RPC proxy routes, balances, retries and times out its
//! calls the same way whatever the protocol.
//!
//! A codec only frames. It finds where a message ends, reads the few fields routing
//! needs (service, method, version, group, headers) without decoding arguments, rewrites
//! the request id so that many clients' calls can share one upstream connection, and
//! builds the protocol's own messages for what the proxy answers itself: heartbeat acks
//! and errors (a proxy-made error reaches the client as that protocol's error, as a gRPC
//! status does for gRPC). Everything else of a message is forwarded as the bytes it came
//! in.

use bytes::{Bytes, BytesMut};

/// What a frame is, as far as the proxy cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// A call that wants a response.
    Request,
    /// A call that wants none.
    OneWay,
    Response,
    /// A keep-alive probe: the proxy answers it on the connection it came from.
    Heartbeat,
    HeartbeatAck,
}

/// One whole message: its kind, its request id, and its bytes as read.
#[derive(Debug)]
pub struct Frame {
    pub kind: FrameKind,
    pub request_id: u64,
    pub bytes: BytesMut,
}

/// The fields of a call that routing and policy look at. Empty strings where the
/// protocol or the message has none.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CallInfo {
    /// The interface called (`com.example.EchoService`), without version.
    pub service: String,
    pub method: String,
    pub version: String,
    pub group: String,
    /// The protocol's headers or attachments, in the order they came.
    pub headers: Vec<(String, String)>,
}

/// Why the proxy answers a call itself; each codec maps it to its protocol's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyError {
    /// No route takes the call.
    NoRoute,
    /// No endpoint could be reached or none is healthy.
    Unavailable,
    /// No response within the route's timeout.
    Timeout,
    /// A circuit breaker or a rate limit refused the call.
    Overloaded,
    /// Authorization denied the call.
    Denied,
}

/// How a response went, read from its protocol status (for retries, outlier detection
/// and metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseClass {
    Success,
    /// The server ran the call and it failed (an application exception).
    ServerError,
    /// The server could not take the call (busy, no such service): safe to retry.
    Unavailable,
    /// The server says the call timed out.
    Timeout,
    /// Anything else the protocol calls an error.
    Error,
}

/// A stream of bytes that is not this protocol, or a message past a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError(pub String);

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CodecError {}

/// Whether the first bytes of a connection are a protocol's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sniffed {
    Yes,
    No,
    /// Too few bytes to tell.
    NeedMore,
}

/// How much of a request [`RpcCodec::error_reply`] and [`RpcCodec::heartbeat_ack`] may
/// read: the proxy keeps only this much of a call it has sent on.
pub const REPLY_CONTEXT_BYTES: usize = 64;

/// What [`RpcCodec::edit_headers`] does to a call's headers, as key/value pairs.
pub type HeaderEdit<'a> = dyn FnMut(&mut Vec<(String, String)>) + 'a;

/// One request/response RPC protocol.
pub trait RpcCodec: Send + Sync + 'static {
    /// Its name in configs, metrics and logs (`bolt`).
    fn name(&self) -> &'static str;

    /// Whether a connection starting with `first` speaks this protocol.
    fn sniff(&self, first: &[u8]) -> Sniffed;

    /// Takes one whole frame off the front of `buf`, or None when more bytes are needed.
    /// An error means the stream cannot be read on: the connection is closed.
    fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, CodecError>;

    /// The routing fields of a request.
    fn call_info(&self, request: &Frame) -> CallInfo;

    /// Rewrites a frame's request id (in its bytes and in `frame.request_id`).
    fn set_request_id(&self, frame: &mut Frame, id: u64);

    /// How a response went.
    fn response_class(&self, response: &Frame) -> ResponseClass;

    /// The protocol's error response to `request`, made by the proxy from no more than
    /// its first [`REPLY_CONTEXT_BYTES`]. `message` is carried where the protocol has a
    /// place for text that its clients show.
    fn error_reply(&self, request: &Frame, error: ProxyError, message: &str) -> Bytes;

    /// The protocol's answer to a heartbeat, or None when it wants none (a one-way
    /// event).
    fn heartbeat_ack(&self, heartbeat: &Frame) -> Option<Bytes>;

    /// Rewrites a request's headers (attachments): `edit` gets them as key/value pairs
    /// in their order and spelling, and the frame is re-encoded with what it leaves.
    /// False, with the frame untouched, when the protocol (or this message) does not
    /// allow it: the default, for codecs that cannot re-encode their headers cheaply.
    fn edit_headers(&self, request: &mut Frame, edit: &mut HeaderEdit<'_>) -> bool {
        let _ = (request, edit);
        false
    }
}
