//! Path rewriting before a request goes upstream: replacing the matched prefix, or every
//! match of a regex. The query string is never touched.

use regex::Regex;
use sinew_config::model;

use crate::Errors;

#[derive(Debug)]
pub(crate) enum PathRewrite {
    /// The route's matched prefix, and what replaces it.
    Prefix { matched: Box<str>, with: Box<str> },
    Regex {
        pattern: Regex,
        substitution: Box<str>,
    },
}

impl PathRewrite {
    /// `p` is the route's path; `matched_prefix` is the route's `match.prefix`. Validation
    /// guarantees a prefix rewrite has one; if not, the rewrite is dropped, not guessed.
    pub(crate) fn compile(
        rw: &model::Rewrite,
        matched_prefix: Option<&str>,
        p: &str,
        errors: &mut Errors,
    ) -> Result<Option<PathRewrite>, ()> {
        if let Some(with) = &rw.prefix {
            return Ok(matched_prefix.map(|matched| PathRewrite::Prefix {
                matched: matched.into(),
                with: with.as_str().into(),
            }));
        }
        let Some(re) = &rw.regex else {
            return Ok(None);
        };
        let pattern = errors
            .regex(&format!("{p}.rewrite.regex.pattern"), &re.pattern)
            .ok_or(())?;
        let (substitution, highest) = braced_groups(&re.substitution);
        if let Some(group) = highest.filter(|g| *g >= pattern.captures_len()) {
            errors.push(
                format!("{p}.rewrite.regex.substitution"),
                format!(
                    "refers to group ${group}, which the pattern does not have (it has {})",
                    pattern.captures_len() - 1
                ),
            );
            return Err(());
        }
        Ok(Some(PathRewrite::Regex {
            pattern,
            substitution: substitution.into(),
        }))
    }

    /// The rewritten path (without query), or `None` when this rewrite does not apply.
    pub(crate) fn apply(&self, path: &str) -> Option<String> {
        match self {
            PathRewrite::Prefix { matched, with } => {
                let rest = path.strip_prefix(&**matched)?;
                let mut out = String::with_capacity(with.len() + rest.len());
                out.push_str(with);
                out.push_str(rest);
                Some(out)
            }
            PathRewrite::Regex {
                pattern,
                substitution,
            } => Some(pattern.replace_all(path, &**substitution).into_owned()),
        }
    }
}

/// `$1abc` means group `1abc` to the regex crate; users mean group 1 followed by `abc`, as in
/// Envoy's RE2. Numbered references are braced; `${..}`, `$$` and named ones are left alone.
/// Also returns the highest group number referred to, since the regex crate silently
/// substitutes nothing for a group the pattern lacks.
fn braced_groups(substitution: &str) -> (String, Option<usize>) {
    let mut out = String::with_capacity(substitution.len() + 4);
    let mut highest: Option<usize> = None;
    let mut saw = |n: &str| {
        if let Ok(n) = n.parse::<usize>() {
            highest = Some(highest.map_or(n, |h| h.max(n)));
        }
    };
    let mut rest = substitution;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..=i]);
        rest = &rest[i + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some(inner) = rest.strip_prefix('{') {
            let (name, end) = match inner.find('}') {
                Some(e) => (&inner[..e], e + 1),
                None => (inner, inner.len()),
            };
            saw(name);
            out.push('{');
            out.push_str(&inner[..end]);
            rest = &inner[end..];
        } else {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits > 0 {
                saw(&rest[..digits]);
                out.push('{');
                out.push_str(&rest[..digits]);
                out.push('}');
                rest = &rest[digits..];
            }
        }
    }
    out.push_str(rest);
    (out, highest)
}

#[cfg(test)]
mod tests {
    use super::braced_groups;
    use crate::test_util::{errors, first_route, one_route};

    #[test]
    fn prefix_rewrite_replaces_the_matched_prefix_and_keeps_the_query() {
        let t = one_route("{match: {prefix: /api/v1/}, cluster: a, rewrite: {prefix: /}}");
        let r = first_route(&t);
        assert_eq!(
            r.rewrite_path("/api/v1/users", None).as_deref(),
            Some("/users")
        );
        assert_eq!(
            r.rewrite_path("/api/v1/users", Some("page=2&x")).as_deref(),
            Some("/users?page=2&x")
        );
        assert_eq!(r.rewrite_path("/api/v1/", Some("")).as_deref(), Some("/?"));
    }

    #[test]
    fn regex_rewrite_substitutes_capture_groups_everywhere() {
        let t = one_route(
            "{match: {prefix: /}, cluster: a, rewrite: {regex: {pattern: '^/service/([^/]+)(/.*)$', substitution: '$2/instance/$1x'}}}",
        );
        let r = first_route(&t);
        assert_eq!(
            r.rewrite_path("/service/foo/v1/api", Some("q=1"))
                .as_deref(),
            Some("/v1/api/instance/foox?q=1")
        );
        let t = one_route(
            "{match: {prefix: /}, cluster: a, rewrite: {regex: {pattern: 'a+', substitution: 'b'}}}",
        );
        assert_eq!(
            first_route(&t).rewrite_path("/aa/xa/a", None).as_deref(),
            Some("/b/xb/b")
        );
    }

    #[test]
    fn routes_without_a_path_rewrite_return_none() {
        let t = one_route("{match: {prefix: /}, cluster: a, rewrite: {host: example.com}}");
        let r = first_route(&t);
        assert_eq!(r.rewrite_path("/x", Some("y")), None);
        assert_eq!(r.host_rewrite().unwrap(), "example.com");
        let t = one_route("{match: {prefix: /}, cluster: a}");
        assert_eq!(first_route(&t).host_rewrite(), None);
    }

    #[test]
    fn numbered_groups_are_braced_but_escapes_and_names_kept() {
        assert_eq!(braced_groups("$1abc"), ("${1}abc".into(), Some(1)));
        assert_eq!(
            braced_groups("$$1 ${2} $name $12é"),
            ("$$1 ${2} $name ${12}é".into(), Some(12))
        );
        assert_eq!(braced_groups("$$${3}"), ("$$${3}".into(), Some(3)));
        assert_eq!(braced_groups("no refs é $"), ("no refs é $".into(), None));
        assert_eq!(braced_groups("${é"), ("${é".into(), None));
    }

    #[test]
    fn bad_rewrite_regex_and_missing_groups_are_reported() {
        let errs = errors(
            "[{name: v, domains: ['*'], routes: [
                {match: {}, cluster: a, rewrite: {regex: {pattern: '(', substitution: x}}},
                {match: {}, cluster: a, rewrite: {regex: {pattern: '(a)', substitution: '$2'}}},
                {match: {}, cluster: a, rewrite: {host: \"bad\\x01\"}}]}]",
        );
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        let p = "listeners[0].http.virtual_hosts[0].routes";
        assert_eq!(
            paths,
            [
                format!("{p}[0].rewrite.regex.pattern"),
                format!("{p}[1].rewrite.regex.substitution"),
                format!("{p}[2].rewrite.host"),
            ]
        );
        assert!(errs[0].message.starts_with("regex does not compile: "));
        assert!(errs[1].message.contains("$2"), "{}", errs[1].message);
    }
}
