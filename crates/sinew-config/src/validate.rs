//! Checks that a deserialized config is whole: names unique and resolvable, exactly one
//! action per route, addresses that parse. It collects every error rather than stopping
//! at the first, so a user fixes a file in one pass.
//!
//! Checks that need compiling (regexes, certificates) happen where they are compiled, in
//! the data plane, and report through the same [`ConfigError`] paths.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use crate::access_log;
use crate::model::*;
use crate::rate_limit;
use crate::token::is_tchar;
use crate::ConfigError;

pub(crate) fn check(config: &Config) -> Vec<ConfigError> {
    let mut v = Checker::default();
    let clusters: HashSet<&str> = config.clusters.iter().map(|c| c.name.as_str()).collect();
    let route_configs: HashSet<&str> = config
        .route_configs
        .iter()
        .map(|r| r.name.as_str())
        .collect();

    v.unique_names("clusters", config.clusters.iter().map(|c| c.name.as_str()));
    v.unique_names(
        "listeners",
        config.listeners.iter().map(|l| l.name.as_str()),
    );
    v.unique_names(
        "route_configs",
        config.route_configs.iter().map(|r| r.name.as_str()),
    );

    let mut addresses = HashMap::new();
    for (i, l) in config.listeners.iter().enumerate() {
        let p = format!("listeners[{i}]");
        match l.address.parse::<SocketAddr>() {
            Ok(a) => {
                if a.port() != 0 {
                    if let Some(first) = addresses.insert(a, i) {
                        v.err(
                            format!("{p}.address"),
                            format!("address {a} is already used by listeners[{first}]"),
                        );
                    }
                }
            }
            Err(_) => v.err(
                format!("{p}.address"),
                format!("{:?} is not ip:port (IPv6 as [::1]:8080)", l.address),
            ),
        }
        if l.max_connections == Some(0) {
            v.err(format!("{p}.max_connections"), "must be at least 1");
        }
        if let Some(c) = &l.connection_rate_limit {
            rate_limit::check_token_bucket(
                &format!("{p}.connection_rate_limit.token_bucket"),
                &c.token_bucket,
                &mut v.errors,
            );
        }
        if let Some(k) = &l.tcp_keepalive {
            v.errors.extend(k.check(&format!("{p}.tcp_keepalive")));
        }
        crate::chains::check(&p, l, &mut v.errors);
    }
    // Each body that serves connections: a listener's own, and each of its chains.
    for body in crate::chains::bodies(&config.listeners) {
        let (p, l) = (body.path, &*body.listener);
        if let Some(authz) = &l.authorization {
            crate::authz::check(&format!("{p}.authorization"), authz, &mut v.errors);
        }
        if let Some(tls) = &l.tls {
            if tls.alpn.is_empty() {
                v.err(format!("{p}.tls.alpn"), "must offer at least one protocol");
            }
            for (j, proto) in tls.alpn.iter().enumerate() {
                if !matches!(proto.as_str(), "h2" | "http/1.1") {
                    v.err(
                        format!("{p}.tls.alpn[{j}]"),
                        format!("unsupported ALPN protocol {proto:?} (use h2 or http/1.1)"),
                    );
                }
            }
        }
        let kinds = [
            l.http.is_some(),
            l.tcp.is_some(),
            l.rpc.is_some(),
            l.redis.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() > 1 {
            v.err(
                &p,
                "set one of `http`, `tcp`, `rpc` or `redis`, not several",
            );
        }
        if let Some(redis) = &l.redis {
            let rp = format!("{p}.redis");
            crate::redis::check(&rp, redis, &mut v.errors);
            for (field, name) in redis.clusters() {
                v.cluster_ref(format!("{rp}.{field}"), name, &clusters);
            }
            continue;
        }
        if let Some(rpc) = &l.rpc {
            let rp = format!("{p}.rpc");
            match (&rpc.route_config, &rpc.virtual_hosts) {
                (Some(_), Some(_)) => v.err(
                    &rp,
                    "set either `route_config` or `virtual_hosts`, not both",
                ),
                (None, None) => v.err(&rp, "set one of `route_config` or `virtual_hosts`"),
                (Some(name), None) => {
                    if !route_configs.contains(name.as_str()) {
                        v.err(
                            format!("{rp}.route_config"),
                            format!("no route config named {name:?}"),
                        );
                    }
                }
                (None, Some(vhosts)) => {
                    v.virtual_hosts(&format!("{rp}.virtual_hosts"), vhosts, &clusters)
                }
            }
            if let Some(l) = &rpc.local_rate_limit {
                rate_limit::check_local(&format!("{rp}.local_rate_limit"), l, &mut v.errors);
            }
            if let Some(logs) = &rpc.access_log {
                access_log::check(&format!("{rp}.access_log"), logs, &mut v.errors);
            }
            continue;
        }
        match (&l.http, &l.tcp) {
            (Some(_), Some(_)) => {}
            (None, None) => v.err(&p, "set one of `http`, `tcp`, `rpc` or `redis`"),
            (Some(http), None) => {
                let hp = format!("{p}.http");
                match (&http.route_config, &http.virtual_hosts) {
                    (Some(_), Some(_)) => v.err(
                        &hp,
                        "set either `route_config` or `virtual_hosts`, not both",
                    ),
                    (None, None) => v.err(&hp, "set one of `route_config` or `virtual_hosts`"),
                    (Some(name), None) => {
                        if !route_configs.contains(name.as_str()) {
                            v.err(
                                format!("{hp}.route_config"),
                                format!("no route config named {name:?}"),
                            );
                        }
                    }
                    (None, Some(vhosts)) => {
                        v.virtual_hosts(&format!("{hp}.virtual_hosts"), vhosts, &clusters)
                    }
                }
                if http.http2.max_concurrent_streams == Some(0) {
                    v.err(
                        format!("{hp}.http2.max_concurrent_streams"),
                        "must be at least 1",
                    );
                }
                for (field, window) in [
                    (
                        "initial_stream_window_size",
                        http.http2.initial_stream_window_size,
                    ),
                    (
                        "initial_connection_window_size",
                        http.http2.initial_connection_window_size,
                    ),
                ] {
                    if window.is_some_and(|w| !crate::model::HTTP2_WINDOW_RANGE.contains(&w)) {
                        v.err(
                            format!("{hp}.http2.{field}"),
                            "must be 65535 to 2147483647 bytes",
                        );
                    }
                }
                if http.max_request_headers_kb == 0 {
                    v.err(format!("{hp}.max_request_headers_kb"), "must be at least 1");
                }
                if http.request_headers_timeout.is_zero() {
                    v.err(format!("{hp}.request_headers_timeout"), "must be positive");
                }
                if let Some(l) = &http.local_rate_limit {
                    rate_limit::check_local(&format!("{hp}.local_rate_limit"), l, &mut v.errors);
                }
                if let Some(g) = &http.global_rate_limit {
                    rate_limit::check_global(&format!("{hp}.global_rate_limit"), g, &mut v.errors);
                }
                if let Some(logs) = &http.access_log {
                    access_log::check(&format!("{hp}.access_log"), logs, &mut v.errors);
                }
                if let Some(tracing) = &http.tracing {
                    crate::trace::check(&format!("{hp}.tracing"), tracing, &mut v.errors);
                    if let Some((field, name)) = tracing.exporter_cluster() {
                        v.cluster_ref(format!("{hp}.tracing.{field}"), name, &clusters);
                    }
                }
                if let Some(jwt) = &http.jwt_authn {
                    crate::jwt_authn::check(&format!("{hp}.jwt_authn"), jwt, &mut v.errors);
                }
                if let Some(c) = &http.compression {
                    let p = format!("{hp}.compression");
                    crate::compression::check_compression(&p, c, &mut v.errors);
                }
                if let Some(d) = &http.decompression {
                    let p = format!("{hp}.decompression");
                    crate::compression::check_decompression(&p, d, &mut v.errors);
                }
                if let Some(csrf) = &http.csrf {
                    csrf.check(&format!("{hp}.csrf"), &mut v.errors);
                }
                if http.skip_xff_append && http.use_remote_address != Some(true) {
                    v.err(
                        format!("{hp}.skip_xff_append"),
                        "applies only with use_remote_address: true",
                    );
                }
            }
            (None, Some(tcp)) => {
                let tp = format!("{p}.tcp");
                match (&tcp.cluster, &tcp.weighted_clusters) {
                    (Some(_), Some(_)) => {
                        v.err(&tp, "set either `cluster` or `weighted_clusters`, not both")
                    }
                    (None, None) => v.err(&tp, "set one of `cluster` or `weighted_clusters`"),
                    (Some(c), None) => v.cluster_ref(format!("{tp}.cluster"), c, &clusters),
                    (None, Some(w)) => v.weighted(&format!("{tp}.weighted_clusters"), w, &clusters),
                }
                if let Some(logs) = &tcp.access_log {
                    access_log::check(&format!("{tp}.access_log"), logs, &mut v.errors);
                }
            }
        }
    }

    for (i, rc) in config.route_configs.iter().enumerate() {
        v.virtual_hosts(
            &format!("route_configs[{i}].virtual_hosts"),
            &rc.virtual_hosts,
            &clusters,
        );
    }

    for (i, c) in config.clusters.iter().enumerate() {
        v.cluster(&format!("clusters[{i}]"), c);
    }
    check_tls(
        config.mesh.as_ref(),
        &crate::chains::bodies(&config.listeners),
        &config.clusters,
        &mut v.errors,
    );
    v.errors
}

#[derive(Default)]
struct Checker {
    errors: Vec<ConfigError>,
}

impl Checker {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError::new(path, message));
    }

    fn unique_names<'a>(&mut self, list: &str, names: impl Iterator<Item = &'a str>) {
        let mut seen = HashMap::new();
        for (i, name) in names.enumerate() {
            if name.is_empty() {
                self.err(format!("{list}[{i}].name"), "must not be empty");
            } else if let Some(first) = seen.insert(name, i) {
                self.err(
                    format!("{list}[{i}].name"),
                    format!("name {name:?} is already used by {list}[{first}]"),
                );
            }
        }
    }

    fn cluster_ref(&mut self, path: String, name: &str, clusters: &HashSet<&str>) {
        if !clusters.contains(name) {
            self.err(path, format!("no cluster named {name:?}"));
        }
    }

    fn weighted(&mut self, path: &str, list: &[WeightedCluster], clusters: &HashSet<&str>) {
        if list.is_empty() {
            self.err(path, "must name at least one cluster");
        }
        if list.iter().all(|w| w.weight == 0) && !list.is_empty() {
            self.err(path, "weights must not all be zero");
        }
        for (i, w) in list.iter().enumerate() {
            self.cluster_ref(format!("{path}[{i}].cluster"), &w.cluster, clusters);
        }
    }

    fn virtual_hosts(&mut self, path: &str, vhosts: &[VirtualHost], clusters: &HashSet<&str>) {
        let mut domains = HashMap::new();
        for (i, vh) in vhosts.iter().enumerate() {
            let vp = format!("{path}[{i}]");
            if vh.domains.is_empty() {
                self.err(format!("{vp}.domains"), "must list at least one domain");
            }
            for (j, d) in vh.domains.iter().enumerate() {
                let dp = format!("{vp}.domains[{j}]");
                if let Err(e) = check_domain(d) {
                    self.err(&dp, e);
                }
                if let Some(first) = domains.insert(d.to_ascii_lowercase(), i) {
                    self.err(
                        dp,
                        format!("domain {d:?} is already served by {path}[{first}]"),
                    );
                }
            }
            self.headers(&format!("{vp}.request_headers"), &vh.request_headers);
            self.headers(&format!("{vp}.response_headers"), &vh.response_headers);
            if let Some(l) = &vh.local_rate_limit {
                rate_limit::check_local(&format!("{vp}.local_rate_limit"), l, &mut self.errors);
            }
            if let Some(c) = &vh.cors {
                c.check(&format!("{vp}.cors"), &mut self.errors);
            }
            if let Some(c) = &vh.csrf {
                c.check(&format!("{vp}.csrf"), &mut self.errors);
            }
            for (j, r) in vh.routes.iter().enumerate() {
                self.route(&format!("{vp}.routes[{j}]"), r, clusters);
            }
        }
    }

    fn route(&mut self, p: &str, r: &Route, clusters: &HashSet<&str>) {
        if let Some(c) = &r.cors {
            c.check(&format!("{p}.cors"), &mut self.errors);
        }
        if let Some(c) = &r.csrf {
            c.check(&format!("{p}.csrf"), &mut self.errors);
        }
        if let Some(l) = &r.local_rate_limit {
            rate_limit::check_local(&format!("{p}.local_rate_limit"), l, &mut self.errors);
        }
        let m = &r.match_;
        let path_kinds = [&m.prefix, &m.path, &m.path_regex]
            .iter()
            .filter(|x| x.is_some())
            .count();
        if path_kinds > 1 {
            self.err(
                format!("{p}.match"),
                "set at most one of `prefix`, `path` and `path_regex`",
            );
        }
        for (field, value) in [("prefix", &m.prefix), ("path", &m.path)] {
            if let Some(value) = value {
                if !value.starts_with('/') {
                    self.err(format!("{p}.match.{field}"), "must start with `/`");
                }
            }
        }
        for (i, method) in m.methods.iter().enumerate() {
            if method.is_empty() || !method.bytes().all(is_tchar) {
                self.err(
                    format!("{p}.match.methods[{i}]"),
                    format!("{method:?} is not a method token"),
                );
            }
        }
        self.header_matchers(&format!("{p}.match.headers"), &m.headers);
        for (i, q) in m.query.iter().enumerate() {
            let conditions = [q.exact.is_some(), q.regex.is_some(), q.present.is_some()];
            if conditions.iter().filter(|c| **c).count() > 1 {
                self.err(
                    format!("{p}.match.query[{i}]"),
                    "set at most one of `exact`, `regex` and `present`",
                );
            }
        }

        let actions = [
            r.cluster.is_some(),
            r.weighted_clusters.is_some(),
            r.redirect.is_some(),
            r.direct_response.is_some(),
        ]
        .iter()
        .filter(|a| **a)
        .count();
        if actions != 1 {
            self.err(
                p,
                "set exactly one action: `cluster`, `weighted_clusters`, `redirect` or `direct_response`",
            );
        }
        if let Some(c) = &r.cluster {
            self.cluster_ref(format!("{p}.cluster"), c, clusters);
        }
        if let Some(w) = &r.weighted_clusters {
            self.weighted(&format!("{p}.weighted_clusters"), w, clusters);
        }
        if let Some(rd) = &r.redirect {
            if !matches!(rd.code, 301 | 302 | 303 | 307 | 308) {
                self.err(
                    format!("{p}.redirect.code"),
                    format!(
                        "{} is not a redirect code (301, 302, 303, 307, 308)",
                        rd.code
                    ),
                );
            }
            if rd.path.is_some() && rd.prefix_rewrite.is_some() {
                self.err(
                    format!("{p}.redirect"),
                    "set at most one of `path` and `prefix_rewrite`",
                );
            }
            if rd.prefix_rewrite.is_some() && m.prefix.is_none() {
                self.err(
                    format!("{p}.redirect.prefix_rewrite"),
                    "needs the route to match on `prefix`",
                );
            }
            if let Some(s) = &rd.scheme {
                if !matches!(s.as_str(), "http" | "https") {
                    self.err(format!("{p}.redirect.scheme"), "must be http or https");
                }
            }
        }
        if let Some(d) = &r.direct_response {
            if !(200..=599).contains(&d.status) {
                self.err(
                    format!("{p}.direct_response.status"),
                    "must be between 200 and 599",
                );
            }
        }
        if let Some(rw) = &r.rewrite {
            if rw.prefix.is_some() && rw.regex.is_some() {
                self.err(
                    format!("{p}.rewrite"),
                    "set at most one of `prefix` and `regex`",
                );
            }
            if rw.prefix.is_some() && m.prefix.is_none() {
                self.err(
                    format!("{p}.rewrite.prefix"),
                    "needs the route to match on `prefix`",
                );
            }
        }
        if let Some(retry) = &r.retry {
            for (i, on) in retry.retry_on.iter().enumerate() {
                if !matches!(
                    on.as_str(),
                    "5xx"
                        | "gateway-error"
                        | "connect-failure"
                        | "reset"
                        | "retriable-status-codes"
                ) {
                    self.err(
                        format!("{p}.retry.retry_on[{i}]"),
                        format!("unknown condition {on:?} (5xx, gateway-error, connect-failure, reset, retriable-status-codes)"),
                    );
                }
            }
            if retry.retry_on.iter().any(|o| o == "retriable-status-codes")
                && retry.retriable_status_codes.is_empty()
            {
                self.err(
                    format!("{p}.retry.retriable_status_codes"),
                    "must list codes when retry_on has retriable-status-codes",
                );
            }
            if retry.base_backoff.is_zero() {
                self.err(format!("{p}.retry.base_backoff"), "must be positive");
            }
            for (i, predicate) in retry.retry_host_predicate.iter().enumerate() {
                if predicate != "previous_hosts" {
                    self.err(
                        format!("{p}.retry.retry_host_predicate[{i}]"),
                        format!("unknown predicate {predicate:?} (previous_hosts)"),
                    );
                }
            }
            if retry.host_selection_retry_max_attempts == 0 {
                self.err(
                    format!("{p}.retry.host_selection_retry_max_attempts"),
                    "must be at least 1",
                );
            }
        }
        for (i, h) in r.hash_policy.iter().enumerate() {
            let n = [h.header.is_some(), h.cookie.is_some(), h.source_ip]
                .iter()
                .filter(|x| **x)
                .count();
            if n != 1 {
                self.err(
                    format!("{p}.hash_policy[{i}]"),
                    "set exactly one of `header`, `cookie` and `source_ip: true`",
                );
            }
            if let Some(name) = &h.header {
                self.header_name(&format!("{p}.hash_policy[{i}].header"), name);
            }
        }
        if let Some(fault) = &r.fault {
            self.fault(&format!("{p}.fault"), fault);
        }
        self.mirrors(p, r, clusters);
        self.headers(&format!("{p}.request_headers"), &r.request_headers);
        self.headers(&format!("{p}.response_headers"), &r.response_headers);
    }

    /// Header conditions, as in `match.headers` (and fault `headers`).
    fn header_matchers(&mut self, path: &str, list: &[HeaderMatch]) {
        for (i, h) in list.iter().enumerate() {
            let hp = format!("{path}[{i}]");
            self.header_name(&format!("{hp}.name"), &h.name);
            let conditions = [
                h.exact.is_some(),
                h.prefix.is_some(),
                h.regex.is_some(),
                h.present.is_some(),
            ];
            if conditions.iter().filter(|c| **c).count() > 1 {
                self.err(
                    hp,
                    "set at most one of `exact`, `prefix`, `regex` and `present`",
                );
            }
        }
    }

    /// A share of requests, written as a percentage.
    fn percentage(&mut self, path: String, value: f64) {
        if !(0.0..=100.0).contains(&value) {
            self.err(path, format!("{value} is not a percentage from 0 to 100"));
        }
    }

    fn fault(&mut self, p: &str, f: &FaultInjection) {
        if f.delay.is_none() && f.abort.is_none() {
            self.err(p, "set `delay`, `abort` or both");
        }
        if let Some(d) = &f.delay {
            let dp = format!("{p}.delay");
            match (d.fixed_delay, &d.header_delay) {
                (Some(_), Some(_)) => {
                    self.err(&dp, "set either `fixed_delay` or `header_delay`, not both")
                }
                (None, None) => self.err(&dp, "set one of `fixed_delay` or `header_delay`"),
                (Some(t), None) if t.is_zero() => {
                    self.err(format!("{dp}.fixed_delay"), "must be positive")
                }
                _ => {}
            }
            self.percentage(format!("{dp}.percentage"), d.percentage);
        }
        if let Some(a) = &f.abort {
            let ap = format!("{p}.abort");
            let kinds = [
                a.http_status.is_some(),
                a.grpc_status.is_some(),
                a.header_abort.is_some(),
            ];
            if kinds.iter().filter(|k| **k).count() != 1 {
                self.err(
                    &ap,
                    "set exactly one of `http_status`, `grpc_status` and `header_abort`",
                );
            }
            if a.http_status.is_some_and(|s| !(200..=599).contains(&s)) {
                self.err(format!("{ap}.http_status"), "must be between 200 and 599");
            }
            if a.grpc_status.is_some_and(|s| s > 16) {
                self.err(
                    format!("{ap}.grpc_status"),
                    "must be a gRPC status code from 0 to 16",
                );
            }
            self.percentage(format!("{ap}.percentage"), a.percentage);
        }
        self.header_matchers(&format!("{p}.headers"), &f.headers);
        if f.max_active_faults == Some(0) {
            self.err(format!("{p}.max_active_faults"), "must be at least 1");
        }
    }

    fn mirrors(&mut self, p: &str, r: &Route, clusters: &HashSet<&str>) {
        if !r.request_mirror_policies.is_empty()
            && r.cluster.is_none()
            && r.weighted_clusters.is_none()
        {
            self.err(
                format!("{p}.request_mirror_policies"),
                "mirrors requests sent upstream: needs `cluster` or `weighted_clusters`",
            );
        }
        for (i, m) in r.request_mirror_policies.iter().enumerate() {
            let mp = format!("{p}.request_mirror_policies[{i}]");
            self.cluster_ref(format!("{mp}.cluster"), &m.cluster, clusters);
            self.percentage(format!("{mp}.percentage"), m.percentage);
            if m.max_in_flight == 0 {
                self.err(format!("{mp}.max_in_flight"), "must be at least 1");
            }
        }
    }

    fn headers(&mut self, path: &str, actions: &HeaderActions) {
        for (kind, map) in [("add", &actions.add), ("set", &actions.set)] {
            for (name, value) in map {
                self.header_name(&format!("{path}.{kind}.{name}"), name);
                if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                    self.err(
                        format!("{path}.{kind}.{name}"),
                        "header values must not contain CR, LF or NUL",
                    );
                }
            }
        }
        for (i, name) in actions.remove.iter().enumerate() {
            self.header_name(&format!("{path}.remove[{i}]"), name);
        }
    }

    fn header_name(&mut self, path: &str, name: &str) {
        if name.is_empty() || !name.bytes().all(is_tchar) {
            self.err(path, format!("{name:?} is not a valid header name"));
        }
    }

    fn cluster(&mut self, p: &str, c: &Cluster) {
        for (i, e) in c.endpoints.iter().enumerate() {
            let ep = format!("{p}.endpoints[{i}]");
            match c.discovery {
                Discovery::Static => {
                    if e.address.parse::<SocketAddr>().is_err() {
                        self.err(
                            format!("{ep}.address"),
                            format!(
                                "{:?} is not ip:port (use `type: dns` for host names)",
                                e.address
                            ),
                        );
                    }
                }
                Discovery::Dns | Discovery::LogicalDns => {
                    let ok = e.address.rsplit_once(':').is_some_and(|(host, port)| {
                        !host.is_empty() && port.parse::<u16>().is_ok()
                    });
                    if !ok {
                        self.err(
                            format!("{ep}.address"),
                            format!("{:?} is not host:port", e.address),
                        );
                    }
                }
            }
            if e.weight == 0 {
                self.err(format!("{ep}.weight"), "must be at least 1");
            }
        }
        if c.pool.http2_max_concurrent_streams == 0 {
            self.err(
                format!("{p}.pool.http2_max_concurrent_streams"),
                "must be at least 1",
            );
        }
        for (field, window) in [
            (
                "http2_initial_stream_window_size",
                c.pool.http2_initial_stream_window_size,
            ),
            (
                "http2_initial_connection_window_size",
                c.pool.http2_initial_connection_window_size,
            ),
        ] {
            if window.is_some_and(|w| !crate::model::HTTP2_WINDOW_RANGE.contains(&w)) {
                self.err(
                    format!("{p}.pool.{field}"),
                    "must be 65535 to 2147483647 bytes",
                );
            }
        }
        self.circuit_breakers(&format!("{p}.circuit_breakers"), &c.circuit_breakers);
        if c.ring_size == 0 {
            self.err(format!("{p}.ring_size"), "must be at least 1");
        }
        if c.connect_timeout.is_zero() {
            self.err(format!("{p}.connect_timeout"), "must be positive");
        }
        if let Some(k) = &c.upstream_connection_options.tcp_keepalive {
            let path = format!("{p}.upstream_connection_options.tcp_keepalive");
            self.errors.extend(k.check(&path));
        }
        if c.discovery.resolves_names() && c.dns_refresh.is_zero() {
            self.err(format!("{p}.dns_refresh"), "must be positive");
        }
        if c.discovery == Discovery::LogicalDns && c.endpoints.len() != 1 {
            self.err(
                format!("{p}.endpoints"),
                "a `logical_dns` cluster has exactly one endpoint (use `type: dns` for several names)",
            );
        }
        if !c.discovery.resolves_names() && c.dns_lookup_family != DnsLookupFamily::All {
            self.err(
                format!("{p}.dns_lookup_family"),
                "only a `dns` or `logical_dns` cluster resolves names",
            );
        }
        for (i, server) in c.dns_resolvers.iter().enumerate() {
            if !c.discovery.resolves_names() {
                self.err(
                    format!("{p}.dns_resolvers"),
                    "only a `dns` or `logical_dns` cluster resolves names",
                );
                break;
            }
            if server.parse::<SocketAddr>().is_err() {
                self.err(
                    format!("{p}.dns_resolvers[{i}]"),
                    format!(
                        "{server:?} is not ip:port (a DNS server's address, e.g. 127.0.0.1:53)"
                    ),
                );
            }
        }
        crate::health::check(
            p,
            &c.health_checks,
            c.outlier_detection.as_ref(),
            c.healthy_panic_threshold,
            &mut self.errors,
        );
    }

    fn circuit_breakers(&mut self, p: &str, b: &crate::model::CircuitBreakers) {
        for (field, value) in [
            ("max_connections", b.max_connections),
            ("max_pending_requests", b.max_pending_requests),
            ("max_requests", b.max_requests),
        ] {
            if value == 0 {
                self.err(format!("{p}.{field}"), "must be at least 1");
            }
        }
        if let Some(budget) = &b.retry_budget {
            if !(0.0..=100.0).contains(&budget.budget_percent) {
                self.err(
                    format!("{p}.retry_budget.budget_percent"),
                    "must be between 0 and 100",
                );
            }
        }
    }
}

