//! The resources a proxy holds from xDS, and the one config they make together.
//!
//! Warming follows Envoy: an EDS cluster is ready once its `ClusterLoadAssignment` has
//! arrived (an empty one counts), and a listener is ready once its route configuration
//! has arrived and every cluster it can send to is ready. What is not ready is left out
//! of the config and reported as warming; it goes in with the update that completes it,
//! or when its config source's `initial_fetch_timeout` (15 s unless set) runs out: then
//! a cluster serves with no endpoints and a listener with no routes, as Envoy's do.
//! Route configurations and endpoint assignments that nothing refers to any more are
//! dropped, as Envoy unsubscribes from them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sinew_config::model;
use sinew_config::Config;

use crate::cluster::Endpoints;
use crate::{cluster, endpoint, listener, route, Ctx, XdsError};

/// One resource type, as the model sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceType {
    Listener,
    RouteConfiguration,
    Cluster,
    ClusterLoadAssignment,
}

#[derive(Debug, Clone)]
struct HeldListener {
    listener: model::Listener,
    rds: Option<String>,
    /// How long it waits for `rds`, counted from `since`.
    fetch_timeout: Option<Duration>,
    /// When it started waiting for `rds` (kept across updates naming the same one).
    since: Instant,
}

#[derive(Debug, Clone)]
struct HeldCluster {
    cluster: model::Cluster,
    endpoints: Endpoints,
    /// How long an EDS cluster waits for its endpoints, counted from `since`.
    fetch_timeout: Option<Duration>,
    /// When it started waiting (kept across updates naming the same assignment).
    since: Instant,
}

/// Every accepted resource, by name.
#[derive(Debug, Clone, Default)]
pub struct Resources {
    listeners: BTreeMap<String, HeldListener>,
    routes: BTreeMap<String, model::RouteConfig>,
    clusters: BTreeMap<String, HeldCluster>,
    /// Shared, so that holding the next set of resources does not copy every endpoint.
    assignments: BTreeMap<String, Arc<Vec<model::Endpoint>>>,
    /// Listeners the last assembly served. Warming holds a listener back only until it
    /// first serves; after that a cluster it names that goes missing is served as an
    /// empty one (503s, as Envoy answers for an unknown cluster) rather than closing
    /// the port under its clients.
    active: BTreeSet<String>,
    /// The time the last assembly was made for.
    assembled_at: Option<Instant>,
}

/// A listener or cluster left out until what it waits for arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warming {
    /// As errors name resources: `listener "web"`, `cluster "svc"`.
    pub resource: String,
    /// `route configuration "routes"`, `cluster "svc"`, `the endpoints of "svc"`.
    pub waits_for: String,
}

impl std::fmt::Display for Warming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} waits for {}", self.resource, self.waits_for)
    }
}

/// A change to one resource type: resources added or replaced, names removed, and
/// whether `updated` is the whole set (state of the world for listeners and clusters).
pub struct Change<T> {
    pub updated: Vec<T>,
    pub removed: Vec<String>,
    pub complete: bool,
}

/// The config the resources make, on top of the static one.
#[derive(Debug, Clone)]
pub struct Assembled {
    pub config: Config,
    /// Listeners and clusters left out until what they wait for arrives, with why.
    pub warming: Vec<Warming>,
    /// Listeners and clusters served without what they waited for, its
    /// `initial_fetch_timeout` past.
    pub timed_out: Vec<String>,
    /// For each listener, route configuration and cluster of `config`, the resource it
    /// came from (None for the static config's own).
    origins: Origins,
}

#[derive(Debug, Clone, Default)]
struct Origins {
    listeners: Vec<Option<String>>,
    route_configs: Vec<Option<String>>,
    clusters: Vec<Option<String>>,
}

impl Resources {
    pub fn listeners(&self, change: Change<Listener>) -> Result<Resources, XdsError> {
        let mut mapped = Vec::new();
        let now = Instant::now();
        for l in &change.updated {
            let m = listener::map(l)?;
            let ctx = Ctx::new("listener", &m.name);
            let model = from_json(&ctx, m.json)?;
            let since = match self.listeners.get(&m.name) {
                Some(held) if held.rds == m.rds => held.since,
                _ => now,
            };
            mapped.push((
                m.name,
                HeldListener {
                    listener: model,
                    rds: m.rds,
                    fetch_timeout: m.rds_fetch_timeout,
                    since,
                },
            ));
        }
        let mut next = self.clone();
        apply(
            &mut next.listeners,
            mapped,
            &change.removed,
            change.complete,
        );
        next.prune();
        Ok(next)
    }

