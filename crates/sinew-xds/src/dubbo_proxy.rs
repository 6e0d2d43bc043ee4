//! Envoy's Dubbo proxy network filter (`envoy.filters.network.dubbo_proxy`) as an RPC
//! listener speaking Dubbo (`rpc: {protocol: dubbo, virtual_hosts}`).
//!
//! Envoy routes a call through its route configurations in order: the first whose
//! `interface` (exact, `*.suffix`, `prefix.*` or `*`), `group` and `version` fit the
//! call and one of whose routes matches takes it. Sinew's RPC routing picks a virtual
//! host by the service, as HTTP picks one by host, then its routes in order; so each
//! interface pattern becomes one virtual host holding, in Envoy's order, the routes of
//! every configuration that can take its calls, with the configuration's group and
//! version as conditions on the `group` and `version` headers. A method match is a path
//! match on `/<method>`.

use envoy_types::pb::envoy::extensions::filters::network::dubbo_proxy::v3::{
    dubbo_proxy::RouteSpecifier, route_action::ClusterSpecifier, DubboProxy, ProtocolType, Route,
    RouteConfiguration, SerializationType,
};
use serde_json::{json, Map, Value};

use crate::convert::labels;
use crate::route::{header_match, string_matcher, weighted_clusters};
use crate::{Ctx, XdsError};

pub const TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.filters.network.dubbo_proxy.v3.DubboProxy";
/// The one Dubbo filter Sinew has: the router, Envoy's default when none is listed.
const ROUTER: &str = "envoy.filters.dubbo.router";

/// The `rpc` section of a listener from a Dubbo proxy filter at `path`.
pub fn map(ctx: &Ctx, path: &str, mut dubbo: DubboProxy) -> Result<Value, XdsError> {
    dubbo.stat_prefix.clear();
    if dubbo.protocol_type != ProtocolType::Dubbo as i32 {
        return Err(ctx.error(
            format!("{path}.protocol_type"),
            "only Dubbo is supported by Sinew",
        ));
    }
    if dubbo.serialization_type != SerializationType::Hessian2 as i32 {
        return Err(ctx.error(
            format!("{path}.serialization_type"),
            "only Hessian2 is supported by Sinew",
        ));
    }
    for (i, f) in std::mem::take(&mut dubbo.dubbo_filters).iter().enumerate() {
        if f.name != ROUTER {
            return Err(ctx.error(
                format!("{path}.dubbo_filters[{i}]"),
                format!(
                    "Dubbo filter {:?} is not supported by Sinew (only {ROUTER})",
                    f.name
                ),
            ));
        }
    }
    let (configs, configs_path) = match dubbo.route_specifier.take() {
        None => (
            std::mem::take(&mut dubbo.route_config),
            format!("{path}.route_config"),
        ),
        Some(RouteSpecifier::MultipleRouteConfig(multiple)) if dubbo.route_config.is_empty() => (
            multiple.route_config,
            format!("{path}.multiple_route_config.route_config"),
        ),
        Some(RouteSpecifier::MultipleRouteConfig(_)) => {
            return Err(ctx.error(
                format!("{path}.multiple_route_config"),
                "route_config and multiple_route_config are exclusive",
            ))
        }
        Some(RouteSpecifier::Drds(_)) => {
            return Err(ctx.error(
                format!("{path}.drds"),
                "Dubbo route discovery is not supported by Sinew: give route_config inline",
            ))
        }
    };
    ctx.only_supported(path, &dubbo)?;
    let mut configured = Vec::new();
    for (i, config) in configs.into_iter().enumerate() {
        let cpath = format!("{configs_path}[{i}]");
        configured.push(mapped_config(ctx, &cpath, config)?);
    }
    Ok(json!({
        "protocol": "dubbo",
        "virtual_hosts": virtual_hosts(&configured),
    }))
}

/// One route configuration: its interface pattern and its routes, each already
/// carrying the configuration's group and version conditions.
struct Configured {
    name: String,
    interface: String,
    routes: Vec<Value>,
}

fn mapped_config(
    ctx: &Ctx,
    path: &str,
    mut config: RouteConfiguration,
) -> Result<Configured, XdsError> {
    let interface = std::mem::take(&mut config.interface);
    if interface.is_empty() {
        return Err(ctx.error(
            format!("{path}.interface"),
            "is required (`*` takes every interface)",
        ));
    }
    let conditions: Vec<Value> = [("group", &config.group), ("version", &config.version)]
        .into_iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(name, value)| json!({"name": name, "exact": value}))
        .collect();
    let mut routes = Vec::new();
    for (i, route) in std::mem::take(&mut config.routes).into_iter().enumerate() {
        routes.push(mapped_route(
            ctx,
            &format!("{path}.routes[{i}]"),
            route,
            &conditions,
        )?);
    }
    Ok(Configured {
        name: std::mem::take(&mut config.name),
        interface,
        routes,
    })
}

