//! The Kubernetes registry: Services and their `discovery.k8s.io/v1` EndpointSlices, in
//! one namespace or all, become services and instances of Sinew's model.
//!
//! Each TCP port of a Service is one service, named `<name>.<namespace>` when the Service
//! has a single port and `<name>.<namespace>:<port name>` when it has several (Kubernetes
//! requires every port of a multi-port Service to be named). Its instances are the
//! endpoints of the EndpointSlices labelled `kubernetes.io/service-name: <name>` in the
//! same namespace, at the slice port whose name matches the Service port's, leaving out
//! endpoints whose `conditions.ready` is false. Endpoints carry their `zone` and
//! `nodeName` as the labels `zone` and `node`.
//!
//! Both kinds are followed with kube's watcher (a list, then a watch from the list's
//! resource version; it re-lists when the API server says the version is gone) with
//! kube's default backoff after errors. Like the other registries it reports its whole
//! state, once both kinds are listed and then whenever what it would report changes.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, ResourceExt};

use super::{InstanceReporter, Reports};
use crate::config::KubernetesConfig;
use crate::services::Instance;

/// The label the EndpointSlice controller puts on a slice to name its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A namespace and a name.
type Key = (String, String);

/// What the registry keeps of a Service: its TCP ports, as (name, port).
#[derive(Debug, Clone, PartialEq)]
pub struct ServicePorts {
    ports: Vec<(String, i32)>,
    /// How many ports the Service declares, of any protocol: it decides the naming.
    declared: usize,
}

/// What the registry keeps of an EndpointSlice.
#[derive(Debug, Clone, PartialEq)]
pub struct Slice {
    /// The Service it belongs to, in its own namespace.
    service: Key,
    /// TCP ports, by name (`""` for an unnamed port).
    ports: BTreeMap<String, u16>,
    /// Ready endpoints: the first address and labels.
    endpoints: Vec<(std::net::IpAddr, BTreeMap<String, String>)>,
}

