//! Sinew's data plane: listeners ([`listener`]), the HTTP connection manager ([`http`]),
//! the TCP proxy, and the config snapshot they all read ([`snapshot`]).
//!
//! Config is data, swapped whole: [`Proxy::reload`] compiles a new snapshot completely,
//! binds any new sockets, and only then publishes it. Requests read it without locks.
//!
//! Concurrency: one tokio multi-thread runtime with a worker per core (the binary sets it
//! up). Per-core current-thread runtimes with SO_REUSEPORT are the alternative DESIGN.md
//! names; the benchmark harness (issue 3) is where that choice gets measured.

pub mod connection_rate_limit;
pub mod http;
pub mod listener;
mod moment;
pub mod reload;
pub mod snapshot;
mod tcp;

/// Internals the criterion benches (`benches/`) measure; not a stable API.
#[doc(hidden)]
pub mod bench_api {
    pub use crate::http::head_guard::{HeadCheck, Scanner};
}

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use sinew_config::{ConfigError, Diagnostics, LoadedConfig};
use tokio::sync::Mutex;

use crate::listener::ListenerSlot;
use crate::snapshot::Snapshot;

/// A running data plane.
pub struct Proxy {
    snapshot: ArcSwap<Snapshot>,
    /// Held only while reloading, never on the request path.
    slots: Mutex<Vec<Arc<ListenerSlot>>>,
}

/// Compiles a config without running it.
pub fn check(loaded: &LoadedConfig) -> Result<(), Diagnostics> {
    snapshot::compile(loaded, None, 0).map(|_| ())
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
    errors.extend(snapshot::lint(&loaded));
    Err(loaded.diagnostics(errors))
}

impl Proxy {
    /// Compiles `loaded`, binds its listeners and starts serving. Must run inside tokio.
    pub async fn start(loaded: &LoadedConfig) -> Result<Arc<Proxy>, Diagnostics> {
        let proxy = Arc::new(Proxy {
            snapshot: ArcSwap::from_pointee(Snapshot {
                version: 0,
                listeners: Vec::new(),
                clusters: Vec::new(),
            }),
            slots: Mutex::new(Vec::new()),
        });
        proxy.reload(loaded).await?;
        Ok(proxy)
    }

    /// Swaps in a new config, or refuses it and keeps the running one.
    pub async fn reload(&self, loaded: &LoadedConfig) -> Result<u64, Diagnostics> {
        let mut slots = self.slots.lock().await;
        let current = self.snapshot.load_full();
        let version = current.version + 1;
        let next = snapshot::compile(loaded, Some(&current), version)?;

        // Bind what is new before changing anything, so a port in use refuses the reload.
        let mut fresh = Vec::new();
        let mut errors = Vec::new();
        for (i, l) in next.listeners.iter().enumerate() {
            let kept = slots
                .iter()
                .any(|s| s.name == l.name && s.address_text == l.address_text);
            if !kept {
                match listener::bind(l.address) {
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
        http::rate_limit::warm(&next).await;
        // Keep, update or stop the running slots, then start the new ones.
        slots.retain(|slot| {
            match next
                .listeners
                .iter()
                .find(|l| l.name == slot.name && l.address_text == slot.address_text)
            {
                Some(l) => {
                    slot.config.store(l.clone());
                    true
                }
                None => {
                    slot.stop();
                    false
                }
            }
        });
        for (socket, config) in fresh {
            match ListenerSlot::start(socket, config) {
                Ok(slot) => slots.push(slot),
                Err(e) => tracing::error!(error = %e, "cannot start listener"),
            }
        }
        self.snapshot.store(next);
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

    /// Stops every listener and waits until their sockets are closed; connections
    /// already accepted carry on.
    pub async fn stop_listening(&self) {
        let slots = std::mem::take(&mut *self.slots.lock().await);
        for slot in &slots {
            slot.stop();
        }
        for slot in &slots {
            slot.wait_stopped().await;
        }
    }
}
