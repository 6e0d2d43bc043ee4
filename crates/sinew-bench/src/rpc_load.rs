//! `rpc-load`: Bolt or Dubbo echo calls as fast as `--connections` connections with
//! `--pipeline` calls in flight on each allow, for the RPC scenarios of the harness (no
//! off-the-shelf load generator speaks either protocol).
//!
//! Each connection has a writer and a reader. The writer sends a call whenever fewer than
//! `--pipeline` are in flight (all it may send at once in one write); the reader decodes
//! the answers, checks that each carries the id of a call in flight on that connection,
//! answered once, and that it is an OK response carrying the payload, and lets the writer
//! send one more. Ids are 1, 2, 3, … per connection; answers may come in any order (a
//! proxy multiplexes). Only answers read before the deadline count. A connection that
//! fails is counted as an error and opened again until the deadline.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::timeout_at;

use crate::rpc::Protocol;

#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub protocol: Protocol,
    pub target: SocketAddr,
    pub connections: usize,
    pub pipeline: usize,
    pub secs: f64,
    /// Payload bytes of each call.
    pub size: usize,
}

/// What the load did, all connections together.
#[derive(Debug, Default)]
pub struct Counts {
    /// Good answers: OK responses with the id of a call in flight.
    pub requests: u64,
    /// Bad answers (an error status, an id not in flight, a short response), connections
    /// that failed, and connections that could not be opened.
    pub errors: u64,
    pub first_error: Option<String>,
}

impl Counts {
    fn failed(&mut self, error: String) {
        self.errors += 1;
        self.first_error.get_or_insert(error);
    }

    fn add(&mut self, other: Counts) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
    }
}

