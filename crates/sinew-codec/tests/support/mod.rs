//! Samples and helpers shared by the codec's integration tests: real-world heads, and
//! feeding bytes to a parser in pieces.

#![allow(dead_code)]

use bytes::BytesMut;
use http::Method;
use sinew_codec::http1::{
    ChunkedDecoder, ChunkedError, Frame, HeadError, HeadLimits, RequestHead, RequestParser,
    ResponseHead, ResponseParser,
};

/// Request heads as real clients send them (their exact field order and spelling).
pub const REAL_REQUESTS: &[(&str, &[u8])] = &[
    (
        "curl 7.88 GET",
        b"GET / HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n",
    ),
    (
        "curl POST -d",
        b"POST /submit HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\
Content-Length: 7\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n",
    ),
    (
        "curl -T - (chunked upload)",
        b"PUT /upload/file.bin HTTP/1.1\r\nHost: 127.0.0.1:9000\r\nUser-Agent: curl/7.88.1\r\n\
Accept: */*\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
    ),
    (
        "curl -x (absolute form)",
        b"GET http://example.com/index.html HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/7.88.1\r\n\
Accept: */*\r\nProxy-Connection: Keep-Alive\r\n\r\n",
    ),
    (
        "curl -p -x (CONNECT)",
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nUser-Agent: curl/7.88.1\r\n\
Proxy-Connection: Keep-Alive\r\n\r\n",
    ),
    (
        "Chrome 126 navigation",
        b"GET /orders?page=2 HTTP/1.1\r\nHost: shop.example.com\r\nConnection: keep-alive\r\n\
sec-ch-ua: \"Not/A)Brand\";v=\"8\", \"Chromium\";v=\"126\", \"Google Chrome\";v=\"126\"\r\n\
sec-ch-ua-mobile: ?0\r\nsec-ch-ua-platform: \"Linux\"\r\nUpgrade-Insecure-Requests: 1\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7\r\n\
Sec-Fetch-Site: same-origin\r\nSec-Fetch-Mode: navigate\r\nSec-Fetch-User: ?1\r\nSec-Fetch-Dest: document\r\n\
Referer: https://shop.example.com/\r\nAccept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9,de;q=0.8\r\n\
Cookie: session=9f86d081884c7d659a2feaa0c55ad015; theme=dark; _ga=GA1.2.1234567890.1700000000\r\n\r\n",
    ),
    (
        "Firefox 128 XHR",
        b"POST /api/v1/cart HTTP/1.1\r\nHost: shop.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: application/json, text/plain, */*\r\nAccept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\nContent-Type: application/json\r\nContent-Length: 27\r\n\
Origin: https://shop.example.com\r\nDNT: 1\r\nConnection: keep-alive\r\nReferer: https://shop.example.com/cart\r\n\
Sec-Fetch-Dest: empty\r\nSec-Fetch-Mode: cors\r\nSec-Fetch-Site: same-origin\r\nPriority: u=0\r\n\
Pragma: no-cache\r\nCache-Control: no-cache\r\n\r\n",
    ),
    (
        "Safari 17 image",
        b"GET /img/logo.png HTTP/1.1\r\nHost: cdn.example.com\r\nAccept: image/webp,image/avif,image/jxl,image/heic,image/heic-sequence,video/*;q=0.8,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5\r\n\
Sec-Fetch-Site: cross-site\r\nSec-Fetch-Dest: image\r\nAccept-Language: en-GB,en;q=0.9\r\nSec-Fetch-Mode: no-cors\r\n\
User-Agent: Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15\r\n\
Referer: https://www.example.com/\r\nAccept-Encoding: gzip, deflate, br\r\nConnection: keep-alive\r\n\r\n",
    ),
    (
        "browser WebSocket upgrade",
        b"GET /chat HTTP/1.1\r\nHost: ws.example.com\r\nConnection: Upgrade\r\nPragma: no-cache\r\n\
Cache-Control: no-cache\r\nUser-Agent: Mozilla/5.0\r\nUpgrade: websocket\r\nOrigin: https://www.example.com\r\n\
Sec-WebSocket-Version: 13\r\nAccept-Encoding: gzip, deflate, br\r\nAccept-Language: en-US,en;q=0.9\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
    ),
    (
        "Go net/http GET",
        b"GET /healthz HTTP/1.1\r\nHost: backend.svc.cluster.local:8080\r\nUser-Agent: Go-http-client/1.1\r\nAccept-Encoding: gzip\r\n\r\n",
    ),
    (
        "Go net/http chunked POST",
        b"POST /v1/events HTTP/1.1\r\nHost: collector:4318\r\nUser-Agent: Go-http-client/1.1\r\n\
Transfer-Encoding: chunked\r\nContent-Type: application/x-protobuf\r\nAccept-Encoding: gzip\r\n\r\n",
    ),
    (
        "python requests",
        b"GET /get?x=1 HTTP/1.1\r\nHost: httpbin.org\r\nUser-Agent: python-requests/2.31.0\r\n\
Accept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n",
    ),
    (
        "python requests json POST",
        b"POST /post HTTP/1.1\r\nHost: httpbin.org\r\nUser-Agent: python-requests/2.31.0\r\n\
Accept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: keep-alive\r\nContent-Length: 16\r\n\
Content-Type: application/json\r\n\r\n",
    ),
    (
        "python http.client",
        b"GET /index.html HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nAccept-Encoding: identity\r\n\r\n",
    ),
    (
        "ApacheBench HTTP/1.0",
        b"GET / HTTP/1.0\r\nHost: 127.0.0.1:8080\r\nUser-Agent: ApacheBench/2.3\r\nAccept: */*\r\n\r\n",
    ),
    (
        "wrk",
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
    ),
    (
        "gRPC-Web from a browser",
        b"POST /helloworld.Greeter/SayHello HTTP/1.1\r\nHost: grpc.example.com\r\n\
Content-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\nX-User-Agent: grpc-web-javascript/0.1\r\n\
Content-Length: 12\r\nAccept: application/grpc-web-text\r\n\r\n",
    ),
    (
        "Kubernetes probe",
        b"GET /readyz HTTP/1.1\r\nHost: 10.244.1.17:8080\r\nUser-Agent: kube-probe/1.30\r\nAccept: */*\r\nConnection: close\r\n\r\n",
    ),
    (
        "OPTIONS * from a load balancer",
        b"OPTIONS * HTTP/1.1\r\nHost: 10.0.0.5\r\nUser-Agent: ELB-HealthChecker/2.0\r\n\r\n",
    ),
    (
        "IPv6 literal host, encoded query",
        b"GET /search?q=caf%C3%A9&tags%5B%5D=a&sort=-date HTTP/1.1\r\nHost: [2001:db8::1]:8443\r\nAccept: */*\r\n\r\n",
    ),
];

