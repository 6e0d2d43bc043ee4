//! EDS: a `ClusterLoadAssignment` becomes the endpoint list of the cluster it names.
//!
//! Endpoints marked UNHEALTHY, DRAINING or TIMEOUT by the control plane take no traffic,
//! as in Envoy; the others (UNKNOWN, HEALTHY, DEGRADED) do. Labels come from the
//! endpoint's `metadata.filter_metadata["envoy.lb"]` (what Envoy's subset load balancer
//! reads) and the locality's `zone` (as label `zone`).

use envoy_types::pb::envoy::config::endpoint::v3::{lb_endpoint, ClusterLoadAssignment};
use serde_json::{json, Map, Value};

use crate::convert::socket_address;
use crate::{Ctx, XdsError};

const UNHEALTHY: i32 = 2;
const DRAINING: i32 = 3;
const TIMEOUT: i32 = 4;

/// The endpoints of `assignment`, in the model's JSON shape (`{address, weight, metadata}`).
pub fn endpoints(assignment: &ClusterLoadAssignment) -> Result<Vec<Value>, XdsError> {
    let ctx = Ctx::new("ClusterLoadAssignment", &assignment.cluster_name);
    let mut rest = assignment.clone();
    rest.cluster_name.clear();
    let localities = std::mem::take(&mut rest.endpoints);
    // Drop overloads and overprovisioning change traffic; the policy's other fields are
    // ignored only at their defaults.
    ctx.only_supported("", &rest)?;
    let mut out = Vec::new();
    for (l, locality) in localities.iter().enumerate() {
        let lpath = format!("endpoints[{l}]");
        let mut lrest = locality.clone();
        let zone = lrest.locality.take().map(|l| l.zone).unwrap_or_default();
        let lb_endpoints = std::mem::take(&mut lrest.lb_endpoints);
        // Locality weights only matter with locality-weighted balancing, which Sinew does
        // not do: a weight here would be ignored, so it is refused.
        ctx.only_supported(&lpath, &lrest)?;
        for (e, lb) in lb_endpoints.iter().enumerate() {
            let epath = format!("{lpath}.lb_endpoints[{e}]");
            let mut erest = lb.clone();
            let health = std::mem::take(&mut erest.health_status);
            let weight = erest
                .load_balancing_weight
                .take()
                .map(|w| w.value)
                .unwrap_or(1);
            let metadata = erest.metadata.take();
            let endpoint = match erest.host_identifier.take() {
                Some(lb_endpoint::HostIdentifier::Endpoint(endpoint)) => endpoint,
                Some(lb_endpoint::HostIdentifier::EndpointName(_)) => {
                    return Err(ctx.error(
                        format!("{epath}.endpoint_name"),
                        "is not supported by Sinew",
                    ))
                }
                None => return Err(ctx.error(format!("{epath}.endpoint"), "is required")),
            };
            ctx.only_supported(&epath, &erest)?;
            let mut endpoint_rest = endpoint.clone();
            let address = endpoint_rest.address.take();
            endpoint_rest.hostname.clear();
            endpoint_rest.observability_name.clear();
            ctx.only_supported(&format!("{epath}.endpoint"), &endpoint_rest)?;
            let address = socket_address(&ctx, &format!("{epath}.endpoint.address"), &address)?;
            if matches!(health, UNHEALTHY | DRAINING | TIMEOUT) {
                continue;
            }
            if weight == 0 {
                return Err(ctx.error(
                    format!("{epath}.load_balancing_weight"),
                    "must be at least 1",
                ));
            }
            let mut labels = Map::new();
            if !zone.is_empty() {
                labels.insert("zone".into(), Value::String(zone.clone()));
            }
            labels.extend(crate::convert::labels(metadata.as_ref()));
            out.push(json!({"address": address, "weight": weight, "metadata": labels}));
        }
    }
    Ok(out)
}
