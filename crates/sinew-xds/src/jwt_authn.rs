//! Envoy's JWT authentication HTTP filter (`envoy.filters.http.jwt_authn`) in a connection
//! manager's filter chain, mapped to the model's `jwt_authn` (docs/security.md).
//!
//! What differs from Envoy, and how the mapping keeps Envoy's meaning:
//! - No `rules` means no verification in Envoy (Sinew's YAML gives it Istio's meaning), so
//!   it maps to one rule for `/` that requires nothing.
//! - A `remote_jwks` is fetched from its `http_uri.uri` directly, not through
//!   `http_uri.cluster`; an `https` URI is refused (its CA would come from the cluster's
//!   TLS context, which this mapping does not read). Sinew fetches at start and retries
//!   with its own backoff, so `async_fetch` and `retry_policy` change nothing.
//! - `jwt_cache_config` sizes a cache of verified tokens Sinew does not keep, and
//!   `clear_route_cache` is what Sinew always does (routing runs after authentication
//!   and sees the claim headers); both are accepted.
//! - Everything else Sinew cannot honour (named requirements, per-route requirements,
//!   metadata outputs, subjects, cookies, ...) is refused by its field.

use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::{
    jwt_provider::JwksSourceSpecifier, jwt_requirement::RequiresType,
    requirement_rule::RequirementType, JwtAuthentication, JwtProvider, JwtRequirement,
};
use envoy_types::pb::google::protobuf::Any;
use serde_json::{json, Map, Value};

use crate::convert::duration;
use crate::{Ctx, XdsError};

pub(crate) const TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication";

/// Envoy's default when `clock_skew_seconds` is unset.
const DEFAULT_CLOCK_SKEW: u32 = 60;

/// The model's `jwt_authn` for the filter config `any` found at `path`.
pub(crate) fn map(ctx: &Ctx, path: &str, any: &Any) -> Result<Value, XdsError> {
    let mut config: JwtAuthentication = prost::Message::decode(any.value.as_slice())
        .map_err(|e| ctx.error(path, format!("is not a valid JwtAuthentication: {e}")))?;
    config.stat_prefix.clear();
    let mut providers: Vec<(String, JwtProvider)> =
        std::mem::take(&mut config.providers).into_iter().collect();
    providers.sort_by(|a, b| a.0.cmp(&b.0));
    let providers = providers
        .into_iter()
        .map(|(name, p)| provider(ctx, &format!("{path}.providers[{name:?}]"), name, p))
        .collect::<Result<Vec<_>, _>>()?;
    let mut rules = Vec::new();
    for (i, mut rule) in std::mem::take(&mut config.rules).into_iter().enumerate() {
        let rpath = format!("{path}.rules[{i}]");
        let mut out = Map::new();
        let mut m = rule.r#match.take().unwrap_or_default();
        let matched = match m.path_specifier.take() {
            Some(PathSpecifier::Prefix(p)) => json!({"prefix": p}),
            Some(PathSpecifier::Path(p)) => json!({"path": p}),
            _ => {
                return Err(ctx.error(
                    format!("{rpath}.match"),
                    "only prefix and path matches are supported by Sinew here",
                ))
            }
        };
        ctx.only_supported(format_args!("{rpath}.match"), &m)?;
        out.insert("match".into(), matched);
        match rule.requirement_type.take() {
            Some(RequirementType::Requires(r)) => {
                out.insert(
                    "requires".into(),
                    requirement(ctx, &format!("{rpath}.requires"), r)?,
                );
            }
            Some(RequirementType::RequirementName(_)) => {
                return Err(ctx.error(
                    format!("{rpath}.requirement_name"),
                    "named requirements are not supported by Sinew",
                ))
            }
            None => {}
        }
        rules.push(Value::Object(out));
    }
    if rules.is_empty() {
        // Envoy verifies nothing without rules.
        rules.push(json!({"match": {"prefix": "/"}}));
    }
    ctx.only_supported(path, &config)?;
    Ok(json!({"providers": providers, "rules": rules}))
}

