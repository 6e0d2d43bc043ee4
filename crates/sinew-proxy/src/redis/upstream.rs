//! Connections to shards: per worker, one connection per shard, shared by every client
//! connection of that worker whose keys live there. Commands are written as they come,
//! many clients' interleaved, and Redis answers a connection's commands in order, so
//! each reply goes to the oldest command still waiting (FIFO).
//!
//! A connection that cannot be opened fails the commands queued for it at once; one
//! whose oldest command waits longer than `op_timeout` is closed, failing everything
//! queued on it, since a reply that came later would be matched to the wrong command.
//! The next command opens a new one. Connect failures and timeouts are reported to the
//! cluster's outlier detection.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use sinew_codec::resp::{FrameScanner, Limits};
use sinew_upstream::{Cluster, Outcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Why a command got no reply from its shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No connection could be opened, or the shard is marked unhealthy.
    Unavailable,
    /// No reply within `op_timeout`.
    Timeout,
    /// The connection closed, or sent bytes that are not RESP, before the reply.
    Closed,
}

pub type Reply = Result<Bytes, Failure>;

/// A command on its way to a shard.
pub struct Op {
    pub frame: Bytes,
    pub reply: oneshot::Sender<Reply>,
}

type Key = (SocketAddr, Arc<str>);

thread_local! {
    /// This worker's shard connections, by shard address and cluster name.
    static CONNECTIONS: RefCell<HashMap<Key, mpsc::UnboundedSender<Op>>> = RefCell::new(HashMap::new());
}

/// Sends `frame` to the shard `endpoint` of `cluster` on this worker's connection to it
/// (opened when there is none); the reply, or why there is none, comes on the receiver.
pub fn send(
    cluster: &Arc<Cluster>,
    endpoint: &Arc<sinew_upstream::EndpointState>,
    frame: Bytes,
    op_timeout: Duration,
) -> oneshot::Receiver<Reply> {
    let (reply, receiver) = oneshot::channel();
    let mut op = Op { frame, reply };
    CONNECTIONS.with(|connections| {
        let mut connections = connections.borrow_mut();
        let key = (endpoint.address, cluster.name.clone());
        if let Some(sender) = connections.get(&key) {
            match sender.send(op) {
                Ok(()) => return,
                Err(mpsc::error::SendError(back)) => op = back,
            }
        }
        let (sender, queue) = mpsc::unbounded_channel();
        let _ = sender.send(op);
        // Rare (a first command to a shard, or one after a failure): a good moment to
        // forget connections that have ended, so removed shards leave nothing behind.
        connections.retain(|_, s| !s.is_closed());
        connections.insert(key, sender);
        tokio::spawn(run(cluster.clone(), endpoint.clone(), queue, op_timeout));
    });
    receiver
}

/// One shard connection: opens it, then writes queued commands and hands back replies
/// in order until it fails, times out, or nobody can send to it any more.
async fn run(
    cluster: Arc<Cluster>,
    endpoint: Arc<sinew_upstream::EndpointState>,
    mut queue: mpsc::UnboundedReceiver<Op>,
    op_timeout: Duration,
) {
    let settings = endpoint.settings();
    let connected = sinew_upstream::connect::connect(
        endpoint.address,
        settings.connect_timeout.min(op_timeout),
        settings.tls.as_ref(),
        settings.tcp_keepalive.as_ref(),
    )
    .await;
    let stream = match connected {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(address = %endpoint.address, error = %e, "Redis shard connect failed");
            cluster.report_endpoint(&endpoint, Outcome::ConnectFailure);
            queue.close();
            while let Ok(op) = queue.try_recv() {
                let _ = op.reply.send(Err(Failure::Unavailable));
            }
            return;
        }
    };
    let (mut reader, mut writer) = stream.into_halves();
    let mut waiting: VecDeque<(oneshot::Sender<Reply>, Instant)> = VecDeque::new();
    let mut out = BytesMut::with_capacity(16 * 1024);
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut scanner = FrameScanner::new();
    let limits = Limits::default();
    let far = Duration::from_secs(86400 * 365);
    let timer = tokio::time::sleep(far);
    tokio::pin!(timer);
    let failure = loop {
        tokio::select! {
            op = queue.recv() => {
                let Some(op) = op else { break Failure::Closed };
                let deadline = Instant::now() + op_timeout;
                if waiting.is_empty() {
                    timer.as_mut().reset(deadline);
                }
                out.extend_from_slice(&op.frame);
                waiting.push_back((op.reply, deadline));
                // Everything queued meanwhile goes in the same write.
                while let Ok(op) = queue.try_recv() {
                    out.extend_from_slice(&op.frame);
                    waiting.push_back((op.reply, deadline));
                }
                if let Err(e) = writer.write_all(&out).await {
                    tracing::debug!(address = %endpoint.address, error = %e, "Redis shard write failed");
                    break Failure::Closed;
                }
                out.clear();
            }
            read = reader.read_buf(&mut input) => {
                match read {
                    Ok(0) | Err(_) => break Failure::Closed,
                    Ok(_) => {}
                }
                let mut broken = false;
                loop {
                    match scanner.scan(&input, &limits) {
                        Ok(Some(n)) => {
                            let frame = input.split_to(n).freeze();
                            match waiting.pop_front() {
                                Some((reply, _)) => { let _ = reply.send(Ok(frame)); }
                                None => { broken = true; break; }
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::debug!(address = %endpoint.address, error = %e, "Redis shard sent bytes that are not RESP");
                            broken = true;
                            break;
                        }
                    }
                }
                if broken {
                    break Failure::Closed;
                }
                if input.capacity() - input.len() < 4096 {
                    input.reserve(16 * 1024);
                }
            }
            () = &mut timer => {
                match waiting.front() {
                    Some((_, deadline)) if *deadline <= Instant::now() => {
                        tracing::debug!(address = %endpoint.address, "Redis shard did not answer within op_timeout; closing its connection");
                        cluster.report_endpoint(&endpoint, Outcome::Timeout);
                        break Failure::Timeout;
                    }
                    Some((_, deadline)) => timer.as_mut().reset(*deadline),
                    None => timer.as_mut().reset(Instant::now() + far),
                }
            }
        }
    };
    queue.close();
    for (reply, _) in waiting {
        let _ = reply.send(Err(failure));
    }
    while let Ok(op) = queue.try_recv() {
        let _ = op.reply.send(Err(Failure::Closed));
    }
}
