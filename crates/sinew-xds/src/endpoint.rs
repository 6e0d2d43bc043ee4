//! EDS: a `ClusterLoadAssignment` becomes the endpoint list of the cluster it names.
//!
//! Endpoints marked UNHEALTHY, DRAINING or TIMEOUT by the control plane take no traffic,
//! as in Envoy; the others (UNKNOWN, HEALTHY, DEGRADED) do. Labels come from the
//! endpoint's `metadata.filter_metadata["envoy.lb"]` (what Envoy's subset load balancer
//! reads) and the locality's `zone` (as label `zone`).

use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint, ClusterLoadAssignment, Endpoint, LbEndpoint,
};
use serde_json::{json, Value};
use sinew_config::model;

use crate::convert::socket_address;
use crate::{Ctx, XdsError};

const UNHEALTHY: i32 = 2;
const DRAINING: i32 = 3;
const TIMEOUT: i32 = 4;

/// The endpoints of `assignment`. It is taken apart rather than copied, and field paths
/// are spelled out only for an error: an assignment may hold tens of thousands of
/// endpoints, and this runs for every EDS update.
pub fn endpoints(assignment: ClusterLoadAssignment) -> Result<Vec<model::Endpoint>, XdsError> {
    let mut rest = assignment;
    let ctx = Ctx::new(
        "ClusterLoadAssignment",
        &std::mem::take(&mut rest.cluster_name),
    );
    let unsupported = |field: String| ctx.error(field, "is not supported by Sinew");
    let localities = std::mem::take(&mut rest.endpoints);
    // Drop overloads and overprovisioning change traffic; the policy's other fields are
    // ignored only at their defaults.
    ctx.only_supported("", &rest)?;
    let mut out = Vec::with_capacity(localities.iter().map(|l| l.lb_endpoints.len()).sum());
    for (l, mut locality) in localities.into_iter().enumerate() {
        let zone = locality.locality.take().map(|l| l.zone).unwrap_or_default();
        let lb_endpoints = std::mem::take(&mut locality.lb_endpoints);
        // Locality weights only matter with locality-weighted balancing, which Sinew does
        // not do: a weight here would be ignored, so it is refused.
        ctx.only_supported(format_args!("endpoints[{l}]"), &locality)?;
        for (e, lb) in lb_endpoints.into_iter().enumerate() {
            let at = EndpointPath(l, e);
            // Per endpoint, fields are taken by name rather than checked with
            // `only_supported`: comparing a message's empty strings with their defaults
            // costs about 100 ns each here (glibc's AVX-512 memcmp assists on the
            // dangling pointer of an empty String), a third of the mapping. The
            // patterns list every field, so a field added to Envoy's types is a compile
            // error here until it is mapped or refused.
            let LbEndpoint {
                health_status: health,
                metadata,
                load_balancing_weight,
                host_identifier,
            } = lb;
            let weight = load_balancing_weight.map_or(1, |w| w.value);
            let endpoint = match host_identifier {
                Some(lb_endpoint::HostIdentifier::Endpoint(endpoint)) => endpoint,
                Some(lb_endpoint::HostIdentifier::EndpointName(_)) => {
                    return Err(unsupported(format!("{at}.endpoint_name")))
                }
                None => return Err(ctx.error(format!("{at}.endpoint"), "is required")),
            };
            let Endpoint {
                address,
                health_check_config,
                additional_addresses,
                hostname: _,
                observability_name: _,
            } = endpoint;
            if health_check_config.is_some() {
                return Err(unsupported(format!("{at}.endpoint.health_check_config")));
            }
            if !additional_addresses.is_empty() {
                return Err(unsupported(format!("{at}.endpoint.additional_addresses")));
            }
            let address = socket_address(&ctx, format_args!("{at}.endpoint.address"), address)?;
            if matches!(health, UNHEALTHY | DRAINING | TIMEOUT) {
                continue;
            }
            if weight == 0 {
                return Err(ctx.error(format!("{at}.load_balancing_weight"), "must be at least 1"));
            }
            let mut labels = crate::convert::labels(metadata.as_ref());
            if !zone.is_empty() {
                // An `envoy.lb` label named zone wins over the locality's.
                labels.entry("zone".into()).or_insert_with(|| zone.clone());
            }
            out.push(model::Endpoint {
                address,
                weight,
                metadata: labels,
            });
        }
    }
    Ok(out)
}

