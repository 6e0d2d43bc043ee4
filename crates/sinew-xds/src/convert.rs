//! Small conversions between Envoy's protobuf spellings and Sinew's model.

use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::{
    address, socket_address, Address, ConfigSource, Metadata, SocketAddress,
};
use envoy_types::pb::google::protobuf::value::Kind;
use envoy_types::pb::google::protobuf::Duration;
use std::collections::BTreeMap;

use crate::{Ctx, XdsError};

/// A protobuf duration as Sinew writes durations (`1500ms`).
pub fn duration(d: &Duration) -> String {
    let millis = d.seconds.max(0) as f64 * 1000.0 + d.nanos.max(0) as f64 / 1e6;
    format!("{millis}ms")
}

/// `socket_address {address, port_value}` as `ip:port` (`[v6]:port`).
pub fn socket_address(
    ctx: &Ctx,
    path: impl std::fmt::Display,
    address: Option<Address>,
) -> Result<String, XdsError> {
    let Some(Address {
        address: Some(address::Address::SocketAddress(socket)),
    }) = address
    else {
        return Err(ctx.error(path.to_string(), "must be a socket_address"));
    };
    // Every field by name, not `only_supported`: this runs once per endpoint of every
    // EDS update, where comparing empty strings is slow (see `endpoint::endpoints`).
    let SocketAddress {
        protocol,
        address: host,
        resolver_name,
        ipv4_compat,
        network_namespace_filepath,
        port_specifier,
    } = socket;
    let unsupported = |field: &str| {
        ctx.error(
            format!("{path}.socket_address.{field}"),
            "is not supported by Sinew",
        )
    };
    // TCP is the default protocol (0); UDP is not served.
    if protocol != 0 {
        return Err(unsupported("protocol"));
    }
    if !resolver_name.is_empty() {
        return Err(unsupported("resolver_name"));
    }
    if ipv4_compat {
        return Err(unsupported("ipv4_compat"));
    }
    if !network_namespace_filepath.is_empty() {
        return Err(unsupported("network_namespace_filepath"));
    }
    let port = match port_specifier {
        Some(socket_address::PortSpecifier::PortValue(p)) => p,
        Some(socket_address::PortSpecifier::NamedPort(_)) => {
            return Err(ctx.error(
                format!("{path}.socket_address.named_port"),
                "is not supported by Sinew",
            ))
        }
        None => 0,
    };
    if port > u32::from(u16::MAX) {
        return Err(ctx.error(format!("{path}.socket_address.port_value"), "is not a port"));
    }
    Ok(if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

/// `filter_metadata["envoy.lb"]` as string labels: what Envoy's subset load balancer
/// reads on endpoints and routes' `metadata_match`, and what Sinew's labels are.
pub fn labels(metadata: Option<&Metadata>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(lb) = metadata.and_then(|m| m.filter_metadata.get("envoy.lb")) {
        for (key, value) in &lb.fields {
            let text = match &value.kind {
                Some(Kind::StringValue(s)) => s.clone(),
                Some(Kind::NumberValue(n)) => n.to_string(),
                Some(Kind::BoolValue(b)) => b.to_string(),
                _ => continue,
            };
            out.insert(key.clone(), text);
        }
    }
    out
}

/// Envoy's default `initial_fetch_timeout`.
pub const DEFAULT_INITIAL_FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Sinew asks its own `--xds` servers for everything: a config source may say ADS or an
/// API source, never a file. Returns how long what waits for the resource it names
/// waits (`initial_fetch_timeout`: 15 s unless set; 0 = for ever).
pub fn config_source(
    ctx: &Ctx,
    path: &str,
    source: Option<&ConfigSource>,
) -> Result<Option<std::time::Duration>, XdsError> {
    match source.and_then(|c| c.config_source_specifier.as_ref()) {
        None
        | Some(ConfigSourceSpecifier::Ads(_))
        | Some(ConfigSourceSpecifier::ApiConfigSource(_)) => {}
        Some(_) => {
            return Err(ctx.error(
                path,
                "only ADS or an API config source is supported by Sinew (not files)",
            ))
        }
    }
    let timeout = match source.and_then(|c| c.initial_fetch_timeout.as_ref()) {
        None => DEFAULT_INITIAL_FETCH_TIMEOUT,
        Some(d) => std::time::Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32),
    };
    Ok((!timeout.is_zero()).then_some(timeout))
}

/// Decodes a `typed_config`; the error names its path.
pub(crate) fn decode<M: prost::Message + Default>(
    ctx: &Ctx,
    path: &str,
    any: &envoy_types::pb::google::protobuf::Any,
) -> Result<M, XdsError> {
    M::decode(any.value.as_slice()).map_err(|e| {
        ctx.error(
            format!("{path}.typed_config"),
            format!("does not decode: {e}"),
        )
    })
}

/// A `PathConfigSource` checked: its path and watched directory, or the field at fault
/// (under `at`) and why. Used for listener, cluster and secret files alike.
pub(crate) fn path_config_source(
    at: &str,
    source: envoy_types::pb::envoy::config::core::v3::PathConfigSource,
) -> Result<(String, Option<String>), (String, &'static str)> {
    if source.path.is_empty() {
        return Err((format!("{at}.path"), "is required"));
    }
    if source.poll_interval.is_some() {
        return Err((
            format!("{at}.poll_interval"),
            "is not supported by Sinew: it polls the file (and watched_directory) every second",
        ));
    }
    let directory = match source.watched_directory {
        Some(dir) if dir.path.is_empty() => {
            return Err((format!("{at}.watched_directory.path"), "is required"))
        }
        Some(dir) => Some(dir.path),
        None => None,
    };
    Ok((source.path, directory))
}
