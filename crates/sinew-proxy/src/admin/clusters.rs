//! `/clusters`: each cluster's endpoints with weight, health, outlier state and requests
//! in flight — JSON, or Envoy's `cluster::address::field::value` lines with `?format=text`.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use http::StatusCode;
use serde_json::{json, Value};

use super::{text, Admin, Query, Reply};

pub(super) fn clusters(admin: &Admin, query: &Query) -> Reply {
    let as_text = match query.get("format") {
        None | Some("json") => false,
        Some("text") => true,
        Some(other) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("format={other}: use json or text\n"),
            )
        }
    };
    let snapshot = admin.proxy.snapshot();
    let mut clusters = Vec::new();
    let mut lines = String::new();
    for c in &snapshot.clusters {
        let (active_checks, outlier_detection) = c.checks_health();
        let hosts = c.hosts();
        let mut endpoints = Vec::new();
        for e in &hosts.endpoints {
            let health = &e.state.health;
            let failed_check = active_checks && health.active_check_failed();
            let ejected = outlier_detection && health.ejected();
            let healthy = !failed_check && !ejected;
            let active = e.state.active_requests.load(Ordering::Relaxed);
            let address = e.address().to_string();
            let flags = match (failed_check, ejected) {
                (false, false) => "healthy".to_string(),
                (f, o) => [(f, "/failed_active_hc"), (o, "/failed_outlier_check")]
                    .iter()
                    .filter(|(on, _)| *on)
                    .map(|(_, s)| *s)
                    .collect::<String>(),
            };
            let _ = writeln!(lines, "{}::{address}::weight::{}", c.name, e.weight);
            let _ = writeln!(lines, "{}::{address}::health_flags::{flags}", c.name);
            let _ = writeln!(lines, "{}::{address}::rq_active::{active}", c.name);
            endpoints.push(json!({
                "address": address,
                "weight": e.weight,
                "healthy": healthy,
                "failed_active_health_check": failed_check,
                "outlier_ejected": ejected,
                "ejected_for_ms": health.ejected_for().map(|d| d.as_millis() as u64),
                "active_requests": active,
                "metadata": e.metadata.as_ref(),
            }));
        }
        let breakers = c.breakers().counts();
        clusters.push(json!({
            "name": &*c.name,
            "endpoints": endpoints,
            "healthy_endpoints": c.healthy_endpoints(),
            "in_panic": hosts.in_panic(0),
            "active_health_checks": active_checks,
            "outlier_detection": outlier_detection,
            "requests_in_flight": breakers.requests.load(Ordering::Relaxed),
            "connections": breakers.connections.load(Ordering::Relaxed),
        }));
    }
    if as_text {
        text(StatusCode::OK, lines)
    } else {
        super::json(
            StatusCode::OK,
            &json!({ "clusters": Value::Array(clusters) }),
        )
    }
}
