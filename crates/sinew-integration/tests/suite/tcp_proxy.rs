//! The TCP proxy: bytes both ways to a cluster or weighted clusters, a dead cluster, the
//! idle timeout, and a large transfer.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sinew_integration::{closed_port_addr, TestProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP server that writes `<tag>\n` on accept, then echoes everything back; when the
/// client stops sending it finishes echoing and closes its side.
struct EchoServer {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl EchoServer {
    async fn start(tag: &'static str) -> EchoServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.into_split();
                    if w.write_all(format!("{tag}\n").as_bytes()).await.is_err() {
                        return;
                    }
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        EchoServer {
            addr,
            connections,
            task,
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn tcp_proxy(target: &str, clusters: &str) -> (TestProxy, SocketAddr) {
    let proxy = TestProxy::start(&format!(
        "
listeners:
  - name: tcp
    address: 127.0.0.1:0
    tcp:
{target}
clusters:
{clusters}"
    ))
    .await;
    let addr = proxy.addr("tcp").await;
    (proxy, addr)
}

fn cluster(name: &str, addrs: &[SocketAddr]) -> String {
    let endpoints: String = addrs
        .iter()
        .map(|a| format!("{{address: {a}}}, "))
        .collect();
    format!("  - name: {name}\n    endpoints: [{endpoints}]\n")
}

/// Reads exactly `n` bytes, within a deadline.
async fn read_exact(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buf))
        .await
        .expect("read in time")
        .expect("read");
    buf
}

/// Connects and reads the server's tag line.
async fn connect_tagged(addr: SocketAddr) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut tag = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut b = [0u8; 1];
        let n = tokio::time::timeout_at(deadline, s.read(&mut b))
            .await
            .expect("tag in time")
            .expect("read tag");
        assert_eq!(n, 1, "closed before the tag");
        if b[0] == b'\n' {
            break;
        }
        tag.push(b[0]);
    }
    (s, String::from_utf8(tag).unwrap())
}

