//! Header operations (remove, set, add) on requests and responses, compiled to `http` types
//! once so that applying them per request only copies cheap, shared values.

use http::{HeaderMap, HeaderName, HeaderValue};
use sinew_config::model;

use crate::Errors;

/// Compiled header edits. Names are case-insensitive (they are lowercased `HeaderName`s).
#[derive(Debug, Clone, Default)]
pub struct HeaderOps {
    remove: Box<[HeaderName]>,
    set: Box<[(HeaderName, HeaderValue)]>,
    add: Box<[(HeaderName, HeaderValue)]>,
}

impl HeaderOps {
    /// `path` is the field path of the `HeaderActions`, e.g. `...routes[0].request_headers`.
    pub(crate) fn compile(
        actions: &model::HeaderActions,
        path: &str,
        errors: &mut Errors,
    ) -> Option<HeaderOps> {
        let mut ok = true;
        let mut pairs = |kind: &str, map: &std::collections::BTreeMap<String, String>| {
            let mut out = Vec::with_capacity(map.len());
            for (name, value) in map {
                let p = format!("{path}.{kind}.{name}");
                let n = errors.header_name(&p, name);
                let v = errors.header_value(&p, value);
                match (n, v) {
                    (Some(n), Some(v)) => out.push((n, v)),
                    _ => ok = false,
                }
            }
            out.into_boxed_slice()
        };
        let set = pairs("set", &actions.set);
        let add = pairs("add", &actions.add);
        let mut remove = Vec::with_capacity(actions.remove.len());
        for (i, name) in actions.remove.iter().enumerate() {
            match errors.header_name(&format!("{path}.remove[{i}]"), name) {
                Some(n) => remove.push(n),
                None => ok = false,
            }
        }
        ok.then(|| HeaderOps {
            remove: remove.into(),
            set,
            add,
        })
    }

    /// Removes, then sets (replacing every value), then adds (keeping existing values), so that
    /// `remove: [x]` with `add: {x: ..}` leaves exactly the added value.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }

    /// [`apply`](Self::apply) to headers kept as ordered pairs (an RPC call's
    /// attachments), names compared without case and left in their own spelling.
    pub fn apply_pairs(&self, pairs: &mut Vec<(String, String)>) {
        let named = |name: &HeaderName, key: &str| key.eq_ignore_ascii_case(name.as_str());
        let text = |v: &HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
        pairs.retain(|(k, _)| {
            !self.remove.iter().any(|n| named(n, k)) && !self.set.iter().any(|(n, _)| named(n, k))
        });
        for (name, value) in self.set.iter().chain(self.add.iter()) {
            pairs.push((name.as_str().to_owned(), text(value)));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use crate::test_util::{errors, header_map, one_route};

    fn values(map: &http::HeaderMap, name: &str) -> Vec<String> {
        map.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn removes_then_sets_then_adds() {
        let t = one_route(
            "{match: {}, cluster: a, request_headers: {
                remove: [X-Gone, x-reset],
                set: {X-Set: new, x-reset: fresh},
                add: {x-set: extra, X-Added: one, x-reset: more}}}",
        );
        let ops = &crate::test_util::first_route(&t).request_headers;
        let mut h = header_map(&[
            ("x-gone", "1"),
            ("x-gone", "2"),
            ("x-set", "old1"),
            ("x-set", "old2"),
            ("x-reset", "stale"),
            ("x-added", "zero"),
            ("x-kept", "k"),
        ]);
        ops.apply(&mut h);
        assert!(h.get("x-gone").is_none());
        // `set` replaced both old values; `add` came after `set`, so it survives.
        assert_eq!(values(&h, "x-set"), ["new", "extra"]);
        // Removed, then set, then added to: the stale value is gone.
        assert_eq!(values(&h, "x-reset"), ["fresh", "more"]);
        assert_eq!(values(&h, "x-added"), ["zero", "one"]);
        assert_eq!(values(&h, "x-kept"), ["k"]);
    }

    #[test]
    fn pairs_are_edited_as_a_header_map_is_keeping_their_spelling() {
        let t = one_route(
            "{match: {}, cluster: a, request_headers: {
                remove: [x-gone], set: {x-set: new}, add: {x-added: one, x-kept: two}}}",
        );
        let ops = &crate::test_util::first_route(&t).request_headers;
        let mut pairs: Vec<(String, String)> = [
            ("X-Gone", "1"),
            ("x-SET", "old"),
            ("X-Kept", "k"),
            ("service", "a.B:1.0"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        ops.apply_pairs(&mut pairs);
        let got: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("X-Kept", "k"),
                ("service", "a.B:1.0"),
                ("x-set", "new"),
                ("x-added", "one"),
                ("x-kept", "two")
            ]
        );
    }

    #[test]
    fn names_are_case_insensitive() {
        let t = one_route(
            "{match: {}, cluster: a, response_headers: {remove: [SERVER], set: {Cache-Control: no-store}}}",
        );
        let ops = &crate::test_util::first_route(&t).response_headers;
        let mut h = header_map(&[("server", "upstream"), ("cache-control", "max-age=60")]);
        ops.apply(&mut h);
        assert!(h.get("Server").is_none());
        assert_eq!(values(&h, "CACHE-CONTROL"), ["no-store"]);
    }

    #[test]
    fn empty_ops_are_empty_and_change_nothing() {
        let t = one_route("{match: {}, cluster: a}");
        let route = crate::test_util::first_route(&t);
        assert!(route.request_headers.is_empty());
        assert!(t.virtual_hosts()[0].response_headers.is_empty());
        let mut h = header_map(&[("a", "1")]);
        route.request_headers.apply(&mut h);
        assert_eq!(h.len(), 1);
        let t = one_route("{match: {}, cluster: a, request_headers: {remove: [a]}}");
        assert!(!crate::test_util::first_route(&t).request_headers.is_empty());
    }

    #[test]
    fn values_that_http_rejects_are_reported_at_their_path() {
        let errs = errors(
            "[{name: v, domains: ['*'], request_headers: {set: {x-bad: \"a\\x01b\"}},
               routes: [{match: {}, cluster: a, response_headers: {add: {x-del: \"\\x7f\"}}}]}]",
        );
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "listeners[0].http.virtual_hosts[0].request_headers.set.x-bad",
                "listeners[0].http.virtual_hosts[0].routes[0].response_headers.add.x-del",
            ]
        );
        assert!(errs[0].message.contains("not a valid header value"));
    }
}
