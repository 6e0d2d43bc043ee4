//! Active health checks: every `interval` (plus jitter) the cluster's health task checks
//! each endpoint on a connection of its own — an HTTP GET, a TCP connect with optional
//! bytes out and back, or a `grpc.health.v1.Health/Check` call — and flips the endpoint's
//! health once the healthy or unhealthy threshold is reached.
//!
//! Checks connect the way requests do ([`connect`](crate::connect::connect)), so a TLS
//! cluster is checked over TLS with its own SNI and roots.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use sinew_config::health::{HealthCheckCodec, StatusRange};
use sinew_config::model::{HealthCheck, UpstreamProtocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::connect::{connect, UpstreamIo};
use crate::pool::EndpointState;
use crate::request_body::RequestBody;

/// Why a check failed, and whether the endpoint itself said it is unhealthy (an answer)
/// rather than not answering (a connection failure, a reset or a timeout). Envoy takes an
/// endpoint out on one such answer; Sinew does when `answers_fail_at_once` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub why: String,
    pub answered: bool,
}

impl Failure {
    fn network(why: impl Into<String>) -> Self {
        Failure {
            why: why.into(),
            answered: false,
        }
    }
    fn answer(why: impl Into<String>) -> Self {
        Failure {
            why: why.into(),
            answered: true,
        }
    }
}

impl From<String> for Failure {
    fn from(why: String) -> Self {
        Failure::network(why)
    }
}

/// What a check does, compiled from its config.
enum Kind {
    Http {
        path: String,
        host: String,
        expected: Vec<StatusRange>,
        /// Failing statuses that only count towards the unhealthy threshold.
        retriable: Vec<StatusRange>,
        /// Speak HTTP/2 to the endpoint unless ALPN says otherwise.
        http2: bool,
        /// Headers set on the request after Host and User-Agent (which they may replace).
        headers: Vec<(http::HeaderName, http::HeaderValue)>,
        /// Send no User-Agent.
        no_user_agent: bool,
    },
    Tcp {
        send: Vec<u8>,
        receive: Vec<Vec<u8>>,
    },
    Grpc {
        authority: String,
        request: Bytes,
    },
}

/// One cluster's active health check.
pub struct ActiveChecker {
    pub(crate) timeout: Duration,
    interval: Duration,
    jitter: Duration,
    jitter_percent: u32,
    pub(crate) healthy_threshold: u32,
    pub(crate) unhealthy_threshold: u32,
    pub(crate) answers_fail_at_once: bool,
    kind: Kind,
}

impl ActiveChecker {
    /// Compiles a validated config. `cluster` names the default Host / `:authority`.
    pub fn new(cfg: &HealthCheck, cluster: &str, protocol: UpstreamProtocol) -> Self {
        let kind = if let Some(http) = &cfg.http_health_check {
            Kind::Http {
                path: http.path.clone(),
                host: http.host.clone().unwrap_or_else(|| cluster.to_string()),
                expected: http.expected_statuses.clone(),
                retriable: http.retriable_statuses.clone(),
                http2: match http.codec_client_type {
                    Some(codec) => codec == HealthCheckCodec::Http2,
                    None => protocol == UpstreamProtocol::Http2,
                },
                // Validated already: names are tokens, values visible ASCII.
                headers: http
                    .request_headers_to_add
                    .iter()
                    .filter_map(|h| {
                        Some((
                            http::HeaderName::from_bytes(h.name.as_bytes()).ok()?,
                            http::HeaderValue::from_str(&h.value).ok()?,
                        ))
                    })
                    .collect(),
                no_user_agent: http
                    .request_headers_to_remove
                    .iter()
                    .any(|h| h.eq_ignore_ascii_case("user-agent")),
            }
        } else if let Some(grpc) = &cfg.grpc_health_check {
            Kind::Grpc {
                authority: grpc
                    .authority
                    .clone()
                    .unwrap_or_else(|| cluster.to_string()),
                request: grpc_frame(&health_check_request(&grpc.service_name)),
            }
        } else {
            let tcp = cfg.tcp_health_check.clone().unwrap_or_default();
            Kind::Tcp {
                // Validated as hex already.
                send: tcp
                    .send
                    .map(|p| p.bytes().unwrap_or_default())
                    .unwrap_or_default(),
                receive: tcp
                    .receive
                    .iter()
                    .map(|p| p.bytes().unwrap_or_default())
                    .collect(),
            }
        };
        Self {
            timeout: cfg.timeout,
            interval: cfg.interval,
            jitter: cfg.interval_jitter,
            jitter_percent: cfg.interval_jitter_percent,
            healthy_threshold: cfg.healthy_threshold,
            unhealthy_threshold: cfg.unhealthy_threshold,
            answers_fail_at_once: cfg.answers_fail_at_once,
            kind,
        }
    }

