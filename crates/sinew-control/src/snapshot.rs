//! From the service model to Envoy's resources: one build for the whole catalog, then a
//! view per node (a proxy gets the listeners that select it, and every cluster).
//!
//! Every resource carries a version that is a hash of the model it was made from, so a
//! version changes only when content does: rebuilding an unchanged catalog changes
//! nothing, and a node whose resources are untouched by a change is not sent anything.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy,
};
use envoy_types::pb::envoy::config::cluster::v3::{circuit_breakers, CircuitBreakers, Cluster};
use envoy_types::pb::envoy::config::core::v3::{
    address, config_source, socket_address, Address, AggregatedConfigSource, ApiVersion,
    ConfigSource, Metadata, RuntimeFractionalPercent, SocketAddress,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain};
use envoy_types::pb::envoy::config::route::v3::{
    route, route_action, route_match, weighted_cluster, Route, RouteAction, RouteConfiguration,
    RouteMatch, VirtualHost, WeightedCluster,
};
use envoy_types::pb::envoy::extensions::filters::http::local_ratelimit::v3::LocalRateLimit;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::{self, RouteSpecifier},
    http_filter, HttpConnectionManager, HttpFilter, Rds,
};
use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher;
use envoy_types::pb::envoy::r#type::v3::fractional_percent::DenominatorType;
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, TokenBucket};
use envoy_types::pb::google::protobuf::{self as pb, Any};
use prost::Message;
use serde::Serialize;
use sinew_xds_client::Kind;

use crate::services::{Instance, Listener, RateLimit, Service};

/// Everything the registries know, merged.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub services: BTreeMap<String, Service>,
    pub listeners: BTreeMap<String, Listener>,
    /// Instances each registry reported, by registry, then service.
    pub registered: BTreeMap<String, BTreeMap<String, Vec<Instance>>>,
    /// The mesh CA's trust bundle (PEM), when the CA runs.
    pub trust_bundle: Option<String>,
}

/// One resource, encoded once and shared by every stream that sends it.
#[derive(Debug)]
pub struct Entry {
    pub version: String,
    pub any: Any,
}

pub type Entries = BTreeMap<String, Arc<Entry>>;

/// The catalog as Envoy resources.
#[derive(Debug, Default)]
pub struct Built {
    /// SDS secrets every proxy may ask for: the mesh CA's trust bundle (`ROOTCA`).
    pub secrets: Entries,
    pub clusters: Entries,
    pub assignments: Entries,
    /// Listeners with their route configuration (named after the listener; none for a
    /// TCP listener), and the nodes that run them.
    pub listeners: Vec<(Listener, Arc<Entry>, Option<Arc<Entry>>)>,
    /// Problems with the catalog (e.g. a listener address that is not `ip:port`); the
    /// resource at fault is left out and the rest served.
    pub problems: Vec<String>,
    /// False for the placeholder served before the first build: streams send nothing
    /// rather than an empty set that would make proxies drop what they run.
    pub ready: bool,
    /// Listeners left out for a problem (see [`Built::carry_over`]).
    pub left_out: Vec<String>,
}

impl Built {
    pub fn new(catalog: &Catalog) -> Built {
        let mut built = Built {
            ready: true,
            ..Built::default()
        };
        if let Some(pem) = &catalog.trust_bundle {
            let secret = trust_bundle_secret(pem);
            let version = version_of(&("secret", pem));
            built.secrets.insert(
                sinew_ca::ROOT_CA_SECRET.into(),
                entry(Kind::Secret, &secret, version),
            );
        }
        let mut instances: BTreeMap<&str, Vec<&Instance>> = BTreeMap::new();
        for service in catalog.services.values() {
            instances
                .entry(&service.name)
                .or_default()
                .extend(&service.endpoints);
        }
        for services in catalog.registered.values() {
            for (name, list) in services {
                instances.entry(name).or_default().extend(list);
            }
        }
        // A service a route names gets a cluster even with no instances (503s rather
        // than a listener that never warms).
        let mut names: BTreeSet<&str> = instances.keys().copied().collect();
        for l in catalog.listeners.values() {
            names.extend(l.routes.iter().map(|r| r.service.as_str()));
            names.extend(l.tcp.as_deref());
            names.extend(l.dubbo.iter().map(String::as_str));
        }
        let default = Service::default();
        let over_dubbo: BTreeSet<&str> = catalog
            .listeners
            .values()
            .flat_map(|l| l.dubbo.iter().map(String::as_str))
            .collect();
        for name in names {
            let service = catalog.services.get(name).unwrap_or(&default);
            let mut list: Vec<&Instance> = instances.get(name).cloned().unwrap_or_default();
            list.sort();
            list.dedup_by(|a, b| a.address == b.address);
            // Dubbo routes pick instances by version and group, "none" included: an
            // instance without one is labelled with an empty one, so that a subset of
            // the instances without a group leaves out those with one.
            let labelled: Vec<Instance>;
            if over_dubbo.contains(name) {
                labelled = list.iter().copied().map(with_dubbo_labels).collect();
                list = labelled.iter().collect();
            }
            match cluster(name, service) {
                Ok(c) => {
                    // The policy only: instances are the assignment's business, and
                    // authorization the listeners'.
                    let policy = Service {
                        endpoints: Vec::new(),
                        authorization: None,
                        ..service.clone()
                    };
                    let version = version_of(&("cluster", name, &policy));
                    built
                        .clusters
                        .insert(name.into(), entry(Kind::Cluster, &c, version));
                }
                Err(e) => {
                    built.problems.push(format!("service {name:?}: {e}"));
                    continue;
                }
            }
            let (cla, skipped) = assignment(name, &list);
            for s in skipped {
                built
                    .problems
                    .push(format!("service {name:?}: instance {s}; left out"));
            }
            let version = version_of(&("endpoints", name, &list));
            built
                .assignments
                .insert(name.into(), entry(Kind::Endpoint, &cla, version));
        }
        for l in catalog.listeners.values() {
            // A listener changes with the policies of the services it reaches.
            let policies: Vec<(&str, Option<&Service>)> = l
                .routes
                .iter()
                .map(|r| r.service.as_str())
                .chain(l.tcp.as_deref())
                .chain(l.dubbo.iter().map(String::as_str))
                .map(|name| {
                    let guarded = catalog
                        .services
                        .get(name)
                        .filter(|s| s.authorization.is_some());
                    (name, guarded)
                })
                .collect();
            let dubbo = dubbo_subsets(l, &instances);
            let listener_version = version_of(&("listener", l, policies, &dubbo));
            let route_version = version_of(&("routes", l, route_services(l, catalog)));
            match listener(l, catalog, &dubbo) {
                Ok(listener) => {
                    let routes = (l.tcp.is_none() && l.dubbo.is_empty()).then(|| {
                        entry(Kind::Route, &route_configuration(l, catalog), route_version)
                    });
                    built.listeners.push((
                        l.clone(),
                        entry(Kind::Listener, &listener, listener_version),
                        routes,
                    ));
                }
                Err(e) => {
                    built.problems.push(format!("listener {:?}: {e}", l.name));
                    built.left_out.push(l.name.clone());
                }
            }
        }
        built
    }