/// Expects the peer to close: EOF (or a reset) within `within`.
async fn expect_closed(stream: &mut TcpStream, within: Duration) {
    let mut b = [0u8; 64];
    let read = tokio::time::timeout(within, stream.read(&mut b))
        .await
        .expect("the connection was not closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "unexpected data: {read:?}");
}

#[tokio::test]
async fn bytes_round_trip_both_ways_and_half_close_propagates() {
    let echo = EchoServer::start("echo").await;
    let (_p, addr) = tcp_proxy("      cluster: echo", &cluster("echo", &[echo.addr])).await;
    let (mut s, tag) = connect_tagged(addr).await;
    assert_eq!(tag, "echo");
    for msg in [&b"hello"[..], b"\x00\x01\x02binary\xff", b"third message"] {
        s.write_all(msg).await.unwrap();
        assert_eq!(read_exact(&mut s, msg.len()).await, msg);
    }
    // Closing our sending side reaches the server, whose close comes back to us.
    s.shutdown().await.unwrap();
    expect_closed(&mut s, Duration::from_secs(3)).await;
    assert_eq!(echo.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn weighted_clusters_split_tcp_connections() {
    let a = EchoServer::start("a").await;
    let b = EchoServer::start("b").await;
    let (_p, addr) = tcp_proxy(
        "      weighted_clusters:\n        - {cluster: a, weight: 3}\n        - {cluster: b, weight: 1}",
        &(cluster("a", &[a.addr]) + &cluster("b", &[b.addr])),
    )
    .await;
    let mut counts = [0usize; 2];
    for _ in 0..400 {
        let (mut s, tag) = connect_tagged(addr).await;
        s.write_all(b"ping").await.unwrap();
        assert_eq!(read_exact(&mut s, 4).await, b"ping");
        match tag.as_str() {
            "a" => counts[0] += 1,
            "b" => counts[1] += 1,
            other => panic!("unexpected tag {other}"),
        }
    }
    // Expected 300 / 100, standard deviation about 9.
    assert!((260..=340).contains(&counts[0]), "{counts:?}");
    assert_eq!(counts[0] + counts[1], 400);
}

#[tokio::test]
async fn connections_are_balanced_over_a_clusters_endpoints() {
    let a = EchoServer::start("a").await;
    let b = EchoServer::start("b").await;
    let (_p, addr) = tcp_proxy("      cluster: both", &cluster("both", &[a.addr, b.addr])).await;
    let mut tags = Vec::new();
    for _ in 0..10 {
        let (_s, tag) = connect_tagged(addr).await;
        tags.push(tag);
    }
    assert_eq!(tags.iter().filter(|t| *t == "a").count(), 5, "{tags:?}");
}

#[tokio::test]
async fn a_connection_to_a_dead_cluster_is_closed() {
    let (_p, addr) = tcp_proxy(
        "      cluster: dead",
        &(cluster("dead", &[closed_port_addr()]) + "  - name: empty\n    endpoints: []\n"),
    )
    .await;
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    expect_closed(&mut s, Duration::from_secs(3)).await;
    assert!(started.elapsed() < Duration::from_secs(3));

    let (_p, addr) = tcp_proxy(
        "      cluster: empty",
        "  - name: empty\n    endpoints: []\n",
    )
    .await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    expect_closed(&mut s, Duration::from_secs(3)).await;
}

#[tokio::test]
async fn a_dead_endpoint_is_skipped_for_a_live_one() {
    let live = EchoServer::start("live").await;
    let (_p, addr) = tcp_proxy(
        "      cluster: mixed",
        &cluster("mixed", &[closed_port_addr(), live.addr]),
    )
    .await;
    for _ in 0..6 {
        let (_s, tag) = connect_tagged(addr).await;
        assert_eq!(tag, "live");
    }
}

#[tokio::test]
async fn an_idle_tcp_connection_is_closed_after_the_idle_timeout() {
    let echo = EchoServer::start("echo").await;
    let (_p, addr) = tcp_proxy(
        "      cluster: echo\n      idle_timeout: 300ms",
        &cluster("echo", &[echo.addr]),
    )
    .await;
    let (mut s, _) = connect_tagged(addr).await;
    // Traffic keeps it alive past the timeout.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        s.write_all(b"x").await.unwrap();
        assert_eq!(read_exact(&mut s, 1).await, b"x");
    }
    let idle_since = Instant::now();
    expect_closed(&mut s, Duration::from_secs(3)).await;
    assert!(
        idle_since.elapsed() >= Duration::from_millis(250),
        "{:?}",
        idle_since.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_round_trip_intact() {
    const TOTAL: usize = 64 << 20;
    let echo = EchoServer::start("big").await;
    let (_p, addr) = tcp_proxy("      cluster: big", &cluster("big", &[echo.addr])).await;
    let (s, _) = connect_tagged(addr).await;
    let (mut r, mut w) = s.into_split();
    let pattern = |offset: usize, buf: &mut [u8]| {
        for (i, b) in buf.iter_mut().enumerate() {
            let n = offset + i;
            *b = (n ^ (n >> 11) ^ (n >> 19)) as u8;
        }
    };
    let work = async move {
        let writer = tokio::spawn(async move {
            let mut chunk = vec![0u8; 256 * 1024];
            let mut sent = 0;
            while sent < TOTAL {
                pattern(sent, &mut chunk);
                w.write_all(&chunk).await.unwrap();
                sent += chunk.len();
            }
            w.shutdown().await.unwrap();
        });
        let mut received = 0;
        let mut buf = vec![0u8; 256 * 1024];
        let mut expected = vec![0u8; 256 * 1024];
        loop {
            let n = r.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            pattern(received, &mut expected[..n]);
            assert!(
                buf[..n] == expected[..n],
                "corrupt data at offset {received}"
            );
            received += n;
        }
        writer.await.unwrap();
        received
    };
    let received = tokio::time::timeout(Duration::from_secs(30), work)
        .await
        .expect("64 MiB did not round-trip within 30 s");
    assert_eq!(received, TOTAL);
}
