//! Envoy's layered runtime (`layered_runtime`), for the keys Sinew honours: static layers
//! (values written in the bootstrap) and the admin layer (values set with the admin API's
//! `/runtime_modify`), the later layer winning, as in Envoy.
//!
//! Runtime values feed the mapping: a `runtime_key` of a fractional percent (route
//! mirror policies' `runtime_fraction`, CORS and CSRF `filter_enabled`), and
//! `envoy.resource_limits.listener.NAME.connection_limit`, are read when a resource is
//! mapped; a change through the admin layer maps the bootstrap again. A key in a static
//! layer that nothing reads is refused, naming it, unless it is one of Envoy's own
//! feature flags (`envoy.reloadable_features.*`, `envoy.restart_features.*`), which
//! switch code paths Sinew does not have. Disk and RTDS layers are refused.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};

use serde_json::Value;

/// The runtime a bootstrap declares.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Runtime {
    /// The static layers' values by dotted key (`a.b.c`), later layers over earlier.
    static_values: BTreeMap<String, Value>,
    /// The layers by name and kind (`static`, `admin`), in order.
    layers: Vec<(String, &'static str)>,
    /// For each static key, the index of the layer that set it last.
    set_by: BTreeMap<String, usize>,
}

/// Values set through `/runtime_modify`: they outlive reloads, as Envoy's do.
static ADMIN_VALUES: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());
/// The runtime of the bootstrap the proxy runs: xDS resources are mapped with it.
static INSTALLED: RwLock<Option<Arc<Runtime>>> = RwLock::new(None);

thread_local! {
    /// The runtime of the bootstrap being mapped on this thread, and the keys read.
    static MAPPING: RefCell<Option<(Arc<Runtime>, BTreeSet<String>)>> = const { RefCell::new(None) };
}

impl Runtime {
    /// A static layer's values (a `google.protobuf.Struct`, as JSON), flattened.
    pub(crate) fn add_static_layer(&mut self, name: &str, values: &Value) {
        let mut flat = BTreeMap::new();
        flatten("", values, &mut flat);
        for key in flat.keys() {
            self.set_by.insert(key.clone(), self.layers.len());
        }
        self.static_values.extend(flat);
        self.layers.push((name.to_string(), "static"));
    }

    /// The index of the layer that set static `key` last.
    pub(crate) fn set_by(&self, key: &str) -> usize {
        self.set_by.get(key).copied().unwrap_or_default()
    }

    pub(crate) fn add_admin_layer(&mut self, name: &str) {
        self.layers.push((name.to_string(), "admin"));
    }

    fn has_admin_layer(&self) -> bool {
        self.layers.iter().any(|(_, kind)| *kind == "admin")
    }

    /// Makes this the runtime xDS resources are mapped with, and `/runtime` shows.
    pub fn install(self) {
        *INSTALLED.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(self));
    }

    /// Runs `f` (a bootstrap's mapping) with this runtime on this thread; returns what
    /// it gave and the keys it read.
    pub(crate) fn while_mapping<T>(self, f: impl FnOnce() -> T) -> (T, BTreeSet<String>) {
        let previous = MAPPING.with(|m| m.replace(Some((Arc::new(self), BTreeSet::new()))));
        let out = f();
        let read = MAPPING
            .with(|m| std::mem::replace(&mut *m.borrow_mut(), previous))
            .map(|(_, read)| read)
            .unwrap_or_default();
        (out, read)
    }

    /// The keys of static layers that neither the mapping read (`read`) nor Sinew
    /// honours otherwise: what the migration report refuses.
    pub(crate) fn unread(&self, read: &BTreeSet<String>) -> Vec<String> {
        self.static_values
            .keys()
            .filter(|k| !read.contains(*k))
            .filter(|k| connection_limit_listener(k).is_none())
            .filter(|k| {
                !k.starts_with("envoy.reloadable_features.")
                    && !k.starts_with("envoy.restart_features.")
            })
            .cloned()
            .collect()
    }
}

/// The listener `envoy.resource_limits.listener.NAME.connection_limit` names.
fn connection_limit_listener(key: &str) -> Option<&str> {
    key.strip_prefix("envoy.resource_limits.listener.")?
        .strip_suffix(".connection_limit")
}

/// A `google.protobuf.Struct` (a static layer) as JSON.
pub(crate) fn struct_json(s: &envoy_types::pb::google::protobuf::Struct) -> Value {
    use envoy_types::pb::google::protobuf::value::Kind;
    fn value(v: &envoy_types::pb::google::protobuf::Value) -> Value {
        match &v.kind {
            None | Some(Kind::NullValue(_)) => Value::Null,
            Some(Kind::NumberValue(n)) => {
                serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number)
            }
            Some(Kind::StringValue(s)) => Value::String(s.clone()),
            Some(Kind::BoolValue(b)) => Value::Bool(*b),
            Some(Kind::StructValue(s)) => struct_json(s),
            Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(value).collect()),
        }
    }
    Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value(v)))
            .collect(),
    )
}

fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

