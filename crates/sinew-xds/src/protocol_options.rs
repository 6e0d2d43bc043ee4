//! Envoy's HTTP protocol option messages, shared by the connection manager and clusters:
//! `Http2ProtocolOptions` (stream limit and flow-control windows), `Http1ProtocolOptions`
//! on a connection manager (what HTTP/1 requests it takes), and a cluster's
//! `common_http_protocol_options` (its pool's idle timeout). What Sinew cannot honour in
//! each is refused by name.

use envoy_types::pb::envoy::config::core::v3::{
    Http1ProtocolOptions, Http2ProtocolOptions, HttpProtocolOptions as CommonHttpProtocolOptions,
};
use serde_json::{json, Map, Value};

use crate::convert::duration;
use crate::{Ctx, XdsError};

/// HTTP/2's stream limit and windows, under the given model keys (`[streams, stream
/// window, connection window]`); `path` names the message for errors.
pub(crate) fn http2(
    ctx: &Ctx,
    path: &str,
    options: &Http2ProtocolOptions,
    keys: [&str; 3],
    out: &mut Map<String, Value>,
) -> Result<(), XdsError> {
    let mut rest = options.clone();
    let [streams_key, stream_window_key, connection_window_key] = keys;
    if let Some(streams) = rest.max_concurrent_streams.take() {
        // Envoy's bounds: 1 to 2^31 - 1.
        if !(1..=0x7fff_ffff).contains(&streams.value) {
            return Err(ctx.error(
                format!("{path}.max_concurrent_streams"),
                "must be 1 to 2147483647",
            ));
        }
        out.insert(streams_key.into(), json!(streams.value));
    }
    for (field, key, value) in [
        (
            "initial_stream_window_size",
            stream_window_key,
            rest.initial_stream_window_size.take(),
        ),
        (
            "initial_connection_window_size",
            connection_window_key,
            rest.initial_connection_window_size.take(),
        ),
    ] {
        if let Some(window) = value {
            if !sinew_config::model::HTTP2_WINDOW_RANGE.contains(&window.value) {
                return Err(ctx.error(
                    format!("{path}.{field}"),
                    "must be 65535 to 2147483647 bytes",
                ));
            }
            out.insert(key.into(), json!(window.value));
        }
    }
    ctx.only_supported(path, &rest)
}

/// A connection manager's `http_protocol_options`. Sinew's HTTP/1 server takes HTTP/1.0
/// requests and absolute-form targets whatever the listener says, so `accept_http_10:
/// true` and `allow_absolute_url` unset or true are what it does already; the rest
/// (`default_host_for_http_10`, header case, HTTP/1 trailers, ...) is refused by name.
pub(crate) fn http1_downstream(
    ctx: &Ctx,
    path: &str,
    options: &Http1ProtocolOptions,
) -> Result<(), XdsError> {
    let mut rest = options.clone();
    rest.accept_http_10 = false;
    if rest.allow_absolute_url.as_ref().is_some_and(|b| b.value) {
        rest.allow_absolute_url = None;
    }
    if rest.allow_absolute_url.is_some() {
        return Err(ctx.error(
            format!("{path}.allow_absolute_url"),
            "false is not supported by Sinew (it takes absolute-form request targets)",
        ));
    }
    ctx.only_supported(path, &rest)
}

