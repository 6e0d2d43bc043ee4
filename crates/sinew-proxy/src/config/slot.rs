//! A listener's live slot: what outlives config reloads while a listener's name and
//! address stay the same. Its sockets keep accepting (`net::listener`) and only its
//! config changes: each worker reads its own copy, so taking it for a request bumps a
//! reference count that no other core touches. It also counts the listener's
//! connections (for `max_connections` and the proxy's drain) and says when to stop.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::snapshot::ListenerConfig;
use crate::net::drain::Drain;

pub struct ListenerSlot {
    pub name: Arc<str>,
    pub address_text: String,
    pub bound: SocketAddr,
    /// The config, one copy per worker (see the module's doc); [`ListenerSlot::config`]
    /// picks the calling worker's.
    configs: Box<[ArcSwap<ListenerConfig>]>,
    active_connections: AtomicUsize,
    /// Connections closed at accept because `max_connections` was reached.
    rejected_connections: AtomicU64,
    stop: watch::Sender<bool>,
    pub(crate) drain: Arc<Drain>,
}

/// Counts a connection against its listener, and in the drain count, until dropped.
pub struct ConnectionGuard(Arc<ListenerSlot>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.active_connections.fetch_sub(1, Ordering::Relaxed);
        self.0.drain.connection_closed();
    }
}

impl ListenerSlot {
    /// A slot for `config` on `workers` workers, bound at `bound`; and the receiver its
    /// accept loops watch to know when to stop.
    pub(crate) fn new(
        bound: SocketAddr,
        config: &Arc<ListenerConfig>,
        workers: usize,
        drain: Arc<Drain>,
    ) -> (Arc<Self>, watch::Receiver<bool>) {
        let (stop, stopped) = watch::channel(false);
        let slot = Arc::new(ListenerSlot {
            name: config.name.clone(),
            address_text: config.address_text.clone(),
            bound,
            configs: per_worker(config, workers),
            active_connections: AtomicUsize::new(0),
            rejected_connections: AtomicU64::new(0),
            stop,
            drain,
        });
        (slot, stopped)
    }

    /// The config as worker `worker` sees it (the accept loop knows its worker).
    pub(crate) fn config_of_worker(&self, worker: usize) -> Arc<ListenerConfig> {
        self.configs[worker % self.configs.len()].load_full()
    }

    /// Counts a new connection, or refuses it (counted) when `limit` are already open.
    pub(crate) fn admit(self: &Arc<Self>, limit: usize) -> Option<ConnectionGuard> {
        if self.active_connections.fetch_add(1, Ordering::Relaxed) >= limit {
            self.active_connections.fetch_sub(1, Ordering::Relaxed);
            self.rejected_connections.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.drain.connection_opened();
        Some(ConnectionGuard(self.clone()))
    }

    /// The listener's config as the calling worker sees it.
    pub fn config(&self) -> Arc<ListenerConfig> {
        self.configs[sinew_runtime::index() % self.configs.len()].load_full()
    }

    /// Replaces the config on every worker; connections read it per request.
    pub(crate) fn update(&self, config: &Arc<ListenerConfig>) {
        for (cell, copy) in self
            .configs
            .iter()
            .zip(per_worker(config, self.configs.len()))
        {
            cell.store(copy.into_inner());
        }
    }

    /// Stops accepting; connections already accepted carry on.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Connections open on this listener now.
    pub fn active_connections(&self) -> usize {
        self.active_connections.load(Ordering::Relaxed)
    }

    /// Connections closed at accept because `max_connections` was reached, since the
    /// listener started.
    pub fn rejected_connections(&self) -> u64 {
        self.rejected_connections.load(Ordering::Relaxed)
    }

    /// Counts one more connection (beyond `max_connections` if need be): for an upgraded
    /// tunnel, which outlives the HTTP connection it came from.
    pub(crate) fn hold(self: &Arc<Self>) -> ConnectionGuard {
        self.active_connections.fetch_add(1, Ordering::Relaxed);
        self.drain.connection_opened();
        ConnectionGuard(self.clone())
    }

    /// Resolves once the accept loop has ended and its socket is closed.
    pub async fn wait_stopped(&self) {
        // The accept loop holds the only receiver; the channel closes when it ends.
        self.stop.closed().await;
    }
}

/// A copy of `config` per worker (the first is `config` itself): its fields are shared,
/// only the reference count each worker bumps per request is its own.
fn per_worker(config: &Arc<ListenerConfig>, workers: usize) -> Box<[ArcSwap<ListenerConfig>]> {
    (0..workers)
        .map(|i| {
            ArcSwap::new(if i == 0 {
                config.clone()
            } else {
                Arc::new(ListenerConfig::clone(config))
            })
        })
        .collect()
}
