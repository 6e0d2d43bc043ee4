//! Envoy `Secret` resources as the proxy puts them in force: a certificate with its key,
//! or a validation context (trusted CA and subject-alternative-name matchers), checked
//! field by field so a bad secret is refused naming the field at fault. Secrets come over
//! SDS (on the ADS stream, or from a node agent) or from a file holding a
//! `DiscoveryResponse` (Envoy's `path_config_source`), which [`parse_file`] reads.

use envoy_types::pb::envoy::config::core::v3::{data_source::Specifier, DataSource};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{secret, Secret};
use prost::Message as _;
use sinew_config::tls::SanMatch;

use crate::{Ctx, XdsError};

/// The type URL of a `Secret`.
pub const SECRET_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// PEM given in a secret: inline, or a file on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pem {
    Inline(Vec<u8>),
    File(String),
}

impl Pem {
    /// The bytes (a file is read now); the error names the file.
    pub fn read(&self) -> Result<Vec<u8>, String> {
        match self {
            Pem::Inline(bytes) => Ok(bytes.clone()),
            Pem::File(path) => {
                std::fs::read(path).map_err(|e| format!("cannot read {path:?}: {e}"))
            }
        }
    }
}

/// What a secret holds, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Material {
    Certificate {
        chain: Pem,
        key: Pem,
    },
    Validation {
        trusted_ca: Pem,
        sans: Vec<SanMatch>,
    },
}

/// Checks a secret and takes it apart; the error names the secret and the field.
pub fn material(secret: &Secret) -> Result<Material, XdsError> {
    let ctx = Ctx::new("secret", &secret.name);
    if secret.name.is_empty() {
        return Err(ctx.error("name", "is required"));
    }
    match &secret.r#type {
        Some(secret::Type::TlsCertificate(c)) => {
            let mut rest = c.clone();
            let chain = pem(
                &ctx,
                "tls_certificate.certificate_chain",
                rest.certificate_chain.take(),
            )?;
            let key = pem(&ctx, "tls_certificate.private_key", rest.private_key.take())?;
            ctx.only_supported("tls_certificate", &rest)?;
            Ok(Material::Certificate { chain, key })
        }
        Some(secret::Type::ValidationContext(v)) => {
            let mut rest = v.clone();
            let trusted_ca = pem(
                &ctx,
                "validation_context.trusted_ca",
                rest.trusted_ca.take(),
            )?;
            let mut sans = Vec::new();
            for (i, m) in std::mem::take(&mut rest.match_typed_subject_alt_names)
                .into_iter()
                .enumerate()
            {
                let at = format!("validation_context.match_typed_subject_alt_names[{i}]");
                let value = crate::tls_context::san(&ctx, &at, m)?;
                let san: SanMatch = serde_json::from_value(value)
                    .map_err(|e| ctx.error(at, format!("does not map: {e}")))?;
                sans.push(san);
            }
            ctx.only_supported("validation_context", &rest)?;
            Ok(Material::Validation { trusted_ca, sans })
        }
        Some(secret::Type::SessionTicketKeys(_)) => Err(ctx.error(
            "session_ticket_keys",
            "Sinew generates and rotates its own ticket keys; given keys are not supported",
        )),
        Some(secret::Type::GenericSecret(_)) => {
            Err(ctx.error("generic_secret", "is not supported by Sinew"))
        }
        None => Err(ctx.error("", "needs tls_certificate or validation_context")),
    }
}

/// A data source in a pushed secret: inline (bytes or string) or a file.
fn pem(ctx: &Ctx, path: &str, source: Option<DataSource>) -> Result<Pem, XdsError> {
    match source.and_then(|s| s.specifier) {
        Some(Specifier::InlineBytes(b)) => Ok(Pem::Inline(b)),
        Some(Specifier::InlineString(s)) => Ok(Pem::Inline(s.into_bytes())),
        Some(Specifier::Filename(f)) => Ok(Pem::File(f)),
        Some(Specifier::EnvironmentVariable(_)) => Err(ctx.error(
            format!("{path}.environment_variable"),
            "is not supported by Sinew: give the PEM inline or as a file",
        )),
        None => Err(ctx.error(path, "is required")),
    }
}

