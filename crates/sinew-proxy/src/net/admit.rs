//! The start every non-HTTP listener body shares (RPC, Redis): the TLS handshake when
//! the listener terminates TLS, bounded in time, then the listener's authorization,
//! checked once per connection with the peer's address, the local port and, over
//! mutual TLS, the client certificate's identity.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::filters::authz::{Authorization, Verdict};

/// How long a TLS client has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection past its handshake and its authorization.
pub(crate) enum Admitted {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// What the client's verified certificate says, when it sent one.
pub(crate) type Identity = Option<Arc<sinew_identity::PeerIdentity>>;

/// The connection, ready to serve, and its peer's identity; None when its handshake
/// failed or timed out or the authorization denied it (logged, naming `what` the
/// listener serves).
pub(crate) async fn admit(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<&TlsAcceptor>,
    authorization: Option<&Authorization>,
    what: &str,
) -> Option<(Admitted, Identity)> {
    let local_port = stream.local_addr().map_or(0, |a| a.port());
    let (admitted, identity) = match tls {
        None => (Admitted::Plain(stream), None),
        Some(tls) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
            Ok(Ok(stream)) => {
                let identity = peer_identity(stream.get_ref().1);
                (Admitted::Tls(Box::new(stream)), identity)
            }
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return None;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return None;
            }
        },
    };
    if let Some(authz) = authorization {
        if let Verdict::Denied(policy) =
            authz.check_connection(peer, local_port, identity.as_deref())
        {
            tracing::debug!(%peer, policy = policy.as_deref().unwrap_or("-"), "{what} connection denied by authorization; closing");
            return None;
        }
    }
    Some((admitted, identity))
}

/// What the client's verified certificate says, read once per connection; `None`
/// without one.
pub(crate) fn peer_identity(
    connection: &rustls::ServerConnection,
) -> Option<Arc<sinew_identity::PeerIdentity>> {
    let leaf = connection.peer_certificates()?.first()?;
    match sinew_identity::PeerIdentity::from_der(leaf.as_ref()) {
        Ok(identity) => Some(Arc::new(identity)),
        Err(e) => {
            // The verifier parsed it already; this would be a parser disagreement.
            tracing::debug!(error = %e, "verified client certificate unreadable");
            None
        }
    }
}
