//! Envoy's TLS transport sockets (`DownstreamTlsContext` on a filter chain,
//! `UpstreamTlsContext` on a cluster) mapped onto Sinew's listener and cluster `tls`.
//! Certificates and CAs given as files (`filename`) map; so do SDS secret references
//! (`tls_certificate_sds_secret_configs`, `validation_context_sds_secret_config`, also
//! inside `combined_validation_context`) whose `sds_config` is the ADS stream
//! (`ads: {}`) or a file (`path_config_source`, or the deprecated `path`): they become
//! Sinew's `{sds: NAME}` ([`sinew_config::tls::PemSource`]). Certificates, keys and CAs
//! written in the file (`inline_string`, `inline_bytes`) become Sinew's `{pem: TEXT}`,
//! checked here so a bad one is reported at its own field. An upstream context without
//! a validation context verifies nothing, as in Envoy: the cluster's `tls` gets
//! `verify: false`. Other config sources and every field Sinew does not honour are
//! refused by name.

use envoy_types::pb::envoy::config::core::v3::{
    config_source::ConfigSourceSpecifier, data_source::Specifier, ApiConfigSource, ApiVersion,
    ConfigSource, DataSource, TransportSocket,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::ValidationContextType, subject_alt_name_matcher::SanType,
    tls_parameters::TlsProtocol, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
    SubjectAltNameMatcher, TlsParameters, UpstreamTlsContext,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use serde_json::{json, Map, Value};
use sinew_config::tls::PemKind;

use crate::convert::decode;
use crate::{Ctx, XdsError};

pub(crate) const DOWNSTREAM: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
pub(crate) const UPSTREAM: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
const RAW_BUFFER: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer";

/// A filter chain's transport socket as a listener's `tls` (None for plaintext).
pub(crate) fn downstream(
    ctx: &Ctx,
    path: &str,
    socket: &TransportSocket,
) -> Result<Option<Value>, XdsError> {
    let Some((mut tls, path)) =
        context::<DownstreamTlsContext>(ctx, path, socket, DOWNSTREAM, "a listener")?
    else {
        return Ok(None);
    };
    let mut out = Map::new();
    if let Some(require) = tls.require_client_certificate.take() {
        out.insert("require_client_certificate".into(), json!(require.value));
    }
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::downstream_tls_context::SessionTicketKeysType;
    match tls.session_ticket_keys_type.take() {
        None | Some(SessionTicketKeysType::DisableStatelessSessionResumption(false)) => {}
        Some(SessionTicketKeysType::DisableStatelessSessionResumption(true)) => {
            out.insert("session_tickets".into(), json!(false));
        }
        Some(_) => {
            return Err(ctx.error(
                format!("{path}.session_ticket_keys"),
                "Sinew generates and rotates its own ticket keys; given keys are not supported",
            ))
        }
    }
    if tls.disable_stateful_session_resumption {
        out.insert("session_cache_size".into(), json!(0));
        tls.disable_stateful_session_resumption = false;
    }
    let common = tls.common_tls_context.take().unwrap_or_default();
    ctx.only_supported(&path, &tls)?;
    let common = common_context(ctx, &format!("{path}.common_tls_context"), common, &mut out)?;
    let Common {
        certificates,
        ca,
        sans,
    } = common;
    if certificates.is_empty() {
        return Err(ctx.error(
            format!("{path}.common_tls_context.tls_certificates"),
            "a listener's TLS needs at least one certificate",
        ));
    }
    out.insert("certificates".into(), Value::Array(certificates));
    if let Some(ca) = ca {
        out.insert("client_ca".into(), ca);
    }
    if !sans.is_empty() {
        out.insert("match_subject_alt_names".into(), Value::Array(sans));
    }
    Ok(Some(Value::Object(out)))
}

/// A cluster's transport socket as its `tls` (None for plaintext).
pub(crate) fn upstream(
    ctx: &Ctx,
    path: &str,
    socket: &TransportSocket,
) -> Result<Option<Value>, XdsError> {
    let Some((mut tls, path)) =
        context::<UpstreamTlsContext>(ctx, path, socket, UPSTREAM, "a cluster")?
    else {
        return Ok(None);
    };
    let mut out = Map::new();
    let sni = std::mem::take(&mut tls.sni);
    let common = tls.common_tls_context.take().unwrap_or_default();
    ctx.only_supported(&path, &tls)?;
    let mut unused = Map::new();
    let Common {
        certificates,
        ca,
        sans,
    } = common_context(
        ctx,
        &format!("{path}.common_tls_context"),
        common,
        &mut unused,
    )?;
    for key in ["alpn", "min_version", "max_version"] {
        if let Some(value) = unused.remove(key) {
            out.insert(key.into(), value);
        }
    }
    match ca {
        Some(ca) => {
            out.insert("ca".into(), ca);
        }
        // Envoy verifies nothing without a validation context (one with name matchers
        // but no CA is refused by Envoy itself, and here too).
        None if sans.is_empty() => {
            out.insert("verify".into(), json!(false));
        }
        None => {
            return Err(ctx.error(
                format!("{path}.common_tls_context.validation_context.trusted_ca"),
                "is required with match_typed_subject_alt_names (names are checked in a certificate whose chain is verified, as in Envoy)",
            ))
        }
    }
    if !sni.is_empty() {
        out.insert("sni".into(), json!(sni));
    } else if sans.is_empty() && out.contains_key("ca") {
        return Err(ctx.error(
            format!("{path}.sni"),
            "is required unless match_typed_subject_alt_names says who the upstream is",
        ));
    }
    match certificates.as_slice() {
        [] => {}
        [one] => {
            out.insert("cert".into(), one["cert"].clone());
            if let Some(key) = one.get("key") {
                out.insert("key".into(), key.clone());
            }
        }
        _ => {
            return Err(ctx.error(
                format!("{path}.common_tls_context.tls_certificates"),
                "an upstream connection presents one client certificate",
            ))
        }
    }
    if !sans.is_empty() {
        out.insert("match_subject_alt_names".into(), Value::Array(sans));
    }
    Ok(Some(Value::Object(out)))
}

/// A transport socket's TLS context of type `type_url` (for `side`, in errors), and
/// the path of its config; None for `raw_buffer` (plaintext).
fn context<M: prost::Message + Default>(
    ctx: &Ctx,
    path: &str,
    socket: &TransportSocket,
    type_url: &str,
    side: &str,
) -> Result<Option<(M, String)>, XdsError> {
    use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
    let path = format!("{path}.typed_config");
    let any = match &socket.config_type {
        Some(ConfigType::TypedConfig(any)) if any.type_url == RAW_BUFFER => return Ok(None),
        Some(ConfigType::TypedConfig(any)) => any,
        None if socket.name == "envoy.transport_sockets.raw_buffer" => return Ok(None),
        None => return Err(ctx.error(path, "is required")),
    };
    if any.type_url != type_url {
        return Err(ctx.error(
            path,
            format!(
                "transport socket {:?} is not supported by Sinew on {side}",
                any.type_url
            ),
        ));
    }
    let decoded = decode(ctx, &path, any)?;
    Ok(Some((decoded, path)))
}

struct Common {
    certificates: Vec<Value>,
    /// A file name, `{pem: TEXT}` or `{sds: NAME}`.
    ca: Option<Value>,
    sans: Vec<Value>,
}

/// What both sides share: certificates, the CA, SAN matchers, ALPN and versions
/// (written into `out` as `alpn`, `min_version`, `max_version`).
fn common_context(
    ctx: &Ctx,
    path: &str,
    mut common: CommonTlsContext,
    out: &mut Map<String, Value>,
) -> Result<Common, XdsError> {
    let mut certificates = Vec::new();
    for (i, mut cert) in std::mem::take(&mut common.tls_certificates)
        .into_iter()
        .enumerate()
    {
        let at = format!("{path}.tls_certificates[{i}]");
        let chain = pem(
            ctx,
            &format!("{at}.certificate_chain"),
            cert.certificate_chain.take(),
            PemKind::Certificates,
        )?;
        let key = pem(
            ctx,
            &format!("{at}.private_key"),
            cert.private_key.take(),
            PemKind::PrivateKey,
        )?;
        let mut entry = json!({"cert": chain, "key": key});
        if let Some(staple) = cert.ocsp_staple.take() {
            entry["ocsp_staple"] = json!(file(ctx, &format!("{at}.ocsp_staple"), Some(staple))?);
        }
        ctx.only_supported(&at, &cert)?;
        certificates.push(entry);
    }
    for (i, reference) in std::mem::take(&mut common.tls_certificate_sds_secret_configs)
        .into_iter()
        .enumerate()
    {
        let at = format!("{path}.tls_certificate_sds_secret_configs[{i}]");
        certificates.push(json!({"cert": sds_reference(ctx, &at, reference)?}));
    }
    let alpn = std::mem::take(&mut common.alpn_protocols);
    if !alpn.is_empty() {
        out.insert("alpn".into(), json!(alpn));
    }
    if let Some(params) = common.tls_params.take() {
        versions(ctx, &format!("{path}.tls_params"), params, out)?;
    }
    let (mut ca, mut sans) = (None, Vec::new());
    match common.validation_context_type.take() {
        None => {}
        Some(ValidationContextType::ValidationContext(mut v)) => {
            let at = format!("{path}.validation_context");
            if let Some(trusted) = v.trusted_ca.take() {
                ca = Some(pem(
                    ctx,
                    &format!("{at}.trusted_ca"),
                    Some(trusted),
                    PemKind::Certificates,
                )?);
            }
            for (i, m) in std::mem::take(&mut v.match_typed_subject_alt_names).into_iter().enumerate() {
                sans.push(san(ctx, &format!("{at}.match_typed_subject_alt_names[{i}]"), m)?);
            }
            ctx.only_supported(&at, &v)?;
        }
        Some(ValidationContextType::ValidationContextSdsSecretConfig(reference)) => {
            let at = format!("{path}.validation_context_sds_secret_config");
            ca = Some(sds_reference(ctx, &at, reference)?);
        }
        Some(ValidationContextType::CombinedValidationContext(mut combined)) => {
            // Envoy merges the secret into the default context: the secret's CA is the one
            // used, and the name matchers of both apply (the secret's are added when it
            // arrives).
            let at = format!("{path}.combined_validation_context");
            let Some(reference) = combined.validation_context_sds_secret_config.take() else {
                return Err(ctx.error(
                    format!("{at}.validation_context_sds_secret_config"),
                    "is required",
                ));
            };
            ca = Some(sds_reference(
                ctx,
                &format!("{at}.validation_context_sds_secret_config"),
                reference,
            )?);
            if let Some(mut default) = combined.default_validation_context.take() {
                let dat = format!("{at}.default_validation_context");
                if default.trusted_ca.is_some() {
                    return Err(ctx.error(
                        format!("{dat}.trusted_ca"),
                        "the CA comes from the SDS secret; a second one here is not supported by Sinew",
                    ));
                }
                for (i, m) in std::mem::take(&mut default.match_typed_subject_alt_names)
                    .into_iter()
                    .enumerate()
                {
                    sans.push(san(ctx, &format!("{dat}.match_typed_subject_alt_names[{i}]"), m)?);
                }
                ctx.only_supported(&dat, &default)?;
            }
            ctx.only_supported(&at, &combined)?;
        }
        Some(_) => {
            return Err(ctx.error(
                format!("{path}.validation_context_certificate_provider"),
                "certificate providers are not supported by Sinew: give validation_context or an SDS secret",
            ))
        }
    }
    ctx.only_supported(path, &common)?;
    Ok(Common {
        certificates,
        ca,
        sans,
    })
}

fn versions(
    ctx: &Ctx,
    path: &str,
    mut params: TlsParameters,
    out: &mut Map<String, Value>,
) -> Result<(), XdsError> {
    for (field, value, key) in [
        (
            "tls_minimum_protocol_version",
            std::mem::take(&mut params.tls_minimum_protocol_version),
            "min_version",
        ),
        (
            "tls_maximum_protocol_version",
            std::mem::take(&mut params.tls_maximum_protocol_version),
            "max_version",
        ),
    ] {
        let name = match TlsProtocol::try_from(value) {
            Ok(TlsProtocol::TlsAuto) => continue,
            Ok(TlsProtocol::TlSv12) => "TLSv1_2",
            Ok(TlsProtocol::TlSv13) => "TLSv1_3",
            // Sinew never speaks TLS 1.0 or 1.1; as a minimum they allow 1.2 anyway, which
            // is what a peer that Envoy would reach with them can speak too (a maximum of
            // 1.0 or 1.1 is refused below: Sinew cannot honour it).
            Ok(TlsProtocol::TlSv10 | TlsProtocol::TlSv11) if key == "min_version" => continue,
            _ => {
                return Err(ctx.error(
                    format!("{path}.{field}"),
                    "Sinew speaks TLS 1.2 and 1.3 only",
                ))
            }
        };
        out.insert(key.into(), json!(name));
    }
    if let (Some(min), Some(max)) = (out.get("min_version"), out.get("max_version")) {
        // The names sort as the versions do.
        if min.as_str() > max.as_str() {
            return Err(ctx.error(
                format!("{path}.tls_minimum_protocol_version"),
                format!("{min} is newer than tls_maximum_protocol_version {max}"),
            ));
        }
    }
    ctx.only_supported(path, &params)
}

pub(crate) fn san(ctx: &Ctx, path: &str, m: SubjectAltNameMatcher) -> Result<Value, XdsError> {
    let san_type = match SanType::try_from(m.san_type) {
        Ok(SanType::Uri) => "uri",
        Ok(SanType::Dns) => "dns",
        _ => {
            return Err(ctx.error(
                format!("{path}.san_type"),
                "Sinew matches URI and DNS subject alternative names",
            ))
        }
    };
    let matcher = m.matcher.unwrap_or_default();
    if matcher.ignore_case {
        return Err(ctx.error(
            format!("{path}.matcher.ignore_case"),
            "is not supported by Sinew",
        ));
    }
    let (kind, value) = match matcher.match_pattern {
        Some(MatchPattern::Exact(v)) => ("exact", v),
        Some(MatchPattern::Prefix(v)) => ("prefix", v),
        Some(MatchPattern::Suffix(v)) => ("suffix", v),
        Some(MatchPattern::Contains(v)) => ("contains", v),
        _ => {
            return Err(ctx.error(
                format!("{path}.matcher"),
                "Sinew matches names by exact, prefix, suffix or contains",
            ))
        }
    };
    Ok(json!({"san_type": san_type, kind: value}))
}

/// An SDS secret reference as Sinew's `{sds: NAME}`: on the ADS stream, or from a file
/// holding a `DiscoveryResponse`.
fn sds_reference(ctx: &Ctx, path: &str, reference: SdsSecretConfig) -> Result<Value, XdsError> {
    if reference.name.is_empty() {
        return Err(ctx.error(format!("{path}.name"), "is required"));
    }
    let Some(source) = reference.sds_config else {
        return Err(ctx.error(
            format!("{path}.sds_config"),
            "is required: without it the name is one of a bootstrap's static_resources.secrets, which an xDS resource cannot name",
        ));
    };
    let at = format!("{path}.sds_config");
    let ConfigSource {
        authorities,
        initial_fetch_timeout,
        resource_api_version,
        config_source_specifier,
    } = source;
    if !authorities.is_empty() {
        return Err(ctx.error(format!("{at}.authorities"), "is not supported by Sinew"));
    }
    if !matches!(
        ApiVersion::try_from(resource_api_version),
        Ok(ApiVersion::Auto | ApiVersion::V3)
    ) {
        return Err(ctx.error(
            format!("{at}.resource_api_version"),
            "Sinew speaks xDS v3 only",
        ));
    }
    let mut out = json!({"sds": reference.name});
    match config_source_specifier {
        Some(ConfigSourceSpecifier::Ads(_)) => {}
        #[allow(deprecated)]
        Some(ConfigSourceSpecifier::Path(file)) => {
            if file.is_empty() {
                return Err(ctx.error(format!("{at}.path"), "is required"));
            }
            out["path"] = json!(file);
        }
        Some(ConfigSourceSpecifier::PathConfigSource(source)) => {
            let (path, directory) = crate::convert::path_config_source(
                &format!("{at}.path_config_source"),
                source,
            )
            .map_err(|(field, why)| ctx.error(field, why))?;
            out["path"] = json!(path);
            if let Some(dir) = directory {
                out["watched_directory"] = json!(dir);
            }
        }
        Some(ConfigSourceSpecifier::ApiConfigSource(api)) => {
            if let Some(server) = sds_server(ctx, &format!("{at}.api_config_source"), api)? {
                out["server"] = json!(server);
            }
        }
        Some(ConfigSourceSpecifier::Self_(_)) | None => {
            return Err(ctx.error(
                at,
                "Sinew takes a secret on the ADS stream (`ads: {}`), from an SDS server (`api_config_source`) or from a file (`path_config_source`)",
            ))
        }
    }
    if let Some(d) = initial_fetch_timeout {
        out["initial_fetch_timeout"] = json!(crate::convert::duration(&d));
    }
    Ok(out)
}

/// An SDS server of its own (`api_config_source`), as the address the proxy dials; None
/// when it is the ADS stream's own cluster. One gRPC service, state of the world, as
/// Istio's `sds-grpc` is.
fn sds_server(ctx: &Ctx, path: &str, mut api: ApiConfigSource) -> Result<Option<String>, XdsError> {
    use envoy_types::pb::envoy::config::core::v3::api_config_source::ApiType;
    use envoy_types::pb::envoy::config::core::v3::grpc_service::TargetSpecifier;
    if !matches!(ApiType::try_from(api.api_type), Ok(ApiType::Grpc)) {
        return Err(ctx.error(
            format!("{path}.api_type"),
            "Sinew's SDS client speaks GRPC (state of the world) to an SDS server of its own",
        ));
    }
    api.api_type = 0;
    api.transport_api_version = 0;
    api.set_node_on_first_message_only = false;
    let services = std::mem::take(&mut api.grpc_services);
    ctx.only_supported(path, &api)?;
    let [service] = services.as_slice() else {
        return Err(ctx.error(
            format!("{path}.grpc_services"),
            "needs exactly one gRPC service",
        ));
    };
    let at = format!("{path}.grpc_services[0]");
    let mut rest = service.clone();
    rest.target_specifier = None;
    rest.timeout = None;
    ctx.only_supported(&at, &rest)?;
    match &service.target_specifier {
        Some(TargetSpecifier::EnvoyGrpc(grpc)) => {
            let cluster = &grpc.cluster_name;
            match crate::grpc_services::GrpcServices::resolve(cluster) {
                Some(crate::grpc_services::Target::Ads) => Ok(None),
                // The first address: a node agent's socket is one.
                Some(crate::grpc_services::Target::Servers(addresses)) => {
                    Ok(addresses.into_iter().next())
                }
                None => Err(ctx.error(
                    format!("{at}.envoy_grpc.cluster_name"),
                    format!("{cluster:?} is not a static cluster with endpoints (an SDS server's cluster must be in the bootstrap's static_resources)"),
                )),
            }
        }
        Some(TargetSpecifier::GoogleGrpc(grpc)) => {
            let mut unread = grpc.clone();
            unread.target_uri.clear();
            unread.stat_prefix.clear();
            ctx.only_supported(format_args!("{at}.google_grpc"), &unread)?;
            let target = grpc.target_uri.trim_start_matches("dns:///");
            if target.starts_with("unix:") || target.starts_with("http://") {
                Ok(Some(target.to_string()))
            } else if !target.contains("://") && !target.is_empty() {
                Ok(Some(format!("http://{target}")))
            } else {
                Err(ctx.error(
                    format!("{at}.google_grpc.target_uri"),
                    format!("{target:?}: Sinew reaches an SDS server at unix:PATH or HOST:PORT (plain gRPC)"),
                ))
            }
        }
        None => Err(ctx.error(at, "needs envoy_grpc or google_grpc")),
    }
}

/// A certificate chain, key or CA as Sinew's source: a file name, or `{pem: TEXT}` for
/// PEM written in the file (checked here, so an error names the Envoy field).
fn pem(
    ctx: &Ctx,
    path: &str,
    source: Option<DataSource>,
    kind: PemKind,
) -> Result<Value, XdsError> {
    let (text, at) = match source.and_then(|s| s.specifier) {
        Some(Specifier::Filename(f)) => return Ok(json!(f)),
        Some(Specifier::InlineString(text)) => (text, format!("{path}.inline_string")),
        Some(Specifier::InlineBytes(bytes)) => {
            let at = format!("{path}.inline_bytes");
            match String::from_utf8(bytes) {
                Ok(text) => (text, at),
                Err(_) => return Err(ctx.error(at, "is not PEM text (Sinew takes PEM, not DER)")),
            }
        }
        Some(Specifier::EnvironmentVariable(_)) => {
            return Err(ctx.error(
                format!("{path}.environment_variable"),
                "is not supported by Sinew: use `filename` or `inline_string`",
            ))
        }
        None => return Err(ctx.error(path, "is required")),
    };
    sinew_config::tls::check_inline_pem(&text, kind).map_err(|m| ctx.error(at, m))?;
    Ok(json!({"pem": text}))
}

/// A data source that must be a file (an OCSP staple: Sinew reads it from one).
fn file(ctx: &Ctx, path: &str, source: Option<DataSource>) -> Result<String, XdsError> {
    match source.and_then(|s| s.specifier) {
        Some(Specifier::Filename(f)) => Ok(f),
        Some(_) => Err(ctx.error(
            path,
            "Sinew reads an OCSP staple from a file: use `filename`",
        )),
        None => Err(ctx.error(path, "is required")),
    }
}
