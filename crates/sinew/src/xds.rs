//! `sinew proxy --xds URL`: the proxy steered by a control plane. The xDS client
//! ([`sinew_xds_client`]) delivers updates; this handler maps them ([`sinew_xds`]), adds
//! them to the static config from `-c` (if any), and swaps the result in with
//! [`Proxy::reload`]. A refused update is NACKed with the resource and field at fault
//! and the running config stays as it was.

use std::fmt::Write as _;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::google::protobuf::{value, Struct, Value};
use prost::Message as _;
use sinew_config::{Config, LoadedConfig, SourceMap};
use sinew_proxy::Proxy;
use sinew_xds::assemble::{Assembled, Change, Resources};
use sinew_xds_client::{Connection, Kind, Node, ResourceHandler, Update};

/// Applies xDS updates to a running proxy.
pub struct ProxyHandler {
    proxy: Arc<Proxy>,
    /// The config from `-c`, which xDS resources are added to.
    base: Arc<Config>,
    /// Shared with the blocking task that prepares the next update.
    resources: Arc<Resources>,
    /// What an agent's SDS socket serves, kept in step with the bundle from SDS.
    agent_secrets: Option<Arc<sinew_ca::agent::SecretStore>>,
}

/// An update's resources, assembled with the static config and checked: ready to swap in.
struct Prepared {
    next: Resources,
    assembled: Assembled,
}

impl ProxyHandler {
    pub fn new(
        proxy: Arc<Proxy>,
        base: Config,
        agent_secrets: Option<Arc<sinew_ca::agent::SecretStore>>,
    ) -> Self {
        ProxyHandler {
            proxy,
            base: Arc::new(base),
            resources: Arc::default(),
            agent_secrets,
        }
    }

    /// The mesh's trust bundle over SDS (`ROOTCA`): put in force for new handshakes at
    /// once. Secrets not asked for are ignored; a bad one is refused and the bundle kept.
    fn apply_secrets(&self, update: &Update) -> Result<(), String> {
        use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{secret, Secret};
        for (i, r) in update.resources.iter().enumerate() {
            let secret = Secret::decode(r.resource.value.as_slice())
                .map_err(|e| format!("resources[{i}]: does not decode: {e}"))?;
            if secret.name != sinew_ca::ROOT_CA_SECRET {
                continue;
            }
            let snapshot = self.proxy.snapshot();
            let Some((_, identity)) = snapshot.mesh.as_ref() else {
                continue;
            };
            let Some(secret::Type::ValidationContext(context)) = &secret.r#type else {
                return Err(format!(
                    "secret {:?}: the trust bundle must be a validation_context",
                    secret.name
                ));
            };
            let pem = context
                .trusted_ca
                .as_ref()
                .and_then(inline_data)
                .ok_or_else(|| {
                    format!(
                        "secret {:?}: validation_context.trusted_ca must hold the roots inline",
                        secret.name
                    )
                })?;
            let roots = sinew_tls::pem::parse_roots(&pem, &format!("secret {:?}", secret.name))?;
            let count = roots.len();
            identity.bundle.replace(roots)?;
            if let Some(store) = &self.agent_secrets {
                store.set_root_ca(String::from_utf8_lossy(&pem).into_owned());
            }
            tracing::info!(roots = count, "mesh trust bundle updated over SDS");
        }
        Ok(())
    }

    /// Maps, checks and swaps in one update; the running config stays on any error.
    async fn apply_update(&mut self, update: Update) -> Result<(), String> {
        if update.kind == Kind::Secret {
            return self.apply_secrets(&update);
        }
        let label = format!(
            "xDS {} version {:?}",
            update.kind.short_name(),
            update.version
        );
        self.rebuild(label, move |held| next_resources(held, update))
            .await
    }

    /// Makes the next resources from those held with `change`, then assembles, checks
    /// and swaps them in; the running config stays on any error.
    async fn rebuild(
        &mut self,
        label: String,
        change: impl FnOnce(&Resources) -> Result<Resources, String> + Send + 'static,
    ) -> Result<(), String> {
        let (held, base) = (self.resources.clone(), self.base.clone());
        let prepared = off_the_serving_threads(move || prepare(change(&held)?, &base))
            .await
            .inspect_err(|_| self.proxy.note_reload_failed())?;
        self.swap_in(prepared, label).await
    }

    /// Swaps in a prepared config; on success its resources become what the handler holds.
    async fn swap_in(&mut self, prepared: Prepared, label: String) -> Result<(), String> {
        let Prepared {
            next,
            mut assembled,
        } = prepared;
        let loaded = LoadedConfig {
            file: label,
            source: summary(&assembled).into(),
            config: std::mem::take(&mut assembled.config),
            source_map: SourceMap::default(),
        };
        match self.proxy.reload(loaded).await {
            Ok(_) => {
                for warming in &assembled.warming {
                    tracing::info!("xDS: {warming}");
                }
                for timed_out in &assembled.timed_out {
                    tracing::warn!("xDS: {timed_out}");
                }
                self.resources = Arc::new(next);
                Ok(())
            }
            Err(d) => Err(blamed(
                &assembled,
                d.errors.iter().map(|e| (&e.path, &e.message)),
            )),
        }
    }
}