    /// Keeps serving the last good version of each listener this build left out (a
    /// policy that cannot be sent, say), so a bad edit does not close a listener that
    /// runs; a new listener with a problem is not opened.
    pub fn carry_over(&mut self, previous: &Built) {
        for name in &self.left_out {
            if let Some(kept) = previous.listeners.iter().find(|(l, _, _)| &l.name == name) {
                self.listeners.push(kept.clone());
                for p in &mut self.problems {
                    if p.starts_with(&format!("listener {name:?}:")) {
                        p.push_str(" (its last good version keeps serving)");
                    }
                }
            }
        }
        self.listeners.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    }

    /// What one node is served of one type: every cluster and endpoint assignment, and
    /// the listeners (and their route configurations) that select the node.
    pub fn entries(&self, kind: Kind, id: &str, cluster: &str) -> Cow<'_, Entries> {
        match kind {
            Kind::Secret => Cow::Borrowed(&self.secrets),
            Kind::Cluster => Cow::Borrowed(&self.clusters),
            Kind::Endpoint => Cow::Borrowed(&self.assignments),
            Kind::Listener | Kind::Route => Cow::Owned(
                self.listeners
                    .iter()
                    .filter(|(l, _, _)| l.runs_on(id, cluster))
                    .filter_map(|(l, listener, route)| {
                        let e = if kind == Kind::Listener {
                            listener
                        } else {
                            route.as_ref()?
                        };
                        Some((l.name.clone(), e.clone()))
                    })
                    .collect(),
            ),
        }
    }
}

/// The trust bundle as Envoy's SDS secret: a validation context with the roots inline.
fn trust_bundle_secret(
    pem: &str,
) -> envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret {
    use envoy_types::pb::envoy::config::core::v3::{data_source::Specifier, DataSource};
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        secret, CertificateValidationContext, Secret,
    };
    Secret {
        name: sinew_ca::ROOT_CA_SECRET.into(),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: Some(DataSource {
                    specifier: Some(Specifier::InlineBytes(pem.as_bytes().to_vec())),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )),
    }
}

/// The parts of the services a listener's routes use that shape its route configuration
/// (authorization is the listener's).
fn route_services(l: &Listener, catalog: &Catalog) -> Vec<Option<Service>> {
    l.routes
        .iter()
        .map(|r| {
            catalog.services.get(&r.service).map(|s| Service {
                authorization: None,
                ..s.clone()
            })
        })
        .collect()
}

fn entry<M: Message>(kind: Kind, message: &M, version: String) -> Arc<Entry> {
    Arc::new(Entry {
        version,
        any: Any {
            type_url: kind.type_url().into(),
            value: message.encode_to_vec(),
        },
    })
}

/// A content hash (FNV-1a, 64 bits) of the model a resource is made from; prost's
/// encoding is not canonical (maps), so the model's JSON is what is hashed. The same in
/// every replica, so a proxy failing over is not sent what it has. Sinew's own version
/// is hashed in too: a release may make different resources from the same model, and a
/// proxy reconnecting to an upgraded control plane must be sent them.
pub fn version_of<T: Serialize>(model: &T) -> String {
    let json =
        serde_json::to_vec(&(env!("CARGO_PKG_VERSION"), model)).expect("the model serializes");
    format!("{:016x}", fnv1a(&json))
}

pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

