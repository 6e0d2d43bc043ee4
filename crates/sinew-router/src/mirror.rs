//! Request mirror policies, compiled: which cluster a route's shadow requests go to, for
//! what share of requests, and the counter that bounds how many are in flight. The proxy
//! sends the copies (`sinew-proxy`'s `http/mirror.rs`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use sinew_config::model;

use crate::percentage::Percentage;
use crate::{Resolver, Target};

#[derive(Debug)]
pub struct MirrorPolicy {
    /// The shadow cluster (the whole cluster: the route's `metadata_match` is for its own).
    pub target: Target,
    pub percentage: Percentage,
    /// Append `-shadow` to the host part of `Host` / `:authority`, as Envoy does.
    pub suffix_host: bool,
    /// Larger request bodies are not mirrored. None: the listener's limit.
    pub max_body_bytes: Option<usize>,
    max_in_flight: u32,
    /// Shared with the shadow requests in flight, which may outlive a reload.
    state: Arc<MirrorState>,
}

/// Shadow requests of one policy: how many are in flight, and what became of them.
#[derive(Debug, Default)]
pub struct MirrorState {
    in_flight: AtomicU32,
    pub started: AtomicU64,
    /// Not mirrored: `max_in_flight` copies were already out.
    pub skipped_in_flight: AtomicU64,
    /// Not mirrored: the body was over `max_body_bytes` (or was abandoned midway).
    pub skipped_body: AtomicU64,
    /// Mirrored, but the shadow request failed or timed out.
    pub failed: AtomicU64,
}

/// One shadow request's place among `max_in_flight`; freed when dropped.
#[derive(Debug)]
pub struct MirrorSlot(Arc<MirrorState>);

impl MirrorSlot {
    pub fn state(&self) -> &MirrorState {
        &self.0
    }
}

impl Drop for MirrorSlot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl MirrorPolicy {
    pub(crate) fn compile(m: &model::RequestMirrorPolicy, resolve: &mut Resolver<'_>) -> Self {
        MirrorPolicy {
            target: resolve(&m.cluster, &BTreeMap::new()),
            percentage: Percentage::from_percent(m.percentage),
            suffix_host: !m.disable_shadow_host_suffix_append,
            max_body_bytes: m.max_body_bytes.map(|n| n as usize),
            max_in_flight: m.max_in_flight,
            state: Arc::default(),
        }
    }

    /// A slot for one more shadow request, or None (counted) when `max_in_flight` are
    /// already out.
    pub fn try_start(&self) -> Option<MirrorSlot> {
        let before = self.state.in_flight.fetch_add(1, Ordering::Relaxed);
        let slot = MirrorSlot(self.state.clone());
        if before >= self.max_in_flight {
            self.state.skipped_in_flight.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.state.started.fetch_add(1, Ordering::Relaxed);
        Some(slot)
    }

    pub fn state(&self) -> &MirrorState {
        &self.state
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use crate::test_util::{first_route, one_route};
    use crate::{Percentage, Target};

    #[test]
    fn policies_resolve_their_cluster_and_keep_their_settings() {
        let t = one_route(
            "{match: {}, cluster: a, request_mirror_policies: [
                {cluster: b},
                {cluster: c, percentage: 5, disable_shadow_host_suffix_append: true, max_body_bytes: 10}]}",
        );
        let m = &first_route(&t).mirrors;
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].target, Target(1));
        assert_eq!(m[0].percentage, Percentage::ALL);
        assert!(m[0].suffix_host);
        assert_eq!(m[0].max_body_bytes, None);
        assert_eq!(m[1].target, Target(2));
        assert_eq!(m[1].percentage.per_million(), 50_000);
        assert!(!m[1].suffix_host);
        assert_eq!(m[1].max_body_bytes, Some(10));
        assert!(first_route(&one_route("{match: {}, cluster: a}"))
            .mirrors
            .is_empty());
    }

    #[test]
    fn in_flight_copies_are_bounded_and_counted() {
        let t = one_route(
            "{match: {}, cluster: a, request_mirror_policies: [{cluster: b, max_in_flight: 2}]}",
        );
        let m = &first_route(&t).mirrors[0];
        let a = m.try_start().unwrap();
        let b = m.try_start().unwrap();
        assert!(m.try_start().is_none());
        drop(a);
        let c = m.try_start().unwrap();
        assert!(m.try_start().is_none());
        drop((b, c));
        let s = m.state();
        assert_eq!(s.started.load(Ordering::Relaxed), 3);
        assert_eq!(s.skipped_in_flight.load(Ordering::Relaxed), 2);
        assert_eq!(s.in_flight.load(Ordering::Relaxed), 0);
    }
}
