//! RDS: a `RouteConfiguration` becomes a model route configuration (virtual hosts and
//! their routes). Also used for a connection manager's inline `route_config`.

use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::core::v3::HeaderValueOption;
use envoy_types::pb::envoy::config::route::v3::route_action::hash_policy::PolicySpecifier;
use envoy_types::pb::envoy::config::route::v3::{
    header_matcher::HeaderMatchSpecifier, query_parameter_matcher::QueryParameterMatchSpecifier,
    redirect_action, route, route_action, route_match::PathSpecifier, DirectResponseAction,
    HeaderMatcher, RedirectAction, RetryPolicy, Route, RouteAction, RouteConfiguration, RouteMatch,
    VirtualHost, WeightedCluster,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, StringMatcher};
use serde_json::{json, Map, Value};

use crate::convert::{duration, labels};
use crate::local_ratelimit;
use crate::{cors, csrf, Ctx, XdsError};

/// The model's JSON shape of `config` (`{name, virtual_hosts}`).
pub fn map(config: &RouteConfiguration) -> Result<Value, XdsError> {
    let ctx = Ctx::new("route_configuration", &config.name);
    let mut rest = config.clone();
    let name = std::mem::take(&mut rest.name);
    let hosts = std::mem::take(&mut rest.virtual_hosts);
    // Envoy checks cluster names at load when asked; Sinew always does (see assemble).
    rest.validate_clusters = None;
    rest.metadata = None;
    ctx.only_supported("", &rest)?;
    let mut virtual_hosts = Vec::new();
    for (i, host) in hosts.iter().enumerate() {
        virtual_hosts.push(virtual_host(&ctx, &format!("virtual_hosts[{i}]"), host)?);
    }
    Ok(json!({"name": name, "virtual_hosts": virtual_hosts}))
}

fn virtual_host(ctx: &Ctx, path: &str, host: &VirtualHost) -> Result<Value, XdsError> {
    let mut rest = host.clone();
    let mut out = Map::new();
    out.insert("name".into(), json!(std::mem::take(&mut rest.name)));
    out.insert("domains".into(), json!(std::mem::take(&mut rest.domains)));
    let routes = std::mem::take(&mut rest.routes);
    let request = header_actions(
        ctx,
        &format!("{path}.request_headers_to_add"),
        std::mem::take(&mut rest.request_headers_to_add),
        std::mem::take(&mut rest.request_headers_to_remove),
    )?;
    let response = header_actions(
        ctx,
        &format!("{path}.response_headers_to_add"),
        std::mem::take(&mut rest.response_headers_to_add),
        std::mem::take(&mut rest.response_headers_to_remove),
    )?;
    out.insert("request_headers".into(), request);
    out.insert("response_headers".into(), response);
    let mut per_filter = std::mem::take(&mut rest.typed_per_filter_config);
    let origin = origin_policies(ctx, path, &mut per_filter)?;
    if let Some(limit) = local_ratelimit::per_filter_config(ctx, path, per_filter)? {
        out.insert("local_rate_limit".into(), limit);
    }
    if let Some(csrf) = origin.csrf {
        out.insert("csrf".into(), csrf);
    }
    // Envoy reads the deprecated `cors` only when no typed CorsPolicy applies to a route
    // (neither its own nor its host's).
    let deprecated = rest.cors.take();
    let typed_host = origin.cors.is_some();
    match (origin.cors, deprecated) {
        (Some(typed), _) => {
            out.insert("cors".into(), typed);
        }
        (None, Some(old)) => {
            let policy = cors::deprecated_policy(ctx, &format!("{path}.cors"), old)?;
            out.insert("cors".into(), policy);
        }
        (None, None) => {}
    }
    rest.metadata = None;
    ctx.only_supported(path, &rest)?;
    let mut mapped = Vec::new();
    for (i, r) in routes.iter().enumerate() {
        mapped.push(route(ctx, &format!("{path}.routes[{i}]"), r, typed_host)?);
    }
    out.insert("routes".into(), Value::Array(mapped));
    Ok(Value::Object(out))
}

