//! The xDS server: Envoy's Aggregated Discovery Service and the four per-type services,
//! state of the world and delta.
//!
//! Each stream follows the latest build ([`Built`]) through a watch channel and works out
//! its own node's view. It sends a type only when that view's version differs from what
//! it last sent, so a change reaches only the proxies whose resources it touches. Delta
//! streams send only the resources that changed (and the names removed); so do state of
//! the world streams for the types asked for by name (endpoints, route configurations),
//! which the protocol allows, while listeners and clusters go out whole. ACKs and
//! NACKs are recorded per node in [`Status`] for the admin API.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use serde::Serialize;
use sinew_xds_client::Kind;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status as GrpcStatus, Streaming};

use crate::snapshot::{fnv1a, Built, Entries};

/// What each node was sent and what it answered, for the admin API.
#[derive(Default)]
pub struct Status {
    nodes: Mutex<BTreeMap<String, NodeStatus>>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeStatus {
    pub cluster: String,
    /// Streams open now.
    pub streams: u32,
    /// By type (CDS, EDS, LDS, RDS).
    pub types: BTreeMap<&'static str, TypeStatus>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TypeStatus {
    /// Version of the last response sent.
    pub sent: String,
    /// Version the node last ACKed.
    pub acked: String,
    /// The last NACK's message, cleared by the next ACK.
    pub nack: Option<String>,
    pub nacks: u64,
}

impl Status {
    pub fn snapshot(&self) -> BTreeMap<String, NodeStatus> {
        self.nodes.lock().expect("status lock").clone()
    }

    fn update(&self, node: &str, f: impl FnOnce(&mut NodeStatus)) {
        let mut nodes = self.nodes.lock().expect("status lock");
        f(nodes.entry(node.to_string()).or_default());
    }

