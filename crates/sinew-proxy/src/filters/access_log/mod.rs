//! Access logs (Envoy's `access_log` on the HTTP connection manager and the TCP proxy).
//!
//! The request path does as little as it can: it copies the few fields the configured
//! formats name into an [`Entry`], runs the cheap filters, and offers the entry to each
//! log's bounded queue without waiting. A writer thread per sink formats the entries and
//! writes them in batches; when a queue is full the entry is dropped and counted
//! ([`dropped_entries`]). A listener without `access_log` has `None` and pays nothing.
//!
//! Formats are parsed once, when the config is compiled (`sinew_config::access_log`).

pub(crate) mod logged;
mod render;
mod sink;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::HeaderName;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Version};
use sinew_config::access_log::{
    self as config, AccessLogFilter, Comparison, HeaderSource, Operator, Part,
};

use crate::stream::flags::ResponseFlags;
use sink::Sink;
pub use sink::{dropped_entries, reopen_files};

/// The access logs of one listener, compiled.
pub struct AccessLogs {
    logs: Vec<CompiledLog>,
    /// Request headers some format names; only these are copied into an entry.
    request_headers: Vec<HeaderName>,
    response_headers: Vec<HeaderName>,
}

/// One configured log: its format, its filter, and where it writes.
pub(crate) struct CompiledLog {
    format: Arc<Format>,
    filter: Option<Filter>,
    sink: Arc<Sink>,
}

/// A format string compiled into parts, or a JSON object of them.
pub(crate) enum Format {
    Text(Vec<Part>),
    Json(Vec<(String, Vec<Part>)>),
}

enum Filter {
    Status(Comparison),
    Duration(Comparison),
    /// Keep this fraction of entries (0.0 to 1.0).
    Sample(f64),
    And(Vec<Filter>),
    Or(Vec<Filter>),
}

/// What one request (or TCP connection) leaves behind for the log. Built on the request
/// path from cheap copies (header values share their buffers); formatted off it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub start: SystemTime,
    pub method: Option<Method>,
    pub path: Option<PathAndQuery>,
    pub authority: Option<HeaderValue>,
    pub tls: bool,
    /// None for a TCP connection or an RPC call.
    pub version: Option<Version>,
    /// An RPC call's protocol (`bolt`), for `%PROTOCOL%`; None otherwise.
    pub protocol: Option<&'static str>,
    pub status: Option<u16>,
    pub flags: ResponseFlags,
    /// `%RESPONSE_CODE_DETAILS%` (only authorization denials say, for now).
    pub details: Option<std::sync::Arc<str>>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// From the start to the last byte sent.
    pub duration: Duration,
    /// From the start to the response's headers.
    pub response_duration: Option<Duration>,
    pub upstream_host: Option<SocketAddr>,
    pub upstream_cluster: Option<Arc<str>>,
    pub downstream_remote: SocketAddr,
    pub downstream_local: SocketAddr,
    /// The client certificate's identity (mTLS), for the `%DOWNSTREAM_PEER_*%` operators.
    pub peer_identity: Option<Arc<sinew_identity::PeerIdentity>>,
    pub request_headers: Vec<(HeaderName, HeaderValue)>,
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
}

impl AccessLogs {
    /// Compiles a listener's `access_log` list; `None` when there is none. The formats
    /// were checked at load, so a parse failure here cannot happen; it falls back to the
    /// default format rather than panicking.
    pub fn compile(logs: Option<&[config::AccessLog]>) -> Option<Arc<AccessLogs>> {
        let logs = logs.filter(|l| !l.is_empty())?;
        let parse = |f: &str| {
            config::parse(f).unwrap_or_else(|_| {
                config::parse(config::DEFAULT_FORMAT).expect("the default format parses")
            })
        };
        let mut compiled = Vec::with_capacity(logs.len());
        for log in logs {
            let format = match (&log.format, &log.json_format) {
                (_, Some(fields)) => Format::Json(
                    fields
                        .iter()
                        .map(|(key, f)| (key.clone(), parse(f)))
                        .collect(),
                ),
                (Some(f), None) => Format::Text(parse(f)),
                (None, None) => Format::Text(parse(config::DEFAULT_FORMAT)),
            };
            compiled.push(CompiledLog {
                format: Arc::new(format),
                filter: log.filter.as_ref().map(Filter::compile),
                sink: Sink::for_path(&log.path, log.queue_size),
            });
        }
        let mut request_headers = Vec::new();
        let mut response_headers = Vec::new();
        for log in &compiled {
            for part in log.format.parts() {
                let (sources, list) = match part {
                    Part::Op(Operator::Request { sources, .. }) => (sources, &mut request_headers),
                    Part::Op(Operator::Response { sources, .. }) => {
                        (sources, &mut response_headers)
                    }
                    _ => continue,
                };
                for source in sources {
                    if let HeaderSource::Header(name) = source {
                        if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
                            if !list.contains(&name) {
                                list.push(name);
                            }
                        }
                    }
                }
            }
        }
        Some(Arc::new(AccessLogs {
            logs: compiled,
            request_headers,
            response_headers,
        }))
    }

    /// Copies the request headers the formats name (value clones share hyper's buffer).
    pub fn capture_request_headers(&self, headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
        capture(&self.request_headers, headers)
    }

    pub fn capture_response_headers(&self, headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
        capture(&self.response_headers, headers)
    }

    /// Whether any format logs `x-request-id`, so the handler must make sure one exists
    /// before the entry is taken.
    pub fn wants_request_header(&self, name: &HeaderName) -> bool {
        self.request_headers.contains(name)
    }

    /// Offers a finished entry to every log whose filter keeps it. Never waits.
    pub fn record(&self, entry: Entry) {
        let entry = Arc::new(entry);
        for log in &self.logs {
            if log.filter.as_ref().is_none_or(|f| f.keeps(&entry)) {
                log.sink.offer(log.format.clone(), entry.clone());
            }
        }
    }

    /// Entries dropped because this listener's queues were full (summed over its logs).
    pub fn dropped(&self) -> u64 {
        self.logs.iter().map(|l| l.sink.dropped()).sum()
    }
}

