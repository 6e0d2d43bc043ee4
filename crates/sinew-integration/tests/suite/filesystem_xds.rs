//! Filesystem xDS: a bootstrap whose `dynamic_resources` take listeners and clusters from
//! files (`path_config_source`), run by the real binary. A file moved in over the old
//! one is read again and put in force; a bad one is refused, counted, and the last good
//! config keeps serving; `sinew validate` checks the files with the bootstrap.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sinew_integration::{
    admin_kit, free_port, scratch_dir, sinew_binary, start_proxy_file, TestClient, Upstream,
};

/// A listener file: one HTTP listener on `port` sending every request to `cluster`.
fn lds(version: &str, port: u16, cluster: &str) -> String {
    format!(
        r#"version_info: "{version}"
resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: web
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: web
        route_config:
          virtual_hosts:
          - name: all
            domains: ["*"]
            routes:
            - match: {{ prefix: / }}
              route: {{ cluster: {cluster} }}
        http_filters:
        - name: envoy.filters.http.router
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#
    )
}

/// A cluster file: one static cluster per (name, upstream).
fn cds(version: &str, clusters: &[(&str, SocketAddr)]) -> String {
    let mut text = format!("version_info: \"{version}\"\nresources:\n");
    for (name, addr) in clusters {
        text.push_str(&format!(
            r#"- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: {name}
  type: static
  load_assignment:
    cluster_name: {name}
    endpoints:
    - lb_endpoints:
      - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}
"#,
            port = addr.port()
        ));
    }
    text
}

/// Replaces `path` with `text` the way Envoy's docs ask: written beside it, then moved in
/// over it (a rename is atomic; the proxy never reads half a file).
fn move_in(path: &Path, text: &str) {
    let staged = path.with_extension("staged");
    std::fs::write(&staged, text).unwrap();
    std::fs::rename(&staged, path).unwrap();
}

async fn served_by(client: &TestClient, listener: SocketAddr, upstream: &str) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if let Ok(reply) = client.try_get(listener, "/", &[]).await {
            if reply.header("x-upstream") == Some(upstream) {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_and_clusters_from_files_follow_a_moved_in_file_and_keep_the_last_good_one() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let dir = scratch_dir("filesystem-xds");
    let (lds_path, cds_path) = (dir.join("lds.yaml"), dir.join("cds.yaml"));
    let port = free_port();
    let listener = SocketAddr::from(([127, 0, 0, 1], port));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    std::fs::write(&lds_path, lds("1", port, "blue")).unwrap();
    std::fs::write(&cds_path, cds("1", &[("blue", blue.addr)])).unwrap();
    let bootstrap = dir.join("envoy.yaml");
    std::fs::write(
        &bootstrap,
        format!(
            r#"
node: {{ id: fs, cluster: test }}
dynamic_resources:
  cds_config:
    path_config_source: {{ path: {cds} }}
  lds_config:
    path_config_source:
      path: {lds}
      watched_directory: {{ path: {dir} }}
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin_port} }} }}
"#,
            cds = cds_path.display(),
            lds = lds_path.display(),
            dir = dir.display(),
            admin_port = admin.port(),
        ),
    )
    .unwrap();

    // `sinew validate` reads the files with the bootstrap.
    let validated = Command::new(sinew_binary())
        .arg("validate")
        .arg(&bootstrap)
        .output()
        .unwrap();
    assert!(
        validated.status.success(),
        "{}",
        String::from_utf8_lossy(&validated.stderr)
    );

    let _proxy = start_proxy_file(&bootstrap);
    let client = TestClient::http1();
    assert!(
        served_by(&client, listener, "blue").await,
        "the listener from lds.yaml serves"
    );

    // A new cluster, then a listener routing to it: each file moved in on its own.
    move_in(
        &cds_path,
        &cds("2", &[("blue", blue.addr), ("green", green.addr)]),
    );
    move_in(&lds_path, &lds("2", port, "green"));
    assert!(
        served_by(&client, listener, "green").await,
        "the moved-in listener file is in force"
    );

    // A listener file routing to a cluster no file defines is refused whole (as Envoy
    // refuses an inline route configuration naming an unknown cluster); the last good
    // listener keeps serving.
    move_in(&lds_path, &lds("3", port, "nowhere"));
    let metrics_say = |kind: &'static str, result: &'static str, at_least: f64| async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = admin_kit::metrics(admin).await;
            let n = admin_kit::sample(
                &text,
                "sinew_xds_updates_total",
                &[("type", kind), ("result", result)],
            )
            .unwrap_or(0.0);
            if n >= at_least || tokio::time::Instant::now() > deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    assert_eq!(metrics_say("LDS", "rejected", 1.0).await, 1.0);
    let reply = client.get(listener, "/", &[]).await;
    assert_eq!(reply.header("x-upstream"), Some("green"));
    assert_eq!(metrics_say("LDS", "accepted", 2.0).await, 2.0);

    // A cluster file without the cluster the listener uses is refused too: what is in
    // force must stay whole.
    move_in(&cds_path, &cds("3", &[("blue", blue.addr)]));
    assert_eq!(metrics_say("CDS", "rejected", 1.0).await, 1.0);
    assert_eq!(
        client.get(listener, "/", &[]).await.header("x-upstream"),
        Some("green")
    );

    // A good file after the bad ones goes in.
    move_in(&lds_path, &lds("4", port, "blue"));
    assert!(
        served_by(&client, listener, "blue").await,
        "the next good listener file is in force"
    );
}

#[test]
fn validate_names_the_resource_file_line_and_field_and_a_missing_file_where_the_bootstrap_names_it()
{
    let dir = scratch_dir("filesystem-xds-validate");
    let lds_path = dir.join("lds.yaml");
    let bootstrap = dir.join("envoy.yaml");
    std::fs::write(
        &bootstrap,
        format!(
            "dynamic_resources:\n  lds_config:\n    path_config_source: {{ path: {} }}\n",
            lds_path.display()
        ),
    )
    .unwrap();
    let validate = || {
        let out = Command::new(sinew_binary())
            .arg("validate")
            .arg(&bootstrap)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let missing = validate();
    assert!(
        missing.contains(&format!(
            "envoy.yaml:3:27: dynamic_resources.lds_config.path_config_source.path: \"{}\" cannot be read",
            lds_path.display()
        )),
        "{missing}"
    );

    let text = lds("1", 8080, "nowhere").replace(
        "stat_prefix: web",
        "stat_prefix: web\n        codec_typo: AUTO",
    );
    std::fs::write(&lds_path, &text).unwrap();
    let line = text.lines().position(|l| l.contains("codec_typo")).unwrap() + 1;
    let typo = validate();
    assert!(
        typo.contains(&format!(
            "lds.yaml:{line}:9: resources[0].filter_chains[0].filters[0].typed_config.codec_typo: is not a field"
        )),
        "{typo}"
    );

    std::fs::write(&lds_path, lds("1", 8080, "nowhere")).unwrap();
    let unresolved = validate();
    assert!(
        unresolved.contains(
            "lds.yaml:3:3: resources[0]: listener \"web\": waits for cluster \"nowhere\""
        ),
        "{unresolved}"
    );
}
