//! Fault injection, the phase between routing and the route's action: the delay, then
//! the abort, that the route's `fault` policy draws for this request (Envoy's order and
//! response flags: `DI` for a delay, `FI` for an abort). The decision itself is the
//! router's ([`FaultPolicy::decide`]); this module carries it out.

use http::{HeaderMap, HeaderValue, Response};
use sinew_router::{Abort, FaultPolicy};

use crate::stream::body::ResponseBody;
use crate::stream::flags::ResponseFlags;
use crate::stream::local_reply;

/// Envoy's text for an injected abort.
const ABORT_MESSAGE: &str = "fault filter abort";

/// Delays the request if the policy says so; then `Err` is the abort's response, and `Ok`
/// the flags to add to whatever response the request gets.
pub(super) async fn inject(
    policy: &FaultPolicy,
    headers: &HeaderMap,
    grpc: bool,
) -> Result<ResponseFlags, Response<ResponseBody>> {
    // Held until the abort is answered or the delay is over: it counts towards
    // `max_active_faults`.
    let Some(injection) = policy.decide(headers) else {
        return Ok(ResponseFlags::default());
    };
    let mut flags = ResponseFlags::default();
    if let Some(delay) = injection.delay {
        // Boxed: a timer entry inline would size every request's future, faulted or not.
        Box::pin(tokio::time::sleep(delay)).await;
        flags = ResponseFlags::DELAY_INJECTED;
    }
    let flags_if_aborted = flags | ResponseFlags::FAULT_INJECTED;
    match injection.abort {
        None => Ok(flags),
        Some(Abort::Http(status)) => Err(local_reply::error(
            status,
            flags_if_aborted,
            ABORT_MESSAGE,
            grpc,
        )),
        Some(Abort::Grpc(code)) => Err(local_reply::grpc_error(
            HeaderValue::from(u16::from(code)),
            flags_if_aborted,
            ABORT_MESSAGE,
        )),
    }
}

/// Adds `flags` (from [`inject`]) to a response's own.
pub(super) fn add_flags(response: &mut Response<ResponseBody>, flags: ResponseFlags) {
    if flags.is_empty() {
        return;
    }
    let extensions = response.extensions_mut();
    match extensions.get_mut::<ResponseFlags>() {
        Some(f) => *f = *f | flags,
        None => {
            extensions.insert(flags);
        }
    }
}