/// Response heads as real servers send them.
pub const REAL_RESPONSES: &[(&str, &[u8])] = &[
    (
        "nginx 200",
        b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 06 Dec 2026 07:00:00 GMT\r\n\
Content-Type: text/html\r\nContent-Length: 615\r\nLast-Modified: Tue, 11 Apr 2023 01:45:34 GMT\r\n\
Connection: keep-alive\r\nETag: \"6434bbbe-267\"\r\nAccept-Ranges: bytes\r\n\r\n",
    ),
    (
        "nginx chunked gzip",
        b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\
Connection: keep-alive\r\nContent-Encoding: gzip\r\nVary: Accept-Encoding\r\n\r\n",
    ),
    (
        "python http.server",
        b"HTTP/1.0 200 OK\r\nServer: SimpleHTTP/0.6 Python/3.11.7\r\nDate: Sun, 06 Dec 2026 07:00:00 GMT\r\n\
Content-type: text/html; charset=utf-8\r\nContent-Length: 412\r\n\r\n",
    ),
    (
        "Go 304",
        b"HTTP/1.1 304 Not Modified\r\nEtag: \"abc\"\r\nDate: Sun, 06 Dec 2026 07:00:00 GMT\r\n\r\n",
    ),
    (
        "Envoy 503",
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 19\r\ncontent-type: text/plain\r\n\
date: Sun, 06 Dec 2026 07:00:00 GMT\r\nserver: envoy\r\n\r\n",
    ),
    (
        "WebSocket 101",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
    ),
    ("100 Continue", b"HTTP/1.1 100 Continue\r\n\r\n"),
    (
        "close-delimited",
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n",
    ),
];