fn capture(names: &[HeaderName], headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    if names.is_empty() {
        return Vec::new();
    }
    names
        .iter()
        .filter_map(|n| headers.get(n).map(|v| (n.clone(), v.clone())))
        .collect()
}

impl Format {
    fn parts(&self) -> Box<dyn Iterator<Item = &Part> + '_> {
        match self {
            Format::Text(parts) => Box::new(parts.iter()),
            Format::Json(fields) => Box::new(fields.iter().flat_map(|(_, p)| p.iter())),
        }
    }
}

impl Filter {
    fn compile(f: &AccessLogFilter) -> Filter {
        if let Some(s) = &f.status_code_filter {
            Filter::Status(s.comparison.clone())
        } else if let Some(d) = &f.duration_filter {
            Filter::Duration(d.comparison.clone())
        } else if let Some(r) = &f.runtime_filter {
            Filter::Sample(r.percent_sampled / 100.0)
        } else if let Some(a) = &f.and_filter {
            Filter::And(a.filters.iter().map(Filter::compile).collect())
        } else if let Some(o) = &f.or_filter {
            Filter::Or(o.filters.iter().map(Filter::compile).collect())
        } else {
            // Validation requires exactly one; an empty filter keeps everything.
            Filter::And(Vec::new())
        }
    }

    fn keeps(&self, e: &Entry) -> bool {
        match self {
            // A TCP connection has no status: Envoy compares 0.
            Filter::Status(c) => c.holds(e.status.unwrap_or(0) as u64),
            Filter::Duration(c) => c.holds(e.duration.as_millis() as u64),
            Filter::Sample(fraction) => fastrand::f64() < *fraction,
            Filter::And(list) => list.iter().all(|f| f.keeps(e)),
            Filter::Or(list) => list.iter().any(|f| f.keeps(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(status: u16, millis: u64) -> Entry {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        Entry {
            start: SystemTime::UNIX_EPOCH,
            method: None,
            path: None,
            authority: None,
            tls: false,
            version: None,
            protocol: None,
            status: Some(status),
            flags: ResponseFlags::default(),
            details: None,
            bytes_received: 0,
            bytes_sent: 0,
            duration: Duration::from_millis(millis),
            response_duration: None,
            upstream_host: None,
            upstream_cluster: None,
            downstream_remote: addr,
            downstream_local: addr,
            peer_identity: None,
            request_headers: Vec::new(),
            response_headers: Vec::new(),
        }
    }

    fn filter(yaml: &str) -> Filter {
        Filter::compile(&serde_yaml_ng::from_str(yaml).unwrap())
    }

    #[test]
    fn status_range_as_an_and_of_two_comparisons_keeps_only_4xx() {
        let f = filter(
            "and_filter: {filters: [{status_code_filter: {comparison: {op: GE, value: 400}}}, {status_code_filter: {comparison: {op: LE, value: 499}}}]}",
        );
        assert!(f.keeps(&entry(404, 0)));
        assert!(!f.keeps(&entry(200, 0)));
        assert!(!f.keeps(&entry(503, 0)));
    }

    #[test]
    fn or_of_duration_and_status_keeps_slow_or_failed() {
        let f = filter(
            "or_filter: {filters: [{duration_filter: {comparison: {op: GE, value: 100}}}, {status_code_filter: {comparison: {op: GE, value: 500}}}]}",
        );
        assert!(f.keeps(&entry(200, 150)));
        assert!(f.keeps(&entry(503, 1)));
        assert!(!f.keeps(&entry(200, 5)));
    }

    #[test]
    fn sampling_keeps_about_the_percentage_asked() {
        let f = filter("runtime_filter: {percent_sampled: 25}");
        let kept = (0..4000).filter(|_| f.keeps(&entry(200, 0))).count();
        assert!((800..1200).contains(&kept), "kept {kept} of 4000 at 25%");
        assert!(
            !(0..100).any(|_| filter("runtime_filter: {percent_sampled: 0}").keeps(&entry(200, 0)))
        );
    }
}