fn ads() -> Option<ConfigSource> {
    Some(ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        ..Default::default()
    })
}

fn duration(d: Duration) -> pb::Duration {
    pb::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

fn u32_value(v: Option<u32>) -> Option<pb::UInt32Value> {
    v.map(|value| pb::UInt32Value { value })
}

fn socket(address: &str) -> Result<Option<Address>, String> {
    let parsed: SocketAddr = address
        .parse()
        .map_err(|_| format!("address {address:?} is not ip:port"))?;
    Ok(Some(Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: parsed.ip().to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                parsed.port(),
            ))),
            ..Default::default()
        })),
    }))
}

fn cluster(name: &str, s: &Service) -> Result<Cluster, String> {
    let lb_policy = match s.lb.as_deref().unwrap_or("round_robin") {
        "round_robin" => LbPolicy::RoundRobin,
        "least_request" => LbPolicy::LeastRequest,
        "random" => LbPolicy::Random,
        "ring_hash" => LbPolicy::RingHash,
        "maglev" => LbPolicy::Maglev,
        other => return Err(format!("lb {other:?} is not a policy")),
    };
    let outlier_detection = s.outlier_detection.as_ref().map(|o| {
        envoy_types::pb::envoy::config::cluster::v3::OutlierDetection {
            consecutive_5xx: u32_value(o.consecutive_5xx),
            interval: o.interval.map(duration),
            base_ejection_time: o.base_ejection_time.map(duration),
            max_ejection_percent: u32_value(o.max_ejection_percent),
            ..Default::default()
        }
    });
    let circuit_breakers = s.circuit_breakers.as_ref().map(|b| CircuitBreakers {
        thresholds: vec![circuit_breakers::Thresholds {
            max_connections: u32_value(b.max_connections),
            max_pending_requests: u32_value(b.max_pending_requests),
            max_requests: u32_value(b.max_requests),
            max_retries: u32_value(b.max_retries),
            ..Default::default()
        }],
        ..Default::default()
    });
    Ok(Cluster {
        name: name.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: ads(),
            service_name: String::new(),
        }),
        connect_timeout: s.connect_timeout.map(duration),
        lb_policy: lb_policy as i32,
        outlier_detection,
        circuit_breakers,
        transport_socket: s.mtls.as_ref().map(|m| upstream_mesh_tls(&m.identities)),
        ..Default::default()
    })
}

/// The assignment, and the instances left out because their address is not `ip:port`.
fn assignment(name: &str, instances: &[&Instance]) -> (ClusterLoadAssignment, Vec<String>) {
    let mut skipped = Vec::new();
    let mut lb_endpoints = Vec::new();
    for i in instances {
        let Ok(address) = socket(&i.address) else {
            skipped.push(format!("{:?} is not ip:port", i.address));
            continue;
        };
        if i.weight == 0 {
            skipped.push(format!("{:?} has weight 0", i.address));
            continue;
        }
        lb_endpoints.push(LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address,
                ..Default::default()
            })),
            metadata: (!i.labels.is_empty()).then(|| lb_metadata(&i.labels)),
            load_balancing_weight: (i.weight != 1).then_some(pb::UInt32Value { value: i.weight }),
            ..Default::default()
        });
    }
    let cla = ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints,
            ..Default::default()
        }],
        ..Default::default()
    };
    (cla, skipped)
}

/// Labels as `filter_metadata["envoy.lb"]`: what Envoy's subset balancer (and Sinew's
/// xDS mapping, `sinew_xds::convert::labels`) reads on endpoints and `metadata_match`.
fn lb_metadata(labels: &BTreeMap<String, String>) -> Metadata {
    let fields = labels
        .iter()
        .map(|(k, v)| {
            let value = pb::Value {
                kind: Some(pb::value::Kind::StringValue(v.clone())),
            };
            (k.clone(), value)
        })
        .collect();
    Metadata {
        filter_metadata: [("envoy.lb".to_string(), pb::Struct { fields })]
            .into_iter()
            .collect(),
        ..Default::default()
    }
}

fn any<M: Message>(type_url: &str, m: &M) -> Any {
    Any {
        type_url: format!("type.googleapis.com/{type_url}"),
        value: m.encode_to_vec(),
    }
}

/// `instance` with a `version` and a `group` label, empty where it has none.
fn with_dubbo_labels(instance: &Instance) -> Instance {
    let mut i = instance.clone();
    for key in ["version", "group"] {
        i.labels.entry(key.to_string()).or_default();
    }
    i
}

/// The `(version, group)` pairs of each service of a Dubbo listener, from its
/// instances' labels (empty where an instance has none), in order.
type DubboSubsets = Vec<(String, BTreeSet<(String, String)>)>;

fn dubbo_subsets(l: &Listener, instances: &BTreeMap<&str, Vec<&Instance>>) -> DubboSubsets {
    l.dubbo
        .iter()
        .map(|service| {
            let label = |i: &Instance, key: &str| i.labels.get(key).cloned().unwrap_or_default();
            let subsets = instances
                .get(service.as_str())
                .into_iter()
                .flatten()
                .map(|i| (label(i, "version"), label(i, "group")))
                .collect();
            (service.clone(), subsets)
        })
        .collect()
}

