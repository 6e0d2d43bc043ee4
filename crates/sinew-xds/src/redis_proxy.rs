//! Envoy's Redis proxy network filter (`envoy.filters.network.redis_proxy`) as a Redis
//! listener (`redis:`): prefix routes, the catch-all route, the operation timeout and
//! hash tags.
//!
//! Keys are placed on a cluster's endpoints by twemproxy's ketama continuum (MD5),
//! Sinew's one way to shard, not by the ring hash or Maglev of the cluster's
//! `lb_policy` that Envoy uses: a pool moved from Envoy keeps its data only if it was a
//! cache. `read_policy` is accepted whatever it says: it chooses among a Redis Cluster's
//! replicas, and Sinew's Redis clusters are primaries only, which is where every
//! command then goes (as Envoy sends them for a cluster without replicas).

use envoy_types::pb::envoy::extensions::filters::network::redis_proxy::v3::redis_proxy::prefix_routes::Route;
use envoy_types::pb::envoy::extensions::filters::network::redis_proxy::v3::RedisProxy;
use serde_json::{json, Map, Value};

use crate::convert::duration;
use crate::{Ctx, XdsError};

pub const TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy";

/// The `redis` section of a listener from a Redis proxy filter at `path`.
pub fn map(ctx: &Ctx, path: &str, mut redis: RedisProxy) -> Result<Value, XdsError> {
    let mut out = Map::new();
    redis.stat_prefix.clear();
    // Sinew's command times are histograms in seconds, whatever unit Envoy would use.
    redis.latency_in_micros = false;
    out.insert("hash".into(), json!("md5"));
    let spath = format!("{path}.settings");
    let mut settings = redis
        .settings
        .take()
        .ok_or_else(|| ctx.error(&spath, "is required (with op_timeout)"))?;
    let op_timeout = settings
        .op_timeout
        .take()
        .ok_or_else(|| ctx.error(format!("{spath}.op_timeout"), "is required"))?;
    out.insert("op_timeout".into(), json!(duration(&op_timeout)));
    out.insert(
        "enable_hashtagging".into(),
        json!(std::mem::take(&mut settings.enable_hashtagging)),
    );
    // Write batching: Sinew writes every command gathered in one pass at once anyway.
    settings.max_buffer_size_before_flush = 0;
    settings.buffer_flush_timeout = None;
    // Per-command statistics: Sinew counts commands per class always.
    settings.enable_command_stats = false;
    settings.read_policy = 0;
    ctx.only_supported(&spath, &settings)?;

    if let Some(mut routes) = redis.prefix_routes.take() {
        let rpath = format!("{path}.prefix_routes");
        out.insert(
            "case_insensitive".into(),
            json!(std::mem::take(&mut routes.case_insensitive)),
        );
        let mut mapped = Vec::new();
        for (i, route) in std::mem::take(&mut routes.routes).into_iter().enumerate() {
            let (prefix, cluster, remove_prefix) =
                prefix_route(ctx, &format!("{rpath}.routes[{i}]"), route)?;
            mapped.push(
                json!({"prefix": prefix, "cluster": cluster, "remove_prefix": remove_prefix}),
            );
        }
        out.insert("prefix_routes".into(), Value::Array(mapped));
        if let Some(catch_all) = routes.catch_all_route.take() {
            let (_, cluster, _) =
                prefix_route(ctx, &format!("{rpath}.catch_all_route"), catch_all)?;
            out.insert("catch_all_cluster".into(), json!(cluster));
        }
        ctx.only_supported(&rpath, &routes)?;
    }
    ctx.only_supported(path, &redis)?;
    Ok(Value::Object(out))
}

/// A route's prefix, cluster and `remove_prefix`.
fn prefix_route(
    ctx: &Ctx,
    path: &str,
    mut route: Route,
) -> Result<(String, String, bool), XdsError> {
    let prefix = std::mem::take(&mut route.prefix);
    let cluster = std::mem::take(&mut route.cluster);
    if cluster.is_empty() {
        return Err(ctx.error(format!("{path}.cluster"), "is required"));
    }
    let remove_prefix = std::mem::take(&mut route.remove_prefix);
    ctx.only_supported(path, &route)?;
    Ok((prefix, cluster, remove_prefix))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::bootstrap::load_str;
    use crate::test_fixtures::{network_filter_listener, refusal_of};

    fn bootstrap(fields: &str) -> String {
        network_filter_listener("envoy.filters.network.redis_proxy", TYPE_URL, fields)
    }

    fn error_of(fields: &str) -> String {
        refusal_of(&bootstrap(fields))
    }

    #[test]
    fn prefix_routes_the_catch_all_route_and_settings_map_onto_the_redis_listener() {
        let b = load_str(
            "envoy.yaml",
            &bootstrap(
                r#"          settings: { op_timeout: 0.25s, enable_hashtagging: true, read_policy: PREFER_REPLICA, max_buffer_size_before_flush: 1024 }
          latency_in_micros: true
          prefix_routes:
            case_insensitive: true
            routes:
            - { prefix: "user:", cluster: app, remove_prefix: true }
            catch_all_route: { cluster: app }
"#,
            ),
        )
        .unwrap_or_else(|d| panic!("{d}"));
        let redis = b.loaded.config.listeners[0]
            .redis
            .as_ref()
            .expect("a redis listener");
        assert_eq!(redis.op_timeout, Duration::from_millis(250));
        assert!(redis.enable_hashtagging && redis.case_insensitive);
        assert_eq!(redis.prefix_routes.len(), 1);
        assert_eq!(redis.prefix_routes[0].prefix, "user:");
        assert!(redis.prefix_routes[0].remove_prefix);
        assert_eq!(redis.catch_all_cluster.as_deref(), Some("app"));
        assert_eq!(redis.hash, sinew_config::redis::RedisHash::Md5);
    }

    #[test]
    fn what_sinew_cannot_do_is_refused_naming_the_field() {
        for (fields, field) in [
            ("          prefix_routes: { catch_all_route: { cluster: app } }\n", ".settings"),
            (
                "          settings: { op_timeout: 1s, enable_redirection: true }\n",
                "settings.enable_redirection",
            ),
            (
                "          settings: { op_timeout: 1s }\n          downstream_auth_passwords: [{ inline_string: x }]\n",
                "downstream_auth_passwords",
            ),
            (
                "          settings: { op_timeout: 1s }\n          prefix_routes: { routes: [{ prefix: a, cluster: app, request_mirror_policy: [{ cluster: app }] }] }\n",
                "prefix_routes.routes[0].request_mirror_policy",
            ),
        ] {
            let error = error_of(fields);
            assert!(error.contains(field), "{field}: {error}");
        }
    }
}
