//! Redirect responses: building the `Location` from the request and the configured parts,
//! following Envoy (unset parts keep the request's own).

use http::{HeaderValue, StatusCode};
use sinew_config::model;

use crate::Errors;

/// A compiled redirect action.
#[derive(Debug, Clone)]
pub struct Redirect {
    pub code: StatusCode,
    scheme: Option<Box<str>>,
    host: Option<Box<str>>,
    port: Option<u16>,
    path: NewPath,
    strip_query: bool,
}

#[derive(Debug, Clone)]
enum NewPath {
    Keep,
    Replace(Box<str>),
    /// The route's matched prefix, and what replaces it.
    Prefix {
        matched: Box<str>,
        with: Box<str>,
    },
}

impl Redirect {
    /// `p` is the route's path; `matched_prefix` its `match.prefix` (validation guarantees
    /// one for `prefix_rewrite`).
    pub(crate) fn compile(
        r: &model::Redirect,
        matched_prefix: Option<&str>,
        p: &str,
        errors: &mut Errors,
    ) -> Option<Redirect> {
        let rp = format!("{p}.redirect");
        let mut ok = true;
        let code = StatusCode::from_u16(r.code)
            .ok()
            .filter(StatusCode::is_redirection);
        if code.is_none() {
            errors.push(
                format!("{rp}.code"),
                format!("{} is not a redirect code", r.code),
            );
        }
        // Everything ends up in a Location header, so it must be a valid header value.
        for (field, value) in [
            ("scheme", &r.scheme),
            ("host", &r.host),
            ("path", &r.path),
            ("prefix_rewrite", &r.prefix_rewrite),
        ] {
            if let Some(v) = value {
                ok &= errors.header_value(&format!("{rp}.{field}"), v).is_some();
            }
        }
        let path = match (&r.path, &r.prefix_rewrite, matched_prefix) {
            (Some(path), _, _) => NewPath::Replace(path.as_str().into()),
            (None, Some(with), Some(matched)) => NewPath::Prefix {
                matched: matched.into(),
                with: with.as_str().into(),
            },
            _ => NewPath::Keep,
        };
        Some(Redirect {
            code: code.filter(|_| ok)?,
            scheme: r.scheme.as_deref().map(|s| s.to_ascii_lowercase().into()),
            host: r.host.as_deref().map(Into::into),
            port: r.port,
            path,
            strip_query: r.strip_query,
        })
    }

    /// The `Location` for a request with this `scheme` (`http` or `https`), `host` (the Host
    /// header or `:authority`, port included), `path` (without query) and `query`.
    ///
    /// A configured port that is the new scheme's default is left out. A request's own port is
    /// kept only while scheme and host stay the same: it belongs to them (plain HTTP on 8080
    /// says nothing about where HTTPS listens).
    pub fn location(
        &self,
        scheme: &str,
        host: &str,
        path: &str,
        query: Option<&str>,
    ) -> HeaderValue {
        let new_scheme = self.scheme.as_deref().unwrap_or(scheme);
        let (request_host, request_port) = split_port(host);
        let scheme_changed = !new_scheme.eq_ignore_ascii_case(scheme);
        let port = match self.port {
            Some(p) if Some(p) == default_port(new_scheme) => None,
            Some(p) => Some(PortText::Number(p)),
            None if self.host.is_some() || scheme_changed => None,
            None => request_port.map(PortText::Text),
        };

        let mut out = String::with_capacity(new_scheme.len() + host.len() + path.len() + 16);
        out.push_str(new_scheme);
        out.push_str("://");
        out.push_str(self.host.as_deref().unwrap_or(request_host));
        match port {
            Some(PortText::Number(p)) => {
                out.push(':');
                out.push_str(&p.to_string());
            }
            Some(PortText::Text(p)) => {
                out.push(':');
                out.push_str(p);
            }
            None => {}
        }
        let mut query = query.filter(|_| !self.strip_query);
        match &self.path {
            NewPath::Keep => out.push_str(path),
            NewPath::Replace(new) => {
                // Envoy: a query in the configured path replaces the request's.
                if new.contains('?') {
                    query = None;
                }
                out.push_str(new);
            }
            NewPath::Prefix { matched, with } => match path.strip_prefix(&**matched) {
                Some(rest) => {
                    out.push_str(with);
                    out.push_str(rest);
                }
                None => out.push_str(path),
            },
        }
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        header_value(out)
    }
}

enum PortText<'a> {
    Number(u16),
    Text(&'a str),
}

fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("http") {
        Some(80)
    } else if scheme.eq_ignore_ascii_case("https") {
        Some(443)
    } else {
        None
    }
}

/// `a.com:8080` → (`a.com`, `8080`); `[::1]:8080` → (`[::1]`, `8080`); a bare IPv6 address has
/// no port.
fn split_port(host: &str) -> (&str, Option<&str>) {
    let colon = if host.starts_with('[') {
        host.find("]:").map(|i| i + 1)
    } else {
        host.rfind(':').filter(|&i| !host[..i].contains(':'))
    };
    match colon {
        Some(i) => (&host[..i], Some(&host[i + 1..])),
        None => (host, None),
    }
}

