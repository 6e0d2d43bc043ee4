//! Who is on the other end of a connection or a request, as every later phase sees it.
//!
//! - [`SpiffeId`]: a workload's name, `spiffe://<trust-domain>/<path>`, checked against the
//!   SPIFFE ID rules, with Istio's `/ns/<namespace>/sa/<service-account>` path read out.
//! - [`PeerIdentity`]: what a verified peer certificate says (its URI and DNS SANs, its
//!   SPIFFE ID, serial and expiry), read once per handshake.
//! - [`VerifiedClaims`]: the claims of a JWT the request's bearer token proved.
//!
//! Nothing here verifies a signature: TLS verifies certificates, the JWT filter tokens.
//! This crate only names what they proved, so authorization, access logs and headers
//! read one type.

mod claims;
mod peer;
mod spiffe;

pub use claims::VerifiedClaims;
pub use peer::PeerIdentity;
pub use spiffe::{SpiffeId, SpiffeIdError};