/// The secrets in a file holding a `DiscoveryResponse` (YAML or JSON), as Envoy's
/// `path_config_source` reads: `resources` of `@type` Secret ([`crate::resource_file`]).
/// `name` is the file's name in errors, which give its line, column and field.
pub fn parse_file(name: &str, text: &str) -> Result<Vec<Secret>, String> {
    let read = crate::resource_file::parse(name, text, SECRET_TYPE).map_err(|d| d.to_string())?;
    read.resources
        .iter()
        .enumerate()
        .map(|(i, any)| {
            Secret::decode(any.value.as_slice())
                .map_err(|e| format!("{name}: resources[{i}]: does not decode: {e}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_discovery_response_file_yields_its_secrets_and_each_shape_is_checked() {
        let text = r#"
version_info: "1"
resources:
  - "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret
    name: server
    tls_certificate:
      certificate_chain: {inline_string: "CHAIN"}
      private_key: {filename: /etc/key.pem}
  - "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret
    name: ca
    validation_context:
      trusted_ca: {inline_bytes: "Q0E="}
      match_typed_subject_alt_names:
        - {san_type: URI, matcher: {prefix: "spiffe://td/"}}
"#;
        let secrets = parse_file("s.yaml", text).unwrap();
        assert_eq!(
            material(&secrets[0]).unwrap(),
            Material::Certificate {
                chain: Pem::Inline(b"CHAIN".to_vec()),
                key: Pem::File("/etc/key.pem".into())
            }
        );
        let Material::Validation { trusted_ca, sans } = material(&secrets[1]).unwrap() else {
            panic!("a validation context")
        };
        assert_eq!(trusted_ca, Pem::Inline(b"CA".to_vec()));
        assert_eq!(sans[0].prefix.as_deref(), Some("spiffe://td/"));
    }

    #[test]
    fn a_bad_file_names_the_field_at_fault() {
        for (text, expected) in [
            ("resources: 3", "s.yaml:1:1: resources"),
            ("hello: 1\nresources: []", "s.yaml:1:1: hello: is not a field"),
            (
                "resources: [{\"@type\": type.googleapis.com/envoy.config.cluster.v3.Cluster, name: x}]",
                "resources[0]: @type \"type.googleapis.com/envoy.config.cluster.v3.Cluster\": this file must hold resources of type type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
            ),
            (
                "resources: [{\"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret, name: x, tls_certificate: {certificate_chain: {bogus: 1}}}]",
                "s.yaml:1:140: resources[0].tls_certificate.certificate_chain.bogus: is not a field",
            ),
            ("[1, 2]", "s.yaml:1:1:"),
        ] {
            let err = parse_file("s.yaml", text).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn a_bad_secret_is_refused_naming_its_field() {
        use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
            CertificateValidationContext, TlsCertificate,
        };
        let inline = |s: &str| DataSource {
            specifier: Some(Specifier::InlineString(s.into())),
            ..Default::default()
        };
        let cases = [
            (
                Secret {
                    name: "c".into(),
                    r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                        certificate_chain: Some(inline("x")),
                        ..Default::default()
                    })),
                },
                "secret \"c\": tls_certificate.private_key: is required",
            ),
            (
                Secret {
                    name: "c".into(),
                    r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                        certificate_chain: Some(inline("x")),
                        private_key: Some(inline("y")),
                        password: Some(inline("z")),
                        ..Default::default()
                    })),
                },
                "secret \"c\": tls_certificate.password: is not supported",
            ),
            (
                Secret {
                    name: "v".into(),
                    r#type: Some(secret::Type::ValidationContext(CertificateValidationContext {
                        trusted_ca: Some(DataSource {
                            specifier: Some(Specifier::EnvironmentVariable("CA".into())),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })),
                },
                "secret \"v\": validation_context.trusted_ca.environment_variable: is not supported",
            ),
            (
                Secret {
                    name: "v".into(),
                    r#type: None,
                },
                "needs tls_certificate or validation_context",
            ),
            (Secret::default(), "name: is required"),
        ];
        for (secret, expected) in cases {
            let err = material(&secret).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
    }
}