/// The CORS and CSRF policies of a `typed_per_filter_config`, taken out of it.
struct OriginPolicies {
    cors: Option<Value>,
    csrf: Option<Value>,
}

fn origin_policies(
    ctx: &Ctx,
    path: &str,
    per_filter: &mut std::collections::HashMap<String, envoy_types::pb::google::protobuf::Any>,
) -> Result<OriginPolicies, XdsError> {
    let mut found = OriginPolicies {
        cors: None,
        csrf: None,
    };
    let mut keys: Vec<String> = per_filter
        .iter()
        .filter(|(_, any)| any.type_url == cors::POLICY_TYPE_URL || any.type_url == csrf::TYPE_URL)
        .map(|(k, _)| k.clone())
        .collect();
    keys.sort();
    for key in keys {
        let any = per_filter.remove(&key).expect("listed above");
        let entry = format!("{path}.typed_per_filter_config[{key:?}]");
        let (slot, mapped) = if any.type_url == cors::POLICY_TYPE_URL {
            (&mut found.cors, cors::per_filter_policy(ctx, &entry, &any)?)
        } else {
            (&mut found.csrf, csrf::map(ctx, &entry, &any)?)
        };
        if slot.replace(mapped).is_some() {
            return Err(ctx.error(
                entry,
                "a second policy of this filter is not supported by Sinew",
            ));
        }
    }
    Ok(found)
}

/// `typed_host`: the virtual host has a typed CORS policy (the deprecated `cors` of its
/// routes is then not read, as in Envoy).
fn route(ctx: &Ctx, path: &str, r: &Route, typed_host: bool) -> Result<Value, XdsError> {
    let mut rest = r.clone();
    let mut out = Map::new();
    let deprecated_cors = match &mut rest.action {
        Some(route::Action::Route(action)) => action.cors.take(),
        _ => None,
    };
    if !rest.name.is_empty() {
        out.insert("name".into(), json!(std::mem::take(&mut rest.name)));
    }
    let matcher = rest.r#match.take().unwrap_or_default();
    out.insert(
        "match".into(),
        route_match(ctx, &format!("{path}.match"), matcher)?,
    );
    out.insert(
        "request_headers".into(),
        header_actions(
            ctx,
            &format!("{path}.request_headers_to_add"),
            std::mem::take(&mut rest.request_headers_to_add),
            std::mem::take(&mut rest.request_headers_to_remove),
        )?,
    );
    out.insert(
        "response_headers".into(),
        header_actions(
            ctx,
            &format!("{path}.response_headers_to_add"),
            std::mem::take(&mut rest.response_headers_to_add),
            std::mem::take(&mut rest.response_headers_to_remove),
        )?,
    );
    match rest.action.take() {
        Some(route::Action::Route(action)) => {
            route_action(ctx, &format!("{path}.route"), action, &mut out)?
        }
        Some(route::Action::Redirect(redirect)) => {
            out.insert(
                "redirect".into(),
                redirect_action(ctx, &format!("{path}.redirect"), redirect)?,
            );
        }
        Some(route::Action::DirectResponse(direct)) => {
            out.insert(
                "direct_response".into(),
                direct_response(ctx, &format!("{path}.direct_response"), direct)?,
            );
        }
        Some(_) => {
            return Err(ctx.error(
                path,
                "only route, redirect and direct_response actions are supported by Sinew",
            ))
        }
        None => return Err(ctx.error(format!("{path}.route"), "an action is required")),
    }
    let mut per_filter = std::mem::take(&mut rest.typed_per_filter_config);
    let origin = origin_policies(ctx, path, &mut per_filter)?;
    if let Some(limit) = local_ratelimit::per_filter_config(ctx, path, per_filter)? {
        out.insert("local_rate_limit".into(), limit);
    }
    if let Some(csrf) = origin.csrf {
        out.insert("csrf".into(), csrf);
    }
    match (origin.cors, deprecated_cors) {
        (Some(typed), _) => {
            out.insert("cors".into(), typed);
        }
        (None, Some(old)) if !typed_host => {
            let policy = cors::deprecated_policy(ctx, &format!("{path}.route.cors"), old)?;
            out.insert("cors".into(), policy);
        }
        _ => {}
    }
    rest.metadata = None;
    rest.decorator = None;
    rest.stat_prefix.clear();
    ctx.only_supported(path, &rest)?;
    Ok(Value::Object(out))
}