/// A Dubbo listener's proxy filter: per service, one route configuration per
/// `(version, group)` its instances have, taking the calls of that version and group to
/// those instances (a subset by labels). As Dubbo's own consumers match providers, both
/// must be the call's exactly: a provider without a group takes only calls without one
/// (Envoy's empty `group` would take any, so its absence is a header condition). A
/// service with no instances still gets a route (its calls find no endpoint rather than
/// no route).
fn dubbo_proxy(
    l: &Listener,
    subsets: &DubboSubsets,
) -> envoy_types::pb::envoy::extensions::filters::network::dubbo_proxy::v3::DubboProxy {
    use envoy_types::pb::envoy::config::route::v3::{
        header_matcher::HeaderMatchSpecifier, HeaderMatcher,
    };
    use envoy_types::pb::envoy::extensions::filters::network::dubbo_proxy::v3::{
        dubbo_proxy, route_action, DubboProxy, MultipleRouteConfiguration, Route, RouteAction,
        RouteConfiguration, RouteMatch,
    };
    let mut route_config = Vec::new();
    for (service, pairs) in subsets {
        let mut pairs: Vec<&(String, String)> = pairs.iter().collect();
        let unlabelled = (String::new(), String::new());
        if pairs.is_empty() {
            pairs.push(&unlabelled);
        }
        for (version, group) in pairs {
            // Both, empty ones too: instances have both ([`with_dubbo_labels`]).
            let labels: BTreeMap<String, String> = [("version", version), ("group", group)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            route_config.push(RouteConfiguration {
                name: format!("{service}:{version}:{group}"),
                interface: service.clone(),
                version: version.clone(),
                group: group.clone(),
                routes: vec![Route {
                    r#match: Some(RouteMatch {
                        headers: [("version", version), ("group", group)]
                            .into_iter()
                            .filter(|(_, v)| v.is_empty())
                            .map(|(name, _)| HeaderMatcher {
                                name: name.into(),
                                header_match_specifier: Some(HeaderMatchSpecifier::PresentMatch(
                                    false,
                                )),
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    }),
                    route: Some(RouteAction {
                        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                            service.clone(),
                        )),
                        metadata_match: Some(lb_metadata(&labels)),
                    }),
                }],
            });
        }
    }
    DubboProxy {
        stat_prefix: l.name.clone(),
        route_specifier: Some(dubbo_proxy::RouteSpecifier::MultipleRouteConfig(
            MultipleRouteConfiguration {
                name: l.name.clone(),
                route_config,
            },
        )),
        ..Default::default()
    }
}

