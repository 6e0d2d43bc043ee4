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

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::drain::Drain;
use crate::snapshot::{ListenerConfig, ListenerKind};

pub struct ListenerSlot {
    pub name: Arc<str>,
    pub address_text: String,
    pub bound: SocketAddr,
    pub config: ArcSwap<ListenerConfig>,
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

/// Binds a listening socket (SO_REUSEADDR; IPv6 sockets are IPv6-only).
pub fn bind(address: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

impl ListenerSlot {
    /// Starts accepting on `socket` with `config`.
    pub(crate) fn start(
        socket: std::net::TcpListener,
        config: Arc<ListenerConfig>,
        drain: Arc<Drain>,
    ) -> io::Result<Arc<Self>> {
        let bound = socket.local_addr()?;
        let listener = TcpListener::from_std(socket)?;
        let (stop, stopped) = watch::channel(false);
        let slot = Arc::new(ListenerSlot {
            name: config.name.clone(),
            address_text: config.address_text.clone(),
            bound,
            config: ArcSwap::new(config),
            active_connections: AtomicUsize::new(0),
            rejected_connections: AtomicU64::new(0),
            stop,
            drain,
        });
        tracing::info!(listener = %slot.name, address = %bound, "listening");
        tokio::spawn(accept_loop(slot.clone(), listener, stopped));
        Ok(slot)
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

async fn accept_loop(
    slot: Arc<ListenerSlot>,
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
        let config = slot.config.load_full();
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
