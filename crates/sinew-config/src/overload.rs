//! `overload`: the proxy protecting itself when its heap grows past a budget, as Envoy's
//! overload manager does with its fixed heap monitor. A monitor samples the heap every
//! `refresh_interval`; the pressure (heap in use / `max_heap_size_bytes`) drives actions
//! through triggers: a `threshold` switches an action fully on at a pressure, `scaled`
//! turns it on gradually between two pressures.

use std::time::Duration;

use serde::Deserialize;

use crate::{duration, ConfigError};

/// The overload manager (Envoy: bootstrap `overload_manager` with the
/// `envoy.resource_monitors.fixed_heap` monitor).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overload {
    /// How often the heap is sampled and the actions' states recomputed. Default 1s, as
    /// in Envoy.
    #[serde(
        default = "default_refresh_interval",
        deserialize_with = "duration::deserialize"
    )]
    pub refresh_interval: Duration,
    /// The heap budget: pressure is the heap in use divided by this.
    pub max_heap_size_bytes: u64,
    /// What to do under pressure. An action named more than once takes the largest of
    /// its triggers' states, as an Envoy action with several triggers does.
    #[serde(default)]
    pub actions: Vec<OverloadAction>,
}

fn default_refresh_interval() -> Duration {
    Duration::from_secs(1)
}

/// One action and its trigger: exactly one of `threshold` and `scaled`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverloadAction {
    pub action: OverloadActionKind,
    /// Fully on (saturated) when the pressure is at or above this (0 to 1), off below.
    #[serde(default)]
    pub threshold: Option<f64>,
    /// Off at or below `scaling_threshold`, fully on at or above `saturation_threshold`,
    /// and in between the share `(pressure - scaling) / (saturation - scaling)`.
    #[serde(default)]
    pub scaled: Option<ScaledTrigger>,
}

/// Envoy's `ScaledTrigger`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaledTrigger {
    pub scaling_threshold: f64,
    pub saturation_threshold: f64,
}

/// The actions Sinew takes; Envoy's names (`envoy.overload_actions.…`) are accepted too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverloadActionKind {
    /// New HTTP requests are answered 503 at once (a share of them while scaling).
    #[serde(alias = "envoy.overload_actions.stop_accepting_requests")]
    StopAcceptingRequests,
    /// HTTP/1 responses close their connection; HTTP/2 connections are sent GOAWAY.
    #[serde(alias = "envoy.overload_actions.disable_http_keepalive")]
    DisableHttpKeepalive,
    /// Listeners stop accepting: new connections wait in the kernel's backlog.
    #[serde(alias = "envoy.overload_actions.stop_accepting_connections")]
    StopAcceptingConnections,
    /// New connections are accepted and closed at once, before any byte is read.
    #[serde(alias = "envoy.overload_actions.reject_incoming_connections")]
    RejectIncomingConnections,
    /// Return free memory to the system. Accepted and left to the allocator: see
    /// docs/config.md.
    #[serde(alias = "envoy.overload_actions.shrink_heap")]
    ShrinkHeap,
}

impl OverloadActionKind {
    /// Every action, in a fixed order (the index of each is its slot in the proxy's state).
    pub const ALL: [OverloadActionKind; 5] = [
        OverloadActionKind::StopAcceptingRequests,
        OverloadActionKind::DisableHttpKeepalive,
        OverloadActionKind::StopAcceptingConnections,
        OverloadActionKind::RejectIncomingConnections,
        OverloadActionKind::ShrinkHeap,
    ];

    /// The action's short name (`stop_accepting_requests`), as in metrics.
    pub fn name(self) -> &'static str {
        match self {
            OverloadActionKind::StopAcceptingRequests => "stop_accepting_requests",
            OverloadActionKind::DisableHttpKeepalive => "disable_http_keepalive",
            OverloadActionKind::StopAcceptingConnections => "stop_accepting_connections",
            OverloadActionKind::RejectIncomingConnections => "reject_incoming_connections",
            OverloadActionKind::ShrinkHeap => "shrink_heap",
        }
    }

    /// Its slot in [`OverloadActionKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The action for an Envoy name (`envoy.overload_actions.shrink_heap`), if Sinew has it.
    pub fn from_envoy(name: &str) -> Option<Self> {
        let short = name.strip_prefix("envoy.overload_actions.")?;
        Self::ALL.into_iter().find(|a| a.name() == short)
    }
}

