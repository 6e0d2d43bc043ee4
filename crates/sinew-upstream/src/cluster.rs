//! A cluster: building it from config (taking over what a reload keeps), picking an
//! endpoint, and the background tasks that re-resolve DNS names, age out idle
//! connections, run active health checks and outlier detection.
//!
//! The live endpoint set is an immutable [`HostSet`] behind an `ArcSwap`: picking an
//! endpoint reads it without a lock, and a DNS or health change publishes a whole new set
//! whose balancers hold only the healthy endpoints (all of them in panic mode).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use sinew_balance::{PickContext, Policy};
use sinew_config::model::{self, Discovery, LbPolicy, UpstreamProtocol};
use sinew_config::tls::PemSource;
use sinew_config::ConfigError;

use sinew_tls::{
    MeshIdentity, PeerPolicy, PushedSecrets, RotatingCert, SanMatcher, SanType, SecretKey,
    SecretOrigin, ServerVerifier, StringMatch, TrustBundle,
};

use crate::breaker::CircuitBreakers;
use crate::connect::UpstreamTls;
use crate::dns::{Resolver, ServerResolver, SystemResolver};
use crate::health::Outcome;
use crate::health_check::ActiveChecker;
use crate::hosts::{Endpoint, HealthPolicy, HostSet};
use crate::outlier::OutlierDetector;
use crate::pool::{ConnectSettings, EndpointState};

/// A cluster of upstream endpoints.
pub struct Cluster {
    pub name: Arc<str>,
    pub protocol: UpstreamProtocol,
    config: model::Cluster,
    settings: Arc<ConnectSettings>,
    policy: Policy,
    /// Subset selectors routes asked for; index 0 is the whole cluster.
    selectors: Vec<BTreeMap<String, String>>,
    hosts: ArcSwap<HostSet>,
    resolver: Arc<dyn Resolver>,
    breakers: CircuitBreakers,
    health: HealthPolicy,
    /// `None` when the cluster has no active health check.
    active: Option<Arc<ActiveChecker>>,
    /// `None` when outlier detection is off: reporting outcomes then costs one branch.
    outlier: Option<Arc<OutlierDetector>>,
    /// Health-check results and ejections, for metrics; carried over from `previous`.
    events: Arc<crate::ClusterEvents>,
    /// Serializes publishing a new host set (DNS and health tasks both do).
    publishing: Mutex<()>,
    /// The proxy's identity, when the cluster speaks mesh mTLS.
    mesh: Option<Arc<MeshIdentity>>,
}

/// Collects the subsets routes need before the cluster is frozen.
pub struct ClusterBuilder<'a> {
    config: &'a model::Cluster,
    path: String,
    selectors: Vec<BTreeMap<String, String>>,
    /// Set by tests; otherwise the cluster's `dns_resolvers`, or the system's.
    resolver: Option<Arc<dyn Resolver>>,
    /// The proxy's identity, for `mtls`.
    mesh: Option<Arc<MeshIdentity>>,
}

impl<'a> ClusterBuilder<'a> {
    /// `path` is the cluster's config path, e.g. `clusters[3]`, for error messages.
    pub fn new(config: &'a model::Cluster, path: String) -> Self {
        Self {
            config,
            path,
            selectors: vec![BTreeMap::new()],
            resolver: None,
            mesh: None,
        }
    }

    /// The proxy's identity, which `mtls` presents and checks peers against.
    pub fn with_mesh(mut self, mesh: Option<Arc<MeshIdentity>>) -> Self {
        self.mesh = mesh;
        self
    }

