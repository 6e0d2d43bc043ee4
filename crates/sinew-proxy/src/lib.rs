//! Sinew's data plane: listeners ([`listener`]), the HTTP connection manager ([`http`]),
//! the TCP proxy, and the config snapshot they all read ([`snapshot`]).
//!
//! Config is data, swapped whole: [`Proxy::reload`] compiles a new snapshot completely,
//! binds any new sockets, and only then publishes it. Requests read it without locks.
//!
//! [`Proxy::drain`] stops it gracefully: listeners close, connections finish what they
//! have in flight, and whatever is left at the deadline is cut (see [`drain`]).
//!
//! Concurrency: per-core workers ([`Workers`], from `sinew-runtime`). The `sinew` binary
//! (`crates/sinew/src/main.rs`) starts `--workers` of them, one per core by default, each a
//! thread with a current-thread runtime; every listener accepts on each worker through a
//! socket of its own (`SO_REUSEPORT`), so a connection and everything it spawns stay on
//! one worker, and upstream pools are kept per worker. The thread that called
//! [`Proxy::start_on`] keeps the rest: reloads, the admin API, xDS, health checks.

pub mod admin;
pub mod config;
pub mod filters;
pub mod metrics;
mod moment;
pub mod net;
pub mod overload;
pub mod protocol;
pub mod redis;
pub mod reload;
mod rpc;
pub mod stream;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use sinew_config::{ConfigError, Diagnostics, LoadedConfig};
pub use sinew_runtime::Workers;
use tokio::sync::Mutex;

use crate::config::compile;
use crate::config::slot::ListenerSlot;
use crate::config::snapshot::Snapshot;
use crate::net::drain::Drain;
pub use crate::net::drain::{DrainReport, Phase};
use crate::net::listener;

/// A running data plane.
pub struct Proxy {
    snapshot: ArcSwap<Snapshot>,
    /// Held only while reloading, never on the request path.
    slots: Mutex<Vec<Arc<ListenerSlot>>>,
    /// Shared with every listener slot and, through them, every connection.
    drain: Arc<Drain>,
    /// Every metric family; handles are taken from it when a config compiles (off the
    /// serving threads, hence shared).
    pub metrics: Arc<metrics::Metrics>,
    /// The running listeners, published after each reload for scrapes and the admin API
    /// (which must not wait on a reload's lock).
    live_slots: ArcSwap<Vec<Arc<ListenerSlot>>>,
    /// Set by the admin API's `/healthcheck/fail`: `/ready` answers 503 while it is.
    health_check_failed: AtomicBool,
    /// The running config's file name and text, for `/config_dump`.
    running_source: ArcSwap<(String, Arc<str>)>,
    /// The runtimes that serve traffic: each listener accepts on every one of them.
    workers: Arc<Workers>,
    /// Asks the config file's watcher ([`reload::watch`]) to read the file again now (the
    /// admin API's `/runtime_modify` does, so the changed runtime is mapped).
    reload_requested: tokio::sync::Notify,
}

/// Compiles a config without running it.
pub fn check(loaded: &LoadedConfig) -> Result<(), Diagnostics> {
    compile::compile(loaded, None, 0, None).map(|_| ())
}

/// Reads a config file and checks its structure and references. When those fail, the
/// checks compiling makes (regexes, header values, certificates) run too, so every error
/// comes in one pass. A config that passes still needs compiling — [`check`] without
/// running it, or [`Proxy::start`] / [`Proxy::reload`], which compile once and report
/// the same way.
pub fn load_file(path: &std::path::Path) -> Result<LoadedConfig, Diagnostics> {
    let loaded = sinew_config::parse_file(path)?;
    let mut errors = sinew_config::validate(&loaded.config);
    if errors.is_empty() {
        return Ok(loaded);
    }
    errors.extend(compile::lint(&loaded));
    Err(loaded.diagnostics(errors))
}

impl Proxy {
    /// Compiles `loaded`, binds its listeners and starts serving on the current runtime
    /// (one worker). Must run inside tokio.
    pub async fn start(loaded: &LoadedConfig) -> Result<Arc<Proxy>, Diagnostics> {
        Self::start_on(loaded, Workers::current()).await
    }

    /// As [`Proxy::start`], serving on `workers`: each listener accepts on every worker.
    pub async fn start_on(
        loaded: &LoadedConfig,
        workers: Arc<Workers>,
    ) -> Result<Arc<Proxy>, Diagnostics> {
        Self::start_with_identity(loaded, workers, None).await
    }

