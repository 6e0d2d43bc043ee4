//! Circuit breakers: how much a cluster may be asked of at once before the proxy answers
//! 503 itself instead of piling more work on it.
//!
//! The fields and defaults are Envoy's `cluster.circuit_breakers.thresholds` (default
//! priority) with its `retry_budget`. Unset, a cluster still has Envoy's defaults
//! (1024 connections, 1024 pending, 1024 requests, 3 retries): never unlimited.

use serde::Deserialize;

/// Per-cluster limits. Envoy: `circuit_breakers.thresholds[priority: DEFAULT]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakers {
    /// Connections open to all the cluster's endpoints at once. Over it, HTTP/1.1 requests
    /// wait (as pending) for a pooled connection to come free; HTTP/2 requests share the
    /// open connections beyond their stream cap.
    #[serde(default = "default_limit")]
    pub max_connections: u32,
    /// Requests waiting for a connection at once; one more is answered 503 (flag UO).
    #[serde(default = "default_limit")]
    pub max_pending_requests: u32,
    /// Requests in flight to the cluster at once; one more is answered 503 (flag UO).
    #[serde(default = "default_limit")]
    pub max_requests: u32,
    /// Retries in flight to the cluster at once; over it a request is not retried and its
    /// last answer stands.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// When set, replaces `max_retries` with a share of the requests in flight.
    #[serde(default)]
    pub retry_budget: Option<RetryBudget>,
}

impl Default for CircuitBreakers {
    fn default() -> Self {
        Self {
            max_connections: default_limit(),
            max_pending_requests: default_limit(),
            max_requests: default_limit(),
            max_retries: default_max_retries(),
            retry_budget: None,
        }
    }
}

/// Retries allowed as a share of the load. Envoy: `thresholds.retry_budget`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBudget {
    /// Retries in flight may be at most this percent of the requests in flight (active
    /// plus pending).
    #[serde(default = "default_budget_percent")]
    pub budget_percent: f64,
    /// Retries allowed at once however low the load, so a quiet cluster can still retry.
    #[serde(default = "default_min_retry_concurrency")]
    pub min_retry_concurrency: u32,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self {
            budget_percent: default_budget_percent(),
            min_retry_concurrency: default_min_retry_concurrency(),
        }
    }
}

fn default_limit() -> u32 {
    1024
}
fn default_max_retries() -> u32 {
    3
}
fn default_budget_percent() -> f64 {
    20.0
}
fn default_min_retry_concurrency() -> u32 {
    3
}
