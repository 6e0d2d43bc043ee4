//! One client connection: commands read as they come (pipelined, up to `max_pipeline`
//! in flight), each sent to its shard at once, and replies written back in the order
//! the commands came, whichever shard answers first.
//!
//! A command's frame is cut from the read buffer without copying and forwarded as is
//! unless a key must change (`remove_prefix`) or the command is split; a shard's reply
//! is forwarded as the byte range it came in.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use sinew_codec::resp::{encode, CommandParser, FrameScanner, Limits, Parsed};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::commands::{self, Join, Keys, Kind, Local};
use super::upstream::{self, Failure, Reply};
use super::{RedisProxy, Shard, Target};
use crate::net::admit::{admit, Admitted};

/// Serves one accepted connection: TLS first when the listener terminates it, then the
/// listener's authorization (per connection, as for a TCP proxy), then commands.
pub(crate) async fn serve(
    stream: TcpStream,
    tls: Option<&tokio_rustls::TlsAcceptor>,
    config: Arc<RedisProxy>,
) {
    let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
    let peer = stream.peer_addr().unwrap_or(unknown);
    let authz = config.authorization.as_deref();
    match admit(stream, peer, tls, authz, "Redis").await {
        Some((Admitted::Plain(stream), _)) => run(stream, config).await,
        Some((Admitted::Tls(stream), _)) => Box::pin(run(*stream, config)).await,
        None => {}
    }
}

/// A reply still to come from a shard, or come.
enum Slot {
    Waiting(oneshot::Receiver<Reply>),
    Got(Reply),
}

impl Slot {
    fn ready(&mut self) -> bool {
        if let Slot::Waiting(rx) = self {
            match rx.try_recv() {
                Ok(reply) => *self = Slot::Got(reply),
                Err(oneshot::error::TryRecvError::Empty) => return false,
                Err(oneshot::error::TryRecvError::Closed) => {
                    *self = Slot::Got(Err(Failure::Closed))
                }
            }
        }
        true
    }

    async fn settle(&mut self) {
        if let Slot::Waiting(rx) = self {
            let reply = rx.await.unwrap_or(Err(Failure::Closed));
            *self = Slot::Got(reply);
        }
    }

    fn take(&mut self) -> Reply {
        match std::mem::replace(self, Slot::Got(Err(Failure::Closed))) {
            Slot::Got(reply) => reply,
            Slot::Waiting(_) => Err(Failure::Closed),
        }
    }
}

/// One shard's share of a command.
struct Part {
    slot: Slot,
    /// The shard's address (None: the cluster has no endpoints), for error messages.
    shard: Option<SocketAddr>,
    /// For a split command: the positions, among the command's keys, of this part's keys.
    keys: Vec<u32>,
}

enum Body {
    /// Made here: a local answer or an error.
    Local {
        reply: Bytes,
        error: bool,
    },
    One(Part),
    Split {
        join: Join,
        keys: usize,
        parts: Vec<Part>,
    },
}

/// A command whose reply is owed to the client.
struct Pending {
    class: usize,
    start: Instant,
    body: Body,
}

impl Pending {
    fn ready(&mut self) -> bool {
        match &mut self.body {
            Body::Local { .. } => true,
            Body::One(p) => p.slot.ready(),
            Body::Split { parts, .. } => parts.iter_mut().all(|p| p.slot.ready()),
        }
    }

    async fn settle(&mut self) {
        match &mut self.body {
            Body::Local { .. } => {}
            Body::One(p) => p.slot.settle().await,
            Body::Split { parts, .. } => {
                for p in parts {
                    p.slot.settle().await;
                }
            }
        }
    }

    /// Writes the reply (all slots ready); returns whether it is an error the proxy made.
    fn write(mut self, out: &mut BytesMut) -> bool {
        match &mut self.body {
            Body::Local { reply, error } => {
                out.extend_from_slice(reply);
                *error
            }
            Body::One(part) => match part.slot.take() {
                Ok(frame) => {
                    out.extend_from_slice(&frame);
                    false
                }
                Err(f) => {
                    failure(out, f, part.shard);
                    true
                }
            },
            Body::Split { join, keys, parts } => join_replies(*join, *keys, parts, out),
        }
    }
}

