//! Response compression and request/response decompression (Envoy's compressor and
//! decompressor filters): the listener's `http.compression` and `http.decompression`.
//!
//! Compression: when the request arrives, the client's `Accept-Encoding` is read
//! (RFC 9110 §12.5.3) and the algorithm it prefers among the configured ones is kept in
//! the stream's state; when the response comes back, it is compressed with it if Envoy
//! would: a body that is not empty, at least `min_content_length` long (or of unknown
//! length), of a listed content type, not already encoded, not `no-transform`, not the
//! answer to a HEAD, not 1xx/204/304. `Vary: Accept-Encoding` is added to every response
//! that could have been compressed, whatever this client accepted, so caches keep the
//! encodings apart. The body is compressed frame by frame as it streams.
//!
//! Decompression: a request body whose `Content-Encoding` is one of the configured
//! encodings is decoded before it goes upstream (413 when it grows past
//! `max_inflate_ratio` times its encoded size, 400 when it is not valid); a response
//! likewise before it goes downstream (cut off instead, its head being gone).
//!
//! Responses pass the decompressor before the compressor (the order Envoy's
//! `http_filters: [compressor, decompressor, router]` gives). A listener without these
//! blocks has no such filter in its chain, and its streams pay nothing.

mod body;
mod coder;
#[cfg(test)]
mod tests;

use http::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body::Body as _;
use sinew_config::compression::{Algorithm, Compression, Decompression, Encoder as EncoderConfig};
use sinew_stream::DownstreamRequest;

use self::body::Coded;
use self::coder::{Decoder, Encoder};
use crate::metrics::{Metrics, ShardedCounter};
use crate::stream::body::ResponseBody;

/// Envoy's default compressible media types, with the synonyms it accepts for them.
const DEFAULT_CONTENT_TYPES: &[&str] = &[
    "application/javascript",
    "application/x-javascript",
    "text/javascript",
    "text/ecmascript",
    "application/ecmascript",
    "application/json",
    "application/x-json",
    "application/xhtml+xml",
    "image/svg+xml",
    "text/css",
    "text/html",
    "text/plain",
    "text/xml",
    "application/xml",
];

/// A listener's compiled `compression`.
pub(crate) struct Compressor {
    /// In the order ties are broken: `choose_first` ones, then as listed.
    encoders: Box<[EncoderConfig]>,
    min_content_length: u64,
    /// Lower-case media types.
    content_types: Box<[Box<str>]>,
    disable_on_etag_header: bool,
    weaken_etag_on_compress: bool,
    remove_accept_encoding_header: bool,
    uncompressible: Box<[u16]>,
    /// Responses compressed, per encoder (metrics on).
    compressed: Option<Box<[ShardedCounter]>>,
}

/// What the request said, kept for its response: the encoder chosen (an index into
/// `encoders`), if any. None for a HEAD, whose response is never compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Negotiated {
    choice: Option<u8>,
}

impl Compressor {
    pub(crate) fn compile(c: &Compression, listener: &str, metrics: Option<&Metrics>) -> Self {
        let mut encoders = c.algorithms.clone();
        // Stable: listed order within each group.
        encoders.sort_by_key(|e| !e.choose_first);
        let content_types: Vec<String> = match &c.content_types {
            Some(list) => list.iter().map(|t| t.trim().to_ascii_lowercase()).collect(),
            None => DEFAULT_CONTENT_TYPES
                .iter()
                .map(|t| t.to_string())
                .collect(),
        };
        let content_types = content_types
            .into_iter()
            .map(String::into_boxed_str)
            .collect();
        let compressed = metrics.map(|m| {
            encoders
                .iter()
                .map(|e| m.http_coding(listener, e.algorithm.token(), "compressed"))
                .collect()
        });
        Compressor {
            encoders: encoders.into(),
            min_content_length: c.min_content_length,
            content_types,
            disable_on_etag_header: c.disable_on_etag_header,
            weaken_etag_on_compress: c.weaken_etag_on_compress,
            remove_accept_encoding_header: c.remove_accept_encoding_header,
            uncompressible: c.uncompressible_response_codes.clone().into(),
            compressed,
        }
    }

