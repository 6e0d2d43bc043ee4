//! Dependencies inside each crate point one way: no two modules import each other, and
//! no longer circle either (issue 18's layering, drawn in docs/architecture.md).
//!
//! Reads every crate's `src/` and, for each module (one per file), the other modules it
//! names through `crate::` and `super::` paths (in `use` items and in code; a
//! `use crate::{a, b::c}` group counts for each), leaving out comments and
//! `#[cfg(test)]` modules. The crate root is left out: it is the assembly that declares
//! every module, and modules may name the items it defines (`crate::Proxy`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

#[test]
fn no_crate_has_modules_that_import_each_other_in_a_circle() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut found = Vec::new();
    let mut checked = 0;
    for entry in std::fs::read_dir(&crates).unwrap() {
        let src = entry.unwrap().path().join("src");
        if !src.is_dir() {
            continue;
        }
        let mut graph = module_graph(&src);
        checked += graph.len();
        // Every cycle, not just the first: each found is cut at its last edge.
        while let Some(cycle) = find_cycle(&graph) {
            let crate_name = src.parent().and_then(Path::file_name).unwrap_or_default();
            found.push(format!("{}: {}", crate_name.display(), cycle.join(" -> ")));
            let (from, to) = (&cycle[cycle.len() - 2], &cycle[cycle.len() - 1]);
            graph.get_mut(from).map(|edges| edges.remove(to));
        }
    }
    assert!(
        checked > 100,
        "only {checked} modules found under {crates:?}"
    );
    assert!(found.is_empty(), "module cycles:\n{}", found.join("\n"));
}

