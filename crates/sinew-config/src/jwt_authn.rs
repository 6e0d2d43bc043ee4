//! JWT authentication of an HTTP listener's requests (`http.jwt_authn`): Envoy's
//! `envoy.filters.http.jwt_authn` config, spelled for Sinew's YAML, with Istio's
//! RequestAuthentication meaning when no `rules` are given.
//!
//! Providers say who issues tokens and where their keys are (a JWKS from a file, inline,
//! or fetched from a URL and cached); rules say which paths need which providers. Without
//! rules, a request that carries a token must carry a valid one from some provider, and
//! a request without one goes on unauthenticated: authorization policies decide.

use std::time::Duration;

use serde::Deserialize;

use crate::duration;
use crate::token::is_tchar;
use crate::ConfigError;

/// A listener's JWT authentication.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtAuthn {
    pub providers: Vec<JwtProvider>,
    /// The first rule whose `match` fits the request's path decides what it needs; a
    /// request no rule matches needs nothing. Without rules: Istio's semantics (above).
    #[serde(default)]
    pub rules: Vec<JwtRule>,
}

/// One token issuer and how its tokens are found, checked and passed on.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtProvider {
    pub name: String,
    /// The `iss` its tokens must carry; empty accepts any issuer.
    #[serde(default)]
    pub issuer: String,
    /// A token's `aud` (a string or a list) must name one of these; empty accepts any.
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default)]
    pub local_jwks: Option<LocalJwks>,
    #[serde(default)]
    pub remote_jwks: Option<RemoteJwks>,
    /// Headers a token is read from. With neither these nor `from_params`, as Envoy:
    /// `Authorization: Bearer <token>` and the `access_token` query parameter.
    #[serde(default)]
    pub from_headers: Vec<JwtHeader>,
    /// Query parameters a token is read from.
    #[serde(default)]
    pub from_params: Vec<String>,
    /// Keep the token in the request sent upstream; by default it is removed.
    #[serde(default)]
    pub forward: bool,
    /// Send the token's payload (base64url, as in the token) upstream in this header.
    #[serde(default)]
    pub forward_payload_header: Option<String>,
    /// Send claims upstream as headers.
    #[serde(default)]
    pub claim_to_headers: Vec<ClaimToHeader>,
    /// How far `exp`, `nbf` and `iat` may be off the proxy's clock.
    #[serde(default = "default_clock_skew")]
    pub clock_skew_seconds: u64,
}

fn default_clock_skew() -> u64 {
    60
}

/// A JWKS in the config: a file (read when the config is compiled) or inline text.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalJwks {
    #[serde(default)]
    pub filename: Option<String>,
    #[serde(default)]
    pub inline: Option<String>,
}

/// A JWKS fetched over HTTP or HTTPS and cached.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteJwks {
    /// `http://` or `https://` URL of the JWKS.
    pub uri: String,
    /// How long a fetched key set is used before it is fetched again.
    #[serde(
        default = "default_cache_duration",
        deserialize_with = "duration::deserialize"
    )]
    pub cache_duration: Duration,
    /// Longest one fetch may take (connect, request and body).
    #[serde(
        default = "default_fetch_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub timeout: Duration,
    /// PEM file of the CAs an `https` server's certificate is checked against (this
    /// proxy reads no system trust store, so `https` needs it).
    #[serde(default)]
    pub ca: Option<String>,
}

fn default_cache_duration() -> Duration {
    Duration::from_secs(300)
}
fn default_fetch_timeout() -> Duration {
    Duration::from_secs(5)
}

/// A header a token is read from: the header's value after `value_prefix` (matched
/// without regard to case, as an HTTP auth scheme is).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtHeader {
    pub name: String,
    #[serde(default)]
    pub value_prefix: String,
}

/// Send the value of claim `claim_name` (nested claims as `a.b`) upstream in
/// `header_name`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimToHeader {
    pub header_name: String,
    pub claim_name: String,
}

/// Which requests need which tokens.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtRule {
    #[serde(rename = "match")]
    pub match_: JwtRuleMatch,
    /// What the matched requests need; none: nothing (the path is exempt).
    #[serde(default)]
    pub requires: Option<JwtRequirement>,
}