    /// Phase 1: the client's choice, read before the request goes on (and its
    /// `Accept-Encoding` removed when configured). None for a HEAD request.
    pub(crate) fn on_request(&self, req: &mut DownstreamRequest) -> Option<Negotiated> {
        let negotiated = (req.method() != Method::HEAD).then(|| Negotiated {
            choice: choose(&self.encoders, req.headers()),
        });
        if self.remove_accept_encoding_header {
            req.headers_mut().remove(ACCEPT_ENCODING);
        }
        negotiated
    }

    /// Phase 4a: compresses `response` if it qualifies.
    pub(crate) fn on_response(
        &self,
        negotiated: Negotiated,
        response: &mut Response<ResponseBody>,
    ) {
        if !self.compressible(response) {
            return;
        }
        add_vary(response.headers_mut());
        let Some(i) = negotiated.choice else { return };
        let config = &self.encoders[usize::from(i)];
        let Ok(encoder) = Encoder::new(config) else {
            return;
        };
        let headers = response.headers_mut();
        if let Some(etag) = headers.get(ETAG) {
            if !etag.as_bytes().starts_with(b"W/") {
                match self.weaken_etag_on_compress {
                    true => {
                        let mut weak = b"W/".to_vec();
                        weak.extend_from_slice(etag.as_bytes());
                        match HeaderValue::from_bytes(&weak) {
                            Ok(weak) => headers.insert(ETAG, weak),
                            Err(_) => headers.remove(ETAG),
                        };
                    }
                    false => {
                        headers.remove(ETAG);
                    }
                }
            }
        }
        headers.remove(CONTENT_LENGTH);
        headers.insert(
            CONTENT_ENCODING,
            HeaderValue::from_static(config.algorithm.token()),
        );
        if let Some(counters) = &self.compressed {
            counters[usize::from(i)].inc();
        }
        let body = std::mem::replace(response.body_mut(), ResponseBody::empty());
        *response.body_mut() = ResponseBody::Watched(Box::new(Coded::new(body, encoder)));
    }

    /// Whether `response` may be compressed at all, whatever the client accepts (then
    /// it varies by `Accept-Encoding`).
    fn compressible(&self, response: &Response<ResponseBody>) -> bool {
        let status = response.status();
        if status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
            || self.uncompressible.contains(&status.as_u16())
            || response.body().is_end_stream()
        {
            return false;
        }
        let headers = response.headers();
        if headers.contains_key(CONTENT_ENCODING) || no_transform(headers) {
            return false;
        }
        let length = match headers.get(CONTENT_LENGTH) {
            Some(v) => v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()),
            None => response.body().size_hint().exact(),
        };
        if length.is_some_and(|n| n < self.min_content_length) {
            return false;
        }
        if headers.contains_key(ETAG)
            && self.disable_on_etag_header
            && !self.weaken_etag_on_compress
        {
            return false;
        }
        content_type_allowed(&self.content_types, headers)
    }
}

/// The configured encoder the client prefers: the highest q-value among them (an
/// encoding not named takes `*`'s value, else is not acceptable), ties broken by
/// `encoders`' order; none when the client sent no `Accept-Encoding`, accepts none of
/// them, or prefers `identity` to all of them.
pub(crate) fn choose(encoders: &[EncoderConfig], headers: &HeaderMap) -> Option<u8> {
    let mut values = headers.get_all(ACCEPT_ENCODING).iter().peekable();
    values.peek()?;
    // q-values in thousandths (RFC 9110 §12.4.2: at most three decimals).
    let mut star = None;
    let mut identity = None;
    let mut named: [Option<u16>; 3] = [None; 3];
    for value in values {
        let Ok(text) = value.to_str() else { continue };
        for item in text.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            if coding.is_empty() {
                continue;
            }
            let Some(q) = qvalue(parts) else { continue };
            let slot = if coding == "*" {
                &mut star
            } else if coding.eq_ignore_ascii_case("identity") {
                &mut identity
            } else if let Some(a) = algorithm_named(coding) {
                &mut named[a as usize]
            } else {
                continue;
            };
            // Named twice: the higher weight wins.
            *slot = Some(slot.map_or(q, |old: u16| old.max(q)));
        }
    }
    let mut best: Option<(u16, u8)> = None;
    for (i, e) in encoders.iter().enumerate() {
        let q = named[e.algorithm as usize].or(star).unwrap_or(0);
        if q > 0 && best.is_none_or(|(bq, _)| q > bq) {
            best = Some((q, i as u8));
        }
    }
    let (q, i) = best?;
    // A client that names `identity` with a weight above every encoding we have gets
    // the body as it is; unnamed, it is merely acceptable (RFC 9110 §12.5.3) and does
    // not compete, as in Envoy.
    (q >= identity.unwrap_or(0)).then_some(i)
}

