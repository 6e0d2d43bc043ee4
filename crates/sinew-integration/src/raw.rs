//! Reading raw HTTP/1.1 off a socket, for tests that must see exactly what the proxy
//! wrote and when it closed the connection (limits, drain), where a client library
//! would hide it.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Reads one HTTP/1.1 response with a Content-Length body; returns its head and body. Panics if it does not come
/// whole within `within`.
pub async fn read_response(stream: &mut TcpStream, within: Duration) -> (String, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let until = tokio::time::Instant::now() + within;
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).into_owned();
                return (head, body);
            }
        }
        let n = tokio::time::timeout_at(until, stream.read(&mut chunk))
            .await
            .expect("response in time")
            .expect("read");
        assert!(
            n > 0,
            "closed mid-response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads until the peer closes (true) or `within` passes (false); returns what came too.
pub async fn read_to_close(stream: &mut TcpStream, within: Duration) -> (bool, Vec<u8>) {
    let until = tokio::time::Instant::now() + within;
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(until, stream.read(&mut chunk)).await {
            Err(_) => return (false, got),
            Ok(Ok(0)) | Ok(Err(_)) => return (true, got),
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
        }
    }
}
