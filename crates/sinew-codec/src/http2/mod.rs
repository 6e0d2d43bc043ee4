//! HTTP/2 (RFC 9113): the driver that serves a downstream connection ([`server`]), and
//! the client connection that carries requests upstream ([`client`]).
//!
//! The `h2` crate does the protocol — frames, HPACK, stream states, flow-control windows,
//! SETTINGS, GOAWAY, and the checks that make a frame or a header block malformed. What
//! Sinew owns is how a connection's streams are run, because that is where the cost was:
//! hyper's server spawned one tokio task per stream and crossed between that task and the
//! connection's for every frame. Here a stream is not a task.
//!
//! - **One task per connection.** [`server::serve`] is the connection's future. It accepts
//!   streams from `h2` and keeps each stream's future (the service's answer, then the
//!   response head, body and trailers going out) in a `FuturesUnordered` it polls itself,
//!   so a stream costs one allocation and no spawn. Each stream has its own waker: a
//!   stream woken by its upstream polls that stream only, not the others, and `h2`'s
//!   connection is then polled once to write what it queued.
//! - **Cancellation by dropping.** A client's `RST_STREAM` (or the connection's end)
//!   drops the stream's future where it is, the service's answer or the response body
//!   with it: whatever it waited on upstream is cancelled and released at once.
//! - **Flow control both ways.** A request body ([`RecvBody`]) opens the client's window
//!   again only as its bytes are handed on, so a reader that stops stops the client; a
//!   response body is sent only as the client's window allows, so a stream never buffers
//!   more than it was granted.
//! - **What a response must not carry.** Fields that only mean something to one HTTP/1
//!   connection (`Connection` and those it names, `Keep-Alive`, `Proxy-Connection`,
//!   `Transfer-Encoding`, `Upgrade`, `TE`) are removed from responses (RFC 9113 §8.2.2;
//!   `h2` refuses to send them), and a response without `Date` gets one.
//!
//! Upstream, [`client`] is the same idea from the other end: a request is sent, and its
//! response awaited, from the request's own task on `h2`'s stream; only the connection's
//! I/O has a task (and a request body still streaming when the response head comes).

mod body;
pub mod client;
pub mod server;

#[cfg(test)]
mod client_tests;
#[cfg(test)]
mod tests;

use std::fmt;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http_body::Body;

pub use body::RecvBody;
pub use client::{handshake, Client, ClientError, ClientSettings, Connection, ResponseBody};
pub use server::{serve, ServerSettings};

/// An HTTP/2 error: the connection's (a protocol error, the socket failing, a GOAWAY
/// with an error code) or one stream's (reset by the client, malformed).
#[derive(Debug)]
pub struct Error(h2::Error);

impl Error {
    /// The peer reset the stream, or sent GOAWAY, with this code (RFC 9113 §7); or `h2`
    /// did, when the peer broke the protocol.
    pub fn reason_code(&self) -> Option<u32> {
        self.0.reason().map(u32::from)
    }

    /// The connection's socket failed (not a protocol error).
    pub fn is_io(&self) -> bool {
        self.0.is_io()
    }
}

impl From<h2::Error> for Error {
    fn from(e: h2::Error) -> Self {
        Error(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// The fields a head's `Connection` names (RFC 9110 §7.6.1): they, like `Connection`
/// itself, mean something to one HTTP/1 connection only, and HTTP/2 has no place for
/// them (RFC 9113 §8.2.2).
fn connection_named_fields(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|list| list.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect()
}

/// Whether `body` is already over (then the head ends the stream); if not and its size
/// is known, `headers` say it in `Content-Length` unless they already do.
fn note_body_length<B: Body>(headers: &mut HeaderMap, body: &B) -> bool {
    let end_of_stream = body.is_end_stream();
    if !end_of_stream {
        if let Some(length) = body.size_hint().exact() {
            headers
                .entry(header::CONTENT_LENGTH)
                .or_insert_with(|| HeaderValue::from(length));
        }
    }
    end_of_stream
}
