//! Keeps this crate's modules layered (issue 18: "dependencies point one way"): a module
//! may name a module below it, never one that names it back, directly or around a circle.
//!
//! The graph is read from the source with plain string scanning: every `crate::<name>`
//! (in `use` items, `use crate::{a, b}` groups and expressions) outside comments, string
//! literals and `#[cfg(test)] mod tests` blocks is an edge to the module `<name>` is, or to
//! the module lib.rs re-exports `<name>` from. A copy of this file pins each layered crate.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

#[test]
fn modules_import_each_other_in_one_direction_only() {
    let graph = module_graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(graph.len() > 1, "found no modules: {graph:?}");
    let edges: Vec<String> = (graph.iter())
        .map(|(m, to)| format!("  {m} -> {}", Vec::from_iter(to.iter().cloned()).join(", ")))
        .collect();
    // Shown with `--no-capture`: the crate's layers as the test sees them.
    println!("the module graph:\n{}", edges.join("\n"));
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "modules import each other in a circle: {}\nthe module graph:\n{}",
            cycle.join(" -> "),
            edges.join("\n")
        );
    }
}

/// The scanner must see what it is meant to, or the test above proves nothing.
#[test]
fn the_scanner_finds_every_kind_of_reference_and_skips_the_rest() {
    let source = "use crate::a::X;\nuse crate::{b::Y, c};\nfn f() { crate::d::g(); crate::Re::h() }\n\
        // crate::e in a comment\n/* crate::e */ const S: &str = \"crate::e\"; const C: char = '\"';\n\
        fn l<'a>(x: &'a str) { crate::f::g(x) }\n#[cfg(test)]\nmod tests { use crate::e; }\n";
    let modules = BTreeSet::from_iter(["a", "b", "c", "d", "e", "f", "re"].map(String::from));
    let reexports = BTreeMap::from([("Re".to_string(), "re".to_string())]);
    let found = references(
        &strip_tests(&strip_comments_and_strings(source)),
        &modules,
        &reexports,
    );
    let expected = BTreeSet::from_iter(["a", "b", "c", "d", "f", "re"].map(String::from));
    assert_eq!(found, expected);
    let lib = strip_comments_and_strings("pub mod a;\npub use a::{X, Y as Z};\npub use b::W;\n");
    let names = reexported(&lib, &modules);
    assert_eq!(names.get("Z").map(String::as_str), Some("a"));
    assert_eq!(names.get("W").map(String::as_str), Some("b"));
    let ring = BTreeMap::from([
        ("x".to_string(), BTreeSet::from(["y".to_string()])),
        ("y".to_string(), BTreeSet::from(["x".to_string()])),
    ]);
    assert_eq!(
        find_cycle(&ring),
        Some(vec!["x".into(), "y".into(), "x".into()])
    );
}

/// Each top-level module of the crate and the top-level modules it names.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    collect_rs_files(src, &mut files);
    let module_of = |path: &Path| -> Option<String> {
        let relative = path.strip_prefix(src).ok()?;
        let first = relative.components().next()?.as_os_str().to_str()?;
        let name = first.strip_suffix(".rs").unwrap_or(first);
        let is_test_file = path.file_stem().is_some_and(|s| s == "tests");
        (name != "lib" && name != "main" && !is_test_file).then(|| name.to_string())
    };
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(f)).collect();
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap_or_default();
    let reexports = reexported(&strip_comments_and_strings(&lib), &modules);
    let mut graph: BTreeMap<String, BTreeSet<String>> = modules
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for file in &files {
        let Some(module) = module_of(file) else {
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read a source file");
        let mut code = strip_tests(&strip_comments_and_strings(&text));
        if file.parent() == Some(src) {
            // In a top-level module, `super` is the crate root.
            code = code.replace("super::", "crate::");
        }
        let named = references(&code, &modules, &reexports);
        let edges = graph.get_mut(&module).expect("every module has a node");
        edges.extend(named.into_iter().filter(|m| *m != module));
    }
    graph
}

fn collect_rs_files(dir: &Path, into: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("read src").path();
        if path.is_dir() {
            collect_rs_files(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
}

/// The modules the `crate::` paths in `code` lead into.
fn references(
    code: &str,
    modules: &BTreeSet<String>,
    reexports: &BTreeMap<String, String>,
) -> BTreeSet<String> {
    let resolve = |name: &str| match modules.contains(name) {
        true => Some(name.to_string()),
        false => reexports.get(name).cloned(),
    };
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        if code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue; // `pub(crate)::`-like text cannot occur; `xcrate::` is another path.
        }
        let rest = code[at + "crate::".len()..].trim_start();
        let heads = match rest.strip_prefix('{') {
            Some(group) => top_level_items(group)
                .into_iter()
                .map(first_segment)
                .collect(),
            None => vec![first_segment(rest)],
        };
        found.extend(heads.iter().filter_map(|h| resolve(h)));
    }
    found
}

