//! Path normalisation, as Envoy's HTTP connection manager options do it, applied to a
//! request's path (never its query) before routing and authorization, so both see the
//! same path and the upstream receives it too. Without it, `/public/../admin` or
//! `/%61dmin` could be routed or authorized as one path and served as another.
//!
//! The steps, in Envoy's order:
//! 1. `path_with_escaped_slashes_action`: `%2F`/`%5C` (any case) kept, refused (400),
//!    or decoded to `/` and `\` (and the client redirected to the result, or not).
//! 2. `normalize_path`: percent-encoded unreserved characters (RFC 3986 §2.3) decoded,
//!    other escapes' hex digits upper-cased, `\` read as `/` (as browsers and Envoy's
//!    URL canonicaliser do), then dot segments removed (RFC 3986 §5.2.4).
//! 3. `merge_slashes`: runs of `/` become one.
//!
//! A path that needs none of this (no `%`, `\`, `//` or `/.`) is left alone without an
//! allocation; only one that changes is rebuilt.

use sinew_config::authz::EscapedSlashesAction;

/// A listener's normalisation options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathOptions {
    pub normalize: bool,
    pub merge_slashes: bool,
    pub escaped_slashes: EscapedSlashesAction,
}

/// What normalising a path came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Normalized {
    Unchanged,
    Changed(String),
    /// `REJECT_REQUEST` and an escaped slash: 400.
    Reject,
    /// `UNESCAPE_AND_REDIRECT` and an escaped slash: redirect to this path.
    Redirect(String),
}

impl PathOptions {
    /// Whether every option is off (nothing to do for any request).
    pub fn is_off(&self) -> bool {
        !self.normalize
            && !self.merge_slashes
            && self.escaped_slashes == EscapedSlashesAction::KeepUnchanged
    }

    /// Normalises `path` (without its query). Paths that do not start with `/`
    /// (`*`, an authority) are left alone.
    pub fn apply(&self, path: &str) -> Normalized {
        if !path.starts_with('/') || !self.needs_work(path.as_bytes()) {
            return Normalized::Unchanged;
        }
        let mut redirect = false;
        let mut owned: Option<String> = None;
        if self.escaped_slashes != EscapedSlashesAction::KeepUnchanged
            && has_escaped_slash(path.as_bytes())
        {
            match self.escaped_slashes {
                EscapedSlashesAction::RejectRequest => return Normalized::Reject,
                EscapedSlashesAction::UnescapeAndRedirect => redirect = true,
                _ => {}
            }
            owned = Some(unescape_slashes(path));
        }
        if self.normalize {
            let decoded = decode_unreserved(owned.as_deref().unwrap_or(path));
            owned = Some(remove_dot_segments(&decoded));
        }
        if self.merge_slashes {
            let current = owned.as_deref().unwrap_or(path);
            if current.contains("//") {
                owned = Some(merge_slashes(current));
            }
        }
        match owned {
            Some(p) if p != path => {
                if redirect {
                    Normalized::Redirect(p)
                } else {
                    Normalized::Changed(p)
                }
            }
            _ => Normalized::Unchanged,
        }
    }

