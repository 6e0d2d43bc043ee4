//! Running the control plane: registries report to the builder, which debounces their
//! bursts, rebuilds the resources and publishes them to every stream; the xDS server and
//! the admin API run beside it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_server::ClusterDiscoveryServiceServer;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use envoy_types::pb::envoy::service::endpoint::v3::endpoint_discovery_service_server::EndpointDiscoveryServiceServer;
use envoy_types::pb::envoy::service::listener::v3::listener_discovery_service_server::ListenerDiscoveryServiceServer;
use envoy_types::pb::envoy::service::route::v3::route_discovery_service_server::RouteDiscoveryServiceServer;
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::SecretDiscoveryServiceServer;
use sinew_ca::service::istio_certificate_service_server::IstioCertificateServiceServer;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::ca::service::CertificateService;
use crate::ca::MeshCa;
use crate::config::{ControlConfig, RegistryConfig};
use crate::registry::{self, Report};
use crate::server::{AdsServer, Status};
use crate::services::Resource;
use crate::snapshot::{Built, Catalog};
use crate::status;

/// A running control plane; dropping it stops everything.
pub struct ControlPlane {
    pub xds_address: SocketAddr,
    pub admin_address: Option<SocketAddr>,
    /// The mesh CA, when configured (xDS is then served over TLS).
    pub ca: Option<Arc<MeshCa>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl ControlPlane {
    /// Binds the xDS server (and admin API), starts the registries. Must run in tokio.
    pub async fn start(config: ControlConfig) -> Result<ControlPlane, String> {
        let xds = tokio::net::TcpListener::bind(config.xds_address)
            .await
            .map_err(|e| format!("cannot listen on {} for xDS: {e}", config.xds_address))?;
        let xds_address = xds.local_addr().map_err(|e| e.to_string())?;
        let (built_tx, built_rx) = watch::channel(Arc::new(Built::default()));
        let status = Arc::new(Status::default());
        let problems = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (reports, inbox) = mpsc::unbounded_channel();
        let ca = match config.ca.clone() {
            Some(ca) => Some(MeshCa::start(ca, reports.clone()).map_err(|e| format!("ca: {e}"))?),
            None => None,
        };
        let mut tasks = Vec::new();
        for r in &config.registries {
            tasks.push(match r.clone() {
                RegistryConfig::Directory { directory } => {
                    tokio::spawn(registry::directory::watch(directory, reports.clone()))
                }
                RegistryConfig::Etcd { etcd } => tokio::spawn(registry::etcd::watch(
                    etcd.endpoints,
                    etcd.prefix,
                    reports.clone(),
                )),
                RegistryConfig::Zookeeper { zookeeper } => tokio::spawn(
                    registry::zookeeper::watch(zookeeper.servers, zookeeper.root, reports.clone()),
                ),
                RegistryConfig::Kubernetes { kubernetes } => {
                    tokio::spawn(registry::kubernetes::watch(kubernetes, reports.clone()))
                }
            });
        }
        tasks.push(tokio::spawn(build_loop(
            inbox,
            config.debounce,
            config.registries.len(),
            built_tx,
            problems.clone(),
        )));
        let built_rx_for_status = built_rx.clone();
        let service = AdsServer {
            built: built_rx,
            status: status.clone(),
        };
        let secured = ca.as_ref().map(|ca| {
            (
                tokio_rustls::TlsAcceptor::from(ca.server_tls()),
                CertificateService { ca: ca.clone() },
            )
        });
        tasks.push(tokio::spawn(async move {
            let router = tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .add_service(SecretDiscoveryServiceServer::new(service.clone()))
                .add_service(ClusterDiscoveryServiceServer::new(service.clone()))
                .add_service(EndpointDiscoveryServiceServer::new(service.clone()))
                .add_service(ListenerDiscoveryServiceServer::new(service.clone()))
                .add_service(RouteDiscoveryServiceServer::new(service.clone()))
                .add_service(
                    AggregatedDiscoveryServiceServer::new(service)
                        .max_decoding_message_size(64 << 20),
                );
            let result = match secured {
                Some((acceptor, certificates)) => {
                    router
                        .add_service(IstioCertificateServiceServer::new(certificates))
                        .serve_with_incoming(crate::ca::secure::incoming(xds, acceptor))
                        .await
                }
                None => {
                    router
                        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(xds))
                        .await
                }
            };
            if let Err(e) = result {
                tracing::error!("xDS server stopped: {e}");
            }
        }));
        let admin_address = match config.admin_address {
            Some(address) => {
                let (address, task) =
                    status::serve(address, status, problems, built_rx_for_status, ca.clone())
                        .await?;
                tasks.push(task);
                Some(address)
            }
            None => None,
        };
        Ok(ControlPlane {
            xds_address,
            admin_address,
            ca,
            tasks,
        })
    }
}

