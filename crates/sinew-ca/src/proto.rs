//! The messages of the certificate service, written out in Rust rather than compiled
//! from a .proto: two messages, with the field numbers Istio's `ca.proto` gives them, so
//! the wire format is the same.

/// A certificate signing request and the lifetime asked for.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateRequest {
    /// The PEM-encoded PKCS #10 request. Only its public key is used: the CA writes the
    /// identity it authenticated, never the names the request asks for.
    #[prost(string, tag = "1")]
    pub csr: String,
    /// Seconds; 0 or more than the CA allows means the CA's own lifetime.
    #[prost(int64, tag = "3")]
    pub validity_duration: i64,
}

/// The issued chain: the workload certificate first, then each issuer up to the root.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateResponse {
    #[prost(string, repeated, tag = "1")]
    pub cert_chain: Vec<String>,
}
