//! Fault injection, compiled: for each request, whether it is delayed and/or aborted —
//! decided without locks, from the route's `fault` config and the request's headers. The
//! proxy carries the decision out (`sinew-proxy`'s `http/fault.rs`).
//!
//! A route without `fault` has no [`FaultPolicy`] at all; one whose faults do not fire
//! for a request costs a header check and a random draw or two.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use http::{HeaderMap, StatusCode};
use sinew_config::model;

use crate::matcher::HeaderMatchers;
use crate::percentage::Percentage;
use crate::Errors;

/// Envoy's request headers for faults chosen by the caller (with `header_delay` or
/// `header_abort` configured).
pub const DELAY_HEADER: &str = "x-envoy-fault-delay-request";
pub const ABORT_HEADER: &str = "x-envoy-fault-abort-request";
pub const ABORT_GRPC_HEADER: &str = "x-envoy-fault-abort-grpc-request";

#[derive(Debug)]
pub struct FaultPolicy {
    delay: Option<Delay>,
    abort: Option<AbortFault>,
    headers: HeaderMatchers,
    max_active: u32,
    /// Requests being delayed or aborted right now.
    active: AtomicU32,
}

#[derive(Debug)]
struct Delay {
    /// None: from the request's [`DELAY_HEADER`].
    fixed: Option<Duration>,
    percentage: Percentage,
}

#[derive(Debug)]
struct AbortFault {
    /// None: from the request's [`ABORT_HEADER`] or [`ABORT_GRPC_HEADER`].
    fixed: Option<Abort>,
    percentage: Percentage,
}

/// How an aborted request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abort {
    /// This HTTP status (a gRPC request gets the matching gRPC status).
    Http(StatusCode),
    /// HTTP 200 with this `grpc-status`.
    Grpc(u8),
}

/// What to do to one request. While it lives, it counts against `max_active_faults`.
#[derive(Debug)]
pub struct Injection<'a> {
    pub delay: Option<Duration>,
    pub abort: Option<Abort>,
    _active: ActiveFault<'a>,
}

#[derive(Debug)]
struct ActiveFault<'a>(&'a AtomicU32);

impl Drop for ActiveFault<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl FaultPolicy {
    /// `p` is the fault's config path. The config was validated: one source per fault.
    pub(crate) fn compile(
        f: &model::FaultInjection,
        p: &str,
        errors: &mut Errors,
    ) -> Option<FaultPolicy> {
        let headers = HeaderMatchers::compile(&f.headers, &format!("{p}.headers"), errors)?;
        Some(FaultPolicy {
            delay: f.delay.as_ref().map(|d| Delay {
                fixed: d.fixed_delay,
                percentage: Percentage::from_percent(d.percentage),
            }),
            abort: f.abort.as_ref().map(|a| AbortFault {
                fixed: match (a.http_status, a.grpc_status) {
                    (Some(s), _) => StatusCode::from_u16(s).ok().map(Abort::Http),
                    (None, Some(g)) => u8::try_from(g).ok().map(Abort::Grpc),
                    (None, None) => None,
                },
                percentage: Percentage::from_percent(a.percentage),
            }),
            headers,
            max_active: f.max_active_faults.unwrap_or(u32::MAX),
            active: AtomicU32::new(0),
        })
    }

    /// The faults this request gets, or None when it gets none: its headers do not match,
    /// neither fault was drawn, or `max_active_faults` are already in progress.
    pub fn decide(&self, headers: &HeaderMap) -> Option<Injection<'_>> {
        if !self.headers.matches(headers) {
            return None;
        }
        let delay = self.delay.as_ref().and_then(|d| d.decide(headers));
        let abort = self.abort.as_ref().and_then(|a| a.decide(headers));
        if delay.is_none() && abort.is_none() {
            return None;
        }
        let active = self.enter()?;
        Some(Injection {
            delay,
            abort,
            _active: active,
        })
    }

    fn enter(&self) -> Option<ActiveFault<'_>> {
        let before = self.active.fetch_add(1, Ordering::Relaxed);
        let guard = ActiveFault(&self.active);
        (before < self.max_active).then_some(guard)
    }
}

impl Delay {
    fn decide(&self, headers: &HeaderMap) -> Option<Duration> {
        let delay = match self.fixed {
            Some(d) => d,
            None => Duration::from_millis(header_number(headers, DELAY_HEADER)?),
        };
        self.percentage.sample().then_some(delay)
    }
}

impl AbortFault {
    fn decide(&self, headers: &HeaderMap) -> Option<Abort> {
        let abort = match self.fixed {
            Some(a) => a,
            None => abort_from_headers(headers)?,
        };
        self.percentage.sample().then_some(abort)
    }
}

