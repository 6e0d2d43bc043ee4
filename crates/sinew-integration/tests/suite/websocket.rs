//! WebSocket through Sinew: the HTTP/1.1 Upgrade handshake is passed to a tokio-tungstenite
//! server behind an http1 cluster, and the tunnel then carries frames both ways.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sinew_integration::OneRoute;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// What the upstream saw, in order: the request path, then each message it received.
#[derive(Debug, PartialEq)]
enum Seen {
    Path(String),
    Text(String),
    Binary(Vec<u8>),
    Close(Option<(u16, String)>),
}

/// A WebSocket server that greets, echoes text as `echo: <text>` and binary reversed,
/// and answers a close with a close.
async fn ws_upstream() -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let path_tx = tx.clone();
                // The closure's type is tungstenite's `Callback`, large error and all.
                #[allow(clippy::result_large_err)]
                let callback =
                    move |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                          resp| {
                        let _ = path_tx.send(Seen::Path(req.uri().to_string()));
                        Ok(resp)
                    };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
                    return;
                };
                let _ = ws.send(Message::text("hello from upstream")).await;
                while let Some(Ok(msg)) = ws.next().await {
                    match msg {
                        Message::Text(t) => {
                            let _ = tx.send(Seen::Text(t.to_string()));
                            let _ = ws.send(Message::text(format!("echo: {t}"))).await;
                        }
                        Message::Binary(b) => {
                            let _ = tx.send(Seen::Binary(b.to_vec()));
                            let mut r = b.to_vec();
                            r.reverse();
                            let _ = ws.send(Message::binary(r)).await;
                        }
                        Message::Close(frame) => {
                            let _ = tx.send(Seen::Close(
                                frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                            ));
                            // tungstenite queues the close reply; flushing sends it.
                            let _ = ws.flush().await;
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    (addr, rx)
}

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next message, within 5 s.
async fn recv(ws: &mut Client) -> Message {
    tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("a message in time")
        .expect("stream open")
        .expect("valid message")
}

#[tokio::test]
async fn websocket_handshake_messages_and_close_pass_through() {
    let (upstream, mut seen) = ws_upstream().await;
    let (_proxy, addr) = OneRoute::to(&[upstream])
        .cluster("    protocol: http1")
        .start()
        .await;
    let step = Duration::from_secs(5);

    let (mut ws, response) = tokio::time::timeout(
        step,
        tokio_tungstenite::connect_async(format!("ws://{addr}/chat?room=1")),
    )
    .await
    .expect("handshake in time")
    .expect("handshake through the proxy");
    // tungstenite has already checked Sec-WebSocket-Accept against its key.
    assert_eq!(response.status(), 101);
    assert_eq!(
        response
            .headers()
            .get("upgrade")
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("websocket")
    );
    assert_eq!(seen.recv().await, Some(Seen::Path("/chat?room=1".into())));

    // Server to client, unprompted.
    assert_eq!(recv(&mut ws).await, Message::text("hello from upstream"));

    // Text both ways.
    ws.send(Message::text("ping")).await.unwrap();
    assert_eq!(recv(&mut ws).await, Message::text("echo: ping"));
    assert_eq!(seen.recv().await, Some(Seen::Text("ping".into())));

    // Binary both ways, including every byte value and a message larger than a read buffer.
    let small: Vec<u8> = (0..=255u8).collect();
    ws.send(Message::binary(small.clone())).await.unwrap();
    let mut reversed = small.clone();
    reversed.reverse();
    assert_eq!(recv(&mut ws).await, Message::binary(reversed));
    assert_eq!(seen.recv().await, Some(Seen::Binary(small)));

    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    let mut reversed = big.clone();
    reversed.reverse();
    assert!(recv(&mut ws).await == Message::binary(reversed));
    assert_eq!(seen.recv().await, Some(Seen::Binary(big)));

    // Close handshake: our close reaches the server, its close comes back, the stream ends.
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .await
    .unwrap();
    assert_eq!(
        tokio::time::timeout(step, seen.recv()).await.unwrap(),
        Some(Seen::Close(Some((1000, "bye".into()))))
    );
    let mut got_close = false;
    loop {
        match tokio::time::timeout(step, ws.next())
            .await
            .expect("close reply in time")
        {
            Some(Ok(Message::Close(frame))) => {
                assert_eq!(frame.map(|f| u16::from(f.code)), Some(1000));
                got_close = true;
            }
            Some(Ok(other)) => panic!("unexpected message after close: {other:?}"),
            Some(Err(e)) => panic!("error instead of a clean close: {e}"),
            None => break,
        }
    }
    assert!(
        got_close,
        "the server's close frame came back through the proxy"
    );
}

/// An Envoy bootstrap: listener `with` has `upgrade_configs: websocket` (and a route that
/// turns it off), listener `without` has none, both to the WebSocket upstream.
fn upgrade_bootstrap(with: SocketAddr, without: SocketAddr, upstream: SocketAddr) -> String {
    let listener = |addr: SocketAddr, upgrades: &str, off_route: &str| {
        format!(
            "  - address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          '@type': type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ws{upgrades}
          route_config:
            virtual_hosts:
            - name: all
              domains: ['*']
              routes:{off_route}
              - match: {{prefix: /}}
                route: {{cluster: ws}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              '@type': type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
",
            port = addr.port()
        )
    };
    format!(
        "static_resources:
  listeners:
{with}{without}  clusters:
  - name: ws
    load_assignment:
      cluster_name: ws
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}
",
        with = listener(
            with,
            "\n          upgrade_configs:\n          - upgrade_type: websocket",
            "\n              - match: {prefix: /off}\n                route: {cluster: ws, upgrade_configs: [{upgrade_type: WebSocket, enabled: false}]}",
        ),
        without = listener(without, "", ""),
        port = upstream.port(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_passes_the_upgrades_its_upgrade_configs_name_and_answers_others_403() {
    let (upstream, _seen) = ws_upstream().await;
    let with = SocketAddr::from(([127, 0, 0, 1], sinew_integration::free_port()));
    let without = SocketAddr::from(([127, 0, 0, 1], sinew_integration::free_port()));
    let dir = sinew_integration::scratch_dir("upgrade-configs");
    let file = dir.join("envoy.yaml");
    std::fs::write(&file, upgrade_bootstrap(with, without, upstream)).unwrap();
    let _proxy = sinew_integration::start_proxy_file(&file);
    for addr in [with, without] {
        assert!(
            sinew_integration::eventually(Duration::from_secs(10), || {
                std::net::TcpStream::connect(addr).is_ok()
            })
            .await,
            "nothing listens on {addr}"
        );
    }
    let connect = |url: String| async move {
        tokio::time::timeout(
            Duration::from_secs(5),
            tokio_tungstenite::connect_async(url),
        )
        .await
        .expect("an answer in time")
    };
    // Configured: the tunnel works.
    let (mut ws, response) = connect(format!("ws://{with}/chat"))
        .await
        .expect("upgrade through");
    assert_eq!(response.status(), 101);
    assert_eq!(recv(&mut ws).await, Message::text("hello from upstream"));
    // A route that turns it off, and a listener that never configured it: 403.
    for url in [format!("ws://{with}/off"), format!("ws://{without}/chat")] {
        match connect(url.clone()).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 403, "{url}")
            }
            other => panic!("{url}: expected a 403, got {other:?}"),
        }
    }
    // Plain requests on that listener are not affected.
    let reply = sinew_integration::TestClient::http1()
        .get(without, "/plain", &[])
        .await;
    assert_ne!(reply.status.as_u16(), 403);
    let _ = std::fs::remove_dir_all(&dir);
}