/// A path condition: `prefix` or exact `path` (without the query).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtRuleMatch {
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
}

/// Envoy's `JwtRequirement`: exactly one field set.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtRequirement {
    /// A valid token from this provider.
    #[serde(default)]
    pub provider_name: Option<String>,
    /// Any one of these is enough.
    #[serde(default)]
    pub requires_any: Option<Vec<JwtRequirement>>,
    /// All of these are needed.
    #[serde(default)]
    pub requires_all: Option<Vec<JwtRequirement>>,
    /// No token is fine; a token that is there must be valid (for any provider).
    #[serde(default)]
    pub allow_missing: Option<bool>,
    /// No token, or one that fails, is fine (a valid one still sets the claims).
    #[serde(default)]
    pub allow_missing_or_failed: Option<bool>,
}

/// Checks a listener's `jwt_authn` at `path`.
pub(crate) fn check(path: &str, j: &JwtAuthn, errors: &mut Vec<ConfigError>) {
    let mut err = |p: String, m: String| errors.push(ConfigError::new(p, m));
    if j.providers.is_empty() {
        err(
            format!("{path}.providers"),
            "must list at least one provider".into(),
        );
    }
    let mut names = std::collections::HashMap::new();
    for (i, p) in j.providers.iter().enumerate() {
        let pp = format!("{path}.providers[{i}]");
        if p.name.is_empty() {
            err(format!("{pp}.name"), "must not be empty".into());
        } else if let Some(first) = names.insert(p.name.as_str(), i) {
            err(
                format!("{pp}.name"),
                format!("name {:?} is already used by providers[{first}]", p.name),
            );
        }
        match (&p.local_jwks, &p.remote_jwks) {
            (Some(_), Some(_)) => err(
                pp.clone(),
                "set either `local_jwks` or `remote_jwks`, not both".into(),
            ),
            (None, None) => err(
                pp.clone(),
                "set one of `local_jwks` or `remote_jwks`".into(),
            ),
            (Some(local), None) => {
                if local.filename.is_some() == local.inline.is_some() {
                    err(
                        format!("{pp}.local_jwks"),
                        "set exactly one of `filename` and `inline`".into(),
                    );
                }
            }
            (None, Some(remote)) => {
                let rp = format!("{pp}.remote_jwks");
                match remote.uri.split_once("://") {
                    Some(("http", rest)) | Some(("https", rest)) if !rest.is_empty() => {
                        if remote.uri.starts_with("https://") && remote.ca.is_none() {
                            err(
                                format!("{rp}.ca"),
                                "an https uri needs `ca`: a PEM file of the CAs to trust".into(),
                            );
                        }
                    }
                    _ => err(
                        format!("{rp}.uri"),
                        format!("{:?} is not an http:// or https:// URL", remote.uri),
                    ),
                }
                if remote.cache_duration.is_zero() {
                    err(format!("{rp}.cache_duration"), "must be positive".into());
                }
                if remote.timeout.is_zero() {
                    err(format!("{rp}.timeout"), "must be positive".into());
                }
            }
        }
        let valid_name = |n: &str| !n.is_empty() && n.bytes().all(is_tchar);
        for (k, h) in p.from_headers.iter().enumerate() {
            if !valid_name(&h.name) {
                err(
                    format!("{pp}.from_headers[{k}].name"),
                    format!("{:?} is not a valid header name", h.name),
                );
            }
        }
        for (k, param) in p.from_params.iter().enumerate() {
            if param.is_empty() || param.contains(['&', '=', '#']) {
                err(
                    format!("{pp}.from_params[{k}]"),
                    format!("{param:?} is not a query parameter name"),
                );
            }
        }
        if let Some(h) = &p.forward_payload_header {
            if !valid_name(h) {
                err(
                    format!("{pp}.forward_payload_header"),
                    format!("{h:?} is not a valid header name"),
                );
            }
        }
        for (k, c) in p.claim_to_headers.iter().enumerate() {
            if !valid_name(&c.header_name) {
                err(
                    format!("{pp}.claim_to_headers[{k}].header_name"),
                    format!("{:?} is not a valid header name", c.header_name),
                );
            }
            if c.claim_name.is_empty() || c.claim_name.split('.').any(str::is_empty) {
                err(
                    format!("{pp}.claim_to_headers[{k}].claim_name"),
                    format!("{:?} is not a claim name (nested as a.b)", c.claim_name),
                );
            }
        }
    }
    for (i, r) in j.rules.iter().enumerate() {
        let rp = format!("{path}.rules[{i}]");
        match (&r.match_.prefix, &r.match_.path) {
            (Some(_), Some(_)) => err(
                format!("{rp}.match"),
                "set either `prefix` or `path`, not both".into(),
            ),
            (None, None) => err(
                format!("{rp}.match"),
                "set one of `prefix` or `path`".into(),
            ),
            (Some(v), None) | (None, Some(v)) => {
                if !v.starts_with('/') {
                    let field = if r.match_.prefix.is_some() {
                        "prefix"
                    } else {
                        "path"
                    };
                    err(format!("{rp}.match.{field}"), "must start with `/`".into());
                }
            }
        }
        if let Some(req) = &r.requires {
            check_requirement(&format!("{rp}.requires"), req, &names, &mut err);
        }
    }
}

