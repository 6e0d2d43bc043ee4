//! Route matching: path, methods, headers and query parameters, with Envoy's rules.
//!
//! Every condition must hold. The cheap ones (method, path) run first so that most
//! non-matching routes are rejected before headers are looked up; none of the exact and
//! prefix checks allocate, even for headers sent several times.

use http::{HeaderName, Method};
use regex::Regex;
use sinew_config::model;

use crate::{Errors, RequestView};

#[derive(Debug)]
pub(crate) struct RouteMatcher {
    path: PathMatch,
    /// Empty: any method.
    methods: Box<[Method]>,
    headers: HeaderMatchers,
    query: Box<[QueryMatcher]>,
    /// `percentage`: the share of requests this route takes.
    share: crate::percentage::Percentage,
}

/// Header conditions that must all hold: a route's `match.headers`, a fault's `headers`.
#[derive(Debug, Default)]
pub struct HeaderMatchers(Box<[HeaderMatcher]>);

#[derive(Debug)]
enum PathMatch {
    Any,
    Prefix(Literal),
    Exact(Literal),
    Regex(Regex),
}

/// A path literal with its first 8 bytes also kept inline. In a large table most routes fail
/// on those bytes, so the scan rarely follows the pointer to the full text.
#[derive(Debug)]
struct Literal {
    head: u64,
    /// Selects the bytes of `head` that belong to the literal (it may be shorter than 8).
    mask: u64,
    text: Box<str>,
}

impl Literal {
    fn new(text: &str) -> Literal {
        let n = text.len().min(8);
        Literal {
            head: head(text.as_bytes()),
            mask: if n == 8 {
                u64::MAX
            } else {
                (1u64 << (n * 8)) - 1
            },
            text: text.into(),
        }
    }

    fn is_prefix_of(&self, path: &str, path_head: u64) -> bool {
        path.len() >= self.text.len()
            && path_head & self.mask == self.head
            && path.as_bytes().starts_with(self.text.as_bytes())
    }

    fn equals(&self, path: &str, path_head: u64) -> bool {
        path.len() == self.text.len() && path_head == self.head && path == &*self.text
    }
}

/// The first 8 bytes of `bytes`, zero-padded. Computed once per request for the path, then
/// compared with every route's [`Literal`].
pub(crate) fn head(bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    let n = bytes.len().min(8);
    buf[..n].copy_from_slice(&bytes[..n]);
    u64::from_le_bytes(buf)
}

#[derive(Debug)]
struct HeaderMatcher {
    name: HeaderName,
    condition: HeaderCondition,
    invert: bool,
}

#[derive(Debug)]
enum HeaderCondition {
    Exact(Box<[u8]>),
    Prefix(Box<[u8]>),
    // Bytes, not str: header values need not be UTF-8.
    Regex(regex::bytes::Regex),
    Present(bool),
}

#[derive(Debug)]
struct QueryMatcher {
    name: Box<str>,
    condition: QueryCondition,
}

#[derive(Debug)]
enum QueryCondition {
    Exact(Box<str>),
    Regex(Regex),
    Present(bool),
}

impl RouteMatcher {
    /// `p` is the route's path; errors are reported under `{p}.match`.
    pub(crate) fn compile(m: &model::RouteMatch, p: &str, errors: &mut Errors) -> Option<Self> {
        let mp = format!("{p}.match");
        let mut ok = true;
        let path = if let Some(prefix) = &m.prefix {
            PathMatch::Prefix(Literal::new(prefix))
        } else if let Some(path) = &m.path {
            PathMatch::Exact(Literal::new(path))
        } else if let Some(re) = &m.path_regex {
            match errors.whole_regex(&format!("{mp}.path_regex"), re) {
                Some(re) => PathMatch::Regex(re),
                None => {
                    ok = false;
                    PathMatch::Any
                }
            }
        } else {
            PathMatch::Any
        };

        let mut methods = Vec::with_capacity(m.methods.len());
        for (i, method) in m.methods.iter().enumerate() {
            match Method::from_bytes(method.as_bytes()) {
                Ok(method) => methods.push(method),
                Err(_) => {
                    errors.push(
                        format!("{mp}.methods[{i}]"),
                        format!("{method:?} is not a method token"),
                    );
                    ok = false;
                }
            }
        }

        let headers = HeaderMatchers::compile(&m.headers, &format!("{mp}.headers"), errors);
        ok &= headers.is_some();

        let mut query = Vec::with_capacity(m.query.len());
        for (i, q) in m.query.iter().enumerate() {
            let condition = if let Some(v) = &q.exact {
                Some(QueryCondition::Exact(v.as_str().into()))
            } else if let Some(re) = &q.regex {
                errors
                    .whole_regex(&format!("{mp}.query[{i}].regex"), re)
                    .map(QueryCondition::Regex)
            } else {
                Some(QueryCondition::Present(q.present.unwrap_or(true)))
            };
            match condition {
                Some(condition) => query.push(QueryMatcher {
                    name: q.name.as_str().into(),
                    condition,
                }),
                None => ok = false,
            }
        }

        let share = match m.percentage {
            None => crate::percentage::Percentage::ALL,
            Some(p) if (0.0..=100.0).contains(&p) => crate::percentage::Percentage::from_percent(p),
            Some(p) => {
                errors.push(
                    format!("{mp}.percentage"),
                    format!("{p} is not a percentage: write a number from 0 to 100"),
                );
                ok = false;
                crate::percentage::Percentage::ALL
            }
        };

        ok.then(|| RouteMatcher {
            path,
            methods: methods.into(),
            headers: headers.unwrap_or_default(),
            query: query.into(),
            share,
        })
    }

