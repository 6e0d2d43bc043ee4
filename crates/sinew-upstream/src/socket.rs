//! Socket options Sinew sets on TCP connections it opens or accepts: TCP keepalive,
//! from the config's `tcp_keepalive` blocks (see `sinew_config::socket`).
//!
//! Compiled once per config into socket2's [`TcpKeepalive`], set with one call per
//! connection, and only where configured.

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;

/// The socket2 form of a `tcp_keepalive` block; unset fields keep the kernel's values.
pub fn keepalive(config: &sinew_config::model::TcpKeepalive) -> TcpKeepalive {
    let mut k = TcpKeepalive::new();
    if let Some(time) = config.keepalive_time {
        k = k.with_time(time);
    }
    if let Some(interval) = config.keepalive_interval {
        k = k.with_interval(interval);
    }
    if let Some(probes) = config.keepalive_probes {
        k = k.with_retries(probes);
    }
    k
}

/// Turns keepalive on for `stream`. A failure is logged and the connection carries on
/// without it: keepalive is a safety net, not worth refusing a connection over.
pub fn set_keepalive(stream: &TcpStream, keepalive: &TcpKeepalive) {
    if let Err(e) = SockRef::from(stream).set_tcp_keepalive(keepalive) {
        tracing::debug!(error = %e, "cannot set TCP keepalive");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn connected_pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    #[tokio::test]
    async fn every_configured_field_reaches_the_socket() {
        let (client, _server) = connected_pair().await;
        let config = sinew_config::model::TcpKeepalive {
            keepalive_time: Some(Duration::from_secs(77)),
            keepalive_interval: Some(Duration::from_secs(13)),
            keepalive_probes: Some(4),
        };
        set_keepalive(&client, &keepalive(&config));
        let socket = SockRef::from(&client);
        assert!(socket.keepalive().unwrap());
        assert_eq!(
            socket.tcp_keepalive_time().unwrap(),
            Duration::from_secs(77)
        );
        assert_eq!(
            socket.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(13)
        );
        assert_eq!(socket.tcp_keepalive_retries().unwrap(), 4);
    }

    #[tokio::test]
    async fn unset_fields_keep_the_kernels_values() {
        let (client, _server) = connected_pair().await;
        let socket = SockRef::from(&client);
        let (time, interval, probes) = (
            socket.tcp_keepalive_time().unwrap(),
            socket.tcp_keepalive_interval().unwrap(),
            socket.tcp_keepalive_retries().unwrap(),
        );
        assert!(!socket.keepalive().unwrap(), "off by default");
        set_keepalive(&client, &keepalive(&Default::default()));
        assert!(socket.keepalive().unwrap());
        assert_eq!(socket.tcp_keepalive_time().unwrap(), time);
        assert_eq!(socket.tcp_keepalive_interval().unwrap(), interval);
        assert_eq!(socket.tcp_keepalive_retries().unwrap(), probes);
    }
}
