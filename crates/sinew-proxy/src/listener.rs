//! Listening sockets and their accept loops.
//!
//! A listener slot outlives config reloads while its name and address stay the same:
//! its socket keeps accepting and only its config (read lock-free per connection and
//! per request) changes. A slot that a reload removes stops accepting; the connections
//! it already has finish on their own.
//!
//! Every connection (and every upgraded tunnel born from one) holds a
//! [`ConnectionGuard`], which counts it against `max_connections` and in the proxy's
//! drain count until it closes.
//!
//! With several workers (see `sinew-runtime`), a listener is one `SO_REUSEPORT` socket
//! per worker, each with its own accept loop on its worker's runtime: the kernel spreads
//! new connections across them, and each connection stays on the worker that accepted
//! it. Each worker also reads its own copy of the listener's config, so taking it for a
//! request bumps a reference count that no other core touches.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use sinew_runtime::Workers;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::drain::Drain;
use crate::snapshot::{ListenerConfig, ListenerKind};

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

/// Binds a listener's sockets: one per worker, all on the same address (the first one's
/// port when the config says port 0). SO_REUSEADDR; IPv6 sockets are IPv6-only; with more
/// than one worker, SO_REUSEPORT, so that each worker accepts on its own socket.
pub fn bind(address: SocketAddr, workers: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let first = bind_one(address, workers > 1)?;
    let address = first.local_addr()?;
    let mut sockets = Vec::with_capacity(workers);
    sockets.push(first);
    for _ in 1..workers {
        sockets.push(bind_one(address, true)?);
    }
    Ok(sockets)
}

fn bind_one(address: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

impl ListenerSlot {
    /// Starts accepting on `sockets` with `config`: socket `i` on worker `i`.
    pub(crate) fn start(
        sockets: Vec<std::net::TcpListener>,
        config: Arc<ListenerConfig>,
        drain: Arc<Drain>,
        workers: &Workers,
    ) -> io::Result<Arc<Self>> {
        let bound = sockets
            .first()
            .ok_or_else(|| io::Error::other("a listener needs a socket"))?
            .local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let slot = Arc::new(ListenerSlot {
            name: config.name.clone(),
            address_text: config.address_text.clone(),
            bound,
            configs: per_worker(&config, sockets.len()),
            active_connections: AtomicUsize::new(0),
            rejected_connections: AtomicU64::new(0),
            stop,
            drain,
        });
        for (worker, (socket, handle)) in sockets.into_iter().zip(workers.handles()).enumerate() {
            // Registered with the worker's own I/O driver, which only its thread polls.
            let listener = {
                let _entered = handle.enter();
                TcpListener::from_std(socket)?
            };
            handle.spawn(accept_loop(slot.clone(), worker, listener, stopped.clone()));
        }
        tracing::info!(listener = %slot.name, address = %bound, workers = workers.len(), "listening");
        Ok(slot)
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

async fn accept_loop(
    slot: Arc<ListenerSlot>,
    worker: usize,
    listener: TcpListener,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(listener = %slot.name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let config = slot.configs[worker].load_full();
        if let Some(rate) = &config.connection_rate_limit {
            if !rate.admit() {
                tracing::debug!(listener = %slot.name, %peer, "connection rate limit reached; closing");
                drop(stream);
                continue;
            }
        }
        let limit = config.max_connections.map_or(usize::MAX, |m| m as usize);
        if slot.active_connections.fetch_add(1, Ordering::Relaxed) >= limit {
            slot.active_connections.fetch_sub(1, Ordering::Relaxed);
            slot.rejected_connections.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(listener = %slot.name, %peer, "connection limit reached; closing");
            drop(stream);
            continue;
        }
        slot.drain.connection_opened();
        let guard = ConnectionGuard(slot.clone());
        let _ = stream.set_nodelay(true);
        if let Some(keepalive) = &config.tcp_keepalive {
            sinew_upstream::socket::set_keepalive(&stream, keepalive);
        }
        let slot = slot.clone();
        let drain = slot.drain.watch();
        let counted = config.metrics.as_ref().map(|m| m.connection());
        tokio::spawn(drain.cut_at_deadline(async move {
            let _guard = guard;
            let _counted = counted;
            match &config.kind {
                ListenerKind::Http(_) => crate::http::serve(stream, peer, &slot, &config).await,
                ListenerKind::Tcp(tcp) => crate::tcp::proxy(stream, tcp.clone()).await,
            }
        }));
    }
    // The socket closes before the receiver goes, so `wait_stopped` means the port is free.
    drop(listener);
    drop(stopped);
    tracing::info!(listener = %slot.name, "stopped accepting");
}
