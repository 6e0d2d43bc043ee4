//! Finding the field Sinew does not support: after a mapper has taken every field it
//! understands (and those it may ignore) out of a message, anything left that differs
//! from the default would change behaviour. This names the first such field, from the
//! message's `Debug` form (prost prints fields by their proto names, in order).

use std::fmt::Debug;

/// Every top-level field of `rest` that differs from its default, in order.
pub fn set_fields<M: Debug + Default + PartialEq>(rest: &M) -> Vec<String> {
    if *rest == M::default() {
        return Vec::new();
    }
    let set = format!("{rest:?}");
    let unset = format!("{:?}", M::default());
    let defaults = top_level_fields(&unset);
    let fields: Vec<String> = top_level_fields(&set)
        .into_iter()
        .filter(|(name, text)| !defaults.iter().any(|(n, t)| n == name && t == text))
        .map(|(name, _)| name.to_string())
        .collect();
    if fields.is_empty() {
        // Not a `Name { field: .. }` rendering: name what the first-difference scan finds.
        return first_set_field(rest).err().into_iter().collect();
    }
    fields
}

/// The fields of a `Debug` rendering `Name { a: .., b: .. }` with each one's text.
fn top_level_fields(debug: &str) -> Vec<(&str, &str)> {
    let bytes = debug.as_bytes();
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    let mut fields = Vec::new();
    let mut start: Option<usize> = None;
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' | b'(' => {
                depth += 1;
                if depth == 1 && b == b'{' {
                    start = Some(i + 1);
                }
            }
            b'}' | b']' | b')' => {
                if depth == 1 && b == b'}' {
                    if let Some(s) = start.take() {
                        push_field(debug, s, i, &mut fields);
                    }
                }
                depth = depth.saturating_sub(1);
            }
            b',' if depth == 1 => {
                if let Some(s) = start.replace(i + 1) {
                    push_field(debug, s, i, &mut fields);
                }
            }
            _ => {}
        }
    }
    fields
}

/// `name: text` between `from` and `to`, if it is one.
fn push_field<'a>(debug: &'a str, from: usize, to: usize, fields: &mut Vec<(&'a str, &'a str)>) {
    let Some(part) = debug.get(from..to) else {
        return;
    };
    let Some((name, text)) = part.split_once(':') else {
        return;
    };
    let name = name.trim();
    if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        fields.push((name, text.trim()));
    }
}

/// `Ok` when `rest` is all defaults; otherwise the name of its first non-default field.
pub fn first_set_field<M: Debug + Default + PartialEq>(rest: &M) -> Result<(), String> {
    if *rest == M::default() {
        return Ok(());
    }
    let set = format!("{rest:?}");
    let unset = format!("{:?}", M::default());
    let differs_at = set
        .bytes()
        .zip(unset.bytes())
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| set.len().min(unset.len()));
    Err(field_at(&set, differs_at).unwrap_or_else(|| "?".into()))
}

/// The top-level field whose text contains byte `at` of a `Debug` rendering
/// `Name { a: .., b: .. }`.
fn field_at(debug: &str, at: usize) -> Option<String> {
    let bytes = debug.as_bytes();
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut current: Option<String> = None;
    let mut i = 0;
    while i < bytes.len() && i <= at {
        let b = bytes[i];
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' | b'(' => {
                depth += 1;
                // A field name follows `{ ` at depth 1.
                if depth == 1 && b == b'{' {
                    current = name_after(debug, i + 1);
                }
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            b',' if depth == 1 => current = name_after(debug, i + 1),
            _ => {}
        }
        i += 1;
    }
    current
}

fn name_after(debug: &str, from: usize) -> Option<String> {
    let rest = debug.get(from..)?.trim_start();
    let end = rest.find(':')?;
    let name = &rest[..end];
    name.chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
        .then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, Clone)]
    struct Inner {
        x: Vec<u32>,
    }

    #[derive(Debug, Default, PartialEq, Clone)]
    struct Message {
        name: String,
        inner: Option<Inner>,
        count: u32,
        tags: Vec<String>,
    }

    #[test]
    fn every_set_field_is_listed_in_order() {
        let m = Message {
            name: "a, b: {".into(),
            count: 3,
            tags: vec!["x".into()],
            ..Message::default()
        };
        assert_eq!(set_fields(&m), vec!["name", "count", "tags"]);
        assert!(set_fields(&Message::default()).is_empty());
        let m = Message {
            inner: Some(Inner { x: vec![] }),
            ..Message::default()
        };
        assert_eq!(set_fields(&m), vec!["inner"]);
    }

    #[test]
    fn all_defaults_pass() {
        assert_eq!(first_set_field(&Message::default()), Ok(()));
    }

    #[test]
    fn the_first_set_field_is_named_even_after_nested_and_quoted_text() {
        let m = Message {
            count: 3,
            ..Message::default()
        };
        assert_eq!(first_set_field(&m), Err("count".into()));
        let m = Message {
            inner: Some(Inner { x: vec![1, 2] }),
            tags: vec!["a, b: {".into()],
            ..Message::default()
        };
        assert_eq!(first_set_field(&m), Err("inner".into()));
        let m = Message {
            tags: vec!["x".into()],
            ..Message::default()
        };
        assert_eq!(first_set_field(&m), Err("tags".into()));
    }
}
