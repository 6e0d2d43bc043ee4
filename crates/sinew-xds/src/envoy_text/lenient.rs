//! What Envoy's YAML loader accepts beyond the strict proto3 JSON mapping, rewritten into
//! it before the bootstrap is parsed, walking the YAML with Envoy's descriptors (into
//! `Any` by its `@type`):
//!
//! - enum names in any case: real bootstraps say `strict_dns`, `round_robin` or `auto`
//!   where the proto says `STRICT_DNS`;
//! - one value where a list is expected (`filter_chains: {filters: [...]}`): Envoy's
//!   protobuf converter reads it as a list of that one value;
//! - an empty `typed_config` (`{}`, no `@type`): an `Any` with no type, which Envoy
//!   reads as "the extension `name` says, with its default config" — the same as no
//!   `typed_config`, which is how Sinew's mappers then see it.

use prost_reflect::{Kind, MessageDescriptor};
use serde_yaml_ng::Value;

/// `text` with every enum name written as the proto spells it and every lone value of a
/// list field made a list, or `None` when nothing needed rewriting (or the text is not
/// YAML: the parser reports that).
pub(crate) fn canonical(text: &str, root: &MessageDescriptor) -> Option<String> {
    let mut value: Value = serde_yaml_ng::from_str(text).ok()?;
    let mut changed = false;
    walk_message(&mut value, root, &mut changed);
    if !changed {
        return None;
    }
    serde_yaml_ng::to_string(&value).ok()
}

fn walk_message(value: &mut Value, message: &MessageDescriptor, changed: &mut bool) {
    let Value::Mapping(map) = value else { return };
    let message = if message.full_name() == "google.protobuf.Any" {
        let Some(inner) = map.get("@type").and_then(Value::as_str).and_then(|url| {
            let name = url.rsplit('/').next().unwrap_or(url);
            super::descriptors().get_message_by_name(name)
        }) else {
            return;
        };
        inner
    } else {
        message.clone()
    };
    let empty_any: Vec<Value> = map
        .iter()
        .filter(|(key, child)| {
            let field = key.as_str().and_then(|key| {
                message
                    .get_field_by_name(key)
                    .or_else(|| message.get_field_by_json_name(key))
            });
            let is_any = field.is_some_and(|f| {
                !f.is_list()
                    && matches!(f.kind(), Kind::Message(m) if m.full_name() == "google.protobuf.Any")
            });
            let empty = match child {
                Value::Mapping(m) => m.is_empty(),
                Value::Null => true,
                _ => false,
            };
            is_any && empty
        })
        .map(|(key, _)| key.clone())
        .collect();
    for key in empty_any {
        map.remove(&key);
        *changed = true;
    }
    for (key, child) in map.iter_mut() {
        let Some(key) = key.as_str() else { continue };
        let Some(field) = message
            .get_field_by_name(key)
            .or_else(|| message.get_field_by_json_name(key))
        else {
            continue;
        };
        if field.is_map() {
            let Kind::Message(entry) = field.kind() else {
                continue;
            };
            let value_kind = entry.map_entry_value_field().kind();
            if let Value::Mapping(entries) = child {
                for (_, v) in entries.iter_mut() {
                    walk_kind(v, &value_kind, changed);
                }
            }
        } else if field.is_list() {
            if !matches!(child, Value::Sequence(_) | Value::Null) {
                *child = Value::Sequence(vec![std::mem::take(child)]);
                *changed = true;
            }
            if let Value::Sequence(items) = child {
                for item in items {
                    walk_kind(item, &field.kind(), changed);
                }
            }
        } else {
            walk_kind(child, &field.kind(), changed);
        }
    }
}

fn walk_kind(value: &mut Value, kind: &Kind, changed: &mut bool) {
    match kind {
        Kind::Message(m) => walk_message(value, m, changed),
        Kind::Enum(e) => {
            let Value::String(name) = value else { return };
            if e.get_value_by_name(name).is_some() {
                return;
            }
            if let Some(exact) = e.values().find(|v| v.name().eq_ignore_ascii_case(name)) {
                *name = exact.name().to_string();
                *changed = true;
            }
        }
        _ => {}
    }
}
