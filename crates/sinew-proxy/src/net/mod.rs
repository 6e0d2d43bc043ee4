//! The network layer: listening sockets and their per-worker accept loops
//! ([`listener`]), limits on new connections ([`connection_rate_limit`]), the TCP proxy
//! for listeners that do not speak HTTP ([`tcp`]), and the proxy-wide drain
//! ([`drain`]). A listener with filter chains picks one per connection from its first
//! bytes ([`chains`]). RPC and Redis connections start through [`admit`] (TLS, then
//! authorization). An accepted HTTP connection goes up to `protocol`.

pub(crate) mod admit;
pub mod chains;
pub mod connection_rate_limit;
pub mod drain;
pub mod listener;
pub(crate) mod tcp;