fn provider(ctx: &Ctx, path: &str, name: String, mut p: JwtProvider) -> Result<Value, XdsError> {
    let mut out = Map::new();
    out.insert("name".into(), json!(name));
    out.insert("issuer".into(), json!(std::mem::take(&mut p.issuer)));
    out.insert("audiences".into(), json!(std::mem::take(&mut p.audiences)));
    match p.jwks_source_specifier.take() {
        Some(JwksSourceSpecifier::RemoteJwks(mut remote)) => {
            let rpath = format!("{path}.remote_jwks");
            let mut uri = remote.http_uri.take().unwrap_or_default();
            if !uri.uri.starts_with("http://") {
                return Err(ctx.error(
                    format!("{rpath}.http_uri.uri"),
                    "only http:// URIs are supported by Sinew from Envoy's config (https needs a CA file: use Sinew's YAML with `ca`)",
                ));
            }
            let mut fetched = Map::new();
            fetched.insert("uri".into(), json!(std::mem::take(&mut uri.uri)));
            // Sinew fetches the URI itself rather than through this cluster.
            uri.http_upstream_type = None;
            if let Some(t) = uri.timeout.take() {
                fetched.insert("timeout".into(), json!(duration(&t)));
            }
            ctx.only_supported(format_args!("{rpath}.http_uri"), &uri)?;
            if let Some(d) = remote.cache_duration.take() {
                fetched.insert("cache_duration".into(), json!(duration(&d)));
            }
            remote.async_fetch = None;
            remote.retry_policy = None;
            ctx.only_supported(&rpath, &remote)?;
            out.insert("remote_jwks".into(), Value::Object(fetched));
        }
        Some(JwksSourceSpecifier::LocalJwks(source)) => {
            let lpath = format!("{path}.local_jwks");
            let local = match source.specifier {
                Some(Specifier::Filename(f)) => json!({"filename": f}),
                Some(Specifier::InlineString(s)) => json!({"inline": s}),
                Some(Specifier::InlineBytes(b)) => {
                    let text = String::from_utf8(b).map_err(|_| {
                        ctx.error(format!("{lpath}.inline_bytes"), "must be UTF-8 for Sinew")
                    })?;
                    json!({"inline": text})
                }
                _ => {
                    return Err(ctx.error(
                        lpath,
                        "only filename, inline_string or inline_bytes is supported by Sinew",
                    ))
                }
            };
            out.insert("local_jwks".into(), local);
        }
        None => {
            return Err(ctx.error(
                format!("{path}.remote_jwks"),
                "remote_jwks or local_jwks is required",
            ))
        }
    }
    let headers: Vec<Value> = std::mem::take(&mut p.from_headers)
        .into_iter()
        .map(|h| json!({"name": h.name, "value_prefix": h.value_prefix}))
        .collect();
    out.insert("from_headers".into(), json!(headers));
    out.insert(
        "from_params".into(),
        json!(std::mem::take(&mut p.from_params)),
    );
    out.insert("forward".into(), json!(std::mem::take(&mut p.forward)));
    let payload = std::mem::take(&mut p.forward_payload_header);
    if !payload.is_empty() {
        out.insert("forward_payload_header".into(), json!(payload));
    }
    let mut claims = Vec::new();
    for (i, mut c) in std::mem::take(&mut p.claim_to_headers)
        .into_iter()
        .enumerate()
    {
        claims.push(json!({
            "header_name": std::mem::take(&mut c.header_name),
            "claim_name": std::mem::take(&mut c.claim_name),
        }));
        ctx.only_supported(format_args!("{path}.claim_to_headers[{i}]"), &c)?;
    }
    out.insert("claim_to_headers".into(), json!(claims));
    let skew = std::mem::take(&mut p.clock_skew_seconds);
    out.insert(
        "clock_skew_seconds".into(),
        json!(if skew == 0 { DEFAULT_CLOCK_SKEW } else { skew }),
    );
    p.jwt_cache_config = None;
    p.clear_route_cache = false;
    ctx.only_supported(path, &p)?;
    Ok(Value::Object(out))
}

fn requirement(ctx: &Ctx, path: &str, r: JwtRequirement) -> Result<Value, XdsError> {
    let list = |field: &str, items: Vec<JwtRequirement>| -> Result<Value, XdsError> {
        let mapped = items
            .into_iter()
            .enumerate()
            .map(|(i, r)| requirement(ctx, &format!("{path}.{field}.requirements[{i}]"), r))
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = Map::new();
        out.insert(field.to_string(), Value::Array(mapped));
        Ok(Value::Object(out))
    };
    match r.requires_type {
        Some(RequiresType::ProviderName(name)) => Ok(json!({"provider_name": name})),
        Some(RequiresType::RequiresAny(any)) => list("requires_any", any.requirements),
        Some(RequiresType::RequiresAll(all)) => list("requires_all", all.requirements),
        Some(RequiresType::AllowMissing(_)) => Ok(json!({"allow_missing": true})),
        Some(RequiresType::AllowMissingOrFailed(_)) => Ok(json!({"allow_missing_or_failed": true})),
        Some(RequiresType::ProviderAndAudiences(_)) => Err(ctx.error(
            format!("{path}.provider_and_audiences"),
            "is not supported by Sinew (use provider_name and the provider's audiences)",
        )),
        Some(RequiresType::ExtractOnlyWithoutValidation(_)) => Err(ctx.error(
            format!("{path}.extract_only_without_validation"),
            "is not supported by Sinew",
        )),
        None => Err(ctx.error(path, "a requirement is required")),
    }
}

#[cfg(test)]
mod tests {
    use crate::bootstrap::load_str;

    /// A bootstrap with Envoy's jwt_authn filter, its `typed_config` fields given.
    fn bootstrap(jwt: &str) -> String {
        crate::test_fixtures::http_listener(&format!(
            r#"          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
{jwt}"#
        ))
    }