    /// `path_head` is [`head`] of `req.path`, computed once for all routes; `draw` is the
    /// request's one random draw for `percentage`, made when a route first needs it.
    pub(crate) fn matches(
        &self,
        req: &RequestView<'_>,
        path_head: u64,
        draw: &std::cell::OnceCell<u32>,
    ) -> bool {
        (self.methods.is_empty() || self.methods.iter().any(|m| m == req.method))
            && self.path_matches(req.path, path_head)
            && self.headers.matches(req.headers)
            && self.query.iter().all(|q| q.matches(req.query))
            && self.share.sample_once(draw)
    }

    fn path_matches(&self, path: &str, path_head: u64) -> bool {
        match &self.path {
            PathMatch::Any => true,
            PathMatch::Prefix(p) => p.is_prefix_of(path, path_head),
            PathMatch::Exact(p) => p.equals(path, path_head),
            PathMatch::Regex(re) => re.is_match(path),
        }
    }
}

impl HeaderMatchers {
    /// `p` is the list's path; errors are reported under `{p}[i]`.
    pub(crate) fn compile(
        list: &[model::HeaderMatch],
        p: &str,
        errors: &mut Errors,
    ) -> Option<HeaderMatchers> {
        let mut ok = true;
        let mut headers = Vec::with_capacity(list.len());
        for (i, h) in list.iter().enumerate() {
            let hp = format!("{p}[{i}]");
            let name = errors.header_name(&format!("{hp}.name"), &h.name);
            let condition = if let Some(v) = &h.exact {
                Some(HeaderCondition::Exact(v.as_bytes().into()))
            } else if let Some(v) = &h.prefix {
                Some(HeaderCondition::Prefix(v.as_bytes().into()))
            } else if let Some(re) = &h.regex {
                errors
                    .whole_bytes_regex(&format!("{hp}.regex"), re)
                    .map(HeaderCondition::Regex)
            } else {
                Some(HeaderCondition::Present(h.present.unwrap_or(true)))
            };
            match (name, condition) {
                (Some(name), Some(condition)) => headers.push(HeaderMatcher {
                    name,
                    condition,
                    invert: h.invert,
                }),
                _ => ok = false,
            }
        }
        ok.then(|| HeaderMatchers(headers.into()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every condition holds (true for none).
    pub fn matches(&self, headers: &http::HeaderMap) -> bool {
        self.0.iter().all(|h| h.matches(headers))
    }
}

impl HeaderMatcher {
    fn matches(&self, headers: &http::HeaderMap) -> bool {
        // As in Envoy, an inverted value condition still needs the header: `exact: prod,
        // invert: true` means "present and not prod", not "anything but prod".
        if self.invert
            && !matches!(self.condition, HeaderCondition::Present(_))
            && !headers.contains_key(&self.name)
        {
            return false;
        }
        self.invert != self.holds(headers)
    }

    fn holds(&self, headers: &http::HeaderMap) -> bool {
        let all = headers.get_all(&self.name);
        let mut values = all.iter();
        let Some(first) = values.next() else {
            return matches!(self.condition, HeaderCondition::Present(false));
        };
        if values.next().is_none() {
            // A header sent once: the common case, compared in place.
            let value = first.as_bytes();
            return match &self.condition {
                HeaderCondition::Present(present) => *present,
                HeaderCondition::Exact(want) => value == &**want,
                HeaderCondition::Prefix(want) => value.starts_with(want),
                HeaderCondition::Regex(re) => re.is_match(value),
            };
        }
        let values = || all.iter().map(|v| v.as_bytes());
        match &self.condition {
            HeaderCondition::Present(present) => *present,
            HeaderCondition::Exact(want) => joined_compare(values(), want, false),
            HeaderCondition::Prefix(want) => joined_compare(values(), want, true),
            HeaderCondition::Regex(re) => {
                re.is_match(&values().collect::<Vec<_>>().join(&b","[..]))
            }
        }
    }
}

/// Compares the values of a repeated header, as if joined by `,`, with `want`: for equality,
/// or with `prefix` for `want` being a prefix of them. Joining would allocate; walking the
/// pieces does not.
fn joined_compare<'a>(values: impl Iterator<Item = &'a [u8]>, want: &[u8], prefix: bool) -> bool {
    let mut rest = want;
    for (i, value) in values.enumerate() {
        let separator: &[u8] = if i == 0 { b"" } else { b"," };
        for piece in [separator, value] {
            if prefix && rest.len() <= piece.len() {
                return piece.starts_with(rest);
            }
            match rest.strip_prefix(piece) {
                Some(r) => rest = r,
                None => return false,
            }
        }
    }
    rest.is_empty()
}

impl QueryMatcher {
    fn matches(&self, query: Option<&str>) -> bool {
        match (&self.condition, query_value(query, &self.name)) {
            (QueryCondition::Present(present), value) => *present == value.is_some(),
            (_, None) => false,
            (QueryCondition::Exact(want), Some(v)) => v == &**want,
            (QueryCondition::Regex(re), Some(v)) => re.is_match(v),
        }
    }
}

/// The raw (not percent-decoded) value of the first parameter called `name`; a parameter
/// without `=` has the empty value.
fn query_value<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{request, table};

    /// The name of the route that `method path?query` with `headers` takes in `routes`.
    fn routed(routes: &str, method: &str, uri: &str, headers: &[(&str, &str)]) -> Option<String> {
        let t = table(&format!("[{{name: v, domains: ['*'], routes: {routes}}}]"));
        let req = request(method, uri, headers);
        t.virtual_host("x")
            .unwrap()
            .route(&req.view())
            .map(|r| r.name.to_string())
    }

    fn matches(m: &str, method: &str, uri: &str, headers: &[(&str, &str)]) -> bool {
        routed(
            &format!("[{{name: hit, match: {m}, cluster: a}}]"),
            method,
            uri,
            headers,
        )
        .is_some()
    }

    #[test]
    fn prefix_is_a_case_sensitive_string_prefix() {
        let m = "{prefix: /api}";
        assert!(matches(m, "GET", "/api", &[]));
        assert!(matches(m, "GET", "/api/v1", &[]));
        assert!(matches(m, "GET", "/apis", &[]));
        assert!(!matches(m, "GET", "/API", &[]));
        assert!(!matches(m, "GET", "/ap", &[]));
    }

    #[test]
    fn exact_path_ignores_the_query_only() {
        let m = "{path: /health}";
        assert!(matches(m, "GET", "/health", &[]));
        assert!(matches(m, "GET", "/health?full=1", &[]));
        assert!(!matches(m, "GET", "/health/", &[]));
        assert!(!matches(m, "GET", "/Health", &[]));
    }

    #[test]
    fn path_regex_must_match_the_whole_path() {
        let m = r"{path_regex: '/users/[0-9]+'}";
        assert!(matches(m, "GET", "/users/42", &[]));
        assert!(!matches(m, "GET", "/users/42/posts", &[]));
        assert!(!matches(m, "GET", "/v1/users/42", &[]));
        // Alternation is anchored as a whole, not just its last branch.
        let m = r"{path_regex: '/a|/b'}";
        assert!(matches(m, "GET", "/b", &[]));
        assert!(!matches(m, "GET", "/ax", &[]));
    }

    #[test]
    fn no_path_matcher_matches_every_path() {
        assert!(matches("{}", "GET", "/anything/at/all", &[]));
    }

    #[test]
    fn a_percentage_route_takes_its_share_and_the_rest_fall_through() {
        assert!(!(0..200).any(|_| matches("{prefix: /, percentage: 0}", "GET", "/", &[])));
        assert!((0..200).all(|_| matches("{prefix: /, percentage: 100}", "GET", "/", &[])));
        let routes = "[{name: canary, match: {prefix: /, percentage: 30}, cluster: a}, {name: stable, match: {prefix: /}, cluster: a}]";
        let canary = (0..10_000)
            .filter(|_| routed(routes, "GET", "/x", &[]).as_deref() == Some("canary"))
            .count();
        assert!((2_700..3_300).contains(&canary), "{canary} of 10000 at 30%");
    }

    #[test]
    fn routes_share_one_draw_per_request_so_a_smaller_share_after_a_larger_one_never_matches() {
        // Envoy's rule: one random value per request for every route's runtime_fraction.
        let routes = "[{name: a, match: {prefix: /, percentage: 50}, cluster: a}, {name: b, match: {prefix: /, percentage: 40}, cluster: a}, {name: c, match: {prefix: /}, cluster: a}]";
        assert!(!(0..2_000).any(|_| routed(routes, "GET", "/", &[]).as_deref() == Some("b")));
    }

    #[test]
    fn a_percentage_out_of_range_is_refused_at_its_field() {
        let e = crate::test_util::errors(
            "[{name: v, domains: ['*'], routes: [{match: {prefix: /, percentage: 101}, cluster: a}]}]",
        );
        assert!(
            e.iter()
                .any(|e| e.path.ends_with("routes[0].match.percentage")),
            "{e:?}"
        );
    }

    #[test]
    fn methods_match_any_listed_one() {
        let m = "{methods: [GET, PURGE]}";
        assert!(matches(m, "GET", "/", &[]));
        assert!(matches(m, "PURGE", "/", &[]));
        assert!(!matches(m, "POST", "/", &[]));
    }

    #[test]
    fn header_exact_prefix_and_regex_match_the_value() {
        let exact = "{headers: [{name: X-Env, exact: canary}]}";
        assert!(matches(exact, "GET", "/", &[("x-env", "canary")]));
        assert!(!matches(exact, "GET", "/", &[("x-env", "canary2")]));
        assert!(!matches(exact, "GET", "/", &[]));

        let prefix = "{headers: [{name: user-agent, prefix: curl/}]}";
        assert!(matches(prefix, "GET", "/", &[("user-agent", "curl/8.0")]));
        assert!(!matches(
            prefix,
            "GET",
            "/",
            &[("user-agent", "Mozilla curl/8")]
        ));

        let regex = "{headers: [{name: x-id, regex: '[0-9]+'}]}";
        assert!(matches(regex, "GET", "/", &[("x-id", "123")]));
        assert!(!matches(regex, "GET", "/", &[("x-id", "123a")]));
    }

    #[test]
    fn repeated_headers_match_as_their_comma_joined_values() {
        let two = [("x-a", "one"), ("x-a", "two")];
        assert!(matches(
            "{headers: [{name: x-a, exact: 'one,two'}]}",
            "GET",
            "/",
            &two
        ));
        assert!(!matches(
            "{headers: [{name: x-a, exact: one}]}",
            "GET",
            "/",
            &two
        ));
        assert!(!matches(
            "{headers: [{name: x-a, exact: 'one,two,'}]}",
            "GET",
            "/",
            &two
        ));
        assert!(matches(
            "{headers: [{name: x-a, prefix: 'one,t'}]}",
            "GET",
            "/",
            &two
        ));
        assert!(matches(
            "{headers: [{name: x-a, prefix: 'one,'}]}",
            "GET",
            "/",
            &two
        ));
        assert!(!matches(
            "{headers: [{name: x-a, prefix: 'one,x'}]}",
            "GET",
            "/",
            &two
        ));
        assert!(matches(
            "{headers: [{name: x-a, regex: 'one,t.*'}]}",
            "GET",
            "/",
            &two
        ));
    }

    #[test]
    fn header_present_and_absent() {
        let present = "{headers: [{name: x-debug, present: true}]}";
        assert!(matches(present, "GET", "/", &[("x-debug", "")]));
        assert!(!matches(present, "GET", "/", &[]));

        let absent = "{headers: [{name: x-debug, present: false}]}";
        assert!(matches(absent, "GET", "/", &[]));
        assert!(!matches(absent, "GET", "/", &[("x-debug", "1")]));

        let bare = "{headers: [{name: x-debug}]}";
        assert!(matches(bare, "GET", "/", &[("x-debug", "1")]));
        assert!(!matches(bare, "GET", "/", &[]));
    }

    #[test]
    fn header_invert_negates_the_condition() {
        let m = "{headers: [{name: x-env, exact: prod, invert: true}]}";
        assert!(!matches(m, "GET", "/", &[("x-env", "prod")]));
        assert!(matches(m, "GET", "/", &[("x-env", "staging")]));
        // Envoy's rule: an inverted value matcher needs the header present.
        assert!(!matches(m, "GET", "/", &[]));

        let m = "{headers: [{name: x-env, present: true, invert: true}]}";
        assert!(matches(m, "GET", "/", &[]));
        assert!(!matches(m, "GET", "/", &[("x-env", "prod")]));
    }

    #[test]
    fn query_exact_regex_present_and_absent() {
        let exact = "{query: [{name: debug, exact: '1'}]}";
        assert!(matches(exact, "GET", "/?debug=1", &[]));
        assert!(matches(exact, "GET", "/?a=b&debug=1&c", &[]));
        assert!(!matches(exact, "GET", "/?debug=10", &[]));
        assert!(!matches(exact, "GET", "/?xdebug=1", &[]));
        assert!(!matches(exact, "GET", "/", &[]));

        // Values are compared raw, not percent-decoded.
        let raw = "{query: [{name: q, exact: 'a%20b'}]}";
        assert!(matches(raw, "GET", "/?q=a%20b", &[]));

        let regex = "{query: [{name: id, regex: '[a-f]+'}]}";
        assert!(matches(regex, "GET", "/?id=cafe", &[]));
        assert!(!matches(regex, "GET", "/?id=cafes", &[]));

        let present = "{query: [{name: flag}]}";
        assert!(matches(present, "GET", "/?flag", &[]));
        assert!(matches(present, "GET", "/?flag=", &[]));
        assert!(!matches(present, "GET", "/?flags", &[]));

        let absent = "{query: [{name: flag, present: false}]}";
        assert!(matches(absent, "GET", "/?other=1", &[]));
        assert!(matches(absent, "GET", "/", &[]));
        assert!(!matches(absent, "GET", "/?flag=0", &[]));
    }

    #[test]
    fn every_condition_must_hold() {
        let m = "{prefix: /api, methods: [POST], headers: [{name: x-a, exact: '1'}], query: [{name: q}]}";
        let h = [("x-a", "1")];
        assert!(matches(m, "POST", "/api?q", &h));
        assert!(!matches(m, "GET", "/api?q", &h));
        assert!(!matches(m, "POST", "/web?q", &h));
        assert!(!matches(m, "POST", "/api?q", &[]));
        assert!(!matches(m, "POST", "/api", &h));
    }

    #[test]
    fn first_matching_route_wins_in_config_order() {
        let routes = "[
            {name: health, match: {path: /health}, cluster: a},
            {name: api, match: {prefix: /api}, cluster: a},
            {name: api-v2, match: {prefix: /api/v2}, cluster: b},
            {name: rest, match: {prefix: /}, cluster: c},
        ]";
        assert_eq!(
            routed(routes, "GET", "/health", &[]).as_deref(),
            Some("health")
        );
        // The more specific route comes later, so it never wins.
        assert_eq!(
            routed(routes, "GET", "/api/v2/x", &[]).as_deref(),
            Some("api")
        );
        assert_eq!(
            routed(routes, "GET", "/other", &[]).as_deref(),
            Some("rest")
        );
        let no_catch_all = "[{name: api, match: {prefix: /api}, cluster: a}]";
        assert_eq!(routed(no_catch_all, "GET", "/other", &[]), None);
    }