fn failure(out: &mut BytesMut, f: Failure, shard: Option<SocketAddr>) {
    let shard = shard.map_or_else(
        || "(none: the cluster has no endpoints)".to_string(),
        |a| a.to_string(),
    );
    let message = match f {
        Failure::Unavailable => format!("ERR upstream shard {shard} unavailable"),
        Failure::Timeout => format!("ERR upstream shard {shard} did not answer within op_timeout"),
        Failure::Closed => format!("ERR upstream shard {shard} closed the connection"),
    };
    encode::error(out, &message);
}

/// Joins a split command's replies; returns whether the proxy made an error.
fn join_replies(join: Join, keys: usize, parts: &mut [Part], out: &mut BytesMut) -> bool {
    let replies: Vec<(Reply, Option<SocketAddr>, &[u32])> = parts
        .iter_mut()
        .map(|p| (p.slot.take(), p.shard, &p.keys[..]))
        .collect();
    match join {
        Join::Values => {
            // Each part answered an MGET of its keys: its elements go to their positions.
            let mut values: Vec<Option<Bytes>> = vec![None; keys];
            let mut made_error = false;
            for (reply, shard, positions) in &replies {
                let elements = match reply {
                    Ok(frame) => array_elements(frame).filter(|e| e.len() == positions.len()),
                    Err(_) => None,
                };
                match elements {
                    Some(elements) => {
                        for (e, &at) in elements.into_iter().zip(positions.iter()) {
                            values[at as usize] = Some(e);
                        }
                    }
                    None => {
                        let mut err = BytesMut::new();
                        match reply {
                            Ok(frame) if frame.first() == Some(&b'-') => {
                                err.extend_from_slice(frame)
                            }
                            Ok(_) => encode::error(
                                &mut err,
                                "ERR unexpected reply from upstream shard to a split MGET",
                            ),
                            Err(f) => failure(&mut err, *f, *shard),
                        }
                        made_error = true;
                        let err = err.freeze();
                        for &at in positions.iter() {
                            values[at as usize] = Some(err.clone());
                        }
                    }
                }
            }
            encode::array_header(out, keys);
            for v in values {
                match v {
                    Some(v) => out.extend_from_slice(&v),
                    None => out.extend_from_slice(b"$-1\r\n"),
                }
            }
            made_error
        }
        Join::Pairs | Join::Sum => {
            let mut sum: i64 = 0;
            for (reply, shard, _) in &replies {
                match reply {
                    Err(f) => {
                        failure(out, *f, *shard);
                        return true;
                    }
                    Ok(frame) if frame.first() == Some(&b'-') => {
                        out.extend_from_slice(frame);
                        return false;
                    }
                    Ok(frame) if join == Join::Sum => {
                        let n = frame
                            .strip_prefix(b":")
                            .and_then(|f| f.strip_suffix(b"\r\n"))
                            .and_then(|t| std::str::from_utf8(t).ok())
                            .and_then(|t| t.parse::<i64>().ok());
                        match n {
                            Some(n) => sum += n,
                            None => {
                                encode::error(
                                    out,
                                    "ERR unexpected reply from upstream shard to a split command",
                                );
                                return true;
                            }
                        }
                    }
                    Ok(_) => {}
                }
            }
            match join {
                Join::Sum => encode::integer(out, sum),
                _ => encode::simple(out, "OK"),
            }
            false
        }
    }
}

/// The elements of an array reply, each as its bytes; None if it is not an array.
fn array_elements(frame: &Bytes) -> Option<Vec<Bytes>> {
    let rest = frame.strip_prefix(b"*")?;
    let cr = memchr::memchr(b'\r', rest)?;
    let count: usize = std::str::from_utf8(&rest[..cr]).ok()?.parse().ok()?;
    let mut at = 1 + cr + 2;
    let mut scanner = FrameScanner::new();
    let limits = Limits::default();
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let n = scanner.scan(&frame[at..], &limits).ok()??;
        out.push(frame.slice(at..at + n));
        at += n;
    }
    Some(out)
}

