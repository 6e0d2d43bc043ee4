//! Sending one request to an endpoint: on a pooled connection when one is free, else on
//! a new one (or, at the cluster's connection limit, on one that comes back in time).
//!
//! HTTP/1.1 requests go out through Sinew's codec (`sinew_codec::http1::client`), driven
//! by the request's own task: no task per connection, no channel per request; the
//! connection goes back to the pool from inside the response body (`body.rs`).
//! HTTP/2 goes through the codec's client (`sinew_codec::http2::client`), on the `h2`
//! crate: each connection has one task for its I/O, and a request is sent and its
//! response awaited from the request's own task. A new connection is opened when every
//! shared one is at its stream limit, and shared once the peer's SETTINGS say how many
//! streams it takes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response, Version};
use sinew_codec::http1::client::{self as http1_client, ClientConn, ClientError, ClientSettings};
use sinew_codec::http2::{self, Client as Http2Client};

use crate::body::UpstreamBody;
use crate::breaker::{CircuitBreakers, Slot};
use crate::connect::{connect, ConnectError, UpstreamIo};
use crate::pool::{EndpointState, Http1Conn, PoolReturn, StreamPermit};
use crate::request_body::RequestBody;

/// Which HTTP version to speak upstream for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireProtocol {
    Http1,
    Http2,
}

/// Why a request got no response.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be opened (nothing was sent).
    Connect(ConnectError),
    /// An HTTP/1.1 exchange failed: the connection failed or closed before a response,
    /// the response was malformed, or the request body failed.
    Http1(ClientError),
    /// An HTTP/2 stream failed while the request was out (reset, refused, GOAWAY, the
    /// connection failing), the response was malformed, or the request body failed.
    Http2(http2::ClientError),
    /// The cluster's circuit breakers turned the request away (nothing was sent).
    Overflow,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(e) => write!(f, "{e}"),
            SendError::Http1(e) => write!(f, "{e}"),
            SendError::Http2(e) => write!(f, "{e}"),
            SendError::Overflow => write!(f, "circuit breaker overflow"),
        }
    }
}

impl EndpointState {
    /// Sends one request to this endpoint, on a pooled connection when one is free. New
    /// connections and waiting for one count against `breakers`.
    pub async fn send(
        self: &Arc<Self>,
        request: Request<RequestBody>,
        protocol: WireProtocol,
        breakers: &CircuitBreakers,
    ) -> Result<Response<UpstreamBody>, SendError> {
        match protocol {
            WireProtocol::Http1 => self.send_http1(request, breakers).await,
            WireProtocol::Http2 => self.send_http2(request, breakers).await,
        }
    }

    async fn send_http1(
        self: &Arc<Self>,
        mut request: Request<RequestBody>,
        breakers: &CircuitBreakers,
    ) -> Result<Response<UpstreamBody>, SendError> {
        // Connecting is rare and its future is large: boxed, it does not grow the future
        // of every request that finds a pooled connection (see `send`).
        let Http1Conn { conn, slot } = match self.check_out_http1() {
            Some(c) => c,
            None => Box::pin(self.connect_or_wait_http1(breakers)).await?,
        };
        *request.version_mut() = Version::HTTP_11;
        let home = PoolReturn {
            endpoint: self.clone(),
            slot,
        };
        // The codec's default limits on response heads are hyper's (64 KiB, 100 fields).
        let response = http1_client::send_request(conn, request, ClientSettings::default(), home)
            .await
            .map_err(SendError::Http1)?;
        Ok(response.map(UpstreamBody::http1))
    }

    /// No pooled connection was free: open one, or — at the cluster's connection limit —
    /// wait as a pending request for one to come back, up to the connect timeout.
    async fn connect_or_wait_http1(
        &self,
        breakers: &CircuitBreakers,
    ) -> Result<Http1Conn, SendError> {
        let _pending = breakers.try_pending().ok_or(SendError::Overflow)?;
        let deadline = tokio::time::Instant::now() + self.settings.connect_timeout;
        loop {
            if let Some(slot) = breakers.try_connection() {
                return self.connect_http1(slot).await.map_err(SendError::Connect);
            }
            if let Some(conn) = self.check_out_http1() {
                return Ok(conn);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(SendError::Overflow);
            }
            // A connection to another endpoint closing frees a slot without waking us,
            // so look again every few milliseconds as well.
            let recheck = tokio::time::sleep_until(
                (tokio::time::Instant::now() + Duration::from_millis(5)).min(deadline),
            );
            tokio::select! {
                _ = self.pool().http1_returned.notified() => {}
                _ = recheck => {}
            }
        }
    }

