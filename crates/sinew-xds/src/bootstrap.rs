//! Envoy v3 bootstrap files (`static_resources`, `dynamic_resources`, `admin`, `node`;
//! YAML or JSON) as a Sinew config, so an Envoy user can move with the files they have.
//!
//! The file is read with Envoy's own message descriptors (embedded by `build.rs`), so it
//! takes exactly the proto3 JSON mapping Envoy takes: unknown fields, wrong types and
//! unknown `@type`s are errors at their line and column. Static listeners and clusters
//! then go through the same mappers as LDS and CDS resources, and a field Sinew does not
//! support is an error naming it, as a NACK would. `dynamic_resources` says where the
//! xDS client connects; what it receives is added on top of the static config.

use std::collections::BTreeMap;
use std::path::Path;

use envoy_types::pb::envoy::config::bootstrap::v3::bootstrap::{DynamicResources, StaticResources};
use envoy_types::pb::envoy::config::bootstrap::v3::{Admin, Bootstrap};
use envoy_types::pb::envoy::config::core::v3::api_config_source::ApiType;
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::grpc_service::TargetSpecifier;
use envoy_types::pb::envoy::config::core::v3::{ApiConfigSource, ConfigSource, Node};
use sinew_config::{model, Config, ConfigError, Diagnostics, LoadedConfig, SourceMap};

use crate::assemble::{Assembled, Change, Resources};
use crate::convert::socket_address;
use crate::envoy_text::{descriptors, lenient, parse_message, unknown_type_message};
use crate::grpc_services::GrpcServices;
use crate::resource_file::ResourceFile;
use crate::{Ctx, XdsError};

/// A bootstrap file as Sinew runs it.
#[derive(Debug, Clone)]
pub struct EnvoyBootstrap {
    /// The static resources and admin, as a checked Sinew config.
    pub loaded: LoadedConfig,
    /// `node`, for the xDS client.
    pub node: Option<Node>,
    /// The control plane `dynamic_resources` names, when it names one.
    pub dynamic: Option<DynamicSource>,
    /// The files `dynamic_resources` takes listeners and clusters from (filesystem xDS),
    /// clusters first: the proxy reads them at start and follows them.
    pub files: Vec<ResourceFile>,
    /// `layered_runtime`: the proxy installs it ([`crate::runtime::Runtime::install`]) for
    /// the admin API and the resources xDS sends.
    pub runtime: crate::runtime::Runtime,
    /// The static clusters that gRPC config sources (ADS, SDS servers) name: the proxy
    /// installs it for the resources xDS sends ([`GrpcServices::install`]).
    pub grpc_services: GrpcServices,
    assembled: Assembled,
    /// Each static resource's label (`listener "web"`) and its path in the file.
    locations: BTreeMap<String, String>,
}

/// The control plane `dynamic_resources` points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicSource {
    /// `http://ip:port` of each of the xDS cluster's endpoints (or the Google gRPC
    /// `target_uri`); the client uses one at a time.
    pub servers: Vec<String>,
    /// `DELTA_GRPC` rather than `GRPC`.
    pub delta: bool,
    /// One ADS stream (`lds_config: {ads: {}}`) rather than a stream per type.
    pub aggregated: bool,
    /// The static cluster whose TLS context (its `transport_socket`) secures the
    /// channel: the servers are then `https://`, checked and named as that cluster
    /// checks and names its upstreams.
    pub tls_cluster: Option<String>,
}

/// Whether `text` is an Envoy bootstrap rather than a Sinew config: it has a top-level
/// key only a bootstrap has. (`admin` is in both.)
pub fn is_envoy_bootstrap(text: &str) -> bool {
    let Ok(serde_yaml_ng::Value::Mapping(top)) = serde_yaml_ng::from_str(text) else {
        return false;
    };
    top.keys().any(|k| {
        matches!(
            k.as_str(),
            Some("static_resources" | "dynamic_resources" | "node" | "layered_runtime")
        )
    })
}

/// Reads and maps a bootstrap file, and the files it takes listeners and clusters from
/// ([`EnvoyBootstrap::check_files`]).
pub fn load_file(path: &Path) -> Result<EnvoyBootstrap, Diagnostics> {
    let (name, text) = sinew_config::read_file(path)?;
    let bootstrap = load_str(&name, &text)?;
    bootstrap.check_files()?;
    Ok(bootstrap)
}