/// Feeds `input` to a request parser in pieces cut at `cuts` (offsets, any order);
/// returns what it said once it said something other than "not yet", with how many
/// bytes the head took, as [`sinew_codec::http1::parse_request`] does.
pub fn request_in_pieces(
    input: &[u8],
    cuts: &[usize],
    limits: HeadLimits,
) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let mut parser = RequestParser::new(limits);
    let mut buf = BytesMut::new();
    let mut fed = 0;
    for end in piece_ends(input.len(), cuts) {
        buf.extend_from_slice(&input[fed..end]);
        fed = end;
        match parser.parse(&mut buf)? {
            Some(head) => return Ok(Some((head, fed - buf.len()))),
            None => continue,
        }
    }
    Ok(None)
}

/// [`request_in_pieces`] for responses.
pub fn response_in_pieces(
    input: &[u8],
    cuts: &[usize],
    method: &Method,
    limits: HeadLimits,
) -> Result<Option<(ResponseHead, usize)>, HeadError> {
    let mut parser = ResponseParser::new(limits);
    let mut buf = BytesMut::new();
    let mut fed = 0;
    for end in piece_ends(input.len(), cuts) {
        buf.extend_from_slice(&input[fed..end]);
        fed = end;
        if let Some(head) = parser.parse(&mut buf, method)? {
            return Ok(Some((head, fed - buf.len())));
        }
    }
    Ok(None)
}

/// What a chunked body decodes to.
#[derive(Debug, PartialEq)]
pub struct Decoded {
    pub data: Vec<u8>,
    /// `Ok(Some(trailers))` at the end, `Ok(None)` if the input ended first.
    pub end: Result<Option<Option<http::HeaderMap>>, ChunkedError>,
    /// Bytes after the body (only meaningful once it ended).
    pub after: usize,
}

pub fn chunked_in_pieces(
    input: &[u8],
    cuts: &[usize],
    limits: sinew_codec::http1::ChunkedLimits,
) -> Decoded {
    let mut decoder = ChunkedDecoder::new(limits);
    let mut buf = BytesMut::new();
    let mut data = Vec::new();
    let mut fed = 0;
    for end in piece_ends(input.len(), cuts) {
        buf.extend_from_slice(&input[fed..end]);
        fed = end;
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(Frame::Data(bytes))) => {
                    assert!(!bytes.is_empty(), "an empty data frame");
                    data.extend_from_slice(&bytes);
                }
                Ok(Some(Frame::End(trailers))) => {
                    return Decoded {
                        data,
                        end: Ok(Some(trailers)),
                        after: buf.len() + input.len() - fed,
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    return Decoded {
                        data,
                        end: Err(e),
                        after: 0,
                    }
                }
            }
        }
    }
    Decoded {
        data,
        end: Ok(None),
        after: 0,
    }
}

/// The ends of the pieces `cuts` make of `len` bytes, last one `len`.
fn piece_ends(len: usize, cuts: &[usize]) -> Vec<usize> {
    let mut ends: Vec<usize> = cuts
        .iter()
        .map(|c| c % (len + 1))
        .filter(|&c| c > 0)
        .collect();
    ends.push(len);
    ends.sort_unstable();
    ends.dedup();
    ends
}
