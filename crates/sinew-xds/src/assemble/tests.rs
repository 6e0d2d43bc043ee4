//! Warming, pruning and blame, on resources built the way a control plane sends them.

use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig,
};
use envoy_types::pb::envoy::config::core::v3::{address, socket_address, Address, SocketAddress};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain};
use envoy_types::pb::envoy::config::route::v3::{
    route, route_action, route_match, Route, RouteAction, RouteMatch, VirtualHost,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, http_filter, HttpConnectionManager, HttpFilter, Rds,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;

use std::time::Duration;

use super::*;

fn socket(port: u32) -> Option<Address> {
    Some(Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: "127.0.0.1".into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    })
}

fn any<M: Message>(type_url: &str, m: &M) -> Any {
    Any {
        type_url: format!("type.googleapis.com/{type_url}"),
        value: m.encode_to_vec(),
    }
}

fn router() -> HttpFilter {
    HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any(
            "envoy.extensions.filters.http.router.v3.Router",
            &envoy_types::pb::envoy::extensions::filters::http::router::v3::Router::default(),
        ))),
        ..Default::default()
    }
}

fn http_listener(name: &str, rds: &str, filters: Vec<HttpFilter>) -> Listener {
    let hcm = HttpConnectionManager {
        stat_prefix: "ingress".into(),
        http_filters: filters,
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            route_config_name: rds.into(),
            config_source: None,
        })),
        ..Default::default()
    };
    Listener {
        name: name.into(),
        address: socket(0),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(any(
                    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    &hcm,
                ))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Listener "web", routed by RDS through "web-routes".
fn web_listener() -> Listener {
    http_listener("web", "web-routes", vec![router()])
}

fn route_to(name: &str, cluster: &str) -> RouteConfiguration {
    RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![VirtualHost {
            name: "all".into(),
            domains: vec!["*".into()],
            routes: vec![Route {
                r#match: Some(RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                action: Some(route::Action::Route(RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                        cluster.into(),
                    )),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn eds_cluster(name: &str) -> Cluster {
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig::default()),
        ..Default::default()
    }
}

fn assignment(name: &str, ports: &[u32]) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: ports
                .iter()
                .map(|p| LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: socket(*p),
                        ..Default::default()
                    })),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn change<T>(updated: Vec<T>) -> Change<T> {
    Change {
        updated,
        removed: Vec::new(),
        complete: true,
    }
}

#[test]
fn a_listener_warms_until_its_routes_and_their_clusters_are_ready() {
    let base = Config::default();
    let mut r = Resources::default()
        .listeners(change(vec![web_listener()]))
        .unwrap();
    assert_eq!(r.wanted_routes(), ["web-routes"]);
    let a = r.assemble(&base);
    assert!(a.config.listeners.is_empty());
    assert_eq!(
        a.warming,
        [Warming {
            resource: r#"listener "web""#.into(),
            waits_for: r#"route configuration "web-routes""#.into(),
        }]
    );

    let mut r = r
        .routes(change(vec![route_to("web-routes", "svc")]))
        .unwrap();
    assert_eq!(
        r.assemble(&base).warming[0].to_string(),
        r#"listener "web" waits for cluster "svc""#
    );

    let mut r = r.clusters(change(vec![eds_cluster("svc")])).unwrap();
    assert_eq!(r.wanted_assignments(), ["svc"]);
    let a = r.assemble(&base);
    assert!(a.config.listeners.is_empty() && a.config.clusters.is_empty());
    assert_eq!(
        a.warming[0].to_string(),
        r#"cluster "svc" waits for the endpoints of "svc""#
    );

    let mut r = r
        .assignments(change(vec![assignment("svc", &[9001, 9002])]))
        .unwrap();
    let a = r.assemble(&base);
    assert!(a.warming.is_empty(), "{:?}", a.warming);
    assert_eq!(a.config.listeners.len(), 1);
    assert_eq!(a.config.route_configs[0].name, "web-routes");
    let endpoints: Vec<&str> = a.config.clusters[0]
        .endpoints
        .iter()
        .map(|e| e.address.as_str())
        .collect();
    assert_eq!(endpoints, ["127.0.0.1:9001", "127.0.0.1:9002"]);
    assert!(sinew_config::validate(&a.config).is_empty());
}