    fn needs_work(&self, path: &[u8]) -> bool {
        let escapes = self.escaped_slashes != EscapedSlashesAction::KeepUnchanged;
        if (self.normalize || escapes) && memchr::memchr(b'%', path).is_some() {
            return true;
        }
        if self.normalize
            && (memchr::memchr(b'\\', path).is_some()
                || memchr::memmem::find(path, b"/.").is_some())
        {
            return true;
        }
        self.merge_slashes && memchr::memmem::find(path, b"//").is_some()
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The byte a `%XY` at `i` stands for, if it is one.
fn escape_at(path: &[u8], i: usize) -> Option<u8> {
    if path.get(i) != Some(&b'%') {
        return None;
    }
    Some(hex(*path.get(i + 1)?)? << 4 | hex(*path.get(i + 2)?)?)
}

fn has_escaped_slash(path: &[u8]) -> bool {
    memchr::memchr_iter(b'%', path).any(|i| matches!(escape_at(path, i), Some(b'/' | b'\\')))
}

/// `%2F` → `/`, `%5C` → `\` (any case); every other byte as it was.
fn unescape_slashes(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        match escape_at(bytes, i) {
            Some(c @ (b'/' | b'\\')) => {
                out.push(c);
                i += 3;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    into_string(out)
}

/// Bytes made from a `str` by replacing ASCII with ASCII are still UTF-8.
fn into_string(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Decodes escaped unreserved characters, upper-cases other escapes, reads `\` as `/`.
/// A `%` that starts no valid escape becomes `%25`: left bare, it could join what a
/// decoded character leaves after it into a new escape (`%2%61` → `%2a`), and the
/// result would change again when normalised again.
fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        match escape_at(bytes, i) {
            Some(c) if unreserved(c) => {
                out.push(c);
                i += 3;
            }
            Some(_) => {
                out.push(b'%');
                out.push(bytes[i + 1].to_ascii_uppercase());
                out.push(bytes[i + 2].to_ascii_uppercase());
                i += 3;
            }
            None => {
                match bytes[i] {
                    b'\\' => out.push(b'/'),
                    b'%' => out.extend_from_slice(b"%25"),
                    b => out.push(b),
                }
                i += 1;
            }
        }
    }
    into_string(out)
}

/// RFC 3986 §5.2.4 on an absolute path: `.` segments go, `..` takes the segment before
/// it with it (never above the root); a path ending in one keeps its trailing `/`.
fn remove_dot_segments(path: &str) -> String {
    let body = path.strip_prefix('/').unwrap_or(path);
    let mut segments: Vec<&str> = Vec::new();
    let mut parts = body.split('/').peekable();
    while let Some(segment) = parts.next() {
        let last = parts.peek().is_none();
        match segment {
            "." => {}
            ".." => {
                segments.pop();
            }
            s => {
                segments.push(s);
                continue;
            }
        }
        if last {
            segments.push("");
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut previous_slash = false;
    for c in path.chars() {
        if c == '/' && previous_slash {
            continue;
        }
        previous_slash = c == '/';
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: PathOptions = PathOptions {
        normalize: true,
        merge_slashes: true,
        escaped_slashes: EscapedSlashesAction::UnescapeAndForward,
    };

    fn norm(options: PathOptions, path: &str) -> String {
        match options.apply(path) {
            Normalized::Unchanged => path.to_string(),
            Normalized::Changed(p) | Normalized::Redirect(p) => p,
            Normalized::Reject => "<reject>".into(),
        }
    }

    #[test]
    fn dot_segments_are_removed_as_rfc_3986_says() {
        let n = PathOptions {
            normalize: true,
            ..PathOptions::default()
        };
        for (input, want) in [
            ("/a/b/c/./../../g", "/a/g"),
            ("/admin/../admin", "/admin"),
            ("/public/../admin", "/admin"),
            ("/admin/.", "/admin/"),
            ("/admin/..", "/"),
            ("/..", "/"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/a//../b", "/a/b"),
            ("/a/.../b", "/a/.../b"),
            ("/a/.b/c", "/a/.b/c"),
            ("/", "/"),
            ("/%2e%2e/admin", "/admin"),
            ("/%2E./x/%2e", "/x/"),
            ("/%61dmin", "/admin"),
            ("/a%7eb%2db", "/a~b-b"),
            ("/a%2fb", "/a%2Fb"),
            ("/a%zzb%", "/a%25zzb%25"),
            ("/%2%61", "/%252a"),
            ("/a\\..\\admin", "/admin"),
        ] {
            assert_eq!(norm(n, input), want, "{input}");
        }
    }

    #[test]
    fn slashes_merge_after_dot_segments_are_removed() {
        let m = PathOptions {
            merge_slashes: true,
            ..PathOptions::default()
        };
        assert_eq!(norm(m, "//admin"), "/admin");
        assert_eq!(norm(m, "/a///b//"), "/a/b/");
        assert_eq!(norm(m, "/a/../b"), "/a/../b", "merge alone leaves dots");
        assert_eq!(norm(ALL, "//admin//..//x"), "/admin/x");
    }

    #[test]
    fn escaped_slashes_follow_the_configured_action() {
        let with = |escaped_slashes| PathOptions {
            escaped_slashes,
            ..PathOptions::default()
        };
        let path = "/admin%2Fsecret";
        assert_eq!(
            with(EscapedSlashesAction::KeepUnchanged).apply(path),
            Normalized::Unchanged
        );
        assert_eq!(
            with(EscapedSlashesAction::RejectRequest).apply(path),
            Normalized::Reject
        );
        assert_eq!(
            with(EscapedSlashesAction::RejectRequest).apply("/a%5cb"),
            Normalized::Reject
        );
        assert_eq!(
            with(EscapedSlashesAction::UnescapeAndRedirect).apply(path),
            Normalized::Redirect("/admin/secret".into())
        );
        assert_eq!(
            with(EscapedSlashesAction::UnescapeAndForward).apply(path),
            Normalized::Changed("/admin/secret".into())
        );
        assert_eq!(
            with(EscapedSlashesAction::RejectRequest).apply("/a%20b"),
            Normalized::Unchanged
        );
        // Decoded before dot segments go, so an escaped slash cannot hide a `..`.
        assert_eq!(norm(ALL, "/public%2F..%2Fadmin"), "/admin");
        assert_eq!(norm(ALL, "/public%5C..%5Cadmin"), "/admin");
    }

    #[test]
    fn case_is_kept_and_plain_paths_are_not_touched() {
        assert_eq!(ALL.apply("/ADMIN"), Normalized::Unchanged);
        assert_eq!(ALL.apply("/api/v1/items"), Normalized::Unchanged);
        assert_eq!(ALL.apply("*"), Normalized::Unchanged);
        assert!(PathOptions::default().is_off());
        assert_eq!(
            PathOptions::default().apply("/a/../b"),
            Normalized::Unchanged
        );
    }

    /// Fuzz: paths made of the pieces that matter (dots, slashes, escapes of every
    /// kind, backslashes, broken escapes) under every combination of options: never a
    /// panic; the result starts with `/`, has no dot segment left when normalising, no
    /// `//` when merging, no escaped slash when decoding them; and normalising it again
    /// changes nothing.
    #[test]
    fn fuzz_path_normalization() {
        use sinew_fuzz::proptest;
        use sinew_fuzz::proptest::prelude::*;
        const PIECES: &[&str] = &[
            "/", "/", ".", "..", "a", "admin", "%2e", "%2E", "%2f", "%2F", "%5c", "%5C", "%61",
            "%7E", "%25", "%", "%z", "%2", "\\", "~", "-", "%20", "%c3%a9", "é",
        ];
        let piece = proptest::sample::select(PIECES);
        let path = proptest::collection::vec(piece, 0..24)
            .prop_map(|pieces| format!("/{}", pieces.concat()));
        let actions = proptest::sample::select(
            &[
                EscapedSlashesAction::KeepUnchanged,
                EscapedSlashesAction::RejectRequest,
                EscapedSlashesAction::UnescapeAndRedirect,
                EscapedSlashesAction::UnescapeAndForward,
            ][..],
        );
        let options = (any::<bool>(), any::<bool>(), actions).prop_map(|(n, m, a)| PathOptions {
            normalize: n,
            merge_slashes: m,
            escaped_slashes: a,
        });
        sinew_fuzz::run(
            "path_normalization",
            1,
            (path, options),
            |(path, options)| {
                let out = match options.apply(&path) {
                    Normalized::Unchanged => path.clone(),
                    Normalized::Changed(p) | Normalized::Redirect(p) => p,
                    Normalized::Reject => {
                        prop_assert!(has_escaped_slash(path.as_bytes()));
                        return Ok(());
                    }
                };
                prop_assert!(out.starts_with('/'), "{out}");
                if options.normalize {
                    prop_assert!(!out.contains("/../") && !out.ends_with("/.."), "{out}");
                    prop_assert!(!out.contains("/./") && !out.ends_with("/."), "{out}");
                    prop_assert!(!out.contains('\\'), "{out}");
                }
                if options.merge_slashes {
                    prop_assert!(!out.contains("//"), "{out}");
                }
                if options.escaped_slashes != EscapedSlashesAction::KeepUnchanged {
                    prop_assert!(!has_escaped_slash(out.as_bytes()), "{out}");
                }
                prop_assert_eq!(
                    options.apply(&out),
                    Normalized::Unchanged,
                    "{} → {}",
                    path,
                    out
                );
                Ok(())
            },
        );
    }
}
