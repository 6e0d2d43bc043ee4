//! Which HTTP a cleartext (or ALPN-less TLS) connection speaks, from its first bytes:
//! HTTP/2 with prior knowledge starts with the 24-byte connection preface (RFC 9113
//! §3.4); anything else is read as HTTP/1. The bytes read to decide are not lost: the
//! connection's reads give them back first (`stream::IoActivity`).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The HTTP/2 connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The most the first reads take: the preface, or the start of an HTTP/1 head (the
/// codec reads the rest).
const FIRST_READ: usize = 512;

/// What the first bytes said.
pub(crate) enum Sniffed {
    Http1(Bytes),
    Http2(Bytes),
    /// The client closed, or sent nothing in time.
    Nothing,
}

/// Reads until the bytes are the preface or cannot be; `wait` bounds the whole read.
pub(crate) async fn sniff<IO: AsyncRead + Unpin>(io: &mut IO, wait: Duration) -> Sniffed {
    // On the heap: inline, the bytes would size every connection's task for its life.
    let mut first = BytesMut::with_capacity(FIRST_READ);
    let read = async {
        loop {
            if first.len() == FIRST_READ {
                return true;
            }
            let n = io.read_buf(&mut first).await.unwrap_or(0);
            if n == 0 {
                return false;
            }
            let common = first.len().min(PREFACE.len());
            if first[..common] != PREFACE[..common] || first.len() >= PREFACE.len() {
                return true;
            }
        }
    };
    match tokio::time::timeout(wait, read).await {
        Ok(true) => {
            let bytes = first.freeze();
            if bytes.starts_with(PREFACE) {
                Sniffed::Http2(bytes)
            } else {
                Sniffed::Http1(bytes)
            }
        }
        _ => Sniffed::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn sniff_bytes(pieces: &[&'static [u8]]) -> Sniffed {
        let (mut client, mut server) = tokio::io::duplex(1024);
        for piece in pieces {
            client.write_all(piece).await.unwrap();
        }
        drop(client);
        sniff(&mut server, Duration::from_secs(1)).await
    }

    #[tokio::test]
    async fn the_preface_is_http2_even_in_pieces_and_its_bytes_are_kept() {
        match sniff_bytes(&[b"PRI * HTTP/2.0\r\n", b"\r\nSM\r\n\r\n\0\0"]).await {
            Sniffed::Http2(bytes) => assert!(bytes.starts_with(PREFACE)),
            _ => panic!("not HTTP/2"),
        }
    }

    #[tokio::test]
    async fn a_request_line_is_http1_from_its_first_byte() {
        match sniff_bytes(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"]).await {
            Sniffed::Http1(bytes) => assert_eq!(&bytes[..4], b"GET "),
            _ => panic!("not HTTP/1"),
        }
        // A prefix of the preface that then differs is HTTP/1 (a method named PRIX).
        assert!(matches!(
            sniff_bytes(&[b"PRI", b"X / HTTP/1.1\r\n"]).await,
            Sniffed::Http1(_)
        ));
    }

    /// The old head guard's regression (a first segment of `P` looked like the preface
    /// and turned every check off): here the sniff reads on until the bytes differ.
    #[tokio::test]
    async fn post_arriving_as_p_then_ost_is_http1() {
        match sniff_bytes(&[b"P", b"OST / HTTP/1.1\r\nHost: a\r\n\r\n"]).await {
            Sniffed::Http1(bytes) => assert!(bytes.starts_with(b"POST /")),
            _ => panic!("not HTTP/1"),
        }
    }

    #[tokio::test]
    async fn a_client_that_closes_early_is_nothing() {
        assert!(matches!(sniff_bytes(&[]).await, Sniffed::Nothing));
        assert!(matches!(
            sniff_bytes(&[b"PRI * HT"]).await,
            Sniffed::Nothing
        ));
    }
}
