//! What one client exchange costs on a kept-alive connection: a GET with no body and a
//! 13-byte response read to its end, in process over loopback TCP against a raw
//! responder on the same current-thread runtime.
//!
//! - `codec_send_request`: [`send_request`] driven by the caller's task, the connection
//!   handed back through a slot when the body ends.
//! - `hyper_client_conn_http1`: hyper's `client::conn::http1` (what
//!   `sinew-upstream`'s pool uses today), its connection future spawned as hyper needs.
//!
//! Both include the responder's work and the two loopback round trips' syscalls, which
//! are the same for both; the difference is the client side.

use std::convert::Infallible;
use std::future::poll_fn;
use std::pin::Pin;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::Request;
use http_body::Body;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use sinew_codec::http1::client::{send_request, ClientConn, ClientSettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-length: 13\r\ncontent-type: text/plain\r\n\r\nhello, world!";

/// Answers every request head on each connection with `RESPONSE`.
async fn responder() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            stream.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut filled = 0;
                loop {
                    let n = match stream.read(&mut buf[filled..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    filled += n;
                    while let Some(end) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.copy_within(end + 4..filled, 0);
                        filled -= end + 4;
                        if stream.write_all(RESPONSE).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

fn request<B>(body: B) -> Request<B> {
    Request::builder()
        .uri("/api/v1/orders/48213")
        .header("host", "orders.svc")
        .header("user-agent", "bench")
        .header("accept", "*/*")
        .body(body)
        .unwrap()
}

struct NoBody;

impl Body for NoBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(None)
    }
    fn is_end_stream(&self) -> bool {
        true
    }
    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(0)
    }
}

type Conn = ClientConn<OwnedReadHalf, OwnedWriteHalf>;

fn exchange(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = runtime.block_on(responder());
    let mut group = c.benchmark_group("client_exchange");

    let slot: std::rc::Rc<std::cell::Cell<Option<Conn>>> = Default::default();
    runtime.block_on(async {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (read, write) = stream.into_split();
        slot.set(Some(ClientConn::new(read, write)));
    });
    let settings = ClientSettings::default();
    group.bench_function("codec_send_request", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let conn = slot.take().expect("the connection came back");
                let home = slot.clone();
                let response = send_request(conn, request(NoBody), settings, move |conn| {
                    home.set(Some(conn))
                })
                .await
                .unwrap();
                let mut body = response.into_body();
                let mut len = 0;
                while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                    len += frame.unwrap().into_data().map_or(0, |d| d.len());
                }
                assert_eq!(len, 13);
            })
        })
    });

    let mut sender = runtime.block_on(async {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        sender
    });
    group.bench_function("hyper_client_conn_http1", |b| {
        b.iter(|| {
            runtime.block_on(async {
                sender.ready().await.unwrap();
                let response = sender
                    .send_request(request(Empty::<Bytes>::new()))
                    .await
                    .unwrap();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(body.len(), 13);
            })
        })
    });
    group.finish();
}

criterion_group!(benches, exchange);
criterion_main!(benches);