fn mapped_route(
    ctx: &Ctx,
    path: &str,
    mut route: Route,
    conditions: &[Value],
) -> Result<Value, XdsError> {
    let mut matcher = Map::new();
    let mut headers: Vec<Value> = conditions.to_vec();
    let mut m = route.r#match.take().unwrap_or_default();
    let mpath = format!("{path}.match");
    match m.method.take() {
        Some(mut method) => {
            if !method.params_match.is_empty() {
                return Err(ctx.error(
                    format!("{mpath}.method.params_match"),
                    "matching on arguments is not supported by Sinew (it reads no arguments)",
                ));
            }
            let name_path = format!("{mpath}.method.name");
            let name = method
                .name
                .take()
                .ok_or_else(|| ctx.error(&name_path, "is required"))?;
            match string_matcher(ctx, &name_path, name)? {
                ("exact", v) => matcher.insert("path".into(), json!(format!("/{v}"))),
                ("prefix", v) => matcher.insert("prefix".into(), json!(format!("/{v}"))),
                ("regex", v) => matcher.insert("path_regex".into(), json!(format!("/(?:{v})"))),
                (kind, _) => return Err(ctx.error(
                    format!("{name_path}.{kind}"),
                    "is not supported by Sinew for method names (exact, prefix and safe_regex are)",
                )),
            };
            ctx.only_supported(format_args!("{mpath}.method"), &method)?;
        }
        None => {
            matcher.insert("prefix".into(), json!("/"));
        }
    }
    for (i, h) in std::mem::take(&mut m.headers).into_iter().enumerate() {
        headers.push(header_match(ctx, &format!("{mpath}.headers[{i}]"), h)?);
    }
    ctx.only_supported(&mpath, &m)?;
    matcher.insert("headers".into(), Value::Array(headers));
    let mut out = Map::new();
    out.insert("match".into(), Value::Object(matcher));
    let apath = format!("{path}.route");
    let mut action = route
        .route
        .take()
        .ok_or_else(|| ctx.error(&apath, "is required"))?;
    match action.cluster_specifier.take() {
        Some(ClusterSpecifier::Cluster(name)) => {
            out.insert("cluster".into(), json!(name));
        }
        Some(ClusterSpecifier::WeightedClusters(weighted)) => {
            let mapped = weighted_clusters(ctx, &format!("{apath}.weighted_clusters"), weighted)?;
            out.insert("weighted_clusters".into(), mapped);
        }
        None => {
            return Err(ctx.error(
                format!("{apath}.cluster"),
                "cluster or weighted_clusters is required",
            ))
        }
    }
    if let Some(m) = action.metadata_match.take() {
        out.insert("metadata_match".into(), json!(labels(Some(&m))));
    }
    ctx.only_supported(&apath, &action)?;
    ctx.only_supported(path, &route)?;
    Ok(Value::Object(out))
}

/// Whether an Envoy interface pattern takes calls to `interface`. The wildcard matches
/// at least one character.
fn pattern_takes(pattern: &str, interface: &str) -> bool {
    if pattern == "*" {
        return !interface.is_empty();
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        return interface.len() > suffix.len() && interface.ends_with(suffix);
    }
    if let Some(prefix) = pattern.strip_suffix('*') {
        return interface.len() > prefix.len() && interface.starts_with(prefix);
    }
    pattern == interface
}

