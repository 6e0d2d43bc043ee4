//! Turning an [`Entry`] into a log line, text or JSON, on the writer thread. Envoy's
//! conventions: a missing value is `-` in text and `null` in JSON; codes, byte counts and
//! durations are JSON numbers; times are UTC.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Version;
use sinew_config::access_log::{HeaderSource, Operator, Part};

use super::{Entry, Format};

/// Appends `entry` formatted by `format` to `out`, ending with a newline for JSON (text
/// formats carry their own, as Envoy's do).
pub(crate) fn render(format: &Format, entry: &Entry, out: &mut String) {
    match format {
        Format::Text(parts) => {
            for part in parts {
                match part {
                    Part::Literal(s) => out.push_str(s),
                    Part::Op(op) => match value(op, entry) {
                        Some(v) => out.push_str(&v),
                        None => out.push('-'),
                    },
                }
            }
        }
        Format::Json(fields) => {
            out.push('{');
            for (i, (key, parts)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_string(key, out);
                out.push(':');
                match parts.as_slice() {
                    // A lone operator keeps its type: numbers as numbers, absent as null.
                    [Part::Op(op)] => match value(op, entry) {
                        None => out.push_str("null"),
                        Some(v) if op.is_numeric() => out.push_str(&v),
                        Some(v) => json_string(&v, out),
                    },
                    _ => {
                        let mut text = String::new();
                        for part in parts {
                            match part {
                                Part::Literal(s) => text.push_str(s),
                                Part::Op(op) => {
                                    text.push_str(value(op, entry).as_deref().unwrap_or("-"))
                                }
                            }
                        }
                        json_string(&text, out);
                    }
                }
            }
            out.push_str("}\n");
        }
    }
}

/// One operator's value, or None when the entry has none (`-`).
fn value(op: &Operator, e: &Entry) -> Option<String> {
    Some(match op {
        Operator::StartTime(None) => {
            strftime(e.start, "%Y-%m-%dT%H:%M:%S.%3fZ")
        }
        Operator::StartTime(Some(fmt)) => strftime(e.start, fmt),
        Operator::Request { sources, max_len } => {
            let v = sources.iter().find_map(|s| request_value(s, e))?;
            truncate(v, *max_len)
        }
        Operator::Response { sources, max_len } => {
            let v = sources.iter().find_map(|s| match s {
                HeaderSource::Header(name) => header(&e.response_headers, name),
                _ => None,
            })?;
            truncate(v, *max_len)
        }
        Operator::Protocol => match e.version? {
            Version::HTTP_09 => "HTTP/0.9",
            Version::HTTP_10 => "HTTP/1.0",
            Version::HTTP_11 => "HTTP/1.1",
            Version::HTTP_2 => "HTTP/2",
            Version::HTTP_3 => "HTTP/3",
            _ => return None,
        }
        .to_string(),
        Operator::ResponseCode => e.status.unwrap_or(0).to_string(),
        Operator::ResponseFlags => e.flags.to_string(),
        Operator::BytesReceived => e.bytes_received.to_string(),
        Operator::BytesSent => e.bytes_sent.to_string(),
        Operator::Duration => millis(e.duration),
        Operator::ResponseDuration => millis(e.response_duration?),
        Operator::UpstreamHost => e.upstream_host?.to_string(),
        Operator::UpstreamCluster => e.upstream_cluster.as_deref()?.to_string(),
        Operator::DownstreamRemoteAddress => e.downstream_remote.to_string(),
        Operator::DownstreamRemoteAddressWithoutPort => e.downstream_remote.ip().to_string(),
        Operator::DownstreamLocalAddress => e.downstream_local.to_string(),
        Operator::Hostname => hostname().to_string(),
    })
}

fn request_value(source: &HeaderSource, e: &Entry) -> Option<String> {
    match source {
        HeaderSource::Method => e.method.as_ref().map(|m| m.to_string()),
        HeaderSource::Path => e.path.as_ref().map(|p| p.as_str().to_string()),
        HeaderSource::Authority => e
            .authority
            .as_ref()
            .map(|a| String::from_utf8_lossy(a.as_bytes()).into_owned()),
        HeaderSource::Scheme => e
            .version
            .map(|_| if e.tls { "https" } else { "http" }.to_string()),
        HeaderSource::Header(name) => header(&e.request_headers, name),
    }
}