    pub fn routes(&self, change: Change<RouteConfiguration>) -> Result<Resources, XdsError> {
        let mut mapped = Vec::new();
        for r in &change.updated {
            let ctx = Ctx::new("route_configuration", &r.name);
            let model: model::RouteConfig = from_json(&ctx, route::map(r)?)?;
            mapped.push((r.name.clone(), model));
        }
        let mut next = self.clone();
        // Route configurations are asked for by name: one missing from a response is
        // unchanged, not gone.
        apply(&mut next.routes, mapped, &change.removed, false);
        next.prune();
        Ok(next)
    }

    pub fn clusters(&self, change: Change<Cluster>) -> Result<Resources, XdsError> {
        let mut mapped = Vec::new();
        let now = Instant::now();
        for c in &change.updated {
            let m = cluster::map(c)?;
            let ctx = Ctx::new("cluster", &m.name);
            let model = from_json(&ctx, m.json)?;
            let since = match self.clusters.get(&m.name) {
                Some(held) if held.endpoints == m.endpoints => held.since,
                _ => now,
            };
            mapped.push((
                m.name,
                HeldCluster {
                    cluster: model,
                    endpoints: m.endpoints,
                    fetch_timeout: m.fetch_timeout,
                    since,
                },
            ));
        }
        let mut next = self.clone();
        apply(&mut next.clusters, mapped, &change.removed, change.complete);
        next.prune();
        Ok(next)
    }

    pub fn assignments(
        &self,
        change: Change<ClusterLoadAssignment>,
    ) -> Result<Resources, XdsError> {
        let mut mapped = Vec::with_capacity(change.updated.len());
        for a in change.updated {
            let name = a.cluster_name.clone();
            mapped.push((name, Arc::new(endpoint::endpoints(a)?)));
        }
        let mut next = self.clone();
        apply(&mut next.assignments, mapped, &change.removed, false);
        next.prune();
        Ok(next)
    }

    /// The route configuration names the listeners use (what to subscribe to over RDS).
    pub fn wanted_routes(&self) -> Vec<String> {
        let names: BTreeSet<&String> = self
            .listeners
            .values()
            .filter_map(|l| l.rds.as_ref())
            .collect();
        names.into_iter().cloned().collect()
    }

    /// The endpoint assignment names the EDS clusters use (what to subscribe to over EDS).
    pub fn wanted_assignments(&self) -> Vec<String> {
        let names: BTreeSet<&String> = self
            .clusters
            .values()
            .filter_map(|c| match &c.endpoints {
                Endpoints::Eds(name) => Some(name),
                Endpoints::Inline => None,
            })
            .collect();
        names.into_iter().cloned().collect()
    }

    fn prune(&mut self) {
        let routes: BTreeSet<String> = self.wanted_routes().into_iter().collect();
        self.routes.retain(|name, _| routes.contains(name));
        let assignments: BTreeSet<String> = self.wanted_assignments().into_iter().collect();
        self.assignments
            .retain(|name, _| assignments.contains(name));
    }

    /// The next moment a listener or cluster stops waiting (its `initial_fetch_timeout`
    /// runs out) after the last assembly: assemble again then.
    pub fn next_deadline(&self) -> Option<Instant> {
        let listeners = self.listeners.values().filter_map(|l| {
            let rds = l.rds.as_ref()?;
            (!self.routes.contains_key(rds)).then_some(l.since + l.fetch_timeout?)
        });
        let clusters = self.clusters.values().filter_map(|c| match &c.endpoints {
            Endpoints::Eds(name) if !self.assignments.contains_key(name) => {
                Some(c.since + c.fetch_timeout?)
            }
            _ => None,
        });
        listeners
            .chain(clusters)
            .filter(|deadline| self.assembled_at.is_none_or(|at| *deadline > at))
            .min()
    }

    /// The static config with every ready resource added. Remembers which listeners it
    /// served (see `active`), so keep the `Resources` whose assembly goes live.
    pub fn assemble(&mut self, base: &Config) -> Assembled {
        self.assemble_at(base, Instant::now())
    }

