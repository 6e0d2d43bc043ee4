//! Envoy's local rate limit HTTP filter (`envoy.filters.http.local_ratelimit`): its
//! config in the HTTP connection manager's filter chain (the listener level) and in the
//! `typed_per_filter_config` of virtual hosts and routes, mapped to the model's
//! `local_rate_limit`. Listeners mapped from Envoy's API take the model's
//! `local_rate_limit_levels: most_specific`, so a route's config replaces its virtual
//! host's, which replaces the listener's, as in Envoy.
//!
//! Sinew enforces a limit or does not: `filter_enabled` and `filter_enforced` must each be
//! 0% or 100% (a `runtime_key` is read as its `default_value`, since Sinew has no runtime),
//! and there is no shadow mode. Descriptors, per-connection buckets and custom statuses
//! are refused by name.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::RuntimeFractionalPercent;
use envoy_types::pb::envoy::extensions::filters::http::local_ratelimit::v3::LocalRateLimit;
use envoy_types::pb::envoy::r#type::v3::fractional_percent::DenominatorType;
use envoy_types::pb::google::protobuf::Any;
use serde_json::{json, Map, Value};

use crate::convert::duration;
use crate::{Ctx, XdsError};

pub(crate) const TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit";

/// Envoy's `XRateLimitHeadersRfcVersion::DRAFT_VERSION_03`.
const DRAFT_VERSION_03: i32 = 1;

/// Which level a config sits at: the filter chain's may leave out the token bucket (it
/// then limits nothing itself); a per-route config must have one and must enforce.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    Listener,
    PerRoute,
}

/// Decodes a `LocalRateLimit` found at `path`.
pub(crate) fn decode(ctx: &Ctx, path: &str, any: &Any) -> Result<LocalRateLimit, XdsError> {
    prost::Message::decode(any.value.as_slice())
        .map_err(|e| ctx.error(path, format!("does not decode: {e}")))
}

/// The model's `local_rate_limit` for one config, or None when it enforces nothing.
pub(crate) fn map(
    ctx: &Ctx,
    path: &str,
    mut config: LocalRateLimit,
    level: Level,
) -> Result<Option<Value>, XdsError> {
    config.stat_prefix.clear();
    if let Some(status) = config.status.take() {
        // Envoy answers 429 for any code below 400, as Sinew always does.
        if status.code >= 400 && status.code != 429 {
            return Err(ctx.error(format!("{path}.status"), "only 429 is supported by Sinew"));
        }
    }
    let enabled = all_or_nothing(
        ctx,
        &format!("{path}.filter_enabled"),
        config.filter_enabled.take(),
    )?;
    let enforced = all_or_nothing(
        ctx,
        &format!("{path}.filter_enforced"),
        config.filter_enforced.take(),
    )?;
    if enabled && !enforced {
        return Err(ctx.error(
            format!("{path}.filter_enforced"),
            "a limit enabled but not enforced (shadow mode) is not supported by Sinew",
        ));
    }
    // Only applies when not enforced, and with descriptors (refused below).
    config.request_headers_to_add_when_not_enforced.clear();
    config.always_consume_default_token_bucket = None;
    let headers = std::mem::take(&mut config.enable_x_ratelimit_headers);
    let bucket = config.token_bucket.take();
    ctx.only_supported(path, &config)?;
    if level == Level::PerRoute && (bucket.is_none() || !enabled) {
        return Err(ctx.error(
            path,
            "a per-route local_ratelimit must have a token_bucket and filter_enabled and \
             filter_enforced at 100% (Sinew cannot express a route exempted from the \
             listener's limit)",
        ));
    }
    let Some(mut bucket) = bucket.filter(|_| enabled) else {
        return Ok(None);
    };
    let mut out = Map::new();
    let fill_interval = bucket
        .fill_interval
        .take()
        .ok_or_else(|| ctx.error(format!("{path}.token_bucket.fill_interval"), "is required"))?;
    out.insert(
        "token_bucket".into(),
        json!({
            "max_tokens": bucket.max_tokens,
            "tokens_per_fill": bucket.tokens_per_fill.map_or(1, |t| t.value),
            "fill_interval": duration(&fill_interval),
        }),
    );
    match headers {
        0 => {}
        DRAFT_VERSION_03 => {
            out.insert(
                "enable_x_ratelimit_headers".into(),
                json!("DRAFT_VERSION_03"),
            );
        }
        _ => {
            return Err(ctx.error(
                format!("{path}.enable_x_ratelimit_headers"),
                "is not supported by Sinew",
            ))
        }
    }
    Ok(Some(Value::Object(out)))
}

/// 100% → true, 0% or unset → false (Envoy's default "for safety"); anything between is
/// refused, since Sinew limits every request or none.
fn all_or_nothing(
    ctx: &Ctx,
    path: &str,
    percent: Option<RuntimeFractionalPercent>,
) -> Result<bool, XdsError> {
    let Some(value) = percent.and_then(|p| p.default_value) else {
        return Ok(false);
    };
    let whole: u32 = match DenominatorType::try_from(value.denominator) {
        Ok(DenominatorType::Hundred) => 100,
        Ok(DenominatorType::TenThousand) => 10_000,
        Ok(DenominatorType::Million) => 1_000_000,
        Err(_) => {
            return Err(ctx.error(
                format!("{path}.default_value.denominator"),
                "is not a denominator",
            ))
        }
    };
    match value.numerator {
        0 => Ok(false),
        n if n >= whole => Ok(true),
        _ => Err(ctx.error(
            format!("{path}.default_value"),
            "only 0% or 100% is supported by Sinew",
        )),
    }
}