/// A cluster's `common_http_protocol_options`: `idle_timeout` is the pool's (Envoy closes
/// an upstream connection with no stream for this long, as Sinew's pool does).
pub(crate) fn common_upstream(
    ctx: &Ctx,
    path: &str,
    options: &CommonHttpProtocolOptions,
    pool: &mut Map<String, Value>,
) -> Result<(), XdsError> {
    let mut rest = *options;
    if let Some(t) = rest.idle_timeout.take() {
        // Envoy: 0 disables the timeout; Sinew's pool always closes idle connections.
        if t.seconds <= 0 && t.nanos <= 0 {
            return Err(ctx.error(
                format!("{path}.idle_timeout"),
                "0 (no idle timeout) is not supported by Sinew's pools; give a duration",
            ));
        }
        pool.insert("idle_timeout".into(), json!(duration(&t)));
    }
    ctx.only_supported(path, &rest)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::bootstrap::load_str;
    use crate::test_fixtures::{http_listener, APP_CLUSTER};

    /// The test bootstrap with `hcm` added to the connection manager's fields and
    /// `cluster` to the `app` cluster's.
    fn bootstrap(hcm: &str, cluster: &str) -> String {
        let text = http_listener("").replacen(
            "          stat_prefix: ingress_http\n",
            &format!("          stat_prefix: ingress_http\n{hcm}"),
            1,
        );
        assert!(text.contains(APP_CLUSTER));
        format!("{text}{cluster}")
    }

    fn error_of(hcm: &str, cluster: &str) -> String {
        match load_str("envoy.yaml", &bootstrap(hcm, cluster)) {
            Ok(_) => panic!("accepted:\n{hcm}{cluster}"),
            Err(d) => d.to_string(),
        }
    }

    const UPSTREAM_OPTIONS: &str = r#"    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        common_http_protocol_options: {idle_timeout: 30s}
        explicit_http_config:
          http2_protocol_options:
"#;

    #[test]
    fn http2_stream_limits_and_windows_map_on_the_listener_and_the_cluster_pool() {
        let b = load_str(
            "envoy.yaml",
            &bootstrap(
                "          http2_protocol_options: {max_concurrent_streams: 50, initial_stream_window_size: 131072, initial_connection_window_size: 1048576}\n          http_protocol_options: {accept_http_10: true, allow_absolute_url: true}\n",
                &format!("{UPSTREAM_OPTIONS}            max_concurrent_streams: 7\n            initial_stream_window_size: 65536\n            initial_connection_window_size: 262144\n"),
            ),
        )
        .unwrap_or_else(|d| panic!("{d}"));
        let config = &b.loaded.config;
        let h2 = config.listeners[0].http.as_ref().unwrap().http2;
        assert_eq!(h2.max_concurrent_streams, Some(50));
        assert_eq!(h2.initial_stream_window_size, Some(131072));
        assert_eq!(h2.initial_connection_window_size, Some(1048576));
        let cluster = &config.clusters[0];
        assert_eq!(
            cluster.protocol,
            sinew_config::model::UpstreamProtocol::Http2
        );
        assert_eq!(cluster.pool.http2_max_concurrent_streams, 7);
        assert_eq!(cluster.pool.http2_initial_stream_window_size, Some(65536));
        assert_eq!(
            cluster.pool.http2_initial_connection_window_size,
            Some(262144)
        );
        assert_eq!(cluster.pool.idle_timeout, Duration::from_secs(30));
    }

    #[test]
    fn the_deprecated_cluster_http2_protocol_options_map_too() {
        let b = load_str(
            "envoy.yaml",
            &bootstrap(
                "",
                "    http2_protocol_options: {max_concurrent_streams: 3}\n",
            ),
        )
        .unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(
            b.loaded.config.clusters[0]
                .pool
                .http2_max_concurrent_streams,
            3
        );
    }

    #[test]
    fn protocol_options_sinew_cannot_honour_are_refused_by_name() {
        let hcm_path = "filter_chains[0].filters[0].typed_config";
        for (hcm, cluster, want) in [
            (
                "          http2_protocol_options: {hpack_table_size: 0}\n",
                String::new(),
                format!("{hcm_path}.http2_protocol_options.hpack_table_size: is not supported"),
            ),
            (
                "          http2_protocol_options: {allow_connect: true}\n",
                String::new(),
                format!("{hcm_path}.http2_protocol_options.allow_connect: is not supported"),
            ),
            (
                "          http2_protocol_options: {initial_stream_window_size: 1024}\n",
                String::new(),
                format!("{hcm_path}.http2_protocol_options.initial_stream_window_size: must be 65535"),
            ),
            (
                "          http_protocol_options: {default_host_for_http_10: example.com}\n",
                String::new(),
                format!("{hcm_path}.http_protocol_options.default_host_for_http_10: is not supported"),
            ),
            (
                "          http_protocol_options: {allow_absolute_url: false}\n",
                String::new(),
                format!("{hcm_path}.http_protocol_options.allow_absolute_url: false is not supported"),
            ),
            (
                "          http_protocol_options: {header_key_format: {proper_case_words: {}}}\n",
                String::new(),
                format!("{hcm_path}.http_protocol_options.header_key_format: is not supported"),
            ),
            (
                "",
                format!("{UPSTREAM_OPTIONS}            connection_keepalive: {{interval: 1s}}\n"),
                "explicit_http_config.http2_protocol_options.connection_keepalive: is not supported".into(),
            ),
            (
                "",
                UPSTREAM_OPTIONS.replace("{idle_timeout: 30s}", "{max_requests_per_connection: 10}") + "            {}\n",
                "common_http_protocol_options.max_requests_per_connection: is not supported".into(),
            ),
            (
                "",
                UPSTREAM_OPTIONS.replace("{idle_timeout: 30s}", "{idle_timeout: 0s}") + "            {}\n",
                "common_http_protocol_options.idle_timeout: 0 (no idle timeout) is not supported".into(),
            ),
        ] {
            let e = error_of(hcm, &cluster);
            assert!(e.contains(&want), "want {want:?} in:\n{e}");
        }
    }
}