/// Runs the command loop until the client goes, says QUIT, or breaks the protocol.
async fn run<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, config: Arc<RedisProxy>) {
    let limits = Limits::default();
    let mut parser = CommandParser::new();
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut out = BytesMut::with_capacity(16 * 1024);
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut closing = false;
    loop {
        while !closing && pending.len() < config.max_pipeline {
            let parsed = match parser.parse(&input, &limits) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    let mut reply = BytesMut::new();
                    encode::error(&mut reply, &format!("ERR Protocol error: {e}"));
                    pending.push_back(local(3, reply, true));
                    closing = true;
                    break;
                }
            };
            let now = Instant::now();
            match parsed {
                Parsed::Command { len } => {
                    let frame = input.split_to(len).freeze();
                    let p = dispatch(&config, &frame, parser.args(), now, &mut closing);
                    pending.push_back(p);
                }
                Parsed::Inline { len, args } => {
                    input.advance(len);
                    let mut encoded = BytesMut::new();
                    encode::command(&mut encoded, args.iter().map(|a| &a[..]));
                    let frame = encoded.freeze();
                    let mut again = CommandParser::new();
                    if let Ok(Some(Parsed::Command { .. })) = again.parse(&frame, &limits) {
                        let p = dispatch(&config, &frame, again.args(), now, &mut closing);
                        pending.push_back(p);
                    }
                }
                Parsed::Empty { len } => input.advance(len),
            }
        }
        while pending.front_mut().is_some_and(Pending::ready) {
            let p = pending.pop_front().expect("front");
            let (class, start) = (p.class, p.start);
            let error = p.write(&mut out);
            if let Some(m) = &config.metrics {
                if error {
                    m.errors[class].inc();
                }
                m.time[class].observe(start.elapsed());
            }
        }
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        if closing && pending.is_empty() {
            let _ = stream.shutdown().await;
            return;
        }
        if input.capacity() - input.len() < 4096 {
            input.reserve(16 * 1024);
        }
        let can_read = !closing && pending.len() < config.max_pipeline;
        tokio::select! {
            read = stream.read_buf(&mut input), if can_read => {
                if !matches!(read, Ok(n) if n > 0) {
                    // The client is gone (or half-closed): what it already sent is
                    // still answered, then the connection ends.
                    closing = true;
                }
            }
            () = async { pending.front_mut().expect("pending").settle().await }, if !pending.is_empty() => {}
        }
    }
}

fn local(class: usize, reply: BytesMut, error: bool) -> Pending {
    Pending {
        class,
        start: Instant::now(),
        body: Body::Local {
            reply: reply.freeze(),
            error,
        },
    }
}

fn error_reply(class: usize, message: &str) -> Pending {
    let mut reply = BytesMut::new();
    encode::error(&mut reply, message);
    local(class, reply, true)
}

