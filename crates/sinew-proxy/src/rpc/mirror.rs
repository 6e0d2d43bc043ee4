//! Mirroring for RPC calls: a copy of a share of a route's calls goes to each of its
//! `request_mirror_policies`' clusters, over that worker's multiplexed connection to
//! the shadow endpoint (with an id of that connection's own, as any call), and its
//! response is dropped.
//!
//! The main call never waits for a copy: each is its own task with its own timeout (the
//! route's, or 15 s without one), bounded by the policy's `max_in_flight` and by the
//! shadow cluster's circuit breakers, and counted in the shadow cluster's upstream
//! metrics. A call larger than the policy's `max_body_bytes` is not copied. The service
//! is not renamed (HTTP's `-shadow` host suffix has no RPC counterpart: the shadow
//! cluster's servers must serve the same service).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use sinew_codec::rpc::{Frame, RpcCodec};
use sinew_router::MirrorPolicy;

use super::outcome::upstream_status;
use super::upstream::connection;
use crate::config::snapshot::RouteSet;

/// Bounds a copy whose route has no timeout, so it cannot hold its slot forever.
const TIMEOUT_WITHOUT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

/// Starts a copy of `frame` for each policy that draws this call.
pub(super) fn send_copies(
    policies: &[MirrorPolicy],
    routes: &RouteSet,
    frame: &Frame,
    codec: &'static dyn RpcCodec,
    timeout: Duration,
) {
    let timeout = if timeout.is_zero() {
        TIMEOUT_WITHOUT_ROUTE_TIMEOUT
    } else {
        timeout
    };
    for policy in policies {
        if !policy.percentage.sample() {
            continue;
        }
        if policy
            .max_body_bytes
            .is_some_and(|max| frame.bytes.len() > max)
        {
            policy.state().skipped_body.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let Some(slot) = policy.try_start() else {
            tracing::debug!("RPC mirror skipped: max_in_flight copies already out");
            continue;
        };
        let (cluster, subset) = routes.target(policy.target);
        let cluster = cluster.clone();
        let metrics = routes
            .metrics
            .as_ref()
            .and_then(|m| m.target(policy.target))
            .cloned();
        let copy = Frame {
            kind: frame.kind,
            request_id: frame.request_id,
            bytes: BytesMut::from(&frame.bytes[..]),
        };
        tokio::spawn(async move {
            let exchange = async {
                // Copies are real load on the shadow cluster: its breakers bound them.
                let _request_slot = cluster.breakers().try_request()?;
                let endpoint = cluster.pick(subset, None, &[], 1)?;
                let conn = connection(&endpoint.state, codec).await.ok()?;
                let sent_at = Instant::now();
                match tokio::time::timeout(timeout, conn.call(copy)).await {
                    Ok(Ok(Some(response))) => {
                        if let Some(m) = &metrics {
                            let status = upstream_status(codec.response_class(&response));
                            m.response(status, sent_at.elapsed());
                        }
                        Some(())
                    }
                    Ok(Ok(None)) => Some(()),
                    Ok(Err(_)) => None,
                    Err(_) => {
                        if let Some(m) = &metrics {
                            m.timeouts.inc();
                        }
                        None
                    }
                }
            };
            if exchange.await.is_none() {
                slot.state().failed.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
}
