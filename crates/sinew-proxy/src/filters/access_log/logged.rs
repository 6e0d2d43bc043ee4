//! The HTTP side of access logging: what a request leaves for its log entry before it is
//! handled, and the response body wrapper that counts the bytes sent and, when the body
//! is done (or dropped: the client went away), hands the finished entry to the logs.
//! Only used when the listener has `access_log`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use sinew_stream::DownstreamRequest;

use super::{AccessLogs, Entry};
use crate::filters::authz::RbacDenied;
use crate::filters::router::headers::{new_request_id, X_REQUEST_ID};
use crate::filters::Downstream;
use crate::stream::body::{ResponseBody, WatchedBody};
use crate::stream::flags::ResponseFlags;
use crate::stream::upstream_info::UpstreamInfo;

/// The entry for a request head the HTTP/1 codec refused (and answered itself): no
/// method, path or headers, the status it was answered with, flag `DPE` (Envoy's
/// downstream protocol error).
pub(crate) fn refused_head(logs: &AccessLogs, status: http::StatusCode, downstream: Downstream) {
    logs.record(Entry {
        start: SystemTime::now(),
        method: None,
        path: None,
        authority: None,
        tls: downstream.tls,
        version: None,
        protocol: None,
        status: Some(status.as_u16()),
        flags: ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
        details: None,
        bytes_received: 0,
        bytes_sent: 0,
        duration: Duration::ZERO,
        response_duration: Some(Duration::ZERO),
        upstream_host: None,
        upstream_cluster: None,
        downstream_remote: downstream.peer,
        downstream_local: downstream.local,
        peer_identity: downstream.identity.cloned(),
        request_headers: Vec::new(),
        response_headers: Vec::new(),
    });
}

/// The request's half of an entry, taken before the request is handed on.
pub(crate) struct Started {
    entry: Entry,
    at: Instant,
}

/// Copies what the formats need from the request. When a format logs `x-request-id` and
/// the listener generates ids, the id is generated here (rather than later, in forwarding)
/// so the log and the upstream see the same one.
pub(crate) fn start(
    logs: &AccessLogs,
    req: &mut DownstreamRequest,
    generate_request_id: bool,
    downstream: Downstream,
) -> Started {
    if generate_request_id
        && logs.wants_request_header(&X_REQUEST_ID)
        && !req.headers().contains_key(&X_REQUEST_ID)
    {
        req.headers_mut().insert(&X_REQUEST_ID, new_request_id());
    }
    let authority = match req.headers().get(http::header::HOST) {
        Some(h) => Some(h.clone()),
        None => req
            .uri()
            .authority()
            .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok()),
    };
    // The body's declared length: a streamed (chunked) body without Content-Length counts
    // as 0 (see docs/access-log.md).
    let bytes_received = req.body().size_hint().exact().unwrap_or(0);
    Started {
        entry: Entry {
            start: SystemTime::now(),
            method: Some(req.method().clone()),
            path: req.uri().path_and_query().cloned(),
            authority,
            tls: downstream.tls,
            version: Some(req.version()),
            protocol: None,
            status: None,
            flags: ResponseFlags::default(),
            details: None,
            bytes_received,
            bytes_sent: 0,
            duration: Duration::ZERO,
            response_duration: None,
            upstream_host: None,
            upstream_cluster: None,
            downstream_remote: downstream.peer,
            downstream_local: downstream.local,
            peer_identity: downstream.identity.cloned(),
            request_headers: logs.capture_request_headers(req.headers()),
            response_headers: Vec::new(),
        },
        at: Instant::now(),
    }
}

/// Fills in the response's half and wraps its body so the entry is logged when the last
/// byte has gone.
pub(crate) fn finish(
    logs: &Arc<AccessLogs>,
    started: Started,
    response: Response<ResponseBody>,
) -> Response<ResponseBody> {
    let Started { mut entry, at } = started;
    entry.status = Some(response.status().as_u16());
    entry.response_duration = Some(at.elapsed());
    if let Some(flags) = response.extensions().get::<ResponseFlags>() {
        entry.flags = *flags;
    }
    if let Some(denied) = response.extensions().get::<RbacDenied>() {
        entry.details = Some(denied.details().into());
    }
    if let Some(upstream) = response.extensions().get::<UpstreamInfo>() {
        entry.upstream_host = Some(upstream.host);
        entry.upstream_cluster = Some(upstream.cluster.clone());
    }
    entry.response_headers = logs.capture_response_headers(response.headers());
    response.map(|inner| {
        ResponseBody::Watched(Box::new(LoggedBody {
            inner,
            logs: logs.clone(),
            entry: Some(entry),
            at,
            last_byte: None,
        }))
    })
}

/// A response body that counts what it sends and logs the entry when done.
pub struct LoggedBody {
    inner: ResponseBody,
    logs: Arc<AccessLogs>,
    /// Taken when logged.
    entry: Option<Entry>,
    at: Instant,
    last_byte: Option<Instant>,
}

impl WatchedBody for LoggedBody {
    /// Logs the entry now, with `flags` added.
    fn end_with(&mut self, flags: ResponseFlags) {
        if let Some(entry) = self.entry.as_mut() {
            entry.flags = entry.flags | flags;
        }
        self.log();
    }
}

impl LoggedBody {
    fn log(&mut self) {
        if let Some(mut entry) = self.entry.take() {
            let end = self.last_byte.unwrap_or_else(Instant::now);
            entry.duration = end.saturating_duration_since(self.at);
            self.logs.record(entry);
        }
    }
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = sinew_upstream::body::UpstreamBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(entry)) = (frame.data_ref(), this.entry.as_mut()) {
                    entry.bytes_sent += data.len() as u64;
                }
                this.last_byte = Some(Instant::now());
                if this.inner.is_end_stream() {
                    this.log();
                }
            }
            Poll::Ready(None) => this.log(),
            Poll::Ready(Some(Err(_))) => {
                if let Some(entry) = this.entry.as_mut() {
                    entry.flags = entry.flags | ResponseFlags::UPSTREAM_CONNECTION_TERMINATION;
                }
                this.log();
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    /// hyper drops a body it has finished without polling past its end, and drops it
    /// half-sent when the client goes away; either way the request is over.
    fn drop(&mut self) {
        if self.entry.is_some() && !self.inner.is_end_stream() {
            if let Some(entry) = self.entry.as_mut() {
                entry.flags = entry.flags | ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION;
            }
        }
        self.log();
    }
}
