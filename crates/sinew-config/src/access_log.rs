//! Access-log config (Envoy: the HTTP connection manager's and TCP proxy's `access_log`
//! list) and the parser of Envoy-style format strings (`%REQ(:METHOD)%`), used both by
//! validation (an unknown operator is a config error at load) and by the data plane, which
//! compiles each format once into a list of [`Part`]s.

use serde::Deserialize;
use std::collections::BTreeMap;

use crate::ConfigError;

/// Envoy's default access-log format, Sinew's too.
pub const DEFAULT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n";

/// One access log (Envoy: `envoy.access_loggers.file`, its `path` and `log_format`
/// flattened: `format` is `log_format.text_format`, `json_format` is
/// `log_format.json_format`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLog {
    /// A file to append to (reopened on SIGUSR1), or `/dev/stdout` (the default).
    #[serde(default = "default_path")]
    pub path: String,
    /// A text format; Envoy's default format when neither this nor `json_format` is set.
    #[serde(default)]
    pub format: Option<String>,
    /// One JSON object per line, each value a format string (Envoy: `json_format`).
    #[serde(default)]
    pub json_format: Option<BTreeMap<String, String>>,
    /// Only entries this filter accepts are logged (Envoy: `filter`).
    #[serde(default)]
    pub filter: Option<AccessLogFilter>,
    /// Entries waiting for the writer; when full, entries are dropped and counted rather
    /// than the request waiting (Sinew's; Envoy buffers in `flush_access_log_on_*`).
    #[serde(default = "default_queue_size")]
    pub queue_size: usize,
}

pub const STDOUT_PATH: &str = "/dev/stdout";
/// The process's standard error, as a path (Envoy's `StderrAccessLog`).
pub const STDERR_PATH: &str = "/dev/stderr";

fn default_path() -> String {
    STDOUT_PATH.into()
}
fn default_queue_size() -> usize {
    4096
}

/// Envoy's `AccessLogFilter`: exactly one of these.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogFilter {
    #[serde(default)]
    pub status_code_filter: Option<ComparisonFilter>,
    #[serde(default)]
    pub duration_filter: Option<ComparisonFilter>,
    /// Envoy: `runtime_filter` with `percent_sampled` (here a plain percentage, 0 to 100).
    #[serde(default)]
    pub runtime_filter: Option<SampleFilter>,
    #[serde(default)]
    pub and_filter: Option<FilterList>,
    #[serde(default)]
    pub or_filter: Option<FilterList>,
}