    /// A new connection to this endpoint with its cluster's connect settings (timeout,
    /// TLS, keepalive), whichever protocol it will speak.
    async fn open(&self) -> Result<UpstreamIo, ConnectError> {
        connect(
            self.address,
            self.settings.connect_timeout,
            self.settings.tls.as_ref(),
            self.settings.tcp_keepalive.as_ref(),
        )
        .await
    }

    /// Opens an HTTP/1.1 connection that holds `slot` of the cluster's connection limit
    /// for as long as it lives.
    async fn connect_http1(&self, slot: Slot) -> Result<Http1Conn, ConnectError> {
        let io = self.open().await?;
        let (read, write) = io.into_halves();
        Ok(Http1Conn {
            conn: ClientConn::new(read, write),
            slot,
        })
    }

    async fn send_http2(
        self: &Arc<Self>,
        mut request: Request<RequestBody>,
        breakers: &CircuitBreakers,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let (client, permit) = match self.check_out_http2() {
            Some(found) => found,
            None => Box::pin(self.check_out_or_connect_http2(breakers)).await?,
        };
        // A request with no authority to convey (HTTP/1.0 without Host, HTTP/2 without
        // :authority) is forwarded without :authority (RFC 9113 §8.3.1). The URI cannot
        // hold a scheme without an authority, so it stays origin-form, and `h2` fills in
        // `:scheme: http` for a request it is not told is HTTP/2 (it refuses one that is).
        if request.uri().authority().is_some() {
            *request.version_mut() = Version::HTTP_2;
        }
        let response = client
            .send_request(request)
            .await
            .map_err(SendError::Http2)?;
        Ok(response.map(|b| UpstreamBody::http2(b, permit)))
    }

    async fn check_out_or_connect_http2(
        &self,
        breakers: &CircuitBreakers,
    ) -> Result<(Http2Client, StreamPermit), SendError> {
        let _pending = breakers.try_pending().ok_or(SendError::Overflow)?;
        let waiting_since = Instant::now();
        let mut last_failure = self.pool().http2_connecting.lock().await;
        if let Some(found) = self.check_out_http2() {
            return Ok(found);
        }
        if last_failure.is_some_and(|failed| failed >= waiting_since) {
            return Err(SendError::Connect(ConnectError::FailedWhileWaiting));
        }
        let Some(slot) = breakers.try_connection() else {
            // At the cluster's connection limit, streams share the open connections past
            // their cap: `h2` holds a stream beyond the peer's limit until one ends.
            return self.least_loaded_http2().ok_or(SendError::Overflow);
        };
        let result = self.connect_http2(slot).await;
        *last_failure = result.is_err().then(Instant::now);
        result.map_err(SendError::Connect)
    }

    async fn connect_http2(&self, slot: Slot) -> Result<(Http2Client, StreamPermit), ConnectError> {
        let io = self.open().await?;
        if self.settings.tls.is_some() && io.alpn() != Some(b"h2") {
            return Err(ConnectError::NoH2);
        }
        let pool = &self.settings.pool;
        let defaults = http2::ClientSettings::default();
        let client_settings = http2::ClientSettings {
            initial_stream_window: pool
                .http2_initial_stream_window_size
                .unwrap_or(defaults.initial_stream_window),
            initial_connection_window: pool
                .http2_initial_connection_window_size
                .unwrap_or(defaults.initial_connection_window),
            ..defaults
        };
        let (client, mut conn) = http2::handshake(io, client_settings)
            .await
            .map_err(ConnectError::Handshake)?;
        let settings_received = conn.settings_received();
        let address = self.address;
        // The connection's I/O needs a task of its own (frames arrive while no request is
        // looking); it holds the connection's slot for as long as it lives.
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = conn.await {
                tracing::debug!(%address, error = %e, "upstream HTTP/2 connection ended");
            }
        });
        // Share the connection only once its stream limit is known (one round trip).
        if let Some(settings_received) = settings_received {
            tokio::time::timeout(self.settings.connect_timeout, settings_received)
                .await
                .map_err(|_| ConnectError::Timeout)?
                .map_err(ConnectError::Handshake)?;
        }
        let permit = self.share_http2(client.clone());
        Ok((client, permit))
    }
}
