//! A real Prometheus (Debian's `prometheus`) for tests: it scrapes a Sinew admin API every
//! second, and the test asks its query API what it saw.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::tls_kit::TempDir;
use crate::{free_port, ChildGuard, TestClient};

/// A Prometheus process, killed (and its data removed) when dropped.
pub struct Prometheus {
    pub address: SocketAddr,
    _child: ChildGuard,
    _dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `/metrics` of `target` every second, one job per
    /// `(job name, format)`: the format (`text` or `openmetrics`) is asked for with
    /// `?format=`. Returns once it is ready (not once it has scraped: see [`Self::wait_up`]).
    pub async fn start(target: SocketAddr, jobs: &[(&str, &str)]) -> Prometheus {
        let dir = TempDir::new("prometheus");
        let config = dir.file("prometheus.yml");
        let mut yaml = String::from(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\nscrape_configs:\n",
        );
        for (job, format) in jobs {
            yaml.push_str(&format!(
                "  - job_name: {job}
    metrics_path: /metrics
    params: {{format: [{format}]}}
    static_configs: [{{targets: ['{target}']}}]
"
            ));
        }
        std::fs::write(&config, yaml).unwrap();
        let address = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.file("data").display()))
            .arg(format!("--web.listen-address={address}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.file("prometheus.log")).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run `prometheus` ({e}): install Debian's package `prometheus` (scripts/test does)")
            });
        let prometheus = Prometheus {
            address,
            _child: ChildGuard(child),
            _dir: dir,
        };
        let client = TestClient::http1();
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(r) = client.try_get(address, "/-/ready", &[]).await {
                if r.status == 200 {
                    break;
                }
            }
            assert!(
                Instant::now() < until,
                "prometheus not ready in 10 s:\n{}",
                std::fs::read_to_string(prometheus._dir.file("prometheus.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        prometheus
    }

    /// Waits until `job` has scraped its target successfully.
    pub async fn wait_up(&self, job: &str) {
        let up = format!("up{{job=\"{job}\"}}");
        // Prometheus hands its scrapers their targets after up to 5 s (its discovery
        // manager's update interval), then scrapes within one interval.
        let v = self
            .query_until(&up, Duration::from_secs(10), |v| v == 1.0)
            .await;
        if v != Some(1.0) {
            let targets = TestClient::http1()
                .get(self.address, "/api/v1/targets", &[])
                .await;
            panic!(
                "job {job} does not scrape Sinew (up = {v:?}); targets: {}",
                targets.text()
            );
        }
    }

    /// `GET path?query`: the JSON answer whatever its status (an expression that does not
    /// parse or evaluate is answered 400/422 with `status: error`).
    pub async fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let query: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        let r = TestClient::http1()
            .get(self.address, &format!("{path}?{}", query.join("&")), &[])
            .await;
        serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {}", r.text()))
    }

    /// The series of an instant query; panics when Prometheus refuses the expression.
    pub async fn series(&self, promql: &str) -> Vec<Value> {
        let v = self.api("/api/v1/query", &[("query", promql)]).await;
        assert_eq!(v["status"], "success", "{promql}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The value of a query whose result is one sample; None when it has none.
    pub async fn query(&self, promql: &str) -> Option<f64> {
        let result = self.series(promql).await;
        assert!(
            result.len() <= 1,
            "{promql}: more than one series: {result:?}"
        );
        result.first()?["value"][1].as_str()?.parse().ok()
    }

    /// Waits until `promql` returns a value for which `ok` holds; returns the last value.
    pub async fn query_until(
        &self,
        promql: &str,
        within: Duration,
        ok: impl Fn(f64) -> bool,
    ) -> Option<f64> {
        let until = Instant::now() + within;
        loop {
            let v = self.query(promql).await;
            if v.is_some_and(&ok) || Instant::now() >= until {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Percent-encodes a query-string component.
pub fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