#[test]
fn the_checker_finds_a_cycle_through_super_and_a_use_group() {
    let dir = tempfile_dir();
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::write(dir.join("lib.rs"), "mod a;\nmod b;\n").unwrap();
    std::fs::write(dir.join("a/mod.rs"), "mod c;\nuse crate::{b::X, a::c};\n").unwrap();
    std::fs::write(dir.join("a/c.rs"), "// use crate::b;\nfn f() {}\n").unwrap();
    std::fs::write(
        dir.join("b.rs"),
        "pub struct X;\n#[cfg(test)]\nmod tests {\n    use crate::a::c;\n}\n",
    )
    .unwrap();
    let graph = module_graph(&dir);
    assert_eq!(find_cycle(&graph), None, "{graph:?}");
    std::fs::write(
        dir.join("a/c.rs"),
        "fn f() -> super::super::b::X { todo!() }\n",
    )
    .unwrap();
    std::fs::write(dir.join("b.rs"), "pub struct X;\nuse crate::a::c;\n").unwrap();
    let cycle = find_cycle(&module_graph(&dir)).expect("b -> a::c -> b");
    assert!(cycle.contains(&"b".to_string()), "{cycle:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sinew-module-graph-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Each module (by path, `a::b`) and the modules it names.
fn module_graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    collect_rs(src, &mut files);
    let modules: BTreeMap<String, PathBuf> = files
        .into_iter()
        .filter_map(|f| Some((module_of(src, &f)?, f)))
        .collect();
    let mut graph = Graph::new();
    for (module, file) in &modules {
        let code = strip_tests(&strip_comments(&std::fs::read_to_string(file).unwrap()));
        let mut names = BTreeSet::new();
        let mut named = paths_named(&code);
        // A child module named without `crate::` (`use sniff::Sniffed`).
        for child in declared_children(&code) {
            if code.contains(&format!("{child}::")) {
                named.push(format!("self::{child}"));
            }
        }
        for path in named {
            let Some(absolute) = absolute(module, &path) else {
                continue;
            };
            // The longest prefix that is a module: `a::b::Item` names `a::b`.
            let mut parts: Vec<&str> = absolute.split("::").collect();
            while !parts.is_empty() {
                let candidate = parts.join("::");
                if modules.contains_key(&candidate) {
                    if candidate != *module && !module.starts_with(&format!("{candidate}::")) {
                        names.insert(candidate);
                    }
                    break;
                }
                parts.pop();
            }
        }
        graph.insert(module.clone(), names);
    }
    graph
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/a/b.rs` and `src/a/b/mod.rs` are `a::b`; the crate root and binaries are None.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?.with_extension("");
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    match parts.as_slice() {
        [] => None,
        [only] if only == "lib" || only == "main" => None,
        [first, ..] if first == "bin" => None,
        _ => Some(parts.join("::")),
    }
}

/// `crate::`/`super::` paths, with `{..}` groups expanded: `crate::{a, b::c}` gives
/// `crate::a` and `crate::b::c`.
fn paths_named(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < code.len() {
        let rest = &code[i..];
        let starts = rest.starts_with("crate::") || rest.starts_with("super::");
        let boundary = i == 0
            || !(bytes[i - 1].is_ascii_alphanumeric()
                || bytes[i - 1] == b'_'
                || bytes[i - 1] == b':');
        if starts && boundary {
            let end = path_end(rest);
            expand(&rest[..end], &mut out);
            i += end.max(1);
        } else {
            i += rest.chars().next().map_or(1, char::len_utf8);
        }
    }
    out
}

/// Where a path that may hold nested `{..}` groups ends.
fn path_end(s: &str) -> usize {
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return i,
            '}' => depth -= 1,
            c if depth == 0 && !(c.is_alphanumeric() || c == '_' || c == ':') => return i,
            _ => {}
        }
    }
    s.len()
}

fn expand(path: &str, out: &mut Vec<String>) {
    let Some(open) = path.find('{') else {
        out.push(path.trim_end_matches(':').to_string());
        return;
    };
    let prefix = &path[..open];
    let inner = &path[open + 1..path.rfind('}').unwrap_or(path.len())];
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                expand(&format!("{prefix}{}", inner[start..i].trim()), out);
                start = i + 1;
            }
            _ => {}
        }
    }
    let last = inner[start..].trim();
    if !last.is_empty() {
        expand(&format!("{prefix}{last}"), out);
    }
}

/// A path relative to `module` made absolute (without `crate::`); None for the root.
/// A file `a/b.rs` is module `a::b` (its `super` is `a`), and `a/mod.rs` is `a` (its
/// `super` is the root).
fn absolute(module: &str, path: &str) -> Option<String> {
    let mut here: Vec<&str> = module.split("::").collect();
    let mut rest = path;
    if let Some(r) = rest.strip_prefix("crate::") {
        here.clear();
        rest = r;
    }
    while let Some(r) = rest.strip_prefix("super::") {
        here.pop();
        rest = r;
    }
    let rest = rest.trim_start_matches("self::");
    if rest.is_empty() || rest == "self" {
        return None;
    }
    here.extend(rest.split("::").filter(|p| !p.is_empty() && *p != "self"));
    (!here.is_empty()).then(|| here.join("::"))
}

/// The modules a file declares (`mod x;`, `pub(crate) mod x;`).
fn declared_children(code: &str) -> Vec<String> {
    code.lines()
        .filter_map(|line| {
            let line = line.trim();
            let at = line.find("mod ")?;
            let name = line[at + 4..].strip_suffix(';')?;
            let visibility = line[..at].trim();
            (visibility.is_empty() || visibility.starts_with("pub"))
                .then(|| name.trim().to_string())
        })
        .collect()
}

fn strip_comments(code: &str) -> String {
    code.lines()
        .map(|line| match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Drops `#[cfg(test)] mod x { .. }` blocks (counting braces).
fn strip_tests(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let Some(open) = after.find('{') else {
            return out;
        };
        let header = &after[..open];
        if !header.contains("mod ") {
            out.push_str("#[cfg(test)]");
            rest = &after["#[cfg(test)]".len()..];
            continue;
        }
        let mut depth = 0;
        let mut end = after.len();
        for (i, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// A cycle in `graph`, as the modules along it (first repeated at the end), or None.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    fn visit(
        node: &str,
        graph: &Graph,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(node.to_string(), Mark::OnPath);
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            match marks.get(next.as_str()).copied().unwrap_or(Mark::New) {
                Mark::OnPath => {
                    let from = path.iter().position(|m| m == next).unwrap_or(0);
                    let mut cycle = path[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(c) = visit(next, graph, marks, path) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if marks.get(node.as_str()).copied().unwrap_or(Mark::New) == Mark::New {
            if let Some(c) = visit(node, graph, &mut marks, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}