    fn typed(&self, node: &str, kind: Kind, f: impl FnOnce(&mut TypeStatus)) {
        self.update(node, |n| f(n.types.entry(kind.short_name()).or_default()));
    }
}

/// The gRPC service.
#[derive(Clone)]
pub struct AdsServer {
    pub built: watch::Receiver<Arc<Built>>,
    pub status: Arc<Status>,
}

type Responses<T> = ReceiverStream<Result<T, GrpcStatus>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsServer {
    type StreamAggregatedResourcesStream = Responses<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = Responses<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, GrpcStatus> {
        Ok(self.open_sotw(request))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, GrpcStatus> {
        Ok(self.open_delta(request))
    }
}

impl AdsServer {
    fn open_sotw(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Response<Responses<DiscoveryResponse>> {
        let (tx, rx) = mpsc::channel(16);
        let session = Session::new(self.built.clone(), self.status.clone());
        tokio::spawn(session.sotw(request.into_inner(), tx));
        Response::new(ReceiverStream::new(rx))
    }

    fn open_delta(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Response<Responses<DeltaDiscoveryResponse>> {
        let (tx, rx) = mpsc::channel(16);
        let session = Session::new(self.built.clone(), self.status.clone());
        tokio::spawn(session.delta(request.into_inner(), tx));
        Response::new(ReceiverStream::new(rx))
    }
}

/// The per-type discovery services (SDS, CDS, EDS, LDS, RDS): the same sessions as ADS, on
/// streams that each carry one type. REST-style `Fetch` calls are not served.
macro_rules! per_type_service {
    ($service:path, $stream_type:ident, $delta_type:ident, $stream:ident, $delta:ident, $fetch:ident) => {
        #[tonic::async_trait]
        impl $service for AdsServer {
            type $stream_type = Responses<DiscoveryResponse>;
            type $delta_type = Responses<DeltaDiscoveryResponse>;

            async fn $stream(
                &self,
                request: Request<Streaming<DiscoveryRequest>>,
            ) -> Result<Response<Self::$stream_type>, GrpcStatus> {
                Ok(self.open_sotw(request))
            }

            async fn $delta(
                &self,
                request: Request<Streaming<DeltaDiscoveryRequest>>,
            ) -> Result<Response<Self::$delta_type>, GrpcStatus> {
                Ok(self.open_delta(request))
            }

            async fn $fetch(
                &self,
                _request: Request<DiscoveryRequest>,
            ) -> Result<Response<DiscoveryResponse>, GrpcStatus> {
                Err(GrpcStatus::unimplemented(
                    "fetch is not served; open a stream",
                ))
            }
        }
    };
}

per_type_service!(
    envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::SecretDiscoveryService,
    StreamSecretsStream,
    DeltaSecretsStream,
    stream_secrets,
    delta_secrets,
    fetch_secrets
);
per_type_service!(
    envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_server::ClusterDiscoveryService,
    StreamClustersStream,
    DeltaClustersStream,
    stream_clusters,
    delta_clusters,
    fetch_clusters
);
per_type_service!(
    envoy_types::pb::envoy::service::endpoint::v3::endpoint_discovery_service_server::EndpointDiscoveryService,
    StreamEndpointsStream,
    DeltaEndpointsStream,
    stream_endpoints,
    delta_endpoints,
    fetch_endpoints
);
per_type_service!(
    envoy_types::pb::envoy::service::listener::v3::listener_discovery_service_server::ListenerDiscoveryService,
    StreamListenersStream,
    DeltaListenersStream,
    stream_listeners,
    delta_listeners,
    fetch_listeners
);
per_type_service!(
    envoy_types::pb::envoy::service::route::v3::route_discovery_service_server::RouteDiscoveryService,
    StreamRoutesStream,
    DeltaRoutesStream,
    stream_routes,
    delta_routes,
    fetch_routes
);

/// One type on one stream.
#[derive(Default)]
struct Subscription {
    /// Names asked for (by-name types); wildcard types ignore it.
    names: BTreeSet<String>,
    /// Delta: the client asked for everything of this type.
    wildcard: bool,
    /// State of the world: the version last sent (or that the client said it holds).
    sent: Option<String>,
    /// Each resource's version as the client holds it: delta, and the by-name types
    /// (endpoints, route configurations) of state of the world.
    held: HashMap<String, String>,
    nonce: String,
    /// The version the outstanding nonce carried.
    pending: String,
}

struct Session {
    built: watch::Receiver<Arc<Built>>,
    status: Arc<Status>,
    node: Option<(String, String)>,
    subscriptions: BTreeMap<Kind, Subscription>,
    nonces: u64,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some((id, _)) = &self.node {
            self.status
                .update(id, |n| n.streams = n.streams.saturating_sub(1));
        }
    }
}

/// A type's version for what one node is sent: a hash of names and versions.
fn version_of(entries: &BTreeMap<&String, &Arc<crate::snapshot::Entry>>) -> String {
    let mut text = String::new();
    for (name, entry) in entries {
        text.push_str(name);
        text.push('\0');
        text.push_str(&entry.version);
        text.push('\0');
    }
    format!("{:016x}", fnv1a(text.as_bytes()))
}

impl Session {
    fn new(built: watch::Receiver<Arc<Built>>, status: Arc<Status>) -> Self {
        Session {
            built,
            status,
            node: None,
            subscriptions: BTreeMap::new(),
            nonces: 0,
        }
    }

    fn node_id(&self) -> &str {
        self.node.as_ref().map_or("", |(id, _)| id)
    }

    fn learn_node(&mut self, node: Option<&envoy_types::pb::envoy::config::core::v3::Node>) {
        if self.node.is_some() {
            return;
        }
        let (id, cluster) = node.map_or((String::new(), String::new()), |n| {
            (n.id.clone(), n.cluster.clone())
        });
        self.status.update(&id, |n| {
            n.streams += 1;
            n.cluster = cluster.clone();
        });
        tracing::info!(node = %id, cluster = %cluster, "xDS stream opened");
        self.node = Some((id, cluster));
    }

    /// This node's view of one type, narrowed to the subscription.
    fn view<'a>(
        &self,
        kind: Kind,
        all: &'a Entries,
    ) -> BTreeMap<&'a String, &'a Arc<crate::snapshot::Entry>> {
        let sub = &self.subscriptions[&kind];
        let everything = kind.is_wildcard() || sub.wildcard;
        all.iter()
            .filter(|(name, _)| everything || sub.names.contains(*name))
            .collect()
    }

    fn next_nonce(&mut self) -> String {
        self.nonces += 1;
        self.nonces.to_string()
    }

    /// Records an ACK or NACK carried by a request.
    fn answered(&mut self, kind: Kind, nonce: &str, error: Option<&str>) {
        let node = self.node_id().to_string();
        let Some(sub) = self.subscriptions.get(&kind) else {
            return;
        };
        if nonce.is_empty() || nonce != sub.nonce {
            return;
        }
        let pending = sub.pending.clone();
        match error {
            None => self.status.typed(&node, kind, |t| {
                t.acked = pending;
                t.nack = None;
            }),
            Some(message) => {
                tracing::warn!(node = %node, version = %pending, "xDS: {} NACKed: {message}", kind.short_name());
                self.status.typed(&node, kind, |t| {
                    t.nack = Some(message.to_string());
                    t.nacks += 1;
                });
            }
        }
    }

    async fn sotw(
        mut self,
        mut inbound: Streaming<DiscoveryRequest>,
        tx: mpsc::Sender<Result<DiscoveryResponse, GrpcStatus>>,
    ) {
        loop {
            tokio::select! {
                request = inbound.message() => {
                    let Ok(Some(request)) = request else { return };
                    self.learn_node(request.node.as_ref());
                    let Some(kind) = Kind::from_type_url(&request.type_url) else { continue };
                    let first = !self.subscriptions.contains_key(&kind);
                    let sub = self.subscriptions.entry(kind).or_default();
                    let names: BTreeSet<String> = request.resource_names.iter().cloned().collect();
                    let renamed = names != sub.names;
                    sub.names = names;
                    if first && !request.version_info.is_empty() {
                        // A reconnecting client (perhaps failing over from a replica) says
                        // what it holds: equal means nothing to send, and it counts as
                        // sent and ACKed.
                        sub.sent = Some(request.version_info.clone());
                        let held = request.version_info.clone();
                        self.status.typed(self.node_id(), kind, |t| {
                            t.sent = held.clone();
                            t.acked = held;
                        });
                    }
                    let error = request.error_detail.as_ref().map(|s| s.message.as_str());
                    self.answered(kind, &request.response_nonce, error);
                    if (renamed || first) && !self.send_sotw(kind, renamed && !first, &tx).await {
                        return;
                    }
                }
                changed = self.built.changed() => {
                    if changed.is_err() { return; }
                    for kind in Kind::ALL {
                        if self.subscriptions.contains_key(&kind) && !self.send_sotw(kind, false, &tx).await {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Sends `kind` when the node's view differs from what was sent (or `force`).
    /// False when the stream is gone.
    async fn send_sotw(
        &mut self,
        kind: Kind,
        force: bool,
        tx: &mpsc::Sender<Result<DiscoveryResponse, GrpcStatus>>,
    ) -> bool {
        let built = self.built.borrow().clone();
        if !built.ready {
            return true;
        }
        let (id, cluster) = self.node.clone().unwrap_or_default();
        let all = built.entries(kind, &id, &cluster);
        let view = self.view(kind, &all);
        if !kind.is_wildcard() && self.subscriptions[&kind].names.is_empty() {
            return true;
        }
        let version = version_of(&view);
        if !force && self.subscriptions[&kind].sent.as_deref() == Some(version.as_str()) {
            return true;
        }
        let sub = self.subscriptions.get_mut(&kind).expect("subscribed");
        let resources = if kind.is_wildcard() {
            view.values().map(|e| e.any.clone()).collect()
        } else {
            // Endpoints and route configurations are asked for by name, and the protocol
            // lets a response leave out the unchanged ones (the client keeps them), as
            // delta does: a change to one service sends one assignment, not all of them.
            if sub.held.is_empty() && sub.sent.as_deref() == Some(version.as_str()) {
                // A reconnecting client holds exactly this view.
                sub.held = view
                    .iter()
                    .map(|(name, e)| ((*name).clone(), e.version.clone()))
                    .collect();
                return true;
            }
            sub.held.retain(|name, _| view.contains_key(name));
            let mut changed = Vec::new();
            for (name, e) in &view {
                if sub.held.get(name.as_str()) != Some(&e.version) {
                    sub.held.insert((*name).clone(), e.version.clone());
                    changed.push(e.any.clone());
                }
            }
            changed
        };
        let nonce = self.next_nonce();
        let sub = self.subscriptions.get_mut(&kind).expect("subscribed");
        sub.sent = Some(version.clone());
        sub.nonce = nonce.clone();
        sub.pending = version.clone();
        self.status.typed(&id, kind, |t| t.sent = version.clone());
        let response = DiscoveryResponse {
            version_info: version,
            resources,
            type_url: kind.type_url().into(),
            nonce,
            ..Default::default()
        };
        tx.send(Ok(response)).await.is_ok()
    }

    async fn delta(
        mut self,
        mut inbound: Streaming<DeltaDiscoveryRequest>,
        tx: mpsc::Sender<Result<DeltaDiscoveryResponse, GrpcStatus>>,
    ) {
        loop {
            tokio::select! {
                request = inbound.message() => {
                    let Ok(Some(request)) = request else { return };
                    self.learn_node(request.node.as_ref());
                    let Some(kind) = Kind::from_type_url(&request.type_url) else { continue };
                    let first = !self.subscriptions.contains_key(&kind);
                    let sub = self.subscriptions.entry(kind).or_default();
                    if first {
                        let subscribe = &request.resource_names_subscribe;
                        sub.wildcard = (kind.is_wildcard() && subscribe.is_empty())
                            || subscribe.iter().any(|n| n == "*");
                        sub.held = request.initial_resource_versions.clone().into_iter().collect();
                    }
                    sub.names.extend(request.resource_names_subscribe.iter().filter(|n| *n != "*").cloned());
                    for name in &request.resource_names_unsubscribe {
                        sub.names.remove(name);
                        sub.held.remove(name);
                    }
                    let error = request.error_detail.as_ref().map(|s| s.message.as_str());
                    self.answered(kind, &request.response_nonce, error);
                    if !self.send_delta(kind, &tx).await {
                        return;
                    }
                }
                changed = self.built.changed() => {
                    if changed.is_err() { return; }
                    for kind in Kind::ALL {
                        if self.subscriptions.contains_key(&kind) && !self.send_delta(kind, &tx).await {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Sends what changed in `kind` since the client last heard. False when the stream
    /// is gone.
    async fn send_delta(
        &mut self,
        kind: Kind,
        tx: &mpsc::Sender<Result<DeltaDiscoveryResponse, GrpcStatus>>,
    ) -> bool {
        let built = self.built.borrow().clone();
        if !built.ready {
            return true;
        }
        let (id, cluster) = self.node.clone().unwrap_or_default();
        let all = built.entries(kind, &id, &cluster);
        let view = self.view(kind, &all);
        let version = version_of(&view);
        let sub = &self.subscriptions[&kind];
        let changed: Vec<Resource> = view
            .iter()
            .filter(|(name, e)| sub.held.get(name.as_str()) != Some(&e.version))
            .map(|(name, e)| Resource {
                name: (*name).clone(),
                version: e.version.clone(),
                resource: Some(e.any.clone()),
                ..Default::default()
            })
            .collect();
        let removed: Vec<String> = sub
            .held
            .keys()
            .filter(|name| !view.contains_key(name))
            .cloned()
            .collect();
        if changed.is_empty() && removed.is_empty() {
            return true;
        }
        let nonce = self.next_nonce();
        let sub = self.subscriptions.get_mut(&kind).expect("subscribed");
        for r in &changed {
            sub.held.insert(r.name.clone(), r.version.clone());
        }
        for name in &removed {
            sub.held.remove(name);
        }
        sub.nonce = nonce.clone();
        sub.pending = version.clone();
        self.status.typed(&id, kind, |t| t.sent = version.clone());
        let response = DeltaDiscoveryResponse {
            system_version_info: version,
            resources: changed,
            type_url: kind.type_url().into(),
            removed_resources: removed,
            nonce,
            ..Default::default()
        };
        tx.send(Ok(response)).await.is_ok()
    }
}