/// Envoy's `status_code_filter` / `duration_filter`: `{comparison: {op: GE, value: 400}}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComparisonFilter {
    pub comparison: Comparison,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Comparison {
    pub op: ComparisonOp,
    /// A status code, or a duration in milliseconds (Envoy's `value.default_value`).
    pub value: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ComparisonOp {
    EQ,
    GE,
    LE,
}

impl Comparison {
    pub fn holds(&self, actual: u64) -> bool {
        match self.op {
            ComparisonOp::EQ => actual == self.value,
            ComparisonOp::GE => actual >= self.value,
            ComparisonOp::LE => actual <= self.value,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleFilter {
    pub percent_sampled: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterList {
    pub filters: Vec<AccessLogFilter>,
}

/// Checks access logs at `path` (`listeners[0].http.access_log`).
pub(crate) fn check(path: &str, logs: &[AccessLog], errors: &mut Vec<ConfigError>) {
    for (i, log) in logs.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if log.path.is_empty() {
            errors.push(ConfigError::new(format!("{p}.path"), "must not be empty"));
        }
        if log.queue_size == 0 {
            errors.push(ConfigError::new(
                format!("{p}.queue_size"),
                "must be at least 1",
            ));
        }
        match (&log.format, &log.json_format) {
            (Some(_), Some(_)) => errors.push(ConfigError::new(
                &p,
                "set either `format` or `json_format`, not both",
            )),
            (Some(f), None) => {
                if let Err(e) = parse(f) {
                    errors.push(ConfigError::new(format!("{p}.format"), e));
                }
            }
            (None, Some(fields)) => {
                if fields.is_empty() {
                    errors.push(ConfigError::new(
                        format!("{p}.json_format"),
                        "needs at least one field",
                    ));
                }
                for (key, f) in fields {
                    if let Err(e) = parse(f) {
                        errors.push(ConfigError::new(format!("{p}.json_format.{key}"), e));
                    }
                }
            }
            (None, None) => {}
        }
        if let Some(f) = &log.filter {
            check_filter(&format!("{p}.filter"), f, errors);
        }
    }
}

fn check_filter(p: &str, f: &AccessLogFilter, errors: &mut Vec<ConfigError>) {
    let set = [
        f.status_code_filter.is_some(),
        f.duration_filter.is_some(),
        f.runtime_filter.is_some(),
        f.and_filter.is_some(),
        f.or_filter.is_some(),
    ]
    .iter()
    .filter(|s| **s)
    .count();
    if set != 1 {
        errors.push(ConfigError::new(
            p,
            "set exactly one of status_code_filter, duration_filter, runtime_filter, and_filter, or_filter",
        ));
    }
    if let Some(s) = &f.runtime_filter {
        if !(0.0..=100.0).contains(&s.percent_sampled) {
            errors.push(ConfigError::new(
                format!("{p}.runtime_filter.percent_sampled"),
                "must be between 0 and 100",
            ));
        }
    }
    for (name, list) in [("and_filter", &f.and_filter), ("or_filter", &f.or_filter)] {
        if let Some(list) = list {
            if list.filters.is_empty() {
                errors.push(ConfigError::new(
                    format!("{p}.{name}.filters"),
                    "needs at least one filter",
                ));
            }
            for (i, sub) in list.filters.iter().enumerate() {
                check_filter(&format!("{p}.{name}.filters[{i}]"), sub, errors);
            }
        }
    }
}

/// A piece of a compiled format string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Literal(String),
    Op(Operator),
}

/// Where a `%REQ(...)%` / `%RESP(...)%` looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderSource {
    /// `:method`, `:path` (with the query), `:authority`, `:scheme`.
    Method,
    Path,
    Authority,
    Scheme,
    /// A header, lower-cased.
    Header(String),
}

/// One `%OPERATOR%` of Envoy's command operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operator {
    /// `%START_TIME%` (RFC 3339 with milliseconds) or `%START_TIME(strftime)%`.
    StartTime(Option<String>),
    /// `%REQ(A?B):N%`: the first of `A`, `B` that is present, cut to N bytes.
    Request {
        sources: Vec<HeaderSource>,
        max_len: Option<usize>,
    },
    Response {
        sources: Vec<HeaderSource>,
        max_len: Option<usize>,
    },
    Protocol,
    ResponseCode,
    ResponseFlags,
    BytesReceived,
    BytesSent,
    /// Milliseconds from the request's start to the last byte sent.
    Duration,
    /// Milliseconds from the request's start to the response's headers.
    ResponseDuration,
    UpstreamHost,
    UpstreamCluster,
    DownstreamRemoteAddress,
    DownstreamRemoteAddressWithoutPort,
    DownstreamLocalAddress,
    /// The client certificate's URI SANs, comma-separated (mTLS).
    DownstreamPeerUriSan,
    /// The client certificate's DNS SANs, comma-separated.
    DownstreamPeerDnsSan,
    /// The client certificate's subject.
    DownstreamPeerSubject,
    /// The client certificate's serial number, in hex.
    DownstreamPeerSerial,
    /// `%REQUESTED_SERVER_NAME%` is not tracked; `%HOSTNAME%` is the machine's.
    Hostname,
    /// Why the proxy answered as it did, where it says: for now an authorization
    /// denial, `rbac_access_denied_matched_policy[<policy>]` (Envoy's wording); `-`
    /// otherwise.
    ResponseCodeDetails,
}

impl Operator {
    /// Whether Envoy's JSON formatter writes this operator as a number.
    pub fn is_numeric(&self) -> bool {
        matches!(
            self,
            Operator::ResponseCode
                | Operator::BytesReceived
                | Operator::BytesSent
                | Operator::Duration
                | Operator::ResponseDuration
        )
    }
}

/// Parses a format string into parts; the error names the operator that is wrong.
pub fn parse(format: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = format;
    while let Some(start) = rest.find('%') {
        literal.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = find_operator_end(after) else {
            return Err(format!(
                "unterminated operator `%{}`: operators are written %NAME%",
                after
            ));
        };
        let text = &after[..end];
        if text.is_empty() {
            // `%%` is a literal percent sign.
            literal.push('%');
        } else {
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(Part::Op(parse_operator(text)?));
        }
        rest = &after[end + 1..];
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        parts.push(Part::Literal(literal));
    }
    Ok(parts)
}

/// The closing `%` of an operator, skipping any inside its parentheses
/// (`%START_TIME(%Y-%m-%d)%`).
fn find_operator_end(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            '%' if depth == 0 => return Some(i),
            _ => {}
        }
    }
    None
}

