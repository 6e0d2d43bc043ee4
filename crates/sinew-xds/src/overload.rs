//! The bootstrap's `overload_manager` as Sinew's `overload`: the fixed heap monitor, the
//! actions Sinew takes, and the two load shed points that are the same thing as one of
//! them. Any other monitor, action, load shed point or setting is refused by name.

use envoy_types::pb::envoy::config::overload::v3::resource_monitor::ConfigType;
use envoy_types::pb::envoy::config::overload::v3::trigger::TriggerOneof;
use envoy_types::pb::envoy::config::overload::v3::{OverloadManager, Trigger};
use envoy_types::pb::envoy::extensions::resource_monitors::fixed_heap::v3::FixedHeapConfig;
use sinew_config::overload::{Overload, OverloadAction, OverloadActionKind, ScaledTrigger};

use crate::{Ctx, XdsError};

/// Envoy's name for the one monitor Sinew has.
const FIXED_HEAP: &str = "envoy.resource_monitors.fixed_heap";

/// Load shed points that do what a Sinew action does: closing new connections at
/// accept, and answering new requests 503 before any filter.
fn load_shed_point(name: &str) -> Option<OverloadActionKind> {
    match name {
        "envoy.load_shed_points.tcp_listener_accept" => {
            Some(OverloadActionKind::RejectIncomingConnections)
        }
        "envoy.load_shed_points.http_connection_manager_decode_headers" => {
            Some(OverloadActionKind::StopAcceptingRequests)
        }
        _ => None,
    }
}

/// Maps `overload_manager` (at `overload_manager` in the file).
pub(crate) fn map(ctx: &Ctx, manager: OverloadManager) -> Result<Overload, XdsError> {
    let at = "overload_manager";
    let mut rest = manager;
    let refresh_interval = match rest.refresh_interval.take() {
        None => std::time::Duration::from_secs(1),
        Some(d) => std::time::Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32),
    };
    let mut max_heap_size_bytes = None;
    for (i, monitor) in std::mem::take(&mut rest.resource_monitors)
        .into_iter()
        .enumerate()
    {
        let path = format!("{at}.resource_monitors[{i}]");
        if monitor.name != FIXED_HEAP {
            return Err(ctx.error(
                format!("{path}.name"),
                format!(
                    "{:?} is not supported by Sinew: its only resource monitor is {FIXED_HEAP}",
                    monitor.name
                ),
            ));
        }
        if max_heap_size_bytes.is_some() {
            return Err(ctx.error(
                format!("{path}.name"),
                format!("{FIXED_HEAP} is named twice"),
            ));
        }
        let Some(ConfigType::TypedConfig(any)) = monitor.config_type else {
            return Err(ctx.error(
                path,
                "needs typed_config with max_heap_size_bytes (FixedHeapConfig)",
            ));
        };
        let config: FixedHeapConfig = crate::convert::decode(ctx, &path, &any)?;
        let mut heap_rest = config.clone();
        heap_rest.max_heap_size_bytes = 0;
        ctx.only_supported(format!("{path}.typed_config"), &heap_rest)?;
        if config.max_heap_size_bytes == 0 {
            return Err(ctx.error(
                format!("{path}.typed_config.max_heap_size_bytes"),
                "must be more than zero",
            ));
        }
        max_heap_size_bytes = Some(config.max_heap_size_bytes);
    }
    let Some(max_heap_size_bytes) = max_heap_size_bytes else {
        return Err(ctx.error(
            format!("{at}.resource_monitors"),
            format!("needs the {FIXED_HEAP} monitor (the only one Sinew has)"),
        ));
    };
    let mut actions = Vec::new();
    for (i, action) in std::mem::take(&mut rest.actions).into_iter().enumerate() {
        let path = format!("{at}.actions[{i}]");
        let Some(kind) = OverloadActionKind::from_envoy(&action.name) else {
            return Err(ctx.error(
                format!("{path}.name"),
                format!(
                    "{:?} is not supported by Sinew; it takes stop_accepting_requests, disable_http_keepalive, stop_accepting_connections, reject_incoming_connections and shrink_heap (envoy.overload_actions.*)",
                    action.name
                ),
            ));
        };
        // shrink_heap's settings (how often, how much to keep) are the allocator's
        // business in Sinew (see docs/envoy-bootstrap.md); any other action takes none.
        if action.typed_config.is_some() && kind != OverloadActionKind::ShrinkHeap {
            return Err(ctx.error(format!("{path}.typed_config"), "is not supported by Sinew"));
        }
        for (j, trigger) in action.triggers.into_iter().enumerate() {
            actions.push(trigger_of(
                ctx,
                &format!("{path}.triggers[{j}]"),
                kind,
                trigger,
            )?);
        }
    }
    for (i, point) in std::mem::take(&mut rest.loadshed_points)
        .into_iter()
        .enumerate()
    {
        let path = format!("{at}.loadshed_points[{i}]");
        let Some(kind) = load_shed_point(&point.name) else {
            return Err(ctx.error(
                format!("{path}.name"),
                format!(
                    "{:?} is not supported by Sinew; it takes envoy.load_shed_points.tcp_listener_accept and http_connection_manager_decode_headers",
                    point.name
                ),
            ));
        };
        for (j, trigger) in point.triggers.into_iter().enumerate() {
            actions.push(trigger_of(
                ctx,
                &format!("{path}.triggers[{j}]"),
                kind,
                trigger,
            )?);
        }
    }
    ctx.only_supported(at, &rest)?;
    Ok(Overload {
        refresh_interval,
        max_heap_size_bytes,
        actions,
    })
}

/// One trigger of an action, on the heap monitor.
fn trigger_of(
    ctx: &Ctx,
    path: &str,
    action: OverloadActionKind,
    trigger: Trigger,
) -> Result<OverloadAction, XdsError> {
    if trigger.name != FIXED_HEAP {
        return Err(ctx.error(
            format!("{path}.name"),
            format!(
                "{:?} is not a resource monitor here: Sinew's only one is {FIXED_HEAP}",
                trigger.name
            ),
        ));
    }
    let (threshold, scaled) = match trigger.trigger_oneof {
        Some(TriggerOneof::Threshold(t)) => (Some(t.value), None),
        Some(TriggerOneof::Scaled(s)) => (
            None,
            Some(ScaledTrigger {
                scaling_threshold: s.scaling_threshold,
                saturation_threshold: s.saturation_threshold,
            }),
        ),
        None => return Err(ctx.error(path, "needs threshold or scaled")),
    };
    Ok(OverloadAction {
        action,
        threshold,
        scaled,
    })
}