/// Endpoints in the model's JSON shape (`{address, weight, metadata}`), for a cluster's
/// inline `load_assignment`.
pub fn to_json(endpoints: &[model::Endpoint]) -> Value {
    endpoints
        .iter()
        .map(|e| json!({"address": e.address, "weight": e.weight, "metadata": e.metadata}))
        .collect()
}

/// `endpoints[l].lb_endpoints[e]`, written out only when an error names it.
#[derive(Clone, Copy)]
struct EndpointPath(usize, usize);

impl std::fmt::Display for EndpointPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "endpoints[{}].lb_endpoints[{}]", self.0, self.1)
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::Locality;
    use envoy_types::pb::envoy::config::core::v3::{
        address, socket_address, Address, Metadata, SocketAddress,
    };
    use envoy_types::pb::envoy::config::endpoint::v3::{endpoint, LocalityLbEndpoints};
    use envoy_types::pb::google::protobuf::{value, Struct, Value};

    use super::*;

    fn lb_endpoint(host: &str, port: u32) -> LbEndpoint {
        LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: host.into(),
                        port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn assignment(lb_endpoints: Vec<LbEndpoint>) -> ClusterLoadAssignment {
        ClusterLoadAssignment {
            cluster_name: "svc".into(),
            endpoints: vec![LocalityLbEndpoints {
                locality: Some(Locality {
                    zone: "z1".into(),
                    ..Default::default()
                }),
                lb_endpoints,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn field_refused(lb: LbEndpoint) -> String {
        let e = endpoints(assignment(vec![lb_endpoint("10.0.0.1", 80), lb]))
            .expect_err("must be refused");
        assert_eq!(e.message, "is not supported by Sinew");
        e.field
    }

    #[test]
    fn endpoints_keep_address_weight_zone_and_labels_and_skip_the_unhealthy() {
        let mut labelled = lb_endpoint("::1", 8080);
        labelled.load_balancing_weight =
            Some(envoy_types::pb::google::protobuf::UInt32Value { value: 5 });
        let version = Value {
            kind: Some(value::Kind::StringValue("v2".into())),
        };
        labelled.metadata = Some(Metadata {
            filter_metadata: [(
                "envoy.lb".to_string(),
                Struct {
                    fields: [("version".to_string(), version)].into(),
                },
            )]
            .into(),
            ..Default::default()
        });
        let mut draining = lb_endpoint("10.0.0.9", 80);
        draining.health_status = DRAINING;
        let got = endpoints(assignment(vec![
            lb_endpoint("10.0.0.1", 80),
            labelled,
            draining,
        ]))
        .expect("maps");
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].address.as_str(), got[0].weight), ("10.0.0.1:80", 1));
        assert_eq!((got[1].address.as_str(), got[1].weight), ("[::1]:8080", 5));
        assert_eq!(got[1].metadata["zone"], "z1");
        assert_eq!(got[1].metadata["version"], "v2");
    }

    #[test]
    fn fields_sinew_does_not_serve_are_refused_by_their_path() {
        let mut checked = lb_endpoint("10.0.0.2", 80);
        if let Some(lb_endpoint::HostIdentifier::Endpoint(e)) = &mut checked.host_identifier {
            e.health_check_config = Some(endpoint::HealthCheckConfig::default());
        }
        assert_eq!(
            field_refused(checked),
            "endpoints[0].lb_endpoints[1].endpoint.health_check_config"
        );
        let mut resolved = lb_endpoint("10.0.0.2", 80);
        if let Some(lb_endpoint::HostIdentifier::Endpoint(e)) = &mut resolved.host_identifier {
            if let Some(Address {
                address: Some(address::Address::SocketAddress(s)),
            }) = &mut e.address
            {
                s.resolver_name = "custom".into();
            }
        }
        assert_eq!(
            field_refused(resolved),
            "endpoints[0].lb_endpoints[1].endpoint.address.socket_address.resolver_name"
        );
        let named = LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::EndpointName("e".into())),
            ..Default::default()
        };
        assert_eq!(
            field_refused(named),
            "endpoints[0].lb_endpoints[1].endpoint_name"
        );
    }
}
