//! Responses the proxy makes itself: errors, redirects, direct responses.
//!
//! A gRPC client cannot read an HTTP 503; it needs a gRPC status. So when the request is
//! gRPC, an error becomes HTTP 200 in gRPC's Trailers-Only form (`grpc-status` and
//! `grpc-message` in the only header block), as Envoy does.

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};

use super::body::ResponseBody;
use super::flags::ResponseFlags;

/// The gRPC status code for an error status the proxy makes.
fn grpc_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "13",       // INTERNAL
        403 => "7",        // PERMISSION_DENIED
        404 => "12",       // UNIMPLEMENTED
        413 | 431 => "8",  // RESOURCE_EXHAUSTED
        504 => "4",        // DEADLINE_EXCEEDED
        429 => "14",       // UNAVAILABLE, as gRPC's HTTP mapping says
        502 | 503 => "14", // UNAVAILABLE
        _ => "2",          // UNKNOWN
    }
}

/// An error response with `message` as its text (or `grpc-message`).
pub fn error(
    status: StatusCode,
    flags: ResponseFlags,
    message: &'static str,
    grpc: bool,
) -> Response<ResponseBody> {
    if grpc {
        return grpc_error(
            HeaderValue::from_static(grpc_status(status)),
            flags,
            message,
        );
    }
    let mut r = Response::new(ResponseBody::text(Bytes::from_static(message.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r.extensions_mut().insert(flags);
    r
}

/// A gRPC error with status `code`, in Trailers-Only form (HTTP 200).
pub fn grpc_error(
    code: HeaderValue,
    flags: ResponseFlags,
    message: &'static str,
) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::empty());
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert("grpc-status", code);
    h.insert("grpc-message", HeaderValue::from_static(message));
    r.extensions_mut().insert(flags);
    r
}

/// A 400 for a request whose framing cannot be trusted: the connection must close after
/// it (RFC 9112 §6.3), or the rest of the bytes could be read as a smuggled request.
pub fn bad_request(message: &'static str) -> Response<ResponseBody> {
    let mut r = error(
        StatusCode::BAD_REQUEST,
        ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
        message,
        false,
    );
    r.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    r
}

/// A response with a fixed status and body (route `direct_response`).
pub fn direct(
    status: StatusCode,
    body: &Bytes,
    content_type: Option<&HeaderValue>,
) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::text(body.clone()));
    *r.status_mut() = status;
    if let Some(ct) = content_type {
        r.headers_mut().insert(CONTENT_TYPE, ct.clone());
    } else if !body.is_empty() {
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    r
}

/// A redirect to `location`.
pub fn redirect(code: StatusCode, location: HeaderValue) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::empty());
    *r.status_mut() = code;
    r.headers_mut().insert(http::header::LOCATION, location);
    r
}
