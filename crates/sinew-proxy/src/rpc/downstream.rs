//! One client connection of an RPC listener: frames read and dispatched as calls, and
//! the responses written back as they come, in whatever order (calls are matched by
//! request id, so a slow call does not hold up the ones behind it).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use sinew_codec::rpc::FrameKind;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};

use crate::config::snapshot::{DownstreamTls, RpcProxy};
use crate::filters::authz::Verdict;

/// Bounds a TLS handshake, as for the TCP proxy.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Calls in flight on one client connection; past it, reading pauses.
const MAX_CALLS_IN_FLIGHT: usize = 1024;
/// Responses queued for the client before calls wait for the writer.
const WRITE_QUEUE: usize = 256;
const READ_BUFFER: usize = 16 * 1024;

/// Serves one accepted connection: its TLS first, if the listener takes any.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<&DownstreamTls>,
    config: Arc<RpcProxy>,
) {
    let local_port = stream.local_addr().map(|a| a.port()).unwrap_or(0);
    let Some(tls) = tls else {
        if admitted(&config, peer, local_port, None) {
            run(stream, config).await;
        }
        return;
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor.accept(stream)).await {
        Ok(Ok(stream)) => {
            let identity = crate::protocol::peer_identity(stream.get_ref().1);
            if admitted(&config, peer, local_port, identity.as_deref()) {
                run(stream, config).await;
            }
        }
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

/// The listener's authorization, on the connection (as for TCP: a call carries no
/// more identity than its connection).
fn admitted(
    config: &RpcProxy,
    peer: SocketAddr,
    local_port: u16,
    identity: Option<&sinew_identity::PeerIdentity>,
) -> bool {
    let Some(authz) = &config.authorization else {
        return true;
    };
    match authz.check_connection(peer, local_port, identity) {
        Verdict::Denied(policy) => {
            tracing::debug!(%peer, policy = policy.as_deref().unwrap_or("-"), "RPC connection denied by authorization; closing");
            false
        }
        _ => true,
    }
}

async fn run<S: AsyncRead + AsyncWrite + Send + 'static>(stream: S, config: Arc<RpcProxy>) {
    let (mut read, write) = tokio::io::split(stream);
    let (replies, queued) = mpsc::channel::<Bytes>(WRITE_QUEUE);
    let writer = tokio::spawn(write_replies(write, queued));
    let slots = Arc::new(Semaphore::new(MAX_CALLS_IN_FLIGHT));
    let codec = config.codec;
    let mut buf = BytesMut::with_capacity(READ_BUFFER);
    'connection: loop {
        loop {
            let frame = match codec.decode(&mut buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(protocol = codec.name(), error = %e, "unreadable RPC stream; closing");
                    break 'connection;
                }
            };
            match frame.kind {
                FrameKind::Heartbeat => {
                    if replies.send(codec.heartbeat_ack(&frame)).await.is_err() {
                        break 'connection;
                    }
                }
                FrameKind::Request | FrameKind::OneWay => {
                    let Ok(slot) = slots.clone().acquire_owned().await else {
                        break 'connection;
                    };
                    let (config, replies) = (config.clone(), replies.clone());
                    tokio::spawn(async move {
                        let _slot = slot;
                        if let Some(reply) = super::call::call(&config, frame).await {
                            let _ = replies.send(reply).await;
                        }
                    });
                }
                // A client sends no responses; one that does is ignored.
                FrameKind::Response | FrameKind::HeartbeatAck => {}
            }
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_BUFFER);
        }
        let idle = config.idle_timeout;
        let read_more = read.read_buf(&mut buf);
        let n = if idle.is_zero() {
            read_more.await
        } else {
            let quiet = slots.available_permits() == MAX_CALLS_IN_FLIGHT;
            match tokio::time::timeout(idle, read_more).await {
                Ok(r) => r,
                Err(_) if quiet => {
                    tracing::debug!("RPC connection idle; closing");
                    break;
                }
                Err(_) => continue,
            }
        };
        match n {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    // Calls still running finish and send their replies before the writer ends.
    drop(replies);
    let _ = writer.await;
}

/// Writes replies as they come, several in one write when they queue up.
async fn write_replies<W: AsyncWrite>(write: W, mut queued: mpsc::Receiver<Bytes>) {
    let mut write = std::pin::pin!(write);
    let mut batch = BytesMut::new();
    while let Some(first) = queued.recv().await {
        let mut wrote = if queued.is_empty() {
            write.write_all(&first).await
        } else {
            batch.extend_from_slice(&first);
            while let Ok(next) = queued.try_recv() {
                batch.extend_from_slice(&next);
                if batch.len() > 64 * 1024 {
                    break;
                }
            }
            let r = write.write_all(&batch).await;
            batch.clear();
            r
        };
        if wrote.is_ok() {
            wrote = write.flush().await;
        }
        if wrote.is_err() {
            return;
        }
    }
    let _ = write.shutdown().await;
}
