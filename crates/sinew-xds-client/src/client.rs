//! Running the client: which streams to open, to which server, and keeping each one up
//! across reconnects with what it remembers (the last accepted versions, so a server can
//! skip resending what we have; see [`crate::state`]). Each stream's protocol is `sotw`'s
//! or `delta`'s; this module only starts and restarts them.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;

use crate::backoff::Backoff;
use crate::handler::{Connection, ResourceHandler};
use crate::state::{Remembered, Shared};
use crate::type_url::Kind;
use crate::{delta, sotw};

/// State of the world or incremental.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    StateOfTheWorld,
    Delta,
}

/// One aggregated (ADS) stream for every type, one stream per type, or only secrets (an
/// SDS server of its own, such as a node agent's socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Streams {
    Aggregated,
    PerType,
    SecretsOnly,
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `http://host:port` or `https://host:port` of each control plane; the client uses
    /// one at a time and moves to the next when a stream breaks.
    pub servers: Vec<String>,
    /// How `https://` servers are reached: the roots that verify them and, for mTLS,
    /// the certificate the proxy presents. Required when any server is `https://`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The name `https://` servers are checked against (and sent in SNI), when not the
    /// host of their address (Envoy's `sni` of the xDS cluster's TLS context).
    pub tls_server_name: Option<rustls::pki_types::ServerName<'static>>,
    pub node: Node,
    pub mode: Mode,
    pub streams: Streams,
    pub connect_timeout: Duration,
}

/// The running client; dropping it stops every stream.
pub struct XdsClient {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for XdsClient {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl XdsClient {
    /// Starts the streams. Must run inside the tokio runtime.
    pub fn start<H: ResourceHandler>(config: ClientConfig, handler: H) -> XdsClient {
        let wanted = [Kind::Secret, Kind::Endpoint, Kind::Route]
            .into_iter()
            .map(|k| (k, watch::channel(Vec::new()).0))
            .collect();
        let shared = Shared {
            handler: Mutex::new(handler),
            wanted,
            deadline: watch::channel(None).0,
        };
        // What the handler wants before any update (the mesh's trust bundle) goes into
        // the first requests.
        if let Ok(handler) = shared.handler.try_lock() {
            shared.publish(&handler);
        }
        let shared = Arc::new(shared);
        let config = Arc::new(config);
        let groups: Vec<Vec<Kind>> = match config.streams {
            Streams::Aggregated => vec![Kind::ALL.to_vec()],
            Streams::PerType => Kind::ALL.into_iter().map(|k| vec![k]).collect(),
            Streams::SecretsOnly => vec![vec![Kind::Secret]],
        };
        let mut tasks: Vec<JoinHandle<()>> = groups
            .into_iter()
            .map(|kinds| tokio::spawn(run_stream(config.clone(), kinds, shared.clone())))
            .collect();
        tasks.push(tokio::spawn(run_deadlines(shared)));
        XdsClient { tasks }
    }
}

/// Calls the handler's `expire` at each deadline it publishes.
async fn run_deadlines<H: ResourceHandler>(shared: Arc<Shared<H>>) {
    let mut deadline = shared.deadline.subscribe();
    let mut fired = None;
    loop {
        let next = *deadline.borrow_and_update();
        let changed = match next {
            // Nothing to wait for, or a deadline the handler did not move on from
            // (its expiry failed): wait for the next one rather than spin.
            None => deadline.changed().await,
            Some(at) if fired == Some(at) => deadline.changed().await,
            Some(at) => tokio::select! {
                () = tokio::time::sleep_until(at.into()) => {
                    fired = Some(at);
                    let mut handler = shared.handler.lock().await;
                    handler.expire().await;
                    shared.publish(&handler);
                    Ok(())
                }
                changed = deadline.changed() => changed,
            },
        };
        if changed.is_err() {
            return;
        }
    }
}

/// Keeps one stream (for `kinds`) up for as long as the client lives.
async fn run_stream<H: ResourceHandler>(
    config: Arc<ClientConfig>,
    kinds: Vec<Kind>,
    shared: Arc<Shared<H>>,
) {
    let mut remembered = Remembered::default();
    let mut backoff = Backoff::new();
    let mut server = 0usize;
    loop {
        // A stream of its own for endpoints or route configurations opens only once
        // something needs them, as Envoy's does: with nothing to ask for there would be
        // no first request, and a server may hold its response headers (and so the
        // stream's opening) until it has something to send.
        if let [kind] = kinds.as_slice() {
            if let Some(wanted) = shared.wanted.get(kind) {
                let mut names = wanted.subscribe();
                if names.wait_for(|n| !n.is_empty()).await.is_err() {
                    return;
                }
            }
        }
        let address = &config.servers[server % config.servers.len()];
        let connecting = crate::channel::connect(
            address,
            config.connect_timeout,
            config.tls.clone(),
            config.tls_server_name.clone(),
        );
        match connecting.await {
            Ok(channel) => {
                shared
                    .handler
                    .lock()
                    .await
                    .connection(Connection::Connected);
                let outcome = match config.mode {
                    Mode::StateOfTheWorld => {
                        sotw::run(channel, &kinds, &config.node, &shared, &mut remembered).await
                    }
                    Mode::Delta => {
                        delta::run(channel, &kinds, &config.node, &shared, &mut remembered).await
                    }
                };
                if outcome.delivered {
                    backoff.reset();
                }
                shared.handler.lock().await.connection(Connection::Lost);
                tracing::warn!(server = %address, "xDS stream ended: {}", outcome.reason);
            }
            Err(e) => {
                shared.handler.lock().await.connection(Connection::Failed);
                tracing::warn!(server = %address, "xDS connect failed: {e}");
            }
        }
        server = server.wrapping_add(1);
        tokio::time::sleep(backoff.next_delay()).await;
    }
}