#[test]
fn removing_a_cluster_drops_its_endpoints_and_a_complete_update_replaces_the_set() {
    let mut r = Resources::default()
        .clusters(change(vec![eds_cluster("a"), eds_cluster("b")]))
        .unwrap()
        .assignments(change(vec![assignment("a", &[1]), assignment("b", &[2])]))
        .unwrap();
    assert_eq!(r.assemble(&Config::default()).config.clusters.len(), 2);
    let mut r = r.clusters(change(vec![eds_cluster("b")])).unwrap();
    assert_eq!(r.wanted_assignments(), ["b"]);
    assert_eq!(r.assemble(&Config::default()).config.clusters.len(), 1);
    // A cluster that comes back waits for fresh endpoints, not the dropped ones.
    let mut r = r
        .clusters(change(vec![eds_cluster("a"), eds_cluster("b")]))
        .unwrap();
    assert_eq!(r.assemble(&Config::default()).warming.len(), 1);
    // An endpoint update names what it carries; a name it leaves out is unchanged.
    let mut r = r.assignments(change(vec![assignment("a", &[3])])).unwrap();
    assert_eq!(r.assemble(&Config::default()).config.clusters.len(), 2);
}

#[test]
fn an_unsupported_http_filter_is_refused_by_resource_and_field() {
    let lua = HttpFilter {
        name: "envoy.filters.http.lua".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(Any {
            type_url: "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua".into(),
            value: Vec::new(),
        })),
        ..Default::default()
    };
    let err = Resources::default()
        .listeners(change(vec![http_listener("web", "r", vec![lua, router()])]))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "listener \"web\": filter_chains[0].filters[0].typed_config.http_filters[0]: \
         HTTP filter \"envoy.filters.http.lua\" is not supported by Sinew (only local_ratelimit, jwt_authn, rbac, compressor, decompressor, cors, csrf and the router are)"
    );
}

#[test]
fn a_field_that_would_change_behaviour_is_named_not_ignored() {
    let mut c = eds_cluster("svc");
    c.respect_dns_ttl = true;
    let err = Resources::default().clusters(change(vec![c])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cluster \"svc\": respect_dns_ttl: is not supported by Sinew"
    );

    let mut l = http_listener("web", "r", vec![router()]);
    l.filter_chains.push(l.filter_chains[0].clone());
    let err = Resources::default().listeners(change(vec![l])).unwrap_err();
    // Two chains that match the same connections: Envoy refuses them too.
    assert_eq!(err.field, "filter_chains[1].filter_chain_match");
    assert!(
        err.message
            .contains("matches connections that filter_chains[0] matches"),
        "{err}"
    );
}

#[test]
fn blame_turns_a_config_path_into_the_resource_it_came_from() {
    let base = sinew_config::load_str("t", "clusters: [{name: local, endpoints: []}]")
        .unwrap()
        .config;
    let mut r = Resources::default()
        .clusters(change(vec![eds_cluster("svc")]))
        .unwrap()
        .assignments(change(vec![assignment("svc", &[1])]))
        .unwrap();
    let a = r.assemble(&base);
    assert_eq!(
        a.blame("clusters[1].endpoints[0].address"),
        "cluster \"svc\": endpoints[0].address"
    );
    assert_eq!(a.blame("clusters[0].name"), "clusters[0].name");
    assert_eq!(a.blame("clusters[1]"), "cluster \"svc\"");
}

#[test]
fn a_serving_listener_stays_when_a_cluster_it_names_goes_and_answers_for_it_empty() {
    let mut r = Resources::default()
        .listeners(change(vec![http_listener("web", "routes", vec![router()])]))
        .unwrap()
        .routes(change(vec![route_to("routes", "svc")]))
        .unwrap()
        .clusters(change(vec![eds_cluster("svc")]))
        .unwrap()
        .assignments(change(vec![assignment("svc", &[1])]))
        .unwrap();
    assert_eq!(r.assemble(&Config::default()).config.listeners.len(), 1);
    let mut r = r.clusters(change(Vec::new())).unwrap();
    let a = r.assemble(&Config::default());
    assert_eq!(a.config.listeners.len(), 1, "{:?}", a.warming);
    assert!(a.config.clusters[0].endpoints.is_empty());
    assert!(sinew_config::validate(&a.config).is_empty());
}