/// Parses and maps bootstrap text; `name` is used in error messages.
pub fn load_str(name: &str, text: &str) -> Result<EnvoyBootstrap, Diagnostics> {
    let source_map = SourceMap::index(text);
    let fail = |errors: Vec<ConfigError>| Diagnostics::new(name, source_map.clone(), errors);
    // Where the indexing parser stops reading YAML that serde's parser still takes, the
    // fields past that point have no place to be reported at: refuse the text there, as
    // Sinew's own config loader does.
    if let Some((position, why)) = source_map.unreadable() {
        return Err(fail(vec![ConfigError {
            path: String::new(),
            message: format!("not valid YAML: {why}"),
            position: Some(position),
        }]));
    }
    let stood_in = stand_in_unknown_types(text, &source_map);
    let parsed = {
        let text = stood_in.as_ref().map_or(text, |s| s.text.as_str());
        let bootstrap_message = descriptors()
            .get_message_by_name("envoy.config.bootstrap.v3.Bootstrap")
            .expect("the bootstrap message is embedded");
        let canonical = lenient::canonical(text, &bootstrap_message);
        let rewritten = stood_in.is_some() || canonical.is_some();
        parse(canonical.as_deref().unwrap_or(text), &source_map).map_err(|mut e| {
            // The parser's line and column are in the rewritten text; the field's own
            // place in the file is the one to report.
            if rewritten && !e.path.is_empty() {
                e.position = None;
            }
            e
        })
    };
    let (unknown, muted) = stood_in.map(|s| (s.errors, s.muted)).unwrap_or_default();
    let bootstrap = parsed.map_err(|e| fail(unknown.iter().cloned().chain([e]).collect()))?;
    let mut mapped = map(bootstrap);

    let mut errors = std::mem::take(&mut mapped.refused);
    let left_out = std::mem::take(&mut mapped.left_out);
    let waits_for_refused = |w: &&crate::assemble::Warming| left_out.contains(&w.waits_for);
    errors.extend(mapped.assembled.warming.iter().filter(|w| !waits_for_refused(w)).map(|w| {
        let at = mapped.locations.get(&w.resource).cloned().unwrap_or_default();
        if mapped.pipes.contains(&w.waits_for) {
            return ConfigError::new(at, format!(
                "{} routes to {}, whose endpoints are Unix sockets (pipe): Sinew reaches a pipe only as a gRPC config source (SDS or xDS), not as an upstream",
                w.resource, w.waits_for,
            ));
        }
        // A static listener that waits is one whose route names a cluster nobody defines
        // (or an RDS/EDS name only a control plane could send).
        ConfigError::new(
            at,
            format!("{}{}", incomplete_static(w), if mapped.dynamic.is_some() {
                "; static resources must be complete on their own (Sinew does not add dynamic clusters, routes or endpoints to them)"
            } else {
                ""
            }),
        )
    }));
    errors.extend(sinew_config::validate(&mapped.assembled.config));
    // What a stood-in extension's element is refused for is that it is unknown, said once.
    // And so is the list field holding it (`access_log` for `access_log[0]`).
    errors.retain(|e| {
        !muted.iter().any(|m| {
            is_under(&e.path, m)
                || m.strip_suffix(']')
                    .and_then(|m| m.rsplit_once('['))
                    .is_some_and(|(list, _)| list == e.path)
        })
    });
    errors.splice(0..0, unknown);
    let loaded = LoadedConfig {
        file: name.to_string(),
        config: std::mem::take(&mut mapped.assembled.config),
        source_map,
        source: text.into(),
    };
    let bootstrap = EnvoyBootstrap {
        loaded,
        node: mapped.node,
        dynamic: mapped.dynamic,
        files: mapped.files,
        runtime: mapped.runtime,
        grpc_services: mapped.grpc_services,
        assembled: mapped.assembled,
        locations: mapped.locations,
    };
    if errors.is_empty() {
        Ok(bootstrap)
    } else {
        Err(bootstrap.diagnostics(errors))
    }
}

