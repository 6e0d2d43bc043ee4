//! The overload manager (`overload` in the config): a monitor task samples the heap every
//! `refresh_interval`, computes the pressure (heap in use / `max_heap_size_bytes`) and each
//! action's state from its triggers, and publishes them in atomics that the request path
//! and the accept loops read without a lock.
//!
//! The state is the process's, not a config snapshot's: the heap is the process's, and
//! Envoy too has one overload manager per server. A reload that changes `overload`
//! restarts the monitor with the new settings.
//!
//! How the heap is read is the binary's choice ([`set_heap_reader`]): the `sinew` binary
//! installs jemalloc's `stats.allocated`, so this crate stays allocator-agnostic; without
//! one the resident set size stands in.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use sinew_config::overload::{Overload, OverloadActionKind};

/// How many actions there are (the slots of [`State::actions`]).
const ACTIONS: usize = OverloadActionKind::ALL.len();

/// What the monitor publishes; read by everything that acts.
struct State {
    /// An `overload` section is running.
    configured: AtomicBool,
    /// The last pressure (`f64` bits).
    pressure: AtomicU64,
    /// The last heap reading, in bytes.
    heap_bytes: AtomicU64,
    /// Each action's state from 0 to 1 (`f32` bits), by [`OverloadActionKind::index`].
    actions: [AtomicU32; ACTIONS],
    /// Requests answered 503 by `stop_accepting_requests`.
    rejected_requests: AtomicU64,
    /// Connections closed at accept by `reject_incoming_connections`.
    rejected_connections: AtomicU64,
    /// Heap readings that failed (no reader could say).
    failed_updates: AtomicU64,
}

static STATE: State = State {
    configured: AtomicBool::new(false),
    pressure: AtomicU64::new(0),
    heap_bytes: AtomicU64::new(0),
    actions: [const { AtomicU32::new(0) }; ACTIONS],
    rejected_requests: AtomicU64::new(0),
    rejected_connections: AtomicU64::new(0),
    failed_updates: AtomicU64::new(0),
};

static HEAP_READER: OnceLock<fn() -> Option<u64>> = OnceLock::new();

/// The running monitor, replaced when a reload changes `overload`.
static MONITOR: Mutex<Option<(Overload, tokio::task::JoinHandle<()>)>> = Mutex::new(None);

/// Installs how the heap in use is read (bytes), once per process; the `sinew` binary
/// installs its allocator's count. Later calls are ignored.
pub fn set_heap_reader(read: fn() -> Option<u64>) {
    let _ = HEAP_READER.set(read);
}

/// The heap in use: the installed reader's, else the resident set size.
fn heap_in_use() -> Option<u64> {
    match HEAP_READER.get() {
        Some(read) => read(),
        None => crate::metrics::resident_memory_bytes(),
    }
}

/// Starts, restarts or stops the monitor for a config's `overload` (on the caller's
/// runtime). The first sample is taken before this returns, so the actions are in force
/// for the first request the config serves.
pub(crate) fn configure(overload: Option<&Overload>) {
    let mut running = MONITOR.lock().unwrap_or_else(|e| e.into_inner());
    if running.as_ref().map(|(o, _)| o) == overload {
        return;
    }
    if let Some((_, task)) = running.take() {
        task.abort();
    }
    let Some(overload) = overload.cloned() else {
        STATE.configured.store(false, Ordering::Relaxed);
        for action in &STATE.actions {
            action.store(0f32.to_bits(), Ordering::Relaxed);
        }
        STATE.pressure.store(0f64.to_bits(), Ordering::Relaxed);
        return;
    };
    sample(&overload);
    STATE.configured.store(true, Ordering::Relaxed);
    let config = overload.clone();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(config.refresh_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            sample(&config);
        }
    });
    *running = Some((overload, task));
}

