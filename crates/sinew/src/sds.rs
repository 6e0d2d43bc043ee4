//! Secrets that listeners and clusters name (`{sds: NAME}` in Sinew's config; an Envoy
//! `sds_secret_config` with an `sds_config`), put in force in [`PushedSecrets`]:
//!
//! - on the xDS stream: the handler in `xds.rs` asks for the names the config uses and
//!   hands each response to [`check`] and then [`put_in_force`];
//! - from a file holding a `DiscoveryResponse` (`path`, Envoy's `path_config_source`):
//!   [`watch_files`] reads each file once before the config that names it is compiled,
//!   then re-reads it whenever it (or its `watched_directory`) changes.
//!
//! - from an SDS server of its own (`server`, Envoy's `api_config_source`, as Istio's
//!   `sds-grpc` to its node agent's socket): [`subscribe_servers`] keeps one
//!   secrets-only stream to each server, asking for the names the config uses there.
//!
//! Either way a new version replaces the certificate or bundle in place: new handshakes
//! take it, established connections keep theirs, and nothing is reloaded — unless a
//! validation context's name matchers changed, which the caller applies with a rebuild.
//! A bad version is refused naming the secret and field, and the last good one stays.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock};

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use sinew_config::tls::{PemSource, SdsSecret};
use sinew_config::Config;
use sinew_tls::{PushedSecrets, SecretKey, SecretOrigin};
use sinew_xds::secret::{material, Material};

/// The proxy's metrics, once it runs: file watchers count their updates there too.
static METRICS: OnceLock<Arc<sinew_proxy::metrics::Metrics>> = OnceLock::new();

/// Where SDS updates are counted from now on.
pub fn count_in(metrics: Arc<sinew_proxy::metrics::Metrics>) {
    let _ = METRICS.set(metrics);
}

fn count(secret: &str, accepted: bool) {
    if let Some(m) = METRICS.get() {
        m.sds_update(secret, accepted);
    }
}

/// A secret checked and parsed, ready to put in force.
pub struct Checked {
    key: SecretKey,
    what: Parsed,
}

enum Parsed {
    Certificate(CertifiedKey),
    Validation(RootCertStore, Vec<sinew_tls::SanMatcher>),
}

/// Checks a secret and parses its PEM (reading any files it names); the error names the
/// secret and the field at fault.
pub fn check(secret: &Secret, origin: SecretOrigin) -> Result<Checked, String> {
    let label = format!("secret {:?}", secret.name);
    let parsed = match material(secret).map_err(|e| e.to_string())? {
        Material::Certificate { chain, key } => {
            let chain_at = format!("{label}: tls_certificate.certificate_chain");
            let key_at = format!("{label}: tls_certificate.private_key");
            let chain = chain.read().map_err(|e| format!("{chain_at}: {e}"))?;
            let key = key.read().map_err(|e| format!("{key_at}: {e}"))?;
            let certified = sinew_tls::certified_key(&chain, &key, &chain_at, &key_at)
                .map_err(|e| e.to_string())?;
            Parsed::Certificate(certified)
        }
        Material::Validation { trusted_ca, sans } => {
            let at = format!("{label}: validation_context.trusted_ca");
            let pem = trusted_ca.read().map_err(|e| format!("{at}: {e}"))?;
            let roots = sinew_tls::pem::parse_roots(&pem, &at)?;
            let sans = sinew_upstream::cluster::san_matchers(&sans);
            Parsed::Validation(roots, sans)
        }
    };
    Ok(Checked {
        key: SecretKey {
            name: secret.name.clone(),
            origin,
        },
        what: parsed,
    })
}

/// Puts checked secrets in force; whether a validation context's name matchers changed
/// (what uses it must then be rebuilt).
pub fn put_in_force(checked: Vec<Checked>) -> Result<bool, String> {
    let store = PushedSecrets::global();
    let mut matchers_changed = false;
    for Checked { key, what } in checked {
        match what {
            Parsed::Certificate(certified) => store.set_certificate(&key, certified),
            Parsed::Validation(roots, sans) => {
                matchers_changed |= store
                    .set_validation(&key, roots, sans)
                    .map_err(|e| format!("secret {:?}: validation_context: {e}", key.name))?;
            }
        }
        count(&key.name, true);
        tracing::info!(secret = %key, "SDS secret in force for new handshakes");
    }
    Ok(matchers_changed)
}

