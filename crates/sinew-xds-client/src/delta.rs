//! One incremental (delta) stream: the first request of each type carries the versions
//! the client already has, responses carry only what changed and what was removed, and
//! subscriptions to by-name types change by difference.

use std::collections::{BTreeSet, HashMap};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_client::ClusterDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use envoy_types::pb::envoy::service::endpoint::v3::endpoint_discovery_service_client::EndpointDiscoveryServiceClient;
use envoy_types::pb::envoy::service::listener::v3::listener_discovery_service_client::ListenerDiscoveryServiceClient;
use envoy_types::pb::envoy::service::route::v3::route_discovery_service_client::RouteDiscoveryServiceClient;
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::Streaming;
use tonic::transport::Channel;

use crate::handler::{ResourceHandler, Update, UpdatedResource};
use crate::state::{Outcome, Remembered, Shared};
use crate::type_url::Kind;

/// Per type, on this stream.
#[derive(Default)]
struct Subscription {
    names: BTreeSet<String>,
    requested: bool,
}

pub(crate) async fn run<H: ResourceHandler>(
    channel: Channel,
    kinds: &[Kind],
    node: &Node,
    shared: &Shared<H>,
    remembered: &mut Remembered,
) -> Outcome {
    let (requests, outgoing) = mpsc::channel::<DeltaDiscoveryRequest>(16);
    let mut node = Some(node.clone());
    let mut subscriptions: HashMap<Kind, Subscription> = HashMap::new();
    let mut watchers: Vec<(Kind, watch::Receiver<Vec<String>>)> = kinds
        .iter()
        .filter_map(|k| shared.wanted.get(k).map(|s| (*k, s.subscribe())))
        .collect();

    for &kind in kinds {
        let names: BTreeSet<String> = match watchers.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, w)) => w.borrow_and_update().iter().cloned().collect(),
            None => BTreeSet::new(),
        };
        let sub = subscriptions.entry(kind).or_default();
        if kind.is_wildcard() || !names.is_empty() {
            let _ = requests
                .send(first_request(kind, &names, node.take(), remembered))
                .await;
            sub.requested = true;
        }
        sub.names = names;
    }

    let mut inbound = match open(channel, kinds, ReceiverStream::new(outgoing)).await {
        Ok(s) => s,
        Err(status) => {
            return Outcome {
                delivered: false,
                reason: format!("stream refused: {status}"),
            }
        }
    };
    let mut delivered = false;
    loop {
        let changed = async {
            if watchers.is_empty() {
                std::future::pending::<()>().await;
            }
            let futures = watchers.iter_mut().map(|(_, w)| Box::pin(w.changed()));
            let _ = futures_util::future::select_all(futures).await;
        };
        tokio::select! {
            message = inbound.message() => match message {
                Ok(Some(response)) => {
                    delivered = true;
                    if let Some(reply) = respond(response, shared, remembered).await {
                        if requests.send(reply).await.is_err() {
                            return Outcome { delivered, reason: "request stream closed".into() };
                        }
                    }
                }
                Ok(None) => return Outcome { delivered, reason: "server closed the stream".into() },
                Err(status) => return Outcome { delivered, reason: status.to_string() },
            },
            () = changed => {
                for (kind, watcher) in watchers.iter_mut() {
                    let names: BTreeSet<String> = watcher.borrow_and_update().iter().cloned().collect();
                    let sub = subscriptions.entry(*kind).or_default();
                    let request = if !sub.requested {
                        if names.is_empty() {
                            continue;
                        }
                        first_request(*kind, &names, node.take(), remembered)
                    } else {
                        let subscribe: Vec<String> = names.difference(&sub.names).cloned().collect();
                        let unsubscribe: Vec<String> = sub.names.difference(&names).cloned().collect();
                        if subscribe.is_empty() && unsubscribe.is_empty() {
                            continue;
                        }
                        DeltaDiscoveryRequest {
                            node: node.take(),
                            type_url: kind.type_url().to_string(),
                            resource_names_subscribe: subscribe,
                            resource_names_unsubscribe: unsubscribe,
                            ..Default::default()
                        }
                    };
                    sub.requested = true;
                    sub.names = names;
                    if requests.send(request).await.is_err() {
                        return Outcome { delivered, reason: "request stream closed".into() };
                    }
                }
            }
        }
    }
}