impl OverloadAction {
    /// The action's state for a pressure: 0 (off) to 1 (saturated).
    pub fn state(&self, pressure: f64) -> f64 {
        if let Some(value) = self.threshold {
            return if pressure >= value { 1.0 } else { 0.0 };
        }
        match self.scaled {
            Some(s) if pressure >= s.saturation_threshold => 1.0,
            Some(s) if pressure <= s.scaling_threshold => 0.0,
            Some(s) => {
                (pressure - s.scaling_threshold) / (s.saturation_threshold - s.scaling_threshold)
            }
            None => 0.0,
        }
    }
}

/// Checks the `overload` field.
pub(crate) fn check(overload: Option<&Overload>) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let Some(o) = overload else {
        return errors;
    };
    if o.refresh_interval.is_zero() {
        errors.push(ConfigError::new(
            "overload.refresh_interval",
            "must be more than zero",
        ));
    }
    if o.max_heap_size_bytes == 0 {
        errors.push(ConfigError::new(
            "overload.max_heap_size_bytes",
            "must be more than zero",
        ));
    }
    let share = |v: f64| (0.0..=1.0).contains(&v);
    for (i, a) in o.actions.iter().enumerate() {
        let at = format!("overload.actions[{i}]");
        match (a.threshold, a.scaled) {
            (Some(v), None) if !share(v) => errors.push(ConfigError::new(
                format!("{at}.threshold"),
                format!("{v} is not a pressure: write a number from 0 to 1"),
            )),
            (None, Some(s)) => {
                if !share(s.scaling_threshold) || !share(s.saturation_threshold) {
                    errors.push(ConfigError::new(
                        format!("{at}.scaled"),
                        "thresholds are pressures: numbers from 0 to 1",
                    ));
                } else if s.scaling_threshold >= s.saturation_threshold {
                    errors.push(ConfigError::new(
                        format!("{at}.scaled.saturation_threshold"),
                        "must be above scaling_threshold",
                    ));
                }
            }
            (Some(_), None) => {}
            _ => errors.push(ConfigError::new(
                at,
                "needs one trigger: `threshold` or `scaled`",
            )),
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Overload, Vec<ConfigError>> {
        let loaded = crate::parse_str("t.yaml", text).map_err(|d| d.errors)?;
        let errors = crate::validate(&loaded.config);
        if errors.is_empty() {
            Ok(loaded.config.overload.expect("overload is set"))
        } else {
            Err(errors)
        }
    }

    #[test]
    fn actions_take_sinew_and_envoy_names_with_a_one_second_default_refresh() {
        let o = parse(
            "overload:\n  max_heap_size_bytes: 1000\n  actions:\n  - {action: stop_accepting_requests, threshold: 0.9}\n  - {action: envoy.overload_actions.shrink_heap, scaled: {scaling_threshold: 0.5, saturation_threshold: 0.7}}\n",
        )
        .unwrap();
        assert_eq!(o.refresh_interval, Duration::from_secs(1));
        assert_eq!(
            o.actions[0].action,
            OverloadActionKind::StopAcceptingRequests
        );
        assert_eq!(o.actions[1].action, OverloadActionKind::ShrinkHeap);
    }

    #[test]
    fn a_threshold_saturates_at_its_value_and_a_scaled_trigger_ramps_between_its_two() {
        let threshold = OverloadAction {
            action: OverloadActionKind::ShrinkHeap,
            threshold: Some(0.9),
            scaled: None,
        };
        assert_eq!(threshold.state(0.89), 0.0);
        assert_eq!(threshold.state(0.9), 1.0);
        let scaled = OverloadAction {
            threshold: None,
            scaled: Some(ScaledTrigger {
                scaling_threshold: 0.5,
                saturation_threshold: 0.7,
            }),
            ..threshold
        };
        assert_eq!(scaled.state(0.5), 0.0);
        assert!((scaled.state(0.6) - 0.5).abs() < 1e-9);
        assert_eq!(scaled.state(0.7), 1.0);
        assert_eq!(scaled.state(3.0), 1.0);
    }

    #[test]
    fn bad_triggers_and_unknown_actions_are_refused_at_their_fields() {
        let e = parse("overload:\n  max_heap_size_bytes: 0\n  actions:\n  - {action: shrink_heap}\n  - {action: shrink_heap, threshold: 1.5}\n  - {action: shrink_heap, scaled: {scaling_threshold: 0.8, saturation_threshold: 0.2}}\n").unwrap_err();
        let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "overload.max_heap_size_bytes",
                "overload.actions[0]",
                "overload.actions[1].threshold",
                "overload.actions[2].scaled.saturation_threshold"
            ]
        );
        let e = parse("overload:\n  max_heap_size_bytes: 10\n  actions:\n  - {action: reduce_timeouts, threshold: 0.5}\n").unwrap_err();
        assert!(e[0].message.contains("reduce_timeouts"), "{e:?}");
    }
}
