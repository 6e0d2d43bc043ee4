//! Envoy's CORS filter (`envoy.extensions.filters.http.cors.v3.Cors`) and its policies
//! (`CorsPolicy`, in `typed_per_filter_config` of virtual hosts and routes, or in their
//! deprecated `cors` field), mapped to the model's listener `cors` switch and the `cors`
//! of virtual hosts and routes.
//!
//! As in Envoy, a policy does something only when the filter is in the connection
//! manager's `http_filters` (the listener's `cors` is false otherwise), and once any
//! typed policy applies to a route the deprecated `cors` fields are not read for it.
//!
//! Shares of requests (`filter_enabled`, `shadow_enabled`) become the model's percentages
//! from their `default_value`. A `runtime_key` is read as that default, which is what Envoy
//! does while no runtime layer sets the key; Sinew has no runtime layers to set one.
//! Envoy's string matchers map whole (exact, prefix, suffix, contains, safe_regex,
//! ignore_case).

use envoy_types::pb::envoy::config::core::v3::RuntimeFractionalPercent;
use envoy_types::pb::envoy::config::route::v3::cors_policy::EnabledSpecifier;
use envoy_types::pb::envoy::config::route::v3::CorsPolicy as RouteCorsPolicy;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::{Cors, CorsPolicy};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, StringMatcher};
use envoy_types::pb::envoy::r#type::v3::fractional_percent::DenominatorType;
use envoy_types::pb::google::protobuf::Any;
use serde_json::{json, Map, Value};

use crate::{Ctx, XdsError};

/// The filter, in `http_filters`.
pub(crate) const TYPE_URL: &str = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors";
/// A policy, in `typed_per_filter_config`.
pub(crate) const POLICY_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy";
/// The filter's name, for a filter entry without a `typed_config`.
pub(crate) const NAME: &str = "envoy.filters.http.cors";

/// Checks the filter's own config (an empty message).
pub(crate) fn filter(ctx: &Ctx, path: &str, any: &Any) -> Result<(), XdsError> {
    let config: Cors = crate::convert::decode(ctx, path, any)?;
    ctx.only_supported(format_args!("{path}.typed_config"), &config)
}

/// A `CorsPolicy` from `typed_per_filter_config` (at `path`).
pub(crate) fn per_filter_policy(ctx: &Ctx, path: &str, any: &Any) -> Result<Value, XdsError> {
    let p: CorsPolicy = prost::Message::decode(any.value.as_slice())
        .map_err(|e| ctx.error(path, format!("does not decode: {e}")))?;
    policy(ctx, path, p)
}

/// The deprecated `cors` of a virtual host or route action: the same fields, with
/// `filter_enabled` in a oneof.
pub(crate) fn deprecated_policy(
    ctx: &Ctx,
    path: &str,
    mut p: RouteCorsPolicy,
) -> Result<Value, XdsError> {
    let filter_enabled = p
        .enabled_specifier
        .take()
        .map(|EnabledSpecifier::FilterEnabled(f)| f);
    let same = CorsPolicy {
        allow_origin_string_match: std::mem::take(&mut p.allow_origin_string_match),
        allow_methods: std::mem::take(&mut p.allow_methods),
        allow_headers: std::mem::take(&mut p.allow_headers),
        expose_headers: std::mem::take(&mut p.expose_headers),
        max_age: std::mem::take(&mut p.max_age),
        allow_credentials: p.allow_credentials.take(),
        filter_enabled,
        shadow_enabled: p.shadow_enabled.take(),
        allow_private_network_access: p.allow_private_network_access.take(),
        forward_not_matching_preflights: p.forward_not_matching_preflights.take(),
    };
    ctx.only_supported(path, &p)?;
    policy(ctx, path, same)
}

