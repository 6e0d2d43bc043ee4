//! A compiled route: its matcher, action and everything applied to the requests it takes.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use sinew_config::model;

use crate::action::Action;
use crate::fault::FaultPolicy;
use crate::hash::{self, HashPolicy};
use crate::headers::HeaderOps;
use crate::matcher::RouteMatcher;
use crate::mirror::MirrorPolicy;
use crate::retry::RetryPolicy;
use crate::rewrite::PathRewrite;
use crate::{Errors, Resolver};

#[derive(Debug)]
pub struct Route {
    /// The configured name, or `<vhost>/<index>`.
    pub name: Arc<str>,
    /// The route's position among all the routes of its table (0, 1, ... across virtual
    /// hosts), so the data plane can keep per-route state in a plain array.
    pub id: usize,
    pub action: Action,
    /// None = use listener default; Some(ZERO) = disabled.
    pub timeout: Option<Duration>,
    /// The stream idle timeout for this route: None = the listener's; Some(ZERO) = off.
    pub idle_timeout: Option<Duration>,
    pub retry: Option<RetryPolicy>,
    /// Applied to requests taking this route, before the virtual host's.
    pub request_headers: HeaderOps,
    /// Applied to responses of this route, before the virtual host's.
    pub response_headers: HeaderOps,
    /// Delays and aborts injected for chaos testing; None when not configured.
    pub fault: Option<Box<FaultPolicy>>,
    /// Where copies of requests go; empty when not configured.
    pub mirrors: Box<[MirrorPolicy]>,
    /// Upgrade types (lower case) this route turns on or off.
    pub upgrades: UpgradeList,
    path_rewrite: Option<PathRewrite>,
    host_rewrite: Option<http::HeaderValue>,
    hash_policy: Box<[HashPolicy]>,
}

/// Upgrade types (lower case) and whether each is on.
pub type UpgradeList = Box<[(Box<str>, bool)]>;

/// Upgrade types and their switch, with names in lower case for matching an `Upgrade`
/// header in any case.
pub fn upgrade_list(upgrades: &std::collections::BTreeMap<String, bool>) -> UpgradeList {
    upgrades
        .iter()
        .map(|(kind, on)| (kind.to_ascii_lowercase().into_boxed_str(), *on))
        .collect()
}

impl Route {
    /// `p` is the route's config path. Every part is compiled even after one fails, so that
    /// all errors are reported. The matcher is returned apart from the route because the
    /// virtual host keeps matchers in their own array (see [`crate::VirtualHost`]).
    pub(crate) fn compile(
        r: &model::Route,
        name: String,
        p: &str,
        errors: &mut Errors,
        resolve: &mut Resolver<'_>,
    ) -> Option<(RouteMatcher, Route)> {
        let matcher = RouteMatcher::compile(&r.match_, p, errors);
        let prefix = r.match_.prefix.as_deref();
        let action = Action::compile(r, prefix, p, errors, resolve);
        let (path_rewrite, host_rewrite) = match &r.rewrite {
            Some(rw) => (
                PathRewrite::compile(rw, prefix, p, errors),
                match &rw.host {
                    Some(h) => errors
                        .header_value(&format!("{p}.rewrite.host"), h)
                        .map(Some)
                        .ok_or(()),
                    None => Ok(None),
                },
            ),
            None => (Ok(None), Ok(None)),
        };
        let hash_policy = HashPolicy::compile(&r.hash_policy, p, errors);
        let request_headers =
            HeaderOps::compile(&r.request_headers, &format!("{p}.request_headers"), errors);
        let response_headers = HeaderOps::compile(
            &r.response_headers,
            &format!("{p}.response_headers"),
            errors,
        );
        let fault = match &r.fault {
            Some(f) => FaultPolicy::compile(f, &format!("{p}.fault"), errors)
                .map(|f| Some(Box::new(f)))
                .ok_or(()),
            None => Ok(None),
        };
        let mirrors = r
            .request_mirror_policies
            .iter()
            .map(|m| MirrorPolicy::compile(m, resolve))
            .collect();
        let route = Route {
            name: name.into(),
            id: 0,
            action: action?,
            timeout: r.timeout,
            idle_timeout: r.idle_timeout,
            retry: r.retry.as_ref().map(RetryPolicy::compile),
            request_headers: request_headers?,
            response_headers: response_headers?,
            fault: fault.ok()?,
            mirrors,
            upgrades: upgrade_list(&r.upgrades),
            path_rewrite: path_rewrite.ok()?,
            host_rewrite: host_rewrite.ok()?,
            hash_policy: hash_policy?,
        };
        Some((matcher?, route))
    }