/// One refresh: reads the heap, and publishes the pressure and every action's state.
fn sample(overload: &Overload) {
    let Some(used) = heap_in_use() else {
        STATE.failed_updates.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let pressure = used as f64 / overload.max_heap_size_bytes as f64;
    STATE.heap_bytes.store(used, Ordering::Relaxed);
    STATE.pressure.store(pressure.to_bits(), Ordering::Relaxed);
    for (kind, state) in states(overload, pressure) {
        STATE.actions[kind.index()].store((state as f32).to_bits(), Ordering::Relaxed);
    }
}

/// Each action's state at `pressure`: the largest of its triggers', 0 for actions not
/// configured.
fn states(overload: &Overload, pressure: f64) -> [(OverloadActionKind, f64); ACTIONS] {
    OverloadActionKind::ALL.map(|kind| {
        let state = overload
            .actions
            .iter()
            .filter(|a| a.action == kind)
            .map(|a| a.state(pressure))
            .fold(0.0, f64::max);
        (kind, state)
    })
}

/// An action's state now, 0 to 1.
fn state(kind: OverloadActionKind) -> f32 {
    f32::from_bits(STATE.actions[kind.index()].load(Ordering::Relaxed))
}

/// Whether an action with state `share` applies to this request or connection: always
/// when saturated, never when off, and for that share of them while scaling (Envoy draws
/// the same way).
fn draws(share: f32) -> bool {
    share >= 1.0 || (share > 0.0 && fastrand::f32() < share)
}

/// `stop_accepting_requests`: whether to answer this new request 503 (counted).
pub(crate) fn rejects_request() -> bool {
    let reject = draws(state(OverloadActionKind::StopAcceptingRequests));
    if reject {
        STATE.rejected_requests.fetch_add(1, Ordering::Relaxed);
    }
    reject
}

/// `disable_http_keepalive`: whether this HTTP/1 response closes its connection.
pub(crate) fn closes_connection() -> bool {
    draws(state(OverloadActionKind::DisableHttpKeepalive))
}

/// `disable_http_keepalive` saturated: HTTP/2 connections are sent GOAWAY.
pub(crate) fn keepalive_disabled() -> bool {
    state(OverloadActionKind::DisableHttpKeepalive) >= 1.0
}

/// `reject_incoming_connections`: whether to close a just-accepted connection (counted).
pub(crate) fn rejects_connection() -> bool {
    let reject = draws(state(OverloadActionKind::RejectIncomingConnections));
    if reject {
        STATE.rejected_connections.fetch_add(1, Ordering::Relaxed);
    }
    reject
}

/// `stop_accepting_connections`: waits while it is saturated, so connections stay in the
/// kernel's backlog; returns at once otherwise. It looks again every 50 ms, which is all a
/// stopped listener costs.
pub(crate) async fn accepting() {
    while state(OverloadActionKind::StopAcceptingConnections) >= 1.0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What `/metrics` shows: none when no `overload` runs.
pub(crate) struct Reading {
    pub pressure: f64,
    pub heap_bytes: u64,
    pub actions: Vec<(&'static str, f64)>,
    pub rejected_requests: u64,
    pub rejected_connections: u64,
    pub failed_updates: u64,
}

pub(crate) fn reading() -> Option<Reading> {
    if !STATE.configured.load(Ordering::Relaxed) {
        return None;
    }
    let configured: Vec<OverloadActionKind> = MONITOR
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|(o, _)| o.actions.iter().map(|a| a.action).collect())
        .unwrap_or_default();
    let actions: Vec<(&'static str, f64)> = OverloadActionKind::ALL
        .into_iter()
        .filter(|k| configured.contains(k))
        .map(|k| (k.name(), state(k) as f64))
        .collect();
    Some(Reading {
        pressure: f64::from_bits(STATE.pressure.load(Ordering::Relaxed)),
        heap_bytes: STATE.heap_bytes.load(Ordering::Relaxed),
        actions,
        rejected_requests: STATE.rejected_requests.load(Ordering::Relaxed),
        rejected_connections: STATE.rejected_connections.load(Ordering::Relaxed),
        failed_updates: STATE.failed_updates.load(Ordering::Relaxed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sinew_config::overload::{OverloadAction, ScaledTrigger};

    fn action(kind: OverloadActionKind, threshold: f64) -> OverloadAction {
        OverloadAction {
            action: kind,
            threshold: Some(threshold),
            scaled: None,
        }
    }

    #[test]
    fn an_action_named_twice_takes_its_largest_state_and_others_stay_off() {
        let overload = Overload {
            refresh_interval: Duration::from_secs(1),
            max_heap_size_bytes: 100,
            actions: vec![
                action(OverloadActionKind::StopAcceptingRequests, 0.9),
                OverloadAction {
                    action: OverloadActionKind::StopAcceptingRequests,
                    threshold: None,
                    scaled: Some(ScaledTrigger {
                        scaling_threshold: 0.5,
                        saturation_threshold: 1.0,
                    }),
                },
            ],
        };
        let at = |p: f64| states(&overload, p);
        assert_eq!(
            at(0.75)[0],
            (OverloadActionKind::StopAcceptingRequests, 0.5)
        );
        assert_eq!(at(0.95)[0].1, 1.0);
        assert!(at(0.95)[1..].iter().all(|(_, s)| *s == 0.0));
    }

    #[test]
    fn a_scaled_share_applies_to_about_that_share() {
        assert!(draws(1.0));
        assert!(!draws(0.0));
        let hits = (0..10_000).filter(|_| draws(0.25)).count();
        assert!((2_000..3_000).contains(&hits), "{hits} of 10000");
    }
}