/// How long the first build waits for every registry's first report; after it, a
/// registry that is down (an unreachable etcd) no longer keeps the rest from serving.
const FIRST_BUILD_WAIT: Duration = Duration::from_secs(5);

/// Folds registry reports into the catalog and publishes a build after each burst: the
/// first report of a burst starts a `debounce` window, and everything arriving within it
/// goes into the same build. The first build waits until every registry has reported
/// (or [`FIRST_BUILD_WAIT`]), so no proxy is sent a half-known world.
async fn build_loop(
    mut inbox: mpsc::UnboundedReceiver<Report>,
    debounce: Duration,
    registries: usize,
    built: watch::Sender<Arc<Built>>,
    problems: Arc<std::sync::Mutex<Vec<String>>>,
) {
    let mut definitions: BTreeMap<String, Vec<Resource>> = BTreeMap::new();
    let mut catalog = Catalog::default();
    let mut reported: std::collections::BTreeSet<String> = Default::default();
    let first_deadline = tokio::time::Instant::now() + FIRST_BUILD_WAIT;
    loop {
        let first = if built.borrow().ready {
            inbox.recv().await
        } else {
            match tokio::time::timeout_at(first_deadline, inbox.recv()).await {
                Ok(report) => report,
                Err(_) => {
                    tracing::warn!(
                        "not every registry has reported after {FIRST_BUILD_WAIT:?}; serving what is known"
                    );
                    publish(&catalog, &built, &problems);
                    continue;
                }
            }
        };
        let Some(first) = first else { return };
        let mut reports = vec![first];
        let window = tokio::time::sleep(debounce);
        tokio::pin!(window);
        loop {
            tokio::select! {
                () = &mut window => break,
                next = inbox.recv() => match next {
                    Some(r) => reports.push(r),
                    None => break,
                },
            }
        }
        let mut redefined = false;
        for report in reports {
            match report {
                Report::Definitions { source, resources } => {
                    reported.insert(source.clone());
                    definitions.insert(source, resources);
                    redefined = true;
                }
                Report::Instances { source, services } => {
                    reported.insert(source.clone());
                    catalog.registered.insert(source, services);
                }
                Report::TrustBundle { pem } => catalog.trust_bundle = Some(pem),
            }
        }
        if redefined {
            catalog.services.clear();
            catalog.listeners.clear();
            for r in definitions.values().flatten() {
                match r {
                    Resource::Service(s) => {
                        catalog.services.insert(s.name.clone(), s.clone());
                    }
                    Resource::Listener(l) => {
                        catalog.listeners.insert(l.name.clone(), l.clone());
                    }
                }
            }
        }
        if built.borrow().ready || reported.len() >= registries {
            publish(&catalog, &built, &problems);
        }
    }
}

fn publish(
    catalog: &Catalog,
    built: &watch::Sender<Arc<Built>>,
    problems: &std::sync::Mutex<Vec<String>>,
) {
    let mut next = Built::new(catalog);
    next.carry_over(&built.borrow());
    for p in &next.problems {
        tracing::error!("catalog: {p} (left out; the rest is served)");
    }
    *problems.lock().expect("problems lock") = next.problems.clone();
    built.send_replace(Arc::new(next));
}