/// Counts a refused update of these secrets.
pub fn count_rejected(names: impl IntoIterator<Item = String>) {
    for name in names {
        count(&name, false);
    }
}

/// Every secret a config names.
pub fn referenced(config: &Config) -> Vec<&SdsSecret> {
    let mut out = Vec::new();
    for l in &config.listeners {
        out.extend(listener_secrets(l));
    }
    for c in &config.clusters {
        if let Some(t) = &c.tls {
            out.extend(
                [t.ca.as_ref(), t.cert.as_ref()]
                    .into_iter()
                    .flatten()
                    .filter_map(PemSource::sds),
            );
        }
    }
    out
}

/// The secrets a listener names.
pub fn listener_secrets(l: &sinew_config::model::Listener) -> Vec<&SdsSecret> {
    let tls = l
        .tls
        .iter()
        .chain(l.chains.iter().filter_map(|c| c.tls.as_ref()));
    let mut sources: Vec<&PemSource> = Vec::new();
    for t in tls {
        sources.extend(t.cert.iter());
        sources.extend(t.certificates.iter().map(|c| &c.cert));
        sources.extend(t.client_ca.iter());
    }
    sources.into_iter().filter_map(PemSource::sds).collect()
}

/// The names to ask the xDS stream for (not those the proxy answers itself).
pub fn stream_names(config: &Config) -> BTreeSet<String> {
    let store = PushedSecrets::global();
    referenced(config)
        .into_iter()
        .filter(|s| s.path.is_none() && s.server.is_none() && !store.is_local(&s.sds))
        .map(|s| s.sds.clone())
        .collect()
}

/// The secrets-only streams to SDS servers of their own, by server, with the names each
/// was asked for.
fn server_streams() -> &'static Mutex<BTreeMap<String, ServerStream>> {
    static STREAMS: OnceLock<Mutex<BTreeMap<String, ServerStream>>> = OnceLock::new();
    STREAMS.get_or_init(Default::default)
}

struct ServerStream {
    names: BTreeSet<String>,
    _client: sinew_xds_client::XdsClient,
}

/// The node the proxy presents to SDS servers of their own (the bootstrap's, or `sinew`).
static NODE: OnceLock<sinew_xds_client::Node> = OnceLock::new();

/// Sets the node presented to SDS servers; the first call wins.
pub fn set_node(mut node: sinew_xds_client::Node) {
    if node.id.is_empty() {
        node.id = "sinew".into();
    }
    let _ = NODE.set(node);
}

/// Opens a secrets-only stream to each SDS server `config` names, asking for the names
/// it uses there; a server asked for new names gets a new stream for all of them (the
/// secrets already in force stay in force meanwhile). Names the proxy answers itself
/// (its own workload certificate and bundle) are not asked for. Must run inside the
/// runtime.
pub fn subscribe_servers(config: &Config) {
    let store = PushedSecrets::global();
    let mut wanted: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for s in referenced(config) {
        if let (None, Some(server)) = (&s.path, &s.server) {
            if !store.is_local(&s.sds) {
                wanted.entry(server).or_default().insert(s.sds.clone());
            }
        }
    }
    let mut streams = server_streams().lock().unwrap_or_else(|e| e.into_inner());
    for (server, names) in wanted {
        let mut all = names;
        if let Some(running) = streams.get(server) {
            if all.is_subset(&running.names) {
                continue;
            }
            all.extend(running.names.iter().cloned());
        }
        let node = NODE
            .get()
            .cloned()
            .unwrap_or_else(|| sinew_xds_client::Node {
                id: "sinew".into(),
                ..Default::default()
            });
        let client = sinew_xds_client::XdsClient::start(
            sinew_xds_client::ClientConfig {
                servers: vec![server.to_string()],
                tls: None,
                tls_server_name: None,
                node,
                mode: sinew_xds_client::Mode::StateOfTheWorld,
                streams: sinew_xds_client::Streams::SecretsOnly,
                connect_timeout: std::time::Duration::from_secs(5),
            },
            ServerSecrets {
                server: server.to_string(),
                names: all.clone(),
            },
        );
        tracing::info!(%server, secrets = ?all, "SDS: subscribing to secrets on a server of their own");
        streams.insert(
            server.to_string(),
            ServerStream {
                names: all,
                _client: client,
            },
        );
    }
}

