//! Sinew's protocol layer: codecs that turn bytes into message heads and body frames and
//! back, and own the buffers they read into.
//!
//! This crate is layer 2 of the data plane (see docs/architecture.md): below it, the net layer hands over a connection's bytes; above it, the
//! stream layer sees requests and responses whatever the protocol. Nothing here knows
//! about routes, clusters or filters. A codec decides only what the bytes mean and
//! whether they can be trusted: a head it cannot read unambiguously is an error that
//! carries the status to answer with, never a guess.
//!
//! - [`http1`]: HTTP/1.0 and HTTP/1.1, server and client side, with every
//!   request-smuggling defence applied while the head is parsed (one pass, no second
//!   scanner in front of the parser).
//! - [`http2`]: HTTP/2: the driver that runs a downstream connection's streams on the
//!   connection's own task, and the upstream client that sends each request from its own
//!   task (the protocol itself is the `h2` crate's).
//! - [`rpc`]: the interface of request/response RPC protocols, and [`bolt`] (SOFA Bolt
//!   v1), with [`hessian2`], the little of Hessian 2.0 that routing reads.
//! - [`sniff`]: which protocol a plaintext connection speaks, from its first bytes.
//! - [`resp`]: RESP2 and RESP3 (Redis): frame boundaries without copying, commands as
//!   argument ranges, inline commands.
//! - [`buf`]: the per-worker pool of read buffers, so that an idle connection holds none.

pub mod bolt;
pub mod buf;
pub mod date;
pub mod dubbo;
pub mod hessian2;
pub mod http1;
pub mod http2;
pub mod resp;
pub mod rpc;
pub mod sniff;