/// Follows the Kubernetes API until the builder goes away.
pub async fn watch(config: KubernetesConfig, reports: Reports) {
    let source = source(&config);
    let mut delay = Duration::from_millis(100);
    loop {
        match follow(&config, &source, &reports).await {
            Ok(()) => return,
            Err(e) => tracing::warn!("kubernetes registry: {e}; retrying in {delay:?}"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Tells registries apart in the builder: two with the same server and namespace are one.
pub fn source(config: &KubernetesConfig) -> String {
    format!(
        "kubernetes {} {}",
        config.api_server.as_deref().unwrap_or("(inferred)"),
        config.namespace.as_deref().unwrap_or("(all namespaces)")
    )
}

/// A client for `api_server`, or as kubectl would find one (kubeconfig, in-cluster).
/// The mesh CA's TokenReviews use it too.
pub(crate) async fn client(api_server: Option<&str>) -> Result<Client, String> {
    let kube_config = match api_server {
        // No credentials: meant for `kubectl proxy` or an API server that lets it in.
        Some(url) => kube::Config::new(
            url.parse()
                .map_err(|e| format!("api_server {url:?}: {e}"))?,
        ),
        None => kube::Config::infer()
            .await
            .map_err(|e| format!("no kubeconfig and not in a cluster: {e}"))?,
    };
    Client::try_from(kube_config).map_err(|e| format!("cannot make a client: {e}"))
}

/// Which kind of object a watcher event is about (boxed: a Service is large).
enum Change {
    Service(Box<Result<Event<Service>, watcher::Error>>),
    Slice(Box<Result<Event<EndpointSlice>, watcher::Error>>),
}

/// One client's life. The watchers recover on their own (re-listing when they must), so
/// this returns `Ok` only when the builder has gone away, and `Err` when no client can be
/// made.
async fn follow(config: &KubernetesConfig, source: &str, reports: &Reports) -> Result<(), String> {
    let client = client(config.api_server.as_deref()).await?;
    let (services, slices): (Api<Service>, Api<EndpointSlice>) = match &config.namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client, ns),
        ),
        None => (Api::all(client.clone()), Api::all(client)),
    };
    let services = watcher::watcher(services, watcher::Config::default())
        .default_backoff()
        .map(|e| Change::Service(Box::new(e)));
    // Only slices that name a Service can give a Service endpoints.
    let slices = watcher::watcher(
        slices,
        watcher::Config::default().labels(SERVICE_NAME_LABEL),
    )
    .default_backoff()
    .map(|e| Change::Slice(Box::new(e)));
    let mut changes = std::pin::pin!(futures_util::stream::select(services, slices));

    let mut state = State::default();
    let mut reporter = InstanceReporter::new(source, reports);
    while let Some(change) = changes.next().await {
        let changed = match change {
            Change::Service(change) => match *change {
                Ok(event) => state
                    .services
                    .apply(event, |s| Some((key(s)?, service_ports(s)?))),
                Err(e) => {
                    // The watcher recovers by itself, after kube's backoff.
                    tracing::warn!("kubernetes registry: services: {e}");
                    continue;
                }
            },
            Change::Slice(change) => match *change {
                Ok(event) => state.slices.apply(event, |s| Some((key(s)?, slice(s)?))),
                Err(e) => {
                    tracing::warn!("kubernetes registry: endpointslices: {e}");
                    continue;
                }
            },
        };
        // Reported after both first lists, then after each change that alters it.
        if !(changed && state.services.listed && state.slices.listed) {
            continue;
        }
        if !reporter.report(instances(&state.services.objects, &state.slices.objects)) {
            return Ok(());
        }
    }
    // The watchers' streams never end on their own.
    Err("the watch streams ended".into())
}

#[derive(Default)]
struct State {
    services: Store<ServicePorts>,
    slices: Store<Slice>,
}

/// One kind's objects, as the registry keeps them, by namespace and name.
struct Store<T> {
    objects: BTreeMap<Key, T>,
    /// A list in progress: it replaces `objects` when it is complete, so a re-list
    /// neither empties the registry meanwhile nor keeps objects deleted while it was
    /// not watching.
    listing: Option<BTreeMap<Key, T>>,
    /// The first list is complete.
    listed: bool,
}

impl<T> Default for Store<T> {
    fn default() -> Self {
        Store {
            objects: BTreeMap::new(),
            listing: None,
            listed: false,
        }
    }
}

impl<T> Store<T> {
    /// Folds in one watcher event; `keep` gives what is kept of an object, or `None` for
    /// an object that means nothing here (which then counts as deleted). Says whether
    /// `objects` may have changed (not while a list is still coming in).
    fn apply<K: ResourceExt>(
        &mut self,
        event: Event<K>,
        keep: impl Fn(&K) -> Option<(Key, T)>,
    ) -> bool {
        match event {
            Event::Init => {
                self.listing = Some(BTreeMap::new());
                return false;
            }
            Event::InitApply(object) => {
                if let (Some(listing), Some((key, value))) = (&mut self.listing, keep(&object)) {
                    listing.insert(key, value);
                }
                return false;
            }
            Event::InitDone => {
                if let Some(listing) = self.listing.take() {
                    self.objects = listing;
                }
                self.listed = true;
            }
            Event::Apply(object) => match keep(&object) {
                Some((key, value)) => {
                    self.objects.insert(key, value);
                }
                None => {
                    if let Some(key) = key(&object) {
                        self.objects.remove(&key);
                    }
                }
            },
            Event::Delete(object) => {
                if let Some(key) = key(&object) {
                    self.objects.remove(&key);
                }
            }
        }
        true
    }
}

fn key<K: ResourceExt>(object: &K) -> Option<Key> {
    Some((object.namespace()?, object.name_any()))
}

/// A Service's TCP ports; `None` for an ExternalName Service, which has no endpoints.
pub fn service_ports(service: &Service) -> Option<ServicePorts> {
    let spec = service.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    let declared = spec.ports.as_deref().unwrap_or_default();
    let ports = declared
        .iter()
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .map(|p| (p.name.clone().unwrap_or_default(), p.port))
        .collect();
    Some(ServicePorts {
        ports,
        declared: declared.len(),
    })
}

/// A slice's Service, TCP ports and ready endpoints; `None` for a slice that names no
/// Service or whose addresses are not IP addresses (the deprecated `FQDN` type).
pub fn slice(slice: &EndpointSlice) -> Option<Slice> {
    let service = slice.labels().get(SERVICE_NAME_LABEL)?.clone();
    let namespace = slice.namespace()?;
    if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
        return None;
    }
    let ports = slice
        .ports
        .iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .filter_map(|p| {
            let port = u16::try_from(p.port?).ok()?;
            Some((p.name.clone().unwrap_or_default(), port))
        })
        .collect();
    let endpoints = slice
        .endpoints
        .iter()
        .flatten()
        // Unknown readiness counts as ready, as the API asks of consumers.
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        .filter_map(|e| {
            // The controller writes one address; the API gives the others no meaning.
            let ip: std::net::IpAddr = e.addresses.first()?.parse().ok()?;
            let mut labels = BTreeMap::new();
            if let Some(zone) = e.zone.as_ref().filter(|z| !z.is_empty()) {
                labels.insert("zone".to_string(), zone.clone());
            }
            if let Some(node) = e.node_name.as_ref().filter(|n| !n.is_empty()) {
                labels.insert("node".to_string(), node.clone());
            }
            Some((ip, labels))
        })
        .collect();
    Some(Slice {
        service: (namespace, service),
        ports,
        endpoints,
    })
}