/// The command name as the client wrote it, for messages (printable, bounded).
fn shown(name: &[u8]) -> String {
    String::from_utf8_lossy(&name[..name.len().min(64)])
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Decides what to do with one command and starts doing it.
fn dispatch(
    config: &RedisProxy,
    frame: &Bytes,
    args: &[Range<usize>],
    start: Instant,
    closing: &mut bool,
) -> Pending {
    let arg = |i: usize| &frame[args[i].clone()];
    let name = arg(0);
    let mut upper = [0u8; 24];
    let kind = commands::upper(name, &mut upper).map_or(
        Kind::Refused("the proxy does not know where its keys are"),
        commands::kind,
    );
    let class = commands::class(kind);
    if let Some(m) = &config.metrics {
        m.commands[class].inc();
    }
    let arity = || {
        error_reply(
            class,
            &format!(
                "ERR wrong number of arguments for '{}' command",
                shown(name)
            ),
        )
    };
    let body = match kind {
        Kind::Local(what) => return local_command(what, args.len(), arg, class, closing, &arity),
        Kind::Refused(why) => {
            return error_reply(
                class,
                &format!("ERR unsupported command '{}': {why}", shown(name)),
            )
        }
        Kind::Single => {
            if args.len() < 2 {
                return arity();
            }
            match one_shard(config, frame, args, &[1]) {
                Ok(part) => Body::One(part),
                Err(message) => return error_reply(class, &message),
            }
        }
        Kind::SameShard(keys) => {
            let positions: Vec<usize> = match keys {
                Keys::All => (1..args.len()).collect(),
                Keys::Two if args.len() >= 3 => vec![1, 2],
                Keys::Two => Vec::new(),
                Keys::Counted => {
                    let count = args
                        .get(2)
                        .and_then(|r| std::str::from_utf8(&frame[r.clone()]).ok())
                        .and_then(|t| t.parse::<usize>().ok());
                    match count {
                        Some(n) if 3 + n <= args.len() => (3..3 + n).collect(),
                        _ => return arity(),
                    }
                }
            };
            if positions.is_empty() {
                let message = match keys {
                    Keys::Counted => format!(
                        "ERR '{}' without keys cannot be routed to a shard",
                        shown(name)
                    ),
                    _ => format!(
                        "ERR wrong number of arguments for '{}' command",
                        shown(name)
                    ),
                };
                return error_reply(class, &message);
            }
            match one_shard(config, frame, args, &positions) {
                Ok(part) => Body::One(part),
                Err(message) => return error_reply(class, &message),
            }
        }
        Kind::Split(join) => {
            let step = if join == Join::Pairs { 2 } else { 1 };
            if args.len() < 2 || !(args.len() - 1).is_multiple_of(step) {
                return arity();
            }
            match split(config, frame, args, join, step) {
                Ok(body) => body,
                Err(message) => return error_reply(class, &message),
            }
        }
    };
    Pending { class, start, body }
}

fn local_command<'a>(
    what: Local,
    argc: usize,
    arg: impl Fn(usize) -> &'a [u8],
    class: usize,
    closing: &mut bool,
    arity: &dyn Fn() -> Pending,
) -> Pending {
    let mut reply = BytesMut::new();
    match what {
        Local::Ping if argc == 1 => encode::simple(&mut reply, "PONG"),
        Local::Ping | Local::Echo if argc == 2 => encode::bulk(&mut reply, arg(1)),
        Local::Ping | Local::Echo => return arity(),
        Local::Quit => {
            *closing = true;
            encode::simple(&mut reply, "OK");
        }
        Local::Select if argc != 2 => return arity(),
        Local::Select if arg(1) == b"0" => encode::simple(&mut reply, "OK"),
        Local::Select => return error_reply(
            class,
            "ERR SELECT is only allowed for database 0 through the proxy (its keys are sharded)",
        ),
        Local::Hello => {
            // RESP2 only: replies pass through unchanged, so the shards' connections
            // must speak what the client reads, and they speak RESP2.
            if argc >= 2 && arg(1) != b"2" {
                return error_reply(
                    class,
                    "NOPROTO sorry, this protocol version is not supported",
                );
            }
            let mut i = 2;
            while i < argc {
                let option = arg(i).to_ascii_uppercase();
                if option == b"SETNAME" && i + 1 < argc {
                    i += 2;
                    continue;
                }
                let message = match &option[..] {
                    b"AUTH" => "ERR HELLO AUTH is not supported by the proxy".to_string(),
                    _ => format!("ERR Syntax error in HELLO option '{}'", shown(arg(i))),
                };
                return error_reply(class, &message);
            }
            encode::array_header(&mut reply, 14);
            for (field, value) in [
                ("server", "sinew"),
                ("version", env!("CARGO_PKG_VERSION")),
                ("proto", ""),
                ("id", ""),
                ("mode", "proxy"),
                ("role", "master"),
                ("modules", ""),
            ] {
                encode::bulk(&mut reply, field.as_bytes());
                match field {
                    "proto" => encode::integer(&mut reply, 2),
                    "id" => encode::integer(&mut reply, 0),
                    "modules" => encode::array_header(&mut reply, 0),
                    _ => encode::bulk(&mut reply, value.as_bytes()),
                }
            }
        }
    }
    local(class, reply, false)
}

/// Routes a command whose keys (at `positions`) must all be on one shard; re-encodes it
/// when a key loses its prefix.
fn one_shard(
    config: &RedisProxy,
    frame: &Bytes,
    args: &[Range<usize>],
    positions: &[usize],
) -> Result<Part, String> {
    let mut chosen: Option<(&Arc<Target>, ShardKey)> = None;
    let mut cuts = false;
    for &p in positions {
        let key = &frame[args[p].clone()];
        let routed = config.route(key).ok_or_else(|| no_route(key))?;
        cuts |= routed.cut > 0;
        let shard = routed.target.shard(config.hash(&key[routed.cut..]));
        let here = (routed.target, ShardKey::of(shard));
        match &chosen {
            None => chosen = Some(here),
            Some((t, s)) if Arc::ptr_eq(t, here.0) && *s == here.1 => {}
            Some(_) => {
                return Err(format!(
                    "ERR '{}' needs its keys on one shard, and they are not",
                    shown(&frame[args[0].clone()])
                ))
            }
        }
    }
    let (target, shard) = chosen.expect("at least one key");
    let frame = if cuts {
        rebuild(config, frame, args, positions)
    } else {
        frame.clone()
    };
    Ok(send(config, target, shard, frame, Vec::new()))
}

/// Where a key went, comparable.
#[derive(Clone)]
enum ShardKey {
    Up(Arc<sinew_upstream::EndpointState>),
    Down(SocketAddr),
    None,
}

