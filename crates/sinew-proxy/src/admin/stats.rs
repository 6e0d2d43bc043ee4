//! `/metrics` (Prometheus text 0.0.4, or OpenMetrics 1.0 when asked for) and `/stats`
//! (the same samples as JSON).

use http::header::CONTENT_TYPE;
use http::{HeaderValue, StatusCode};
use serde_json::{json, Map, Value};

use super::{Admin, Query, Reply};

/// The format follows `Accept`; `?format=text` or `?format=openmetrics` overrides it
/// (Prometheus before 2.49 cannot be told which to ask for).
pub(super) fn metrics(admin: &Admin, accept: &str, query: &Query) -> Reply {
    let openmetrics = match query.get("format") {
        None => accept.contains("application/openmetrics-text"),
        Some("text") => false,
        Some("openmetrics") => true,
        Some(other) => {
            return super::text(
                StatusCode::BAD_REQUEST,
                format!("format={other}: use text or openmetrics\n"),
            )
        }
    };
    let body = admin.proxy.metrics.render(openmetrics);
    let mut r = super::text(StatusCode::OK, body);
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(if openmetrics {
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        } else {
            "text/plain; version=0.0.4; charset=utf-8"
        }),
    );
    r
}

/// `{"stats": [{"name": ..., "labels": {...}, "value": ...}, ...]}`, one entry per sample.
pub(super) fn json(admin: &Admin) -> Reply {
    let text = admin.proxy.metrics.render(false);
    let stats: Vec<Value> = text.lines().filter_map(sample).collect();
    super::json(StatusCode::OK, &json!({ "stats": stats }))
}

/// One sample line of the text format as JSON; None for comments.
fn sample(line: &str) -> Option<Value> {
    if line.starts_with('#') || line.is_empty() {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)),
        None => (series, Map::new()),
    };
    Some(json!({ "name": name, "labels": labels, "value": value }))
}

fn parse_labels(mut s: &str) -> Map<String, Value> {
    let mut labels = Map::new();
    while let Some((key, rest)) = s.split_once("=\"") {
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let mut end = rest.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(
            key.trim_start_matches(',').to_string(),
            Value::String(value),
        );
        s = &rest[end..];
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_become_json_with_their_labels() {
        let v = sample(r#"sinew_x_total{cluster="a",route="r\"1"} 3"#).unwrap();
        assert_eq!(v["name"], "sinew_x_total");
        assert_eq!(v["labels"]["cluster"], "a");
        assert_eq!(v["labels"]["route"], "r\"1");
        assert_eq!(v["value"], 3.0);
        assert!(sample("# TYPE x counter").is_none());
        assert_eq!(sample("up 1").unwrap()["labels"], json!({}));
    }
}