fn algorithm_named(coding: &str) -> Option<Algorithm> {
    [Algorithm::Gzip, Algorithm::Br, Algorithm::Zstd]
        .into_iter()
        .find(|a| coding.eq_ignore_ascii_case(a.token()))
        .or_else(|| {
            coding
                .eq_ignore_ascii_case("x-gzip")
                .then_some(Algorithm::Gzip)
        })
}

/// The weight of an `Accept-Encoding` item from its parameters, in thousandths; None
/// when it is malformed (the item is then ignored).
fn qvalue<'a>(params: impl Iterator<Item = &'a str>) -> Option<u16> {
    let mut q = 1000;
    for param in params {
        let (name, value) = param.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("q") {
            continue;
        }
        let value = value.trim();
        let (int, frac) = value.split_once('.').unwrap_or((value, ""));
        if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let mut thousandths = 0u16;
        for (i, b) in frac.bytes().enumerate() {
            thousandths += u16::from(b - b'0') * [100, 10, 1][i];
        }
        q = match int {
            "0" => thousandths,
            "1" if thousandths == 0 => 1000,
            _ => return None,
        };
    }
    Some(q)
}

fn content_type_allowed(allowed: &[Box<str>], headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return true;
    };
    let Ok(text) = value.to_str() else {
        return false;
    };
    let media = text.split(';').next().unwrap_or("").trim();
    allowed.iter().any(|t| t.eq_ignore_ascii_case(media))
}

fn no_transform(headers: &HeaderMap) -> bool {
    headers.get_all(CACHE_CONTROL).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
        })
    })
}

