//! A bootstrap's `static_resources.secrets`, resolved where transport sockets name them.
//!
//! A TLS context may name a secret instead of holding it:
//! `tls_certificate_sds_secret_configs: [{name}]` and
//! `validation_context_sds_secret_config: {name}` (also inside
//! `combined_validation_context`). Without an `sds_config` the name is one of the
//! bootstrap's static secrets; this module puts that secret's certificate or validation
//! context in place of the reference before the listener and cluster mappers run, so a
//! named secret maps exactly as the same fields written inline do (files, watched and
//! re-read; or PEM written in the file). References with an `sds_config` (served over SDS or from a file) are left
//! for the mappers, which map them to Sinew's `{sds: NAME}` (see `tls_context`).
//!
//! A secret is checked where it is defined: only what Sinew can serve —
//! `certificate_chain`, `private_key`, `trusted_ca` as `filename` or PEM
//! (`inline_string`, `inline_bytes`), `ocsp_staple` as `filename`, and
//! `match_typed_subject_alt_names` — and an error names its path under
//! `static_resources.secrets[i]`.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{
    data_source::Specifier, transport_socket::ConfigType, DataSource, TransportSocket,
};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::ValidationContextType, secret, CertificateValidationContext,
    CommonTlsContext, DownstreamTlsContext, Secret, TlsCertificate, UpstreamTlsContext,
};
use prost::Message;
use sinew_config::tls::{check_inline_pem, PemKind};
use sinew_config::ConfigError;

use crate::tls_context::{DOWNSTREAM, UPSTREAM};

/// The secrets by name, each checked.
struct Secrets {
    certificates: BTreeMap<String, TlsCertificate>,
    validation: BTreeMap<String, CertificateValidationContext>,
}

/// Replaces every reference to a static secret in the listeners' and clusters'
/// transport sockets by the secret itself.
pub(crate) fn resolve(
    listeners: &mut [Listener],
    clusters: &mut [Cluster],
    secrets: Vec<Secret>,
) -> Result<(), ConfigError> {
    let secrets = check(secrets)?;
    for (i, listener) in listeners.iter_mut().enumerate() {
        for (j, chain) in listener.filter_chains.iter_mut().enumerate() {
            if let Some(socket) = &mut chain.transport_socket {
                let path = format!("static_resources.listeners[{i}].filter_chains[{j}].transport_socket.typed_config.common_tls_context");
                in_socket::<DownstreamTlsContext>(socket, DOWNSTREAM, &path, &secrets, |t| {
                    &mut t.common_tls_context
                })?;
            }
        }
    }
    for (i, cluster) in clusters.iter_mut().enumerate() {
        if let Some(socket) = &mut cluster.transport_socket {
            let path = format!(
                "static_resources.clusters[{i}].transport_socket.typed_config.common_tls_context"
            );
            in_socket::<UpstreamTlsContext>(socket, UPSTREAM, &path, &secrets, |t| {
                &mut t.common_tls_context
            })?;
        }
    }
    Ok(())
}

fn check(secrets: Vec<Secret>) -> Result<Secrets, ConfigError> {
    let mut out = Secrets {
        certificates: BTreeMap::new(),
        validation: BTreeMap::new(),
    };
    let mut names = BTreeMap::new();
    for (i, s) in secrets.into_iter().enumerate() {
        let path = format!("static_resources.secrets[{i}]");
        if s.name.is_empty() {
            return Err(ConfigError::new(format!("{path}.name"), "is required"));
        }
        if let Some(first) = names.insert(s.name.clone(), i) {
            return Err(ConfigError::new(
                format!("{path}.name"),
                format!(
                    "{:?} is already the name of static_resources.secrets[{first}]",
                    s.name
                ),
            ));
        }
        match s.r#type {
            Some(secret::Type::TlsCertificate(c)) => {
                let at = format!("{path}.tls_certificate");
                let mut rest = c.clone();
                for (field, source, kind) in [
                    (
                        "certificate_chain",
                        rest.certificate_chain.take(),
                        PemKind::Certificates,
                    ),
                    ("private_key", rest.private_key.take(), PemKind::PrivateKey),
                ] {
                    file(&format!("{at}.{field}"), source.as_ref(), true, Some(kind))?;
                }
                file(
                    &format!("{at}.ocsp_staple"),
                    rest.ocsp_staple.take().as_ref(),
                    false,
                    None,
                )?;
                only_files(&at, &rest)?;
                out.certificates.insert(s.name, c);
            }
            Some(secret::Type::ValidationContext(v)) => {
                let at = format!("{path}.validation_context");
                let mut rest = v.clone();
                file(
                    &format!("{at}.trusted_ca"),
                    rest.trusted_ca.take().as_ref(),
                    false,
                    Some(PemKind::Certificates),
                )?;
                rest.match_typed_subject_alt_names.clear();
                only_files(&at, &rest)?;
                out.validation.insert(s.name, v);
            }
            Some(secret::Type::SessionTicketKeys(_)) => {
                return Err(ConfigError::new(
                    format!("{path}.session_ticket_keys"),
                    "Sinew generates and rotates its own ticket keys; given keys are not supported",
                ))
            }
            Some(secret::Type::GenericSecret(_)) => {
                return Err(ConfigError::new(
                    format!("{path}.generic_secret"),
                    "is not supported by Sinew",
                ))
            }
            None => {
                return Err(ConfigError::new(
                    path,
                    "needs tls_certificate or validation_context",
                ))
            }
        }
    }
    Ok(out)
}

