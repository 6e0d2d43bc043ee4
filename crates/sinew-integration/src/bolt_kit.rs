//! SOFA Bolt in tests: Ant's `sofa-rpc-node` provider and consumer (from npm, installed
//! by `scripts/test` into `peers/bolt`) run as processes, a stub Bolt server that counts
//! the calls it gets and answers each with an empty success, and raw Bolt calls made
//! with `sinew_codec::bolt`'s encoders, whose response statuses a test reads.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use sinew_codec::rpc::{FrameKind, RpcCodec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::rpc_peers::{node_provider, output_lines, peer_command};
use crate::ChildGuard;

/// The service the npm provider serves.
pub const SERVICE: &str = "com.sinew.test.EchoService";

/// The class name SOFARPC puts on its calls.
const REQUEST_CLASS: &[u8] = b"com.alipay.sofa.rpc.core.request.SofaRequest";

/// A `node` command run in the Bolt peers' directory, its standard output piped.
pub fn node(args: &[&str]) -> Command {
    peer_command("bolt", "node", args)
}

/// A provider named `name` on a fresh port, once it says it listens. Every answer names
/// it (`name:...`), so a test can tell which endpoint served a call.
pub async fn provider(name: &str) -> (ChildGuard, SocketAddr) {
    node_provider("bolt", "server.js", &[name]).await
}

/// The consumer's lines (`ok <result>` or `error <message>`) for `count` calls of
/// `method` through `addr`, one after another.
pub async fn consume(
    addr: SocketAddr,
    service: &str,
    method: &str,
    count: usize,
    arg: &str,
) -> Vec<String> {
    output_lines(node(&[
        "client.js",
        &addr.to_string(),
        service,
        method,
        &count.to_string(),
        arg,
    ]))
    .await
}

/// One call a [`BoltStub`] received.
#[derive(Debug, Clone)]
pub struct StubCall {
    /// Which of the stub's connections it came on (0, 1, ... in accept order).
    pub connection: usize,
    pub id: u64,
    pub service: String,
    pub method: String,
    /// The header map as it arrived.
    pub headers: Vec<(String, String)>,
}

/// A Bolt server that records every call and answers it (after `delay`) with an empty
/// success; heartbeats are acknowledged.
pub struct BoltStub {
    pub addr: SocketAddr,
    calls: Arc<Mutex<Vec<StubCall>>>,
}

impl BoltStub {
    pub async fn start(delay: Duration) -> BoltStub {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let calls: Arc<Mutex<Vec<StubCall>>> = Arc::default();
        let seen = calls.clone();
        tokio::spawn(async move {
            let mut accepted = 0;
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_stub(stream, accepted, seen.clone(), delay));
                accepted += 1;
            }
        });
        BoltStub { addr, calls }
    }

    /// The calls received so far.
    pub fn calls(&self) -> Vec<StubCall> {
        self.calls.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

async fn serve_stub(
    stream: TcpStream,
    connection: usize,
    calls: Arc<Mutex<Vec<StubCall>>>,
    delay: Duration,
) {
    let codec = sinew_codec::bolt::Bolt;
    let (mut read, write) = stream.into_split();
    let write = Arc::new(tokio::sync::Mutex::new(write));
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        while let Ok(Some(frame)) = codec.decode(&mut buf) {
            let reply = match frame.kind {
                FrameKind::Heartbeat => codec
                    .heartbeat_ack(&frame)
                    .expect("Bolt acks every heartbeat")
                    .to_vec(),
                FrameKind::Request | FrameKind::OneWay => {
                    let info = codec.call_info(&frame);
                    calls.lock().unwrap().push(StubCall {
                        connection,
                        id: frame.request_id,
                        service: info.service,
                        method: info.method,
                        headers: info.headers,
                    });
                    if frame.kind == FrameKind::OneWay {
                        continue;
                    }
                    sinew_codec::bolt::encode_response(
                        frame.request_id as u32,
                        sinew_codec::bolt::status::SUCCESS,
                        b"",
                    )
                    .to_vec()
                }
                FrameKind::Response | FrameKind::HeartbeatAck => continue,
            };
            let write = write.clone();
            tokio::spawn(async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let _ = write.lock().await.write_all(&reply).await;
            });
        }
        match read.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// A raw Bolt request for `service`'s `method` with `id` and extra `headers`.
pub fn request(id: u32, service: &str, method: &str, headers: &[(&str, &str)]) -> BytesMut {
    let unique = format!("{service}:1.0");
    let mut all = vec![
        ("service", unique.as_str()),
        ("sofa_head_method_name", method),
    ];
    all.extend_from_slice(headers);
    sinew_codec::bolt::encode_request(id, false, 3000, REQUEST_CLASS, &all, b"")
}

/// Sends one raw call on `stream` and reads its response: the response's id and status.
pub async fn call(
    stream: &mut TcpStream,
    id: u32,
    service: &str,
    method: &str,
    headers: &[(&str, &str)],
) -> (u32, u16) {
    stream
        .write_all(&request(id, service, method, headers))
        .await
        .unwrap();
    read_response(stream).await
}

/// Reads one Bolt response (within 10 s): its id and status.
pub async fn read_response(stream: &mut TcpStream) -> (u32, u16) {
    let read = async {
        let mut head = [0u8; 20];
        stream.read_exact(&mut head).await.unwrap();
        let class = u16::from_be_bytes([head[12], head[13]]) as usize;
        let header = u16::from_be_bytes([head[14], head[15]]) as usize;
        let content = u32::from_be_bytes(head[16..20].try_into().unwrap()) as usize;
        let mut rest = vec![0u8; class + header + content];
        stream.read_exact(&mut rest).await.unwrap();
        (
            u32::from_be_bytes(head[5..9].try_into().unwrap()),
            u16::from_be_bytes([head[10], head[11]]),
        )
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("a Bolt response in time")
}