/// Runs the load and prints one line of JSON: requests, errors, seconds, the rate. Fails
/// if no call was answered.
pub async fn run(options: Options) -> Result<(), String> {
    let started = Instant::now();
    let counts = measure(options).await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{{\"protocol\": \"{:?}\", \"connections\": {}, \"pipeline\": {}, \"size\": {}, \
         \"requests\": {}, \"errors\": {}, \"secs\": {secs:.3}, \"rps\": {:.1}, \
         \"first_error\": \"{}\"}}",
        options.protocol,
        options.connections,
        options.pipeline,
        options.size,
        counts.requests,
        counts.errors,
        counts.requests as f64 / secs,
        crate::load::json_escape(counts.first_error.as_deref().unwrap_or("")),
    );
    if counts.requests == 0 {
        return Err(format!(
            "no call was answered: {}",
            counts.first_error.unwrap_or_default()
        ));
    }
    Ok(())
}

/// The load itself: every connection's counts, added up.
pub async fn measure(options: Options) -> Result<Counts, String> {
    if options.size > crate::rpc::MAX_SIZE {
        return Err(format!("--size is at most {} bytes", crate::rpc::MAX_SIZE));
    }
    let template = options.protocol.request(options.size);
    let deadline = Instant::now() + Duration::from_secs_f64(options.secs);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..options.connections.max(1) {
        let template = template.clone();
        tasks.spawn(async move {
            let mut counts = Counts::default();
            while Instant::now() < deadline {
                if let Err(e) = connection(&options, &template, deadline, &mut counts).await {
                    counts.failed(e);
                    // Not a busy loop against a target that refuses connections.
                    tokio::time::sleep_until(
                        deadline
                            .min(Instant::now() + Duration::from_millis(10))
                            .into(),
                    )
                    .await;
                }
            }
            counts
        });
    }
    let mut total = Counts::default();
    while let Some(counts) = tasks.join_next().await {
        total.add(counts.map_err(|e| e.to_string())?);
    }
    Ok(total)
}

/// One connection until the deadline (Ok) or its first failure (Err).
async fn connection(
    options: &Options,
    template: &[u8],
    deadline: Instant,
    counts: &mut Counts,
) -> Result<(), String> {
    let stream = match timeout_at(deadline.into(), TcpStream::connect(options.target)).await {
        Ok(stream) => stream.map_err(|e| format!("cannot connect to {}: {e}", options.target))?,
        Err(_) => return Ok(()),
    };
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (reader, writer) = stream.into_split();
    let in_flight = Semaphore::new(options.pipeline.max(1));
    let sent = AtomicU64::new(0);
    tokio::select! {
        done = write_calls(options.protocol, template, writer, &in_flight, &sent, deadline) => done,
        done = read_answers(options, reader, &in_flight, &sent, deadline, counts) => done,
    }
}

async fn write_calls(
    protocol: Protocol,
    template: &[u8],
    mut writer: OwnedWriteHalf,
    in_flight: &Semaphore,
    sent: &AtomicU64,
    deadline: Instant,
) -> Result<(), String> {
    let mut out = BytesMut::new();
    loop {
        let Ok(permit) = timeout_at(deadline.into(), in_flight.acquire()).await else {
            return Ok(());
        };
        permit.map_err(|e| e.to_string())?.forget();
        let mut calls = 1;
        while let Ok(permit) = in_flight.try_acquire() {
            permit.forget();
            calls += 1;
        }
        let first = sent.load(Ordering::Relaxed) + 1;
        for id in first..first + calls {
            protocol.put_request(&mut out, template, id);
        }
        // Counted as sent before they are: an answer can come no sooner.
        sent.store(first + calls - 1, Ordering::Release);
        match timeout_at(deadline.into(), writer.write_all(&out)).await {
            Ok(Ok(())) => out.clear(),
            Ok(Err(e)) => return Err(format!("writing calls: {e}")),
            Err(_) => return Ok(()),
        }
    }
}

async fn read_answers(
    options: &Options,
    mut reader: OwnedReadHalf,
    in_flight: &Semaphore,
    sent: &AtomicU64,
    deadline: Instant,
    counts: &mut Counts,
) -> Result<(), String> {
    let codec = options.protocol.codec();
    let mut input = BytesMut::with_capacity(64 * 1024);
    let mut outstanding = Outstanding::default();
    loop {
        if input.capacity() - input.len() < 16 * 1024 {
            input.reserve(64 * 1024);
        }
        match timeout_at(deadline.into(), reader.read_buf(&mut input)).await {
            Err(_) => return Ok(()),
            Ok(Ok(0)) => return Err("the connection closed with calls in flight".into()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("reading answers: {e}")),
        }
        while let Some(frame) = codec.decode(&mut input).map_err(|e| e.to_string())? {
            let id = outstanding.answer(
                options.protocol,
                frame.request_id,
                sent.load(Ordering::Acquire),
            )?;
            match options.protocol.check_response(&frame, options.size) {
                Ok(()) => counts.requests += 1,
                Err(e) => counts.failed(format!("call {id}: {e}")),
            }
            in_flight.add_permits(1);
        }
    }
}

/// The calls of one connection not yet answered: every id from `base` up to the last
/// sent, but those marked answered out of order. At most the pipeline depth long.
#[derive(Debug)]
struct Outstanding {
    /// The lowest id not yet answered.
    base: u64,
    /// Whether `base + i` has been answered.
    answered: VecDeque<bool>,
}

impl Default for Outstanding {
    fn default() -> Self {
        Outstanding {
            base: 1,
            answered: VecDeque::new(),
        }
    }
}

impl Outstanding {
    /// Marks the call answered by a response with `wire_id` (Bolt's ids are 32 bits), of
    /// ids up to `sent`, and returns its id. An id not in flight (never sent, or already
    /// answered) is an error: the connection cannot be trusted on.
    fn answer(&mut self, protocol: Protocol, wire_id: u64, sent: u64) -> Result<u64, String> {
        // The one call in flight whose id this is: ids in flight span less than 2^32.
        let offset = wire_id.wrapping_sub(protocol.wire_id(self.base))
            & match protocol {
                Protocol::Bolt => u64::from(u32::MAX),
                Protocol::Dubbo => u64::MAX,
            };
        let id = self.base.wrapping_add(offset);
        let i = offset as usize;
        if id < self.base || id > sent || self.answered.get(i) == Some(&true) {
            return Err(format!(
                "an answer with id {wire_id}, not a call in flight (ids {}..={sent} sent, \
                 {} answered out of order)",
                self.base,
                self.answered.iter().filter(|a| **a).count()
            ));
        }
        if self.answered.len() <= i {
            self.answered.resize(i + 1, false);
        }
        self.answered[i] = true;
        while self.answered.front() == Some(&true) {
            self.answered.pop_front();
            self.base += 1;
        }
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc_upstream;

    async fn echo_upstream(protocol: Protocol) -> SocketAddr {
        let listener = rpc_upstream::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(rpc_upstream::serve(protocol, listener));
        addr
    }

    fn options(protocol: Protocol, target: SocketAddr) -> Options {
        Options {
            protocol,
            target,
            connections: 2,
            pipeline: 8,
            secs: 0.3,
            size: 1024,
        }
    }

    #[tokio::test]
    async fn pipelined_load_against_the_echo_upstream_gets_every_call_answered() {
        for protocol in [Protocol::Bolt, Protocol::Dubbo] {
            let target = echo_upstream(protocol).await;
            let started = Instant::now();
            let counts = measure(options(protocol, target)).await.unwrap();
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "bounded by --secs"
            );
            assert_eq!(counts.errors, 0, "{protocol:?}: {:?}", counts.first_error);
            // Far more than one connection's pipeline: calls kept flowing.
            assert!(counts.requests > 100, "{protocol:?}: {counts:?}");
        }
    }

    #[tokio::test]
    async fn answers_with_ids_never_sent_are_errors_not_requests() {
        // A server that answers every Bolt call with an id 1000 past the call's.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let codec = Protocol::Bolt.codec();
                    let mut input = BytesMut::with_capacity(64 * 1024);
                    while stream.read_buf(&mut input).await.is_ok_and(|n| n > 0) {
                        while let Ok(Some(frame)) = codec.decode(&mut input) {
                            let response = sinew_codec::bolt::encode_response(
                                frame.request_id as u32 + 1000,
                                0,
                                &[0; 1024],
                            );
                            if stream.write_all(&response).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        let counts = measure(options(Protocol::Bolt, target)).await.unwrap();
        assert_eq!(counts.requests, 0);
        assert!(counts.errors > 0);
        assert!(
            counts.first_error.unwrap().contains("not a call in flight"),
            "the error says why"
        );
    }

    #[tokio::test]
    async fn a_target_that_refuses_connections_is_errors_until_the_deadline() {
        let unused = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = unused.local_addr().unwrap();
        drop(unused);
        let started = Instant::now();
        let counts = measure(options(Protocol::Dubbo, target)).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(counts.requests, 0);
        assert!(counts.errors > 0);
    }

    #[test]
    fn answers_may_come_in_any_order_but_each_once() {
        let mut outstanding = Outstanding::default();
        for id in [2, 1, 4, 3] {
            assert_eq!(outstanding.answer(Protocol::Dubbo, id, 4).unwrap(), id);
        }
        assert_eq!(outstanding.base, 5);
        assert!(outstanding.answered.is_empty());
        // Answered already, and never sent.
        assert!(outstanding.answer(Protocol::Dubbo, 3, 6).is_err());
        assert!(outstanding.answer(Protocol::Dubbo, 7, 6).is_err());
        assert_eq!(outstanding.answer(Protocol::Dubbo, 6, 6).unwrap(), 6);
        assert!(outstanding.answer(Protocol::Dubbo, 6, 6).is_err());
    }

    #[test]
    fn bolt_ids_wrap_at_32_bits() {
        let mut outstanding = Outstanding {
            base: u64::from(u32::MAX),
            answered: VecDeque::new(),
        };
        let past = u64::from(u32::MAX) + 1;
        assert_eq!(outstanding.answer(Protocol::Bolt, 0, past).unwrap(), past);
        assert_eq!(
            outstanding
                .answer(Protocol::Bolt, u64::from(u32::MAX), past)
                .unwrap(),
            u64::from(u32::MAX)
        );
        assert_eq!(outstanding.base, past + 1);
    }
}
