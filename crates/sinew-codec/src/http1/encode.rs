//! Heads and chunked bodies into bytes: each head is measured first and written with one
//! reserve. The encoder writes the framing itself (`Content-Length` or
//! `Transfer-Encoding: chunked`) from [`OutgoingBody`] and leaves out any framing field
//! in the given map, so what it sends is framed exactly one way.

use bytes::{BufMut, BytesMut};
use http::header::{self, HeaderMap};
use http::{Method, StatusCode, Uri};

/// How the body after an encoded head is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutgoingBody {
    /// No body and no framing field: a request without one, or a 1xx or 204 response.
    Empty,
    /// `Content-Length: n`, then exactly n bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`, then [`write_chunk`]s and [`write_last_chunk`].
    Chunked,
    /// No body follows, but the map's own `Content-Length` is kept: a response to HEAD
    /// or a 304, whose length describes the body a GET would get.
    Bodiless,
}

const CRLF: &[u8] = b"\r\n";
const CHUNKED_LINE: &[u8] = b"transfer-encoding: chunked\r\n";
const LENGTH_NAME: &[u8] = b"content-length: ";

fn keeps(name: &header::HeaderName, body: OutgoingBody) -> bool {
    *name != header::TRANSFER_ENCODING
        && (*name != header::CONTENT_LENGTH || body == OutgoingBody::Bodiless)
}

fn fields_len(headers: &HeaderMap, body: OutgoingBody) -> usize {
    let mut len = CRLF.len();
    for (name, value) in headers {
        if keeps(name, body) {
            len += name.as_str().len() + 2 + value.len() + 2;
        }
    }
    len + match body {
        OutgoingBody::Length(_) => LENGTH_NAME.len() + 20 + 2,
        OutgoingBody::Chunked => CHUNKED_LINE.len(),
        _ => 0,
    }
}

fn write_fields(headers: &HeaderMap, body: OutgoingBody, dst: &mut BytesMut) {
    for (name, value) in headers {
        if keeps(name, body) {
            dst.put_slice(name.as_str().as_bytes());
            dst.put_slice(b": ");
            dst.put_slice(value.as_bytes());
            dst.put_slice(CRLF);
        }
    }
    match body {
        OutgoingBody::Length(n) => {
            dst.put_slice(LENGTH_NAME);
            dst.put_slice(Decimal::new(n).as_bytes());
            dst.put_slice(CRLF);
        }
        OutgoingBody::Chunked => dst.put_slice(CHUNKED_LINE),
        _ => {}
    }
    dst.put_slice(CRLF);
}

/// `method target HTTP/1.1`, the fields and the framing. The target is written in
/// origin form (path and query; `/` when empty), or authority form for CONNECT, or `*`.
pub fn encode_request_head(
    method: &Method,
    target: &Uri,
    headers: &HeaderMap,
    body: OutgoingBody,
    dst: &mut BytesMut,
) {
    let target_text = if *method == Method::CONNECT {
        target.authority().map_or("", |a| a.as_str())
    } else {
        match target.path_and_query().map(|pq| pq.as_str()) {
            Some("") | None => "/",
            Some(pq) => pq,
        }
    };
    let line_len = method.as_str().len() + 1 + target_text.len() + b" HTTP/1.1\r\n".len();
    dst.reserve(line_len + fields_len(headers, body));
    dst.put_slice(method.as_str().as_bytes());
    dst.put_u8(b' ');
    dst.put_slice(target_text.as_bytes());
    dst.put_slice(b" HTTP/1.1\r\n");
    write_fields(headers, body, dst);
}

/// `HTTP/1.1 code reason`, the fields and the framing. The reason is the canonical
/// phrase (empty for codes without one). Chunked framing is for HTTP/1.1 peers only;
/// the caller picks `Length` or a close-delimited body for HTTP/1.0 clients.
pub fn encode_response_head(
    status: StatusCode,
    headers: &HeaderMap,
    body: OutgoingBody,
    dst: &mut BytesMut,
) {
    let reason = status.canonical_reason().unwrap_or("");
    let line_len = b"HTTP/1.1 000 ".len() + reason.len() + CRLF.len();
    dst.reserve(line_len + fields_len(headers, body));
    dst.put_slice(b"HTTP/1.1 ");
    dst.put_slice(status.as_str().as_bytes());
    dst.put_u8(b' ');
    dst.put_slice(reason.as_bytes());
    dst.put_slice(CRLF);
    write_fields(headers, body, dst);
}

