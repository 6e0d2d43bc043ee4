//! SDS on a local Unix socket, as an agent beside a proxy serves it (Istio's agent does
//! this for Envoy): the workload certificate with its key (`default`) and the trust
//! bundle (`ROOTCA`), pushed again whenever either changes. The socket is the key's only
//! way out of the process, so it is made readable and writable by its owner only.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use arc_swap::ArcSwap;
use envoy_types::pb::envoy::config::core::v3::{data_source::Specifier, DataSource};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    secret, CertificateValidationContext, Secret, TlsCertificate,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use envoy_types::pb::google::protobuf::Any;
use futures_core::Stream;
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status, Streaming};

use crate::ROOT_CA_SECRET;

/// The workload certificate's secret name, as in Istio.
pub const WORKLOAD_SECRET: &str = "default";
const SECRET_TYPE: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// The PEM the agent hands out, and a generation that moves on every change.
pub struct SecretStore {
    /// Certificate chain and private key of the workload certificate.
    workload: ArcSwap<(String, String)>,
    root_ca: ArcSwap<String>,
    generation: watch::Sender<u64>,
}

impl std::fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretStore")
            .field("generation", &*self.generation.borrow())
            .finish_non_exhaustive()
    }
}

impl SecretStore {
    pub fn new(chain: String, key: String, root_ca: String) -> Arc<SecretStore> {
        Arc::new(SecretStore {
            workload: ArcSwap::from_pointee((chain, key)),
            root_ca: ArcSwap::from_pointee(root_ca),
            generation: watch::channel(1).0,
        })
    }

    pub fn set_workload(&self, chain: String, key: String) {
        self.workload.store(Arc::new((chain, key)));
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn set_root_ca(&self, pem: String) {
        if **self.root_ca.load() != pem {
            self.root_ca.store(Arc::new(pem));
            self.generation.send_modify(|g| *g += 1);
        }
    }

    /// The named secrets this store holds, encoded.
    fn secrets(&self, names: &[String]) -> Vec<Any> {
        names
            .iter()
            .filter_map(|name| {
                let kind = match name.as_str() {
                    WORKLOAD_SECRET => {
                        let pair = self.workload.load();
                        secret::Type::TlsCertificate(TlsCertificate {
                            certificate_chain: Some(inline(&pair.0)),
                            private_key: Some(inline(&pair.1)),
                            ..Default::default()
                        })
                    }
                    ROOT_CA_SECRET => {
                        secret::Type::ValidationContext(CertificateValidationContext {
                            trusted_ca: Some(inline(&self.root_ca.load())),
                            ..Default::default()
                        })
                    }
                    _ => return None,
                };
                let secret = Secret {
                    name: name.clone(),
                    r#type: Some(kind),
                };
                Some(Any {
                    type_url: SECRET_TYPE.into(),
                    value: secret.encode_to_vec(),
                })
            })
            .collect()
    }
}

fn inline(pem: &str) -> DataSource {
    DataSource {
        specifier: Some(Specifier::InlineBytes(pem.as_bytes().to_vec())),
        ..Default::default()
    }
}

/// The SDS server; dropping it stops serving and removes the socket.
pub struct AgentServer {
    task: JoinHandle<()>,
    path: PathBuf,
}

impl Drop for AgentServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Serves `store` over SDS on a Unix socket at `path` (replacing a stale one).
pub fn serve(path: &Path, store: Arc<SecretStore>) -> Result<AgentServer, String> {
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let service = AgentSds { store };
    let task = tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        if let Err(e) = tonic::transport::Server::builder()
            .add_service(SecretDiscoveryServiceServer::new(service))
            .serve_with_incoming(incoming)
            .await
        {
            tracing::error!("agent SDS server stopped: {e}");
        }
    });
    Ok(AgentServer {
        task,
        path: path.to_path_buf(),
    })
}

#[derive(Clone)]
struct AgentSds {
    store: Arc<SecretStore>,
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl SecretDiscoveryService for AgentSds {
    type StreamSecretsStream = ResponseStream<DiscoveryResponse>;
    type DeltaSecretsStream = ResponseStream<DeltaDiscoveryResponse>;

    /// State of the world: every request names the secrets wanted; the current ones go
    /// out when the names change and again whenever the store changes.
    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        let mut inbound = request.into_inner();
        let store = self.store.clone();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut changes = store.generation.subscribe();
            let mut names: Vec<String> = Vec::new();
            let mut nonce = 0u64;
            // A client that half-closes its side still gets every later change.
            let mut reading = true;
            loop {
                let send = tokio::select! {
                    message = inbound.message(), if reading => match message {
                        Ok(Some(r)) => {
                            if let Some(error) = &r.error_detail {
                                tracing::warn!("agent SDS: the proxy refused secrets: {}", error.message);
                            }
                            let asked = r.resource_names.clone();
                            let renamed = asked != names;
                            names = asked;
                            renamed
                        }
                        Ok(None) => {
                            reading = false;
                            false
                        }
                        Err(_) => return,
                    },
                    changed = changes.changed() => {
                        if changed.is_err() { return; }
                        true
                    }
                };
                if !send || names.is_empty() {
                    continue;
                }
                nonce += 1;
                let generation = *changes.borrow_and_update();
                let response = DiscoveryResponse {
                    version_info: generation.to_string(),
                    resources: store.secrets(&names),
                    type_url: SECRET_TYPE.into(),
                    nonce: nonce.to_string(),
                    ..Default::default()
                };
                if tx.send(Ok(response)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn delta_secrets(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Err(Status::unimplemented(
            "the agent serves state-of-the-world SDS (StreamSecrets)",
        ))
    }

    async fn fetch_secrets(
        &self,
        request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let names = request.into_inner().resource_names;
        Ok(Response::new(DiscoveryResponse {
            version_info: self.store.generation.borrow().to_string(),
            resources: self.store.secrets(&names),
            type_url: SECRET_TYPE.into(),
            ..Default::default()
        }))
    }
}
