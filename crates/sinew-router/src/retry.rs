//! Retry policies: which failures are retried (Envoy's `retry_on` conditions) and how long
//! to back off between tries.

use std::time::Duration;

use http::StatusCode;
use sinew_config::model;

/// A compiled retry policy.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first try; `num_retries + 1` tries in all.
    pub num_retries: u32,
    pub per_try_timeout: Option<Duration>,
    pub base_backoff: Duration,
    /// Defaults to 10 × `base_backoff`, as in Envoy.
    pub max_backoff: Duration,
    /// Bodies larger than this are streamed rather than kept, and so not retried. None:
    /// the listener's limit.
    pub max_buffered_body_bytes: Option<usize>,
    /// Retries avoid every endpoint tried so far (`previous_hosts`), not only the last.
    pub avoid_all_previous_hosts: bool,
    /// Fresh picks a retry may draw to find an endpoint it should not avoid.
    pub host_selection_attempts: u32,
    on_5xx: bool,
    on_gateway_error: bool,
    on_connect_failure: bool,
    on_reset: bool,
    /// Empty unless `retry_on` has `retriable-status-codes`.
    status_codes: Box<[u16]>,
}

impl RetryPolicy {
    pub(crate) fn compile(r: &model::RetryPolicy) -> RetryPolicy {
        // Validation rejects unknown conditions; anything else simply retries nothing.
        let on = |name: &str| r.retry_on.iter().any(|o| o == name);
        RetryPolicy {
            num_retries: r.num_retries,
            per_try_timeout: r.per_try_timeout,
            base_backoff: r.base_backoff,
            max_backoff: r.max_backoff.unwrap_or(r.base_backoff.saturating_mul(10)),
            max_buffered_body_bytes: r.max_buffered_body_bytes.map(|n| n as usize),
            avoid_all_previous_hosts: r.retry_host_predicate.iter().any(|p| p == "previous_hosts"),
            host_selection_attempts: r.host_selection_retry_max_attempts,
            on_5xx: on("5xx"),
            on_gateway_error: on("gateway-error"),
            on_connect_failure: on("connect-failure"),
            on_reset: on("reset"),
            status_codes: if on("retriable-status-codes") {
                r.retriable_status_codes.as_slice().into()
            } else {
                Box::default()
            },
        }
    }

    /// The upstream connection could not be established. Envoy's `5xx` and `gateway-error`
    /// include this: to the client it would be a 503 anyway.
    pub fn retry_on_connect_failure(&self) -> bool {
        self.on_connect_failure || self.on_5xx || self.on_gateway_error
    }

    /// The upstream reset or closed the stream before a response. `5xx` and `gateway-error`
    /// include this too.
    pub fn retry_on_reset(&self) -> bool {
        self.on_reset || self.on_5xx || self.on_gateway_error
    }

    /// A try exceeded `per_try_timeout`: Envoy retries it under `5xx` and `gateway-error`,
    /// since it would surface as a 504.
    pub fn retry_on_per_try_timeout(&self) -> bool {
        self.on_5xx || self.on_gateway_error
    }

    /// The upstream answered with `status`.
    pub fn retry_on_status(&self, status: StatusCode) -> bool {
        let code = status.as_u16();
        (self.on_5xx && status.is_server_error())
            || (self.on_gateway_error && matches!(code, 502..=504))
            || self.status_codes.contains(&code)
    }

