//! Request mirroring: copies of a share of a route's requests go to shadow clusters,
//! fire-and-forget, with `-shadow` appended to the host (as Envoy does), so that a new
//! version sees real traffic without answering it.
//!
//! The main request never waits for a copy and never fails because of one: each copy is
//! its own task with its own timeout, whose response is drained and dropped. What a
//! stalled or dead shadow cluster can cost is bounded: at most `max_in_flight` copies per
//! policy (more are skipped and counted), and a body is copied only up to
//! `max_body_bytes` — a larger one reaches the main upstream untouched and is not
//! mirrored (see `sinew_upstream::tee`).

use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use http_body_util::BodyExt;
use sinew_router::{MirrorPolicy, MirrorSlot};
use sinew_upstream::{RequestBody, ShadowBody};
use std::sync::atomic::Ordering;

use super::upstream_request::{build_request, wire_protocol, Prepared};
use crate::config::snapshot::RouteSet;

/// Bounds a copy whose route has no timeout (`timeout: 0`), so it cannot hold its
/// in-flight slot forever.
const TIMEOUT_WITHOUT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

/// What every copy of one request is made from: the main upstream request as prepared.
pub(super) struct Source<'a> {
    prepared: &'a Prepared,
    authority: &'a HeaderValue,
    downstream_h2: bool,
    /// The main request's timeout (as Envoy bounds shadows), or the fallback above.
    timeout: Duration,
}

impl<'a> Source<'a> {
    pub(super) fn new(
        prepared: &'a Prepared,
        authority: &'a HeaderValue,
        downstream_h2: bool,
        timeout: Duration,
    ) -> Self {
        Source {
            prepared,
            authority,
            downstream_h2,
            timeout: if timeout.is_zero() {
                TIMEOUT_WITHOUT_ROUTE_TIMEOUT
            } else {
                timeout
            },
        }
    }
}

/// Starts a copy for each policy that draws this request. `body` is the main request's:
/// a streamed one gets a tee that hands its copy over when it ends. `listener_body_limit`
/// bounds the copies of policies that set no `max_body_bytes`.
pub(super) fn send_copies(
    policies: &[MirrorPolicy],
    routes: &RouteSet,
    source: &Source<'_>,
    body: &mut RequestBody,
    listener_body_limit: usize,
) {
    for policy in policies {
        if !policy.percentage.sample() {
            continue;
        }
        let Some(slot) = policy.try_start() else {
            tracing::debug!("mirror skipped: max_in_flight copies already out");
            continue;
        };
        let Some(copy) = body.shadow_copy(policy.max_body_bytes.unwrap_or(listener_body_limit))
        else {
            slot.state().skipped_body.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("mirror skipped: request body over max_body_bytes");
            continue;
        };
        let (cluster, subset) = routes.target(policy.target);
        let cluster = cluster.clone();
        let protocol = wire_protocol(cluster.protocol, source.downstream_h2, false);
        let parts = source.prepared.clone();
        let authority = if policy.suffix_host {
            shadow_host(source.authority)
        } else {
            source.authority.clone()
        };
        let timeout = source.timeout;
        // Copies are requests to the shadow cluster and counted as its requests, as Envoy
        // counts them (`sinew_cluster_upstream_rq_total` and friends).
        let metrics = routes
            .metrics
            .as_ref()
            .and_then(|m| m.target(policy.target))
            .cloned();
        tokio::spawn(async move {
            let exchange = async {
                let body = match copy {
                    ShadowBody::Ready(b) => b,
                    ShadowBody::Pending(rx) => rx.await.map_err(|_| Outcome::BodyAbandoned)?,
                };
                // Shadow requests are real load on the shadow cluster: its circuit
                // breakers bound them as they bound any request.
                let _request_slot = cluster.breakers().try_request().ok_or(Outcome::Failed)?;
                let endpoint = cluster.pick(subset, None, &[], 1).ok_or(Outcome::Failed)?;
                let tls = endpoint.state.settings().tls.is_some();
                let body = if body.is_empty() {
                    RequestBody::Empty
                } else {
                    RequestBody::Full(Some(body))
                };
                let request = build_request(parts, &authority, body, protocol, tls);
                let sent_at = std::time::Instant::now();
                let response = endpoint
                    .state
                    .send(request, protocol, cluster.breakers())
                    .await;
                let response = match (response, &metrics) {
                    (Ok(r), Some(m)) => {
                        m.response(r.status(), sent_at.elapsed());
                        r
                    }
                    (Ok(r), None) => r,
                    (Err(e), m) => {
                        if let (sinew_upstream::SendError::Connect(_), Some(m)) = (&e, m) {
                            m.connect_failures.inc();
                        }
                        return Err(Outcome::Failed);
                    }
                };
                // Read to the end, so an HTTP/1.1 connection goes back to its pool.
                let mut body = response.into_body();
                while let Some(frame) = body.frame().await {
                    frame.map_err(|_| Outcome::Failed)?;
                }
                Ok::<(), Outcome>(())
            };
            let outcome = match tokio::time::timeout(timeout, exchange).await {
                Ok(Ok(())) => return,
                Ok(Err(outcome)) => outcome,
                Err(_) => {
                    if let Some(m) = &metrics {
                        m.timeouts.inc();
                    }
                    Outcome::Failed
                }
            };
            count(&slot, outcome);
        });
    }
}