fn route_match(ctx: &Ctx, path: &str, mut m: RouteMatch) -> Result<Value, XdsError> {
    let mut out = Map::new();
    match m.path_specifier.take() {
        Some(PathSpecifier::Prefix(p)) => {
            out.insert("prefix".into(), json!(p));
        }
        Some(PathSpecifier::Path(p)) => {
            out.insert("path".into(), json!(p));
        }
        Some(PathSpecifier::SafeRegex(r)) => {
            out.insert("path_regex".into(), json!(r.regex));
        }
        Some(_) => {
            return Err(ctx.error(
                path,
                "only prefix, path and safe_regex path matches are supported by Sinew",
            ))
        }
        None => return Err(ctx.error(format!("{path}.prefix"), "a path match is required")),
    }
    if let Some(case_sensitive) = m.case_sensitive.take() {
        if !case_sensitive.value {
            return Err(ctx.error(
                format!("{path}.case_sensitive"),
                "case-insensitive path matching is not supported by Sinew",
            ));
        }
    }
    // A share of requests, read through the layered runtime when it sets the key.
    if let Some(fraction) = m.runtime_fraction.take() {
        let share = crate::cors::percent(ctx, &format!("{path}.runtime_fraction"), fraction)?;
        out.insert("percentage".into(), json!(share));
    }
    let mut headers = Vec::new();
    let mut methods = Vec::new();
    for (i, h) in std::mem::take(&mut m.headers).into_iter().enumerate() {
        let hpath = format!("{path}.headers[{i}]");
        // Envoy matches the method as the `:method` pseudo-header; Sinew has `methods`.
        if h.name == ":method" && !h.invert_match {
            if let Some(HeaderMatchSpecifier::ExactMatch(method))
            | Some(HeaderMatchSpecifier::StringMatch(StringMatcher {
                match_pattern: Some(MatchPattern::Exact(method)),
                ignore_case: false,
            })) = &h.header_match_specifier
            {
                methods.push(json!(method));
                continue;
            }
        }
        headers.push(header_match(ctx, &hpath, h)?);
    }
    if !methods.is_empty() {
        out.insert("methods".into(), Value::Array(methods));
    }
    out.insert("headers".into(), Value::Array(headers));
    let mut query = Vec::new();
    for (i, q) in std::mem::take(&mut m.query_parameters)
        .into_iter()
        .enumerate()
    {
        let qpath = format!("{path}.query_parameters[{i}]");
        let mut entry = Map::new();
        entry.insert("name".into(), json!(q.name));
        match q.query_parameter_match_specifier {
            Some(QueryParameterMatchSpecifier::PresentMatch(p)) => {
                entry.insert("present".into(), json!(p));
            }
            Some(QueryParameterMatchSpecifier::StringMatch(s)) => {
                let (kind, value) = string_matcher(ctx, &format!("{qpath}.string_match"), s)?;
                if !matches!(kind, "exact" | "regex") {
                    return Err(ctx.error(
                        format!("{qpath}.string_match.{kind}"),
                        "is not supported by Sinew for query parameters",
                    ));
                }
                entry.insert(kind.into(), json!(value));
            }
            None => {}
        }
        query.push(Value::Object(entry));
    }
    out.insert("query".into(), Value::Array(query));
    // gRPC requests only: Envoy checks for a `content-type` of `application/grpc` or
    // one of its `+` forms (`+proto`, `+json`), not gRPC-Web's.
    if m.grpc.take().is_some() {
        if let Some(Value::Array(headers)) = out.get_mut("headers") {
            headers.push(json!({"name": "content-type", "regex": "application/grpc(\\+.*)?"}));
        }
    }
    ctx.only_supported(path, &m)?;
    Ok(Value::Object(out))
}