/// The runtime mapping reads: the one being mapped on this thread, else the installed
/// one.
fn current() -> Option<Arc<Runtime>> {
    MAPPING
        .with(|m| m.borrow().as_ref().map(|(r, _)| r.clone()))
        .or_else(|| INSTALLED.read().unwrap_or_else(|e| e.into_inner()).clone())
}

/// The value of `key`: the admin layer's (when the runtime has one), else the static
/// layers'. Recorded as read.
pub(crate) fn lookup(key: &str) -> Option<Value> {
    MAPPING.with(|m| {
        if let Some((_, read)) = m.borrow_mut().as_mut() {
            read.insert(key.to_string());
        }
    });
    let runtime = current()?;
    if runtime.has_admin_layer() {
        let admin = ADMIN_VALUES.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = admin.get(key) {
            return Some(Value::String(v.clone()));
        }
    }
    runtime.static_values.get(key).cloned()
}

/// The connection limit the runtime sets for listener `name`, if any; Err names what is
/// wrong with the value.
pub(crate) fn connection_limit(name: &str) -> Result<Option<u64>, String> {
    let key = format!("envoy.resource_limits.listener.{name}.connection_limit");
    match lookup(&key) {
        None => Ok(None),
        Some(v) => integer(&v)
            .map(Some)
            .ok_or_else(|| format!("runtime key {key}: {v} is not a whole number")),
    }
}

/// A runtime value as a whole number: a JSON number, or a string of digits (what the
/// admin layer holds).
pub(crate) fn integer(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Sets admin-layer values (`/runtime_modify`); an empty value removes the key, as in
/// Envoy. Refused when the running bootstrap has no admin layer.
pub fn modify(pairs: &[(String, String)]) -> Result<(), String> {
    let has_admin = INSTALLED
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .is_some_and(|r| r.has_admin_layer());
    if !has_admin {
        return Err("the running config has no admin layer (layered_runtime.layers[].admin_layer): the runtime cannot be changed".into());
    }
    let mut admin = ADMIN_VALUES.lock().unwrap_or_else(|e| e.into_inner());
    for (k, v) in pairs {
        if v.is_empty() {
            admin.remove(k);
        } else {
            admin.insert(k.clone(), v.clone());
        }
    }
    Ok(())
}

/// What `/runtime` shows: the layers, and each key's final value and value per layer,
/// as Envoy's admin API does.
pub fn dump() -> Value {
    let runtime = INSTALLED
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_default();
    let admin = ADMIN_VALUES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut keys: BTreeSet<&String> = runtime.static_values.keys().collect();
    if runtime.has_admin_layer() {
        keys.extend(admin.keys());
    }
    // Protobuf's Struct holds every number as a double: a whole one shows as Envoy
    // shows it (`100`, not `100.0`).
    let as_text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        },
        other => other.to_string(),
    };
    let entries: serde_json::Map<String, Value> = keys
        .into_iter()
        .map(|key| {
            let per_layer: Vec<Value> = runtime
                .layers
                .iter()
                .map(|(_, kind)| match *kind {
                    "admin" => Value::String(admin.get(key).cloned().unwrap_or_default()),
                    _ => Value::String(
                        runtime
                            .static_values
                            .get(key)
                            .map(as_text)
                            .unwrap_or_default(),
                    ),
                })
                .collect();
            let last = per_layer
                .iter()
                .rev()
                .find(|v| v.as_str() != Some(""))
                .cloned()
                .unwrap_or_default();
            (
                key.clone(),
                serde_json::json!({"final_value": last, "layer_values": per_layer}),
            )
        })
        .collect();
    serde_json::json!({
        "layers": runtime.layers.iter().map(|(name, _)| name.clone()).collect::<Vec<_>>(),
        "entries": entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_layers_flatten_and_later_layers_win_and_unread_keys_are_found() {
        let mut runtime = Runtime::default();
        runtime.add_static_layer("base", &serde_json::json!({"a": {"b": 1, "c": "x"}}));
        runtime.add_static_layer(
            "over",
            &serde_json::json!({"a.b": 2, "envoy": {"reloadable_features": {"f": true},
                "resource_limits": {"listener": {"web": {"connection_limit": 5}}}}}),
        );
        let (value, read) = runtime.clone().while_mapping(|| {
            (
                lookup("a.b"),
                connection_limit("web").unwrap(),
                connection_limit("api").unwrap(),
            )
        });
        assert_eq!(value, (Some(serde_json::json!(2)), Some(5), None));
        assert_eq!(runtime.unread(&read), vec!["a.c".to_string()]);
    }

    #[test]
    fn integers_come_as_numbers_or_strings_of_digits() {
        assert_eq!(integer(&serde_json::json!(7)), Some(7));
        assert_eq!(integer(&serde_json::json!(7.0)), Some(7));
        assert_eq!(integer(&serde_json::json!("12")), Some(12));
        assert_eq!(integer(&serde_json::json!(-1)), None);
        assert_eq!(integer(&serde_json::json!("x")), None);
    }
}