fn listener(
    l: &Listener,
    catalog: &Catalog,
    dubbo: &DubboSubsets,
) -> Result<envoy_types::pb::envoy::config::listener::v3::Listener, String> {
    use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
    use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
    use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
        tcp_proxy, TcpProxy,
    };
    let address = socket(&l.address)?;
    let port = l
        .address
        .parse::<SocketAddr>()
        .map_err(|_| format!("address {:?} is not ip:port", l.address))?
        .port();
    let filters = match &l.tcp {
        None if !l.dubbo.is_empty() => {
            if let Some(guarded) = l.dubbo.iter().find(|s| {
                catalog
                    .services
                    .get(s.as_str())
                    .is_some_and(|s| s.authorization.is_some())
            }) {
                return Err(format!(
                    "service {guarded:?} has authorization, which Sinew does not send for \
                     services reached over Dubbo yet"
                ));
            }
            vec![Filter {
                name: "envoy.filters.network.dubbo_proxy".into(),
                config_type: Some(filter::ConfigType::TypedConfig(any(
                    "envoy.extensions.filters.network.dubbo_proxy.v3.DubboProxy",
                    &dubbo_proxy(l, dubbo),
                ))),
            }]
        }
        Some(service) => {
            let policies = crate::authz::tcp_listener(service, &catalog.services, port)?;
            let mut filters: Vec<Filter> = policies
                .rule_sets()
                .into_iter()
                .map(|rules| Filter {
                    name: "envoy.filters.network.rbac".into(),
                    config_type: Some(filter::ConfigType::TypedConfig(any(
                        "envoy.extensions.filters.network.rbac.v3.RBAC",
                        &NetworkRbac {
                            stat_prefix: l.name.clone(),
                            rules: Some(rules),
                            ..Default::default()
                        },
                    ))),
                })
                .collect();
            filters.push(Filter {
                name: "envoy.filters.network.tcp_proxy".into(),
                config_type: Some(filter::ConfigType::TypedConfig(any(
                    "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                    &TcpProxy {
                        stat_prefix: l.name.clone(),
                        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(
                            service.clone(),
                        )),
                        ..Default::default()
                    },
                ))),
            });
            filters
        }
        None => {
            let policies = crate::authz::http_listener(l, &catalog.services, port)?;
            let guarded = !policies.is_empty();
            let mut http_filters: Vec<HttpFilter> = policies
                .rule_sets()
                .into_iter()
                .map(|rules| HttpFilter {
                    name: "envoy.filters.http.rbac".into(),
                    config_type: Some(http_filter::ConfigType::TypedConfig(any(
                        "envoy.extensions.filters.http.rbac.v3.RBAC",
                        &HttpRbac {
                            rules: Some(rules),
                            ..Default::default()
                        },
                    ))),
                    ..Default::default()
                })
                .collect();
            // Limits nothing itself (no bucket): it is there so that the per-route
            // buckets of rate-limited services apply, in Envoy as in Sinew.
            http_filters.push(HttpFilter {
                name: LOCAL_RATE_LIMIT.into(),
                config_type: Some(http_filter::ConfigType::TypedConfig(any(
                    "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
                    &LocalRateLimit {
                        stat_prefix: "local_rate_limit".into(),
                        ..Default::default()
                    },
                ))),
                ..Default::default()
            });
            http_filters.push(HttpFilter {
                name: "envoy.filters.http.router".into(),
                config_type: Some(http_filter::ConfigType::TypedConfig(any(
                    "envoy.extensions.filters.http.router.v3.Router",
                    &envoy_types::pb::envoy::extensions::filters::http::router::v3::Router::default(
                    ),
                ))),
                ..Default::default()
            });
            let hcm = HttpConnectionManager {
                stat_prefix: l.name.clone(),
                route_specifier: Some(RouteSpecifier::Rds(Rds {
                    config_source: ads(),
                    route_config_name: l.name.clone(),
                })),
                http_filters,
                // Policies judge the path the router then matches, normalised as Istio
                // does, so `/public/../admin` and `//admin` are judged as `/admin`.
                normalize_path: guarded.then_some(pb::BoolValue { value: true }),
                merge_slashes: guarded,
                // WebSockets pass, as Istio configures its sidecars; Envoy refuses
                // upgrades it is not configured for.
                upgrade_configs: vec![http_connection_manager::UpgradeConfig {
                    upgrade_type: "websocket".into(),
                    ..Default::default()
                }],
                ..Default::default()
            };
            vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(any(
                    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    &hcm,
                ))),
            }]
        }
    };
    use crate::services::ListenerMtls;
    use envoy_types::pb::envoy::config::listener::v3::{
        listener_filter, FilterChainMatch, ListenerFilter,
    };
    let chain = |transport_protocol: &str, transport_socket| FilterChain {
        filter_chain_match: (!transport_protocol.is_empty()).then(|| FilterChainMatch {
            transport_protocol: transport_protocol.to_string(),
            ..Default::default()
        }),
        filters: filters.clone(),
        transport_socket,
        ..Default::default()
    };
    let (filter_chains, listener_filters) = match (l.mtls, &l.tls) {
        (Some(ListenerMtls::Strict), _) => (vec![chain("", Some(downstream_mesh_tls()))], vec![]),
        // Istio's permissive port: the TLS inspector reads the first bytes, and each kind
        // of client finds its chain.
        (Some(ListenerMtls::Permissive), _) => (
            vec![
                chain("tls", Some(downstream_mesh_tls())),
                chain("raw_buffer", None),
            ],
            vec![ListenerFilter {
                name: "envoy.filters.listener.tls_inspector".into(),
                config_type: Some(listener_filter::ConfigType::TypedConfig(any(
                    "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
                    &envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector::default(),
                ))),
                ..Default::default()
            }],
        ),
        (None, tls) => (vec![chain("", tls.as_ref().map(downstream_tls))], vec![]),
    };
    Ok(envoy_types::pb::envoy::config::listener::v3::Listener {
        name: l.name.clone(),
        address,
        filter_chains,
        listener_filters,
        ..Default::default()
    })
}

/// An SDS reference over the ADS stream: the proxy answers `default` (its SVID) and
/// `ROOTCA` (the mesh roots) itself from its mesh identity, as Istio's agent does.
fn mesh_secret(
    name: &str,
) -> envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::SdsSecretConfig {
    envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::SdsSecretConfig {
        name: name.into(),
        sds_config: ads(),
    }
}

/// The proxy's SVID, with clients checked against the mesh roots: mesh mTLS inbound.
fn downstream_mesh_tls() -> envoy_types::pb::envoy::config::core::v3::TransportSocket {
    use envoy_types::pb::envoy::config::core::v3::{transport_socket, TransportSocket};
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        common_tls_context::ValidationContextType, CommonTlsContext, DownstreamTlsContext,
    };
    let context = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![mesh_secret("default")],
            validation_context_type: Some(ValidationContextType::ValidationContextSdsSecretConfig(
                mesh_secret("ROOTCA"),
            )),
            ..Default::default()
        }),
        require_client_certificate: Some(pb::BoolValue { value: true }),
        ..Default::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(
            "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            &context,
        ))),
    }
}