/// Runs `work` on tokio's blocking pool. Mapping, assembling and checking a large update
/// take milliseconds (a 10,000-endpoint assignment, say); with one worker thread, the
/// traffic that thread serves would wait for them.
async fn off_the_serving_threads<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| format!("preparing the update failed: {e}"))?
}

/// The bytes of a data source given inline (a secret pushed over SDS carries its PEM
/// so; a file name would be a file on the control plane's disk).
fn inline_data(source: &envoy_types::pb::envoy::config::core::v3::DataSource) -> Option<Vec<u8>> {
    use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
    match source.specifier.as_ref()? {
        Specifier::InlineBytes(b) => Some(b.clone()),
        Specifier::InlineString(s) => Some(s.clone().into_bytes()),
        _ => None,
    }
}

/// The resources after `update`, or why it is refused.
fn next_resources(resources: &Resources, update: Update) -> Result<Resources, String> {
    fn decode<M: prost::Message + Default>(update: &Update) -> Result<Vec<M>, String> {
        update
            .resources
            .iter()
            .enumerate()
            .map(|(i, r)| {
                if r.resource.type_url != update.kind.type_url() {
                    return Err(format!(
                        "resources[{i}]: type {:?} in a {} response",
                        r.resource.type_url,
                        update.kind.short_name()
                    ));
                }
                M::decode(r.resource.value.as_slice())
                    .map_err(|e| format!("resources[{i}]: does not decode: {e}"))
            })
            .collect()
    }
    fn change<T>(updated: Vec<T>, update: Update) -> Change<T> {
        Change {
            updated,
            removed: update.removed,
            complete: update.complete,
        }
    }
    let r = resources;
    let next = match update.kind {
        Kind::Listener => r.listeners(change(decode::<Listener>(&update)?, update)),
        Kind::Route => r.routes(change(decode::<RouteConfiguration>(&update)?, update)),
        Kind::Cluster => r.clusters(change(decode::<Cluster>(&update)?, update)),
        Kind::Endpoint => r.assignments(change(decode::<ClusterLoadAssignment>(&update)?, update)),
        Kind::Secret => return Ok(r.clone()),
    };
    next.map_err(|e| e.to_string())
}

/// Assembles `next` with the static config and checks the result.
fn prepare(mut next: Resources, base: &Config) -> Result<Prepared, String> {
    let assembled = next.assemble(base);
    let errors = sinew_config::validate(&assembled.config);
    if !errors.is_empty() {
        return Err(blamed(
            &assembled,
            errors.iter().map(|e| (&e.path, &e.message)),
        ));
    }
    Ok(Prepared { next, assembled })
}