    /// New path-and-query after prefix or regex rewrite, or None if the route does not rewrite the path. Query string is kept.
    pub fn rewrite_path(&self, path: &str, query: Option<&str>) -> Option<String> {
        let mut out = self.path_rewrite.as_ref()?.apply(path)?;
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        Some(out)
    }

    /// The Host / `:authority` to send upstream instead of the client's.
    pub fn host_rewrite(&self) -> Option<&http::HeaderValue> {
        self.host_rewrite.as_ref()
    }

    /// Hash for ring-hash/maglev from the first hash policy that yields a key (header value, cookie value from the Cookie header, or the source IP's bytes), using sinew_balance::hash_key. None if no policy or none yields a key.
    pub fn hash(&self, headers: &http::HeaderMap, source_ip: IpAddr) -> Option<u64> {
        hash::hash(&self.hash_policy, headers, source_ip)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::test_util::{errors, first_route, one_route, table};

    #[test]
    fn routes_are_named_by_config_or_by_vhost_and_index() {
        let t = table(
            "[{name: web, domains: ['*'], routes: [
                {name: api, match: {prefix: /api}, cluster: a},
                {match: {}, cluster: b}]}]",
        );
        let names: Vec<&str> = t.virtual_hosts()[0]
            .routes()
            .iter()
            .map(|r| &*r.name)
            .collect();
        assert_eq!(names, ["api", "web/1"]);
    }

    #[test]
    fn timeouts_distinguish_unset_from_disabled() {
        let t = one_route("{match: {}, cluster: a}");
        assert_eq!(first_route(&t).timeout, None);
        let t = one_route("{match: {}, cluster: a, timeout: 0}");
        assert_eq!(first_route(&t).timeout, Some(Duration::ZERO));
        let t = one_route("{match: {}, cluster: a, timeout: 1.5s}");
        assert_eq!(first_route(&t).timeout, Some(Duration::from_millis(1500)));
        assert!(first_route(&t).retry.is_none());
    }

    #[test]
    fn every_compile_error_is_reported_with_its_exact_path() {
        let errs = errors(
            "[{name: v0, domains: [a.com], routes: [{match: {}, cluster: a}]},
              {name: v1, domains: ['*'], routes: [
                {match: {prefix: /}, cluster: a},
                {match: {prefix: /}, cluster: a},
                {match: {path_regex: '/(unclosed', headers: [{name: x, regex: '[z-a]'}], query: [{name: q, regex: '*'}]}, cluster: a}]}]",
        );
        let got: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        let p = "listeners[0].http.virtual_hosts[1].routes[2].match";
        assert_eq!(
            got,
            [
                format!("{p}.path_regex"),
                format!("{p}.headers[0].regex"),
                format!("{p}.query[0].regex"),
            ]
        );
        for e in &errs {
            assert!(
                e.message.starts_with("regex does not compile: "),
                "{}",
                e.message
            );
        }
        // The message shows the user's pattern, not the anchored wrapper.
        assert!(
            errs[0].message.contains("/(unclosed"),
            "{}",
            errs[0].message
        );
        assert!(!errs[0].message.contains("^(?:"), "{}", errs[0].message);
    }

    #[test]
    fn errors_across_routes_and_virtual_hosts_are_all_collected() {
        let errs = errors(
            "[{name: v0, domains: [a.com], routes: [{match: {path_regex: '('}, cluster: a}]},
              {name: v1, domains: ['*'], routes: [
                {match: {}, cluster: a, hash_policy: [{header: x}], rewrite: {regex: {pattern: ')', substitution: ''}}},
                {match: {}, direct_response: {status: 200, content_type: \"a\\x01\"}}]}]",
        );
        let got: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        let v = "listeners[0].http.virtual_hosts";
        assert_eq!(
            got,
            [
                format!("{v}[0].routes[0].match.path_regex"),
                format!("{v}[1].routes[0].rewrite.regex.pattern"),
                format!("{v}[1].routes[1].direct_response.content_type"),
            ]
        );
    }
}