/// `weighted_clusters` (of an HTTP route, or of a Dubbo route): each cluster's name,
/// weight and subset; `total_weight` is implied by the weights.
pub(crate) fn weighted_clusters(
    ctx: &Ctx,
    path: &str,
    mut w: WeightedCluster,
) -> Result<Value, XdsError> {
    let clusters = std::mem::take(&mut w.clusters);
    w.total_weight = None;
    ctx.only_supported(path, &w)?;
    let mut mapped = Vec::new();
    for (i, mut c) in clusters.into_iter().enumerate() {
        let cpath = format!("{path}.clusters[{i}]");
        let name = std::mem::take(&mut c.name);
        let weight = c.weight.take().map_or(0, |w| w.value);
        let labels = labels(c.metadata_match.take().as_ref());
        ctx.only_supported(&cpath, &c)?;
        mapped.push(json!({"cluster": name, "weight": weight, "metadata_match": labels}));
    }
    Ok(Value::Array(mapped))
}

/// A string matcher as (the model's condition name, value): `exact`, `prefix` or `regex`
/// (the caller refuses the others by name); `ignore_case` is refused.
pub(crate) fn string_matcher(
    ctx: &Ctx,
    path: &str,
    s: StringMatcher,
) -> Result<(&'static str, String), XdsError> {
    if s.ignore_case {
        return Err(ctx.error(format!("{path}.ignore_case"), "is not supported by Sinew"));
    }
    match s.match_pattern {
        Some(MatchPattern::Exact(v)) => Ok(("exact", v)),
        Some(MatchPattern::Prefix(v)) => Ok(("prefix", v)),
        Some(MatchPattern::SafeRegex(r)) => Ok(("regex", r.regex)),
        Some(MatchPattern::Suffix(_)) => Ok(("suffix", String::new())),
        Some(MatchPattern::Contains(_)) => Ok(("contains", String::new())),
        Some(MatchPattern::Custom(_)) => Ok(("custom", String::new())),
        None => Err(ctx.error(path, "a match pattern is required")),
    }
}

pub(crate) fn header_match(ctx: &Ctx, path: &str, h: HeaderMatcher) -> Result<Value, XdsError> {
    if h.treat_missing_header_as_empty {
        return Err(ctx.error(
            format!("{path}.treat_missing_header_as_empty"),
            "is not supported by Sinew",
        ));
    }
    let mut out = Map::new();
    out.insert("name".into(), json!(h.name));
    if h.invert_match {
        out.insert("invert".into(), json!(true));
    }
    match h.header_match_specifier {
        Some(HeaderMatchSpecifier::ExactMatch(v)) => {
            out.insert("exact".into(), json!(v));
        }
        Some(HeaderMatchSpecifier::PrefixMatch(v)) => {
            out.insert("prefix".into(), json!(v));
        }
        Some(HeaderMatchSpecifier::SafeRegexMatch(r)) => {
            out.insert("regex".into(), json!(r.regex));
        }
        Some(HeaderMatchSpecifier::PresentMatch(p)) => {
            out.insert("present".into(), json!(p));
        }
        Some(HeaderMatchSpecifier::StringMatch(s)) => {
            let (kind, value) = string_matcher(ctx, &format!("{path}.string_match"), s)?;
            match kind {
                "exact" | "prefix" | "regex" => {
                    out.insert(kind.into(), json!(value));
                }
                other => {
                    return Err(ctx.error(
                        format!("{path}.string_match.{other}"),
                        "is not supported by Sinew",
                    ))
                }
            }
        }
        Some(HeaderMatchSpecifier::SuffixMatch(_)) => {
            return Err(ctx.error(format!("{path}.suffix_match"), "is not supported by Sinew"))
        }
        Some(HeaderMatchSpecifier::ContainsMatch(_)) => {
            return Err(ctx.error(
                format!("{path}.contains_match"),
                "is not supported by Sinew",
            ))
        }
        Some(HeaderMatchSpecifier::RangeMatch(_)) => {
            return Err(ctx.error(format!("{path}.range_match"), "is not supported by Sinew"))
        }
        // Envoy: no specifier means the header must be present.
        None => {
            out.insert("present".into(), json!(true));
        }
    }
    Ok(Value::Object(out))
}