fn check_requirement(
    path: &str,
    r: &JwtRequirement,
    providers: &std::collections::HashMap<&str, usize>,
    err: &mut dyn FnMut(String, String),
) {
    let set = [
        r.provider_name.is_some(),
        r.requires_any.is_some(),
        r.requires_all.is_some(),
        r.allow_missing.is_some(),
        r.allow_missing_or_failed.is_some(),
    ]
    .iter()
    .filter(|s| **s)
    .count();
    if set != 1 {
        err(
            path.to_string(),
            "set exactly one of `provider_name`, `requires_any`, `requires_all`, `allow_missing` and `allow_missing_or_failed`".into(),
        );
    }
    if let Some(name) = &r.provider_name {
        if !providers.contains_key(name.as_str()) {
            err(
                format!("{path}.provider_name"),
                format!("no provider named {name:?}"),
            );
        }
    }
    for (field, flag) in [
        ("allow_missing", r.allow_missing),
        ("allow_missing_or_failed", r.allow_missing_or_failed),
    ] {
        if flag == Some(false) {
            err(
                format!("{path}.{field}"),
                "only `true` means anything here; remove it".into(),
            );
        }
    }
    for (field, list) in [
        ("requires_any", &r.requires_any),
        ("requires_all", &r.requires_all),
    ] {
        if let Some(list) = list {
            if list.len() < 2 {
                err(
                    format!("{path}.{field}"),
                    "must list at least two requirements".into(),
                );
            }
            for (i, child) in list.iter().enumerate() {
                check_requirement(&format!("{path}.{field}[{i}]"), child, providers, err);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::load_str;

    fn config(jwt: &str) -> String {
        format!(
            "
listeners:
  - name: web
    address: 127.0.0.1:0
    http:
      jwt_authn:
{jwt}
      virtual_hosts:
        - name: all
          domains: ['*']
          routes:
            - match: {{prefix: /}}
              cluster: backend
clusters:
  - name: backend
    endpoints: [{{address: 127.0.0.1:9000}}]
"
        )
    }

    fn errors(yaml: &str) -> String {
        match load_str("t.yaml", yaml) {
            Ok(_) => String::new(),
            Err(d) => d.to_string(),
        }
    }

    #[test]
    fn accepts_every_field_with_defaults() {
        let yaml = config(
            r#"        providers:
          - name: idp
            issuer: https://idp.example
            audiences: [api]
            remote_jwks: {uri: 'http://127.0.0.1:8080/jwks', cache_duration: 10m, timeout: 2s}
            from_headers: [{name: x-jwt, value_prefix: ''}]
            from_params: [token]
            forward: true
            forward_payload_header: x-jwt-payload
            claim_to_headers: [{header_name: x-sub, claim_name: sub}, {header_name: x-role, claim_name: realm.role}]
            clock_skew_seconds: 30
          - name: local
            local_jwks: {inline: '{"keys":[]}'}
        rules:
          - match: {prefix: /public}
          - match: {path: /admin}
            requires: {provider_name: idp}
          - match: {prefix: /}
            requires: {requires_any: [{provider_name: idp}, {provider_name: local}, {allow_missing: true}]}"#,
        );
        let loaded = load_str("t.yaml", &yaml).unwrap_or_else(|d| panic!("{d}"));
        let jwt = loaded.config.listeners[0]
            .http
            .as_ref()
            .unwrap()
            .jwt_authn
            .as_ref()
            .unwrap();
        let remote = jwt.providers[0].remote_jwks.as_ref().unwrap();
        assert_eq!(remote.cache_duration, std::time::Duration::from_secs(600));
        assert_eq!(jwt.providers[1].clock_skew_seconds, 60);
        assert!(!jwt.providers[1].forward);
        assert!(jwt.rules[0].requires.is_none());
        assert_eq!(
            jwt.rules[2]
                .requires
                .as_ref()
                .unwrap()
                .requires_any
                .as_ref()
                .unwrap()[2]
                .allow_missing,
            Some(true)
        );
    }

    #[test]
    fn rejects_bad_providers_and_rules_with_their_paths() {
        let yaml = config(
            r#"        providers:
          - name: a
            remote_jwks: {uri: 'ftp://x/jwks', cache_duration: 0, timeout: 0}
            from_headers: [{name: 'bad header'}]
            from_params: ['a=b']
            claim_to_headers: [{header_name: x-ok, claim_name: 'a..b'}]
          - name: a
            local_jwks: {filename: /f, inline: '{}'}
          - name: b
            remote_jwks: {uri: 'https://idp/jwks'}
          - name: c
        rules:
          - match: {prefix: api}
            requires: {provider_name: nobody}
          - match: {}
            requires: {requires_any: [{provider_name: a}]}
          - match: {path: /x}
            requires: {provider_name: a, allow_missing: true}"#,
        );
        let e = errors(&yaml);
        let p = "listeners[0].http.jwt_authn";
        for expected in [
            format!("{p}.providers[0].remote_jwks.uri: \"ftp://x/jwks\" is not an http:// or https:// URL"),
            format!("{p}.providers[0].remote_jwks.cache_duration: must be positive"),
            format!("{p}.providers[0].remote_jwks.timeout: must be positive"),
            format!("{p}.providers[0].from_headers[0].name: \"bad header\" is not a valid header name"),
            format!("{p}.providers[0].from_params[0]: \"a=b\" is not a query parameter name"),
            format!("{p}.providers[0].claim_to_headers[0].claim_name: \"a..b\" is not a claim name"),
            format!("{p}.providers[1].name: name \"a\" is already used by providers[0]"),
            format!("{p}.providers[1].local_jwks: set exactly one of `filename` and `inline`"),
            format!("{p}.providers[2].remote_jwks.ca: an https uri needs `ca`"),
            format!("{p}.providers[3]: set one of `local_jwks` or `remote_jwks`"),
            format!("{p}.rules[0].match.prefix: must start with `/`"),
            format!("{p}.rules[0].requires.provider_name: no provider named \"nobody\""),
            format!("{p}.rules[1].match: set one of `prefix` or `path`"),
            format!("{p}.rules[1].requires.requires_any: must list at least two requirements"),
            format!("{p}.rules[2].requires: set exactly one of"),
        ] {
            assert!(e.contains(&expected), "missing {expected:?} in:\n{e}");
        }
        // Each error has the position of its field.
        assert!(e.contains("t.yaml:9:"), "{e}");
    }

    #[test]
    fn rejects_unknown_fields_at_their_position() {
        let e = errors(&config(
            "        providers:\n          - name: a\n            issuers: x\n            local_jwks: {inline: '{}'}",
        ));
        assert!(e.contains("t.yaml:9:13"), "{e}");
        assert!(e.contains("unknown field `issuers`"), "{e}");
    }
}