/// Name → module for each `pub use <module>::…` in lib.rs.
fn reexported(lib: &str, modules: &BTreeSet<String>) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for item in lib.split(';') {
        let Some(path) = item.trim().strip_prefix("pub use ") else {
            continue;
        };
        let path = path
            .trim()
            .trim_start_matches("crate::")
            .trim_start_matches("self::");
        let module = first_segment(path);
        if !modules.contains(&module) {
            continue;
        }
        let tail = path[module.len()..].trim_start_matches("::").trim();
        let items = match tail.strip_prefix('{') {
            Some(group) => top_level_items(group),
            None => vec![tail],
        };
        for item in items {
            let name = item.rsplit(" as ").next().unwrap_or(item);
            let name = name.rsplit("::").next().unwrap_or(name).trim();
            if !name.is_empty() {
                names.insert(name.to_string(), module.clone());
            }
        }
    }
    names
}

/// The comma-separated items of a `{…}` group whose opening brace is already consumed.
fn top_level_items(group: &str) -> Vec<&str> {
    let (mut depth, mut start, mut items) = (0usize, 0usize, Vec::new());
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(group[start..i].trim());
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(group[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    items.retain(|s| !s.is_empty());
    items
}

fn first_segment(path: &str) -> String {
    path.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// `source` with comments removed and string and char literals emptied, so neither can
/// hold a `crate::` or a brace.
fn strip_comments_and_strings(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let (mut out, mut i) = (String::with_capacity(source.len()), 0);
    while i < chars.len() {
        let next = chars.get(i + 1).copied();
        match (chars[i], next) {
            ('/', Some('/')) => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            ('/', Some('*')) => {
                let mut depth = 0;
                while i < chars.len() {
                    if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                        depth += 1;
                        i += 2;
                    } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            ('r', Some('"' | '#')) if !ident_before(&chars, i) => {
                let hashes = chars[i + 1..].iter().take_while(|&&c| c == '#').count();
                if chars.get(i + 1 + hashes) != Some(&'"') {
                    out.push('r');
                    i += 1;
                    continue;
                }
                let closing: Vec<char> = std::iter::once('"').chain(vec!['#'; hashes]).collect();
                i += hashes + 2;
                while i < chars.len() && !chars[i..].starts_with(&closing) {
                    i += 1;
                }
                i += closing.len();
                out.push_str("\"\"");
            }
            ('"', _) => {
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("\"\"");
            }
            // A char literal ('x', '\n', '\''), not a lifetime ('a).
            ('\'', Some('\\')) => {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
                out.push_str("' '");
            }
            ('\'', Some(_)) if chars.get(i + 2) == Some(&'\'') => {
                i += 3;
                out.push_str("' '");
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn ident_before(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

/// `code` without its `#[cfg(test)] mod … { … }` blocks (comments already stripped).
fn strip_tests(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let is_mod_block = after.trim_start().starts_with("mod ")
            && after
                .find('{')
                .is_some_and(|b| after.find(';').is_none_or(|s| b < s));
        if !is_mod_block {
            out.push_str("#[cfg(test)]");
            rest = after;
            continue;
        }
        let open = after.find('{').expect("checked above");
        let mut depth = 0usize;
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

/// A circle of modules, first module repeated at the end, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    // 0: not seen, 1: on the current path, 2: done (no cycle through it).
    let mut state: BTreeMap<&str, u8> = BTreeMap::new();
    let mut path: Vec<&str> = Vec::new();
    fn visit<'g>(
        node: &'g str,
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<&'g str, u8>,
        path: &mut Vec<&'g str>,
    ) -> Option<Vec<String>> {
        state.insert(node, 1);
        path.push(node);
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let from = path.iter().position(|m| m == next).expect("on the path");
                    let mut cycle: Vec<String> =
                        path[from..].iter().map(|m| m.to_string()).collect();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(cycle) = visit(next, graph, state, path) {
                        return Some(cycle);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        state.insert(node, 2);
        None
    }
    graph
        .keys()
        .find_map(|start| match state.get(start.as_str()) {
            None => visit(start, graph, &mut state, &mut path),
            Some(_) => None,
        })
}