    /// The wait before the next round: the interval plus up to `interval_jitter` plus up
    /// to `interval_jitter_percent` of the interval.
    pub(crate) fn next_delay(&self) -> Duration {
        let jitter = self.jitter.as_millis() as u64
            + self.interval.as_millis() as u64 * u64::from(self.jitter_percent) / 100;
        let extra = if jitter == 0 {
            0
        } else {
            fastrand::u64(0..=jitter)
        };
        self.interval + Duration::from_millis(extra)
    }

    /// Checks one endpoint; `Err` says why it failed (for the log) and how.
    pub(crate) async fn check(&self, endpoint: &Arc<EndpointState>) -> Result<(), Failure> {
        match tokio::time::timeout(self.timeout, self.check_once(endpoint)).await {
            Ok(result) => result,
            Err(_) => Err(Failure::network(format!(
                "no answer within {:?}",
                self.timeout
            ))),
        }
    }

    async fn check_once(&self, endpoint: &Arc<EndpointState>) -> Result<(), Failure> {
        let settings = endpoint.settings();
        let io = connect(endpoint.address, self.timeout, settings.tls.as_ref(), None)
            .await
            .map_err(|e| e.to_string())?;
        let tls = settings.tls.is_some();
        match &self.kind {
            Kind::Tcp { send, receive } => Ok(tcp_check(io, send, receive).await?),
            Kind::Http {
                path,
                host,
                expected,
                retriable,
                http2,
                headers,
                no_user_agent,
            } => {
                let use_h2 = match io.alpn() {
                    Some(alpn) => alpn == b"h2",
                    None => *http2,
                };
                let mut request = Request::builder().method(Method::GET);
                if !no_user_agent {
                    request = request.header(http::header::USER_AGENT, "sinew-health-check");
                }
                let request = if use_h2 {
                    request.uri(absolute(tls, host, path)?)
                } else {
                    request
                        .uri(path.as_str())
                        .header(http::header::HOST, host.as_str())
                };
                let mut request = request
                    .body(RequestBody::Empty)
                    .map_err(|e| e.to_string())?;
                for (name, value) in headers {
                    if use_h2 && name == http::header::HOST {
                        // HTTP/2 carries the host as :authority.
                        *request.uri_mut() = absolute(tls, value.to_str().unwrap_or(host), path)?;
                        continue;
                    }
                    request.headers_mut().insert(name.clone(), value.clone());
                }
                let response = exchange(io, request, use_h2).await?;
                let status = response.status().as_u16();
                let within = |ranges: &[StatusRange]| {
                    ranges.iter().any(|r| (r.start..r.end).contains(&status))
                };
                if within(expected) {
                    Ok(())
                } else if within(retriable) {
                    Err(Failure::network(format!("status {status} (retriable)")))
                } else {
                    Err(Failure::answer(format!("status {status}")))
                }
            }
            Kind::Grpc { authority, request } => {
                if tls && io.alpn() != Some(b"h2") {
                    return Err(Failure::network("upstream did not negotiate h2 over ALPN"));
                }
                let request = Request::builder()
                    .method(Method::POST)
                    .uri(absolute(tls, authority, "/grpc.health.v1.Health/Check")?)
                    .header(http::header::CONTENT_TYPE, "application/grpc")
                    .header(http::header::TE, "trailers")
                    .header(http::header::USER_AGENT, "sinew-health-check")
                    .body(RequestBody::Full(Some(request.clone())))
                    .map_err(|e| e.to_string())?;
                let response = exchange(io, request, true).await?;
                if response.status() != StatusCode::OK {
                    return Err(Failure::answer(format!("status {}", response.status())));
                }
                let (parts, body) = response.into_parts();
                let collected = body.collect().await.map_err(|e| e.to_string())?;
                // A trailers-only answer carries grpc-status in the headers.
                let grpc_status = collected
                    .trailers()
                    .and_then(|t| t.get("grpc-status"))
                    .or_else(|| parts.headers.get("grpc-status"))
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("missing")
                    .to_string();
                if grpc_status != "0" {
                    return Err(Failure::answer(format!("grpc-status {grpc_status}")));
                }
                match serving_status(collected.to_bytes()) {
                    Some(SERVING) => Ok(()),
                    Some(other) => Err(Failure::answer(format!("serving status {other}"))),
                    None => Err(Failure::answer("malformed HealthCheckResponse")),
                }
            }
        }
    }
}

fn absolute(tls: bool, authority: &str, path: &str) -> Result<Uri, String> {
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{authority}{path}")
        .parse()
        .map_err(|e| format!("bad check URI: {e}"))
}

