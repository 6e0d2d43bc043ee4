//! Envoy's `access_log` lists (on the HTTP connection manager and the TCP proxy) mapped
//! to the model's access logs: the file logger (`FileAccessLog`) and the stream loggers
//! (`StdoutAccessLog`, `StderrAccessLog`), each with a text or a flat JSON format, and
//! the filters Sinew evaluates (status code, duration, sampling, `and`/`or`).
//!
//! `not_health_check_filter` always passes: Sinew has no health-check filter that would
//! mark a request as one. Other loggers (gRPC, OpenTelemetry, fluentd) and filters are
//! refused by name.

use envoy_types::pb::envoy::config::accesslog::v3::{
    access_log, access_log_filter::FilterSpecifier, comparison_filter, AccessLog, AccessLogFilter,
    ComparisonFilter,
};
use envoy_types::pb::envoy::config::core::v3::{
    data_source, substitution_format_string, SubstitutionFormatString,
};
use envoy_types::pb::envoy::extensions::access_loggers::file::v3::{
    file_access_log, FileAccessLog,
};
use envoy_types::pb::envoy::extensions::access_loggers::stream::v3::{
    stderr_access_log, stdout_access_log, StderrAccessLog, StdoutAccessLog,
};
use envoy_types::pb::envoy::r#type::v3::fractional_percent::DenominatorType;
use envoy_types::pb::google::protobuf::{value::Kind, Struct};
use serde_json::{json, Map, Value};

use crate::convert::decode;
use crate::{Ctx, XdsError};

const FILE: &str = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog";
const STDOUT: &str =
    "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog";
const STDERR: &str =
    "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog";

/// The access logs at `path` (an `access_log` list), as the model's list; `None` when
/// there are none.
pub(crate) fn map(ctx: &Ctx, path: &str, logs: Vec<AccessLog>) -> Result<Option<Value>, XdsError> {
    if logs.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(logs.len());
    for (i, log) in logs.into_iter().enumerate() {
        out.push(one(ctx, &format!("{path}[{i}]"), log)?);
    }
    Ok(Some(Value::Array(out)))
}

fn one(ctx: &Ctx, path: &str, log: AccessLog) -> Result<Value, XdsError> {
    let Some(access_log::ConfigType::TypedConfig(any)) = log.config_type else {
        return Err(ctx.error(
            format!("{path}.typed_config"),
            "is required (a file, stdout or stderr logger)",
        ));
    };
    let mut out = Map::new();
    let format = match any.type_url.as_str() {
        FILE => {
            let file: FileAccessLog = decode(ctx, path, &any)?;
            if file.path.is_empty() {
                return Err(ctx.error(format!("{path}.typed_config.path"), "is required"));
            }
            out.insert("path".into(), json!(file.path));
            match file.access_log_format {
                None => None,
                Some(file_access_log::AccessLogFormat::Format(text)) => Some(json!(text)),
                Some(file_access_log::AccessLogFormat::JsonFormat(fields)) => {
                    out.insert(
                        "json_format".into(),
                        json_fields(ctx, &format!("{path}.typed_config.json_format"), fields)?,
                    );
                    None
                }
                Some(file_access_log::AccessLogFormat::TypedJsonFormat(_)) => {
                    return Err(ctx.error(
                        format!("{path}.typed_config.typed_json_format"),
                        "is not supported by Sinew (use json_format with string values)",
                    ))
                }
                Some(file_access_log::AccessLogFormat::LogFormat(f)) => {
                    substitution(ctx, &format!("{path}.typed_config.log_format"), f, &mut out)?
                }
            }
        }
        STDOUT | STDERR => {
            let (target, format) = if any.type_url == STDOUT {
                let log: StdoutAccessLog = decode(ctx, path, &any)?;
                let format = log.access_log_format.map(|f| match f {
                    stdout_access_log::AccessLogFormat::LogFormat(f) => f,
                });
                (sinew_config::access_log::STDOUT_PATH, format)
            } else {
                let log: StderrAccessLog = decode(ctx, path, &any)?;
                let format = log.access_log_format.map(|f| match f {
                    stderr_access_log::AccessLogFormat::LogFormat(f) => f,
                });
                (sinew_config::access_log::STDERR_PATH, format)
            };
            out.insert("path".into(), json!(target));
            match format {
                Some(f) => {
                    substitution(ctx, &format!("{path}.typed_config.log_format"), f, &mut out)?
                }
                None => None,
            }
        }
        other => {
            return Err(ctx.error(
                format!("{path}.typed_config"),
                format!(
                    "access logger {other:?} is not supported by Sinew (file, stdout and \
                     stderr loggers are)"
                ),
            ))
        }
    };
    if let Some(format) = format {
        out.insert("format".into(), format);
    }
    if let Some(filter) = log.filter {
        if let Some(filter) = self::filter(ctx, &format!("{path}.filter"), filter)? {
            out.insert("filter".into(), filter);
        }
    }
    Ok(Value::Object(out))
}