/// A data source of a secret: a file (Sinew watches and re-reads it) or, where `inline`
/// says what it must hold, PEM text, checked here.
fn file(
    path: &str,
    source: Option<&DataSource>,
    required: bool,
    inline: Option<PemKind>,
) -> Result<(), ConfigError> {
    let (text, at) = match source.map(|s| &s.specifier) {
        Some(Some(Specifier::Filename(_))) => return Ok(()),
        None if !required => return Ok(()),
        None | Some(None) => return Err(ConfigError::new(path, "is required")),
        Some(Some(Specifier::InlineString(text))) => {
            (text.as_bytes(), format!("{path}.inline_string"))
        }
        Some(Some(Specifier::InlineBytes(bytes))) => {
            (bytes.as_slice(), format!("{path}.inline_bytes"))
        }
        Some(Some(Specifier::EnvironmentVariable(_))) => {
            return Err(ConfigError::new(
                format!("{path}.environment_variable"),
                "is not supported by Sinew: use `filename` or `inline_string`",
            ))
        }
    };
    let Some(kind) = inline else {
        return Err(ConfigError::new(
            path,
            "Sinew reads an OCSP staple from a file: use `filename`",
        ));
    };
    let text = std::str::from_utf8(text)
        .map_err(|_| ConfigError::new(&at, "is not PEM text (Sinew takes PEM, not DER)"))?;
    check_inline_pem(text, kind).map_err(|m| ConfigError::new(at, m))
}

fn only_files<M: std::fmt::Debug + Default + PartialEq>(
    path: &str,
    rest: &M,
) -> Result<(), ConfigError> {
    crate::unsupported::first_set_field(rest)
        .map_err(|field| ConfigError::new(format!("{path}.{field}"), "is not supported by Sinew"))
}

/// Resolves the references in one transport socket whose TLS context is of `type_url`.
fn in_socket<M: Message + Default>(
    socket: &mut TransportSocket,
    type_url: &str,
    path: &str,
    secrets: &Secrets,
    common: impl Fn(&mut M) -> &mut Option<CommonTlsContext>,
) -> Result<(), ConfigError> {
    let Some(ConfigType::TypedConfig(any)) = &mut socket.config_type else {
        return Ok(());
    };
    if any.type_url != type_url {
        return Ok(());
    }
    // An undecodable context is left for the mapper, which says so at its path.
    let Ok(mut context) = M::decode(any.value.as_slice()) else {
        return Ok(());
    };
    let Some(tls) = common(&mut context) else {
        return Ok(());
    };
    if inline(tls, path, secrets)? {
        any.value = context.encode_to_vec();
    }
    Ok(())
}

/// Puts the static secrets a context names in place; whether anything changed.
fn inline(
    common: &mut CommonTlsContext,
    path: &str,
    secrets: &Secrets,
) -> Result<bool, ConfigError> {
    let mut changed = false;
    let references = std::mem::take(&mut common.tls_certificate_sds_secret_configs);
    for (k, reference) in references.into_iter().enumerate() {
        if reference.sds_config.is_some() {
            common.tls_certificate_sds_secret_configs.push(reference);
            continue;
        }
        let cert = secrets.certificates.get(&reference.name).ok_or_else(|| {
            ConfigError::new(
                format!("{path}.tls_certificate_sds_secret_configs[{k}].name"),
                missing(&reference.name, "tls_certificate"),
            )
        })?;
        common.tls_certificates.push(cert.clone());
        changed = true;
    }
    let resolved = match common.validation_context_type.take() {
        Some(ValidationContextType::ValidationContextSdsSecretConfig(reference))
            if reference.sds_config.is_none() =>
        {
            let at = format!("{path}.validation_context_sds_secret_config.name");
            let found = validation(secrets, &reference.name, &at)?;
            ValidationContextType::ValidationContext(found.clone())
        }
        Some(ValidationContextType::CombinedValidationContext(combined))
            if combined
                .validation_context_sds_secret_config
                .as_ref()
                .is_some_and(|r| r.sds_config.is_none()) =>
        {
            let mut providers = combined.clone();
            providers.default_validation_context = None;
            providers.validation_context_sds_secret_config = None;
            if providers != Default::default() {
                // Certificate providers: left in place for the mapper to refuse.
                common.validation_context_type =
                    Some(ValidationContextType::CombinedValidationContext(combined));
                return Ok(changed);
            }
            let name = combined
                .validation_context_sds_secret_config
                .map(|r| r.name)
                .unwrap_or_default();
            let at = format!(
                "{path}.combined_validation_context.validation_context_sds_secret_config.name"
            );
            let found = validation(secrets, &name, &at)?;
            // Envoy merges the secret into the default context: its CA wins, and the
            // name matchers of both apply.
            let mut merged = combined.default_validation_context.unwrap_or_default();
            if found.trusted_ca.is_some() {
                merged.trusted_ca = found.trusted_ca.clone();
            }
            merged
                .match_typed_subject_alt_names
                .extend(found.match_typed_subject_alt_names.iter().cloned());
            ValidationContextType::ValidationContext(merged)
        }
        other => {
            common.validation_context_type = other;
            return Ok(changed);
        }
    };
    common.validation_context_type = Some(resolved);
    Ok(true)
}

fn validation<'a>(
    secrets: &'a Secrets,
    name: &str,
    path: &str,
) -> Result<&'a CertificateValidationContext, ConfigError> {
    secrets
        .validation
        .get(name)
        .ok_or_else(|| ConfigError::new(path, missing(name, "validation_context")))
}

fn missing(name: &str, kind: &str) -> String {
    format!("no secret {name:?} with a {kind} in static_resources.secrets (a reference without sds_config names a static secret)")
}
