//! What `/metrics` reads at scrape time instead of counting on the request path: the
//! server's uptime and memory, each cluster's endpoints and circuit-breaker state, its
//! health-check results and outlier ejections, listener overflows and mirror outcomes.
//! These already live in atomics that their own features keep; reading them here means
//! nothing is counted twice.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Weak;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::metrics::{resident_memory_bytes, Labels};
use crate::Proxy;

/// Registered once with the registry; holds the proxy weakly (the proxy owns it).
#[derive(Debug)]
pub struct ScrapeTime {
    pub proxy: Weak<Proxy>,
}

/// One family's samples, written as a gauge or a counter.
struct Samples {
    name: &'static str,
    help: &'static str,
    counter: bool,
    values: Vec<(Labels, f64)>,
}

impl Samples {
    fn new(name: &'static str, help: &'static str, counter: bool) -> Self {
        Samples {
            name,
            help,
            counter,
            values: Vec::new(),
        }
    }

    fn write(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let kind = if self.counter {
            MetricType::Counter
        } else {
            MetricType::Gauge
        };
        let mut family = encoder.encode_descriptor(self.name, self.help, None, kind)?;
        for (labels, value) in &self.values {
            // A family without labels is written bare (`x 1`, not `x{} 1`).
            if labels.is_empty() {
                self.value(&mut family, *value)?;
            } else {
                self.value(&mut family.encode_family(labels)?, *value)?;
            }
        }
        Ok(())
    }
}

impl Samples {
    fn value(&self, m: &mut MetricEncoder, value: f64) -> Result<(), std::fmt::Error> {
        if self.counter {
            m.encode_counter::<NoLabelSet, _, u64>(&(value as u64), None)
        } else {
            m.encode_gauge(&value)
        }
    }
}

/// The overload manager's monitor and actions (Envoy's `overload.<monitor>.pressure`,
/// `overload.<action>.active` and `.scale_percent`), when `overload` is configured.
fn overload_samples(
    o: crate::overload::Reading,
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let monitor: Labels = vec![("monitor", "fixed_heap".to_string())];
    let mut pressure = Samples::new(
        "sinew_overload_pressure",
        "Resource pressure as a ratio of its maximum (heap in use / max_heap_size_bytes)",
        false,
    );
    pressure.values.push((monitor.clone(), o.pressure));
    let mut heap = Samples::new(
        "sinew_overload_heap_used_bytes",
        "The heap in use at the last refresh",
        false,
    );
    heap.values.push((Vec::new(), o.heap_bytes as f64));
    let mut failed = Samples::new(
        "sinew_overload_failed_updates",
        "Refreshes whose heap reading failed",
        true,
    );
    failed.values.push((monitor, o.failed_updates as f64));
    let mut active = Samples::new(
        "sinew_overload_action_active",
        "1 while an overload action is saturated, else 0",
        false,
    );
    let mut scale = Samples::new(
        "sinew_overload_action_scale_percent",
        "An overload action's state as a percent (0-99 scaling, 100 saturated)",
        false,
    );
    for (name, state) in &o.actions {
        let labels: Labels = vec![("action", name.to_string())];
        active
            .values
            .push((labels.clone(), if *state >= 1.0 { 1.0 } else { 0.0 }));
        scale.values.push((labels, (state * 100.0).round()));
    }
    let mut requests = Samples::new(
        "sinew_overload_rq_rejected",
        "Requests answered 503 by stop_accepting_requests",
        true,
    );
    requests
        .values
        .push((Vec::new(), o.rejected_requests as f64));
    let mut connections = Samples::new(
        "sinew_overload_cx_rejected",
        "Connections closed at accept by reject_incoming_connections",
        true,
    );
    connections
        .values
        .push((Vec::new(), o.rejected_connections as f64));
    for s in [pressure, heap, failed, active, scale, requests, connections] {
        s.write(encoder)?;
    }
    Ok(())
}

