//! The router filter, last in every chain: it acts on the route a stream matched —
//! answers directly, redirects, or forwards upstream ([`forward`]) with retries, the
//! route's timeouts, request mirroring ([`mirror`]) and WebSocket tunnels. The upstream
//! request's head is built once ([`upstream_request`]) and kept for retries
//! ([`replay`]); [`headers`] holds the forwarding headers' rules.

pub(crate) mod client_cert;
pub(crate) mod forward;
pub mod headers;
pub(crate) mod mirror;
pub(crate) mod replay;
pub(crate) mod tunnel;
pub(crate) mod upstream_request;