    /// As [`Proxy::start_on`], with the mesh identity already obtained for the config's
    /// `mesh` (a certificate from the mesh CA, fetched before the proxy starts); reloads
    /// keep it while `mesh` is unchanged.
    pub async fn start_with_identity(
        loaded: &LoadedConfig,
        workers: Arc<Workers>,
        identity: Option<Arc<sinew_tls::MeshIdentity>>,
    ) -> Result<Arc<Proxy>, Diagnostics> {
        let mesh = loaded.config.mesh.clone().zip(identity);
        let proxy = Arc::new_cyclic(|weak| Proxy {
            snapshot: ArcSwap::from_pointee(Snapshot {
                version: 0,
                listeners: Vec::new(),
                clusters: Vec::new(),
                mesh,
                drain_timeout: std::time::Duration::ZERO,
                metrics_enabled: false,
            }),
            slots: Mutex::new(Vec::new()),
            drain: Arc::new(Drain::new()),
            metrics: Arc::new(metrics::Metrics::new(admin::scrape::ScrapeTime {
                proxy: weak.clone(),
            })),
            live_slots: ArcSwap::from_pointee(Vec::new()),
            health_check_failed: AtomicBool::new(false),
            reload_requested: tokio::sync::Notify::new(),
            running_source: ArcSwap::from_pointee((String::new(), Arc::from(""))),
            workers,
        });
        proxy.reload(loaded.clone()).await?;
        Ok(proxy)
    }

    /// Swaps in a new config, or refuses it and keeps the running one. Counted in
    /// `sinew_server_reloads_total` / `sinew_server_reloads_failed_total`.
    pub async fn reload(&self, loaded: LoadedConfig) -> Result<u64, Diagnostics> {
        let result = self.apply(Arc::new(loaded)).await;
        match &result {
            Ok(version) => {
                self.metrics.reloads_succeeded.inc();
                self.metrics.config_version.set(*version as i64);
            }
            Err(_) => self.note_reload_failed(),
        }
        result
    }

    /// Asks the config file's watcher to reload now; nothing happens when no file is
    /// watched (a config from xDS).
    pub fn request_reload(&self) {
        self.reload_requested.notify_one();
    }

    /// Waits for [`Proxy::request_reload`].
    pub(crate) async fn reload_requested(&self) {
        self.reload_requested.notified().await;
    }

    /// Counts a reload refused before it reached [`Proxy::reload`] (a file that does not
    /// parse or validate).
    pub fn note_reload_failed(&self) {
        self.metrics.reloads_failed.inc();
    }

    async fn apply(&self, loaded: Arc<LoadedConfig>) -> Result<u64, Diagnostics> {
        let mut slots = self.slots.lock().await;
        if self.drain.phase() != Phase::Serving {
            return Err(loaded.diagnostics(vec![ConfigError::new(
                "",
                "the proxy is draining; it takes no new config",
            )]));
        }
        let current = self.snapshot.load_full();
        let version = current.version + 1;
        // Compiling a large config takes milliseconds (a 10,000-endpoint cluster, say):
        // on the blocking pool, so the threads serving traffic do not wait for it.
        let next = {
            let (compiling, metrics) = (loaded.clone(), self.metrics.clone());
            tokio::task::spawn_blocking(move || {
                compile::compile(&compiling, Some(&current), version, Some(&metrics))
            })
            .await
            .map_err(|e| {
                loaded.diagnostics(vec![ConfigError::new("", format!("compiling failed: {e}"))])
            })??
        };

        // Bind what is new before changing anything, so a port in use refuses the reload.
        let mut fresh = Vec::new();
        let mut errors = Vec::new();
        for (i, l) in next.listeners.iter().enumerate() {
            let kept = slots
                .iter()
                .any(|s| s.name == l.name && s.address_text == l.address_text);
            if !kept {
                match listener::bind(l.address, self.workers.len()) {
                    Ok(socket) => fresh.push((socket, l.clone())),
                    Err(e) => errors.push(ConfigError::new(
                        format!("listeners[{i}].address"),
                        format!("cannot listen on {}: {e}", l.address),
                    )),
                }
            }
        }
        if !errors.is_empty() {
            return Err(loaded.diagnostics(errors));
        }

        let next = Arc::new(next);
        for cluster in &next.clusters {
            cluster.warm().await;
            cluster.start();
        }
        compile::warm_rate_limits(&next).await;
        compile::warm_jwks(&next).await;
        // Keep, update or stop the running slots, then start the new ones.
        slots.retain(|slot| {
            match next
                .listeners
                .iter()
                .find(|l| l.name == slot.name && l.address_text == slot.address_text)
            {
                Some(l) => {
                    slot.update(l);
                    true
                }
                None => {
                    slot.stop();
                    false
                }
            }
        });
        for (socket, config) in fresh {
            match listener::start(socket, config, self.drain.clone(), &self.workers) {
                Ok(slot) => slots.push(slot),
                Err(e) => tracing::error!(error = %e, "cannot start listener"),
            }
        }
        self.snapshot.store(next);
        overload::configure(loaded.config.overload.as_ref());
        self.live_slots.store(Arc::new(slots.clone()));
        self.running_source
            .store(Arc::new((loaded.file.clone(), loaded.source.clone())));
        tracing::info!(version, file = %loaded.file, "config applied");
        Ok(version)
    }