    /// The cluster's TLS: `tls` (a CA, optional client certificate, SAN matchers) or
    /// mesh `mtls`. The error names the field at fault.
    fn upstream_tls(&self) -> Result<Option<UpstreamTls>, (String, String)> {
        let cfg = self.config;
        let alpn = |configured: Option<&Vec<String>>| -> Vec<Vec<u8>> {
            match configured {
                Some(list) => list.iter().map(|p| p.as_bytes().to_vec()).collect(),
                None => match cfg.protocol {
                    UpstreamProtocol::Http2 => vec![b"h2".to_vec()],
                    UpstreamProtocol::Http1 => vec![b"http/1.1".to_vec()],
                    UpstreamProtocol::SameAsDownstream => {
                        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
                    }
                },
            }
        };
        if let Some(t) = &cfg.tls {
            let field = |f: &str| format!("tls.{f}");
            let secrets = PushedSecrets::global();
            let (verifier, secret_sans) = match &t.ca {
                // Validation has made sure `ca` is given unless `verify` is off.
                _ if !t.verify => (ServerVerifier::accept_any(), Vec::new()),
                None => return Err((field("ca"), "is required".into())),
                Some(ca) => {
                    let (bundle, secret_sans) = match ca {
                        PemSource::File(ca) => (
                            TrustBundle::from_file(ca).map_err(|e| (field("ca"), e))?,
                            Vec::new(),
                        ),
                        PemSource::Inline(ca) => (
                            TrustBundle::from_pem(&ca.pem, "the inline CA")
                                .map_err(|e| (field("ca.pem"), e))?,
                            Vec::new(),
                        ),
                        PemSource::Sds(s) => secrets.validation(&secret_key(s)),
                    };
                    let mut sans = san_matchers(&t.match_subject_alt_names);
                    sans.extend(secret_sans.iter().cloned());
                    let verifier = ServerVerifier::new(
                        bundle,
                        sans.is_empty(),
                        PeerPolicy {
                            trust_domain: None,
                            subject_alt_names: sans,
                        },
                    );
                    (verifier, secret_sans)
                }
            };
            let client_cert = match (&t.cert, &t.key) {
                (Some(PemSource::Sds(s)), _) => Some(secrets.certificate(&secret_key(s))),
                (Some(cert), Some(key)) => Some(
                    certificate(cert, key, None)
                        .map_err(|e| e.field_and_message())
                        .map_err(|(f, m)| (field(f), m))?,
                ),
                _ => None,
            };
            let versions = protocol_versions(t.min_version, t.max_version);
            let mut tls = UpstreamTls::new(
                t.sni.as_deref(),
                verifier,
                client_cert,
                alpn(t.alpn.as_ref()),
                &versions,
            )
            .map_err(|(f, m)| (field(f), m))?;
            tls.secret_sans = secret_sans;
            return Ok(Some(tls));
        }
        if let Some(m) = &cfg.mtls {
            let Some(mesh) = &self.mesh else {
                return Err(("mtls".into(), "no mesh identity is configured".into()));
            };
            let verifier =
                ServerVerifier::new(mesh.bundle.clone(), false, mesh.peer_policy(&m.identities));
            let tls = UpstreamTls::new(
                m.sni.as_deref(),
                verifier,
                Some(mesh.cert.clone()),
                alpn(None),
                &protocol_versions(None, None),
            )
            .map_err(|(f, m)| (format!("mtls.{f}"), m))?;
            return Ok(Some(tls));
        }
        Ok(None)
    }