/// Envoy's rules: an HTTP status in [200, 600), else a gRPC status; anything else (or
/// neither header) is no abort.
fn abort_from_headers(headers: &HeaderMap) -> Option<Abort> {
    if let Some(status) = header_number(headers, ABORT_HEADER) {
        return u16::try_from(status)
            .ok()
            .filter(|s| (200..600).contains(s))
            .and_then(|s| StatusCode::from_u16(s).ok())
            .map(Abort::Http);
    }
    header_number(headers, ABORT_GRPC_HEADER)
        .filter(|g| *g <= 16)
        .map(|g| Abort::Grpc(g as u8))
}

fn header_number(headers: &HeaderMap, name: &str) -> Option<u64> {
    std::str::from_utf8(headers.get(name)?.as_bytes())
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::{HeaderMap, HeaderValue, StatusCode};

    use super::*;
    use crate::test_util::{first_route, one_route};

    fn policy(fault: &str) -> crate::RouteTable {
        one_route(&format!("{{match: {{}}, cluster: a, fault: {fault}}}"))
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn a_route_without_fault_has_no_policy() {
        assert!(first_route(&one_route("{match: {}, cluster: a}"))
            .fault
            .is_none());
    }

    #[test]
    fn fixed_delay_and_abort_at_100_percent_always_fire_together() {
        let t = policy(
            "{delay: {fixed_delay: 20ms, percentage: 100}, abort: {http_status: 503, percentage: 100}}",
        );
        let f = first_route(&t).fault.as_ref().unwrap();
        let i = f.decide(&HeaderMap::new()).unwrap();
        assert_eq!(i.delay, Some(Duration::from_millis(20)));
        assert_eq!(i.abort, Some(Abort::Http(StatusCode::SERVICE_UNAVAILABLE)));
    }

    #[test]
    fn zero_percent_never_fires() {
        let t = policy("{abort: {grpc_status: 14, percentage: 0}}");
        let f = first_route(&t).fault.as_ref().unwrap();
        assert!((0..1000).all(|_| f.decide(&HeaderMap::new()).is_none()));
    }

    #[test]
    fn header_matchers_gate_the_fault() {
        let t = policy(
            "{abort: {grpc_status: 14, percentage: 100}, headers: [{name: x-chaos, exact: 'on'}]}",
        );
        let f = first_route(&t).fault.as_ref().unwrap();
        assert!(f.decide(&HeaderMap::new()).is_none());
        assert!(f.decide(&headers(&[("x-chaos", "off")])).is_none());
        let i = f.decide(&headers(&[("x-chaos", "on")])).unwrap();
        assert_eq!(i.abort, Some(Abort::Grpc(14)));
        assert_eq!(i.delay, None);
    }

    #[test]
    fn max_active_faults_bounds_faults_in_progress_and_frees_them_when_done() {
        let t = policy("{delay: {fixed_delay: 1s, percentage: 100}, max_active_faults: 2}");
        let f = first_route(&t).fault.as_ref().unwrap();
        let none = HeaderMap::new();
        let a = f.decide(&none).unwrap();
        let b = f.decide(&none).unwrap();
        assert!(
            f.decide(&none).is_none(),
            "a third at once is over the limit"
        );
        drop(a);
        let c = f.decide(&none).unwrap();
        drop((b, c));
        assert_eq!(f.active.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn header_controlled_faults_read_envoy_s_headers() {
        let t = policy("{delay: {header_delay: {}, percentage: 100}, abort: {header_abort: {}, percentage: 100}}");
        let f = first_route(&t).fault.as_ref().unwrap();
        assert!(f.decide(&HeaderMap::new()).is_none(), "no header, no fault");
        let i = f
            .decide(&headers(&[(DELAY_HEADER, "150"), (ABORT_HEADER, "429")]))
            .unwrap();
        assert_eq!(i.delay, Some(Duration::from_millis(150)));
        assert_eq!(i.abort, Some(Abort::Http(StatusCode::TOO_MANY_REQUESTS)));
        let i = f.decide(&headers(&[(ABORT_GRPC_HEADER, "8")])).unwrap();
        assert_eq!((i.delay, i.abort), (None, Some(Abort::Grpc(8))));
        // Out of range or not a number: ignored.
        for bad in [
            (ABORT_HEADER, "600"),
            (ABORT_HEADER, "199"),
            (ABORT_HEADER, "x"),
            (ABORT_GRPC_HEADER, "17"),
            (DELAY_HEADER, "-1"),
        ] {
            assert!(f.decide(&headers(&[bad])).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn compile_errors_in_fault_headers_are_reported_at_their_path() {
        let errs = crate::test_util::errors(
            "[{name: v, domains: ['*'], routes: [{match: {}, cluster: a, fault: {abort: {http_status: 503, percentage: 1}, headers: [{name: x, regex: '('}]}}]}]",
        );
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(
            errs[0].path,
            "listeners[0].http.virtual_hosts[0].routes[0].fault.headers[0].regex"
        );
    }
}
