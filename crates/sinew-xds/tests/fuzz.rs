//! Fuzzing the Envoy inputs: bootstrap files (mutated examples/envoy/*) and xDS resources
//! as a control plane sends them (random bytes, and mutated encodings of real-shaped
//! Listener, RouteConfiguration, Cluster and ClusterLoadAssignment messages), decoded,
//! mapped and assembled the way the xDS client does. The property: an error or a
//! config, never a panic; and what assembles passes or fails validation with an error,
//! never a panic. Case counts: `SINEW_FUZZ_CASES` (docs/fuzzing.md).

use std::sync::OnceLock;

use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy,
};
use envoy_types::pb::envoy::config::cluster::v3::OutlierDetection;
use envoy_types::pb::envoy::config::cluster::v3::{circuit_breakers, CircuitBreakers, Cluster};
use envoy_types::pb::envoy::config::core::v3::{address, socket_address, Address, SocketAddress};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    route, route_action, route_match, weighted_cluster, HeaderMatcher, Route, RouteAction,
    RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, http_filter, HttpConnectionManager, HttpFilter,
};
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration, UInt32Value};
use prost::Message;
use sinew_fuzz::proptest::prelude::*;
use sinew_xds::assemble::{Change, Resources};

/// Protobuf wire shapes: varint tags of small field numbers, lengths, edge varints.
const PROTO_DICTIONARY: &[&[u8]] = &[
    b"\x0a",
    b"\x12",
    b"\x1a",
    b"\x22",
    b"\x08",
    b"\x10",
    b"\x00",
    b"\x7f",
    b"\xff\xff\xff\xff\x0f",
    b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
    b"\x80\x80\x80\x80\x80",
    b"type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
    b"type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
    b"127.0.0.1",
    b"::1",
    b"*",
    b"/",
];

/// YAML and JSON shapes for the bootstrap files.
const TEXT_DICTIONARY: &[&[u8]] = &[
    b": ",
    b"\n  ",
    b"- ",
    b"{}",
    b"[]",
    b"~",
    b"-1",
    b"0",
    b"4294967296",
    b"99999999999999999999999",
    b"1e308",
    b"0.000000001s",
    b"-5s",
    b"\"",
    b"'",
    b"&a ",
    b"*a",
    b"<<: *a",
    b"!!binary ",
    b"\t",
    b"\"@type\": type.googleapis.com/envoy.config.cluster.v3.Cluster",
    b"port_value",
    b"address",
    b"name",
    b"\\u0000",
];

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

fn seconds(s: i64) -> Option<PbDuration> {
    Some(PbDuration {
        seconds: s,
        nanos: 0,
    })
}

