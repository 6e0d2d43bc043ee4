//! One client connection of an RPC listener: frames read and dispatched as calls, and
//! the responses written back as they come, in whatever order (calls are matched by
//! request id, so a slow call does not hold up the ones behind it).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use sinew_codec::rpc::FrameKind;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};

use super::record::Caller;
use crate::config::snapshot::{DownstreamTls, RpcProxy};
use crate::net::admit::{admit, Admitted};

/// Calls in flight on one client connection; past it, reading pauses.
const MAX_CALLS_IN_FLIGHT: usize = 1024;
/// Responses queued for the client before calls wait for the writer.
const WRITE_QUEUE: usize = 256;
const READ_BUFFER: usize = 16 * 1024;

/// Serves one accepted connection: its TLS first, if the listener takes any, then the
/// listener's authorization: once here when its rules need only the connection's facts
/// (peer, port, certificate), as for TCP; per call, with the call's service, method and
/// headers, when some rule reads a request.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<&DownstreamTls>,
    config: Arc<RpcProxy>,
) {
    let acceptor = tls.map(|t| &t.acceptor);
    let authz = config
        .authorization
        .as_deref()
        .filter(|_| !config.authorize_calls);
    let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
    let local = stream.local_addr().unwrap_or(unknown);
    let caller = |identity| {
        Arc::new(Caller {
            peer,
            local,
            tls: acceptor.is_some(),
            identity,
        })
    };
    match admit(stream, peer, acceptor, authz, config.codec.name()).await {
        Some((Admitted::Plain(stream), identity)) => run(stream, config, caller(identity)).await,
        Some((Admitted::Tls(stream), identity)) => {
            Box::pin(run(*stream, config, caller(identity))).await
        }
        None => {}
    }
}

async fn run<S: AsyncRead + AsyncWrite + Send + 'static>(
    stream: S,
    config: Arc<RpcProxy>,
    caller: Arc<Caller>,
) {
    let (mut read, write) = tokio::io::split(stream);
    let (replies, queued) = mpsc::channel::<Bytes>(WRITE_QUEUE);
    let writer = tokio::spawn(super::writer::write_batched(write, queued, || {}));
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
                    let Some(ack) = codec.heartbeat_ack(&frame) else {
                        continue;
                    };
                    if replies.send(ack).await.is_err() {
                        break 'connection;
                    }
                }
                FrameKind::Request | FrameKind::OneWay => {
                    let Ok(slot) = slots.clone().acquire_owned().await else {
                        break 'connection;
                    };
                    let (config, replies) = (config.clone(), replies.clone());
                    let caller = caller.clone();
                    tokio::spawn(async move {
                        let _slot = slot;
                        if let Some(reply) = super::call::call(&config, &caller, frame).await {
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
