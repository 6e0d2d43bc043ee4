//! `sinew proxy --xds URL`: the proxy steered by a control plane. The xDS client
//! ([`sinew_xds_client`]) delivers updates; this handler maps them ([`sinew_xds`]), adds
//! them to the static config from `-c` (if any), and swaps the result in with
//! [`Proxy::reload`]. A refused update is NACKed with the resource and field at fault
//! and the running config stays as it was.
//!
//! Secrets (SDS) are asked for by the names the config uses (`{sds: NAME}`, from an
//! Envoy `sds_config: {ads: {}}`) and put in force in place ([`crate::sds`]); a new
//! listener naming a secret that has not arrived is held back (warming) until it does,
//! or until its `initial_fetch_timeout` (15 s unless set) runs out — then it serves and
//! refuses handshakes until the secret arrives, as Envoy's does.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// The secret names the config in force uses (held listeners' too): what the proxy
    /// asks the stream for.
    secret_names: BTreeSet<String>,
    /// New listeners held back until their secrets arrive, with when they stop waiting
    /// (None: for ever).
    held: BTreeMap<String, Option<Instant>>,
    /// Secrets from SDS servers of their own that held listeners wait for: their arrival
    /// is not an update of this stream, so it is looked for every [`SERVER_SECRET_POLL`].
    awaited_from_servers: Vec<sinew_tls::SecretKey>,
}

/// How often a listener held for a secret from an SDS server of its own looks for it.
const SERVER_SECRET_POLL: Duration = Duration::from_millis(50);

/// An update's resources, assembled with the static config and checked: ready to swap in.
struct Prepared {
    next: Resources,
    assembled: Assembled,
    secret_names: BTreeSet<String>,
}

/// Envoy's default `initial_fetch_timeout`, for a listener waiting for its secrets.
const SECRET_FETCH_TIMEOUT: Duration = Duration::from_secs(15);

impl ProxyHandler {
    pub fn new(
        proxy: Arc<Proxy>,
        base: Config,
        agent_secrets: Option<Arc<sinew_ca::agent::SecretStore>>,
    ) -> Self {
        let secret_names = crate::sds::stream_names(&base);
        ProxyHandler {
            proxy,
            base: Arc::new(base),
            resources: Arc::default(),
            agent_secrets,
            secret_names,
            held: BTreeMap::new(),
            awaited_from_servers: Vec::new(),
        }
    }

    /// Secrets named by the config (on the stream), checked all before any is put in
    /// force: a bad one refuses the response and every secret keeps its last good
    /// version. Whether what uses them needs a rebuild (a held listener may now serve,
    /// or a validation context's name matchers changed).
    fn apply_named_secrets(&self, update: &Update) -> Result<bool, String> {
        use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
        let mut checked = Vec::new();
        let mut names = Vec::new();
        for (i, r) in update.resources.iter().enumerate() {
            let secret = Secret::decode(r.resource.value.as_slice())
                .map_err(|e| format!("resources[{i}]: does not decode: {e}"))?;
            if !self.secret_names.contains(&secret.name) {
                continue;
            }
            names.push(secret.name.clone());
            match crate::sds::check(&secret, sinew_tls::SecretOrigin::Stream) {
                Ok(c) => checked.push(c),
                Err(e) => {
                    crate::sds::count_rejected([secret.name]);
                    return Err(format!("resources[{i}]: {e}"));
                }
            }
        }
        let matchers_changed = crate::sds::put_in_force(checked)?;
        Ok(matchers_changed || !self.held.is_empty())
    }

