//! Upstream connections that multiplex calls: each worker keeps one connection per
//! endpoint and protocol, and every call of that worker's clients to the endpoint goes
//! over it with an id of the connection's own; the response is matched back by that id.
//! This is how few upstream connections serve many clients, as MOSN and Dubbo clients
//! do.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use sinew_codec::rpc::{Frame, FrameKind, RpcCodec};
use sinew_upstream::pool::EndpointState;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot};

/// Calls written to one upstream connection ahead of the socket.
const WRITE_QUEUE: usize = 1024;
const READ_BUFFER: usize = 16 * 1024;

/// Calls waiting for their responses, by upstream id.
type Pending = Mutex<HashMap<u32, oneshot::Sender<Frame>>>;

/// One multiplexed upstream connection.
pub(super) struct MuxConn {
    codec: &'static dyn RpcCodec,
    writes: mpsc::Sender<Bytes>,
    pending: Arc<Pending>,
    next_id: AtomicU32,
    closed: Arc<AtomicBool>,
}

/// Why a call got no response.
#[derive(Debug)]
pub(super) enum CallError {
    /// The connection could not be opened.
    Connect,
    /// The connection closed before the response.
    Reset,
}

thread_local! {
    /// This worker's connections, by endpoint address and protocol.
    static CONNECTIONS: RefCell<HashMap<(SocketAddr, &'static str), Arc<MuxConn>>> =
        RefCell::new(HashMap::new());
}

impl MuxConn {
    /// Sends `frame` (its id rewritten to one of this connection's) and waits for the
    /// response, which comes back with the upstream id.
    pub(super) async fn call(&self, mut frame: Frame) -> Result<Option<Frame>, CallError> {
        let oneway = frame.kind == FrameKind::OneWay;
        // Zero is left out: some servers treat it as "no id".
        let id = match self.next_id.fetch_add(1, Ordering::Relaxed) {
            0 => self.next_id.fetch_add(1, Ordering::Relaxed),
            id => id,
        };
        self.codec.set_request_id(&mut frame, id as u64);
        let answer = if oneway {
            None
        } else {
            let (tx, rx) = oneshot::channel();
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, tx);
            Some(rx)
        };
        // Whatever ends the wait (a response, a broken connection, the caller's timeout
        // dropping this future), the entry goes with it.
        let _waiting = answer.is_some().then_some(Waiting { conn: self, id });
        if self.writes.send(frame.bytes.freeze()).await.is_err() {
            return Err(CallError::Reset);
        }
        match answer {
            None => Ok(None),
            Some(rx) => rx.await.map(Some).map_err(|_| CallError::Reset),
        }
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
}

/// A call's entry among the pending ones, removed when the call stops waiting.
struct Waiting<'a> {
    conn: &'a MuxConn,
    id: u32,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.conn
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

/// This worker's connection to `endpoint` for `codec`, opened when there is none.
pub(super) async fn connection(
    endpoint: &EndpointState,
    codec: &'static dyn RpcCodec,
) -> Result<Arc<MuxConn>, CallError> {
    let key = (endpoint.address, codec.name());
    let open = CONNECTIONS.with(|c| c.borrow().get(&key).filter(|c| !c.is_closed()).cloned());
    if let Some(conn) = open {
        return Ok(conn);
    }
    let settings = endpoint.settings();
    let io = sinew_upstream::connect::connect(
        endpoint.address,
        settings.connect_timeout,
        settings.tls.as_ref(),
        settings.tcp_keepalive.as_ref(),
    )
    .await
    .map_err(|e| {
        tracing::debug!(address = %endpoint.address, error = %e, "RPC upstream connect failed");
        CallError::Connect
    })?;
    let (read, write) = tokio::io::split(io);
    let (writes, queued) = mpsc::channel(WRITE_QUEUE);
    let pending: Arc<Pending> = Arc::default();
    let closed = Arc::new(AtomicBool::new(false));
    let broken = closed.clone();
    tokio::spawn(super::writer::write_batched(write, queued, move || {
        broken.store(true, Ordering::Relaxed)
    }));
    tokio::spawn(read_responses(read, codec, pending.clone(), closed.clone()));
    let conn = Arc::new(MuxConn {
        codec,
        writes,
        pending,
        next_id: AtomicU32::new(1),
        closed,
    });
    // Another call may have opened one meanwhile: the newer one serves from now on,
    // the other finishes its calls and closes when its last user drops it.
    CONNECTIONS.with(|c| c.borrow_mut().insert(key, conn.clone()));
    Ok(conn)
}

async fn read_responses<R: tokio::io::AsyncRead>(
    read: R,
    codec: &'static dyn RpcCodec,
    pending: Arc<Pending>,
    closed: Arc<AtomicBool>,
) {
    let mut read = std::pin::pin!(read);
    let mut buf = BytesMut::with_capacity(READ_BUFFER);
    'connection: loop {
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) if frame.kind == FrameKind::Response => {
                    let waiter = pending
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&(frame.request_id as u32));
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(frame);
                    }
                }
                // Heartbeat acks, and a server's own heartbeats (not answered: the
                // connection is the proxy's, and its calls keep it busy).
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(protocol = codec.name(), error = %e, "unreadable RPC upstream stream; closing");
                    break 'connection;
                }
            }
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_BUFFER);
        }
        match read.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    closed.store(true, Ordering::Relaxed);
    // Calls still waiting get no response: dropping their senders tells them.
    pending.lock().unwrap_or_else(|e| e.into_inner()).clear();
}