/// Adds `Vary: Accept-Encoding` unless the response already varies on it (or on `*`).
fn add_vary(headers: &mut HeaderMap) {
    let varies = headers.get_all(VARY).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',').any(|f| {
                let f = f.trim();
                f == "*" || f.eq_ignore_ascii_case("accept-encoding")
            })
        })
    });
    if !varies {
        headers.append(VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

/// A listener's compiled `decompression`.
pub(crate) struct Decompressor {
    algorithms: Box<[Algorithm]>,
    request: bool,
    response: bool,
    /// What is added to a request's `Accept-Encoding` (response decoding on).
    advertise: Option<HeaderValue>,
    ignore_no_transform: bool,
    max_inflate_ratio: u32,
    /// Bodies decoded, per algorithm: `[request, response]` (metrics on).
    decoded: Option<Box<[[ShardedCounter; 2]]>>,
}

impl Decompressor {
    pub(crate) fn compile(d: &Decompression, listener: &str, metrics: Option<&Metrics>) -> Self {
        let advertise = (d.response && d.advertise_accept_encoding)
            .then(|| {
                let tokens: Vec<&str> = d.algorithms.iter().map(|a| a.token()).collect();
                HeaderValue::from_str(&tokens.join(", ")).ok()
            })
            .flatten();
        let decoded = metrics.map(|m| {
            d.algorithms
                .iter()
                .map(|a| {
                    [
                        m.http_coding(listener, a.token(), "decompressed_request"),
                        m.http_coding(listener, a.token(), "decompressed_response"),
                    ]
                })
                .collect()
        });
        Decompressor {
            algorithms: d.algorithms.clone().into(),
            request: d.request,
            response: d.response,
            advertise,
            ignore_no_transform: d.ignore_no_transform_header,
            max_inflate_ratio: d.max_inflate_ratio,
            decoded,
        }
    }

    /// Phase 1: a request body in a configured encoding is decoded as it is read, and
    /// the request says the upstream may answer in the encodings decoded.
    pub(crate) fn on_request(&self, req: &mut DownstreamRequest) {
        if self.request && !req.body().is_end_stream() {
            if let Some((i, algorithm)) = self.outer_coding(req.headers_mut()) {
                if let Ok(decoder) = Decoder::new(algorithm, self.max_inflate_ratio) {
                    req.headers_mut().remove(CONTENT_LENGTH);
                    // A zero-sized stand-in: boxing it does not allocate.
                    let stand_in = sinew_stream::RequestBody::Filtered(Box::new(Taken));
                    let body = std::mem::replace(req.body_mut(), stand_in);
                    *req.body_mut() =
                        sinew_stream::RequestBody::Filtered(Box::new(Coded::new(body, decoder)));
                    if let Some(counters) = &self.decoded {
                        counters[i][0].inc();
                    }
                }
            }
        }
        if let Some(advertise) = &self.advertise {
            let headers = req.headers_mut();
            let merged = match headers.get(ACCEPT_ENCODING).map(|v| v.to_str()) {
                None => Some(advertise.clone()),
                Some(Ok(old)) if !old.trim().is_empty() => {
                    HeaderValue::from_str(&format!("{old}, {}", advertise.to_str().unwrap_or("")))
                        .ok()
                }
                _ => Some(advertise.clone()),
            };
            if let Some(merged) = merged {
                headers.insert(ACCEPT_ENCODING, merged);
            }
        }
    }

    /// Phase 4a: a response body in a configured encoding is decoded on its way.
    pub(crate) fn on_response(&self, response: &mut Response<ResponseBody>) {
        if !self.response || response.body().is_end_stream() {
            return;
        }
        let Some((i, algorithm)) = self.outer_coding(response.headers_mut()) else {
            return;
        };
        let Ok(decoder) = Decoder::new(algorithm, self.max_inflate_ratio) else {
            return;
        };
        response.headers_mut().remove(CONTENT_LENGTH);
        if let Some(counters) = &self.decoded {
            counters[i][1].inc();
        }
        let body = std::mem::replace(response.body_mut(), ResponseBody::empty());
        *response.body_mut() = ResponseBody::Watched(Box::new(Coded::new(body, decoder)));
    }

    /// The outermost (last-applied) content coding of a message, when it is one this
    /// filter decodes and `no-transform` does not forbid it; it is taken off
    /// `Content-Encoding` (the header removed when it was the only one).
    fn outer_coding(&self, headers: &mut HeaderMap) -> Option<(usize, Algorithm)> {
        let value = headers.get(CONTENT_ENCODING)?.to_str().ok()?;
        let (rest, last) = match value.rsplit_once(',') {
            Some((rest, last)) => (Some(rest.trim()), last.trim()),
            None => (None, value.trim()),
        };
        let algorithm = algorithm_named(last)?;
        let i = self.algorithms.iter().position(|a| *a == algorithm)?;
        if !self.ignore_no_transform && no_transform(headers) {
            return None;
        }
        match rest.filter(|r| !r.is_empty()).map(HeaderValue::from_str) {
            Some(Ok(rest)) => {
                headers.insert(CONTENT_ENCODING, rest);
            }
            Some(Err(_)) => return None,
            None => {
                headers.remove(CONTENT_ENCODING);
            }
        }
        Some((i, algorithm))
    }
}

/// The stand-in for a request body while it is being wrapped: empty.
struct Taken;

impl http_body::Body for Taken {
    type Data = bytes::Bytes;
    type Error = sinew_stream::BodyError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        std::task::Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        true
    }
}