/// The proxy's SVID presented to a service's instances, which must prove one of
/// `identities`: mesh mTLS outbound.
fn upstream_mesh_tls(
    identities: &[String],
) -> envoy_types::pb::envoy::config::core::v3::TransportSocket {
    use envoy_types::pb::envoy::config::core::v3::{transport_socket, TransportSocket};
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        common_tls_context::{CombinedCertificateValidationContext, ValidationContextType},
        subject_alt_name_matcher::SanType,
        CertificateValidationContext, CommonTlsContext, SubjectAltNameMatcher, UpstreamTlsContext,
    };
    use envoy_types::pb::envoy::r#type::matcher::v3::{
        string_matcher::MatchPattern, StringMatcher,
    };
    let matchers = identities
        .iter()
        .map(|id| SubjectAltNameMatcher {
            san_type: SanType::Uri as i32,
            matcher: Some(StringMatcher {
                match_pattern: Some(MatchPattern::Exact(id.clone())),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    let context = UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![mesh_secret("default")],
            validation_context_type: Some(ValidationContextType::CombinedValidationContext(
                CombinedCertificateValidationContext {
                    default_validation_context: Some(CertificateValidationContext {
                        match_typed_subject_alt_names: matchers,
                        ..Default::default()
                    }),
                    validation_context_sds_secret_config: Some(mesh_secret("ROOTCA")),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(
            "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            &context,
        ))),
    }
}

/// A listener's `tls` as Envoy's DownstreamTlsContext, the files named as they are.
fn downstream_tls(
    tls: &crate::services::ListenerTls,
) -> envoy_types::pb::envoy::config::core::v3::TransportSocket {
    use envoy_types::pb::envoy::config::core::v3::{
        data_source::Specifier, transport_socket, DataSource, TransportSocket,
    };
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        common_tls_context::ValidationContextType, CertificateValidationContext, CommonTlsContext,
        DownstreamTlsContext, TlsCertificate,
    };
    let file = |path: &str| {
        Some(DataSource {
            specifier: Some(Specifier::Filename(path.to_string())),
            ..Default::default()
        })
    };
    let context = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificates: vec![TlsCertificate {
                certificate_chain: file(&tls.cert),
                private_key: file(&tls.key),
                ..Default::default()
            }],
            validation_context_type: tls.client_ca.as_deref().map(|ca| {
                ValidationContextType::ValidationContext(CertificateValidationContext {
                    trusted_ca: file(ca),
                    ..Default::default()
                })
            }),
            ..Default::default()
        }),
        require_client_certificate: tls
            .require_client_certificate
            .then_some(pb::BoolValue { value: true }),
        ..Default::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(
            "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            &context,
        ))),
    }
}

/// The local rate limit filter's name, the key of its per-route config.
const LOCAL_RATE_LIMIT: &str = "envoy.filters.http.local_ratelimit";

/// A service's `rate_limit` as a route's local rate limit: its own bucket, enabled and
/// enforced for every request (Envoy's defaults are 0%).
fn route_rate_limit(limit: &RateLimit) -> Any {
    let every_request = || {
        Some(RuntimeFractionalPercent {
            default_value: Some(FractionalPercent {
                numerator: 100,
                denominator: DenominatorType::Hundred as i32,
            }),
            runtime_key: String::new(),
        })
    };
    any(
        "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
        &LocalRateLimit {
            stat_prefix: "service_rate_limit".into(),
            token_bucket: Some(TokenBucket {
                max_tokens: limit.max_tokens,
                tokens_per_fill: u32_value(Some(limit.tokens_per_fill)),
                fill_interval: limit.fill_interval.map(duration),
            }),
            filter_enabled: every_request(),
            filter_enforced: every_request(),
            ..Default::default()
        },
    )
}