/// Sends one request on a fresh connection and returns the response head.
async fn exchange(
    io: UpstreamIo,
    request: Request<RequestBody>,
    http2: bool,
) -> Result<http::Response<hyper::body::Incoming>, String> {
    let io = TokioIo::new(io);
    if http2 {
        let (mut sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())
    } else {
        let (mut sender, conn) = http1::handshake(io).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Sends `send`, then reads until every block of `receive` has been seen in order.
async fn tcp_check(mut io: UpstreamIo, send: &[u8], receive: &[Vec<u8>]) -> Result<(), String> {
    if !send.is_empty() {
        io.write_all(send).await.map_err(|e| e.to_string())?;
        io.flush().await.map_err(|e| e.to_string())?;
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !contains_in_order(&got, receive) {
        let n = io.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!(
                "connection closed before the expected bytes (got {} bytes)",
                got.len()
            ));
        }
        got.extend_from_slice(&buf[..n]);
        if got.len() > 64 * 1024 {
            return Err("expected bytes not in the first 64 KiB".into());
        }
    }
    Ok(())
}

/// Envoy's "fuzzy" match: each block found, in order, not necessarily adjacent.
fn contains_in_order(haystack: &[u8], blocks: &[Vec<u8>]) -> bool {
    let mut rest = haystack;
    for block in blocks {
        if block.is_empty() {
            continue;
        }
        match rest
            .windows(block.len())
            .position(|w| w == block.as_slice())
        {
            Some(at) => rest = &rest[at + block.len()..],
            None => return false,
        }
    }
    true
}

// The two messages of grpc.health.v1 are encoded by hand: each has one field, and pulling
// in prost and a build step for them would cost more than these few lines.
//
//   message HealthCheckRequest  { string service = 1; }
//   message HealthCheckResponse { ServingStatus status = 1; }  // SERVING = 1

const SERVING: u64 = 1;

/// `HealthCheckRequest { service }` in protobuf wire format (field 1, length-delimited).
fn health_check_request(service: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(service.len() + 6);
    if !service.is_empty() {
        out.push(0x0a);
        put_varint(&mut out, service.len() as u64);
        out.extend_from_slice(service.as_bytes());
    }
    out
}

/// A gRPC length-prefixed message: uncompressed flag, 4-byte big-endian length, message.
fn grpc_frame(message: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(5 + message.len());
    out.push(0);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    Bytes::from(out)
}

/// The `status` of the first message of a gRPC response body (0, UNKNOWN, if absent).
fn serving_status(mut body: Bytes) -> Option<u64> {
    if body.len() < 5 || body[0] != 0 {
        return None;
    }
    body.advance(1);
    let len = body.get_u32() as usize;
    if body.len() < len {
        return None;
    }
    let mut msg = &body[..len];
    let mut status = 0;
    while !msg.is_empty() {
        let key = get_varint(&mut msg)?;
        match (key >> 3, key & 7) {
            (1, 0) => status = get_varint(&mut msg)?,
            // Skip fields a newer server may add.
            (_, 0) => {
                get_varint(&mut msg)?;
            }
            (_, 1) => msg = msg.get(8..)?,
            (_, 2) => {
                let n = get_varint(&mut msg)? as usize;
                msg = msg.get(n..)?;
            }
            (_, 5) => msg = msg.get(4..)?,
            _ => return None,
        }
    }
    Some(status)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(input: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = input.split_first()?;
        *input = rest;
        v |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_health_check_request_as_protobuf() {
        assert_eq!(health_check_request(""), b"");
        assert_eq!(health_check_request("svc"), b"\x0a\x03svc");
        let frame = grpc_frame(b"\x0a\x03svc");
        assert_eq!(&frame[..], b"\x00\x00\x00\x00\x05\x0a\x03svc");
    }

    #[test]
    fn decodes_the_serving_status_skipping_unknown_fields() {
        assert_eq!(serving_status(grpc_frame(b"\x08\x01")), Some(1));
        assert_eq!(serving_status(grpc_frame(b"\x08\x02")), Some(2));
        assert_eq!(
            serving_status(grpc_frame(b"")),
            Some(0),
            "default is UNKNOWN"
        );
        assert_eq!(serving_status(grpc_frame(b"\x12\x02hi\x08\x01")), Some(1));
        assert_eq!(
            serving_status(Bytes::from_static(b"\x01\x00\x00\x00\x00")),
            None
        );
        assert_eq!(
            serving_status(Bytes::from_static(b"\x00\x00\x00\x00\x09\x08")),
            None
        );
    }

    #[test]
    fn tcp_receive_blocks_match_in_order_not_adjacent() {
        let blocks = vec![b"PO".to_vec(), b"NG".to_vec()];
        assert!(contains_in_order(b"+PO-NG", &blocks));
        assert!(!contains_in_order(b"NG PO", &blocks));
        assert!(contains_in_order(b"", &[]));
    }
}