    /// [`Resources::assemble`] as of `now`, for the fetch timeouts.
    pub fn assemble_at(&mut self, base: &Config, now: Instant) -> Assembled {
        self.assembled_at = Some(now);
        let waited_out =
            |since: Instant, timeout: Option<Duration>| timeout.is_some_and(|t| now >= since + t);
        let mut timed_out = Vec::new();
        let mut config = base.clone();
        let mut origins = Origins {
            listeners: vec![None; config.listeners.len()],
            route_configs: vec![None; config.route_configs.len()],
            clusters: vec![None; config.clusters.len()],
        };
        let mut warming = Vec::new();
        let static_clusters: BTreeSet<&str> =
            base.clusters.iter().map(|c| c.name.as_str()).collect();
        let mut ready_clusters: BTreeSet<&str> = static_clusters.clone();
        let mut placeholders: BTreeSet<String> = BTreeSet::new();
        for (name, held) in &self.clusters {
            let cluster = match &held.endpoints {
                Endpoints::Inline => held.cluster.clone(),
                Endpoints::Eds(service) => match self.assignments.get(service) {
                    Some(endpoints) => {
                        let mut c = held.cluster.clone();
                        c.endpoints = endpoints.to_vec();
                        c
                    }
                    None if waited_out(held.since, held.fetch_timeout) => {
                        timed_out.push(format!(
                            "cluster {name:?} serves without endpoints: those of {service:?} \
                             did not arrive within its initial_fetch_timeout"
                        ));
                        held.cluster.clone()
                    }
                    None => {
                        warming.push(Warming {
                            resource: format!("cluster {name:?}"),
                            waits_for: format!("the endpoints of {service:?}"),
                        });
                        continue;
                    }
                },
            };
            ready_clusters.insert(name);
            config.clusters.push(cluster);
            origins.clusters.push(Some(format!("cluster {name:?}")));
        }
        let mut added_routes: BTreeSet<String> = BTreeSet::new();
        for (name, held) in &self.listeners {
            let empty_routes;
            let route_config = match &held.rds {
                Some(rds) => match self.routes.get(rds) {
                    Some(r) => Some(r),
                    None if waited_out(held.since, held.fetch_timeout) => {
                        timed_out.push(format!(
                            "listener {name:?} serves without routes (404): route \
                             configuration {rds:?} did not arrive within its \
                             initial_fetch_timeout"
                        ));
                        empty_routes = empty_route_config(rds);
                        Some(&empty_routes)
                    }
                    None => {
                        warming.push(Warming {
                            resource: format!("listener {name:?}"),
                            waits_for: format!("route configuration {rds:?}"),
                        });
                        continue;
                    }
                },
                None => None,
            };
            let mut targets = BTreeSet::new();
            listener_clusters(&held.listener, route_config, &mut targets);
            let missing: Vec<String> = targets
                .into_iter()
                .filter(|c| !ready_clusters.contains(c.as_str()) && !placeholders.contains(c))
                .collect();
            if let Some(first) = missing.first() {
                if !self.active.contains(name) {
                    warming.push(Warming {
                        resource: format!("listener {name:?}"),
                        waits_for: format!("cluster {first:?}"),
                    });
                    continue;
                }
                for cluster in missing {
                    let empty: model::Cluster = serde_json::from_value(
                        serde_json::json!({"name": cluster, "endpoints": []}),
                    )
                    .expect("an empty cluster");
                    config.clusters.push(empty);
                    origins
                        .clusters
                        .push(Some(format!("cluster {cluster:?} (missing, served empty)")));
                    placeholders.insert(cluster);
                }
            }
            if let Some(r) = route_config {
                // Listeners may share a route configuration; one that shares a static
                // route configuration's name goes in too, for the checks to refuse.
                if added_routes.insert(r.name.clone()) {
                    config.route_configs.push(r.clone());
                    origins
                        .route_configs
                        .push(Some(format!("route_configuration {:?}", r.name)));
                }
            }
            config.listeners.push(held.listener.clone());
            origins.listeners.push(Some(format!("listener {name:?}")));
        }
        self.active = config.listeners.iter().map(|l| l.name.clone()).collect();
        Assembled {
            config,
            warming,
            timed_out,
            origins,
        }
    }
}