fn route_action(
    ctx: &Ctx,
    path: &str,
    mut a: RouteAction,
    out: &mut Map<String, Value>,
) -> Result<(), XdsError> {
    match a.cluster_specifier.take() {
        Some(route_action::ClusterSpecifier::Cluster(name)) => {
            out.insert("cluster".into(), json!(name));
        }
        Some(route_action::ClusterSpecifier::WeightedClusters(weighted)) => {
            let mapped = weighted_clusters(ctx, &format!("{path}.weighted_clusters"), weighted)?;
            out.insert("weighted_clusters".into(), mapped);
        }
        Some(_) => {
            return Err(ctx.error(
                format!("{path}.cluster_header"),
                "only cluster and weighted_clusters are supported by Sinew",
            ))
        }
        None => {
            return Err(ctx.error(
                format!("{path}.cluster"),
                "cluster or weighted_clusters is required",
            ))
        }
    }
    if let Some(m) = a.metadata_match.take() {
        out.insert("metadata_match".into(), json!(labels(Some(&m))));
    }
    let mut rewrite = Map::new();
    if !a.prefix_rewrite.is_empty() {
        rewrite.insert(
            "prefix".into(),
            json!(std::mem::take(&mut a.prefix_rewrite)),
        );
    }
    if let Some(r) = a.regex_rewrite.take() {
        let pattern = r.pattern.map(|p| p.regex).unwrap_or_default();
        rewrite.insert(
            "regex".into(),
            json!({"pattern": pattern, "substitution": r.substitution}),
        );
    }
    match a.host_rewrite_specifier.take() {
        Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(host)) => {
            rewrite.insert("host".into(), json!(host));
        }
        Some(_) => {
            return Err(ctx.error(
                format!("{path}.auto_host_rewrite"),
                "only host_rewrite_literal is supported by Sinew",
            ))
        }
        None => {}
    }
    if !rewrite.is_empty() {
        out.insert("rewrite".into(), Value::Object(rewrite));
    }
    if let Some(t) = a.timeout.take() {
        out.insert("timeout".into(), json!(duration(&t)));
    }
    if let Some(t) = a.idle_timeout.take() {
        out.insert("idle_timeout".into(), json!(duration(&t)));
    }
    if let Some(retry) = a.retry_policy.take() {
        out.insert(
            "retry".into(),
            retry_policy(ctx, &format!("{path}.retry_policy"), retry)?,
        );
    }
    let mut hashes = Vec::new();
    for (i, h) in std::mem::take(&mut a.hash_policy).into_iter().enumerate() {
        let hpath = format!("{path}.hash_policy[{i}]");
        if h.terminal {
            return Err(ctx.error(format!("{hpath}.terminal"), "is not supported by Sinew"));
        }
        match h.policy_specifier {
            Some(PolicySpecifier::Header(header)) if header.regex_rewrite.is_none() => {
                hashes.push(json!({"header": header.header_name}))
            }
            Some(PolicySpecifier::Cookie(cookie))
                if cookie.ttl.is_none()
                    && cookie.path.is_empty()
                    && cookie.attributes.is_empty() =>
            {
                hashes.push(json!({"cookie": cookie.name}))
            }
            Some(PolicySpecifier::ConnectionProperties(p)) => {
                hashes.push(json!({"source_ip": p.source_ip}))
            }
            _ => return Err(ctx.error(
                hpath,
                "only header, cookie (by name) and source_ip hash policies are supported by Sinew",
            )),
        }
    }
    if !hashes.is_empty() {
        out.insert("hash_policy".into(), Value::Array(hashes));
    }
    let mut upgrades = Map::new();
    for (i, mut u) in std::mem::take(&mut a.upgrade_configs)
        .into_iter()
        .enumerate()
    {
        let on = u.enabled.take().is_none_or(|b| b.value);
        upgrades.insert(std::mem::take(&mut u.upgrade_type), json!(on));
        ctx.only_supported(format_args!("{path}.upgrade_configs[{i}]"), &u)?;
    }
    if !upgrades.is_empty() {
        out.insert("upgrades".into(), Value::Object(upgrades));
    }
    let mut mirrors = Vec::new();
    for (i, mut m) in std::mem::take(&mut a.request_mirror_policies)
        .into_iter()
        .enumerate()
    {
        let mpath = format!("{path}.request_mirror_policies[{i}]");
        if m.cluster.is_empty() {
            return Err(ctx.error(
                format!("{mpath}.cluster"),
                "is required by Sinew (cluster_header is not supported)",
            ));
        }
        let mut mirror = Map::new();
        mirror.insert("cluster".into(), json!(std::mem::take(&mut m.cluster)));
        // Unset, every request is copied, as in Envoy.
        if let Some(fraction) = m.runtime_fraction.take() {
            let share = crate::cors::percent(ctx, &format!("{mpath}.runtime_fraction"), fraction)?;
            mirror.insert("percentage".into(), json!(share));
        }
        if std::mem::take(&mut m.disable_shadow_host_suffix_append) {
            mirror.insert("disable_shadow_host_suffix_append".into(), json!(true));
        }
        ctx.only_supported(&mpath, &m)?;
        mirrors.push(Value::Object(mirror));
    }
    if !mirrors.is_empty() {
        out.insert("request_mirror_policies".into(), Value::Array(mirrors));
    }
    ctx.only_supported(path, &a)
}