/// One virtual host per interface pattern, in the order they first appear. An exact
/// interface's host also holds, in Envoy's order, the routes of every wildcard
/// configuration that takes it; a wildcard's host those of `*`. (Two overlapping
/// wildcards other than `*` are tried most specific first, as hosts are, rather than in
/// the order Envoy would try them.)
fn virtual_hosts(configured: &[Configured]) -> Vec<Value> {
    let mut patterns: Vec<&str> = Vec::new();
    for c in configured {
        if !patterns.contains(&c.interface.as_str()) {
            patterns.push(&c.interface);
        }
    }
    patterns
        .iter()
        .enumerate()
        .map(|(i, &pattern)| {
            let exact = !pattern.starts_with('*') && !pattern.ends_with('*');
            let routes: Vec<Value> = configured
                .iter()
                .filter(|c| {
                    c.interface == pattern
                        || (exact && pattern_takes(&c.interface, pattern))
                        || c.interface == "*"
                })
                .flat_map(|c| c.routes.iter().cloned())
                .collect();
            let name = configured
                .iter()
                .find(|c| c.interface == pattern && !c.name.is_empty())
                .map_or_else(|| format!("dubbo-{i}"), |c| c.name.clone());
            json!({"name": name, "domains": [pattern], "routes": routes})
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::load_str;
    use crate::test_fixtures::{network_filter_listener, refusal_of};

    fn bootstrap(fields: &str) -> String {
        network_filter_listener("envoy.filters.network.dubbo_proxy", TYPE_URL, fields)
    }

    fn error_of(fields: &str) -> String {
        refusal_of(&bootstrap(fields))
    }

    #[test]
    fn route_configurations_become_hosts_by_interface_with_group_and_version_as_conditions() {
        let b = load_str(
            "envoy.yaml",
            &bootstrap(
                r#"          route_config:
          - name: v2
            interface: com.example.Echo
            version: 2.0.0
            routes:
            - match: { method: { name: { exact: echo } } }
              route: { cluster: app }
          - name: any-echo
            interface: "*.Echo"
            routes:
            - match: { method: { name: { prefix: get } }, headers: [{ name: tenant, string_match: { exact: t1 } }] }
              route: { weighted_clusters: { clusters: [{ name: app, weight: 3 }, { name: app, weight: 1 }] } }
          - interface: com.example.Echo
            group: blue
            routes:
            - match: {}
              route: { cluster: app, metadata_match: { filter_metadata: { envoy.lb: { zone: a } } } }
          dubbo_filters:
          - name: envoy.filters.dubbo.router
"#,
            ),
        )
        .unwrap_or_else(|d| panic!("{d}"));
        let rpc = b.loaded.config.listeners[0]
            .rpc
            .as_ref()
            .expect("an rpc listener");
        assert_eq!(rpc.protocol, sinew_config::model::RpcProtocol::Dubbo);
        let hosts = rpc.virtual_hosts.as_ref().unwrap();
        assert_eq!(hosts.len(), 2);
        assert_eq!(hosts[0].domains, ["com.example.Echo"]);
        // Envoy's order: v2's route, then the wildcard configuration's, then blue's.
        let routes = &hosts[0].routes;
        assert_eq!(routes.len(), 3);
        assert_eq!(routes[0].match_.path.as_deref(), Some("/echo"));
        assert_eq!(routes[0].match_.headers[0].name, "version");
        assert_eq!(routes[0].match_.headers[0].exact.as_deref(), Some("2.0.0"));
        assert_eq!(routes[1].match_.prefix.as_deref(), Some("/get"));
        assert_eq!(routes[1].match_.headers[0].name, "tenant");
        assert_eq!(routes[1].weighted_clusters.as_ref().unwrap().len(), 2);
        assert_eq!(routes[2].match_.prefix.as_deref(), Some("/"));
        assert_eq!(routes[2].match_.headers[0].name, "group");
        assert_eq!(
            routes[2].metadata_match.get("zone").map(String::as_str),
            Some("a")
        );
        assert_eq!(hosts[1].name, "any-echo");
        assert_eq!(hosts[1].domains, ["*.Echo"]);
        assert_eq!(hosts[1].routes.len(), 1);
    }

    #[test]
    fn what_sinew_cannot_do_is_refused_naming_the_field() {
        let route = "          route_config:\n          - interface: x\n            routes:\n";
        for (fields, field) in [
            (
                "          serialization_type: Hessian2\n          protocol_type: Dubbo\n          dubbo_filters: [{ name: envoy.filters.dubbo.testing }]\n".to_string(),
                "dubbo_filters[0]",
            ),
            (
                format!("{route}            - match: {{ method: {{ name: {{ exact: a }}, params_match: {{ 0: {{ exact_match: x }} }} }} }}\n              route: {{ cluster: app }}\n"),
                "route_config[0].routes[0].match.method.params_match",
            ),
            (
                format!("{route}            - match: {{ method: {{ name: {{ suffix: a }} }} }}\n              route: {{ cluster: app }}\n"),
                "route_config[0].routes[0].match.method.name.suffix",
            ),
            (
                "          route_config:\n          - routes: []\n".to_string(),
                "route_config[0].interface",
            ),
            (
                "          drds: { route_config_name: r, config_source: { ads: {} } }\n".to_string(),
                ".drds",
            ),
        ] {
            let error = error_of(&fields);
            assert!(error.contains(field), "{field}: {error}");
        }
    }

    #[test]
    fn interface_patterns_take_what_envoy_says_they_take() {
        assert!(pattern_takes("*", "com.a.B"));
        assert!(pattern_takes("*.methods.add", "com.dev.methods.add"));
        assert!(!pattern_takes("*.methods.add", ".methods.add"));
        assert!(pattern_takes("com.dev.methods.*", "com.dev.methods.add"));
        assert!(!pattern_takes("com.dev.methods.*", "com.dev.methods."));
        assert!(pattern_takes("com.a.B", "com.a.B"));
        assert!(!pattern_takes("com.a.B", "com.a.C"));
    }
}
