//! The proxy's share of a 10,000-endpoint EDS update before the data plane compiles:
//! mapping the assignment into the model, then assembling the resources with the static
//! config and checking the result. `bench/eds-apply` measures the whole apply end to end.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig,
};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{
    address, config_source, socket_address, Address, AggregatedConfigSource, ApiVersion,
    ConfigSource, SocketAddress,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use sinew_config::Config;
use sinew_xds::assemble::{Change, Resources};

fn assignment(endpoints: usize, first_port: u32) -> ClusterLoadAssignment {
    let lb_endpoints = (0..endpoints)
        .map(|i| LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: format!("10.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255),
                        port_specifier: Some(socket_address::PortSpecifier::PortValue(
                            first_port + (i % 1000) as u32,
                        )),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            })),
            ..Default::default()
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: "big".into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn eds_update(c: &mut Criterion) {
    let update = assignment(10_000, 20_000);
    // An EDS cluster for the assignment, or the assignment would be dropped as unwanted.
    let cluster = Cluster {
        name: "big".into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(ConfigSource {
                resource_api_version: ApiVersion::V3 as i32,
                config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
                    AggregatedConfigSource {},
                )),
                ..Default::default()
            }),
            service_name: String::new(),
        }),
        ..Default::default()
    };
    let resources = Resources::default()
        .clusters(Change {
            updated: vec![cluster],
            removed: Vec::new(),
            complete: true,
        })
        .expect("an EDS cluster");
    let base = Config::default();
    let change = || Change {
        updated: vec![update.clone()],
        removed: Vec::new(),
        complete: false,
    };
    let mut group = c.benchmark_group("eds_update_10000_endpoints");
    group.bench_function("map", |b| {
        b.iter_batched(
            change,
            |change| black_box(resources.assignments(change).expect("maps")),
            criterion::BatchSize::LargeInput,
        )
    });
    let mapped = resources.assignments(change()).expect("maps");
    let mut probe = mapped.clone();
    let assembled = probe.assemble(&base);
    assert_eq!(assembled.config.clusters[0].endpoints.len(), 10_000);
    group.bench_function("assemble_and_validate", |b| {
        b.iter(|| {
            let mut next = mapped.clone();
            let assembled = next.assemble(&base);
            black_box(sinew_config::validate(&assembled.config))
        })
    });
    group.finish();
}

criterion_group!(benches, eds_update);
criterion_main!(benches);
