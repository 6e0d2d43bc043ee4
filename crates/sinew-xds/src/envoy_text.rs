//! Envoy's text format: the protobuf descriptors of the messages Sinew reads (embedded by
//! `build.rs`), the proto3 JSON parser that reports errors at their line and column, and
//! the leniencies of Envoy's YAML loader. Bootstraps and filesystem xDS files are read
//! with these.

use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage};
use serde::de::DeserializeSeed;
use sinew_config::{ConfigError, SourceMap};

pub(crate) mod lenient;

/// Envoy's descriptors for the bootstrap and the extensions Sinew maps (see build.rs).
pub(crate) fn descriptors() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(
            include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptors.bin")).as_slice(),
        )
        .expect("build.rs embeds a valid descriptor set")
    })
}

/// For prost-reflect's "message 'NAME' not found" about an `@type`: whether NAME is an Envoy
/// type Sinew has no mapper for, or no Envoy type at all (a misspelling, or another version).
pub(crate) fn unknown_type_message(message: &str) -> Option<String> {
    let name = message
        .strip_prefix("message '")?
        .strip_suffix("' not found")?;
    static KNOWN: &str = include_str!(concat!(env!("OUT_DIR"), "/envoy_type_names.txt"));
    Some(if KNOWN.lines().any(|known| known == name) {
        format!(
            "Envoy type {name} is not supported by Sinew (docs/envoy-bootstrap.md lists what is)"
        )
    } else if is_contrib(name) {
        format!(
            "Envoy type {name} is a contrib extension (built only into Envoy's contrib \
             images), which Sinew does not support"
        )
    } else {
        format!("{name:?} is not an Envoy v3 type: check the spelling of @type (type.googleapis.com/envoy....v3.Name)")
    })
}

/// Whether `name` is in one of the extensions Envoy keeps under `contrib/` (shipped in
/// its contrib images only, so absent from the descriptors Sinew embeds): a real Envoy
/// type, not a misspelling.
fn is_contrib(name: &str) -> bool {
    const CONTRIB: &[&str] = &[
        "checksum",
        "client_ssl_auth",
        "cryptomb",
        "dlb",
        "dynamo",
        "generic_proxy",
        "golang",
        "hyperscan",
        "kafka_broker",
        "kafka_mesh",
        "language",
        "mysql_proxy",
        "postgres_proxy",
        "qat",
        "rocketmq_proxy",
        "sip_proxy",
        "squash",
        "sxg",
    ];
    name.starts_with("envoy.extensions.")
        && name.split('.').any(|segment| CONTRIB.contains(&segment))
}

/// Parses `text` as the Envoy message `full_name` (proto3 JSON mapping, YAML or JSON);
/// the error is at the field's line and column.
pub(crate) fn parse_message<T: prost::Message + Default>(
    text: &str,
    source_map: &SourceMap,
    full_name: &str,
) -> Result<T, ConfigError> {
    struct Seed(prost_reflect::MessageDescriptor);
    impl<'de> DeserializeSeed<'de> for Seed {
        type Value = DynamicMessage;
        fn deserialize<D: serde::Deserializer<'de>>(
            self,
            deserializer: D,
        ) -> Result<DynamicMessage, D::Error> {
            DynamicMessage::deserialize_with_options(
                self.0,
                deserializer,
                &DeserializeOptions::new(),
            )
        }
    }
    let descriptor = descriptors()
        .get_message_by_name(full_name)
        .expect("the message is embedded");
    let mut track = serde_path_to_error::Track::new();
    let deserializer = serde_yaml_ng::Deserializer::from_str(text);
    let message = Seed(descriptor)
        .deserialize(serde_path_to_error::Deserializer::new(
            deserializer,
            &mut track,
        ))
        .map_err(|e| {
            let path = track.path().to_string();
            let path = if path == "." { String::new() } else { path };
            let mut error = sinew_config::yaml_error(path, &e, source_map);
            if let Some(better) = unknown_type_message(&error.message) {
                error.message = better;
            }
            // The parser reports an unknown field at the message holding it (inside an
            // `Any`, at the `Any`'s first line): the field's own path and place say more.
            let unknown = error
                .message
                .strip_prefix("unrecognized field name '")
                .and_then(|rest| rest.strip_suffix('\''))
                .map(str::to_string);
            if let Some(field) = unknown {
                error.path = if error.path.is_empty() {
                    field
                } else {
                    format!("{}.{field}", error.path)
                };
                error.message = "is not a field of this Envoy message (check its spelling and the message's proto)".into();
                if let Some(at) = source_map.get(&error.path) {
                    error.position = Some(at);
                }
            }
            error
        })?;
    message
        .transcode_to::<T>()
        .map_err(|e| ConfigError::new("", format!("does not map to Envoy's {full_name}: {e}")))
}