/// Why a static resource that would wait (under xDS) is an error in a bootstrap: nothing
/// will ever send what it waits for.
fn incomplete_static(w: &crate::assemble::Warming) -> String {
    let resource = &w.resource;
    if let Some(cluster) = w.waits_for.strip_prefix("cluster ") {
        format!("{resource} routes to cluster {cluster}, which static_resources.clusters does not define")
    } else if let Some(routes) = w.waits_for.strip_prefix("route configuration ") {
        format!("{resource} takes its routes over RDS (route configuration {routes}), which a static listener cannot: give it route_config inline")
    } else if let Some(service) = w.waits_for.strip_prefix("the endpoints of ") {
        format!("{resource} takes its endpoints over EDS ({service}), which a static cluster cannot: give it load_assignment")
    } else {
        format!("{w}, which nothing in the file provides")
    }
}

impl EnvoyBootstrap {
    /// Reads the files `dynamic_resources` takes listeners and clusters from, and checks
    /// them with the static config ([`crate::resource_file::check`]). They must exist, as
    /// in Envoy; a missing one is an error where the bootstrap names it, a bad one an
    /// error in that file at its line and column.
    pub fn check_files(&self) -> Result<(), Diagnostics> {
        for file in &self.files {
            if let Err(e) = std::fs::metadata(&file.path) {
                let at = format!("{}.path", file.at);
                let why = format!(
                    "{:?} cannot be read: {e} (Envoy and Sinew need it at start)",
                    file.path
                );
                return Err(self.loaded.diagnostics(vec![ConfigError::new(at, why)]));
            }
        }
        crate::resource_file::check(&self.files, &self.loaded.config)
    }

    /// Errors about the mapped config (paths like `listeners[0].http.routes[1]`) as
    /// errors about the file: the static resource they came from, and the path inside.
    pub fn diagnostics(&self, errors: Vec<ConfigError>) -> Diagnostics {
        let errors = errors
            .into_iter()
            .map(|e| {
                if e.path.starts_with("static_resources") || e.path.starts_with("admin") {
                    return e;
                }
                let blamed = self.assembled.blame(&e.path);
                let (resource, tail) = match blamed.split_once(": ") {
                    Some((r, t)) => (r, Some(t)),
                    None => (blamed.as_str(), None),
                };
                match self.locations.get(resource) {
                    Some(at) => ConfigError {
                        path: at.clone(),
                        message: match tail {
                            Some(tail) => format!("{resource}: {tail}: {}", e.message),
                            None => format!("{resource}: {}", e.message),
                        },
                        position: None,
                    },
                    None => e,
                }
            })
            .collect();
        self.loaded.diagnostics(errors)
    }
}

/// A bootstrap's text with each extension Sinew has no descriptor for stood in for by an
/// empty `google.protobuf.Struct`, so that one unknown `@type` does not stop the parse and
/// hide every other problem of the file.
struct StoodIn<'a> {
    source_map: &'a SourceMap,
    text: String,
    /// One per unknown `@type`, at its `typed_config`.
    errors: Vec<ConfigError>,
    /// The elements holding them (`...http_filters[1]`): what the mappers then say about
    /// those is noise.
    muted: Vec<String>,
}

/// None when every `@type` is known (the text is parsed as it is).
fn stand_in_unknown_types<'a>(text: &str, source_map: &'a SourceMap) -> Option<StoodIn<'a>> {
    fn walk(value: &mut serde_yaml_ng::Value, path: &str, found: &mut StoodIn<'_>) {
        use serde_yaml_ng::Value;
        match value {
            Value::Mapping(map) => {
                let unknown = map
                    .get("@type")
                    .and_then(Value::as_str)
                    .map(|url| url.rsplit('/').next().unwrap_or(url).to_string())
                    .filter(|name| descriptors().get_message_by_name(name).is_none());
                if let Some(name) = unknown {
                    let message = unknown_type_message(&format!("message '{name}' not found"))
                        .unwrap_or_else(|| format!("{name}: unknown type"));
                    // At the `@type` line, where a parse error about it would be.
                    let mut error = ConfigError::new(path, message);
                    error.position = found.source_map.lookup(&format!("{path}.@type"));
                    found.errors.push(error);
                    found.muted.push(
                        path.rsplit_once(['.'])
                            .map_or(path, |(parent, _)| parent)
                            .to_string(),
                    );
                    *value = serde_yaml_ng::from_str(
                        "{\"@type\": type.googleapis.com/google.protobuf.Struct, value: {}}",
                    )
                    .expect("a valid stand-in");
                    return;
                }
                for (key, child) in map.iter_mut() {
                    let Some(key) = key.as_str() else { continue };
                    let child_path = if path.is_empty() {
                        key.to_string()
                    } else {
                        format!("{path}.{key}")
                    };
                    walk(child, &child_path, found);
                }
            }
            Value::Sequence(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    walk(item, &format!("{path}[{i}]"), found);
                }
            }
            Value::Tagged(tagged) => walk(&mut tagged.value, path, found),
            _ => {}
        }
    }
    let mut value: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).ok()?;
    let mut found = StoodIn {
        source_map,
        text: String::new(),
        errors: Vec::new(),
        muted: Vec::new(),
    };
    walk(&mut value, "", &mut found);
    if found.errors.is_empty() {
        return None;
    }
    found.text = serde_yaml_ng::to_string(&value).ok()?;
    Some(found)
}

