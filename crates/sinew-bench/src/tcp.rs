//! The TCP bulk-transfer client: reads what the upstream's TCP source sends, through a
//! proxy or not, and reports bytes per second.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

pub async fn read(connect: SocketAddr, streams: usize, secs: f64) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..streams.max(1) {
        let mut stream = TcpStream::connect(connect)
            .await
            .map_err(|e| format!("cannot connect to {connect}: {e}"))?;
        tasks.spawn(async move {
            let mut buf = vec![0u8; 256 * 1024];
            let mut total = 0u64;
            while Instant::now() < deadline {
                match tokio::time::timeout_at(deadline.into(), stream.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                    Ok(Ok(n)) => total += n as u64,
                }
            }
            total
        });
    }
    let mut bytes = 0u64;
    while let Some(total) = tasks.join_next().await {
        bytes += total.map_err(|e| e.to_string())?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    if bytes == 0 {
        return Err(format!("no bytes arrived from {connect}"));
    }
    println!(
        "{{\"bytes\": {bytes}, \"secs\": {elapsed:.3}, \"bytes_per_sec\": {:.0}}}",
        bytes as f64 / elapsed
    );
    Ok(())
}