fn retry_policy(ctx: &Ctx, path: &str, mut r: RetryPolicy) -> Result<Value, XdsError> {
    let mut out = Map::new();
    let retry_on: Vec<&str> = r
        .retry_on
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    out.insert("retry_on".into(), json!(retry_on));
    r.retry_on.clear();
    // Envoy's default is one retry, as Sinew's.
    if let Some(n) = r.num_retries.take() {
        out.insert("num_retries".into(), json!(n.value));
    }
    if let Some(t) = r.per_try_timeout.take() {
        out.insert("per_try_timeout".into(), json!(duration(&t)));
    }
    out.insert(
        "retriable_status_codes".into(),
        json!(std::mem::take(&mut r.retriable_status_codes)),
    );
    if let Some(mut backoff) = r.retry_back_off.take() {
        if let Some(base) = backoff.base_interval.take() {
            out.insert("base_backoff".into(), json!(duration(&base)));
        }
        if let Some(max) = backoff.max_interval.take() {
            out.insert("max_backoff".into(), json!(duration(&max)));
        }
        ctx.only_supported(format_args!("{path}.retry_back_off"), &backoff)?;
    }
    let mut predicates = Vec::new();
    for (i, p) in std::mem::take(&mut r.retry_host_predicate)
        .into_iter()
        .enumerate()
    {
        if p.name != "envoy.retry_host_predicates.previous_hosts" {
            return Err(ctx.error(
                format!("{path}.retry_host_predicate[{i}]"),
                format!(
                    "host predicate {:?} is not supported by Sinew (only previous_hosts is)",
                    p.name
                ),
            ));
        }
        predicates.push(json!("previous_hosts"));
    }
    out.insert("retry_host_predicate".into(), Value::Array(predicates));
    if r.host_selection_retry_max_attempts != 0 {
        out.insert(
            "host_selection_retry_max_attempts".into(),
            json!(r.host_selection_retry_max_attempts),
        );
        r.host_selection_retry_max_attempts = 0;
    }
    ctx.only_supported(path, &r)?;
    Ok(Value::Object(out))
}