/// Whether `path` is `prefix` or inside it.
fn is_under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// The proto3 JSON mapping of `Bootstrap`, read from YAML (JSON is YAML too).
pub(crate) fn parse(text: &str, source_map: &SourceMap) -> Result<Bootstrap, ConfigError> {
    parse_message(text, source_map, "envoy.config.bootstrap.v3.Bootstrap")
}

struct Mapped {
    assembled: Assembled,
    node: Option<Node>,
    dynamic: Option<DynamicSource>,
    files: Vec<ResourceFile>,
    runtime: crate::runtime::Runtime,
    locations: BTreeMap<String, String>,
    /// Everything refused, each at its path in the file.
    refused: Vec<ConfigError>,
    /// The labels (`cluster "svc"`) of static resources left out because they were
    /// refused: what waits for one of them has its error already.
    left_out: std::collections::BTreeSet<String>,
    /// The labels of static clusters left out because their endpoints are Unix sockets:
    /// channels to a local agent, reached only as gRPC config sources.
    pipes: std::collections::BTreeSet<String>,
    grpc_services: GrpcServices,
}

/// Maps the whole bootstrap, going on past each problem so that one pass finds them all
/// (the migration report, [`crate::report`]): a refused static resource is left out and
/// the others are still mapped and checked.
fn map(mut bootstrap: Bootstrap) -> Mapped {
    let grpc_services = grpc_services(&bootstrap);
    let (runtime, runtime_refused) = take_runtime(&mut bootstrap);
    let ((mut mapped, notes), read) = runtime.clone().while_mapping(|| {
        grpc_services
            .clone()
            .while_mapping(|| crate::report::collecting(|| map_collecting(&mut bootstrap)))
    });
    mapped.refused.extend(runtime_refused);
    for key in runtime.unread(&read) {
        mapped.refused.push(ConfigError::new(
            format!("layered_runtime.layers[{}].static_layer", runtime.set_by(&key)),
            format!("runtime key {key:?}: Sinew does not read it (docs/envoy-bootstrap.md lists the runtime keys it honours); remove it"),
        ));
    }
    mapped.runtime = runtime;
    mapped.grpc_services = grpc_services;
    // The resources are mapped twice (alone, then together), so a note can come twice.
    let mut seen = std::collections::BTreeSet::new();
    let found: Vec<ConfigError> = notes
        .into_iter()
        .filter(|e| seen.insert(e.clone()))
        .map(|e| in_file(&mapped.locations, e))
        .collect();
    mapped.refused.splice(0..0, found);
    mapped
}

/// `layered_runtime`: static and admin layers; disk and RTDS layers are refused.
fn take_runtime(bootstrap: &mut Bootstrap) -> (crate::runtime::Runtime, Vec<ConfigError>) {
    use envoy_types::pb::envoy::config::bootstrap::v3::runtime_layer::LayerSpecifier;
    let mut runtime = crate::runtime::Runtime::default();
    let mut refused = Vec::new();
    let Some(layered) = bootstrap.layered_runtime.take() else {
        return (runtime, refused);
    };
    for (i, layer) in layered.layers.into_iter().enumerate() {
        let at = format!("layered_runtime.layers[{i}]");
        match layer.layer_specifier {
            Some(LayerSpecifier::StaticLayer(values)) => {
                runtime.add_static_layer(&layer.name, &crate::runtime::struct_json(&values));
            }
            Some(LayerSpecifier::AdminLayer(_)) => runtime.add_admin_layer(&layer.name),
            Some(LayerSpecifier::DiskLayer(_)) => refused.push(ConfigError::new(
                format!("{at}.disk_layer"),
                "is not supported by Sinew: put the values in a static_layer, or set them with the admin API (an admin_layer and POST /runtime_modify)",
            )),
            Some(LayerSpecifier::RtdsLayer(_)) => refused.push(ConfigError::new(
                format!("{at}.rtds_layer"),
                "is not supported by Sinew (no RTDS): use a static_layer or an admin_layer",
            )),
            None => refused.push(ConfigError::new(at, "needs a layer: static_layer or admin_layer")),
        }
    }
    (runtime, refused)
}