/// Puts in force what one SDS server sends.
struct ServerSecrets {
    server: String,
    names: BTreeSet<String>,
}

impl sinew_xds_client::ResourceHandler for ServerSecrets {
    async fn apply(&mut self, update: sinew_xds_client::Update) -> Result<(), String> {
        use prost::Message as _;
        let origin = SecretOrigin::Server(self.server.clone());
        let mut checked = Vec::new();
        for (i, r) in update.resources.iter().enumerate() {
            let secret = Secret::decode(r.resource.value.as_slice())
                .map_err(|e| format!("resources[{i}]: does not decode: {e}"))?;
            if !self.names.contains(&secret.name) {
                continue;
            }
            match check(&secret, origin.clone()) {
                Ok(c) => checked.push(c),
                Err(e) => {
                    count_rejected([secret.name]);
                    tracing::warn!(server = %self.server, "SDS: secret refused: {e}");
                    return Err(format!("resources[{i}]: {e}"));
                }
            }
        }
        if put_in_force(checked)? {
            tracing::warn!(
                server = %self.server,
                "SDS: a validation context's name matchers changed; they apply from the next config change"
            );
        }
        Ok(())
    }

    fn wanted(&self, kind: sinew_xds_client::Kind) -> Vec<String> {
        match kind {
            sinew_xds_client::Kind::Secret => self.names.iter().cloned().collect(),
            _ => Vec::new(),
        }
    }
}

/// Follows every secret `config` names outside the xDS stream: files read (and watched)
/// and SDS servers subscribed to, before the config compiles.
pub fn follow(config: &Config) -> Result<(), String> {
    watch_files(config)?;
    subscribe_servers(config);
    Ok(())
}

/// A file of secrets being watched.
struct SecretFile {
    path: String,
}

/// The files watched so far (each once, for the life of the process).
fn watched() -> &'static Mutex<BTreeMap<String, Arc<SecretFile>>> {
    static WATCHED: OnceLock<Mutex<BTreeMap<String, Arc<SecretFile>>>> = OnceLock::new();
    WATCHED.get_or_init(Default::default)
}

/// Reads every secrets file `config` names that is not watched yet, and watches it from
/// then on. A file that cannot be read or holds a bad secret the first time is an error
/// naming the file and field (as Envoy requires the file at load time); later a bad
/// version is logged and the last good secrets stay.
fn watch_files(config: &Config) -> Result<(), String> {
    let mut files: BTreeMap<&str, Option<&str>> = BTreeMap::new();
    for s in referenced(config) {
        if let Some(path) = &s.path {
            let dir = files.entry(path).or_default();
            if dir.is_none() {
                *dir = s.watched_directory.as_deref();
            }
        }
    }
    let mut watched = watched().lock().unwrap_or_else(|e| e.into_inner());
    for (path, dir) in files {
        if watched.contains_key(path) {
            continue;
        }
        let file = Arc::new(SecretFile {
            path: path.to_string(),
        });
        file.load()?;
        let mut paths = vec![path.to_string()];
        paths.extend(dir.map(str::to_string));
        sinew_tls::watch::spawn(&file, paths, SecretFile::load);
        watched.insert(path.to_string(), file);
    }
    Ok(())
}

impl SecretFile {
    fn load(&self) -> Result<(), String> {
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| format!("cannot read {:?}: {e}", self.path))?;
        let secrets = sinew_xds::secret::parse_file(&self.path, &text)?;
        let origin = SecretOrigin::File(self.path.clone());
        let checked: Result<Vec<Checked>, String> =
            secrets.iter().map(|s| check(s, origin.clone())).collect();
        match checked {
            Ok(checked) => {
                put_in_force(checked)?;
                Ok(())
            }
            Err(e) => {
                count_rejected(secrets.into_iter().map(|s| s.name));
                Err(format!("{}: {e}", self.path))
            }
        }
    }
}