    /// Backoff before retry number `attempt` (1-based): full jitter, random in [0, min(max, base * 2^(attempt-1))].
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(63);
        let cap = self
            .base_backoff
            .checked_mul(1u32.checked_shl(doublings).unwrap_or(u32::MAX))
            .unwrap_or(Duration::MAX)
            .min(self.max_backoff);
        let cap_nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(0..=cap_nanos))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::StatusCode;

    use crate::test_util::{first_route, one_route};
    use crate::RetryPolicy;

    fn policy(spec: &str) -> RetryPolicy {
        let t = one_route(&format!("{{match: {{}}, cluster: a, retry: {spec}}}"));
        first_route(&t).retry.clone().unwrap()
    }

    fn statuses(p: &RetryPolicy) -> Vec<u16> {
        [200, 404, 429, 500, 501, 502, 503, 504, 505, 599]
            .into_iter()
            .filter(|s| p.retry_on_status(StatusCode::from_u16(*s).unwrap()))
            .collect()
    }

    #[test]
    fn five_xx_retries_every_server_error_connect_failure_and_reset() {
        let p = policy("{retry_on: [5xx]}");
        assert_eq!(statuses(&p), [500, 501, 502, 503, 504, 505, 599]);
        assert!(p.retry_on_connect_failure());
        assert!(p.retry_on_reset());
        assert!(p.retry_on_per_try_timeout());
    }

    #[test]
    fn gateway_error_retries_502_503_504_connect_failure_and_reset() {
        let p = policy("{retry_on: [gateway-error]}");
        assert_eq!(statuses(&p), [502, 503, 504]);
        assert!(p.retry_on_connect_failure());
        assert!(p.retry_on_reset());
    }

    #[test]
    fn connect_failure_and_reset_are_separate_conditions() {
        let p = policy("{retry_on: [connect-failure]}");
        assert!(p.retry_on_connect_failure());
        assert!(!p.retry_on_reset());
        assert!(!p.retry_on_per_try_timeout());
        assert_eq!(statuses(&p), [] as [u16; 0]);

        let p = policy("{retry_on: [reset]}");
        assert!(!p.retry_on_connect_failure());
        assert!(p.retry_on_reset());
        assert_eq!(statuses(&p), [] as [u16; 0]);
    }

    #[test]
    fn retriable_status_codes_retry_only_the_listed_codes() {
        let p = policy("{retry_on: [retriable-status-codes], retriable_status_codes: [429, 503]}");
        assert_eq!(statuses(&p), [429, 503]);
        assert!(!p.retry_on_connect_failure());
        // Listed codes without the condition do nothing, as in Envoy.
        let p = policy("{retry_on: [reset], retriable_status_codes: [429]}");
        assert_eq!(statuses(&p), [] as [u16; 0]);
    }

    #[test]
    fn defaults_and_configured_fields_are_carried() {
        let p = policy("{retry_on: [5xx]}");
        assert_eq!(p.num_retries, 1);
        assert_eq!(p.base_backoff, Duration::from_millis(25));
        assert_eq!(p.max_backoff, Duration::from_millis(250));
        assert_eq!(p.per_try_timeout, None);
        assert_eq!(p.max_buffered_body_bytes, None);
        let p = policy(
            "{retry_on: [5xx], num_retries: 3, per_try_timeout: 2s, base_backoff: 10ms, max_backoff: 1s, max_buffered_body_bytes: 100}",
        );
        assert_eq!(p.num_retries, 3);
        assert_eq!(p.per_try_timeout, Some(Duration::from_secs(2)));
        assert_eq!(p.max_backoff, Duration::from_secs(1));
        assert_eq!(p.max_buffered_body_bytes, Some(100));
    }

    #[test]
    fn backoff_is_full_jitter_within_the_doubling_cap() {
        let p = policy("{retry_on: [5xx], base_backoff: 10ms, max_backoff: 50ms}");
        for (attempt, cap_ms) in [
            (0, 10),
            (1, 10),
            (2, 20),
            (3, 40),
            (4, 50),
            (40, 50),
            (u32::MAX, 50),
        ] {
            let cap = Duration::from_millis(cap_ms);
            let samples: Vec<Duration> = (0..2000).map(|_| p.backoff(attempt)).collect();
            assert!(samples.iter().all(|d| *d <= cap), "attempt {attempt}");
            // Full jitter: spread over the whole range, not clustered at the cap.
            assert!(samples.iter().any(|d| *d < cap / 4), "attempt {attempt}");
            assert!(
                samples.iter().any(|d| *d > cap * 3 / 4),
                "attempt {attempt}"
            );
        }
    }
}