/// The static clusters gRPC config sources may name, and which one is the ADS server's.
fn grpc_services(bootstrap: &Bootstrap) -> GrpcServices {
    use envoy_types::pb::envoy::config::core::v3::grpc_service::TargetSpecifier;
    let ads_cluster = bootstrap
        .dynamic_resources
        .as_ref()
        .and_then(|d| d.ads_config.as_ref())
        .and_then(|a| a.grpc_services.first())
        .and_then(|g| match &g.target_specifier {
            Some(TargetSpecifier::EnvoyGrpc(grpc)) => Some(grpc.cluster_name.clone()),
            _ => None,
        });
    let clusters = bootstrap
        .static_resources
        .as_ref()
        .map_or(&[][..], |s| &s.clusters[..]);
    GrpcServices::from_clusters(clusters, ads_cluster)
}

/// A mapper's error as an error about the file: the static resource's path, then the
/// field's.
fn in_file(locations: &BTreeMap<String, String>, e: XdsError) -> ConfigError {
    let root = Ctx::new("bootstrap", "").resource;
    match locations.get(&e.resource) {
        Some(at) => ConfigError::new(
            if e.field.is_empty() {
                at.clone()
            } else {
                format!("{at}.{}", e.field)
            },
            e.message,
        ),
        None if e.resource == root => ConfigError::new(e.field, e.message),
        None => ConfigError::new("static_resources", e.to_string()),
    }
}

