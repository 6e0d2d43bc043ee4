//! Route matching in a 1,000-route virtual host: the cost a request pays before it reaches
//! an upstream. Routes are scanned in config order, so the interesting cases are a match
//! near the end and a miss, which visit every route.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, Method};
use sinew_router::{RequestView, RouteTable, Target};

const ROUTES: usize = 1000;

/// A table of `ROUTES` routes produced by `route(i)` in one catch-all virtual host, plus a few
/// other virtual hosts so that host lookup is not trivial.
fn table(route: impl Fn(usize) -> String) -> RouteTable {
    let routes: Vec<String> = (0..ROUTES).map(route).collect();
    let yaml = format!(
        "{{listeners: [{{name: l, address: '127.0.0.1:0', http: {{virtual_hosts: [
            {{name: api, domains: [api.example.com], routes: [{{match: {{}}, cluster: a}}]}},
            {{name: wild, domains: ['*.example.com'], routes: [{{match: {{}}, cluster: a}}]}},
            {{name: all, domains: ['*'], routes: [{}]}}]}}}}],
          clusters: [{{name: a, endpoints: []}}]}}",
        routes.join(",\n")
    );
    let loaded = sinew_config::load_str("bench.yaml", &yaml).unwrap_or_else(|d| panic!("{d}"));
    let http = loaded.config.listeners[0].http.as_ref().unwrap();
    RouteTable::compile(
        http.virtual_hosts.as_ref().unwrap(),
        "listeners[0].http.virtual_hosts",
        &mut |_, _| Target(0),
    )
    .unwrap_or_else(|e| panic!("{e:?}"))
}

/// Prefix routes only: `/svc<i>/`.
fn prefix_route(i: usize) -> String {
    format!("{{match: {{prefix: /svc{i}/}}, cluster: a}}")
}

/// A realistic mix: prefix + methods, exact paths, exact headers, query parameters, and a
/// regex every 50th route.
fn mixed_route(i: usize) -> String {
    let m = match i % 50 {
        0 => format!("{{path_regex: '/re{i}/[0-9]+'}}"),
        n if n % 4 == 0 => format!("{{path: /exact/{i}}}"),
        n if n % 4 == 1 => format!("{{prefix: /svc{i}/, methods: [GET, POST]}}"),
        n if n % 4 == 2 => {
            format!("{{prefix: /hdr/, headers: [{{name: x-tenant, exact: tenant-{i}}}]}}")
        }
        _ => format!("{{prefix: /q/, query: [{{name: v, exact: '{i}'}}]}}"),
    };
    format!("{{match: {m}, cluster: a}}")
}

fn bench(c: &mut Criterion) {
    let mut headers = HeaderMap::new();
    headers.insert("x-tenant", HeaderValue::from_static("tenant-none"));
    headers.insert("user-agent", HeaderValue::from_static("bench/1.0"));
    let get = Method::GET;
    let view = |path: &'static str, query: Option<&'static str>| RequestView {
        method: &get,
        path,
        query,
        headers: &headers,
    };

    let prefix = table(prefix_route);
    let vhost = prefix.virtual_host("www.other.org").unwrap();
    let mut group = c.benchmark_group("prefix_1000");
    for (name, path) in [
        ("first", "/svc0/x"),
        ("middle", "/svc500/x"),
        ("last", "/svc999/x"),
        ("miss", "/nothing/here"),
    ] {
        let req = view(path, None);
        group.bench_function(name, |b| b.iter(|| black_box(vhost.route(black_box(&req)))));
    }
    group.finish();

    // Route i of the mixed table: i % 50 == 0 regex; else by (i % 50) % 4: 0 exact path,
    // 1 prefix + methods, 2 exact header, 3 query. These cases hit routes 996..=999.
    let mixed = table(mixed_route);
    let vhost = mixed.virtual_host("www.other.org").unwrap();
    let mut tenant = headers.clone();
    tenant.insert("x-tenant", HeaderValue::from_static("tenant-996"));
    let mut group = c.benchmark_group("mixed_1000");
    for (name, path, query, headers, want) in [
        ("last_exact_header", "/hdr/", None, &tenant, Some(996)),
        ("last_query", "/q/", Some("a=1&v=997"), &headers, Some(997)),
        ("last_exact", "/exact/998", None, &headers, Some(998)),
        ("last_prefix_method", "/svc999/x", None, &headers, Some(999)),
        ("miss", "/nothing/here", None, &headers, None),
    ] {
        let req = RequestView {
            method: &get,
            path,
            query,
            headers,
        };
        let got = vhost.route(&req).map(|r| r.name.to_string());
        assert_eq!(got, want.map(|i| format!("all/{i}")), "{name}");
        group.bench_function(name, |b| b.iter(|| black_box(vhost.route(black_box(&req)))));
    }
    group.finish();

    let mut group = c.benchmark_group("virtual_host");
    for (name, host) in [
        ("exact", "api.example.com"),
        ("suffix_with_port", "www.example.com:8080"),
        ("any_uppercase", "WWW.OTHER.ORG"),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| black_box(prefix.virtual_host(black_box(host))))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
