//! The static clusters a gRPC config source names — the control plane's for ADS, and an
//! SDS server's (Istio's `sds-grpc`, a Unix socket to its node agent) — as the addresses
//! Sinew's xDS client dials: `http://ip:port` for a socket address, `unix:PATH` for a
//! pipe. Envoy requires such clusters to be static, so the table comes from the
//! bootstrap and is read whenever a resource, static or from xDS, names one of them.
//!
//! A bootstrap being mapped sees its own table (set for the mapping thread, so two
//! bootstraps checked at once never see each other's); the running proxy installs its
//! bootstrap's table for the resources the control plane sends later.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::address;
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;

use crate::{Ctx, XdsError};

/// What a bootstrap's static clusters say about reaching gRPC services.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GrpcServices {
    /// Each static cluster's endpoints as addresses to dial (clusters whose endpoints
    /// cannot be dialled are left out).
    by_cluster: BTreeMap<String, Vec<String>>,
    /// The cluster `dynamic_resources.ads_config` names: a config source naming it is
    /// the ADS stream itself.
    ads_cluster: Option<String>,
}

/// Where a gRPC config source leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The proxy's own xDS (ADS) stream.
    Ads,
    /// A server of its own, at these addresses (tried in turn).
    Servers(Vec<String>),
}

static INSTALLED: RwLock<Option<Arc<GrpcServices>>> = RwLock::new(None);

thread_local! {
    static MAPPING: RefCell<Option<Arc<GrpcServices>>> = const { RefCell::new(None) };
}

impl GrpcServices {
    /// The table of a bootstrap's static clusters.
    pub fn from_clusters(clusters: &[Cluster], ads_cluster: Option<String>) -> Self {
        let by_cluster = clusters
            .iter()
            .filter_map(|c| {
                let addresses = dial_addresses(c).ok()?;
                (!addresses.is_empty()).then(|| (c.name.clone(), addresses))
            })
            .collect();
        GrpcServices {
            by_cluster,
            ads_cluster,
        }
    }

    /// Makes this the table that resources mapped from now on (from xDS) are read with.
    pub fn install(self) {
        *INSTALLED.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(self));
    }

    /// Runs `f` (a bootstrap's mapping) with this table, on this thread only.
    pub(crate) fn while_mapping<T>(self, f: impl FnOnce() -> T) -> T {
        let previous = MAPPING.with(|m| m.replace(Some(Arc::new(self))));
        let out = f();
        MAPPING.with(|m| *m.borrow_mut() = previous);
        out
    }

    /// Where a config source naming `cluster` leads; None when no static cluster of
    /// that name can be dialled.
    pub(crate) fn resolve(cluster: &str) -> Option<Target> {
        let table = MAPPING
            .with(|m| m.borrow().clone())
            .or_else(|| INSTALLED.read().unwrap_or_else(|e| e.into_inner()).clone())?;
        if table.ads_cluster.as_deref() == Some(cluster) {
            return Some(Target::Ads);
        }
        table
            .by_cluster
            .get(cluster)
            .map(|a| Target::Servers(a.clone()))
    }
}

/// A static cluster's endpoints as addresses the xDS client dials.
pub(crate) fn dial_addresses(cluster: &Cluster) -> Result<Vec<String>, XdsError> {
    let ctx = Ctx::new("cluster", &cluster.name);
    let mut out = Vec::new();
    for locality in cluster.load_assignment.iter().flat_map(|a| &a.endpoints) {
        for endpoint in &locality.lb_endpoints {
            let Some(HostIdentifier::Endpoint(e)) = &endpoint.host_identifier else {
                continue;
            };
            match e.address.as_ref().and_then(|a| a.address.as_ref()) {
                Some(address::Address::Pipe(pipe)) => out.push(format!("unix:{}", pipe.path)),
                _ => {
                    let address =
                        crate::convert::socket_address(&ctx, "address", e.address.clone())?;
                    out.push(format!("http://{address}"));
                }
            }
        }
    }
    Ok(out)
}

/// Whether every endpoint of `cluster` is a Unix socket (a pipe): a channel to a local
/// agent, which Sinew reaches only as a gRPC config source, never as an upstream.
pub(crate) fn is_pipe_only(cluster: &Cluster) -> bool {
    let mut endpoints = cluster
        .load_assignment
        .iter()
        .flat_map(|a| &a.endpoints)
        .flat_map(|l| &l.lb_endpoints)
        .peekable();
    endpoints.peek().is_some()
        && endpoints.all(|e| {
            matches!(
                &e.host_identifier,
                Some(HostIdentifier::Endpoint(e))
                    if matches!(
                        e.address.as_ref().and_then(|a| a.address.as_ref()),
                        Some(address::Address::Pipe(_))
                    )
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A static cluster, read as a bootstrap reads it.
    fn cluster(yaml: &str) -> Cluster {
        let indented: String = yaml.lines().map(|l| format!("    {l}\n")).collect();
        let text = format!("static_resources:\n  clusters:\n  -\n{indented}");
        let map = sinew_config::SourceMap::index(&text);
        let bootstrap = crate::bootstrap::parse(&text, &map).unwrap();
        bootstrap.static_resources.unwrap().clusters.remove(0)
    }

    #[test]
    fn a_pipe_cluster_is_dialled_as_a_unix_socket_and_the_ads_cluster_is_the_stream() {
        let sds = cluster(
            "
name: sds-grpc
type: STATIC
load_assignment:
  cluster_name: sds-grpc
  endpoints:
  - lb_endpoints:
    - endpoint: {address: {pipe: {path: /run/agent/socket}}}
",
        );
        let xds = cluster(
            "
name: xds
load_assignment:
  cluster_name: xds
  endpoints:
  - lb_endpoints:
    - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 15010}}}
",
        );
        assert!(is_pipe_only(&sds) && !is_pipe_only(&xds));
        let table = GrpcServices::from_clusters(&[sds, xds], Some("xds".into()));
        let seen = table.while_mapping(|| {
            (
                GrpcServices::resolve("sds-grpc"),
                GrpcServices::resolve("xds"),
                GrpcServices::resolve("nope"),
            )
        });
        assert_eq!(
            seen,
            (
                Some(Target::Servers(vec!["unix:/run/agent/socket".into()])),
                Some(Target::Ads),
                None
            )
        );
        assert_eq!(
            MAPPING.with(|m| m.borrow().clone()),
            None,
            "the table is the mapping's only"
        );
    }
}