fn parse_operator(text: &str) -> Result<Operator, String> {
    let (name, arg, max_len) = match text.find('(') {
        None => (text, None, None),
        Some(open) => {
            let Some(close) = text.rfind(')') else {
                return Err(format!("operator %{text}% is missing its `)`"));
            };
            let tail = &text[close + 1..];
            let max_len = match tail {
                "" => None,
                t => match t.strip_prefix(':').map(str::parse::<usize>) {
                    Some(Ok(n)) if n > 0 => Some(n),
                    _ => {
                        return Err(format!(
                            "operator %{text}%: after `)` only `:N` (a maximum length) may follow"
                        ))
                    }
                },
            };
            (&text[..open], Some(&text[open + 1..close]), max_len)
        }
    };
    let no_arg = |op: Operator| match arg {
        None => Ok(op),
        Some(_) => Err(format!("operator %{name}% takes no argument")),
    };
    match name {
        "START_TIME" => {
            if max_len.is_some() {
                return Err("operator %START_TIME% takes no length".into());
            }
            match arg {
                None => Ok(Operator::StartTime(None)),
                Some(fmt) => {
                    check_strftime(fmt)?;
                    Ok(Operator::StartTime(Some(fmt.to_string())))
                }
            }
        }
        "REQ" | "RESP" => {
            let Some(arg) = arg else {
                return Err(format!("operator %{name}% needs a header: %{name}(name)%"));
            };
            let sources = arg
                .split('?')
                .map(|h| header_source(name, h))
                .collect::<Result<Vec<_>, _>>()?;
            if sources.len() > 2 {
                return Err(format!(
                    "operator %{name}({arg})%: at most one `?` fallback"
                ));
            }
            Ok(if name == "REQ" {
                Operator::Request { sources, max_len }
            } else {
                Operator::Response { sources, max_len }
            })
        }
        _ if max_len.is_some() => Err(format!("operator %{name}% takes no length")),
        "PROTOCOL" => no_arg(Operator::Protocol),
        "RESPONSE_CODE" => no_arg(Operator::ResponseCode),
        "RESPONSE_FLAGS" => no_arg(Operator::ResponseFlags),
        "RESPONSE_CODE_DETAILS" => no_arg(Operator::ResponseCodeDetails),
        "BYTES_RECEIVED" => no_arg(Operator::BytesReceived),
        "BYTES_SENT" => no_arg(Operator::BytesSent),
        "DURATION" => no_arg(Operator::Duration),
        "RESPONSE_DURATION" => no_arg(Operator::ResponseDuration),
        "UPSTREAM_HOST" => no_arg(Operator::UpstreamHost),
        "UPSTREAM_CLUSTER" => no_arg(Operator::UpstreamCluster),
        "DOWNSTREAM_REMOTE_ADDRESS" => no_arg(Operator::DownstreamRemoteAddress),
        "DOWNSTREAM_PEER_URI_SAN" => no_arg(Operator::DownstreamPeerUriSan),
        "DOWNSTREAM_PEER_DNS_SAN" => no_arg(Operator::DownstreamPeerDnsSan),
        "DOWNSTREAM_PEER_SUBJECT" => no_arg(Operator::DownstreamPeerSubject),
        "DOWNSTREAM_PEER_SERIAL" => no_arg(Operator::DownstreamPeerSerial),
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => {
            no_arg(Operator::DownstreamRemoteAddressWithoutPort)
        }
        "DOWNSTREAM_LOCAL_ADDRESS" => no_arg(Operator::DownstreamLocalAddress),
        "HOSTNAME" => no_arg(Operator::Hostname),
        _ => Err(format!("unknown operator %{name}%")),
    }
}

fn header_source(op: &str, h: &str) -> Result<HeaderSource, String> {
    let lower = h.to_ascii_lowercase();
    Ok(match lower.as_str() {
        ":method" => HeaderSource::Method,
        ":path" => HeaderSource::Path,
        ":authority" => HeaderSource::Authority,
        ":scheme" => HeaderSource::Scheme,
        "" => return Err(format!("operator %{op}(...)%: empty header name")),
        n if n.starts_with(':') => {
            return Err(format!("operator %{op}({h})%: unknown pseudo-header {h}"))
        }
        n if !n.bytes().all(crate::token::is_tchar) => {
            return Err(format!("operator %{op}({h})%: not a valid header name"))
        }
        _ => HeaderSource::Header(lower),
    })
}