    const ENVOY_DOCS_SHAPE: &str = r#"              providers:
                example_provider:
                  issuer: https://example.com
                  audiences: [bookstore_android.apps.googleusercontent.com]
                  forward: true
                  forward_payload_header: x-jwt-payload
                  claim_to_headers:
                  - header_name: x-jwt-claim-nested-key
                    claim_name: nested.key
                  remote_jwks:
                    http_uri:
                      uri: http://127.0.0.1:9999/jwks.json
                      cluster: example_jwks_cluster
                      timeout: 1s
                    cache_duration: 300s
                    async_fetch: { fast_listener: false }
                local:
                  issuer: local-issuer
                  from_headers: [{ name: x-token, value_prefix: "" }]
                  clock_skew_seconds: 5
                  local_jwks:
                    inline_string: '{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}'
              rules:
              - match: { prefix: /health }
              - match: { prefix: /api }
                requires:
                  requires_any:
                    requirements:
                    - provider_name: example_provider
                    - provider_name: local
              - match: { prefix: / }
                requires: { allow_missing: {} }"#;

    #[test]
    fn envoys_jwt_authn_maps_to_the_model() {
        let loaded =
            load_str("envoy.yaml", &bootstrap(ENVOY_DOCS_SHAPE)).unwrap_or_else(|d| panic!("{d}"));
        let http = loaded.loaded.config.listeners[0].http.as_ref().unwrap();
        let jwt = http.jwt_authn.as_ref().expect("jwt_authn mapped");
        let names: Vec<&str> = jwt.providers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["example_provider", "local"]);
        let remote = jwt.providers[0].remote_jwks.as_ref().unwrap();
        assert_eq!(remote.uri, "http://127.0.0.1:9999/jwks.json");
        assert_eq!(remote.timeout, std::time::Duration::from_secs(1));
        assert_eq!(remote.cache_duration, std::time::Duration::from_secs(300));
        assert!(jwt.providers[0].forward);
        assert_eq!(jwt.providers[0].clock_skew_seconds, 60, "Envoy's default");
        assert_eq!(
            jwt.providers[0].claim_to_headers[0].claim_name,
            "nested.key"
        );
        assert_eq!(jwt.providers[1].clock_skew_seconds, 5);
        assert_eq!(jwt.providers[1].from_headers[0].name, "x-token");
        assert!(jwt.providers[1]
            .local_jwks
            .as_ref()
            .unwrap()
            .inline
            .is_some());
        assert!(jwt.rules[0].requires.is_none());
        let any = jwt.rules[1]
            .requires
            .as_ref()
            .unwrap()
            .requires_any
            .as_ref()
            .unwrap();
        assert_eq!(any[1].provider_name.as_deref(), Some("local"));
        assert_eq!(
            jwt.rules[2].requires.as_ref().unwrap().allow_missing,
            Some(true)
        );
    }

    #[test]
    fn without_rules_envoy_verifies_nothing() {
        let loaded = load_str(
            "envoy.yaml",
            &bootstrap(
                "              providers:\n                p:\n                  local_jwks: { filename: /etc/jwks.json }",
            ),
        )
        .unwrap_or_else(|d| panic!("{d}"));
        let jwt = loaded.loaded.config.listeners[0]
            .http
            .as_ref()
            .unwrap()
            .jwt_authn
            .clone()
            .unwrap();
        assert_eq!(jwt.rules.len(), 1);
        assert_eq!(jwt.rules[0].match_.prefix.as_deref(), Some("/"));
        assert!(jwt.rules[0].requires.is_none());
    }

    #[test]
    fn what_sinew_cannot_honour_is_refused_by_field() {
        let base = "              providers:\n                p:\n                  local_jwks: { filename: /etc/jwks.json }";
        let at = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0].typed_config";
        for (extra, field) in [
            ("\n                  payload_in_metadata: jwt", "providers[\"p\"].payload_in_metadata"),
            ("\n                  from_cookies: [c]", "providers[\"p\"].from_cookies"),
            ("\n              requirement_map: { r: { provider_name: p } }", "requirement_map"),
            ("\n              rules:\n              - match: { prefix: / }\n                requirement_name: r", "rules[0].requirement_name"),
            ("\n              rules:\n              - match: { safe_regex: { regex: x } }", "rules[0].match"),
            ("\n              rules:\n              - match: { prefix: / }\n                requires: { provider_and_audiences: { provider_name: p } }", "rules[0].requires.provider_and_audiences"),
        ] {
            let text = bootstrap(&format!("{base}{extra}"));
            let e = match load_str("envoy.yaml", &text) {
                Ok(_) => panic!("accepted {extra}"),
                Err(d) => d.to_string(),
            };
            assert!(e.contains(&format!("{at}.{field}")), "{extra}: {e}");
        }
        let https = bootstrap(
            "              providers:\n                p:\n                  remote_jwks: { http_uri: { uri: 'https://idp/jwks', cluster: c, timeout: 1s } }",
        );
        let e = load_str("envoy.yaml", &https)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("remote_jwks.http_uri.uri: only http:// URIs"),
            "{e}"
        );
    }
}