fn redirect_action(ctx: &Ctx, path: &str, mut r: RedirectAction) -> Result<Value, XdsError> {
    let mut out = Map::new();
    match r.scheme_rewrite_specifier.take() {
        Some(redirect_action::SchemeRewriteSpecifier::HttpsRedirect(true)) => {
            out.insert("scheme".into(), json!("https"));
        }
        Some(redirect_action::SchemeRewriteSpecifier::SchemeRedirect(s)) => {
            out.insert("scheme".into(), json!(s));
        }
        _ => {}
    }
    if !r.host_redirect.is_empty() {
        out.insert("host".into(), json!(std::mem::take(&mut r.host_redirect)));
    }
    if r.port_redirect != 0 {
        let port = u16::try_from(r.port_redirect)
            .map_err(|_| ctx.error(format!("{path}.port_redirect"), "is not a port"))?;
        out.insert("port".into(), json!(port));
        r.port_redirect = 0;
    }
    match r.path_rewrite_specifier.take() {
        Some(redirect_action::PathRewriteSpecifier::PathRedirect(p)) => {
            out.insert("path".into(), json!(p));
        }
        Some(redirect_action::PathRewriteSpecifier::PrefixRewrite(p)) => {
            out.insert("prefix_rewrite".into(), json!(p));
        }
        Some(_) => {
            return Err(ctx.error(format!("{path}.regex_rewrite"), "is not supported by Sinew"))
        }
        None => {}
    }
    let code = match std::mem::take(&mut r.response_code) {
        0 => 301,
        1 => 302,
        2 => 303,
        3 => 307,
        4 => 308,
        other => {
            return Err(ctx.error(
                format!("{path}.response_code"),
                format!("unknown code {other}"),
            ))
        }
    };
    out.insert("code".into(), json!(code));
    out.insert(
        "strip_query".into(),
        json!(std::mem::take(&mut r.strip_query)),
    );
    ctx.only_supported(path, &r)?;
    Ok(Value::Object(out))
}

fn direct_response(ctx: &Ctx, path: &str, mut d: DirectResponseAction) -> Result<Value, XdsError> {
    let mut out = Map::new();
    out.insert("status".into(), json!(d.status));
    d.status = 0;
    if let Some(body) = d.body.take() {
        match body.specifier {
            Some(Specifier::InlineString(s)) => {
                out.insert("body".into(), json!(s));
            }
            Some(Specifier::InlineBytes(b)) => {
                let text = String::from_utf8(b).map_err(|_| {
                    ctx.error(
                        format!("{path}.body.inline_bytes"),
                        "must be UTF-8 for Sinew",
                    )
                })?;
                out.insert("body".into(), json!(text));
            }
            _ => {
                return Err(ctx.error(
                    format!("{path}.body"),
                    "only inline_string or inline_bytes is supported by Sinew",
                ))
            }
        }
    }
    ctx.only_supported(path, &d)?;
    Ok(Value::Object(out))
}

/// `request_headers_to_add` / `_to_remove` as the model's `{add, set, remove}`.
fn header_actions(
    ctx: &Ctx,
    path: &str,
    add: Vec<HeaderValueOption>,
    remove: Vec<String>,
) -> Result<Value, XdsError> {
    let mut appended = Map::new();
    let mut set = Map::new();
    for (i, option) in add.into_iter().enumerate() {
        let opath = format!("{path}[{i}]");
        let Some(header) = option.header else {
            return Err(ctx.error(format!("{opath}.header"), "is required"));
        };
        if !header.raw_value.is_empty() {
            return Err(ctx.error(
                format!("{opath}.header.raw_value"),
                "is not supported by Sinew (use value)",
            ));
        }
        // The deprecated `append` wins when set, as in Envoy.
        let append = match option.append {
            Some(a) => a.value,
            None => match option.append_action {
                0 => true,
                2 => false,
                _ => {
                    return Err(ctx.error(
                        format!("{opath}.append_action"),
                        "only APPEND_IF_EXISTS_OR_ADD and OVERWRITE_IF_EXISTS_OR_ADD are supported by Sinew",
                    ))
                }
            },
        };
        if option.keep_empty_value {
            return Err(ctx.error(
                format!("{opath}.keep_empty_value"),
                "is not supported by Sinew",
            ));
        }
        let target = if append { &mut appended } else { &mut set };
        target.insert(header.key, json!(header.value));
    }
    Ok(json!({"add": appended, "set": set, "remove": remove}))
}
