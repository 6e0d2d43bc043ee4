//! Generates the gRPC client and server of the mesh CA's one call from Rust message
//! types (src/proto.rs), with no protobuf compiler: the service is Istio's
//! `istio.v1.auth.IstioCertificateService/CreateCertificate`, so an Istio agent can ask
//! Sinew's CA for a certificate and Sinew's proxy could ask istiod.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let service = tonic_build::manual::Service::builder()
        .name("IstioCertificateService")
        .package("istio.v1.auth")
        .method(
            tonic_build::manual::Method::builder()
                .name("create_certificate")
                .route_name("CreateCertificate")
                .input_type("crate::proto::IstioCertificateRequest")
                .output_type("crate::proto::IstioCertificateResponse")
                .codec_path("tonic_prost::ProstCodec")
                .build(),
        )
        .build();
    tonic_build::manual::Builder::new()
        .build_transport(false)
        .compile(&[service]);
}