impl Assembled {
    /// Names the resource a config error path (`listeners[3].http.route_config`) points
    /// into: `listener "web": http.route_config`. Paths into the static config stay as
    /// they are.
    pub fn blame(&self, path: &str) -> String {
        let lists = [
            ("listeners[", &self.origins.listeners),
            ("route_configs[", &self.origins.route_configs),
            ("clusters[", &self.origins.clusters),
        ];
        for (prefix, origins) in lists {
            let Some(rest) = path.strip_prefix(prefix) else {
                continue;
            };
            let Some((index, tail)) = rest.split_once(']') else {
                continue;
            };
            let Ok(index) = index.parse::<usize>() else {
                continue;
            };
            if let Some(Some(resource)) = origins.get(index) {
                let tail = tail.trim_start_matches('.');
                return if tail.is_empty() {
                    resource.clone()
                } else {
                    format!("{resource}: {tail}")
                };
            }
        }
        path.to_string()
    }
}

/// Every cluster a listener may send to.
fn listener_clusters(
    l: &model::Listener,
    route_config: Option<&model::RouteConfig>,
    out: &mut BTreeSet<String>,
) {
    body_clusters(
        l.tcp.as_ref(),
        l.http.as_ref(),
        l.rpc.as_ref(),
        l.redis.as_ref(),
        out,
    );
    for chain in &l.chains {
        body_clusters(
            chain.tcp.as_ref(),
            chain.http.as_ref(),
            chain.rpc.as_ref(),
            chain.redis.as_ref(),
            out,
        );
    }
    hosts_clusters(
        route_config
            .into_iter()
            .flat_map(|r| r.virtual_hosts.iter()),
        out,
    );
}

/// The clusters one filter chain's body sends to (inline routes only; a route
/// configuration by name is the caller's).
fn body_clusters(
    tcp: Option<&model::TcpProxy>,
    http: Option<&model::HttpConnectionManager>,
    rpc: Option<&model::RpcProxy>,
    redis: Option<&sinew_config::redis::RedisProxy>,
    out: &mut BTreeSet<String>,
) {
    if let Some(tcp) = tcp {
        out.extend(tcp.cluster.iter().cloned());
        out.extend(
            tcp.weighted_clusters
                .iter()
                .flatten()
                .map(|w| w.cluster.clone()),
        );
    }
    if let Some(redis) = redis {
        out.extend(redis.clusters().map(|(_, cluster)| cluster.to_string()));
    }
    let inline = http
        .and_then(|h| h.virtual_hosts.as_ref())
        .into_iter()
        .chain(rpc.and_then(|r| r.virtual_hosts.as_ref()))
        .flatten();
    hosts_clusters(inline, out);
}

fn hosts_clusters<'a>(
    hosts: impl Iterator<Item = &'a model::VirtualHost>,
    out: &mut BTreeSet<String>,
) {
    for host in hosts {
        for route in &host.routes {
            out.extend(route.cluster.iter().cloned());
            out.extend(
                route
                    .weighted_clusters
                    .iter()
                    .flatten()
                    .map(|w| w.cluster.clone()),
            );
            out.extend(
                route
                    .request_mirror_policies
                    .iter()
                    .map(|m| m.cluster.clone()),
            );
        }
    }
}

fn apply<T>(
    map: &mut BTreeMap<String, T>,
    updated: Vec<(String, T)>,
    removed: &[String],
    complete: bool,
) {
    if complete {
        map.clear();
    }
    for name in removed {
        map.remove(name);
    }
    map.extend(updated);
}

/// The model type from a mapper's JSON; a failure (a value Sinew's model refuses, such
/// as a duration out of range) names the field.
/// What a listener serves when its route configuration never came: no virtual hosts,
/// so every request is answered 404, as Envoy answers without routes.
fn empty_route_config(name: &str) -> model::RouteConfig {
    serde_json::from_value(serde_json::json!({"name": name, "virtual_hosts": []}))
        .expect("an empty route configuration")
}

fn from_json<T: DeserializeOwned>(ctx: &Ctx, json: Value) -> Result<T, XdsError> {
    serde_path_to_error::deserialize(json).map_err(|e| {
        let path = e.path().to_string();
        ctx.error(
            if path == "." { String::new() } else { path },
            e.into_inner().to_string(),
        )
    })
}

#[cfg(test)]
mod tests;