#[test]
fn warming_gives_up_after_the_initial_fetch_timeout_and_serves_empty() {
    let base = Config::default();
    let start = std::time::Instant::now();
    let mut r = Resources::default()
        .listeners(change(vec![web_listener()]))
        .unwrap()
        .clusters(change(vec![eds_cluster("svc")]))
        .unwrap();
    // Envoy's default: 15 s.
    assert_eq!(r.assemble_at(&base, start).warming.len(), 2);
    let deadline = r.next_deadline().expect("a deadline");
    assert!(
        deadline > start + Duration::from_secs(14) && deadline <= start + Duration::from_secs(16),
        "{:?}",
        deadline - start
    );
    // A state-of-the-world LDS resending the same listener does not restart its wait.
    let mut r = r.listeners(change(vec![web_listener()])).unwrap();
    assert_eq!(r.next_deadline(), Some(deadline));

    let a = r.assemble_at(&base, start + Duration::from_secs(16));
    assert!(a.warming.is_empty(), "{:?}", a.warming);
    assert_eq!(a.timed_out.len(), 2, "{:?}", a.timed_out);
    assert_eq!(a.config.listeners.len(), 1);
    assert!(a.config.route_configs[0].virtual_hosts.is_empty());
    assert!(a.config.clusters[0].endpoints.is_empty());
    assert!(sinew_config::validate(&a.config).is_empty());
    assert_eq!(r.next_deadline(), None, "nothing left to wait for");

    // What arrives late goes in as usual.
    let mut r = r
        .routes(change(vec![route_to("web-routes", "svc")]))
        .unwrap()
        .assignments(change(vec![assignment("svc", &[9001])]))
        .unwrap();
    let a = r.assemble_at(&base, start + Duration::from_secs(17));
    assert!(a.timed_out.is_empty());
    assert_eq!(a.config.route_configs[0].virtual_hosts.len(), 1);
    assert_eq!(a.config.clusters[0].endpoints.len(), 1);
}

#[test]
fn an_initial_fetch_timeout_of_zero_waits_for_ever() {
    let mut cluster = eds_cluster("svc");
    cluster.eds_cluster_config = Some(EdsClusterConfig {
        eds_config: Some(envoy_types::pb::envoy::config::core::v3::ConfigSource {
            initial_fetch_timeout: Some(envoy_types::pb::google::protobuf::Duration {
                seconds: 0,
                nanos: 0,
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let mut r = Resources::default()
        .clusters(change(vec![cluster]))
        .unwrap();
    assert_eq!(r.next_deadline(), None);
    let later = std::time::Instant::now() + Duration::from_secs(3600);
    assert_eq!(r.assemble_at(&Config::default(), later).warming.len(), 1);
}

#[test]
fn an_xds_route_configuration_named_like_a_static_one_is_refused_not_shadowed() {
    let base = sinew_config::load_str(
        "static.yaml",
        "
route_configs:
  - name: web-routes
    virtual_hosts: [{name: static, domains: ['*'], routes: [{match: {prefix: /}, direct_response: {status: 200}}]}]
",
    )
    .unwrap_or_else(|d| panic!("{d}"))
    .config;
    let mut r = Resources::default()
        .listeners(change(vec![web_listener()]))
        .unwrap()
        .routes(change(vec![route_to("web-routes", "svc")]))
        .unwrap()
        .clusters(change(vec![eds_cluster("svc")]))
        .unwrap()
        .assignments(change(vec![assignment("svc", &[9001])]))
        .unwrap();
    let a = r.assemble(&base);
    let errors = sinew_config::validate(&a.config);
    let blamed: Vec<String> = errors
        .iter()
        .map(|e| format!("{}: {}", a.blame(&e.path), e.message))
        .collect();
    assert!(
        blamed.iter().any(
            |e| e.starts_with("route_configuration \"web-routes\": name: ")
                && e.contains("already used")
        ),
        "{blamed:?}"
    );
}
