//! The Redis proxy: a listener that speaks RESP to clients and to a cluster's endpoints
//! as shards (Envoy's `redis_proxy`, twemproxy). Each command is routed by its first
//! key — the longest prefix route the key starts with, else the catch-all cluster —
//! and the key's shard in that cluster is found by consistent hash (`ketama.rs`).
//!
//! - `commands.rs`: what is done with each command (single key, split, local, refused);
//! - `session.rs`: one client connection: pipelined commands, replies in order;
//! - `upstream.rs`: per-worker shard connections that many clients' commands share;
//! - `ketama.rs`, `md5.rs`: twemproxy's continuum.
//!
//! The compiled config here is read by reference from the listener's snapshot, no locks;
//! each cluster's continuum is rebuilt only when its host set changes (endpoints or
//! health), found by comparing the host set's pointer.

mod commands;
mod ketama;
mod md5;
mod session;
mod upstream;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use sinew_upstream::hosts::HostSet;
use sinew_upstream::{Cluster, EndpointState};

pub(crate) use session::serve;

/// The names of the per-class metrics.
pub const METRIC_CLASSES: [&str; 4] = commands::CLASSES;

/// One redis listener's compiled config.
pub struct RedisProxy {
    /// Longest prefix first, so the first that matches is the longest.
    routes: Vec<PrefixRoute>,
    catch_all: Option<Arc<Target>>,
    case_insensitive: bool,
    hashtags: bool,
    hash: sinew_config::redis::RedisHash,
    pub op_timeout: Duration,
    pub max_pipeline: usize,
    pub authorization: Option<Arc<crate::filters::authz::Authorization>>,
    pub metrics: Option<Arc<crate::metrics::RedisMetrics>>,
}

struct PrefixRoute {
    prefix: Box<[u8]>,
    remove_prefix: bool,
    target: Arc<Target>,
}

/// A cluster as a set of shards.
pub(crate) struct Target {
    cluster: Arc<Cluster>,
    ring: ArcSwapOption<Ring>,
}

/// The continuum over a host set's endpoints.
struct Ring {
    hosts: Arc<HostSet>,
    continuum: ketama::Continuum,
    /// Each member's state, and whether it may be used now (healthy, or panic mode).
    shards: Vec<(Arc<EndpointState>, bool)>,
}

/// Where a key goes: its shard, and how much of it to cut (remove_prefix).
pub(crate) struct Routed<'a> {
    pub target: &'a Arc<Target>,
    pub cut: usize,
}

impl RedisProxy {
    /// Compiles the section; `cluster` resolves a (validated) cluster name.
    pub fn compile(
        config: &sinew_config::redis::RedisProxy,
        cluster: impl Fn(&str) -> Arc<Cluster>,
        authorization: Option<Arc<crate::filters::authz::Authorization>>,
        metrics: Option<Arc<crate::metrics::RedisMetrics>>,
    ) -> RedisProxy {
        let mut targets: Vec<Arc<Target>> = Vec::new();
        let mut target = |name: &str| {
            if let Some(t) = targets.iter().find(|t| &*t.cluster.name == name) {
                return t.clone();
            }
            let t = Arc::new(Target {
                cluster: cluster(name),
                ring: ArcSwapOption::empty(),
            });
            targets.push(t.clone());
            t
        };
        let mut routes: Vec<PrefixRoute> = config
            .prefix_routes
            .iter()
            .map(|r| PrefixRoute {
                prefix: match config.case_insensitive {
                    true => r.prefix.to_ascii_lowercase().into_bytes().into(),
                    false => r.prefix.as_bytes().into(),
                },
                remove_prefix: r.remove_prefix,
                target: target(&r.cluster),
            })
            .collect();
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        RedisProxy {
            routes,
            catch_all: config.catch_all_cluster.as_deref().map(target),
            case_insensitive: config.case_insensitive,
            hashtags: config.enable_hashtagging,
            hash: config.hash,
            op_timeout: config.op_timeout,
            max_pipeline: config.max_pipeline.max(1) as usize,
            authorization,
            metrics,
        }
    }

    /// The route of `key`: the longest prefix it starts with, else the catch-all.
    pub(crate) fn route(&self, key: &[u8]) -> Option<Routed<'_>> {
        for r in &self.routes {
            let starts = key.len() >= r.prefix.len()
                && match self.case_insensitive {
                    true => key[..r.prefix.len()].eq_ignore_ascii_case(&r.prefix),
                    false => key.starts_with(&r.prefix),
                };
            if starts {
                let cut = if r.remove_prefix { r.prefix.len() } else { 0 };
                return Some(Routed {
                    target: &r.target,
                    cut,
                });
            }
        }
        self.catch_all
            .as_ref()
            .map(|target| Routed { target, cut: 0 })
    }

    /// The hash that places `key` (as sent to the shard, prefix cut) on its continuum.
    pub(crate) fn hash(&self, key: &[u8]) -> u32 {
        ketama::hash(self.hash, ketama::hashed_part(key, self.hashtags))
    }
}

/// A shard chosen for a key.
pub(crate) enum Shard {
    /// Usable: its state (address, connect settings).
    Up(Arc<EndpointState>),
    /// Marked unhealthy (failing health checks or ejected), at this address.
    Down(std::net::SocketAddr),
    /// The cluster has no endpoints.
    None,
}

impl Target {
    pub(crate) fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// The shard of a key hash.
    pub(crate) fn shard(&self, hash: u32) -> Shard {
        let hosts = self.cluster.hosts();
        let current = self.ring.load();
        let ring = match &*current {
            Some(ring) if Arc::ptr_eq(&ring.hosts, &hosts) => ring.clone(),
            _ => {
                let ring = Arc::new(Ring::new(Arc::clone(&hosts)));
                self.ring.store(Some(ring.clone()));
                ring
            }
        };
        match ring.continuum.shard(hash) {
            None => Shard::None,
            Some(i) => match &ring.shards[i] {
                (state, true) => Shard::Up(state.clone()),
                (state, false) => Shard::Down(state.address),
            },
        }
    }
}

impl Ring {
    fn new(hosts: Arc<HostSet>) -> Ring {
        let eligible: Vec<std::net::SocketAddr> = hosts.eligible(0).map(|e| e.address()).collect();
        let members: Vec<(String, u32, Arc<EndpointState>)> = hosts
            .members(0)
            .map(|e| (e.address().to_string(), e.weight, e.state.clone()))
            .collect();
        let continuum = ketama::Continuum::new(members.iter().map(|(n, w, _)| (n.as_str(), *w)));
        let shards = members
            .into_iter()
            .map(|(_, _, s)| {
                let up = eligible.contains(&s.address);
                (s, up)
            })
            .collect();
        Ring {
            hosts,
            continuum,
            shards,
        }
    }
}

/// The shard of `key` (as hashed) among `shards` (`ip:port`, weight), by the documented
/// continuum: for tests that check where keys went.
pub fn shard_of(
    shards: &[(String, u32)],
    hash: sinew_config::redis::RedisHash,
    key: &[u8],
) -> Option<usize> {
    ketama::Continuum::new(shards.iter().map(|(n, w)| (n.as_str(), *w)))
        .shard(ketama::hash(hash, key))
}
