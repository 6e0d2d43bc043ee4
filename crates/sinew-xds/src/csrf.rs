//! Envoy's CSRF filter (`envoy.extensions.filters.http.csrf.v3.CsrfPolicy`, both the
//! filter's config in `http_filters` and the per-route override in
//! `typed_per_filter_config`), mapped to the model's `csrf` of the listener, virtual hosts
//! and routes. As in Envoy, an override does something only when the filter is in the
//! chain, and the most specific policy applies whole.
//!
//! `filter_enabled` is required, as in Envoy's proto; shares map as the CORS policy's do
//! (see `cors`).

use envoy_types::pb::envoy::extensions::filters::http::csrf::v3::CsrfPolicy;
use envoy_types::pb::google::protobuf::Any;
use serde_json::{json, Map, Value};

use crate::cors::{percent, string_matcher};
use crate::{Ctx, XdsError};

pub(crate) const TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.filters.http.csrf.v3.CsrfPolicy";

/// A `CsrfPolicy` found at `path` (an `Any`).
pub(crate) fn map(ctx: &Ctx, path: &str, any: &Any) -> Result<Value, XdsError> {
    let mut p: CsrfPolicy = prost::Message::decode(any.value.as_slice())
        .map_err(|e| ctx.error(path, format!("does not decode: {e}")))?;
    let mut out = Map::new();
    let Some(enabled) = p.filter_enabled.take() else {
        return Err(ctx.error(format!("{path}.filter_enabled"), "is required"));
    };
    let at = format!("{path}.filter_enabled");
    out.insert("filter_enabled".into(), json!(percent(ctx, &at, enabled)?));
    let shadow = match p.shadow_enabled.take() {
        Some(f) => percent(ctx, &format!("{path}.shadow_enabled"), f)?,
        None => 0.0,
    };
    out.insert("shadow_enabled".into(), json!(shadow));
    let mut origins = Vec::new();
    for (i, m) in std::mem::take(&mut p.additional_origins)
        .into_iter()
        .enumerate()
    {
        origins.push(string_matcher(
            ctx,
            &format!("{path}.additional_origins[{i}]"),
            m,
        )?);
    }
    out.insert("additional_origins".into(), Value::Array(origins));
    ctx.only_supported(path, &p)?;
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::RuntimeFractionalPercent;
    use envoy_types::pb::envoy::r#type::matcher::v3::{
        string_matcher::MatchPattern, StringMatcher,
    };
    use envoy_types::pb::envoy::r#type::v3::FractionalPercent;

    fn any(p: &CsrfPolicy) -> Any {
        Any {
            type_url: TYPE_URL.into(),
            value: prost::Message::encode_to_vec(p),
        }
    }

    #[test]
    fn a_policy_maps_its_shares_and_additional_origins() {
        let p = CsrfPolicy {
            filter_enabled: Some(RuntimeFractionalPercent {
                default_value: Some(FractionalPercent {
                    numerator: 100,
                    denominator: 0,
                }),
                runtime_key: "csrf.enabled".into(),
            }),
            shadow_enabled: None,
            additional_origins: vec![StringMatcher {
                match_pattern: Some(MatchPattern::Exact("app.example:8443".into())),
                ignore_case: false,
            }],
        };
        let v = map(&Ctx::new("listener", "l"), "csrf", &any(&p)).unwrap();
        assert_eq!(
            v,
            json!({"filter_enabled": 100.0, "shadow_enabled": 0.0,
                   "additional_origins": [{"exact": "app.example:8443"}]})
        );
    }

    #[test]
    fn filter_enabled_is_required_as_in_envoy() {
        let e = map(
            &Ctx::new("listener", "l"),
            "csrf",
            &any(&CsrfPolicy::default()),
        )
        .unwrap_err();
        assert_eq!(e.field, "csrf.filter_enabled");
    }
}