/// Why a copy came to nothing.
enum Outcome {
    /// The streamed body outgrew the cap, failed, or the main request stopped sending it.
    BodyAbandoned,
    /// No endpoint, a connection or protocol error, or the timeout.
    Failed,
}

fn count(slot: &MirrorSlot, outcome: Outcome) {
    let state = slot.state();
    match outcome {
        Outcome::BodyAbandoned => {
            state.skipped_body.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("mirror abandoned: request body over max_body_bytes or incomplete");
        }
        Outcome::Failed => {
            state.failed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("mirror failed or timed out");
        }
    }
}

/// `host` → `host-shadow`, keeping a port: `foo:8080` → `foo-shadow:8080`. As in Envoy, a
/// colon inside an IPv6 literal's brackets is no port (`[::1]` → `[::1]-shadow`).
fn shadow_host(authority: &HeaderValue) -> HeaderValue {
    let a = authority.as_bytes();
    if a.is_empty() {
        return authority.clone();
    }
    let port_start = match a.iter().rposition(|&b| b == b':') {
        Some(i) if !a[i..].contains(&b']') => i,
        _ => a.len(),
    };
    let mut out = Vec::with_capacity(a.len() + SUFFIX.len());
    out.extend_from_slice(&a[..port_start]);
    out.extend_from_slice(SUFFIX);
    out.extend_from_slice(&a[port_start..]);
    HeaderValue::from_maybe_shared(Bytes::from(out)).unwrap_or_else(|_| authority.clone())
}

const SUFFIX: &[u8] = b"-shadow";

#[cfg(test)]
mod tests {
    use super::*;

    fn shadow(host: &'static str) -> String {
        shadow_host(&HeaderValue::from_static(host))
            .to_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn shadow_suffix_goes_on_the_host_part_before_any_port() {
        assert_eq!(shadow("foo"), "foo-shadow");
        assert_eq!(shadow("foo:8080"), "foo-shadow:8080");
        assert_eq!(shadow("api.example.com"), "api.example.com-shadow");
        assert_eq!(shadow("10.0.0.1:80"), "10.0.0.1-shadow:80");
    }

    #[test]
    fn ipv6_literals_keep_their_colons_as_in_envoy() {
        assert_eq!(shadow("[::1]"), "[::1]-shadow");
        assert_eq!(shadow("[::1]:8080"), "[::1]-shadow:8080");
        assert_eq!(
            shadow("[fe80::1%25eth0]:443"),
            "[fe80::1%25eth0]-shadow:443"
        );
    }

    #[test]
    fn an_empty_host_stays_empty() {
        assert_eq!(shadow(""), "");
    }
}
