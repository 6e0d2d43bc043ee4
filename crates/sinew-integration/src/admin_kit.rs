//! The admin API in tests: an admin server beside a [`TestProxy`], and reading one
//! sample out of its `/metrics`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use sinew_proxy::admin::{AdminServer, LogControl};

use crate::{TestClient, TestProxy};

/// Starts the admin API for `proxy` on an ephemeral loopback port, with a log control
/// that only records the filter (the real one, around tracing-subscriber's global
/// subscriber, is tested through the binary in tests/admin.rs).
pub async fn start(proxy: &TestProxy) -> AdminServer {
    let log: Arc<dyn LogControl> = Arc::new(RecordedFilter(Mutex::new("info".into())));
    AdminServer::start(
        proxy.proxy.clone(),
        "127.0.0.1:0".parse().expect("literal"),
        Some(log),
    )
    .await
    .expect("bind the admin server")
}

struct RecordedFilter(Mutex<String>);

impl LogControl for RecordedFilter {
    fn current(&self) -> String {
        self.0.lock().unwrap().clone()
    }
    fn set(&self, filter: &str) -> Result<(), String> {
        *self.0.lock().unwrap() = filter.to_string();
        Ok(())
    }
}

/// `/metrics` as text.
pub async fn metrics(admin: SocketAddr) -> String {
    let r = TestClient::http1().get(admin, "/metrics", &[]).await;
    assert_eq!(r.status, 200, "/metrics: {}", r.text());
    r.text()
}

/// The value of the sample `name` whose labels include every one of `labels`; None when
/// there is no such sample.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|(_, v)| v.parse().ok())
}

/// Like [`sample`], but 0 when absent and a panic naming it when the text has no such
/// metric at all.
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(text, name, labels).unwrap_or_else(|| {
        panic!("no sample {name}{labels:?} in /metrics:\n{text}");
    })
}