/// Virtual host domains: exact, `*.suffix`, `prefix.*`, or `*` alone.
fn check_domain(d: &str) -> Result<(), String> {
    if d == "*" {
        return Ok(());
    }
    let stars = d.matches('*').count();
    let ok = match stars {
        0 => !d.is_empty(),
        1 => (d.starts_with('*') && d.len() > 1) || (d.ends_with('*') && d.len() > 1),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{d:?} is not a domain: use `example.com`, `*.example.com`, `api.*` or `*`"
        ))
    }
}

/// Checks the mesh identity and every `mtls`, client-certificate and SAN field.
fn check_tls(
    mesh: Option<&crate::tls::Mesh>,
    listeners: &[crate::chains::Body<'_>],
    clusters: &[Cluster],
    errors: &mut Vec<ConfigError>,
) {
    let mut err = |path: String, message: String| errors.push(ConfigError::new(path, message));
    if let Some(m) = mesh {
        if let Err(e) = sinew_identity::SpiffeId::parse(&format!("spiffe://{}", m.trust_domain)) {
            err("mesh.trust_domain".into(), e.to_string());
        }
        match (&m.identity, &m.ca) {
            (Some(_), Some(_)) => err(
                "mesh.ca".into(),
                "give identity (files) or ca (the mesh CA), not both".into(),
            ),
            (None, None) => err(
                "mesh".into(),
                "say where the proxy's certificate comes from: identity (files) or ca (the mesh CA)".into(),
            ),
            _ => {}
        }
        if let Some(ca) = &m.ca {
            if !ca.address.starts_with("https://") {
                err(
                    "mesh.ca.address".into(),
                    format!(
                        "{:?}: the mesh CA is reached over TLS: https://HOST:PORT",
                        ca.address
                    ),
                );
            }
        }
    }
    for body in listeners {
        let (p, l) = (&body.path, &*body.listener);
        if let Some(mode) = l.mtls {
            if mesh.is_none() && mode != crate::tls::MtlsMode::Disable {
                err(
                    format!("{p}.mtls"),
                    "needs the proxy's identity: add a top-level `mesh`".into(),
                );
            }
            if l.tls.is_some() {
                err(
                    format!("{p}.mtls"),
                    "a listener takes `tls` or `mtls`, not both".into(),
                );
            }
        }
        if let Some(tls) = &l.tls {
            match (&tls.cert, &tls.key) {
                (None, None) if !tls.certificates.is_empty() => {}
                (None, None) => err(
                    format!("{p}.tls"),
                    "needs a certificate: `cert` and `key`, or `certificates`".into(),
                ),
                (cert, key) => check_cert_key(&format!("{p}.tls"), cert.as_ref(), key, &mut err),
            }
            for (j, c) in tls.certificates.iter().enumerate() {
                let at = format!("{p}.tls.certificates[{j}]");
                check_cert_key(&at, Some(&c.cert), &c.key, &mut err);
                check_sds_origin(&format!("{at}.cert"), Some(&c.cert), &mut err);
                check_inline(&at, Some(&c.cert), c.key.as_ref(), &mut err);
            }
            check_inline(
                &format!("{p}.tls"),
                tls.cert.as_ref(),
                tls.key.as_ref(),
                &mut err,
            );
            check_inline_ca(
                &format!("{p}.tls.client_ca"),
                tls.client_ca.as_ref(),
                &mut err,
            );
            check_sds_origin(&format!("{p}.tls.cert"), tls.cert.as_ref(), &mut err);
            check_sds_origin(
                &format!("{p}.tls.client_ca"),
                tls.client_ca.as_ref(),
                &mut err,
            );
            if let (Some(min), Some(max)) = (tls.min_version, tls.max_version) {
                if min > max {
                    err(
                        format!("{p}.tls.min_version"),
                        "is newer than `max_version`".into(),
                    );
                }
            }
            if tls.client_ca.is_none() {
                if tls.require_client_certificate {
                    err(
                        format!("{p}.tls.require_client_certificate"),
                        "needs `client_ca` to verify the certificates against".into(),
                    );
                }
                if !tls.match_subject_alt_names.is_empty() {
                    err(
                        format!("{p}.tls.match_subject_alt_names"),
                        "needs `client_ca` to verify the certificates against".into(),
                    );
                }
            }
            check_sans(
                &format!("{p}.tls.match_subject_alt_names"),
                &tls.match_subject_alt_names,
                &mut err,
            );
        }
    }
    for (i, c) in clusters.iter().enumerate() {
        let p = format!("clusters[{i}]");
        if let Some(mtls) = &c.mtls {
            match mesh {
                None => err(
                    format!("{p}.mtls"),
                    "needs the proxy's identity: add a top-level `mesh`".into(),
                ),
                Some(m) => {
                    for (j, id) in mtls.identities.iter().enumerate() {
                        match sinew_identity::SpiffeId::parse(id) {
                            Ok(id) if id.trust_domain() != m.trust_domain => err(
                                format!("{p}.mtls.identities[{j}]"),
                                format!(
                                    "{id} is not of the mesh's trust domain {:?}",
                                    m.trust_domain
                                ),
                            ),
                            Ok(_) => {}
                            Err(e) => err(
                                format!("{p}.mtls.identities[{j}]"),
                                format!("not a SPIFFE ID: {e}"),
                            ),
                        }
                    }
                }
            }
            if c.tls.is_some() {
                err(
                    format!("{p}.mtls"),
                    "a cluster takes `tls` or `mtls`, not both".into(),
                );
            }
        }
        if let Some(tls) = &c.tls {
            match (&tls.cert, &tls.key) {
                (Some(crate::tls::PemSource::File(_) | crate::tls::PemSource::Inline(_)), None)
                | (None, Some(_)) => err(
                    format!("{p}.tls"),
                    "a client certificate needs both `cert` and `key`".into(),
                ),
                (cert, key) => check_cert_key(&format!("{p}.tls"), cert.as_ref(), key, &mut err),
            }
            check_sds_origin(&format!("{p}.tls.cert"), tls.cert.as_ref(), &mut err);
            check_sds_origin(&format!("{p}.tls.ca"), tls.ca.as_ref(), &mut err);
            check_inline(
                &format!("{p}.tls"),
                tls.cert.as_ref(),
                tls.key.as_ref(),
                &mut err,
            );
            check_inline_ca(&format!("{p}.tls.ca"), tls.ca.as_ref(), &mut err);
            check_sans(
                &format!("{p}.tls.match_subject_alt_names"),
                &tls.match_subject_alt_names,
                &mut err,
            );
            if tls.verify {
                if tls.ca.is_none() {
                    err(
                        format!("{p}.tls.ca"),
                        "is required: the CAs that sign the upstream's certificate (or `verify: false` to accept any certificate, as Envoy does without a validation_context)".into(),
                    );
                }
                if tls.sni.is_none() && tls.match_subject_alt_names.is_empty() {
                    err(
                        format!("{p}.tls.sni"),
                        "is required unless `match_subject_alt_names` says who the upstream is"
                            .into(),
                    );
                }
            } else {
                if tls.ca.is_some() {
                    err(
                        format!("{p}.tls.ca"),
                        "is unused with `verify: false`: remove one of them".into(),
                    );
                }
                if !tls.match_subject_alt_names.is_empty() {
                    err(
                        format!("{p}.tls.match_subject_alt_names"),
                        "is unused with `verify: false`: remove one of them".into(),
                    );
                }
            }
            if let (Some(min), Some(max)) = (tls.min_version, tls.max_version) {
                if min > max {
                    err(
                        format!("{p}.tls.min_version"),
                        "is newer than `max_version`".into(),
                    );
                }
            }
        }
    }
}

/// Inline PEM of a certificate and its key is well-formed (checked in full, the key
/// against the certificate, when the TLS context is built).
fn check_inline(
    path: &str,
    cert: Option<&crate::tls::PemSource>,
    key: Option<&crate::tls::KeySource>,
    err: &mut impl FnMut(String, String),
) {
    use crate::tls::{check_inline_pem, KeySource, PemKind, PemSource};
    if let Some(PemSource::Inline(pem)) = cert {
        if let Err(m) = check_inline_pem(&pem.pem, PemKind::Certificates) {
            err(format!("{path}.cert.pem"), m);
        }
    }
    if let Some(KeySource::Inline(pem)) = key {
        if let Err(m) = check_inline_pem(&pem.pem, PemKind::PrivateKey) {
            err(format!("{path}.key.pem"), m);
        }
    }
}

fn check_inline_ca(
    path: &str,
    ca: Option<&crate::tls::PemSource>,
    err: &mut impl FnMut(String, String),
) {
    if let Some(crate::tls::PemSource::Inline(pem)) = ca {
        if let Err(m) = crate::tls::check_inline_pem(&pem.pem, crate::tls::PemKind::Certificates) {
            err(format!("{path}.pem"), m);
        }
    }
}

/// A certificate file needs its key; an SDS secret carries its own.
fn check_cert_key(
    path: &str,
    cert: Option<&crate::tls::PemSource>,
    key: &Option<crate::tls::KeySource>,
    err: &mut impl FnMut(String, String),
) {
    match (cert, key) {
        (Some(crate::tls::PemSource::File(_) | crate::tls::PemSource::Inline(_)), Some(_))
        | (None, None) => {}
        (Some(crate::tls::PemSource::Sds(s)), Some(_)) => err(
            format!("{path}.key"),
            format!(
                "the SDS secret {:?} carries its key: leave `key` out",
                s.sds
            ),
        ),
        (Some(crate::tls::PemSource::Sds(s)), None) => {
            if s.sds.is_empty() {
                err(format!("{path}.cert.sds"), "is empty".into());
            }
        }
        _ => err(path.to_string(), "`cert` and `key` go together".into()),
    }
}

/// Where an SDS secret comes from: the stream, one file, or one server it can reach.
fn check_sds_origin(
    path: &str,
    source: Option<&crate::tls::PemSource>,
    err: &mut impl FnMut(String, String),
) {
    let Some(s) = source.and_then(crate::tls::PemSource::sds) else {
        return;
    };
    let Some(server) = &s.server else { return };
    if s.path.is_some() {
        err(
            format!("{path}.server"),
            "a secret comes from a file (`path`) or a server, not both".into(),
        );
    }
    let reachable = match server.split_once(':') {
        Some(("unix", socket)) => !socket.is_empty(),
        Some(("http", rest)) => rest.starts_with("//") && rest.len() > 2,
        _ => false,
    };
    if !reachable {
        err(
            format!("{path}.server"),
            format!("{server:?}: give unix:PATH or http://HOST:PORT"),
        );
    }
}

fn check_sans(path: &str, sans: &[crate::tls::SanMatch], err: &mut impl FnMut(String, String)) {
    for (j, san) in sans.iter().enumerate() {
        if san.comparison().is_none() {
            err(
                format!("{path}[{j}]"),
                "set exactly one of `exact`, `prefix`, `suffix`, `contains`".into(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::load_str;

    fn errors(yaml: &str) -> String {
        match load_str("t.yaml", yaml) {
            Ok(_) => String::new(),
            Err(d) => d.to_string(),
        }
    }

    const GOOD: &str = "
listeners:
  - name: web
    address: 127.0.0.1:0
    http:
      virtual_hosts:
        - name: all
          domains: ['*']
          routes:
            - match: {prefix: /}
              cluster: backend
clusters:
  - name: backend
    endpoints:
      - address: 127.0.0.1:9000
";

    #[test]
    fn accepts_a_minimal_config() {
        assert_eq!(errors(GOOD), "");
    }

    #[test]
    fn http2_windows_and_stream_limits_are_checked_on_listeners_and_pools() {
        let good = GOOD
            .replace(
                "    http:\n",
                "    http:\n      http2: {max_concurrent_streams: 10, initial_stream_window_size: 65535, initial_connection_window_size: 2147483647}\n",
            )
            .replace(
                "    endpoints:\n",
                "    pool: {http2_initial_stream_window_size: 131072, http2_initial_connection_window_size: 1048576}\n    endpoints:\n",
            );
        assert_eq!(errors(&good), "");
        let bad = GOOD
            .replace(
                "    http:\n",
                "    http:\n      http2: {max_concurrent_streams: 0, initial_stream_window_size: 1024}\n",
            )
            .replace(
                "    endpoints:\n",
                "    pool: {http2_initial_connection_window_size: 2147483648}\n    endpoints:\n",
            );
        let out = errors(&bad);
        for want in [
            "listeners[0].http.http2.max_concurrent_streams: must be at least 1",
            "listeners[0].http.http2.initial_stream_window_size: must be 65535 to 2147483647 bytes",
            "clusters[0].pool.http2_initial_connection_window_size: must be 65535 to 2147483647 bytes",
        ] {
            assert!(out.contains(want), "missing {want:?} in:\n{out}");
        }
    }

    #[test]
    fn a_logical_dns_cluster_has_one_endpoint_and_only_dns_clusters_pick_a_family() {
        let two = GOOD.replace(
            "    endpoints:\n      - address: 127.0.0.1:9000\n",
            "    type: logical_dns\n    dns_lookup_family: v4_only\n    endpoints:\n      - address: a.test:80\n      - address: b.test:80\n",
        );
        assert!(
            errors(&two).contains(
                "clusters[0].endpoints: a `logical_dns` cluster has exactly one endpoint"
            ),
            "{}",
            errors(&two)
        );
        let one = GOOD.replace(
            "    endpoints:\n      - address: 127.0.0.1:9000\n",
            "    type: logical_dns\n    dns_lookup_family: v4_only\n    endpoints:\n      - address: a.test:80\n",
        );
        assert_eq!(errors(&one), "");
        let static_family = GOOD.replace(
            "    endpoints:\n      - address: 127.0.0.1:9000\n",
            "    dns_lookup_family: auto\n    endpoints:\n      - address: 127.0.0.1:9000\n",
        );
        assert!(
            errors(&static_family)
                .contains("clusters[0].dns_lookup_family: only a `dns` or `logical_dns` cluster"),
            "{}",
            errors(&static_family)
        );
    }

    #[test]
    fn a_lookup_family_keeps_the_addresses_envoy_would() {
        use crate::model::DnsLookupFamily::*;
        let v4: std::net::SocketAddr = "127.0.0.1:80".parse().unwrap();
        let v6: std::net::SocketAddr = "[::1]:80".parse().unwrap();
        let pick = |family: crate::model::DnsLookupFamily, answer: &[std::net::SocketAddr]| {
            let mut answer = answer.to_vec();
            family.pick(&mut answer);
            answer
        };
        assert_eq!(pick(All, &[v4, v6]), vec![v4, v6]);
        assert_eq!(pick(Auto, &[v4, v6]), vec![v6]);
        assert_eq!(pick(Auto, &[v4]), vec![v4]);
        assert_eq!(pick(V4Preferred, &[v6, v4]), vec![v4]);
        assert_eq!(pick(V4Preferred, &[v6]), vec![v6]);
        assert_eq!(pick(V4Only, &[v6]), Vec::<std::net::SocketAddr>::new());
        assert_eq!(pick(V6Only, &[v4, v6]), vec![v6]);
    }

    #[test]
    fn reports_every_error_with_file_line_column_and_path() {
        let yaml = "
listeners:
  - name: web
    address: nowhere
    http:
      virtual_hosts:
        - name: all
          domains: ['*']
          routes:
            - match: {prefix: /}
              cluster: missing
clusters:
  - name: backend
    endpoints:
      - address: 127.0.0.1:9000
        weight: 0
";
        let out = errors(yaml);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(
            lines[0].starts_with("t.yaml:4:5: listeners[0].address: "),
            "{out}"
        );
        assert!(
            lines[1].starts_with(
                "t.yaml:11:15: listeners[0].http.virtual_hosts[0].routes[0].cluster: no cluster named \"missing\""
            ),
            "{out}"
        );
        assert!(
            lines[2]
                .starts_with("t.yaml:16:9: clusters[0].endpoints[0].weight: must be at least 1"),
            "{out}"
        );
    }

    #[test]
    fn reports_type_errors_at_their_position() {
        let out = errors("clusters:\n  - name: a\n    endpoints: []\n    connect_timeout: soon\n");
        assert!(
            out.starts_with("t.yaml:4:5: clusters[0].connect_timeout: duration \"soon\""),
            "{out}"
        );
    }

    #[test]
    fn reports_syntax_errors_where_they_are() {
        let out = errors("clusters:\n\t- name: a\n");
        assert!(out.starts_with("t.yaml:2:"), "{out}");
    }

    #[test]
    fn reports_unknown_fields() {
        let out = errors("clusters:\n  - name: a\n    endpoints: []\n    lb_polcy: random\n");
        assert!(out.contains("clusters[0]"), "{out}");
        assert!(out.contains("unknown field `lb_polcy`"), "{out}");
        assert!(out.starts_with("t.yaml:4:"), "{out}");
    }

    #[test]
    fn rejects_routes_with_two_actions_and_bad_domains() {
        let yaml = GOOD
            .replace(
                "cluster: backend",
                "cluster: backend\n              direct_response: {status: 200}",
            )
            .replace("['*']", "['a.*.b']");
        let out = errors(&yaml);
        assert!(out.contains("set exactly one action"), "{out}");
        assert!(
            out.contains("domains[0]: \"a.*.b\" is not a domain"),
            "{out}"
        );
    }

    #[test]
    fn rejects_duplicate_names_and_unknown_route_configs() {
        let yaml = "
listeners:
  - name: a
    address: 127.0.0.1:1
    http: {route_config: nope}
  - name: a
    address: 127.0.0.1:1
    tcp: {cluster: c}
clusters:
  - {name: c, endpoints: []}
";
        let out = errors(yaml);
        assert!(out.contains("no route config named \"nope\""), "{out}");
        assert!(
            out.contains("listeners[1].name: name \"a\" is already used"),
            "{out}"
        );
        assert!(
            out.contains("listeners[1].address: address 127.0.0.1:1 is already used"),
            "{out}"
        );
    }

    #[test]
    fn rejects_bad_circuit_breakers_and_retry_predicates() {
        let yaml = format!(
            "{GOOD}    circuit_breakers: {{max_requests: 0, retry_budget: {{budget_percent: 150}}}}\n"
        )
        .replace(
            "cluster: backend\n",
            "cluster: backend\n              retry: {retry_on: [5xx], retry_host_predicate: [other_hosts]}\n",
        );
        let out = errors(&yaml);
        assert!(
            out.contains(
                "t.yaml:17:24: clusters[0].circuit_breakers.max_requests: must be at least 1"
            ),
            "{out}"
        );
        assert!(
            out.contains("clusters[0].circuit_breakers.retry_budget.budget_percent: must be between 0 and 100"),
            "{out}"
        );
        assert!(
            out.contains("retry.retry_host_predicate[0]: unknown predicate \"other_hosts\""),
            "{out}"
        );
    }
}
