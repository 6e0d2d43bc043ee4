//! Sinew's xDS client: it keeps the proxy subscribed to a control plane and hands every
//! update to a [`ResourceHandler`], which turns it into config (or rejects it).
//!
//! - Transport: one ADS stream for all types, or a stream per type, to the first of the
//!   configured servers that answers, over plaintext or TLS (mTLS when the proxy has a
//!   mesh identity; see [`channel`]); a broken stream reconnects with jittered
//!   exponential backoff, moving on to the next server.
//! - Variants: state of the world (`DiscoveryRequest`/`DiscoveryResponse`) or incremental
//!   (`DeltaDiscoveryRequest`/`DeltaDiscoveryResponse`).
//! - Every response is ACKed with its version and nonce once the handler accepted it, or
//!   NACKed with the handler's message as `error_detail` (and the last accepted version),
//!   after which the last good config keeps serving.
//! - Clusters and listeners are wildcard subscriptions; secrets (SDS), endpoints and
//!   route configurations are subscribed by the names the handler asks for.

mod backoff;
pub mod channel;
mod client;
mod delta;
mod handler;
mod sotw;
mod state;
pub mod type_url;

pub use client::{ClientConfig, Mode, Streams, XdsClient};
pub use handler::{Connection, ResourceHandler, Update, UpdatedResource};
pub use type_url::Kind;

pub use envoy_types::pb::envoy::config::core::v3::Node;
