//! Sinew's route table: the virtual hosts of one HTTP listener (or route configuration),
//! compiled once from the config model into matchers, header edits and actions, then shared
//! read-only by every request.
//!
//! Compiling is where config errors that need real parsing show up (regexes, header names and
//! values that `http` rejects); they are all collected and reported with their field paths, in
//! the same form as `sinew-config`'s own validation. Matching itself never fails and does not
//! allocate on the common path (prefix/exact path, methods, exact headers).

mod action;
mod fault;
mod hash;
mod headers;
mod matcher;
mod mirror;
mod percentage;
mod redirect;
mod retry;
mod rewrite;
mod route;
mod vhost;

#[cfg(test)]
mod test_util;

use std::collections::BTreeMap;

use sinew_config::ConfigError;

pub use action::{Action, WeightedTargets};
pub use fault::{Abort, FaultPolicy, Injection};
pub use headers::HeaderOps;
pub use matcher::HeaderMatchers;
pub use mirror::{MirrorPolicy, MirrorSlot, MirrorState};
pub use percentage::Percentage;
pub use redirect::Redirect;
pub use retry::RetryPolicy;
pub use route::Route;
pub use route::{upgrade_list, UpgradeList};
pub use vhost::{RouteTable, VirtualHost};

/// Where a cluster action sends traffic: an index chosen by the caller's resolver (a cluster and subset).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target(pub usize);

/// The parts of a request that routing looks at, borrowed from wherever the proxy keeps them.
#[derive(Clone, Copy, Debug)]
pub struct RequestView<'a> {
    pub method: &'a http::Method,
    /// The path without the query string.
    pub path: &'a str,
    /// The query string without the `?`.
    pub query: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
}

/// How compiling asks for the target of a cluster (and subset labels).
pub(crate) type Resolver<'a> = dyn FnMut(&str, &BTreeMap<String, String>) -> Target + 'a;

/// Every error found while compiling, so that a user fixes a config in one pass.
#[derive(Default)]
pub(crate) struct Errors(Vec<ConfigError>);

impl Errors {
    pub(crate) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError::new(path, message));
    }

    /// Compiles a regex as written, reporting a failure at `path`.
    pub(crate) fn regex(&mut self, path: &str, pattern: &str) -> Option<regex::Regex> {
        match regex::Regex::new(pattern) {
            Ok(r) => Some(r),
            Err(e) => {
                // The regex crate's message spans lines (pattern, caret, reason), but a
                // diagnostic is one `file:line:col: path: message` line: keep the reason
                // and quote the pattern.
                let text = e.to_string();
                let reason = text
                    .lines()
                    .rev()
                    .find_map(|l| l.trim().strip_prefix("error: "))
                    .unwrap_or_else(|| text.lines().next().unwrap_or("").trim());
                self.push(
                    path,
                    format!("regex does not compile: {reason} in {pattern:?}"),
                );
                None
            }
        }
    }

    /// Compiles a regex that must match a whole value. The pattern is first compiled as
    /// written so that an error message shows the user's pattern, not our anchored wrapper.
    pub(crate) fn whole_regex(&mut self, path: &str, pattern: &str) -> Option<regex::Regex> {
        self.regex(path, pattern)?;
        self.regex(path, &format!("^(?:{pattern})$"))
    }

    /// The byte flavour of [`Errors::whole_regex`], for header values that need not be UTF-8.
    pub(crate) fn whole_bytes_regex(
        &mut self,
        path: &str,
        pattern: &str,
    ) -> Option<regex::bytes::Regex> {
        self.regex(path, pattern)?;
        match regex::bytes::Regex::new(&format!("^(?:{pattern})$")) {
            Ok(r) => Some(r),
            Err(e) => {
                self.push(path, format!("regex does not compile: {e}"));
                None
            }
        }
    }

    pub(crate) fn header_name(&mut self, path: &str, name: &str) -> Option<http::HeaderName> {
        match http::HeaderName::from_bytes(name.as_bytes()) {
            Ok(n) => Some(n),
            Err(_) => {
                self.push(path, format!("{name:?} is not a valid header name"));
                None
            }
        }
    }

    pub(crate) fn header_value(&mut self, path: &str, value: &str) -> Option<http::HeaderValue> {
        match http::HeaderValue::from_str(value) {
            Ok(v) => Some(v),
            Err(_) => {
                self.push(path, format!("{value:?} is not a valid header value"));
                None
            }
        }
    }

    pub(crate) fn into_result<T>(self, value: Option<T>) -> Result<T, Vec<ConfigError>> {
        match value {
            Some(v) if self.0.is_empty() => Ok(v),
            _ => Err(self.0),
        }
    }
}

// The proxy shares one table between all its worker threads.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<RouteTable>();
};