fn policy(ctx: &Ctx, path: &str, mut p: CorsPolicy) -> Result<Value, XdsError> {
    let mut out = Map::new();
    let mut origins = Vec::new();
    for (i, m) in std::mem::take(&mut p.allow_origin_string_match)
        .into_iter()
        .enumerate()
    {
        origins.push(string_matcher(
            ctx,
            &format!("{path}.allow_origin_string_match[{i}]"),
            m,
        )?);
    }
    if !origins.is_empty() {
        out.insert("allow_origin".into(), Value::Array(origins));
    }
    // Envoy's lists are comma-separated strings, sent as written.
    let lists = [
        ("allow_methods", std::mem::take(&mut p.allow_methods)),
        ("allow_headers", std::mem::take(&mut p.allow_headers)),
        ("expose_headers", std::mem::take(&mut p.expose_headers)),
    ];
    for (field, list) in lists {
        let items: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if !items.is_empty() {
            out.insert(field.into(), json!(items));
        }
    }
    let max_age = std::mem::take(&mut p.max_age);
    if !max_age.is_empty() {
        let seconds: u64 = max_age.trim().parse().map_err(|_| {
            ctx.error(
                format!("{path}.max_age"),
                format!("{max_age:?} is not a number of seconds"),
            )
        })?;
        out.insert("max_age".into(), json!(seconds));
    }
    let flags = [
        ("allow_credentials", p.allow_credentials.take()),
        (
            "allow_private_network_access",
            p.allow_private_network_access.take(),
        ),
        (
            "forward_not_matching_preflights",
            p.forward_not_matching_preflights.take(),
        ),
    ];
    for (field, value) in flags {
        if let Some(v) = value {
            out.insert(field.into(), json!(v.value));
        }
    }
    if let Some(f) = p.filter_enabled.take() {
        let at = format!("{path}.filter_enabled");
        out.insert("filter_enabled".into(), json!(percent(ctx, &at, f)?));
    }
    if let Some(f) = p.shadow_enabled.take() {
        let at = format!("{path}.shadow_enabled");
        out.insert("shadow_enabled".into(), json!(percent(ctx, &at, f)?));
    }
    ctx.only_supported(path, &p)?;
    Ok(Value::Object(out))
}

/// Envoy's `StringMatcher` as the model's `StringMatch`.
pub(crate) fn string_matcher(ctx: &Ctx, path: &str, m: StringMatcher) -> Result<Value, XdsError> {
    let mut out = Map::new();
    match m.match_pattern {
        Some(MatchPattern::Exact(v)) => out.insert("exact".into(), json!(v)),
        Some(MatchPattern::Prefix(v)) => out.insert("prefix".into(), json!(v)),
        Some(MatchPattern::Suffix(v)) => out.insert("suffix".into(), json!(v)),
        Some(MatchPattern::Contains(v)) => out.insert("contains".into(), json!(v)),
        Some(MatchPattern::SafeRegex(r)) => {
            if m.ignore_case {
                // Envoy ignores `ignore_case` for a regex too.
                return Err(ctx.error(
                    format!("{path}.ignore_case"),
                    "has no effect on safe_regex; remove it (use (?i) in the regex)",
                ));
            }
            out.insert("regex".into(), json!(r.regex))
        }
        Some(MatchPattern::Custom(_)) => {
            return Err(ctx.error(format!("{path}.custom"), "is not supported by Sinew"))
        }
        None => return Err(ctx.error(path, "a match pattern is required")),
    };
    if m.ignore_case {
        out.insert("ignore_case".into(), json!(true));
    }
    Ok(Value::Object(out))
}