    /// Takes out of `config` each new listener whose secrets (on the stream) have not
    /// arrived, unless its wait ran out; returns the listeners held and their deadlines.
    fn hold_warming(
        &self,
        config: &mut Config,
        from_servers: &mut Vec<sinew_tls::SecretKey>,
    ) -> BTreeMap<String, Option<Instant>> {
        let store = sinew_tls::PushedSecrets::global();
        let now = Instant::now();
        let snapshot = self.proxy.snapshot();
        let running = |name: &str| snapshot.listeners.iter().any(|l| &*l.name == name);
        let mut held = BTreeMap::new();
        config.listeners.retain(|l| {
            let missing: Vec<_> = crate::sds::listener_secrets(l)
                .into_iter()
                .filter(|s| s.path.is_none())
                .filter(|s| !store.has_arrived(&sinew_upstream::cluster::secret_key(s)))
                .collect();
            // A listener already serving keeps serving its new version: its handshakes
            // wait for the secret rather than its port closing.
            if missing.is_empty() || running(&l.name) {
                return true;
            }
            // It waits for the slowest secret; `0s` waits for ever.
            let wait = missing
                .iter()
                .map(|s| s.initial_fetch_timeout.unwrap_or(SECRET_FETCH_TIMEOUT))
                .map(|t| (!t.is_zero()).then_some(t))
                .max_by_key(|t| t.map_or(u128::MAX, |t| t.as_nanos()))
                .flatten();
            let deadline = match self.held.get(&l.name) {
                Some(deadline) => *deadline,
                None => wait.map(|t| now + t),
            };
            let names: Vec<&str> = missing.iter().map(|s| s.sds.as_str()).collect();
            if deadline.is_some_and(|d| d <= now) {
                tracing::warn!(
                    listener = %l.name,
                    secrets = ?names,
                    "secrets did not arrive within initial_fetch_timeout: the listener serves and refuses handshakes until they do"
                );
                return true;
            }
            from_servers.extend(
                missing
                    .iter()
                    .filter(|s| s.server.is_some())
                    .map(|s| sinew_upstream::cluster::secret_key(s)),
            );
            tracing::info!(listener = %l.name, secrets = ?names, "listener warming: waiting for its SDS secrets");
            held.insert(l.name.clone(), deadline);
            false
        });
        held
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
            let rebuild = self.apply_named_secrets(&update)?;
            self.apply_secrets(&update)?;
            if rebuild {
                let unchanged = |held: &Resources| Ok(held.clone());
                let label = format!("xDS SDS version {:?}", update.version);
                // The secrets are in force either way; a failed rebuild is logged, not
                // held against them.
                if let Err(e) = self.rebuild(label, unchanged).await {
                    tracing::warn!("xDS: rebuilding after secrets arrived failed: {e}");
                }
            }
            return Ok(());
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
        let mut prepared = off_the_serving_threads(move || prepare(change(&held)?, &base))
            .await
            .inspect_err(|_| self.proxy.note_reload_failed())?;
        let mut from_servers = Vec::new();
        let waiting = self.hold_warming(&mut prepared.assembled.config, &mut from_servers);
        self.swap_in(prepared, label).await?;
        self.held = waiting;
        self.awaited_from_servers = from_servers;
        Ok(())
    }

    /// Swaps in a prepared config; on success its resources become what the handler holds.
    async fn swap_in(&mut self, prepared: Prepared, label: String) -> Result<(), String> {
        let Prepared {
            next,
            mut assembled,
            secret_names,
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
                self.secret_names = secret_names;
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
    // Secrets named from files are read before the config that names them compiles.
    crate::sds::follow(&assembled.config).map_err(|e| format!("SDS secrets file {e}"))?;
    let secret_names = crate::sds::stream_names(&assembled.config);
    Ok(Prepared {
        next,
        assembled,
        secret_names,
    })
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
                let mut names: Vec<String> = self.secret_names.iter().cloned().collect();
                if from_ca {
                    names.push(sinew_ca::ROOT_CA_SECRET.to_string());
                }
                names
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
        let held = self.held.values().flatten().copied().min();
        let poll =
            (!self.awaited_from_servers.is_empty()).then(|| Instant::now() + SERVER_SECRET_POLL);
        [self.resources.next_deadline(), held, poll]
            .into_iter()
            .flatten()
            .min()
    }

    /// A warming listener or cluster waited out its `initial_fetch_timeout`, or a secret
    /// a held listener waits for came from its SDS server: assemble again, and it goes in
    /// (without what it waited for, in the first case).
    async fn expire(&mut self) {
        if !self.awaited_from_servers.is_empty() {
            let now = Instant::now();
            let store = sinew_tls::PushedSecrets::global();
            let arrived = self
                .awaited_from_servers
                .iter()
                .any(|k| store.has_arrived(k));
            let due = [
                self.resources.next_deadline(),
                self.held.values().flatten().copied().min(),
            ]
            .into_iter()
            .flatten()
            .any(|d| d <= now);
            if !arrived && !due {
                return;
            }
        }
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
