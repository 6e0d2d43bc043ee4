//! The RPC proxy: request/response RPC protocols (SOFA Bolt, Dubbo) served with the routing and
//! upstream machinery HTTP uses.
//!
//! A connection's frames are read by its protocol's codec ([`sinew_codec::rpc`]). Each
//! call is routed by the listener's route table as if it were a request to its service
//! (the virtual host's `domains`) at path `/<method>` with its headers, so weighted
//! clusters, subsets, timeouts and retries mean what they mean for HTTP; it is sent over
//! an upstream connection that multiplexes many clients' calls ([`upstream`]), and the
//! response goes back with the client's own request id. Whatever the proxy answers
//! itself (no route, no endpoint, a timeout, a breaker) goes back as the protocol's own
//! error response; heartbeats are answered where they arrive.
//!
//! HTTP's policies apply to calls with their HTTP config and compiled objects: the
//! listener's authorization (per call when a rule reads a request), the route's and
//! virtual host's local rate limits, fault injection and mirroring, metrics and access
//! logs ([`call`], [`mirror`], [`record`], [`outcome`]).

mod call;
mod downstream;
mod mirror;
mod outcome;
mod record;
mod upstream;
mod writer;

use sinew_codec::rpc::RpcCodec;
use sinew_config::model::RpcProtocol;

pub(crate) use downstream::serve;
pub(crate) use outcome::call_metrics;

/// The codec of a protocol.
pub(crate) fn codec(protocol: RpcProtocol) -> &'static dyn RpcCodec {
    match protocol {
        RpcProtocol::Bolt => &sinew_codec::bolt::Bolt,
        RpcProtocol::Dubbo => &sinew_codec::dubbo::Dubbo,
    }
}