fn route_configuration(l: &Listener, catalog: &Catalog) -> RouteConfiguration {
    let default = Service::default();
    let routes = l
        .routes
        .iter()
        .map(|r| {
            let service = catalog.services.get(&r.service).unwrap_or(&default);
            let path_specifier = match (&r.path_regex, &r.prefix) {
                (Some(regex), _) => route_match::PathSpecifier::SafeRegex(RegexMatcher {
                    regex: regex.clone(),
                    ..Default::default()
                }),
                (None, prefix) => {
                    route_match::PathSpecifier::Prefix(prefix.clone().unwrap_or_else(|| "/".into()))
                }
            };
            let cluster_specifier = if service.subsets.is_empty() {
                route_action::ClusterSpecifier::Cluster(r.service.clone())
            } else {
                route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
                    clusters: service
                        .subsets
                        .iter()
                        .map(|s| weighted_cluster::ClusterWeight {
                            name: r.service.clone(),
                            weight: Some(pb::UInt32Value { value: s.weight }),
                            metadata_match: Some(lb_metadata(&s.labels)),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                })
            };
            let retry_policy = service.retries.as_ref().map(|r| {
                envoy_types::pb::envoy::config::route::v3::RetryPolicy {
                    retry_on: r.retry_on.join(","),
                    num_retries: Some(pb::UInt32Value {
                        value: r.num_retries,
                    }),
                    per_try_timeout: r.per_try_timeout.map(duration),
                    ..Default::default()
                }
            });
            let typed_per_filter_config = service
                .rate_limit
                .iter()
                .map(|limit| (LOCAL_RATE_LIMIT.to_string(), route_rate_limit(limit)))
                .collect();
            Route {
                r#match: Some(RouteMatch {
                    path_specifier: Some(path_specifier),
                    ..Default::default()
                }),
                typed_per_filter_config,
                action: Some(route::Action::Route(RouteAction {
                    cluster_specifier: Some(cluster_specifier),
                    timeout: service.timeout.map(duration),
                    retry_policy,
                    ..Default::default()
                })),
                ..Default::default()
            }
        })
        .collect();
    RouteConfiguration {
        name: l.name.clone(),
        virtual_hosts: vec![VirtualHost {
            name: l.name.clone(),
            domains: l.domains.clone(),
            routes,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// What a Sinew proxy assembles from what `node` is sent: every resource decoded and
/// mapped as its xDS client does (a refused kind panics, naming the proxy's error).
#[cfg(test)]
pub(crate) fn assembled_by_a_proxy(built: &Built, node: &str) -> sinew_xds::assemble::Assembled {
    use sinew_xds::assemble::{Change, Resources};
    fn decode<M: Message + Default>(built: &Built, kind: Kind, node: &str) -> Change<M> {
        Change {
            updated: built
                .entries(kind, node, "")
                .values()
                .map(|e| M::decode(e.any.value.as_slice()).unwrap())
                .collect(),
            removed: Vec::new(),
            complete: true,
        }
    }
    let refused = |kind: &'static str| move |e| panic!("the proxy refuses the {kind}: {e:?}");
    Resources::default()
        .clusters(decode(built, Kind::Cluster, node))
        .unwrap_or_else(refused("clusters"))
        .assignments(decode(built, Kind::Endpoint, node))
        .unwrap_or_else(refused("assignments"))
        .listeners(decode(built, Kind::Listener, node))
        .unwrap_or_else(refused("listeners"))
        .routes(decode(built, Kind::Route, node))
        .unwrap_or_else(refused("routes"))
        .assemble(&sinew_config::Config::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::{parse, Resource};

    fn catalog(yaml: &str) -> Catalog {
        let mut c = Catalog::default();
        for r in parse(yaml).unwrap() {
            match r {
                Resource::Service(s) => {
                    c.services.insert(s.name.clone(), s);
                }
                Resource::Listener(l) => {
                    c.listeners.insert(l.name.clone(), l);
                }
            }
        }
        c
    }

    const MODEL: &str = "kind: Service
name: a
endpoints: [{address: 127.0.0.1:1}]
rate_limit: {max_tokens: 10, tokens_per_fill: 5, fill_interval: 1s}
---
kind: Service
name: b
endpoints: [{address: 127.0.0.1:2}]
---
kind: Listener
name: edge
address: 127.0.0.1:8080
nodes: [gateway]
routes: [{prefix: /, service: a}]
";

    #[test]
    fn versions_change_only_with_content() {
        let first = Built::new(&catalog(MODEL));
        let again = Built::new(&catalog(MODEL));
        assert_eq!(first.clusters["a"].version, again.clusters["a"].version);
        assert_eq!(first.listeners[0].1.version, again.listeners[0].1.version);

        let mut changed = catalog(MODEL);
        changed.registered.entry("etcd".into()).or_default().insert(
            "b".into(),
            vec![Instance {
                address: "127.0.0.1:3".into(),
                labels: BTreeMap::new(),
                weight: 1,
            }],
        );
        let next = Built::new(&changed);
        assert_eq!(
            first.assignments["a"].version,
            next.assignments["a"].version
        );
        assert_ne!(
            first.assignments["b"].version,
            next.assignments["b"].version
        );
        assert_eq!(first.clusters["b"].version, next.clusters["b"].version);
    }

    #[test]
    fn a_node_gets_only_the_listeners_that_select_it_and_a_route_needs_no_instances() {
        let mut c = catalog(MODEL);
        c.listeners.get_mut("edge").unwrap().routes[0].service = "nowhere".into();
        let built = Built::new(&c);
        assert!(built.problems.is_empty(), "{:?}", built.problems);
        let of = |kind, id| built.entries(kind, id, "reviews").into_owned();
        assert!(of(Kind::Cluster, "gateway").contains_key("nowhere"));
        assert!(of(Kind::Endpoint, "gateway").contains_key("nowhere"));
        assert_eq!(of(Kind::Listener, "gateway").len(), 1);
        assert_eq!(of(Kind::Route, "gateway").len(), 1);
        assert!(of(Kind::Listener, "sidecar-1").is_empty());
        assert!(of(Kind::Route, "sidecar-1").is_empty());
    }

    #[test]
    fn what_sinew_builds_sinew_accepts() {
        let assembled = assembled_by_a_proxy(&Built::new(&catalog(MODEL)), "gateway");
        assert!(assembled.warming.is_empty(), "{:?}", assembled.warming);
        assert!(sinew_config::validate(&assembled.config).is_empty());
        // Service a's rate limit is its route's own bucket, the most specific level.
        let route = &assembled.config.route_configs[0].virtual_hosts[0].routes[0];
        let limit = route.local_rate_limit.as_ref().expect("a's bucket");
        assert_eq!(
            (
                limit.token_bucket.max_tokens,
                limit.token_bucket.tokens_per_fill
            ),
            (10, 5)
        );
        let http = assembled.config.listeners[0].http.as_ref().unwrap();
        assert!(http.local_rate_limit.is_none());
        assert_eq!(
            http.local_rate_limit_levels,
            sinew_config::model::LocalRateLimitLevels::MostSpecific
        );
    }

    /// A Dubbo listener over registry instances: the proxy gets an RPC listener whose
    /// host for the interface routes each version and group to its own instances, the
    /// grouped ones first; a new version's instance changes the listener.
    #[test]
    fn a_dubbo_listener_routes_each_version_and_group_to_its_instances() {
        let mut c = catalog(
            "kind: Listener\nname: rpc\naddress: 127.0.0.1:20880\ndubbo: [com.example.Echo]\n",
        );
        let instance = |address: &str, labels: &[(&str, &str)]| Instance {
            address: address.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            weight: 100,
        };
        let mut registered = BTreeMap::new();
        registered.insert(
            "com.example.Echo".to_string(),
            vec![
                instance("127.0.0.1:1", &[("version", "1.0.0")]),
                instance("127.0.0.1:2", &[("version", "1.0.0"), ("group", "canary")]),
            ],
        );
        c.registered
            .insert("zookeeper /dubbo".into(), registered.clone());
        let before = Built::new(&c);
        let assembled = assembled_by_a_proxy(&before, "any");
        assert!(assembled.warming.is_empty(), "{:?}", assembled.warming);
        assert!(sinew_config::validate(&assembled.config).is_empty());
        let rpc = assembled.config.listeners[0]
            .rpc
            .as_ref()
            .expect("an rpc listener");
        assert_eq!(rpc.protocol, sinew_config::model::RpcProtocol::Dubbo);
        let hosts = rpc.virtual_hosts.as_ref().unwrap();
        assert_eq!(hosts[0].domains, ["com.example.Echo"]);
        let routes = &hosts[0].routes;
        assert_eq!(routes.len(), 2);
        let conditions = |i: usize| {
            routes[i]
                .match_
                .headers
                .iter()
                .map(|h| (h.name.clone(), h.exact.clone().unwrap_or_default()))
                .collect::<Vec<_>>()
        };
        // Without a group: only calls without one (an absent header).
        assert_eq!(
            conditions(0)[0],
            ("version".to_string(), "1.0.0".to_string())
        );
        assert_eq!(routes[0].match_.headers[1].name, "group");
        assert_eq!(routes[0].match_.headers[1].present, Some(false));
        // Its subset is the instances labelled with no group, not the canary one.
        assert_eq!(
            routes[0].metadata_match.get("group").map(String::as_str),
            Some("")
        );
        let cluster = &assembled.config.clusters[0];
        let no_group = cluster
            .endpoints
            .iter()
            .filter(|e| e.metadata.get("group").is_some_and(String::is_empty))
            .count();
        assert_eq!(no_group, 1);
        assert_eq!(
            conditions(1),
            [
                ("group".to_string(), "canary".to_string()),
                ("version".to_string(), "1.0.0".to_string())
            ]
        );
        assert_eq!(
            routes[1].metadata_match.get("group").map(String::as_str),
            Some("canary")
        );

        registered
            .get_mut("com.example.Echo")
            .unwrap()
            .push(instance("127.0.0.1:3", &[("version", "2.0.0")]));
        c.registered.insert("zookeeper /dubbo".into(), registered);
        let after = Built::new(&c);
        assert_ne!(before.listeners[0].1.version, after.listeners[0].1.version);
    }

    /// Mesh mTLS as control sends it maps, in the proxy, to the SDS names its mesh
    /// identity answers: a permissive listener taking mesh clients and plaintext ones on
    /// one port, and a cluster presenting the proxy's SVID and checking the service's.
    #[test]
    fn mesh_mtls_is_sent_as_sds_names_the_proxy_answers_itself() {
        use sinew_config::tls::PemSource;
        let model = "kind: Service
name: api
endpoints: [{address: 127.0.0.1:1}]
mtls: {identities: ['spiffe://cluster.local/ns/shop/sa/api']}
---
kind: Listener
name: inbound
address: 127.0.0.1:8443
mtls: permissive
routes: [{prefix: /, service: api}]
";
        let built = Built::new(&catalog(model));
        assert!(built.problems.is_empty(), "{:?}", built.problems);
        let assembled = assembled_by_a_proxy(&built, "sidecar");
        let config = &assembled.config;
        let sds = |source: Option<&PemSource>| match source {
            Some(PemSource::Sds(s)) => s.sds.clone(),
            other => panic!("not an SDS name: {other:?}"),
        };
        let tls = config.listeners[0]
            .tls
            .as_ref()
            .expect("the listener's TLS");
        assert_eq!(sds(tls.client_ca.as_ref()), "ROOTCA");
        assert!(tls.require_client_certificate && tls.allow_plaintext);
        let upstream = config.clusters[0].tls.as_ref().expect("the cluster's TLS");
        assert_eq!(sds(upstream.ca.as_ref()), "ROOTCA");
        assert_eq!(sds(upstream.cert.as_ref()), "default");
        assert_eq!(upstream.match_subject_alt_names.len(), 1);
    }

    #[test]
    fn a_listener_with_both_tls_and_mtls_and_a_service_identity_that_is_not_spiffe_are_refused() {
        let both = "kind: Listener
name: l
address: 127.0.0.1:1
tls: {cert: a, key: b}
mtls: strict
routes: [{prefix: /, service: s}]
";
        let error = parse(both).unwrap_err();
        assert!(error.starts_with("5:1: mtls:"), "{error}");
        let bad = "kind: Service
name: s
mtls:
  identities: ['spiffe://cluster.local/ok', 'api']
";
        let error = parse(bad).unwrap_err();
        assert!(error.contains("mtls.identities[1]"), "{error}");
        let none = "kind: Service\nname: s\nmtls: {identities: []}\n";
        let error = parse(none).unwrap_err();
        assert!(
            error.contains("mtls.identities: name at least one"),
            "{error}"
        );
    }
}