impl Collector for ScrapeTime {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(proxy) = self.proxy.upgrade() else {
            return Ok(());
        };
        let none: Labels = Vec::new();
        let mut server = vec![
            Samples::new(
                "sinew_server_uptime_seconds",
                "Seconds since the proxy started",
                false,
            ),
            Samples::new(
                "sinew_server_memory_resident_bytes",
                "Resident memory (RSS)",
                false,
            ),
            Samples::new(
                "sinew_server_live",
                "1 while serving; 0 when draining or failed by /healthcheck/fail",
                false,
            ),
            Samples::new(
                "sinew_access_log_dropped",
                "Access-log entries dropped because a log's queue was full",
                true,
            ),
            Samples::new(
                "sinew_tracing_spans_exported",
                "Spans the OTLP collector accepted",
                true,
            ),
            Samples::new(
                "sinew_tracing_spans_dropped",
                "Spans dropped because the export queue was full",
                true,
            ),
            Samples::new(
                "sinew_tracing_spans_failed",
                "Spans in exports that failed or timed out",
                true,
            ),
        ];
        server[0]
            .values
            .push((none.clone(), proxy.metrics.started.elapsed().as_secs_f64()));
        if let Some(rss) = resident_memory_bytes() {
            server[1].values.push((none.clone(), rss as f64));
        }
        server[2]
            .values
            .push((none.clone(), if proxy.is_live() { 1.0 } else { 0.0 }));
        server[3].values.push((
            none.clone(),
            crate::filters::access_log::dropped_entries() as f64,
        ));
        let spans = &crate::filters::trace::export::SPANS;
        for (i, count) in [&spans.exported, &spans.dropped, &spans.failed]
            .into_iter()
            .enumerate()
        {
            let value = count.load(std::sync::atomic::Ordering::Relaxed) as f64;
            server[4 + i].values.push((none.clone(), value));
        }
        for s in &server {
            s.write(&mut encoder)?;
        }
        if let Some(overload) = crate::overload::reading() {
            overload_samples(overload, &mut encoder)?;
        }
        let snapshot = proxy.snapshot.load();
        if !snapshot.metrics_enabled {
            return Ok(());
        }

        let mut expiry = Samples::new(
            "sinew_certificate_expiry_seconds",
            "Seconds until a certificate the proxy presents expires (negative: expired)",
            false,
        );
        let now = super::certs::now_unix();
        for (name, cert) in snapshot.certificates() {
            if let Some(id) = cert.leaf_identity() {
                let spiffe = id.spiffe.as_ref().map_or("", |s| s.as_str()).to_string();
                let labels = vec![("certificate", name), ("spiffe_id", spiffe)];
                expiry.values.push((labels, (id.not_after - now) as f64));
            }
        }
        expiry.write(&mut encoder)?;

        let mut cluster = [
            Samples::new(
                "sinew_cluster_membership_total",
                "Endpoints in the cluster",
                false,
            ),
            Samples::new(
                "sinew_cluster_membership_healthy",
                "Endpoints that pass health checks and are not ejected",
                false,
            ),
            Samples::new(
                "sinew_cluster_upstream_cx_active",
                "Upstream connections open",
                false,
            ),
            Samples::new(
                "sinew_cluster_upstream_rq_active",
                "Upstream requests in flight",
                false,
            ),
            Samples::new(
                "sinew_cluster_upstream_rq_pending_active",
                "Requests waiting for an upstream connection",
                false,
            ),
            Samples::new(
                "sinew_cluster_upstream_cx_overflow",
                "Times max_connections was reached (circuit breaker)",
                true,
            ),
            Samples::new(
                "sinew_cluster_upstream_rq_pending_overflow",
                "Requests answered 503 because max_pending_requests were waiting",
                true,
            ),
            Samples::new(
                "sinew_cluster_upstream_rq_overflow",
                "Requests answered 503 because max_requests were in flight",
                true,
            ),
            Samples::new(
                "sinew_cluster_upstream_rq_retry_overflow",
                "Retries not made because max_retries (or the retry budget) was reached",
                true,
            ),
            Samples::new(
                "sinew_cluster_health_check_success",
                "Active health checks passed",
                true,
            ),
            Samples::new(
                "sinew_cluster_health_check_failure",
                "Active health checks failed",
                true,
            ),
            Samples::new(
                "sinew_cluster_outlier_detection_ejections",
                "Endpoints ejected by outlier detection",
                true,
            ),
        ];
        for c in &snapshot.clusters {
            let labels: Labels = vec![("cluster", c.name.to_string())];
            let hosts = c.hosts();
            let healthy = c.healthy_endpoints();
            let counts = c.breakers().counts();
            let events = c.events();
            let read = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
            let values = [
                hosts.endpoints.len() as f64,
                healthy as f64,
                counts.connections.load(Ordering::Relaxed) as f64,
                counts.requests.load(Ordering::Relaxed) as f64,
                counts.pending.load(Ordering::Relaxed) as f64,
                read(&counts.connection_overflows),
                read(&counts.pending_overflows),
                read(&counts.request_overflows),
                read(&counts.retry_overflows),
                read(&events.health_check_success),
                read(&events.health_check_failure),
                read(&events.outlier_ejections),
            ];
            for (samples, value) in cluster.iter_mut().zip(values) {
                samples.values.push((labels.clone(), value));
            }
        }
        for s in &cluster {
            s.write(&mut encoder)?;
        }

