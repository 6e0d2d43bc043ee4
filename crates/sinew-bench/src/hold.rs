//! Holds many idle keep-alive connections open, each having made one request, so that the
//! harness can read what an idle connection costs a proxy in memory.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How many connections are being opened at once.
const OPENING_AT_ONCE: usize = 200;

pub async fn run(connect: SocketAddr, conns: usize) -> Result<(), String> {
    let mut held = Vec::with_capacity(conns);
    let mut opening = tokio::task::JoinSet::new();
    let mut started = 0;
    while held.len() < conns {
        while started < conns && opening.len() < OPENING_AT_ONCE {
            opening.spawn(open_one(connect));
            started += 1;
        }
        let stream = opening
            .join_next()
            .await
            .expect("a connection is being opened")
            .map_err(|e| e.to_string())??;
        held.push(stream);
    }
    println!("{{\"held\": {}}}", held.len());
    // Hold until the harness closes our standard input.
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 64];
    while stdin.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    drop(held);
    Ok(())
}

/// Connects, makes one request and reads its whole response, leaving the connection idle.
async fn open_one(connect: SocketAddr) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect(connect)
        .await
        .map_err(|e| format!("cannot connect to {connect}: {e}"))?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut response = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    while !response_complete(&response)? {
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the connection closed before the response ended".into());
        }
        response.extend_from_slice(&buf[..n]);
    }
    Ok(stream)
}

/// Whether `response` holds a whole 200 response with a Content-Length body.
fn response_complete(response: &[u8]) -> Result<bool, String> {
    let Some(head_end) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(false);
    };
    let head = std::str::from_utf8(&response[..head_end]).map_err(|e| e.to_string())?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "unexpected response: {}",
            head.lines().next().unwrap_or("")
        ));
    }
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .ok_or("the response has no Content-Length")?;
    Ok(response.len() >= head_end + 4 + length)
}