fn route_config(name: &str) -> RouteConfiguration {
    let to = |cluster: &str| {
        Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.into())),
            timeout: seconds(5),
            ..Default::default()
        }))
    };
    RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![VirtualHost {
            name: "all".into(),
            domains: vec!["*".into(), "example.com".into()],
            routes: vec![
                Route {
                    r#match: Some(RouteMatch {
                        path_specifier: Some(route_match::PathSpecifier::Path("/exact".into())),
                        headers: vec![HeaderMatcher {
                            name: "x-canary".into(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    action: to("svc"),
                    ..Default::default()
                },
                Route {
                    r#match: Some(RouteMatch {
                        path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                        ..Default::default()
                    }),
                    action: Some(route::Action::Route(RouteAction {
                        cluster_specifier: Some(route_action::ClusterSpecifier::WeightedClusters(
                            WeightedCluster {
                                clusters: vec![
                                    weighted_cluster::ClusterWeight {
                                        name: "svc".into(),
                                        weight: Some(UInt32Value { value: 80 }),
                                        ..Default::default()
                                    },
                                    weighted_cluster::ClusterWeight {
                                        name: "eds".into(),
                                        weight: Some(UInt32Value { value: 20 }),
                                        ..Default::default()
                                    },
                                ],
                                ..Default::default()
                            },
                        )),
                        ..Default::default()
                    })),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn listener() -> Listener {
    let router = HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any(
            "envoy.extensions.filters.http.router.v3.Router",
            &envoy_types::pb::envoy::extensions::filters::http::router::v3::Router::default(),
        ))),
        ..Default::default()
    };
    let hcm = HttpConnectionManager {
        stat_prefix: "ingress".into(),
        http_filters: vec![router],
        route_specifier: Some(RouteSpecifier::RouteConfig(route_config("inline"))),
        ..Default::default()
    };
    Listener {
        name: "web".into(),
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

fn assignment(name: &str) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: [8001u32, 8002]
                .iter()
                .map(|p| LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: socket(*p),
                        ..Default::default()
                    })),
                    load_balancing_weight: Some(UInt32Value { value: *p - 8000 }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn clusters() -> Vec<Cluster> {
    let static_cluster = Cluster {
        name: "svc".into(),
        connect_timeout: seconds(1),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        lb_policy: LbPolicy::RingHash as i32,
        load_assignment: Some(assignment("svc")),
        circuit_breakers: Some(CircuitBreakers {
            thresholds: vec![circuit_breakers::Thresholds {
                max_connections: Some(UInt32Value { value: 100 }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        outlier_detection: Some(OutlierDetection {
            consecutive_5xx: Some(UInt32Value { value: 5 }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let eds = Cluster {
        name: "eds".into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig::default()),
        ..Default::default()
    };
    vec![static_cluster, eds]
}

fn change<T>(updated: Vec<T>) -> Change<T> {
    Change {
        updated,
        removed: Vec::new(),
        complete: true,
    }
}

/// The four resource types, each encoded; the fuzzed bytes are decoded as `kind`.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Listener,
    Route,
    Cluster,
    Assignment,
}

fn seeds() -> Vec<Vec<u8>> {
    let mut s = vec![
        listener().encode_to_vec(),
        route_config("web-routes").encode_to_vec(),
    ];
    s.extend(clusters().iter().map(Message::encode_to_vec));
    s.push(assignment("eds").encode_to_vec());
    s
}

/// Decodes `bytes` as `kind` and takes it through the xDS client's path: map, add to the
/// held resources beside valid ones, assemble, validate. Errors are fine; panics are not.
fn decode_map_assemble(kind: Kind, bytes: &[u8]) {
    static BASE: OnceLock<Resources> = OnceLock::new();
    let base = BASE.get_or_init(|| {
        Resources::default()
            .listeners(change(vec![listener()]))
            .and_then(|r| r.clusters(change(clusters())))
            .and_then(|r| r.assignments(change(vec![assignment("eds")])))
            .expect("the seed resources map")
    });
    let next = match kind {
        Kind::Listener => Listener::decode(bytes)
            .ok()
            .map(|l| base.listeners(change(vec![l]))),
        Kind::Route => RouteConfiguration::decode(bytes)
            .ok()
            .map(|r| base.routes(change(vec![r]))),
        Kind::Cluster => Cluster::decode(bytes)
            .ok()
            .map(|c| base.clusters(change(vec![c]))),
        Kind::Assignment => ClusterLoadAssignment::decode(bytes)
            .ok()
            .map(|a| base.assignments(change(vec![a]))),
    };
    if let Some(Ok(mut resources)) = next {
        let assembled = resources.assemble(&sinew_config::Config::default());
        let _ = sinew_config::validate(&assembled.config);
    }
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Listener),
        Just(Kind::Route),
        Just(Kind::Cluster),
        Just(Kind::Assignment),
    ]
}

#[test]
fn fuzz_xds_resources_mutated() {
    sinew_fuzz::run(
        "fuzz_xds_resources_mutated",
        2,
        (kind(), sinew_fuzz::mutated(seeds(), PROTO_DICTIONARY)),
        |(kind, bytes)| {
            decode_map_assemble(kind, &bytes);
            Ok(())
        },
    );
}

#[test]
fn fuzz_xds_resources_random() {
    sinew_fuzz::run(
        "fuzz_xds_resources_random",
        2,
        (kind(), sinew_fuzz::token_soup(PROTO_DICTIONARY, 40)),
        |(kind, bytes)| {
            decode_map_assemble(kind, &bytes);
            Ok(())
        },
    );
}

fn bootstrap_samples() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/envoy");
    let mut samples: Vec<String> = std::fs::read_dir(dir)
        .expect("examples/envoy")
        .map(|e| std::fs::read_to_string(e.expect("entry").path()).expect("an example"))
        .collect();
    samples.sort();
    assert!(
        samples.len() >= 4,
        "examples/envoy has the bootstrap samples"
    );
    samples
}

/// Every bootstrap error has a position: its own, or its field's in the file. Only an
/// error about the whole document may have neither (it is printed at 1:1, its start).
fn assert_positioned(
    text: &str,
    errors: &[sinew_config::ConfigError],
) -> Result<(), TestCaseError> {
    let map = sinew_config::SourceMap::index(text);
    for e in errors {
        let position = e.position.or_else(|| map.lookup(&e.path));
        prop_assert!(
            position.is_some() || e.path.is_empty(),
            "an error the file does not locate: {}: {}",
            e.path,
            e.message
        );
    }
    Ok(())
}

#[test]
fn fuzz_envoy_bootstrap_mutated() {
    sinew_fuzz::run(
        "fuzz_envoy_bootstrap_mutated",
        4,
        sinew_fuzz::mutated_text(bootstrap_samples(), TEXT_DICTIONARY),
        |text| {
            if let Err(d) = sinew_xds::bootstrap::load_str("fuzz.yaml", &text) {
                assert_positioned(&text, &d.errors)?;
            }
            Ok(())
        },
    );
}

#[test]
fn bootstrap_samples_load_unmutated() {
    // The mutated target is only meaningful if its samples are valid to begin with.
    for text in bootstrap_samples() {
        if let Err(d) = sinew_xds::bootstrap::load_str("sample.yaml", &text) {
            panic!("an examples/envoy sample does not load:\n{d}");
        }
    }
    // And the encoded seeds map and assemble.
    for (kind, seed) in [
        Kind::Listener,
        Kind::Route,
        Kind::Cluster,
        Kind::Cluster,
        Kind::Assignment,
    ]
    .into_iter()
    .zip(seeds())
    {
        decode_map_assemble(kind, &seed);
    }
}