/// Every Service port as a service with the ready endpoints of its slices; a port with
/// none is there with no instances, so a route to it answers 503 rather than failing.
pub fn instances(
    services: &BTreeMap<Key, ServicePorts>,
    slices: &BTreeMap<Key, Slice>,
) -> BTreeMap<String, Vec<Instance>> {
    let mut by_service: BTreeMap<&Key, Vec<&Slice>> = BTreeMap::new();
    for s in slices.values() {
        by_service.entry(&s.service).or_default().push(s);
    }
    let mut out = BTreeMap::new();
    for (key @ (namespace, name), service) in services {
        let slices = by_service.get(key).map(Vec::as_slice).unwrap_or_default();
        for (port_name, port) in &service.ports {
            let service_name = if service.declared == 1 {
                format!("{name}.{namespace}")
            } else if port_name.is_empty() {
                format!("{name}.{namespace}:{port}")
            } else {
                format!("{name}.{namespace}:{port_name}")
            };
            let mut list: Vec<Instance> = slices
                .iter()
                .filter_map(|s| Some((s.ports.get(port_name)?, &s.endpoints)))
                .flat_map(|(port, endpoints)| {
                    endpoints.iter().map(|(ip, labels)| Instance {
                        address: std::net::SocketAddr::new(*ip, *port).to_string(),
                        labels: labels.clone(),
                        weight: 1,
                    })
                })
                .collect();
            // An endpoint can sit in two slices for a moment while the controller moves it.
            list.sort();
            list.dedup_by(|a, b| a.address == b.address);
            out.insert(service_name, list);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(name: &str, ports: serde_json::Value) -> (Key, ServicePorts) {
        let s: Service = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": "shop", "resourceVersion": "1"},
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "ports": ports},
        }))
        .unwrap();
        (key(&s).unwrap(), service_ports(&s).unwrap())
    }

    fn endpoint_slice(name: &str, service: &str, body: serde_json::Value) -> (Key, Slice) {
        let mut object = json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": name,
                "namespace": "shop",
                "resourceVersion": "2",
                "labels": {"kubernetes.io/service-name": service},
            },
            "addressType": "IPv4",
        });
        for (k, v) in body.as_object().unwrap() {
            object[k] = v.clone();
        }
        let s: EndpointSlice = serde_json::from_value(object).unwrap();
        (key(&s).unwrap(), slice(&s).unwrap())
    }

    fn addresses(list: &[Instance]) -> Vec<&str> {
        list.iter().map(|i| i.address.as_str()).collect()
    }

    #[test]
    fn a_single_port_service_is_named_after_itself_and_skips_not_ready_endpoints() {
        let services = BTreeMap::from([service(
            "reviews",
            json!([{"port": 80, "targetPort": 9080, "protocol": "TCP"}]),
        )]);
        let slices = BTreeMap::from([endpoint_slice(
            "reviews-abcde",
            "reviews",
            json!({
                "ports": [{"name": "", "port": 9080, "protocol": "TCP"}],
                "endpoints": [
                    {"addresses": ["10.1.0.5"], "conditions": {"ready": true},
                     "nodeName": "node-1", "zone": "eu-1a"},
                    {"addresses": ["10.1.0.6"], "conditions": {"ready": false, "terminating": true}},
                    {"addresses": ["10.1.0.7"]},
                ],
            }),
        )]);
        let out = instances(&services, &slices);
        assert_eq!(out.keys().collect::<Vec<_>>(), ["reviews.shop"]);
        let list = &out["reviews.shop"];
        assert_eq!(addresses(list), ["10.1.0.5:9080", "10.1.0.7:9080"]);
        assert_eq!(
            list[0].labels,
            BTreeMap::from([
                ("node".to_string(), "node-1".to_string()),
                ("zone".to_string(), "eu-1a".to_string())
            ])
        );
        assert!(list[1].labels.is_empty());
    }

    #[test]
    fn each_port_of_a_multi_port_service_is_a_service_with_its_own_slice_port() {
        let services = BTreeMap::from([service(
            "web",
            json!([
                {"name": "http", "port": 80, "targetPort": "http"},
                {"name": "grpc", "port": 9000, "targetPort": 9000},
                {"name": "dns", "port": 53, "protocol": "UDP"},
            ]),
        )]);
        // Pods that give the named port different numbers land in different slices.
        let slices = BTreeMap::from([
            endpoint_slice(
                "web-1",
                "web",
                json!({
                    "ports": [{"name": "http", "port": 8080}, {"name": "grpc", "port": 9000},
                              {"name": "dns", "port": 53, "protocol": "UDP"}],
                    "endpoints": [{"addresses": ["10.1.0.5"], "conditions": {"ready": true}}],
                }),
            ),
            endpoint_slice(
                "web-2",
                "web",
                json!({
                    "ports": [{"name": "http", "port": 8081}, {"name": "grpc", "port": 9000}],
                    "endpoints": [{"addresses": ["10.1.0.6"], "conditions": {"ready": true}}],
                }),
            ),
            // Another Service's slice.
            endpoint_slice(
                "other-1",
                "other",
                json!({
                    "ports": [{"name": "http", "port": 7000}],
                    "endpoints": [{"addresses": ["10.1.0.9"]}],
                }),
            ),
        ]);
        let out = instances(&services, &slices);
        assert_eq!(
            out.keys().collect::<Vec<_>>(),
            ["web.shop:grpc", "web.shop:http"],
            "UDP ports are left out; a Service with no slices of its own is none of these"
        );
        assert_eq!(
            addresses(&out["web.shop:http"]),
            ["10.1.0.5:8080", "10.1.0.6:8081"]
        );
        assert_eq!(
            addresses(&out["web.shop:grpc"]),
            ["10.1.0.5:9000", "10.1.0.6:9000"]
        );
    }

    #[test]
    fn a_service_without_endpoints_is_there_with_none_and_external_names_are_not() {
        let (k, s) = service("empty", json!([{"port": 80}]));
        let mut services = BTreeMap::from([(k, s)]);
        let external: Service = serde_json::from_value(json!({
            "metadata": {"name": "db", "namespace": "shop"},
            "spec": {"type": "ExternalName", "externalName": "db.example.com"},
        }))
        .unwrap();
        assert!(service_ports(&external).is_none());
        let (k, s) = service("noports", json!([]));
        services.insert(k, s);
        let out = instances(&services, &BTreeMap::new());
        assert_eq!(out.len(), 1);
        assert!(out["empty.shop"].is_empty());
    }

    #[test]
    fn slices_without_a_service_label_or_with_fqdn_addresses_are_not_kept() {
        let fqdn: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "x", "namespace": "shop",
                         "labels": {"kubernetes.io/service-name": "x"}},
            "addressType": "FQDN",
            "endpoints": [{"addresses": ["db.example.com"]}],
        }))
        .unwrap();
        assert!(slice(&fqdn).is_none());
        let unlabelled: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "y", "namespace": "shop"},
            "addressType": "IPv4",
        }))
        .unwrap();
        assert!(slice(&unlabelled).is_none());
    }

    #[test]
    fn a_relist_replaces_what_was_known_only_when_it_is_complete() {
        let mut store: Store<ServicePorts> = Store::default();
        let object = |name: &str| -> Service {
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "shop"},
                "spec": {"ports": [{"port": 80}]},
            }))
            .unwrap()
        };
        let keep = |s: &Service| Some((key(s)?, service_ports(s)?));
        store.apply(Event::Init, keep);
        store.apply(Event::InitApply(object("a")), keep);
        assert!(!store.listed && store.objects.is_empty());
        store.apply(Event::InitDone, keep);
        assert!(store.listed && store.objects.len() == 1);
        store.apply(Event::Apply(object("b")), keep);
        assert_eq!(store.objects.len(), 2);
        // A re-list in which `a` is gone: both stay until it completes, and nothing is
        // worth reporting before then.
        assert!(!store.apply(Event::Init, keep));
        assert!(!store.apply(Event::InitApply(object("b")), keep));
        assert_eq!(store.objects.len(), 2);
        assert!(store.apply(Event::InitDone, keep));
        assert_eq!(
            store.objects.keys().collect::<Vec<_>>(),
            [&("shop".to_string(), "b".to_string())]
        );
        store.apply(Event::Delete(object("b")), keep);
        assert!(store.objects.is_empty());
    }
}
