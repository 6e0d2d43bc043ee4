//! Readiness and life: `/ready`, `/healthz`, `/healthcheck/fail|ok`, `/drain`,
//! `/server_info`.

use http::StatusCode;
use serde_json::json;

use super::{text, Admin, Query, Reply};
use crate::Phase;

/// 200 `LIVE` while serving; 503 `DRAINING` or `FAILED` (after `/healthcheck/fail`),
/// so a load balancer stops sending.
pub(super) fn ready(admin: &Admin) -> Reply {
    if admin.proxy.is_live() {
        text(StatusCode::OK, "LIVE\n".into())
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n", state(admin)),
        )
    }
}

/// 200 while the process runs and its admin server answers (liveness, not readiness).
pub(super) fn healthz(_: &Admin) -> Reply {
    text(StatusCode::OK, "OK\n".into())
}

pub(super) fn set_failed(admin: &Admin, failed: bool) -> Reply {
    admin.proxy.set_health_check_failed(failed);
    text(
        StatusCode::OK,
        if failed {
            "OK: /ready now answers 503\n".into()
        } else {
            "OK: /ready answers 200 again while serving\n".into()
        },
    )
}

/// Starts a drain, as SIGTERM does, and answers at once; `/server_info` and `/ready`
/// show it progress. `?timeout=10s` overrides the config's `drain_timeout`.
pub(super) fn drain(admin: &Admin, query: &Query) -> Reply {
    let deadline = match query.get("timeout") {
        None => admin.proxy.drain_timeout(),
        Some(t) => match sinew_config::duration::parse(t) {
            Ok(d) => d,
            Err(e) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("timeout: {e} (e.g. timeout=10s)\n"),
                )
            }
        },
    };
    if let Some((k, _)) = query.pairs().iter().find(|(k, _)| k != "timeout") {
        return text(
            StatusCode::BAD_REQUEST,
            format!("unknown parameter {k}; /drain takes timeout\n"),
        );
    }
    let proxy = admin.proxy.clone();
    tokio::spawn(async move {
        let report = proxy.drain(deadline).await;
        tracing::info!(finished = report.finished, cut = report.cut, took = ?report.took,
            "drain requested through the admin API is done");
    });
    text(StatusCode::OK, format!("draining within {deadline:?}\n"))
}

pub(super) fn server_info(admin: &Admin) -> Reply {
    let proxy = &admin.proxy;
    super::json(
        StatusCode::OK,
        &json!({
            "version": env!("CARGO_PKG_VERSION"),
            "state": state(admin),
            "uptime_seconds": proxy.metrics.started.elapsed().as_secs(),
            "config_version": proxy.snapshot().version,
            "config_file": proxy.running_source().0,
            "metrics_enabled": proxy.snapshot().metrics_enabled,
        }),
    )
}

fn state(admin: &Admin) -> &'static str {
    match admin.proxy.phase() {
        Phase::Serving if admin.proxy.is_live() => "LIVE",
        Phase::Serving => "FAILED",
        Phase::Draining => "DRAINING",
        Phase::Closing => "CLOSING",
    }
}
