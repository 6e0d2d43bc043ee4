//! The upstream request's head as forwarding prepared it — reused by every attempt, by
//! retries (`replay`) and by mirrored copies (`mirror`) — and how it becomes the request
//! sent on a given wire protocol.

use http::header::HOST;
use http::uri::Scheme;
use http::{HeaderMap, HeaderValue, Method, Request, Uri};
use sinew_config::model::UpstreamProtocol;
use sinew_upstream::{RequestBody, WireProtocol};

/// The parts of the upstream request that every attempt (and shadow request) reuses.
#[derive(Clone)]
pub(crate) struct Prepared {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    /// `scheme_to_overwrite`: the HTTP/2 `:scheme` whatever the upstream connection.
    pub scheme: Option<sinew_config::model::Scheme>,
}

/// The protocol to speak to a cluster's endpoint; an upgrade (WebSocket) needs HTTP/1.1.
pub(crate) fn wire_protocol(
    cluster: UpstreamProtocol,
    downstream_h2: bool,
    upgrade: bool,
) -> WireProtocol {
    match cluster {
        _ if upgrade => WireProtocol::Http1,
        UpstreamProtocol::Http1 => WireProtocol::Http1,
        UpstreamProtocol::Http2 => WireProtocol::Http2,
        UpstreamProtocol::SameAsDownstream if downstream_h2 => WireProtocol::Http2,
        UpstreamProtocol::SameAsDownstream => WireProtocol::Http1,
    }
}

pub(crate) fn build_request(
    parts: Prepared,
    authority: &HeaderValue,
    body: RequestBody,
    protocol: WireProtocol,
    tls: bool,
) -> Request<RequestBody> {
    let mut request = Request::new(body);
    let tls = parts
        .scheme
        .map_or(tls, |s| s == sinew_config::model::Scheme::Https);
    *request.method_mut() = parts.method;
    *request.headers_mut() = parts.headers;
    match protocol {
        WireProtocol::Http1 => {
            *request.uri_mut() = parts.uri;
            request.headers_mut().insert(HOST, authority.clone());
        }
        WireProtocol::Http2 => {
            // HTTP/2 carries the authority in the URI (`:authority`), not in Host.
            request.headers_mut().remove(HOST);
            let mut uri = parts.uri.into_parts();
            uri.authority = authority.to_str().ok().and_then(|a| a.parse().ok());
            // No authority to convey: the URI stays origin-form (see sinew-upstream's
            // send for how it goes out).
            uri.scheme = match uri.authority {
                Some(_) if tls => Some(Scheme::HTTPS),
                Some(_) => Some(Scheme::HTTP),
                None => None,
            };
            if let Ok(u) = Uri::from_parts(uri) {
                *request.uri_mut() = u;
            }
        }
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;
    use sinew_config::model::Scheme as Overwrite;

    fn scheme_sent(overwrite: Option<Overwrite>, upstream_tls: bool) -> Option<String> {
        let parts = Prepared {
            method: Method::GET,
            uri: Uri::from_static("/a"),
            headers: HeaderMap::new(),
            scheme: overwrite,
        };
        let authority = HeaderValue::from_static("example.com");
        let request = build_request(
            parts,
            &authority,
            RequestBody::Empty,
            WireProtocol::Http2,
            upstream_tls,
        );
        request.uri().scheme_str().map(str::to_string)
    }

    #[test]
    fn the_http2_scheme_follows_the_upstream_connection_unless_overwritten() {
        assert_eq!(scheme_sent(None, false).as_deref(), Some("http"));
        assert_eq!(scheme_sent(None, true).as_deref(), Some("https"));
        assert_eq!(
            scheme_sent(Some(Overwrite::Https), false).as_deref(),
            Some("https")
        );
        assert_eq!(
            scheme_sent(Some(Overwrite::Http), true).as_deref(),
            Some("http")
        );
    }
}