/// A virtual host's or route's `typed_per_filter_config`: the local rate limit, if one of
/// its entries is one. Any other filter's config is refused by its key.
pub(crate) fn per_filter_config(
    ctx: &Ctx,
    path: &str,
    configs: HashMap<String, Any>,
) -> Result<Option<Value>, XdsError> {
    let mut keys: Vec<&String> = configs.keys().collect();
    keys.sort();
    let mut found = None;
    for key in keys {
        let any = &configs[key];
        let entry = format!("{path}.typed_per_filter_config[{key:?}]");
        if any.type_url != TYPE_URL {
            return Err(ctx.error(entry, format!("{} is not supported by Sinew", any.type_url)));
        }
        if found.is_some() {
            return Err(ctx.error(entry, "a second local_ratelimit is not supported by Sinew"));
        }
        let config = decode(ctx, &entry, any)?;
        found = map(ctx, &entry, config, Level::PerRoute)?;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::RuntimeFractionalPercent;
    use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
    use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, TokenBucket};
    use envoy_types::pb::google::protobuf::Duration;
    use prost::Message;

    use super::*;

    fn all() -> Option<RuntimeFractionalPercent> {
        Some(RuntimeFractionalPercent {
            default_value: Some(FractionalPercent {
                numerator: 100,
                denominator: 0,
            }),
            runtime_key: String::new(),
        })
    }

    fn enforcing(max_tokens: u32) -> LocalRateLimit {
        LocalRateLimit {
            stat_prefix: "rl".into(),
            token_bucket: Some(TokenBucket {
                max_tokens,
                tokens_per_fill: None,
                fill_interval: Some(Duration {
                    seconds: 1,
                    nanos: 0,
                }),
            }),
            filter_enabled: all(),
            filter_enforced: all(),
            ..Default::default()
        }
    }

    fn packed(config: &LocalRateLimit) -> Any {
        Any {
            type_url: TYPE_URL.into(),
            value: config.encode_to_vec(),
        }
    }

    #[test]
    fn a_chain_config_without_filter_enabled_limits_nothing_as_envoy_defaults_to_0_percent() {
        let ctx = Ctx::new("listener", "l");
        let config = LocalRateLimit {
            filter_enabled: None,
            ..enforcing(3)
        };
        assert_eq!(map(&ctx, "f", config, Level::Listener), Ok(None));
        // Istio's way: the chain lists the filter with only a stat prefix.
        let bare = LocalRateLimit {
            stat_prefix: "rl".into(),
            ..Default::default()
        };
        assert_eq!(map(&ctx, "f", bare, Level::Listener), Ok(None));
    }

    #[test]
    fn an_enforcing_config_maps_its_bucket_with_envoys_default_of_one_token_per_fill() {
        let ctx = Ctx::new("listener", "l");
        let mapped = map(&ctx, "f", enforcing(3), Level::Listener).unwrap();
        assert_eq!(
            mapped,
            Some(
                json!({"token_bucket": {"max_tokens": 3, "tokens_per_fill": 1, "fill_interval": "1000ms"}})
            )
        );
    }

    #[test]
    fn per_filter_config_refuses_other_filters_by_key_and_a_second_limit() {
        let ctx = Ctx::new("route_configuration", "r");
        let router = Any {
            type_url: "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router".into(),
            value: Router::default().encode_to_vec(),
        };
        let e = per_filter_config(
            &ctx,
            "virtual_hosts[0]",
            HashMap::from([("x".into(), router)]),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "route_configuration \"r\": virtual_hosts[0].typed_per_filter_config[\"x\"]: \
             type.googleapis.com/envoy.extensions.filters.http.router.v3.Router is not supported by Sinew"
        );
        let two = HashMap::from([
            ("a".into(), packed(&enforcing(1))),
            ("b".into(), packed(&enforcing(2))),
        ]);
        let e = per_filter_config(&ctx, "vh", two).unwrap_err();
        assert_eq!(e.field, "vh.typed_per_filter_config[\"b\"]");
        let one = HashMap::from([("a".into(), packed(&enforcing(4)))]);
        let mapped = per_filter_config(&ctx, "vh", one).unwrap().unwrap();
        assert_eq!(mapped["token_bucket"]["max_tokens"], 4);
    }

    #[test]
    fn descriptors_are_refused_by_name() {
        let ctx = Ctx::new("listener", "l");
        let config = LocalRateLimit {
            descriptors: vec![Default::default()],
            ..enforcing(3)
        };
        let e = map(&ctx, "f", config, Level::Listener).unwrap_err();
        assert_eq!(e.field, "f.descriptors");
    }
}