/// A `RuntimeFractionalPercent` as a percentage, from its `default_value` (a runtime key
/// is read as its default; see the module's comment).
pub(crate) fn percent(
    ctx: &Ctx,
    path: &str,
    mut f: RuntimeFractionalPercent,
) -> Result<f64, XdsError> {
    let key = std::mem::take(&mut f.runtime_key);
    let value = f.default_value.take().unwrap_or_default();
    let whole = |denominator: i32, at: &str| match DenominatorType::try_from(denominator) {
        Ok(DenominatorType::Hundred) => Ok(100.0),
        Ok(DenominatorType::TenThousand) => Ok(10_000.0),
        Ok(DenominatorType::Million) => Ok(1_000_000.0),
        Err(_) => Err(ctx.error(at, "is not a denominator")),
    };
    let default_whole = whole(
        value.denominator,
        &format!("{path}.default_value.denominator"),
    )?;
    ctx.only_supported(path, &f)?;
    // The runtime's value for the key, when it has one (`layered_runtime`): a numerator
    // over the default's denominator, or a whole fractional percent.
    let from_runtime = (!key.is_empty())
        .then(|| crate::runtime::lookup(&key))
        .flatten();
    let (numerator, whole) = match from_runtime {
        None => (f64::from(value.numerator), default_whole),
        Some(v) => match crate::runtime::integer(&v) {
            Some(n) => (n as f64, default_whole),
            None => {
                let numerator = v.get("numerator").and_then(crate::runtime::integer);
                let denominator = match v.get("denominator").and_then(Value::as_str) {
                    None => Some(100.0),
                    Some("HUNDRED") => Some(100.0),
                    Some("TEN_THOUSAND") => Some(10_000.0),
                    Some("MILLION") => Some(1_000_000.0),
                    Some(_) => None,
                };
                match (numerator, denominator) {
                    (Some(n), Some(d)) => (n as f64, d),
                    _ => {
                        return Err(ctx.error(
                            format!("{path}.runtime_key"),
                            format!("runtime key {key:?}: {v} is not a percentage (a whole number, or {{numerator, denominator}})"),
                        ))
                    }
                }
            }
        },
    };
    // Envoy: a missing default_value is 0%.
    Ok((numerator / whole * 100.0).min(100.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher;
    use envoy_types::pb::envoy::r#type::v3::FractionalPercent;
    use envoy_types::pb::google::protobuf::BoolValue;

    fn ctx() -> Ctx {
        Ctx::new("listener", "test")
    }

    fn fraction(numerator: u32, denominator: DenominatorType) -> RuntimeFractionalPercent {
        RuntimeFractionalPercent {
            default_value: Some(FractionalPercent {
                numerator,
                denominator: denominator as i32,
            }),
            runtime_key: "cors.www.enabled".into(),
        }
    }

    #[test]
    fn a_policy_maps_field_by_field_with_envoy_s_comma_lists_split() {
        let p = CorsPolicy {
            allow_origin_string_match: vec![
                StringMatcher {
                    match_pattern: Some(MatchPattern::Exact("https://a.example".into())),
                    ignore_case: false,
                },
                StringMatcher {
                    match_pattern: Some(MatchPattern::SafeRegex(RegexMatcher {
                        regex: r"https://.*\.b\.example".into(),
                        ..Default::default()
                    })),
                    ignore_case: false,
                },
            ],
            allow_methods: "GET, POST,PUT".into(),
            allow_headers: "x-token".into(),
            expose_headers: "x-trace, x-id".into(),
            max_age: "600".into(),
            allow_credentials: Some(BoolValue { value: true }),
            filter_enabled: Some(fraction(100, DenominatorType::Hundred)),
            shadow_enabled: Some(fraction(50, DenominatorType::TenThousand)),
            forward_not_matching_preflights: Some(BoolValue { value: false }),
            ..Default::default()
        };
        let v = policy(&ctx(), "p", p).unwrap();
        assert_eq!(
            v,
            json!({
                "allow_origin": [{"exact": "https://a.example"}, {"regex": r"https://.*\.b\.example"}],
                "allow_methods": ["GET", "POST", "PUT"],
                "allow_headers": ["x-token"],
                "expose_headers": ["x-trace", "x-id"],
                "max_age": 600,
                "allow_credentials": true,
                "forward_not_matching_preflights": false,
                "filter_enabled": 100.0,
                "shadow_enabled": 0.5,
            })
        );
    }

    #[test]
    fn a_max_age_that_is_not_seconds_is_refused_at_its_path() {
        let p = CorsPolicy {
            max_age: "1d".into(),
            ..Default::default()
        };
        let e = policy(&ctx(), "p", p).unwrap_err();
        assert_eq!(e.field, "p.max_age");
    }

    #[test]
    fn the_deprecated_route_policy_reads_filter_enabled_from_its_oneof() {
        let p = RouteCorsPolicy {
            allow_origin_string_match: vec![StringMatcher {
                match_pattern: Some(MatchPattern::Suffix(".example".into())),
                ignore_case: true,
            }],
            enabled_specifier: Some(EnabledSpecifier::FilterEnabled(fraction(
                0,
                DenominatorType::Hundred,
            ))),
            ..Default::default()
        };
        let v = deprecated_policy(&ctx(), "cors", p).unwrap();
        assert_eq!(
            v,
            json!({"allow_origin": [{"suffix": ".example", "ignore_case": true}], "filter_enabled": 0.0})
        );
    }
}