    /// Where a listener is bound (its real port when the config says port 0).
    pub async fn listener_address(&self, name: &str) -> Option<SocketAddr> {
        self.slots
            .lock()
            .await
            .iter()
            .find(|s| &*s.name == name)
            .map(|s| s.bound)
    }

    /// A running listener, for its counters.
    pub async fn listener(&self, name: &str) -> Option<Arc<ListenerSlot>> {
        self.slots
            .lock()
            .await
            .iter()
            .find(|s| &*s.name == name)
            .cloned()
    }

    /// The config's `drain_timeout`: how long [`Proxy::drain`] should give connections.
    pub fn drain_timeout(&self) -> std::time::Duration {
        self.snapshot.load().drain_timeout
    }

    /// Drains gracefully within `deadline`:
    ///
    /// 1. every listener stops accepting and its port closes;
    /// 2. every HTTP connection is told to finish: HTTP/1.1 completes the response in
    ///    flight with `Connection: close` and closes (at once when idle), HTTP/2 sends
    ///    GOAWAY and finishes its open streams;
    /// 3. TCP proxy connections and upgraded tunnels run on;
    /// 4. resolves when every connection has closed, or at the deadline, when the
    ///    connections still open are closed.
    ///
    /// Afterwards the proxy serves nothing and refuses reloads. Calling it again waits
    /// for the same connections.
    pub async fn drain(&self, deadline: std::time::Duration) -> DrainReport {
        let started = tokio::time::Instant::now();
        let until = started + deadline;
        let slots = {
            let mut slots = self.slots.lock().await;
            if self.drain.phase() == Phase::Serving {
                // Under the lock, so a reload cannot open a listener after this.
                self.drain.set(Phase::Draining);
            }
            std::mem::take(&mut *slots)
        };
        self.live_slots.store(Arc::new(Vec::new()));
        // A connection accepted in the meantime sees `Draining` as it starts (its watch
        // reads the current phase), so none goes unsignalled.
        for slot in &slots {
            slot.stop();
        }
        for slot in &slots {
            slot.wait_stopped().await;
        }
        let open = self.drain.live();
        tracing::info!(connections = open, ?deadline, "draining: listeners closed");
        let finished = tokio::time::timeout_at(until, self.drain.emptied())
            .await
            .is_ok();
        let mut cut = 0;
        if !finished {
            cut = self.drain.live();
            self.drain.set(Phase::Closing);
            // Cut tasks end at their next poll; wait for their sockets to close, briefly.
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(1), self.drain.emptied()).await;
        }
        DrainReport {
            finished,
            cut,
            took: started.elapsed(),
        }
    }

    /// The running snapshot (for the admin API).
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    /// The running listeners, without waiting on a reload in progress.
    pub fn listeners(&self) -> Arc<Vec<Arc<ListenerSlot>>> {
        self.live_slots.load_full()
    }

    /// The running config's file name and text.
    pub fn running_source(&self) -> Arc<(String, Arc<str>)> {
        self.running_source.load_full()
    }

    /// Serving, or draining / closing.
    pub fn phase(&self) -> Phase {
        self.drain.phase()
    }

    /// Serving, and not failed by `/healthcheck/fail`: what `/ready` reports.
    pub fn is_live(&self) -> bool {
        self.drain.phase() == Phase::Serving && !self.health_check_failed.load(Ordering::Relaxed)
    }

    /// `/healthcheck/fail` (true) and `/healthcheck/ok` (false): fails readiness so a load
    /// balancer stops sending, while the proxy keeps serving what arrives.
    pub fn set_health_check_failed(&self, failed: bool) {
        self.health_check_failed.store(failed, Ordering::Relaxed);
    }

    /// Stops every listener and waits until their sockets are closed; connections
    /// already accepted carry on.
    pub async fn stop_listening(&self) {
        let slots = std::mem::take(&mut *self.slots.lock().await);
        self.live_slots.store(Arc::new(Vec::new()));
        for slot in &slots {
            slot.stop();
        }
        for slot in &slots {
            slot.wait_stopped().await;
        }
    }
}
