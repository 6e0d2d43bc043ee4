//! `rpc-upstream`: a Bolt or Dubbo echo server, the upstream of the RPC scenarios for the
//! direct baseline and through Sinew alike. Each call is answered with a response
//! carrying its payload (1 KB in, about 1 KB out); calls are read and answered in batches,
//! as many as arrived, so pipelined and multiplexed connections are served at the rate
//! they send, in the order they came.

use std::net::SocketAddr;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::rpc::Protocol;

/// Read buffer headroom: about 60 pipelined 1 KB calls per read.
const READ_CHUNK: usize = 64 * 1024;

pub async fn bind(listen: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))
}

/// Prints the bound address as one JSON line (so a caller may ask for port 0), then
/// serves every connection on a task of its own until the process ends.
pub async fn run(protocol: Protocol, listen: SocketAddr) -> Result<(), String> {
    let listener = bind(listen).await?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("{{\"protocol\": \"{protocol:?}\", \"listen\": \"{addr}\"}}");
    serve(protocol, listener).await
}

pub async fn serve(protocol: Protocol, listener: TcpListener) -> Result<(), String> {
    loop {
        let (stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        // A connection's error ends that connection only; load generators drop theirs
        // mid-call at the end of every run.
        tokio::spawn(async move {
            if let Err(e) = connection(protocol, stream).await {
                eprintln!("rpc-upstream: {e}");
            }
        });
    }
}

async fn connection(protocol: Protocol, mut stream: TcpStream) -> Result<(), String> {
    let codec = protocol.codec();
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let mut output = BytesMut::with_capacity(READ_CHUNK);
    loop {
        if input.capacity() - input.len() < READ_CHUNK / 4 {
            input.reserve(READ_CHUNK);
        }
        match stream.read_buf(&mut input).await {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(()),
            Err(e) => return Err(format!("reading: {e}")),
        }
        while let Some(frame) = codec.decode(&mut input).map_err(|e| e.to_string())? {
            protocol.echo(&frame, &mut output)?;
        }
        if !output.is_empty() {
            match stream.write_all(&output).await {
                Ok(()) => output.clear(),
                // The client went away with calls in flight: the end of a run.
                Err(_) => return Ok(()),
            }
        }
    }
}
