//! The ZooKeeper registry, as Dubbo uses it: each provider of an interface writes a node
//!
//! ```text
//! /dubbo/<interface>/providers/<url-encoded provider URL>
//! dubbo://10.0.0.7:20880/com.example.DemoService?version=1.0.0&weight=100&...
//! ```
//!
//! (ephemeral, so it goes with the provider's session). The interface is the service's
//! name; the URL's host and port are the instance's address; `weight` its weight; and
//! `version`, `group`, `application` and `zone` parameters its labels.
//!
//! It speaks ZooKeeper's own binary protocol (jute over TCP) for the three calls it needs
//! (connect, getChildren with a watch, ping), so no JVM and no C client are involved.
//! Children are read with watches; a watch firing, or a two-second tick (for paths that
//! do not exist yet, which cannot be watched with getChildren), makes it read again.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{InstanceReporter, Reports};
use crate::services::Instance;

const SESSION_TIMEOUT_MS: i32 = 10_000;
const GET_CHILDREN: i32 = 8;
const PING: i32 = 11;
const NO_NODE: i32 = -101;
const WATCH_XID: i32 = -1;
const PING_XID: i32 = -2;

/// Follows `root` (normally `/dubbo`) on the first of `servers` that answers.
pub async fn watch(servers: Vec<String>, root: String, reports: Reports) {
    let source = format!("zookeeper {root}");
    let mut attempt = 0usize;
    let mut delay = Duration::from_millis(100);
    loop {
        let server = &servers[attempt % servers.len()];
        match follow(server, &root, &source, &reports, &mut delay).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(server = %server, "zookeeper registry: {e}; retrying in {delay:?}")
            }
        }
        attempt += 1;
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// One session. `Ok` only when the builder has gone away.
async fn follow(
    server: &str,
    root: &str,
    source: &str,
    reports: &Reports,
    delay: &mut Duration,
) -> Result<(), String> {
    let mut session = Session::connect(server).await?;
    *delay = Duration::from_millis(100);
    let mut reporter = InstanceReporter::new(source, reports);
    loop {
        let mut services: BTreeMap<String, Vec<Instance>> = BTreeMap::new();
        for interface in session.children(root).await?.unwrap_or_default() {
            let providers = format!("{}/{interface}/providers", root.trim_end_matches('/'));
            for node in session.children(&providers).await?.unwrap_or_default() {
                match provider(&node) {
                    Some(instance) => services
                        .entry(interface.clone())
                        .or_default()
                        .push(instance),
                    None => tracing::warn!(node = %node, "zookeeper registry: not a provider URL"),
                }
            }
        }
        if !reporter.report(services) {
            return Ok(());
        }
        session.wait_for_change(Duration::from_secs(2)).await?;
    }
}