fn map_collecting(bootstrap: &mut Bootstrap) -> Mapped {
    let ctx = Ctx::new("bootstrap", "");
    let mut refused: Vec<ConfigError> = Vec::new();
    let at_root = |e: XdsError| ConfigError::new(e.field, e.message);
    let node = bootstrap.node.take();
    // Sinew's defaults for what a bootstrap does not say (drain time and the like).
    let mut base: Config =
        serde_json::from_value(serde_json::json!({})).expect("an empty config is valid");
    if let Some(admin) = bootstrap.admin.take() {
        match map_admin(&ctx, admin) {
            Ok(admin) => base.admin = Some(admin),
            Err(e) => refused.push(at_root(e)),
        }
    }
    if let Some(manager) = bootstrap.overload_manager.take() {
        match crate::overload::map(&ctx, manager) {
            Ok(overload) => base.overload = Some(overload),
            Err(e) => refused.push(at_root(e)),
        }
    }
    let statics = bootstrap.static_resources.take().unwrap_or_default();
    let dynamic = bootstrap.dynamic_resources.take();
    // When Envoy flushes stats to its sinks (on reads of the admin API, or every
    // interval): Sinew has no stats sinks — its metrics are read at scrape time — so
    // either says nothing that changes what Sinew does.
    if let Some(
        envoy_types::pb::envoy::config::bootstrap::v3::bootstrap::StatsFlush::StatsFlushOnAdmin(_),
    ) = bootstrap.stats_flush
    {
        bootstrap.stats_flush = None;
    }
    bootstrap.stats_flush_interval = None;
    if let Err(e) = ctx.only_supported("", &*bootstrap) {
        refused.push(at_root(e));
    }

    let StaticResources {
        mut listeners,
        mut clusters,
        secrets,
    } = statics;
    name_unnamed_listeners(&mut listeners);
    if let Err(e) = crate::static_secrets::resolve(&mut listeners, &mut clusters, secrets) {
        refused.push(e);
    }
    // Each static resource by the label its mapper's errors carry; a second resource of
    // the same name is refused and left out.
    let mut locations = BTreeMap::new();
    let mut keep = |kind: &str, list: &str, i: usize, name: &str| {
        let label = Ctx::new(kind, name).resource;
        let at = format!("static_resources.{list}[{i}]");
        if locations.contains_key(&label) {
            refused.push(ConfigError::new(
                format!("{at}.name"),
                format!("{label} is defined twice"),
            ));
            return false;
        }
        locations.insert(label, at);
        true
    };
    let mut i = 0;
    clusters.retain(|c| {
        i += 1;
        keep("cluster", "clusters", i - 1, &c.name)
    });
    let mut i = 0;
    listeners.retain(|l| {
        i += 1;
        keep("listener", "listeners", i - 1, &l.name)
    });
    let (dynamic, files) = match dynamic {
        Some(d) => match map_dynamic(d, &clusters) {
            Ok(d) => d,
            Err(e) => {
                refused.push(e);
                (None, Vec::new())
            }
        },
        None => (None, Vec::new()),
    };
    // A cluster of Unix sockets is a channel to a local agent (Istio's `sds-grpc`): the
    // config sources that name it reach it; it is no upstream.
    let mut pipes = std::collections::BTreeSet::new();
    clusters.retain(|c| {
        let pipe = crate::grpc_services::is_pipe_only(c);
        if pipe {
            pipes.insert(Ctx::new("cluster", &c.name).resource);
        }
        !pipe
    });
    fn complete<T>(updated: Vec<T>) -> Change<T> {
        Change {
            updated,
            removed: Vec::new(),
            complete: true,
        }
    }
    // Each resource mapped alone first, so each one's first error is found; then those
    // that map, together.
    let mut left_out = std::collections::BTreeSet::new();
    let mut alone = |resources: Result<Resources, XdsError>| match resources {
        Ok(_) => true,
        Err(e) => {
            left_out.insert(e.resource.clone());
            refused.push(in_file(&locations, e));
            false
        }
    };
    clusters.retain(|c| alone(Resources::default().clusters(complete(vec![c.clone()]))));
    listeners.retain(|l| alone(Resources::default().listeners(complete(vec![l.clone()]))));
    let resources = Resources::default()
        .clusters(complete(clusters))
        .and_then(|r| r.listeners(complete(listeners)));
    let assembled = match resources {
        Ok(mut resources) => resources.assemble(&base),
        Err(e) => {
            refused.push(in_file(&locations, e));
            Resources::default().assemble(&base)
        }
    };
    Mapped {
        assembled,
        node,
        dynamic,
        files,
        runtime: crate::runtime::Runtime::default(),
        locations,
        refused,
        left_out,
        pipes,
        grpc_services: GrpcServices::default(),
    }
}

/// Envoy gives a static listener without a `name` one of its own; Sinew names it after
/// its address (`0.0.0.0_10000`, the way Istio names listeners), made unique with a
/// suffix, so its metrics, logs and admin views are stable across restarts.
fn name_unnamed_listeners(
    listeners: &mut [envoy_types::pb::envoy::config::listener::v3::Listener],
) {
    use envoy_types::pb::envoy::config::core::v3::{address, socket_address::PortSpecifier};
    let mut taken: std::collections::BTreeSet<String> =
        listeners.iter().map(|l| l.name.clone()).collect();
    for (i, listener) in listeners.iter_mut().enumerate() {
        if !listener.name.is_empty() {
            continue;
        }
        let base = match listener.address.as_ref().and_then(|a| a.address.as_ref()) {
            Some(address::Address::SocketAddress(s)) => match s.port_specifier {
                Some(PortSpecifier::PortValue(port)) => format!("{}_{port}", s.address),
                _ => s.address.clone(),
            },
            Some(address::Address::Pipe(p)) => p.path.clone(),
            _ => format!("listener_{i}"),
        };
        let mut name = base.clone();
        let mut n = 1;
        while taken.contains(&name) {
            n += 1;
            name = format!("{base}#{n}");
        }
        taken.insert(name.clone());
        listener.name = name;
    }
}