    #[test]
    fn long_and_short_literals_compare_beyond_the_inline_head() {
        // Same first 8 bytes, different tails.
        let m = "{prefix: /service/alpha}";
        assert!(matches(m, "GET", "/service/alpha/x", &[]));
        assert!(!matches(m, "GET", "/service/beta", &[]));
        assert!(!matches(m, "GET", "/service", &[]));
        let m = "{path: /service/alpha}";
        assert!(matches(m, "GET", "/service/alpha", &[]));
        assert!(!matches(m, "GET", "/service/alphb", &[]));
        // Shorter than the head: only its own bytes count.
        assert!(matches("{prefix: /a}", "GET", "/abc", &[]));
        assert!(!matches("{prefix: /a}", "GET", "/b", &[]));
        assert!(matches("{prefix: /}", "GET", "/", &[]));
        assert!(matches("{path: /a}", "GET", "/a", &[]));
        assert!(!matches("{path: /a}", "GET", "/ab", &[]));
        assert!(!matches("{path: /ab}", "GET", "/a", &[]));
    }

    #[test]
    fn joined_compare_walks_pieces() {
        let v = |s: &'static [&'static str]| s.iter().map(|x| x.as_bytes());
        assert!(joined_compare(v(&["a", "b"]), b"a,b", false));
        assert!(joined_compare(v(&["a", "b"]), b"", true));
        assert!(joined_compare(v(&["ab"]), b"a", true));
        assert!(!joined_compare(v(&["ab"]), b"a", false));
        assert!(!joined_compare(v(&["a"]), b"a,", true));
        assert!(joined_compare(v(&["", ""]), b",", false));
    }
}
