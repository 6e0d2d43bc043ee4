//! What a stream learned of the upstream that answered it, for the access log and the
//! trace span: the router filter puts it in the response's extensions.

use std::net::SocketAddr;
use std::sync::Arc;

/// The upstream that answered (or failed), for `%UPSTREAM_HOST%` and
/// `%UPSTREAM_CLUSTER%`; the router (`filters::router::forward`) puts it in the response's extensions.
#[derive(Debug, Clone)]
pub struct UpstreamInfo {
    pub host: SocketAddr,
    pub cluster: Arc<str>,
}

impl UpstreamInfo {
    pub fn new(host: SocketAddr, cluster: &sinew_upstream::Cluster) -> Self {
        Self {
            host,
            cluster: cluster.name.clone(),
        }
    }
}
