//! Sinew's TLS contexts, shared by listeners and clusters:
//!
//! - [`pem`]: reading certificates, keys and roots, from files or bytes.
//! - [`RotatingCert`]: a certificate and key that can be replaced under load (files that
//!   change, secrets pushed over SDS; or inline PEM, which does not change); new
//!   handshakes take the new one.
//! - [`SniCertificates`]: a listener's certificates, chosen per handshake by SNI and by
//!   the signature schemes the client accepts.
//! - [`TrustBundle`]: the roots a peer's chain must lead to, replaceable the same way (a
//!   root rollover).
//! - [`ClientVerifier`] and [`ServerVerifier`]: a peer's chain, then its SPIFFE trust
//!   domain and expected names ([`PeerPolicy`]).
//! - [`MeshIdentity`]: the proxy's SVID, bundle and trust domain, shared by every
//!   listener and cluster in mesh mTLS.
//! - [`PushedSecrets`]: secrets pushed over SDS, by name, each one certificate and one
//!   bundle shared by what names it and replaced in place.
//! - [`watch`]: the file poller behind the first two.
//! - [`client_hello`]: the SNI and ALPN of a ClientHello read from the first bytes, for
//!   choosing a listener's filter chain before the handshake.

mod cert;
pub mod client_hello;
mod mesh;
pub mod pem;
pub mod sds;
mod sni;
mod trust;
mod verify;
pub mod watch;

pub use cert::{certified_key, CertError, CertSource, PemInput, RotatingCert};
pub use mesh::MeshIdentity;
pub use pem::provider;
pub use sds::{PushedSecrets, SecretKey, SecretOrigin};
pub use sni::SniCertificates;
pub use trust::{BundleSource, TrustBundle};
pub use verify::{ClientVerifier, PeerPolicy, SanMatcher, SanType, ServerVerifier, StringMatch};
