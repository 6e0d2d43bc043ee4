//! The upstream layer: clusters of endpoints, how one is picked, and how a request gets
//! to it (pooled HTTP/1.1 and HTTP/2 connections, TLS, timeouts on connect).

pub mod body;
pub mod breaker;
pub mod cluster;
pub mod connect;
pub mod dns;
pub mod events;
pub mod health;
pub mod health_check;
pub mod hosts;
pub mod outlier;
pub mod pool;
pub mod request_body;
pub mod send;
pub mod socket;
pub mod tee;

pub use body::UpstreamBody;
pub use breaker::{BreakerCounts, CircuitBreakers, Slot};
pub use cluster::{Cluster, ClusterBuilder, Picked};
pub use connect::ConnectError;
pub use dns::{Resolver, SystemResolver};
pub use events::ClusterEvents;
pub use health::{EndpointHealth, Outcome};
pub use pool::EndpointState;
pub use request_body::{BodyError, RequestBody};
pub use send::{SendError, WireProtocol};
pub use tee::ShadowBody;