impl PartialEq for ShardKey {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (ShardKey::Up(a), ShardKey::Up(b)) => Arc::ptr_eq(a, b),
            (ShardKey::Down(a), ShardKey::Down(b)) => a == b,
            (ShardKey::None, ShardKey::None) => true,
            _ => false,
        }
    }
}

impl ShardKey {
    fn of(shard: Shard) -> ShardKey {
        match shard {
            Shard::Up(s) => ShardKey::Up(s),
            Shard::Down(a) => ShardKey::Down(a),
            Shard::None => ShardKey::None,
        }
    }
    fn address(&self) -> Option<SocketAddr> {
        match self {
            ShardKey::Up(s) => Some(s.address),
            ShardKey::Down(a) => Some(*a),
            ShardKey::None => None,
        }
    }
}

fn send(
    config: &RedisProxy,
    target: &Arc<Target>,
    shard: ShardKey,
    frame: Bytes,
    keys: Vec<u32>,
) -> Part {
    let address = shard.address();
    let slot = match shard {
        ShardKey::Up(state) => Slot::Waiting(upstream::send(
            target.cluster(),
            &state,
            frame,
            config.op_timeout,
        )),
        ShardKey::Down(_) | ShardKey::None => Slot::Got(Err(Failure::Unavailable)),
    };
    Part {
        slot,
        shard: address,
        keys,
    }
}

fn no_route(key: &[u8]) -> String {
    format!(
        "ERR no route for key '{}': no prefix route matches and there is no catch-all cluster",
        shown(key)
    )
}

/// The command with the keys at `positions` cut by their routes' `remove_prefix`.
fn rebuild(
    config: &RedisProxy,
    frame: &Bytes,
    args: &[Range<usize>],
    positions: &[usize],
) -> Bytes {
    let mut out = BytesMut::with_capacity(frame.len());
    let parts = args.iter().enumerate().map(|(i, r)| {
        let a = &frame[r.clone()];
        if positions.contains(&i) {
            let cut = config.route(a).map_or(0, |r| r.cut);
            &a[cut..]
        } else {
            a
        }
    });
    encode::command(&mut out, parts);
    out.freeze()
}

/// Splits MGET/MSET/DEL/...: keys grouped by shard, one command per shard with that
/// shard's keys (and values), in the client's order within each.
fn split(
    config: &RedisProxy,
    frame: &Bytes,
    args: &[Range<usize>],
    join: Join,
    step: usize,
) -> Result<Body, String> {
    struct Group<'a> {
        target: &'a Arc<Target>,
        shard: ShardKey,
        /// Argument indexes of this group's keys.
        args: Vec<usize>,
        keys: Vec<u32>,
    }
    let mut groups: Vec<Group<'_>> = Vec::new();
    let mut cuts = false;
    let key_count = (args.len() - 1) / step;
    for k in 0..key_count {
        let at = 1 + k * step;
        let key = &frame[args[at].clone()];
        let routed = config.route(key).ok_or_else(|| no_route(key))?;
        cuts |= routed.cut > 0;
        let shard = ShardKey::of(routed.target.shard(config.hash(&key[routed.cut..])));
        match groups
            .iter_mut()
            .find(|g| Arc::ptr_eq(g.target, routed.target) && g.shard == shard)
        {
            Some(g) => {
                g.args.push(at);
                g.keys.push(k as u32);
            }
            None => groups.push(Group {
                target: routed.target,
                shard,
                args: vec![at],
                keys: vec![k as u32],
            }),
        }
    }
    if groups.len() == 1 && !cuts {
        // All on one shard as sent: the command goes as it is, its reply comes back as is.
        let g = groups.pop().expect("one group");
        return Ok(Body::One(send(
            config,
            g.target,
            g.shard,
            frame.clone(),
            Vec::new(),
        )));
    }
    let name = &frame[args[0].clone()];
    let parts = groups
        .into_iter()
        .map(|g| {
            let mut out = BytesMut::new();
            encode::array_header(&mut out, 1 + g.args.len() * step);
            encode::bulk(&mut out, name);
            for &at in &g.args {
                let key = &frame[args[at].clone()];
                let cut = config.route(key).map_or(0, |r| r.cut);
                encode::bulk(&mut out, &key[cut..]);
                if step == 2 {
                    encode::bulk(&mut out, &frame[args[at + 1].clone()]);
                }
            }
            send(config, g.target, g.shard, out.freeze(), g.keys)
        })
        .collect();
    Ok(Body::Split {
        join,
        keys: key_count,
        parts,
    })
}
