//! `sinew control`: Sinew's control plane.
//!
//! registries ([`registry`]: a directory of YAML, etcd, ZooKeeper's Dubbo providers,
//! Kubernetes Services and EndpointSlices) → the service model
//! ([`services`]) → resources built once per change and viewed per node ([`snapshot`])
//! → the xDS server, state of the world and delta ([`server`]). Registry events are
//! debounced into builds ([`run`]); versions are content hashes, so replicas that read
//! the same registries serve the same versions and a proxy can fail over between them.
//!
//! With `ca:` it is also the mesh CA ([`ca`]): it issues workload certificates on CSRs,
//! serves xDS over TLS (mTLS for proxies that hold a certificate) and sends the trust
//! bundle to every proxy as the SDS secret `ROOTCA`.

pub mod authz;
pub mod ca;
pub mod config;
pub mod policy_check;
pub mod registry;
pub mod run;
pub mod server;
pub mod services;
pub mod snapshot;
mod status;

pub use config::ControlConfig;
pub use run::ControlPlane;
