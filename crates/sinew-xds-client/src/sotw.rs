//! One state-of-the-world stream (ADS, or a single type's discovery service): initial
//! requests, then for each response an apply and an ACK or NACK, and a new request
//! whenever the names the handler wants change.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_client::ClusterDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
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
struct Subscription {
    names: Vec<String>,
    nonce: String,
    /// A request for this type has gone out on this stream.
    requested: bool,
}

pub(crate) async fn run<H: ResourceHandler>(
    channel: Channel,
    kinds: &[Kind],
    node: &Node,
    shared: &Shared<H>,
    remembered: &mut Remembered,
) -> Outcome {
    let (requests, outgoing) = mpsc::channel::<DiscoveryRequest>(16);
    let mut node = Some(node.clone());
    let mut subscriptions: HashMap<Kind, Subscription> = HashMap::new();
    let mut watchers: Vec<(Kind, watch::Receiver<Vec<String>>)> = kinds
        .iter()
        .filter_map(|k| shared.wanted.get(k).map(|s| (*k, s.subscribe())))
        .collect();

    // Wildcard types at once; by-name types when there are names (perhaps remembered
    // from before a reconnect).
    for &kind in kinds {
        let names = match watchers.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, w)) => w.borrow_and_update().clone(),
            None => Vec::new(),
        };
        let sub = subscriptions.entry(kind).or_insert(Subscription {
            names,
            nonce: String::new(),
            requested: false,
        });
        if kind.is_wildcard() || !sub.names.is_empty() {
            sub.requested = true;
            let request = DiscoveryRequest {
                version_info: remembered.versions.get(&kind).cloned().unwrap_or_default(),
                node: node.take(),
                resource_names: sub.names.clone(),
                type_url: kind.type_url().to_string(),
                ..Default::default()
            };
            let _ = requests.send(request).await;
        }
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
                    let reply = respond(response, &mut subscriptions, shared, remembered).await;
                    if let Some(reply) = reply {
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
                    let names = watcher.borrow_and_update().clone();
                    let Some(sub) = subscriptions.get_mut(kind) else { continue };
                    if names == sub.names && sub.requested {
                        continue;
                    }
                    if names.is_empty() && !sub.requested {
                        continue;
                    }
                    sub.names = names;
                    sub.requested = true;
                    let request = DiscoveryRequest {
                        version_info: remembered.versions.get(kind).cloned().unwrap_or_default(),
                        node: node.take(),
                        resource_names: sub.names.clone(),
                        type_url: kind.type_url().to_string(),
                        response_nonce: sub.nonce.clone(),
                        ..Default::default()
                    };
                    if requests.send(request).await.is_err() {
                        return Outcome { delivered, reason: "request stream closed".into() };
                    }
                }
            }
        }
    }
}

/// Applies a response and builds its ACK or NACK.
async fn respond<H: ResourceHandler>(
    response: DiscoveryResponse,
    subscriptions: &mut HashMap<Kind, Subscription>,
    shared: &Shared<H>,
    remembered: &mut Remembered,
) -> Option<DiscoveryRequest> {
    let Some(kind) = Kind::from_type_url(&response.type_url) else {
        tracing::warn!(type_url = %response.type_url, "xDS: ignoring a response of a type Sinew does not take");
        return None;
    };
    let sub = subscriptions.get_mut(&kind)?;
    sub.nonce = response.nonce.clone();
    let update = Update {
        kind,
        version: response.version_info.clone(),
        resources: response
            .resources
            .into_iter()
            .map(|resource| UpdatedResource {
                name: None,
                resource,
            })
            .collect(),
        removed: Vec::new(),
        complete: true,
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
            tracing::info!(version = %response.version_info, "xDS: {} accepted", kind.short_name());
            remembered.versions.insert(kind, response.version_info);
            None
        }
        Err(message) => {
            tracing::warn!(version = %response.version_info, "xDS: {} rejected: {message}", kind.short_name());
            Some(crate::handler::nack(message))
        }
    };
    Some(DiscoveryRequest {
        version_info: remembered.versions.get(&kind).cloned().unwrap_or_default(),
        node: None,
        resource_names: sub.names.clone(),
        type_url: kind.type_url().to_string(),
        response_nonce: response.nonce,
        error_detail,
        ..Default::default()
    })
}

/// Opens the stream on the aggregated service, or on the one type's own service.
async fn open(
    channel: Channel,
    kinds: &[Kind],
    requests: ReceiverStream<DiscoveryRequest>,
) -> Result<Streaming<DiscoveryResponse>, tonic::Status> {
    let response = match kinds {
        [Kind::Secret] => {
            SecretDiscoveryServiceClient::new(channel)
                .stream_secrets(requests)
                .await
        }
        [Kind::Cluster] => {
            ClusterDiscoveryServiceClient::new(channel)
                .stream_clusters(requests)
                .await
        }
        [Kind::Endpoint] => {
            EndpointDiscoveryServiceClient::new(channel)
                .stream_endpoints(requests)
                .await
        }
        [Kind::Listener] => {
            ListenerDiscoveryServiceClient::new(channel)
                .stream_listeners(requests)
                .await
        }
        [Kind::Route] => {
            RouteDiscoveryServiceClient::new(channel)
                .stream_routes(requests)
                .await
        }
        _ => {
            AggregatedDiscoveryServiceClient::new(channel)
                .stream_aggregated_resources(requests)
                .await
        }
    };
    response.map(tonic::Response::into_inner)
}
