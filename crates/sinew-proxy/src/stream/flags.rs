//! Response flags: Envoy's short codes for why a response is what it is. They ride on the
//! response's extensions so the access log (and tests) can read them.

use std::fmt;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponseFlags(u32);

impl ResponseFlags {
    /// No route matched (NR).
    pub const NO_ROUTE: Self = Self(1 << 0);
    /// No healthy upstream endpoint (UH).
    pub const NO_HEALTHY_UPSTREAM: Self = Self(1 << 1);
    /// Upstream connection failure (UF).
    pub const UPSTREAM_CONNECT_FAILURE: Self = Self(1 << 2);
    /// Upstream request timeout (UT).
    pub const UPSTREAM_TIMEOUT: Self = Self(1 << 3);
    /// Upstream retry limit exceeded (URX).
    pub const RETRY_LIMIT_EXCEEDED: Self = Self(1 << 4);
    /// Upstream connection termination (UC).
    pub const UPSTREAM_CONNECTION_TERMINATION: Self = Self(1 << 5);
    /// Downstream connection termination (DC).
    pub const DOWNSTREAM_CONNECTION_TERMINATION: Self = Self(1 << 6);
    /// Upstream protocol error (UPE).
    pub const UPSTREAM_PROTOCOL_ERROR: Self = Self(1 << 7);
    /// Downstream protocol error: malformed request (DPE).
    pub const DOWNSTREAM_PROTOCOL_ERROR: Self = Self(1 << 8);
    /// Request body over the limit; Envoy has no code for it, Sinew uses its own (RBL).
    pub const REQUEST_BODY_TOO_LARGE: Self = Self(1 << 9);
    /// A circuit breaker turned the request away (UO).
    pub const UPSTREAM_OVERFLOW: Self = Self(1 << 10);
    /// Over a local or global rate limit (RL).
    pub const RATE_LIMITED: Self = Self(1 << 11);
    /// The global rate-limit service (Redis) failed and `failure_mode_deny` refused (RLSE).
    pub const RATE_LIMIT_SERVICE_ERROR: Self = Self(1 << 12);
    /// The request was aborted by fault injection (FI).
    pub const FAULT_INJECTED: Self = Self(1 << 13);
    /// The request was delayed by fault injection (DI).
    pub const DELAY_INJECTED: Self = Self(1 << 14);
    /// No bytes moved either way for the stream idle timeout (SI).
    pub const STREAM_IDLE_TIMEOUT: Self = Self(1 << 15);
    /// Denied by an authorization policy (RBAC, Envoy's code).
    pub const RBAC_DENIED: Self = Self(1 << 16);
    /// Refused by the overload manager (`stop_accepting_requests`; Envoy's OM).
    pub const OVERLOAD_MANAGER: Self = Self(1 << 17);

    const NAMES: [(Self, &'static str); 18] = [
        (Self::NO_ROUTE, "NR"),
        (Self::NO_HEALTHY_UPSTREAM, "UH"),
        (Self::UPSTREAM_CONNECT_FAILURE, "UF"),
        (Self::UPSTREAM_TIMEOUT, "UT"),
        (Self::RETRY_LIMIT_EXCEEDED, "URX"),
        (Self::UPSTREAM_CONNECTION_TERMINATION, "UC"),
        (Self::DOWNSTREAM_CONNECTION_TERMINATION, "DC"),
        (Self::UPSTREAM_PROTOCOL_ERROR, "UPE"),
        (Self::DOWNSTREAM_PROTOCOL_ERROR, "DPE"),
        (Self::REQUEST_BODY_TOO_LARGE, "RBL"),
        (Self::UPSTREAM_OVERFLOW, "UO"),
        (Self::RATE_LIMITED, "RL"),
        (Self::RATE_LIMIT_SERVICE_ERROR, "RLSE"),
        (Self::FAULT_INJECTED, "FI"),
        (Self::DELAY_INJECTED, "DI"),
        (Self::STREAM_IDLE_TIMEOUT, "SI"),
        (Self::RBAC_DENIED, "RBAC"),
        (Self::OVERLOAD_MANAGER, "OM"),
    ];

    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl std::ops::BitOr for ResponseFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl fmt::Display for ResponseFlags {
    /// Envoy's spelling: codes joined by commas, `-` when there are none.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        let mut first = true;
        for (flag, name) in Self::NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_envoy_short_codes() {
        assert_eq!(ResponseFlags::default().to_string(), "-");
        let f = ResponseFlags::UPSTREAM_CONNECT_FAILURE | ResponseFlags::RETRY_LIMIT_EXCEEDED;
        assert_eq!(f.to_string(), "UF,URX");
        let f = ResponseFlags::DELAY_INJECTED | ResponseFlags::FAULT_INJECTED;
        assert_eq!(f.to_string(), "FI,DI");
    }
}