        let mut listener = [
            Samples::new(
                "sinew_listener_downstream_cx_overflow",
                "Connections closed at accept because max_connections was reached",
                true,
            ),
            Samples::new(
                "sinew_listener_downstream_cx_rate_limited",
                "Connections closed at accept by the listener's connection_rate_limit",
                true,
            ),
        ];
        for slot in proxy.live_slots.load().iter() {
            let labels: Labels = vec![("listener", slot.name.to_string())];
            listener[0]
                .values
                .push((labels.clone(), slot.rejected_connections() as f64));
            let refused = slot
                .config()
                .connection_rate_limit
                .as_ref()
                .map_or(0, |r| r.refused());
            listener[1].values.push((labels, refused as f64));
        }
        for s in &listener {
            s.write(&mut encoder)?;
        }

        // Mirror outcomes per route and shadow cluster, summed over the listeners that
        // share a route table (one series per label set).
        let mut mirrors: BTreeMap<(String, String), [u64; 4]> = BTreeMap::new();
        let mut seen = Vec::new();
        for l in snapshot.listener_bodies() {
            let crate::config::snapshot::ListenerKind::Http(manager) = &l.kind else {
                continue;
            };
            let set = &manager.routes;
            if seen.iter().any(|s| std::ptr::eq(*s, &**set)) {
                continue;
            }
            seen.push(&**set);
            for vh in set.table.virtual_hosts() {
                for route in vh.routes() {
                    for m in route.mirrors.iter() {
                        let (c, _) = set.target(m.target);
                        let st = m.state();
                        let entry = mirrors
                            .entry((route.name.to_string(), c.name.to_string()))
                            .or_default();
                        entry[0] += st.started.load(Ordering::Relaxed);
                        entry[1] += st.skipped_in_flight.load(Ordering::Relaxed);
                        entry[2] += st.skipped_body.load(Ordering::Relaxed);
                        entry[3] += st.failed.load(Ordering::Relaxed);
                    }
                }
            }
        }
        let mut mirror = [
            Samples::new("sinew_route_mirror_started", "Shadow requests sent", true),
            Samples::new(
                "sinew_route_mirror_skipped_in_flight",
                "Shadow requests not sent: max_in_flight were out",
                true,
            ),
            Samples::new(
                "sinew_route_mirror_skipped_body",
                "Shadow requests not sent: the body was over max_body_bytes",
                true,
            ),
            Samples::new(
                "sinew_route_mirror_failed",
                "Shadow requests that failed or timed out",
                true,
            ),
        ];
        for ((route, cluster), values) in mirrors {
            let labels: Labels = vec![("route", route), ("cluster", cluster)];
            for (samples, v) in mirror.iter_mut().zip(values) {
                samples.values.push((labels.clone(), v as f64));
            }
        }
        for s in &mirror {
            s.write(&mut encoder)?;
        }
        Ok(())
    }
}
