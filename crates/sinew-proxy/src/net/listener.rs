//! Listening sockets and their accept loops.
//!
//! A listener's sockets accept for its slot (`config::slot`), which outlives config
//! reloads while its name and address stay the same. A slot that a reload removes stops
//! accepting; the connections it already has finish on their own.
//!
//! Every connection (and every upgraded tunnel born from one) holds a
//! `ConnectionGuard` (`config::slot`), which counts it against `max_connections` and in the proxy's
//! drain count until it closes.
//!
//! With several workers (see `sinew-runtime`), a listener is one `SO_REUSEPORT` socket
//! per worker, each with its own accept loop on its worker's runtime: the kernel spreads
//! new connections across them, and each connection stays on the worker that accepted
//! it. Each worker also reads its own copy of the listener's config, so taking it for a
//! request bumps a reference count that no other core touches.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sinew_runtime::Workers;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::chains;
use super::drain::Drain;
use crate::config::slot::ListenerSlot;
use crate::config::snapshot::{ListenerConfig, ListenerKind};

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

/// Starts accepting on `sockets` with `config`: socket `i` on worker `i`.
pub(crate) fn start(
    sockets: Vec<std::net::TcpListener>,
    config: Arc<ListenerConfig>,
    drain: Arc<Drain>,
    workers: &Workers,
) -> io::Result<Arc<ListenerSlot>> {
    let bound = sockets
        .first()
        .ok_or_else(|| io::Error::other("a listener needs a socket"))?
        .local_addr()?;
    let (slot, stopped) = ListenerSlot::new(bound, &config, sockets.len(), drain);
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

/// Serves one accepted connection with the listener body it takes: the one of the
/// filter chain its first bytes choose, or the listener's own.
async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    slot: &Arc<ListenerSlot>,
    config: &ListenerConfig,
) {
    let (body, chain) = if config.chains.is_empty() {
        (config, None)
    } else {
        let whole_hello = config.chains_read_hello;
        let sniff = config.chains_sniff;
        let inspected = chains::inspect(&stream, whole_hello, sniff, config.inspect_timeout);
        let Some(seen) = inspected.await else {
            tracing::debug!(listener = %slot.name, %peer, "no ClientHello or first byte in time; closing");
            return;
        };
        match chains::select(&config.chains, &seen) {
            Some(i) => (&config.chains[i].config, Some(i)),
            None => (config, None),
        }
    };
    match &body.kind {
        ListenerKind::Http(_) => crate::protocol::serve(stream, peer, slot, body, chain).await,
        ListenerKind::Tcp(tcp) => {
            let metrics = config.metrics.as_deref();
            super::tcp::serve(stream, body.tls.as_ref(), metrics, tcp.clone()).await
        }
        ListenerKind::Rpc(rpc) => {
            crate::rpc::serve(stream, peer, body.tls.as_ref(), rpc.clone()).await
        }
        ListenerKind::Redis(redis) => {
            let tls = body.tls.as_ref().map(|t| &t.acceptor);
            crate::redis::serve(stream, tls, redis.clone()).await
        }
        ListenerKind::Closed => {
            tracing::debug!(listener = %slot.name, %peer, "no filter chain matches; closing")
        }
    }
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
            accepted = async {
                crate::overload::accepting().await;
                listener.accept().await
            } => accepted,
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
        if crate::overload::rejects_connection() {
            drop(stream);
            continue;
        }
        let config = slot.config_of_worker(worker);
        if let Some(rate) = &config.connection_rate_limit {
            if !rate.admit() {
                tracing::debug!(listener = %slot.name, %peer, "connection rate limit reached; closing");
                drop(stream);
                continue;
            }
        }
        let limit = config.max_connections.map_or(usize::MAX, |m| m as usize);
        let Some(guard) = slot.admit(limit) else {
            tracing::debug!(listener = %slot.name, %peer, "connection limit reached; closing");
            drop(stream);
            continue;
        };
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
            serve(stream, peer, &slot, &config).await
        }));
    }
    // The socket closes before the receiver goes, so `wait_stopped` means the port is free.
    drop(listener);
    drop(stopped);
    tracing::info!(listener = %slot.name, "stopped accepting");
}