/// Control characters cannot come from `http`'s own parsed paths and hosts, but a location
/// must never fail to build, so any that do are percent-encoded.
fn header_value(location: String) -> HeaderValue {
    if let Ok(v) = HeaderValue::try_from(location.as_str()) {
        return v;
    }
    let mut clean = String::with_capacity(location.len() + 8);
    for c in location.chars() {
        if c.is_ascii_control() {
            clean.push_str(&format!("%{:02X}", c as u8));
        } else {
            clean.push(c);
        }
    }
    HeaderValue::try_from(clean).unwrap_or_else(|_| HeaderValue::from_static("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{errors, first_route, one_route};
    use crate::Action;

    fn redirect(spec: &str, prefix: &str) -> Redirect {
        let t = one_route(&format!(
            "{{match: {{prefix: '{prefix}'}}, redirect: {spec}}}"
        ));
        match &first_route(&t).action {
            Action::Redirect(r) => r.clone(),
            other => panic!("{other:?}"),
        }
    }

    fn location(spec: &str, scheme: &str, host: &str, path: &str, query: Option<&str>) -> String {
        redirect(spec, "/")
            .location(scheme, host, path, query)
            .to_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn unset_parts_keep_the_request_s_own_and_code_defaults_to_301() {
        let r = redirect("{}", "/");
        assert_eq!(r.code, StatusCode::MOVED_PERMANENTLY);
        assert_eq!(
            r.location("http", "a.com:8080", "/x", Some("q=1")),
            "http://a.com:8080/x?q=1"
        );
    }

    #[test]
    fn https_upgrade_drops_the_request_port() {
        let spec = "{scheme: https}";
        assert_eq!(
            location(spec, "http", "a.com", "/x", None),
            "https://a.com/x"
        );
        assert_eq!(
            location(spec, "http", "a.com:80", "/x", None),
            "https://a.com/x"
        );
        assert_eq!(
            location(spec, "http", "a.com:8080", "/", None),
            "https://a.com/"
        );
        assert_eq!(
            location(spec, "http", "[::1]:8080", "/", None),
            "https://[::1]/"
        );
        // Already https: nothing changes, the port stays.
        assert_eq!(
            location(spec, "https", "a.com:8443", "/", None),
            "https://a.com:8443/"
        );
    }

    #[test]
    fn configured_port_is_used_unless_it_is_the_scheme_default() {
        assert_eq!(
            location("{scheme: https, port: 8443}", "http", "a.com:80", "/", None),
            "https://a.com:8443/"
        );
        assert_eq!(
            location("{scheme: https, port: 443}", "http", "a.com:80", "/", None),
            "https://a.com/"
        );
        assert_eq!(
            location("{port: 9000}", "http", "[::1]:80", "/", None),
            "http://[::1]:9000/"
        );
    }

    #[test]
    fn host_redirect_replaces_host_and_request_port() {
        assert_eq!(
            location("{host: b.com}", "http", "a.com:8080", "/p", Some("x")),
            "http://b.com/p?x"
        );
        assert_eq!(
            location("{host: b.com, port: 81}", "http", "a.com:8080", "/p", None),
            "http://b.com:81/p"
        );
    }

    #[test]
    fn path_replaces_the_whole_path_and_keeps_the_query() {
        let spec = "{path: /new}";
        assert_eq!(
            location(spec, "http", "a", "/old/x", Some("q")),
            "http://a/new?q"
        );
        // A query in the configured path wins over the request's.
        assert_eq!(
            location("{path: '/new?src=old'}", "http", "a", "/old", Some("q")),
            "http://a/new?src=old"
        );
    }

    #[test]
    fn prefix_rewrite_replaces_the_matched_prefix() {
        let r = redirect("{prefix_rewrite: /v2/}", "/v1/");
        assert_eq!(
            r.location("https", "a", "/v1/users/7", Some("x=1")),
            "https://a/v2/users/7?x=1"
        );
    }

    #[test]
    fn strip_query_drops_the_query() {
        assert_eq!(
            location("{strip_query: true}", "http", "a", "/p", Some("secret=1")),
            "http://a/p"
        );
    }

    #[test]
    fn codes_are_kept() {
        for code in [301, 302, 303, 307, 308] {
            let r = redirect(&format!("{{code: {code}}}"), "/");
            assert_eq!(r.code.as_u16(), code);
        }
    }

    #[test]
    fn locations_with_control_characters_are_escaped_not_rejected() {
        let r = redirect("{}", "/");
        assert_eq!(r.location("http", "a", "/x\u{1}y", None), "http://a/x%01y");
    }

    #[test]
    fn redirect_parts_http_rejects_are_reported() {
        let errs = errors(
            "[{name: v, domains: ['*'], routes: [{match: {}, redirect: {host: \"a\\x7fb\"}}]}]",
        );
        assert_eq!(
            errs[0].path,
            "listeners[0].http.virtual_hosts[0].routes[0].redirect.host"
        );
    }
}
