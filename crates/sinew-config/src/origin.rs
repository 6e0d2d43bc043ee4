//! Browser-origin policies, as Envoy's `cors` and `csrf` HTTP filters configure them: a
//! CORS policy on virtual hosts and routes, a CSRF policy on the listener with overrides
//! on virtual hosts and routes, and the string matcher their origin lists are made of.
//!
//! Shares of requests (`filter_enabled`, `shadow_enabled`) are plain percentages from 0 to
//! 100, as fault injection writes them; Envoy's `RuntimeFractionalPercent` maps to its
//! default value.

use serde::Deserialize;

use crate::ConfigError;

/// One string condition (Envoy's `StringMatcher`): exactly one of `exact`, `prefix`,
/// `suffix`, `contains` or `regex` (which must match the whole string).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StringMatch {
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub suffix: Option<String>,
    #[serde(default)]
    pub contains: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
    /// Compare without regard to ASCII case (not for `regex`, as in Envoy).
    #[serde(default)]
    pub ignore_case: bool,
}

impl StringMatch {
    pub(crate) fn check(&self, path: &str, errors: &mut Vec<ConfigError>) {
        let set = [
            self.exact.is_some(),
            self.prefix.is_some(),
            self.suffix.is_some(),
            self.contains.is_some(),
            self.regex.is_some(),
        ]
        .iter()
        .filter(|set| **set)
        .count();
        if set != 1 {
            errors.push(ConfigError::new(
                path,
                "set exactly one of exact, prefix, suffix, contains or regex",
            ));
        }
        if self.ignore_case && self.regex.is_some() {
            errors.push(ConfigError::new(
                format!("{path}.ignore_case"),
                "does not apply to regex (use (?i) in the expression)",
            ));
        }
    }
}

/// A CORS policy (Envoy's `CorsPolicy`). On a route, each field it leaves unset is taken
/// from its virtual host's policy, as Envoy merges them.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cors {
    /// Origins allowed (Envoy: `allow_origin_string_match`); a matcher that matches `*`
    /// allows every origin.
    #[serde(default)]
    pub allow_origin: Vec<StringMatch>,
    /// `Access-Control-Allow-Methods` of a preflight; `*` answers with the requested method.
    #[serde(default)]
    pub allow_methods: Vec<String>,
    /// `Access-Control-Allow-Headers` of a preflight; `*` answers with the requested headers.
    #[serde(default)]
    pub allow_headers: Vec<String>,
    /// `Access-Control-Expose-Headers` of an actual request's response.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// `Access-Control-Max-Age` of a preflight, in seconds.
    #[serde(default)]
    pub max_age: Option<u64>,
    #[serde(default)]
    pub allow_credentials: Option<bool>,
    /// Answer a preflight's `Access-Control-Request-Private-Network: true`.
    #[serde(default)]
    pub allow_private_network_access: Option<bool>,
    /// A preflight from an origin not allowed goes on to the upstream (default) rather
    /// than being answered without CORS headers.
    #[serde(default)]
    pub forward_not_matching_preflights: Option<bool>,
    /// Share of requests the policy applies to (default 100).
    #[serde(default)]
    pub filter_enabled: Option<f64>,
    /// Share of requests whose origin is checked without effect (default 0).
    #[serde(default)]
    pub shadow_enabled: Option<f64>,
}

impl Cors {
    pub(crate) fn check(&self, path: &str, errors: &mut Vec<ConfigError>) {
        for (i, m) in self.allow_origin.iter().enumerate() {
            m.check(&format!("{path}.allow_origin[{i}]"), errors);
        }
        let lists = [
            ("allow_methods", &self.allow_methods),
            ("allow_headers", &self.allow_headers),
            ("expose_headers", &self.expose_headers),
        ];
        for (field, list) in lists {
            for (i, item) in list.iter().enumerate() {
                if item.is_empty() || !item.bytes().all(crate::token::is_tchar) {
                    errors.push(ConfigError::new(
                        format!("{path}.{field}[{i}]"),
                        format!("{item:?} is not a method or header name"),
                    ));
                }
            }
        }
        check_percent(
            &format!("{path}.filter_enabled"),
            self.filter_enabled,
            errors,
        );
        check_percent(
            &format!("{path}.shadow_enabled"),
            self.shadow_enabled,
            errors,
        );
    }
}

/// A CSRF policy (Envoy's `CsrfPolicy`): a mutating request whose `Origin` (or, without
/// one, `Referer`) names another host than its own is refused with 403.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Csrf {
    /// Share of requests checked and refused (default 100).
    #[serde(default = "all")]
    pub filter_enabled: f64,
    /// Share of requests checked without effect (default 0).
    #[serde(default)]
    pub shadow_enabled: f64,
    /// Source origins (`host[:port]`) allowed besides the request's own host.
    #[serde(default)]
    pub additional_origins: Vec<StringMatch>,
}

fn all() -> f64 {
    100.0
}

impl Csrf {
    pub(crate) fn check(&self, path: &str, errors: &mut Vec<ConfigError>) {
        for (i, m) in self.additional_origins.iter().enumerate() {
            m.check(&format!("{path}.additional_origins[{i}]"), errors);
        }
        check_percent(
            &format!("{path}.filter_enabled"),
            Some(self.filter_enabled),
            errors,
        );
        check_percent(
            &format!("{path}.shadow_enabled"),
            Some(self.shadow_enabled),
            errors,
        );
    }
}

fn check_percent(path: &str, value: Option<f64>, errors: &mut Vec<ConfigError>) {
    if let Some(value) = value {
        if !(0.0..=100.0).contains(&value) {
            errors.push(ConfigError::new(
                path,
                format!("{value} is not a percentage from 0 to 100"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(yaml: &str) -> Vec<String> {
        let c: Cors = serde_yaml_ng::from_str(yaml).unwrap();
        let mut errors = Vec::new();
        c.check("cors", &mut errors);
        errors
            .into_iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect()
    }

    #[test]
    fn a_cors_policy_with_one_condition_per_origin_is_accepted() {
        let errors = cors(
            "{allow_origin: [{exact: 'https://a.example'}, {suffix: '.example', ignore_case: true}],
              allow_methods: [GET, POST], allow_headers: [x-token], max_age: 600,
              allow_credentials: true, filter_enabled: 100}",
        );
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn origin_matchers_need_exactly_one_condition_and_names_must_be_tokens() {
        let errors = cors(
            "{allow_origin: [{}, {exact: a, prefix: b}, {regex: '.*', ignore_case: true}],
              allow_headers: ['x token'], shadow_enabled: 101}",
        );
        let text = errors.join("\n");
        assert!(text.contains("cors.allow_origin[0]"), "{text}");
        assert!(text.contains("cors.allow_origin[1]"), "{text}");
        assert!(text.contains("cors.allow_origin[2].ignore_case"), "{text}");
        assert!(text.contains("cors.allow_headers[0]"), "{text}");
        assert!(text.contains("cors.shadow_enabled"), "{text}");
    }

    #[test]
    fn csrf_is_enabled_for_every_request_unless_told_otherwise() {
        let c: Csrf =
            serde_yaml_ng::from_str("{additional_origins: [{exact: a.example}]}").unwrap();
        assert_eq!((c.filter_enabled, c.shadow_enabled), (100.0, 0.0));
    }
}