fn header(list: &[(http::HeaderName, http::HeaderValue)], name: &str) -> Option<String> {
    list.iter()
        .find(|(n, _)| n.as_str() == name)
        .map(|(_, v)| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// Cuts to at most `max` bytes, on a character boundary.
fn truncate(mut v: String, max: Option<usize>) -> String {
    if let Some(max) = max {
        if v.len() > max {
            let mut cut = max;
            while !v.is_char_boundary(cut) {
                cut -= 1;
            }
            v.truncate(cut);
        }
    }
    v
}

fn millis(d: Duration) -> String {
    d.as_millis().to_string()
}

fn hostname() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "-".into())
    })
}

fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The strftime subset `sinew_config::access_log` accepts, in UTC: `%Y %m %d %H %M %S %j
/// %z %s %F %T %a %b %e %%`, and `%f` / `%Nf` for N digits of the second's fraction.
pub(crate) fn strftime(t: SystemTime, fmt: &str) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = (secs / 86_400) as i64;
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = ((secs % 86_400) / 3600, (secs % 3600) / 60, secs % 60);
    let nanos = since.subsec_nanos();
    let mut out = String::with_capacity(fmt.len() + 16);
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(spec) = chars.next() else {
            out.push('%');
            break;
        };
        let _ = match spec {
            'Y' => write!(out, "{year:04}"),
            'm' => write!(out, "{month:02}"),
            'd' => write!(out, "{day:02}"),
            'e' => write!(out, "{day:2}"),
            'H' => write!(out, "{hour:02}"),
            'M' => write!(out, "{minute:02}"),
            'S' => write!(out, "{second:02}"),
            'j' => write!(out, "{:03}", day_of_year(year, month, day)),
            'z' => write!(out, "+0000"),
            's' => write!(out, "{secs}"),
            'F' => write!(out, "{year:04}-{month:02}-{day:02}"),
            'T' => write!(out, "{hour:02}:{minute:02}:{second:02}"),
            'a' => write!(out, "{}", WEEKDAYS[((days + 4).rem_euclid(7)) as usize]),
            'b' => write!(out, "{}", MONTHS[month as usize - 1]),
            'f' => write!(out, "{nanos:09}"),
            '%' => write!(out, "%"),
            d @ '1'..='9' if chars.peek() == Some(&'f') => {
                chars.next();
                let digits = d.to_digit(10).unwrap_or(9).min(9) as usize;
                let text = format!("{nanos:09}");
                write!(out, "{}", &text[..digits])
            }
            other => write!(out, "%{other}"),
        };
    }
    out
}

const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Howard Hinnant's days-to-civil: days since 1970-01-01 to (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn day_of_year(year: i64, month: u32, day: u32) -> u32 {
    const BEFORE: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    BEFORE[month as usize - 1] + day + u32::from(leap && month > 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times_in_utc_like_envoy() {
        // 2016-04-15T20:17:00.310Z, the time in Envoy's access-log docs.
        let t = UNIX_EPOCH + Duration::from_millis(1_460_751_420_310);
        assert_eq!(strftime(t, "%Y-%m-%dT%H:%M:%S.%3fZ"), "2016-04-15T20:17:00.310Z");
        assert_eq!(strftime(t, "%F %T %z %j %a %b %e"), "2016-04-15 20:17:00 +0000 106 Fri Apr 15");
        assert_eq!(strftime(t, "%s.%6f %%"), "1460751420.310000 %");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(strftime(leap, "%F %j"), "2000-02-29 060");
    }

    #[test]
    fn escapes_json_strings() {
        let mut out = String::new();
        json_string("a\"b\\c\nd\u{1}", &mut out);
        assert_eq!(out, r#""a\"b\\c\nd\u0001""#);
    }

    #[test]
    fn truncates_on_character_boundaries() {
        assert_eq!(truncate("héllo".into(), Some(2)), "h");
        assert_eq!(truncate("hello".into(), Some(3)), "hel");
        assert_eq!(truncate("hi".into(), None), "hi");
    }
}
