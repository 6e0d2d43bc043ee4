//! Listening sockets and their accept loops.
//!
//! A listener slot outlives config reloads while its name and address stay the same:
//! its socket keeps accepting and only its config (read lock-free per connection and
//! per request) changes. A slot that a reload removes stops accepting; the connections
//! it already has finish on their own.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::snapshot::{ListenerConfig, ListenerKind};

pub struct ListenerSlot {
    pub name: Arc<str>,
    pub address_text: String,
    pub bound: SocketAddr,
    pub config: ArcSwap<ListenerConfig>,
    active_connections: AtomicUsize,
    stop: watch::Sender<bool>,
}

/// Counts a connection against its listener until dropped.
pub struct ConnectionGuard(Arc<ListenerSlot>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.active_connections.fetch_sub(1, Ordering::Relaxed);
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
    pub fn start(
        socket: std::net::TcpListener,
        config: Arc<ListenerConfig>,
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
            stop,
        });
        tracing::info!(listener = %slot.name, address = %bound, "listening");
        tokio::spawn(accept_loop(slot.clone(), listener, stopped));
        Ok(slot)
    }

    /// Stops accepting; connections already accepted carry on.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
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
            tracing::debug!(listener = %slot.name, %peer, "connection limit reached; closing");
            drop(stream);
            continue;
        }
        let guard = ConnectionGuard(slot.clone());
        let _ = stream.set_nodelay(true);
        let slot = slot.clone();
        tokio::spawn(async move {
            let _guard = guard;
            match &config.kind {
                ListenerKind::Http(_) => crate::http::serve(stream, peer, &slot, &config).await,
                ListenerKind::Tcp(tcp) => crate::tcp::proxy(stream, tcp.clone()).await,
            }
        });
    }
    // The socket closes before the receiver goes, so `wait_stopped` means the port is free.
    drop(listener);
    drop(stopped);
    tracing::info!(listener = %slot.name, "stopped accepting");
}
