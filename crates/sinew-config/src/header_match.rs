//! A condition on one request header, as routes, faults and rate limits match them.

use serde::Deserialize;

/// A condition on one request header. Exactly one of the conditions is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    pub name: String,
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
    /// `true`: the header must be present; `false`: it must be absent.
    #[serde(default)]
    pub present: Option<bool>,
    /// Negate the condition.
    #[serde(default)]
    pub invert: bool,
}