/// A type's first request on a stream: what to subscribe to, and the versions the client
/// already holds (so a server can skip sending them again).
fn first_request(
    kind: Kind,
    names: &BTreeSet<String>,
    node: Option<Node>,
    remembered: &Remembered,
) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        node,
        type_url: kind.type_url().to_string(),
        // Empty for a wildcard type: Envoy's (legacy) wildcard subscription.
        resource_names_subscribe: names.iter().cloned().collect(),
        initial_resource_versions: remembered
            .resource_versions
            .get(&kind)
            .cloned()
            .unwrap_or_default(),
        ..Default::default()
    }
}

async fn respond<H: ResourceHandler>(
    response: DeltaDiscoveryResponse,
    shared: &Shared<H>,
    remembered: &mut Remembered,
) -> Option<DeltaDiscoveryRequest> {
    let Some(kind) = Kind::from_type_url(&response.type_url) else {
        tracing::warn!(type_url = %response.type_url, "xDS: ignoring a response of a type Sinew does not take");
        return None;
    };
    let versions: Vec<(String, String)> = response
        .resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect();
    let update = Update {
        kind,
        version: response.system_version_info.clone(),
        resources: response
            .resources
            .into_iter()
            .filter_map(|r| {
                r.resource.map(|resource| UpdatedResource {
                    name: Some(r.name),
                    resource,
                })
            })
            .collect(),
        removed: response.removed_resources.clone(),
        complete: false,
    };
    let result = {
        let mut handler = shared.handler.lock().await;
        let result = handler.apply(update).await;
        if result.is_ok() {
            shared.publish(&handler);
        }
        result
    };
    let error_detail = match result {
        Ok(()) => {
            tracing::info!(
                updated = versions.len(),
                removed = response.removed_resources.len(),
                "xDS: delta {} accepted",
                kind.short_name()
            );
            let held = remembered.resource_versions.entry(kind).or_default();
            for name in &response.removed_resources {
                held.remove(name);
            }
            held.extend(versions);
            None
        }
        Err(message) => {
            tracing::warn!("xDS: delta {} rejected: {message}", kind.short_name());
            Some(crate::handler::nack(message))
        }
    };
    Some(DeltaDiscoveryRequest {
        type_url: kind.type_url().to_string(),
        response_nonce: response.nonce,
        error_detail,
        ..Default::default()
    })
}

async fn open(
    channel: Channel,
    kinds: &[Kind],
    requests: ReceiverStream<DeltaDiscoveryRequest>,
) -> Result<Streaming<DeltaDiscoveryResponse>, tonic::Status> {
    let response = match kinds {
        [Kind::Secret] => {
            SecretDiscoveryServiceClient::new(channel)
                .delta_secrets(requests)
                .await
        }
        [Kind::Cluster] => {
            ClusterDiscoveryServiceClient::new(channel)
                .delta_clusters(requests)
                .await
        }
        [Kind::Endpoint] => {
            EndpointDiscoveryServiceClient::new(channel)
                .delta_endpoints(requests)
                .await
        }
        [Kind::Listener] => {
            ListenerDiscoveryServiceClient::new(channel)
                .delta_listeners(requests)
                .await
        }
        [Kind::Route] => {
            RouteDiscoveryServiceClient::new(channel)
                .delta_routes(requests)
                .await
        }
        _ => {
            AggregatedDiscoveryServiceClient::new(channel)
                .delta_aggregated_resources(requests)
                .await
        }
    };
    response.map(tonic::Response::into_inner)
}
