//! TLS session resumption state of a listener (the ticket keys and the session cache),
//! kept across config changes while the listener's `tls` block is unchanged.

use std::sync::Arc;

/// What lets a client resume a gateway listener's sessions: the ticket keys and the
/// session cache. A recompiled config (a reload, an xDS update) keeps the previous ones
/// while the listener's `tls` is unchanged; fresh ones would turn every client's next
/// handshake into a full one after each config change.
#[derive(Clone)]
pub struct SessionResumption {
    /// The listener's `tls` as configured: a change of any field (certificates, client
    /// verification, versions) starts afresh, so no session outlives the policy it was
    /// made under.
    pub(super) settings: String,
    pub(super) ticketer: Option<Arc<dyn rustls::server::ProducesTickets>>,
    pub(super) cache: Arc<dyn rustls::server::StoresServerSessions>,
}

impl SessionResumption {
    pub(super) fn new(
        t: &sinew_config::model::ListenerTls,
        settings: String,
    ) -> Result<Self, (String, String)> {
        // Stateless tickets whose keys rotate (every 6 hours, the previous key still
        // accepted), and a session cache for TLS 1.2 session ids.
        let ticketer = match t.session_tickets {
            true => Some(
                rustls::crypto::aws_lc_rs::Ticketer::new()
                    .map_err(|e| ("tls.session_tickets".to_string(), e.to_string()))?,
            ),
            false => None,
        };
        let cache: Arc<dyn rustls::server::StoresServerSessions> = match t.session_cache_size {
            0 => Arc::new(rustls::server::NoServerSessionStorage {}),
            size => rustls::server::ServerSessionMemoryCache::new(size),
        };
        Ok(Self {
            settings,
            ticketer,
            cache,
        })
    }
}