fn map_admin(ctx: &Ctx, admin: Admin) -> Result<model::Admin, XdsError> {
    let mut rest = admin;
    let address = socket_address(ctx, "admin.address", rest.address.take())?;
    // The admin access logs: the deprecated `access_log_path` (a file in Envoy's default
    // format; Envoy's examples say /dev/null, which is no log), then `access_log`, mapped
    // as a listener's are.
    let mut logs = Vec::new();
    let path = std::mem::take(&mut rest.access_log_path);
    if !matches!(path.as_str(), "" | "/dev/null") {
        logs.push(serde_json::json!({ "path": path }));
    }
    let listed = std::mem::take(&mut rest.access_log);
    if let Some(serde_json::Value::Array(mapped)) =
        crate::access_log::map(ctx, "admin.access_log", listed)?
    {
        logs.extend(mapped);
    }
    let access_log = serde_json::from_value(serde_json::Value::Array(logs))
        .map_err(|e| ctx.error("admin.access_log", e.to_string()))?;
    rest.profile_path.clear();
    ctx.only_supported("admin", &rest)?;
    Ok(model::Admin {
        address,
        access_log,
    })
}

/// `dynamic_resources`: which of the static clusters is the control plane, and how to
/// talk to it, or the files listeners and clusters come from. Sinew's client runs one
/// variant over one kind of stream for every type, so LDS and CDS must agree.
fn map_dynamic(
    dynamic: DynamicResources,
    clusters: &[envoy_types::pb::envoy::config::cluster::v3::Cluster],
) -> Result<(Option<DynamicSource>, Vec<ResourceFile>), ConfigError> {
    let DynamicResources {
        lds_config,
        lds_resources_locator,
        cds_config,
        cds_resources_locator,
        ads_config,
    } = dynamic;
    for (field, locator) in [
        ("lds_resources_locator", &lds_resources_locator),
        ("cds_resources_locator", &cds_resources_locator),
    ] {
        if !locator.is_empty() {
            return Err(ConfigError::new(
                format!("dynamic_resources.{field}"),
                "xDS-TP locators are not supported by Sinew",
            ));
        }
    }
    let mut sources = Vec::new();
    let mut files = Vec::new();
    // Clusters first: the listeners in a file may route to them.
    for (field, config) in [("cds_config", cds_config), ("lds_config", lds_config)] {
        let Some(config) = config else { continue };
        let path = format!("dynamic_resources.{field}");
        let ConfigSource {
            config_source_specifier,
            initial_fetch_timeout: _,
            resource_api_version: _,
            authorities,
        } = config;
        if !authorities.is_empty() {
            return Err(ConfigError::new(
                format!("{path}.authorities"),
                "is not supported by Sinew",
            ));
        }
        let source = match config_source_specifier {
            Some(ConfigSourceSpecifier::Ads(_)) => {
                let ads = ads_config.clone().ok_or_else(|| {
                    ConfigError::new(format!("{path}.ads"), "needs dynamic_resources.ads_config")
                })?;
                api_source(&ads, "dynamic_resources.ads_config", clusters, true)?
            }
            Some(ConfigSourceSpecifier::ApiConfigSource(api)) => {
                api_source(&api, &format!("{path}.api_config_source"), clusters, false)?
            }
            Some(ConfigSourceSpecifier::PathConfigSource(source)) => {
                files.push(path_source(field, &format!("{path}.path_config_source"), source)?);
                continue;
            }
            Some(ConfigSourceSpecifier::Path(file)) => {
                let source = envoy_types::pb::envoy::config::core::v3::PathConfigSource {
                    path: file,
                    ..Default::default()
                };
                files.push(path_source(field, &path, source)?);
                continue;
            }
            _ => {
                return Err(ConfigError::new(
                    path,
                    "only ADS, an API config source (gRPC) or a file (path_config_source) is supported by Sinew",
                ))
            }
        };
        sources.push((path, source));
    }
    let Some((_, first)) = sources.first().cloned() else {
        if files.is_empty() {
            return Err(ConfigError::new(
                "dynamic_resources",
                "needs lds_config or cds_config",
            ));
        }
        return Ok((None, files));
    };
    if !files.is_empty() {
        return Err(ConfigError::new(
            sources[0].0.clone(),
            "Sinew takes listeners and clusters both from files or both from one control plane, not one of each",
        ));
    }
    if let Some((path, _)) = sources.iter().find(|(_, s)| *s != first) {
        return Err(ConfigError::new(
            path.clone(),
            "Sinew's xDS client uses one server, variant and stream kind for every type; lds_config and cds_config must agree",
        ));
    }
    Ok((Some(first), files))
}