impl ResourceHandler for ProxyHandler {
    async fn apply(&mut self, update: Update) -> Result<(), String> {
        let started = std::time::Instant::now();
        let kind = update.kind;
        let result = self.apply_update(update).await;
        self.proxy
            .metrics
            .xds_update(kind.short_name(), result.is_ok(), started.elapsed());
        if result.is_ok() {
            tracing::debug!(
                kind = kind.short_name(),
                took_us = started.elapsed().as_micros() as u64,
                "xDS update applied"
            );
        }
        result
    }

    fn wanted(&self, kind: Kind) -> Vec<String> {
        match kind {
            Kind::Route => self.resources.wanted_routes(),
            Kind::Endpoint => self.resources.wanted_assignments(),
            Kind::Secret => {
                let from_ca = self.base.mesh.as_ref().is_some_and(|m| m.ca.is_some());
                if from_ca {
                    vec![sinew_ca::ROOT_CA_SECRET.to_string()]
                } else {
                    Vec::new()
                }
            }
            Kind::Listener | Kind::Cluster => Vec::new(),
        }
    }

    fn connection(&mut self, event: Connection) {
        self.proxy.metrics.xds_connection(match event {
            Connection::Connected => "connected",
            Connection::Failed => "failed",
            Connection::Lost => "lost",
        });
    }

    fn next_deadline(&self) -> Option<std::time::Instant> {
        self.resources.next_deadline()
    }

    /// A warming listener or cluster waited out its `initial_fetch_timeout`: assemble
    /// again, and it goes in without what it waited for.
    async fn expire(&mut self) {
        let unchanged = |held: &Resources| Ok(held.clone());
        if let Err(e) = self
            .rebuild("xDS initial_fetch_timeout".to_string(), unchanged)
            .await
        {
            tracing::warn!("xDS: serving what waited out its initial_fetch_timeout failed: {e}");
        }
    }
}

/// Config errors as one NACK message, each naming the resource it is about.
fn blamed<'a>(
    assembled: &Assembled,
    errors: impl Iterator<Item = (&'a String, &'a String)>,
) -> String {
    let mut out = String::new();
    for (path, message) in errors {
        if !out.is_empty() {
            out.push_str("; ");
        }
        let _ = write!(out, "{}: {message}", assembled.blame(path));
    }
    out
}

/// What `/config_dump` shows for a config made from xDS: the resources by name and what
/// is still warming, as YAML (JSON strings quote any name).
fn summary(assembled: &Assembled) -> String {
    let c = &assembled.config;
    let list = |names: Vec<&str>| serde_json::to_string(&names).expect("strings serialize");
    let warming: Vec<String> = assembled.warming.iter().map(ToString::to_string).collect();
    format!(
        "# assembled from the static config and xDS resources\n\
         listeners: {}\nroute_configs: {}\nclusters: {}\nwarming: {}\n",
        list(c.listeners.iter().map(|l| l.name.as_str()).collect()),
        list(c.route_configs.iter().map(|r| r.name.as_str()).collect()),
        list(c.clusters.iter().map(|r| r.name.as_str()).collect()),
        list(warming.iter().map(String::as_str).collect()),
    )
}

/// The node this proxy presents: `--node-id`, `--node-cluster` and `--node-metadata k=v`.
pub fn node(id: String, cluster: String, metadata: &[(String, String)]) -> Node {
    let fields = metadata
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                Value {
                    kind: Some(value::Kind::StringValue(v.clone())),
                },
            )
        })
        .collect();
    Node {
        id,
        cluster,
        metadata: (!metadata.is_empty()).then_some(Struct { fields }),
        user_agent_name: "sinew".into(),
        user_agent_version_type: Some(
            envoy_types::pb::envoy::config::core::v3::node::UserAgentVersionType::UserAgentVersion(
                env!("CARGO_PKG_VERSION").into(),
            ),
        ),
        ..Default::default()
    }
}
