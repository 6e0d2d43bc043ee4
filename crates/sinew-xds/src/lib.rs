//! Envoy's v3 API in Sinew: listeners, route configurations, clusters and endpoint
//! assignments, as an xDS server (or an Envoy bootstrap) sends them, mapped into Sinew's
//! one config model ([`sinew_config::model`]).
//!
//! Each mapper takes the fields it understands and then checks that nothing else is set:
//! a field that would change behaviour and that Sinew does not support is an error that
//! names the resource and the field path (it becomes the NACK's `error_detail`), never
//! silently ignored. Fields without behaviour (names, stat prefixes, metadata Sinew does
//! not read) are ignored; docs/xds.md lists both.
//!
//! Mappers produce the model's JSON shape (the same shape as Sinew's YAML), deserialized
//! into the model types so every default is Sinew's own.

// Control planes still send deprecated fields (`http2_protocol_options`, header matchers'
// `exact_match`, `append`), and Envoy still honours them, so Sinew reads them too.
#![allow(deprecated)]

mod access_log;
pub mod assemble;
pub mod bootstrap;
pub mod cluster;
mod compression;
mod convert;
mod cors;
mod csrf;
mod dubbo_proxy;
pub mod endpoint;
mod envoy_text;
mod filter_chains;
pub mod grpc_services;
mod health_check;
mod jwt_authn;
pub mod listener;
mod local_ratelimit;
mod overload;
mod protocol_options;
mod rbac;
mod redis_proxy;
mod report;
pub mod resource_file;
pub mod route;
pub mod runtime;
pub mod secret;
mod static_secrets;
#[cfg(test)]
mod test_fixtures;
mod tls_context;
mod trace;
mod unsupported;

use std::fmt;

/// Why a resource was refused.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct XdsError {
    /// `listener "web"`, `cluster "svc"`, ...
    pub resource: String,
    /// The field path inside the resource, e.g. `filter_chains[0].filters[0]`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for XdsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.resource, self.message)
        } else {
            write!(f, "{}: {}: {}", self.resource, self.field, self.message)
        }
    }
}

impl std::error::Error for XdsError {}

/// Builds errors for one resource.
#[derive(Clone)]
pub(crate) struct Ctx {
    resource: String,
}

impl Ctx {
    pub fn new(kind: &str, name: &str) -> Self {
        Ctx {
            resource: format!("{kind} {name:?}"),
        }
    }

    pub fn error(&self, field: impl Into<String>, message: impl Into<String>) -> XdsError {
        XdsError {
            resource: self.resource.clone(),
            field: field.into(),
            message: message.into(),
        }
    }

    /// Errs naming the first field still set in `rest` (under `path`); while a migration
    /// report is collected ([`report`]), notes every such field and lets the caller go on.
    pub fn only_supported<M: fmt::Debug + Default + PartialEq>(
        &self,
        path: impl fmt::Display,
        rest: &M,
    ) -> Result<(), XdsError> {
        let path = path.to_string();
        let at = |field: String| {
            if path.is_empty() {
                field
            } else {
                format!("{path}.{field}")
            }
        };
        if report::is_collecting() {
            let envoy_type = report::envoy_type_name::<M>();
            for field in unsupported::set_fields(rest) {
                let message = report::unsupported_message(&envoy_type, &field);
                report::note(self.error(at(field), message))?;
            }
            return Ok(());
        }
        unsupported::first_set_field(rest)
            .map_err(|field| self.error(at(field), "is not supported by Sinew"))
    }
}