/// A `path_config_source` for `field` (`lds_config` or `cds_config`).
fn path_source(
    field: &str,
    at: &str,
    source: envoy_types::pb::envoy::config::core::v3::PathConfigSource,
) -> Result<ResourceFile, ConfigError> {
    let (path, watched_directory) = crate::convert::path_config_source(at, source)
        .map_err(|(field, why)| ConfigError::new(field, why))?;
    Ok(ResourceFile {
        type_url: if field == "lds_config" {
            crate::resource_file::LISTENER_TYPE
        } else {
            crate::resource_file::CLUSTER_TYPE
        },
        path,
        watched_directory,
        at: at.to_string(),
    })
}

/// An `ApiConfigSource` (ADS or per-type) as servers and a variant.
fn api_source(
    api: &ApiConfigSource,
    path: &str,
    clusters: &[envoy_types::pb::envoy::config::cluster::v3::Cluster],
    aggregated: bool,
) -> Result<DynamicSource, ConfigError> {
    let delta = match ApiType::try_from(api.api_type) {
        Ok(ApiType::Grpc | ApiType::AggregatedGrpc) => false,
        Ok(ApiType::DeltaGrpc | ApiType::AggregatedDeltaGrpc) => true,
        _ => {
            return Err(ConfigError::new(
                format!("{path}.api_type"),
                "only GRPC and DELTA_GRPC are supported by Sinew",
            ))
        }
    };
    let mut rest = api.clone();
    rest.api_type = 0;
    rest.transport_api_version = 0;
    rest.set_node_on_first_message_only = false;
    let services = std::mem::take(&mut rest.grpc_services);
    if let Err(field) = crate::unsupported::first_set_field(&rest) {
        return Err(ConfigError::new(
            format!("{path}.{field}"),
            "is not supported by Sinew",
        ));
    }
    let mut servers = Vec::new();
    let mut tls_cluster = None;
    if services.is_empty() {
        return Err(ConfigError::new(
            format!("{path}.grpc_services"),
            "needs one gRPC service",
        ));
    }
    for (i, service) in services.iter().enumerate() {
        let at = format!("{path}.grpc_services[{i}]");
        match &service.target_specifier {
            Some(TargetSpecifier::EnvoyGrpc(grpc)) => {
                let cluster = clusters
                    .iter()
                    .find(|c| c.name == grpc.cluster_name)
                    .ok_or_else(|| {
                        ConfigError::new(
                            format!("{at}.envoy_grpc.cluster_name"),
                            format!(
                                "{:?} is not a cluster in static_resources",
                                grpc.cluster_name
                            ),
                        )
                    })?;
                let addresses = crate::grpc_services::dial_addresses(cluster)
                    .map_err(|e| ConfigError::new(at.clone(), e.to_string()))?;
                if cluster.transport_socket.is_some() {
                    tls_cluster = Some(cluster.name.clone());
                    servers.extend(addresses.iter().map(|a| match a.strip_prefix("http://") {
                        Some(rest) => format!("https://{rest}"),
                        None => a.clone(),
                    }));
                } else {
                    servers.extend(addresses);
                }
            }
            Some(TargetSpecifier::GoogleGrpc(grpc)) => {
                let target = grpc.target_uri.trim_start_matches("dns:///");
                match target.split_once("://") {
                    None => servers.push(format!("http://{target}")),
                    Some(("http", _)) => servers.push(target.to_string()),
                    Some((scheme, rest)) => {
                        let why = if scheme == "https" {
                            "Sinew does not read a Google gRPC service's channel credentials: name the control plane by an envoy_grpc cluster with a TLS transport_socket, or give it as `--xds https://HOST:PORT` (with `--xds-ca FILE` or a `mesh`)"
                        } else {
                            "only http:// (gRPC over plain HTTP/2) is supported by Sinew"
                        };
                        return Err(ConfigError::new(
                            format!("{at}.google_grpc.target_uri"),
                            format!("{target:?}: {why}; write {rest:?} or \"http://{rest}\""),
                        ));
                    }
                }
            }
            None => return Err(ConfigError::new(at, "needs envoy_grpc or google_grpc")),
        }
    }
    if servers.is_empty() {
        return Err(ConfigError::new(
            format!("{path}.grpc_services"),
            "the xDS cluster has no endpoints",
        ));
    }
    Ok(DynamicSource {
        servers,
        delta,
        aggregated,
        tls_cluster,
    })
}

#[cfg(test)]
mod tests;