/// The strftime specifiers `%START_TIME(...)%` understands.
pub const STRFTIME_SPECIFIERS: &str = "YmdHMSjzsFTabe%";

fn check_strftime(fmt: &str) -> Result<(), String> {
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            continue;
        }
        match chars.next() {
            Some(s) if STRFTIME_SPECIFIERS.contains(s) => {}
            // %f (nanoseconds), %3f / %6f / %9f (that many digits of the fraction).
            Some('f') => {}
            Some(d @ ('1'..='9')) if chars.next() == Some('f') => {
                let _ = d;
            }
            other => {
                return Err(format!(
                    "operator %START_TIME({fmt})%: unsupported time specifier %{}",
                    other.map(String::from).unwrap_or_default()
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(text: &str) -> Operator {
        match parse(text).unwrap().as_slice() {
            [Part::Op(o)] => o.clone(),
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn parses_envoys_default_format() {
        let parts = parse(DEFAULT_FORMAT).unwrap();
        let ops = parts.iter().filter(|p| matches!(p, Part::Op(_))).count();
        assert_eq!(ops, 15);
        assert_eq!(parts[0], Part::Literal("[".into()));
        assert_eq!(parts[1], Part::Op(Operator::StartTime(None)));
        assert_eq!(parts.last(), Some(&Part::Literal("\"\n".into())));
    }

    #[test]
    fn parses_fallbacks_pseudo_headers_and_lengths() {
        assert_eq!(
            op("%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
            Operator::Request {
                sources: vec![
                    HeaderSource::Header("x-envoy-original-path".into()),
                    HeaderSource::Path
                ],
                max_len: None
            }
        );
        assert_eq!(
            op("%REQ(:AUTHORITY):10%"),
            Operator::Request {
                sources: vec![HeaderSource::Authority],
                max_len: Some(10)
            }
        );
        assert_eq!(
            op("%RESP(Content-Type)%"),
            Operator::Response {
                sources: vec![HeaderSource::Header("content-type".into())],
                max_len: None
            }
        );
    }

    #[test]
    fn parses_start_time_with_a_strftime_format_containing_percent_signs() {
        assert_eq!(
            parse("a %START_TIME(%Y-%m-%dT%H:%M:%S.%3f%z)% b").unwrap(),
            vec![
                Part::Literal("a ".into()),
                Part::Op(Operator::StartTime(Some("%Y-%m-%dT%H:%M:%S.%3f%z".into()))),
                Part::Literal(" b".into()),
            ]
        );
    }

    #[test]
    fn double_percent_is_a_literal_percent() {
        assert_eq!(
            parse("100%% %PROTOCOL%").unwrap(),
            vec![Part::Literal("100% ".into()), Part::Op(Operator::Protocol)]
        );
    }

    #[test]
    fn rejects_unknown_and_malformed_operators_naming_them() {
        assert_eq!(parse("%NOPE%").unwrap_err(), "unknown operator %NOPE%");
        assert!(parse("%REQ(:METHOD)").unwrap_err().contains("unterminated"));
        assert!(parse("%REQ%").unwrap_err().contains("needs a header"));
        assert!(parse("%REQ(:BOGUS)%").unwrap_err().contains(":BOGUS"));
        assert!(parse("%DURATION(x)%").unwrap_err().contains("no argument"));
        assert!(parse("%REQ(a):x%").unwrap_err().contains(":N"));
        assert!(parse("%START_TIME(%Q)%").unwrap_err().contains("%Q"));
        assert!(parse("%REQ(a?b?c)%").unwrap_err().contains("one `?`"));
    }

    #[test]
    fn numeric_operators_are_the_ones_envoy_writes_as_numbers() {
        assert!(op("%DURATION%").is_numeric());
        assert!(op("%RESPONSE_CODE%").is_numeric());
        assert!(!op("%UPSTREAM_HOST%").is_numeric());
    }

    #[test]
    fn comparisons_hold_as_named() {
        let c = |op, value| Comparison { op, value };
        assert!(c(ComparisonOp::GE, 400).holds(503));
        assert!(!c(ComparisonOp::GE, 400).holds(200));
        assert!(c(ComparisonOp::LE, 499).holds(404));
        assert!(c(ComparisonOp::EQ, 404).holds(404));
    }
}
