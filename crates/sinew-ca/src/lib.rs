//! The mesh CA's protocol and the workload side of it.
//!
//! - [`proto`] and [`service`]: Istio's certificate service
//!   (`istio.v1.auth.IstioCertificateService/CreateCertificate`): a CSR in, a chain out.
//!   `sinew control` serves it (crates/sinew-control/src/ca); the proxy calls it.
//! - [`workload`]: the proxy's side: it makes its own key (which never leaves it), asks
//!   for a certificate with a bootstrap credential (a Kubernetes service-account token or
//!   a per-workload token), then renews at half the lifetime, with jitter, proving
//!   itself with the certificate it holds (mTLS).
//! - [`agent`]: SDS on a local Unix socket for a proxy fed by an agent (an Envoy beside
//!   Sinew): the workload certificate with its key, and the trust bundle.

pub mod agent;
pub mod proto;
pub mod workload;

/// The generated client and server of the certificate service.
pub mod service {
    include!(concat!(
        env!("OUT_DIR"),
        "/istio.v1.auth.IstioCertificateService.rs"
    ));
}

/// The name the trust bundle has as an SDS secret, as in Istio.
pub const ROOT_CA_SECRET: &str = "ROOTCA";
