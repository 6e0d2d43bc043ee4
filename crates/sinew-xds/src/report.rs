//! The migration report: every field of an Envoy bootstrap that Sinew cannot honour,
//! found in one pass.
//!
//! A mapper refuses the first thing it cannot map, which is right for an xDS update (the
//! NACK names one field and the running config stays). A user moving a bootstrap file
//! wants the whole list. While [`collecting`] runs, [`crate::Ctx::only_supported`] notes
//! every unsupported field it finds and lets the mapper go on as if the field were
//! absent, and the bootstrap loader maps each static resource on its own, so one
//! refused listener does not hide the problems of the next. The mode is a property of
//! the whole mapping run, deep below the mappers' signatures, so it is kept per thread
//! rather than threaded through fifty call sites; nothing in it outlives the call.

use std::cell::RefCell;

use crate::XdsError;

thread_local! {
    static FOUND: RefCell<Option<Vec<XdsError>>> = const { RefCell::new(None) };
}

/// Runs `map` with unsupported fields noted instead of refused; returns what it returned
/// and what was noted, in the order found.
pub(crate) fn collecting<T>(map: impl FnOnce() -> T) -> (T, Vec<XdsError>) {
    let outer = FOUND.with(|f| f.borrow_mut().replace(Vec::new()));
    let value = map();
    let found = FOUND.with(|f| std::mem::replace(&mut *f.borrow_mut(), outer));
    (value, found.unwrap_or_default())
}

/// Whether a report is being collected on this thread.
pub(crate) fn is_collecting() -> bool {
    FOUND.with(|f| f.borrow().is_some())
}

/// Notes `error` if a report is being collected; otherwise hands it back.
pub(crate) fn note(error: XdsError) -> Result<(), XdsError> {
    FOUND.with(|f| match f.borrow_mut().as_mut() {
        Some(found) => {
            found.push(error);
            Ok(())
        }
        None => Err(error),
    })
}

/// Envoy's full name of the message a prost type was generated from:
/// `envoy_types::pb::envoy::config::cluster::v3::cluster::CommonLbConfig` is
/// `envoy.config.cluster.v3.Cluster.CommonLbConfig` (prost turns each enclosing message
/// into a snake_case module after the package's version).
pub(crate) fn envoy_type_name<M>() -> String {
    let rust = std::any::type_name::<M>();
    let rust = rust.split('<').next().unwrap_or(rust);
    // The crate's own modules come first (`envoy_types::generated::`); the proto package
    // starts at its root name.
    let roots = ["envoy", "google", "xds", "udpa", "validate"];
    let segments = rust.split("::");
    let start = rust
        .split("::")
        .position(|s| roots.contains(&s))
        .unwrap_or(0);
    let mut out = Vec::new();
    let mut past_version = false;
    for segment in segments.skip(start) {
        out.push(if past_version {
            upper_camel(segment)
        } else {
            segment.to_string()
        });
        past_version |= is_package_version(segment);
    }
    out.join(".")
}

/// `v3`, `v1alpha`, `v2beta1`: the last segment of an Envoy package.
fn is_package_version(segment: &str) -> bool {
    let Some(rest) = segment.strip_prefix('v') else {
        return false;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let tail = &rest[digits..];
    digits > 0
        && (tail.is_empty()
            || ["alpha", "beta"].iter().any(|stage| {
                tail.strip_prefix(stage)
                    .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
            }))
}

/// `common_lb_config` → `CommonLbConfig`; a type name already in camel case stays.
fn upper_camel(snake: &str) -> String {
    snake
        .split('_')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

/// The message for an unsupported `field` of Envoy message `envoy_type`: which field it
/// is, in Envoy's names, and what removing it means.
pub(crate) fn unsupported_message(envoy_type: &str, field: &str) -> String {
    format!(
        "is not supported by Sinew ({envoy_type}.{field}); remove it to run on Sinew, which will then not do what it asks (docs/envoy-bootstrap.md lists what is supported)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::{cluster::CommonLbConfig, Cluster};
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;

    #[test]
    fn prost_types_are_named_as_envoy_names_them() {
        assert_eq!(
            envoy_type_name::<Cluster>(),
            "envoy.config.cluster.v3.Cluster"
        );
        assert_eq!(
            envoy_type_name::<CommonLbConfig>(),
            "envoy.config.cluster.v3.Cluster.CommonLbConfig"
        );
        assert_eq!(
            envoy_type_name::<HttpConnectionManager>(),
            "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
        );
    }

    #[test]
    fn notes_are_kept_only_while_collecting() {
        let error = || XdsError {
            resource: "listener \"a\"".into(),
            field: "x".into(),
            message: "m".into(),
        };
        assert!(note(error()).is_err());
        let ((), found) = collecting(|| {
            assert!(is_collecting());
            assert!(note(error()).is_ok());
        });
        assert_eq!(found, vec![error()]);
        assert!(!is_collecting());
    }
}