/// A chunk's size line (`hex CRLF`), for writing a chunk as size line, data and CRLF
/// with one vectored write instead of copying the data.
#[derive(Debug, Clone, Copy)]
pub struct ChunkSizeLine {
    bytes: [u8; 18],
    len: usize,
}

impl ChunkSizeLine {
    pub fn new(size: u64) -> Self {
        let mut bytes = [0u8; 18];
        let digits = (16 - size.leading_zeros() as usize / 4).max(1);
        for (k, byte) in bytes.iter_mut().take(digits).enumerate() {
            let nibble = (size >> (4 * (digits - 1 - k))) & 0xf;
            *byte = b"0123456789abcdef"[nibble as usize];
        }
        bytes[digits] = b'\r';
        bytes[digits + 1] = b'\n';
        ChunkSizeLine {
            bytes,
            len: digits + 2,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Appends one chunk. Empty data writes nothing: a zero-size chunk is the last chunk.
pub fn write_chunk(data: &[u8], dst: &mut BytesMut) {
    if data.is_empty() {
        return;
    }
    let line = ChunkSizeLine::new(data.len() as u64);
    dst.reserve(line.len + data.len() + CRLF.len());
    dst.put_slice(line.as_bytes());
    dst.put_slice(data);
    dst.put_slice(CRLF);
}

/// Appends the last chunk, the trailer fields if any, and the final CRLF.
pub fn write_last_chunk(trailers: Option<&HeaderMap>, dst: &mut BytesMut) {
    let mut len = b"0\r\n\r\n".len();
    if let Some(trailers) = trailers {
        len += trailers
            .iter()
            .map(|(name, value)| name.as_str().len() + 2 + value.len() + 2)
            .sum::<usize>();
    }
    dst.reserve(len);
    dst.put_slice(b"0\r\n");
    if let Some(trailers) = trailers {
        for (name, value) in trailers {
            dst.put_slice(name.as_str().as_bytes());
            dst.put_slice(b": ");
            dst.put_slice(value.as_bytes());
            dst.put_slice(CRLF);
        }
    }
    dst.put_slice(CRLF);
}

/// A u64 in decimal, without going through `fmt`.
struct Decimal {
    bytes: [u8; 20],
    start: usize,
}

impl Decimal {
    fn new(mut n: u64) -> Self {
        let mut bytes = [0u8; 20];
        let mut start = bytes.len();
        loop {
            start -= 1;
            bytes[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        Decimal { bytes, start }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[self.start..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::{
        parse_request, parse_response, BodyFraming, ChunkedDecoder, Frame, HeadLimits,
    };
    use http::HeaderValue;

    fn fields(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn a_request_head_is_written_in_origin_form_with_its_length() {
        let mut dst = BytesMut::new();
        let target: Uri = "http://upstream:8080/a/b?c=d".parse().unwrap();
        let headers = fields(&[("host", "upstream:8080"), ("x-a", "1"), ("x-a", "2")]);
        encode_request_head(
            &Method::POST,
            &target,
            &headers,
            OutgoingBody::Length(5),
            &mut dst,
        );
        assert_eq!(
            &dst[..],
            b"POST /a/b?c=d HTTP/1.1\r\nhost: upstream:8080\r\nx-a: 1\r\nx-a: 2\r\ncontent-length: 5\r\n\r\n"
        );
        let (head, used) = parse_request(&dst, &HeadLimits::default())
            .unwrap()
            .unwrap();
        assert_eq!(used, dst.len());
        assert_eq!(head.framing, BodyFraming::Length(5));
        assert_eq!(head.headers, {
            let mut h = headers.clone();
            h.insert("content-length", HeaderValue::from_static("5"));
            h
        });
    }

    #[test]
    fn the_encoder_writes_framing_once_whatever_the_map_says() {
        let mut dst = BytesMut::new();
        let headers = fields(&[
            ("host", "a"),
            ("content-length", "999"),
            ("transfer-encoding", "gzip"),
        ]);
        encode_request_head(
            &Method::PUT,
            &"/".parse().unwrap(),
            &headers,
            OutgoingBody::Chunked,
            &mut dst,
        );
        assert_eq!(
            &dst[..],
            b"PUT / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        dst.clear();
        encode_request_head(
            &Method::GET,
            &"/".parse().unwrap(),
            &headers,
            OutgoingBody::Empty,
            &mut dst,
        );
        assert_eq!(&dst[..], b"GET / HTTP/1.1\r\nhost: a\r\n\r\n");
    }

    #[test]
    fn connect_and_asterisk_targets_keep_their_form() {
        let mut dst = BytesMut::new();
        let headers = fields(&[("host", "a:443")]);
        encode_request_head(
            &Method::CONNECT,
            &"a:443".parse().unwrap(),
            &headers,
            OutgoingBody::Empty,
            &mut dst,
        );
        assert!(dst.starts_with(b"CONNECT a:443 HTTP/1.1\r\n"));
        dst.clear();
        encode_request_head(
            &Method::OPTIONS,
            &"*".parse().unwrap(),
            &headers,
            OutgoingBody::Empty,
            &mut dst,
        );
        assert!(dst.starts_with(b"OPTIONS * HTTP/1.1\r\n"), "{dst:?}");
    }

    #[test]
    fn the_head_is_written_with_one_reserve() {
        let mut dst = BytesMut::new();
        let headers = fields(&[
            ("host", "a"),
            ("user-agent", "a fairly long user agent string"),
        ]);
        encode_request_head(
            &Method::GET,
            &"/x".parse().unwrap(),
            &headers,
            OutgoingBody::Length(u64::MAX),
            &mut dst,
        );
        let written = dst.len();
        assert!(dst.capacity() >= written);
        // Reserved up front: no more than the measured length (plus the 20-digit room).
        assert!(
            dst.capacity() <= written + 64,
            "{} for {written}",
            dst.capacity()
        );
    }

    #[test]
    fn a_response_head_has_its_canonical_reason() {
        let mut dst = BytesMut::new();
        encode_response_head(
            StatusCode::NOT_FOUND,
            &fields(&[("server", "sinew")]),
            OutgoingBody::Length(0),
            &mut dst,
        );
        assert_eq!(
            &dst[..],
            b"HTTP/1.1 404 Not Found\r\nserver: sinew\r\ncontent-length: 0\r\n\r\n"
        );
        dst.clear();
        encode_response_head(
            StatusCode::from_u16(599).unwrap(),
            &HeaderMap::new(),
            OutgoingBody::Empty,
            &mut dst,
        );
        assert_eq!(&dst[..], b"HTTP/1.1 599 \r\n\r\n");
        let (head, _) = parse_response(&dst, &Method::GET, &HeadLimits::default())
            .unwrap()
            .unwrap();
        assert_eq!(head.status.as_u16(), 599);
    }

    #[test]
    fn a_bodiless_response_keeps_its_content_length() {
        let mut dst = BytesMut::new();
        let headers = fields(&[("content-length", "1234"), ("etag", "\"x\"")]);
        encode_response_head(StatusCode::OK, &headers, OutgoingBody::Bodiless, &mut dst);
        assert_eq!(
            &dst[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\netag: \"x\"\r\n\r\n"
        );
    }

    #[test]
    fn chunk_size_lines_are_lowercase_hex() {
        for (size, line) in [
            (1u64, &b"1\r\n"[..]),
            (0, b"0\r\n"),
            (255, b"ff\r\n"),
            (4096, b"1000\r\n"),
            (u64::MAX, b"ffffffffffffffff\r\n"),
        ] {
            assert_eq!(ChunkSizeLine::new(size).as_bytes(), line, "{size}");
        }
    }

    #[test]
    fn chunks_and_trailers_decode_back() {
        let mut dst = BytesMut::new();
        write_chunk(b"hello ", &mut dst);
        write_chunk(b"", &mut dst);
        write_chunk(&[b'x'; 300], &mut dst);
        let trailers = fields(&[("x-checksum", "abc")]);
        write_last_chunk(Some(&trailers), &mut dst);
        assert!(dst.starts_with(b"6\r\nhello \r\n12c\r\n"));
        let mut decoder = ChunkedDecoder::default();
        let mut data = Vec::new();
        loop {
            match decoder.decode(&mut dst).unwrap() {
                Some(Frame::Data(d)) => data.extend_from_slice(&d),
                Some(Frame::End(t)) => {
                    assert_eq!(t, Some(trailers));
                    break;
                }
                None => panic!("incomplete"),
            }
        }
        assert_eq!(data.len(), 306);
        assert!(dst.is_empty());
        let mut last = BytesMut::new();
        write_last_chunk(None, &mut last);
        assert_eq!(&last[..], b"0\r\n\r\n");
    }
}