/// A `SubstitutionFormatString`: the text format it returns, or its JSON fields put in
/// `out`.
fn substitution(
    ctx: &Ctx,
    path: &str,
    mut f: SubstitutionFormatString,
    out: &mut Map<String, Value>,
) -> Result<Option<Value>, XdsError> {
    let format = f.format.take();
    // The content type is the one of a local reply body this message also describes;
    // an access log line has none.
    f.content_type.clear();
    ctx.only_supported(path, &f)?;
    match format {
        None => Ok(None),
        Some(substitution_format_string::Format::TextFormat(text)) => Ok(Some(json!(text))),
        Some(substitution_format_string::Format::TextFormatSource(source)) => {
            match source.specifier {
                Some(data_source::Specifier::InlineString(text)) => Ok(Some(json!(text))),
                Some(data_source::Specifier::InlineBytes(bytes)) => {
                    let text = String::from_utf8(bytes).map_err(|_| {
                        ctx.error(format!("{path}.text_format_source"), "is not UTF-8")
                    })?;
                    Ok(Some(json!(text)))
                }
                _ => Err(ctx.error(
                    format!("{path}.text_format_source"),
                    "is supported by Sinew only inline (inline_string or inline_bytes)",
                )),
            }
        }
        Some(substitution_format_string::Format::JsonFormat(fields)) => {
            out.insert(
                "json_format".into(),
                json_fields(ctx, &format!("{path}.json_format"), fields)?,
            );
            Ok(None)
        }
    }
}

/// A JSON format's fields: Sinew's are flat, each value a format string.
fn json_fields(ctx: &Ctx, path: &str, fields: Struct) -> Result<Value, XdsError> {
    let mut out = Map::new();
    for (key, value) in fields.fields {
        match value.kind {
            Some(Kind::StringValue(text)) => {
                out.insert(key, json!(text));
            }
            _ => {
                return Err(ctx.error(
                    format!("{path}.{key}"),
                    "is supported by Sinew only as a string (a format such as \
                     \"%RESPONSE_CODE%\"); nested objects, numbers and booleans are not",
                ))
            }
        }
    }
    Ok(Value::Object(out))
}

/// A filter as the model's, or `None` where it always passes.
fn filter(ctx: &Ctx, path: &str, filter: AccessLogFilter) -> Result<Option<Value>, XdsError> {
    let Some(specifier) = filter.filter_specifier else {
        return Err(ctx.error(path, "names no filter"));
    };
    let comparison = |name: &str, c: Option<ComparisonFilter>| {
        let at = format!("{path}.{name}.comparison");
        let c = c.ok_or_else(|| ctx.error(&at, "is required"))?;
        let op = match comparison_filter::Op::try_from(c.op) {
            Ok(comparison_filter::Op::Eq) => "EQ",
            Ok(comparison_filter::Op::Ge) => "GE",
            Ok(comparison_filter::Op::Le) => "LE",
            _ => return Err(ctx.error(format!("{at}.op"), "is not an operator")),
        };
        let value = c.value.map_or(0, |v| v.default_value);
        Ok(Some(
            json!({name: {"comparison": {"op": op, "value": value}}}),
        ))
    };
    match specifier {
        FilterSpecifier::StatusCodeFilter(f) => comparison("status_code_filter", f.comparison),
        FilterSpecifier::DurationFilter(f) => comparison("duration_filter", f.comparison),
        FilterSpecifier::NotHealthCheckFilter(_) => Ok(None),
        FilterSpecifier::RuntimeFilter(f) => {
            // The runtime key's value would override the default; Sinew's runtime has no
            // such keys, so the default is what Envoy would use too.
            let at = format!("{path}.runtime_filter.percent_sampled");
            let percent = match f.percent_sampled {
                None => 0.0,
                Some(p) => {
                    let whole = match DenominatorType::try_from(p.denominator) {
                        Ok(DenominatorType::Hundred) => 100.0,
                        Ok(DenominatorType::TenThousand) => 10_000.0,
                        Ok(DenominatorType::Million) => 1_000_000.0,
                        Err(_) => {
                            return Err(
                                ctx.error(format!("{at}.denominator"), "is not a denominator")
                            )
                        }
                    };
                    (f64::from(p.numerator) * 100.0 / whole).min(100.0)
                }
            };
            Ok(Some(
                json!({"runtime_filter": {"percent_sampled": percent}}),
            ))
        }
        FilterSpecifier::AndFilter(list) => {
            let mut kept = Vec::new();
            for (i, f) in list.filters.into_iter().enumerate() {
                if let Some(f) = self::filter(ctx, &format!("{path}.and_filter.filters[{i}]"), f)? {
                    kept.push(f);
                }
            }
            Ok(match kept.len() {
                0 => None,
                1 => kept.pop(),
                _ => Some(json!({"and_filter": {"filters": kept}})),
            })
        }
        FilterSpecifier::OrFilter(list) => {
            let mut kept = Vec::new();
            let mut always = false;
            for (i, f) in list.filters.into_iter().enumerate() {
                match self::filter(ctx, &format!("{path}.or_filter.filters[{i}]"), f)? {
                    Some(f) => kept.push(f),
                    None => always = true,
                }
            }
            Ok(match (always, kept.len()) {
                (true, _) | (false, 0) => None,
                (false, 1) => kept.pop(),
                _ => Some(json!({"or_filter": {"filters": kept}})),
            })
        }
        other => {
            let name = format!("{other:?}");
            let name = name.split('(').next().unwrap_or("filter");
            Err(ctx.error(
                path,
                format!(
                    "{name} is not supported by Sinew (status_code_filter, duration_filter, \
                     runtime_filter, not_health_check_filter, and_filter and or_filter are)"
                ),
            ))
        }
    }
}
