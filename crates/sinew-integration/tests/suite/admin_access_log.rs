//! The admin API's access log, run by the real binary: a bootstrap's
//! `admin.access_log_path` and Sinew's `admin.access_log` get one line per admin request,
//! in Envoy's default format or the one given. Requests sent with curl.

use std::net::SocketAddr;
use std::time::Duration;

use sinew_integration::{
    free_port, scratch_dir, shell, start_proxy_file, wait_for_lines, TestClient,
};

async fn wait_ready(admin: SocketAddr) {
    let client = TestClient::http1();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while client.try_get(admin, "/ready", &[]).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the admin API never answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_requests_are_written_to_the_bootstraps_access_log_path() {
    let dir = scratch_dir("admin-access-log");
    let log = dir.join("admin.log");
    let admin_port = free_port();
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let text = format!(
        "static_resources: {{}}\nadmin:\n  access_log_path: {}\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin_port} }} }}\n",
        log.display()
    );
    let file = dir.join("envoy.yaml");
    std::fs::write(&file, text).unwrap();
    let _proxy = start_proxy_file(&file);
    wait_ready(admin).await;
    let ready_lines = wait_for_lines(&log, 1).await.len();

    let out = shell(format!(
        "curl -s -o /dev/null -w '%{{http_code}}' -A admin-test http://{admin}/server_info; \
         curl -s -o /dev/null -w ' %{{http_code}}' -X POST http://{admin}/nowhere"
    ))
    .await;
    assert_eq!(out, "200 404");
    let lines = wait_for_lines(&log, ready_lines + 2).await;
    let info = lines
        .iter()
        .find(|l| l.contains("GET /server_info"))
        .expect("a /server_info line");
    // Envoy's default format: method, path and protocol, status, flags, bytes, user agent.
    assert!(
        info.contains("\"GET /server_info HTTP/1.1\" 200 - 0 "),
        "{info}"
    );
    assert!(info.contains("\"admin-test\""), "{info}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"POST /nowhere HTTP/1.1\" 404")),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sinews_admin_access_log_takes_a_format() {
    let dir = scratch_dir("admin-access-log-sinew");
    let log = dir.join("admin.log");
    let admin_port = free_port();
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let yaml = format!(
        "admin:\n  address: 127.0.0.1:{admin_port}\n  access_log:\n  - path: {}\n    format: \"%REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%\\n\"\n",
        log.display()
    );
    let file = dir.join("sinew.yaml");
    std::fs::write(&file, yaml).unwrap();
    let _proxy = start_proxy_file(&file);
    wait_ready(admin).await;
    let out = shell(format!(
        "curl -s -o /dev/null -w '%{{http_code}}' http://{admin}/metrics"
    ))
    .await;
    assert_eq!(out, "200");
    let lines = wait_for_lines(&log, 2).await;
    assert!(
        lines.contains(&"GET /metrics 200 127.0.0.1".to_string()),
        "{lines:?}"
    );
}