    /// Resolves DNS endpoints with `resolver` instead of the configured one.
    pub fn with_resolver(mut self, resolver: Arc<dyn Resolver>) -> Self {
        self.resolver = Some(resolver);
        self
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The subset index for endpoints whose metadata has all of `selector`'s labels.
    pub fn subset(&mut self, selector: &BTreeMap<String, String>) -> usize {
        match self.selectors.iter().position(|s| s == selector) {
            Some(i) => i,
            None => {
                self.selectors.push(selector.clone());
                self.selectors.len() - 1
            }
        }
    }

    /// Builds the cluster. Endpoint state (and so pooled connections) is taken over from
    /// `previous` — the same-named cluster of the running config — when the way of
    /// connecting has not changed.
    pub fn build(self, previous: Option<&Cluster>) -> Result<Arc<Cluster>, Vec<ConfigError>> {
        let cfg = self.config;
        let tls = match self.upstream_tls() {
            Ok(tls) => tls,
            Err((field, message)) => {
                return Err(vec![ConfigError::new(
                    format!("{}.{field}", self.path),
                    message,
                )])
            }
        };
        let same_connections = previous.is_some_and(|p| {
            p.config.protocol == cfg.protocol
                && p.config.connect_timeout == cfg.connect_timeout
                && p.config.tls == cfg.tls
                && p.settings.tls.as_ref().map(|t| &t.secret_sans)
                    == tls.as_ref().map(|t| &t.secret_sans)
                && p.config.mtls == cfg.mtls
                && p.mesh_identity_is(self.mesh.as_ref())
                && p.config.pool == cfg.pool
                && p.config.upstream_connection_options == cfg.upstream_connection_options
        });
        warn_if_unverified(cfg);
        let settings = match previous {
            Some(p) if same_connections => p.settings.clone(),
            _ => Arc::new(ConnectSettings {
                connect_timeout: cfg.connect_timeout,
                tls,
                pool: cfg.pool.clone(),
                tcp_keepalive: (cfg.upstream_connection_options.tcp_keepalive.as_ref())
                    .map(crate::socket::keepalive),
            }),
        };
        let policy = match cfg.lb {
            LbPolicy::RoundRobin => Policy::RoundRobin,
            LbPolicy::SmoothWeighted => Policy::SmoothWeighted,
            LbPolicy::Random => Policy::Random,
            LbPolicy::LeastRequest => Policy::least_request(),
            LbPolicy::RingHash => Policy::RingHash {
                min_ring_size: cfg.ring_size,
                max_ring_size: cfg.ring_size.max(8 * 1024 * 1024),
            },
            LbPolicy::Maglev => Policy::maglev(),
        };
        let previous_states: HashMap<SocketAddr, Arc<EndpointState>> = previous
            .map(|p| {
                p.hosts
                    .load()
                    .endpoints
                    .iter()
                    .map(|e| (e.address(), e.state.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let no_states = HashMap::new();
        let reusable = if same_connections {
            &previous_states
        } else {
            &no_states
        };
        let addresses: Vec<(SocketAddr, &model::Endpoint)> = match cfg.discovery {
            Discovery::Static => cfg
                .endpoints
                .iter()
                .filter_map(|e| e.address.parse().ok().map(|a| (a, e)))
                .collect(),
            // DNS clusters start from what the running config last resolved, so a reload
            // leaves no gap; the background task resolves again at once.
            Discovery::Dns | Discovery::LogicalDns => match previous {
                Some(p) if p.config.discovery == cfg.discovery => {
                    let hosts = p.hosts.load();
                    hosts
                        .endpoints
                        .iter()
                        .filter_map(|e| {
                            let source =
                                p.config.endpoints.iter().position(|c| {
                                    c.metadata == *e.metadata && c.weight == e.weight
                                })?;
                            cfg.endpoints.get(source).map(|c| (e.address(), c))
                        })
                        .collect()
                }
                _ => Vec::new(),
            },
        };
        let active = cfg
            .health_checks
            .first()
            .map(|hc| Arc::new(ActiveChecker::new(hc, &cfg.name, cfg.protocol)));
        let events: Arc<crate::ClusterEvents> =
            previous.map(|p| p.events.clone()).unwrap_or_default();
        let outlier = cfg
            .outlier_detection
            .clone()
            .map(|od| Arc::new(OutlierDetector::new(od).counting_into(events.clone())));
        let health = HealthPolicy {
            active: active.is_some(),
            outlier: outlier.is_some(),
            panic_threshold: cfg.healthy_panic_threshold,
        };
        let endpoints = make_endpoints(&addresses, reusable, &settings, health.active);
        // Endpoints that stay keep their health even when their connections are new.
        for e in &endpoints {
            if let Some(old) = previous_states.get(&e.address()) {
                if !Arc::ptr_eq(old, &e.state) {
                    e.state.health.take_over(&old.health);
                }
            }
        }
        let hosts = HostSet::new(endpoints, &self.selectors, &policy, health);
        let resolver = match self.resolver {
            Some(resolver) => resolver,
            None if cfg.dns_resolvers.is_empty() => Arc::new(SystemResolver),
            // The same servers: keep the resolver (and its open TCP connections, if any).
            None => match previous {
                Some(p) if p.config.dns_resolvers == cfg.dns_resolvers => p.resolver.clone(),
                _ => {
                    let servers: Vec<SocketAddr> = (cfg.dns_resolvers.iter())
                        .filter_map(|s| s.parse().ok())
                        .collect();
                    Arc::new(ServerResolver::new(&servers))
                }
            },
        };
        Ok(Arc::new(Cluster {
            name: cfg.name.as_str().into(),
            protocol: cfg.protocol,
            config: cfg.clone(),
            settings,
            policy,
            selectors: self.selectors,
            hosts: ArcSwap::from_pointee(hosts),
            resolver,
            // What is in flight under the running config stays counted under this one.
            breakers: CircuitBreakers::new(
                &cfg.circuit_breakers,
                previous
                    .map(|p| p.breakers.counts().clone())
                    .unwrap_or_default(),
            ),
            health,
            active,
            outlier,
            events,
            publishing: Mutex::new(()),
            mesh: cfg.mtls.as_ref().and(self.mesh.clone()),
        }))
    }
}

/// Endpoints for `addresses`, reusing the states in `reusable`. New ones wait for their
/// first active check when `awaiting_check`, so no traffic goes to them before it passes.
fn make_endpoints(
    addresses: &[(SocketAddr, &model::Endpoint)],
    reusable: &HashMap<SocketAddr, Arc<EndpointState>>,
    settings: &Arc<ConnectSettings>,
    awaiting_check: bool,
) -> Vec<Endpoint> {
    // Most endpoints have no labels: they share one empty map.
    let unlabelled = Arc::new(BTreeMap::new());
    addresses
        .iter()
        .map(|(addr, cfg)| Endpoint {
            weight: cfg.weight,
            metadata: if cfg.metadata.is_empty() {
                unlabelled.clone()
            } else {
                Arc::new(cfg.metadata.clone())
            },
            state: reusable.get(addr).cloned().unwrap_or_else(|| {
                let mut state = EndpointState::new(*addr, settings.clone());
                state.health = crate::health::EndpointHealth::new(awaiting_check);
                Arc::new(state)
            }),
        })
        .collect()
}

/// A chosen endpoint, counted as active until dropped.
pub struct Picked {
    pub state: Arc<EndpointState>,
}

impl Drop for Picked {
    fn drop(&mut self) {
        self.state.active_requests.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Warns that a cluster does not verify its upstreams' certificates: once when it is
/// loaded so, not again while it stays so (a config is built more than once: checked,
/// then started, and on every reload).
fn warn_if_unverified(cfg: &model::Cluster) {
    static WARNED: Mutex<std::collections::BTreeSet<String>> =
        Mutex::new(std::collections::BTreeSet::new());
    let unverified = cfg.tls.as_ref().is_some_and(|t| !t.verify);
    let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    if !unverified {
        warned.remove(cfg.name.as_str());
    } else if warned.insert(cfg.name.to_string()) {
        tracing::warn!(
            cluster = %cfg.name,
            "upstream certificates are not verified, as Envoy does without a validation_context (tls.verify: false)"
        );
    }
}

/// A certificate and its key from config: each a file (watched) or inline PEM. Not for
/// an SDS secret (`cert` is then one of [`PushedSecrets`]).
pub fn certificate(
    cert: &PemSource,
    key: &sinew_config::tls::KeySource,
    ocsp: Option<&str>,
) -> Result<Arc<RotatingCert>, sinew_tls::CertError> {
    use sinew_config::tls::KeySource;
    use sinew_tls::PemInput;
    let cert = match cert {
        PemSource::File(f) => PemInput::File(f.clone()),
        PemSource::Inline(p) => PemInput::Inline(p.pem.clone()),
        PemSource::Sds(s) => {
            return Err(sinew_tls::CertError::Cert(format!(
                "the SDS secret {:?} is not a file",
                s.sds
            )))
        }
    };
    let key = match key {
        KeySource::File(f) => PemInput::File(f.clone()),
        KeySource::Inline(p) => PemInput::Inline(p.pem.clone()),
    };
    RotatingCert::from_config(&cert, &key, ocsp)
}

/// The TLS versions between `min` and `max` (both included; unset: TLS 1.2 to 1.3).
pub fn protocol_versions(
    min: Option<sinew_config::tls::TlsVersion>,
    max: Option<sinew_config::tls::TlsVersion>,
) -> Vec<&'static rustls::SupportedProtocolVersion> {
    use sinew_config::tls::TlsVersion;
    let min = min.unwrap_or(TlsVersion::Tls12);
    let max = max.unwrap_or(TlsVersion::Tls13);
    [
        (TlsVersion::Tls13, &rustls::version::TLS13),
        (TlsVersion::Tls12, &rustls::version::TLS12),
    ]
    .into_iter()
    .filter(|(v, _)| (min..=max).contains(v))
    .map(|(_, version)| version)
    .collect()
}

/// Which pushed secret a config's `{sds: NAME}` names.
pub fn secret_key(s: &sinew_config::tls::SdsSecret) -> SecretKey {
    let origin = match (&s.path, &s.server) {
        (Some(file), _) => SecretOrigin::File(file.clone()),
        (None, Some(server)) => SecretOrigin::Server(server.clone()),
        (None, None) => SecretOrigin::Stream,
    };
    SecretKey {
        name: s.sds.clone(),
        origin,
    }
}

/// Config SAN matchers as the verifier takes them (validation has checked each sets
/// exactly one comparison).
pub fn san_matchers(sans: &[sinew_config::tls::SanMatch]) -> Vec<SanMatcher> {
    sans.iter()
        .filter_map(|san| {
            let (kind, value) = san.comparison()?;
            let value = value.to_string();
            let matcher = match kind {
                "exact" => StringMatch::Exact(value),
                "prefix" => StringMatch::Prefix(value),
                "suffix" => StringMatch::Suffix(value),
                _ => StringMatch::Contains(value),
            };
            let san_type = match san.san_type {
                sinew_config::tls::SanType::Uri => SanType::Uri,
                sinew_config::tls::SanType::Dns => SanType::Dns,
            };
            Some(SanMatcher { san_type, matcher })
        })
        .collect()
}

impl Cluster {
    /// The cluster's TLS to its upstreams, if any.
    pub fn tls(&self) -> Option<&crate::connect::UpstreamTls> {
        self.settings.tls.as_ref()
    }

    /// The certificate the cluster presents to its upstreams (mTLS), if any.
    pub fn client_certificate(&self) -> Option<&Arc<RotatingCert>> {
        self.settings.tls.as_ref()?.client_cert.as_ref()
    }

    /// Whether the cluster's connections were made with `mesh` (or with no identity at
    /// all): a new identity means new connections.
    fn mesh_identity_is(&self, mesh: Option<&Arc<MeshIdentity>>) -> bool {
        match (&self.mesh, mesh) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, _) => self.config.mtls.is_none(),
            (Some(_), None) => false,
        }
    }

    /// The cluster's circuit breakers.
    pub fn breakers(&self) -> &CircuitBreakers {
        &self.breakers
    }

    /// Picks an endpoint of `subset` (0 = all), skipping those in `avoid` when another is
    /// available: up to `redraws` fresh picks, then the next member in order.
    pub fn pick(
        &self,
        subset: usize,
        hash: Option<u64>,
        avoid: &[SocketAddr],
        redraws: u32,
    ) -> Option<Picked> {
        let hosts = self.hosts.load();
        let subset = hosts.subsets.get(subset)?;
        let active = |i: usize| {
            hosts.endpoints[subset.eligible[i]]
                .state
                .active_requests
                .load(Ordering::Relaxed)
        };
        let ctx = PickContext {
            hash,
            active: &active,
        };
        let pickable = &subset.eligible;
        let mut index = pickable[subset.balancer.pick(&ctx)?];
        let avoided = |i: usize| avoid.contains(&hosts.endpoints[i].address());
        if !avoid.is_empty() && avoided(index) && pickable.len() > 1 {
            // A retry should land elsewhere. A fresh pick does it for every policy but
            // hashing, whose keys are sticky by design: for those, take the next member
            // not avoided (or, if all were tried, the next one).
            let redrawn = (0..redraws)
                .filter_map(|_| subset.balancer.pick(&ctx))
                .map(|i| pickable[i])
                .find(|&i| !avoided(i));
            index = redrawn.unwrap_or_else(|| {
                let pos = pickable.iter().position(|&m| m == index).unwrap_or(0);
                let n = pickable.len();
                (1..n)
                    .map(|step| pickable[(pos + step) % n])
                    .find(|&i| !avoided(i))
                    .unwrap_or(pickable[(pos + 1) % n])
            });
        }
        let state = hosts.endpoints[index].state.clone();
        state.active_requests.fetch_add(1, Ordering::Relaxed);
        Some(Picked { state })
    }

    /// Tells outlier detection how an exchange with `picked` went. Free when outlier
    /// detection is off; otherwise a few relaxed atomic operations.
    #[inline]
    pub fn report(&self, picked: &Picked, outcome: Outcome) {
        if let Some(outlier) = &self.outlier {
            outlier.record(&picked.state.health.outlier, outcome);
        }
    }

    /// [`report`](Self::report) for an endpoint held without a pick (a connection
    /// shared by many requests, as the Redis proxy's are).
    #[inline]
    pub fn report_endpoint(&self, endpoint: &EndpointState, outcome: Outcome) {
        if let Some(outlier) = &self.outlier {
            outlier.record(&endpoint.health.outlier, outcome);
        }
    }

    /// Health-check results and outlier ejections so far (for metrics).
    pub fn events(&self) -> &crate::ClusterEvents {
        &self.events
    }

    /// Whether the cluster runs active health checks / outlier detection (for the admin API).
    pub fn checks_health(&self) -> (bool, bool) {
        (self.active.is_some(), self.outlier.is_some())
    }

    /// Endpoints that pass active health checks and are not ejected, panic mode or not.
    pub fn healthy_endpoints(&self) -> usize {
        self.hosts
            .load()
            .endpoints
            .iter()
            .filter(|e| {
                e.state
                    .health
                    .healthy(self.health.active, self.health.outlier)
            })
            .count()
    }

    /// The current endpoints (for the admin API and tests).
    pub fn hosts(&self) -> arc_swap::Guard<Arc<HostSet>> {
        self.hosts.load()
    }

    /// Gets the cluster ready for traffic, as Envoy warms clusters: resolves a DNS
    /// cluster that has no endpoints yet, and runs a first round of active health checks
    /// when some endpoint has not been checked. Bounded: a resolver or an endpoint that
    /// does not answer leaves the cluster as it is.
    pub async fn warm(&self) {
        if self.config.discovery.resolves_names() && self.hosts.load().endpoints.is_empty() {
            let _ = tokio::time::timeout(Duration::from_secs(5), self.resolve()).await;
        }
        if let Some(checker) = &self.active {
            let unchecked = self
                .hosts
                .load()
                .endpoints
                .iter()
                .any(|e| !e.state.health.active_checked.load(Ordering::Relaxed));
            if unchecked {
                let bound = checker.timeout + Duration::from_secs(1);
                let _ = tokio::time::timeout(bound, self.check_round(checker)).await;
            }
        }
    }

    /// Checks every endpoint once, at the same time, and publishes a new host set if any
    /// endpoint's health changed.
    async fn check_round(&self, checker: &Arc<ActiveChecker>) {
        let endpoints: Vec<Arc<EndpointState>> = self
            .hosts
            .load()
            .endpoints
            .iter()
            .map(|e| e.state.clone())
            .collect();
        let mut checks = tokio::task::JoinSet::new();
        for state in endpoints {
            let checker = checker.clone();
            checks.spawn(async move {
                let result = checker.check(&state).await;
                (state, result)
            });
        }
        let mut changed = false;
        while let Some(done) = checks.join_next().await {
            let Ok((state, result)) = done else { continue };
            if let Err(failure) = &result {
                tracing::debug!(cluster = %self.name, address = %state.address,
                    why = %failure.why, "health check failed");
            }
            crate::ClusterEvents::bump(if result.is_ok() {
                &self.events.health_check_success
            } else {
                &self.events.health_check_failure
            });
            let health = &state.health;
            let at_once = checker.answers_fail_at_once
                && result.as_ref().is_err_and(|failure| failure.answered);
            if health.record_active_check(
                result.is_ok(),
                at_once,
                checker.healthy_threshold,
                checker.unhealthy_threshold,
            ) {
                changed = true;
                tracing::info!(cluster = %self.name, address = %state.address,
                    healthy = result.is_ok(), "active health check changed endpoint health");
            }
            if result.is_ok() {
                if let Some(outlier) = &self.outlier {
                    if outlier.unejects_on_active_pass() && outlier.uneject(&health.outlier) {
                        changed = true;
                    }
                }
            }
        }
        if changed {
            self.republish();
        }
    }

    /// Rebuilds the balancers over the endpoints' current health.
    fn republish(&self) {
        let _one_at_a_time = self.publishing.lock().unwrap_or_else(|e| e.into_inner());
        let endpoints = self.hosts.load().endpoints.clone();
        self.hosts.store(Arc::new(HostSet::new(
            endpoints,
            &self.selectors,
            &self.policy,
            self.health,
        )));
    }

    /// Starts the cluster's background work: DNS re-resolution and pool pruning. The
    /// task holds only a weak reference and ends when the cluster is dropped.
    pub fn start(self: &Arc<Self>) {
        let weak: Weak<Cluster> = Arc::downgrade(self);
        let dns = self.config.discovery.resolves_names();
        let refresh = self.config.dns_refresh;
        tokio::spawn(async move {
            let tick = Duration::from_secs(1).min(refresh);
            let mut since_resolve = refresh;
            loop {
                let Some(cluster) = weak.upgrade() else {
                    return;
                };
                if dns && since_resolve >= refresh {
                    cluster.resolve().await;
                    since_resolve = Duration::ZERO;
                }
                for e in &cluster.hosts.load().endpoints {
                    e.state.prune();
                }
                drop(cluster);
                tokio::time::sleep(tick).await;
                since_resolve += tick;
            }
        });
        if let Some(checker) = self.active.clone() {
            let weak = Arc::downgrade(self);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(checker.next_delay()).await;
                    let Some(cluster) = weak.upgrade() else {
                        return;
                    };
                    cluster.check_round(&checker).await;
                }
            });
        }
        if let Some(outlier) = self.outlier.clone() {
            let weak = Arc::downgrade(self);
            tokio::spawn(async move {
                let interval = outlier.interval();
                let mut next_sweep = tokio::time::Instant::now() + interval;
                loop {
                    // Wake at the sweep, when a threshold rings, and at least every second
                    // to notice that the cluster is gone.
                    let wait = next_sweep
                        .saturating_duration_since(tokio::time::Instant::now())
                        .min(Duration::from_secs(1));
                    let _ = tokio::time::timeout(wait, outlier.wake.notified()).await;
                    let Some(cluster) = weak.upgrade() else {
                        return;
                    };
                    let due = tokio::time::Instant::now() >= next_sweep;
                    if due {
                        next_sweep += interval;
                    }
                    let hosts = cluster.hosts.load();
                    if outlier.sweep(&hosts.endpoints, due) {
                        tracing::info!(cluster = %cluster.name, "outlier ejections changed");
                        drop(hosts);
                        cluster.republish();
                    }
                }
            });
        }
    }

    /// Resolves every endpoint name and publishes the new set if it changed.
    async fn resolve(&self) {
        let mut resolved: Vec<(SocketAddr, &model::Endpoint)> = Vec::new();
        for endpoint in &self.config.endpoints {
            match self.resolver.resolve(&endpoint.address).await {
                Ok(mut addrs) => {
                    self.config.dns_lookup_family.pick(&mut addrs);
                    if self.config.discovery == Discovery::LogicalDns {
                        // The answer of the moment, first address only: a new answer
                        // moves the one endpoint (and new connections) there.
                        addrs.truncate(1);
                    }
                    resolved.extend(addrs.into_iter().map(|a| (a, endpoint)))
                }
                Err(e) => {
                    tracing::warn!(cluster = %self.name, address = %endpoint.address, error = %e,
                        "DNS resolution failed; keeping the last answer");
                    return;
                }
            }
        }
        resolved.sort_by_key(|(a, _)| *a);
        resolved.dedup_by_key(|(a, _)| *a);
        let current = self.hosts.load();
        let unchanged = current.endpoints.len() == resolved.len()
            && current
                .endpoints
                .iter()
                .zip(&resolved)
                .all(|(e, (a, _))| e.address() == *a);
        if unchanged {
            return;
        }
        let reusable: HashMap<SocketAddr, Arc<EndpointState>> = current
            .endpoints
            .iter()
            .map(|e| (e.address(), e.state.clone()))
            .collect();
        let endpoints = make_endpoints(&resolved, &reusable, &self.settings, self.health.active);
        tracing::info!(cluster = %self.name, endpoints = endpoints.len(), "DNS answer changed");
        let _one_at_a_time = self.publishing.lock().unwrap_or_else(|e| e.into_inner());
        self.hosts.store(Arc::new(HostSet::new(
            endpoints,
            &self.selectors,
            &self.policy,
            self.health,
        )));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::Resolving;
    use std::sync::Mutex;

    /// Answers whatever the test last set.
    struct Scripted(Mutex<Vec<SocketAddr>>);

    impl Resolver for Scripted {
        fn resolve<'a>(&'a self, _: &'a str) -> Resolving<'a> {
            let answer = self.0.lock().unwrap().clone();
            Box::pin(async move { Ok(answer) })
        }
    }

    fn addresses(cluster: &Cluster) -> Vec<SocketAddr> {
        cluster
            .hosts()
            .endpoints
            .iter()
            .map(|e| e.address())
            .collect()
    }

    #[tokio::test]
    async fn a_logical_dns_cluster_is_the_first_address_of_the_family_it_asks_for() {
        let config: model::Cluster = serde_yaml_ng::from_str(
            "{name: c, type: logical_dns, dns_lookup_family: v4_preferred, dns_refresh: 50ms, \
             endpoints: [{address: 'svc.test:80'}]}",
        )
        .unwrap();
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        let a: SocketAddr = "127.0.0.12:80".parse().unwrap();
        let b: SocketAddr = "127.0.0.11:80".parse().unwrap();
        let resolver = Arc::new(Scripted(Mutex::new(vec![v6, a, b])));
        let cluster = ClusterBuilder::new(&config, "clusters[0]".into())
            .with_resolver(resolver.clone())
            .build(None)
            .unwrap();
        cluster.warm().await;
        assert_eq!(
            addresses(&cluster),
            vec![a],
            "first IPv4 address of the answer"
        );
        cluster.start();
        *resolver.0.lock().unwrap() = vec![b, a];
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        while addresses(&cluster) != vec![b] {
            assert!(
                tokio::time::Instant::now() < deadline,
                "new first address not picked up"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn dns_clusters_follow_a_changing_answer_every_refresh() {
        let config: model::Cluster = serde_yaml_ng::from_str(
            "{name: c, type: dns, dns_refresh: 50ms, endpoints: [{address: 'svc.test:80'}]}",
        )
        .unwrap();
        let a: SocketAddr = "127.0.0.10:80".parse().unwrap();
        let b: SocketAddr = "127.0.0.11:80".parse().unwrap();
        let resolver = Arc::new(Scripted(Mutex::new(vec![a])));
        let cluster = ClusterBuilder::new(&config, "clusters[0]".into())
            .with_resolver(resolver.clone())
            .build(None)
            .unwrap();
        cluster.warm().await;
        assert_eq!(addresses(&cluster), vec![a], "warmed before traffic");
        cluster.start();

        *resolver.0.lock().unwrap() = vec![a, b];
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        while addresses(&cluster) != vec![a, b] {
            assert!(
                tokio::time::Instant::now() < deadline,
                "new address not picked up"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // The endpoint that stayed keeps its state (and so its pooled connections).
        let kept = cluster.hosts().endpoints[0].state.clone();
        *resolver.0.lock().unwrap() = vec![a];
        while addresses(&cluster) != vec![a] {
            assert!(
                tokio::time::Instant::now() < deadline,
                "removed address not dropped"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(Arc::ptr_eq(&kept, &cluster.hosts().endpoints[0].state));
    }
}
