//! The stream layer: one request and its response, whichever protocol carried them.
//!
//! A stream is a `Request<sinew_stream::RequestBody>` (HTTP/1 and HTTP/2 from Sinew's
//! codec, `sinew_codec`; the RPC codecs will produce the same) and a `Response<ResponseBody>`.
//! [`handler`] runs a stream through its listener's filter chain (`crate::filters`) in
//! named phases; [`in_flight`] tracks it until its response body ends, for the
//! connection's idle and stream-idle timeouts. The types every filter shares live here
//! too: the response body ([`body`]), Envoy's response flags ([`flags`]), local replies
//! ([`local_reply`]), what a stream learned of its upstream ([`upstream_info`]) and of its
//! connection ([`conn`]).

pub mod body;
pub(crate) mod conn;
pub mod flags;
pub(crate) mod handler;
pub(crate) mod in_flight;
pub mod local_reply;
pub mod path_normalize;
pub mod upstream_info;