/// A provider node's name as an instance: `dubbo%3A%2F%2F10.0.0.7%3A20880%2F...`.
pub fn provider(node: &str) -> Option<Instance> {
    let url = percent_decode(node)?;
    let (_, rest) = url.split_once("://")?;
    let (authority, path_and_query) = rest.split_once('/').unwrap_or((rest, ""));
    let address: std::net::SocketAddr = authority.parse().ok()?;
    let query = path_and_query.split_once('?').map_or("", |(_, q)| q);
    let mut labels = BTreeMap::new();
    let mut weight = 1;
    for pair in query.split('&') {
        let Some((key, value)) = pair.split_once('=') else {
            continue;
        };
        match key {
            "weight" => weight = value.parse().ok().filter(|w| *w > 0)?,
            "version" | "group" | "application" | "zone" if !value.is_empty() => {
                labels.insert(key.to_string(), value.to_string());
            }
            _ => {}
        }
    }
    Some(Instance {
        address: address.to_string(),
        labels,
        weight,
    })
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A ZooKeeper session over one connection, used one request at a time.
struct Session {
    stream: TcpStream,
    /// Bytes read but not yet taken as a frame: reading is cancelled at every ping
    /// interval, and a frame may arrive across two reads.
    pending: Vec<u8>,
    xid: i32,
    /// A watch fired while waiting for a reply: read everything again.
    changed: bool,
}

/// How long a request's reply may take. A server that has not answered within the
/// session timeout has expired the session anyway; reconnecting is the way on.
const REPLY_TIMEOUT: Duration = Duration::from_millis(SESSION_TIMEOUT_MS as u64);

impl Session {
    async fn connect(server: &str) -> Result<Session, String> {
        let stream = tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(server))
            .await
            .map_err(|_| format!("connecting to {server} timed out"))?
            .map_err(|e| format!("cannot connect to {server}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut session = Session {
            stream,
            pending: Vec::new(),
            xid: 0,
            changed: false,
        };
        // ConnectRequest: protocolVersion, lastZxidSeen, timeOut, sessionId, passwd.
        let mut request = Vec::new();
        request.extend_from_slice(&0i32.to_be_bytes());
        request.extend_from_slice(&0i64.to_be_bytes());
        request.extend_from_slice(&SESSION_TIMEOUT_MS.to_be_bytes());
        request.extend_from_slice(&0i64.to_be_bytes());
        put_buffer(&mut request, &[0u8; 16]);
        session.write_frame(&request).await?;
        let reply = session.reply().await?;
        if reply.len() < 16 {
            return Err("the server refused the session".into());
        }
        Ok(session)
    }

    /// The children of `path`, with a watch set; None when it does not exist.
    async fn children(&mut self, path: &str) -> Result<Option<Vec<String>>, String> {
        self.xid += 1;
        let xid = self.xid;
        let mut request = Vec::new();
        request.extend_from_slice(&xid.to_be_bytes());
        request.extend_from_slice(&GET_CHILDREN.to_be_bytes());
        put_buffer(&mut request, path.as_bytes());
        request.push(1); // watch
        self.write_frame(&request).await?;
        loop {
            let reply = self.reply().await?;
            let mut r = Reader::new(&reply);
            let (reply_xid, _zxid, err) = (r.i32()?, r.i64()?, r.i32()?);
            match reply_xid {
                WATCH_XID => self.changed = true,
                PING_XID => {}
                x if x == xid => {
                    if err == NO_NODE {
                        return Ok(None);
                    }
                    if err != 0 {
                        return Err(format!("getChildren {path}: error {err}"));
                    }
                    let count = r.i32()?;
                    let mut names = Vec::new();
                    for _ in 0..count.max(0) {
                        names.push(r.string()?);
                    }
                    return Ok(Some(names));
                }
                other => return Err(format!("unexpected reply xid {other}")),
            }
        }
    }

    /// Returns when a watch fires or `tick` passes, pinging to keep the session alive.
    async fn wait_for_change(&mut self, tick: Duration) -> Result<(), String> {
        if std::mem::take(&mut self.changed) {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + tick;
        let ping_every = Duration::from_millis(SESSION_TIMEOUT_MS as u64 / 3);
        loop {
            let until_ping = tokio::time::Instant::now() + ping_every;
            let wake = deadline.min(until_ping);
            match tokio::time::timeout_at(wake, self.read_frame()).await {
                Ok(frame) => {
                    let frame = frame?;
                    let mut r = Reader::new(&frame);
                    if r.i32()? == WATCH_XID {
                        return Ok(());
                    }
                }
                Err(_) if tokio::time::Instant::now() >= deadline => return Ok(()),
                Err(_) => {
                    let mut ping = Vec::new();
                    ping.extend_from_slice(&PING_XID.to_be_bytes());
                    ping.extend_from_slice(&PING.to_be_bytes());
                    self.write_frame(&ping).await?;
                }
            }
        }
    }

    async fn write_frame(&mut self, body: &[u8]) -> Result<(), String> {
        let mut frame = Vec::with_capacity(body.len() + 4);
        frame.extend_from_slice(&(body.len() as i32).to_be_bytes());
        frame.extend_from_slice(body);
        self.stream
            .write_all(&frame)
            .await
            .map_err(|e| e.to_string())
    }

    /// The next frame while a reply is due: within [`REPLY_TIMEOUT`], or an error.
    async fn reply(&mut self) -> Result<Vec<u8>, String> {
        tokio::time::timeout(REPLY_TIMEOUT, self.read_frame())
            .await
            .map_err(|_| format!("no reply within {REPLY_TIMEOUT:?}"))?
    }

    /// The next frame. Cancel-safe: what was read before a cancellation stays in
    /// `pending` for the next call.
    async fn read_frame(&mut self) -> Result<Vec<u8>, String> {
        loop {
            if let Some(frame) = take_frame(&mut self.pending)? {
                return Ok(frame);
            }
            let read = self
                .stream
                .read_buf(&mut self.pending)
                .await
                .map_err(|e| format!("connection lost: {e}"))?;
            if read == 0 {
                return Err("connection lost: closed by the server".into());
            }
        }
    }
}

/// Takes one length-prefixed frame off the front of `pending`, if it is all there.
fn take_frame(pending: &mut Vec<u8>) -> Result<Option<Vec<u8>>, String> {
    let Some(prefix) = pending.first_chunk::<4>() else {
        return Ok(None);
    };
    let length = i32::from_be_bytes(*prefix);
    if !(0..=16 << 20).contains(&length) {
        return Err(format!("frame of {length} bytes"));
    }
    let end = 4 + length as usize;
    if pending.len() < end {
        return Ok(None);
    }
    let frame = pending[4..end].to_vec();
    pending.drain(..end);
    Ok(Some(frame))
}

fn put_buffer(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Reads jute's big-endian fields.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.bytes.len() < n {
            return Err("a short reply".into());
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn string(&mut self) -> Result<String, String> {
        let n = self.i32()?;
        let bytes = self.take(n.max(0) as usize)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| "a name that is not UTF-8".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_taken_only_when_whole_and_the_rest_is_kept() {
        let mut pending = vec![0, 0, 0, 3, b'a', b'b'];
        assert_eq!(take_frame(&mut pending), Ok(None));
        pending.extend_from_slice(&[b'c', 0, 0]);
        assert_eq!(take_frame(&mut pending), Ok(Some(b"abc".to_vec())));
        assert_eq!(pending, [0, 0]);
        assert_eq!(take_frame(&mut pending), Ok(None));
        let mut bad = (-1i32).to_be_bytes().to_vec();
        assert!(take_frame(&mut bad).is_err());
    }

    #[test]
    fn a_dubbo_provider_url_is_an_instance_with_its_labels_and_weight() {
        let node = "dubbo%3A%2F%2F10.0.0.7%3A20880%2Fcom.example.DemoService%3Fanyhost%3Dtrue%26application%3Ddemo%26version%3D1.0.0%26weight%3D50%26methods%3DsayHello";
        let i = provider(node).unwrap();
        assert_eq!(i.address, "10.0.0.7:20880");
        assert_eq!(i.weight, 50);
        assert_eq!(i.labels["version"], "1.0.0");
        assert_eq!(i.labels["application"], "demo");
        assert!(!i.labels.contains_key("methods"));
        assert!(provider("not-a-url").is_none());
        assert!(
            provider("dubbo%3A%2F%2Fhost-name%3A1%2Fx").is_none(),
            "names are not resolved"
        );
    }
}
