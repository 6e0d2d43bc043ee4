//! Turning an [`Entry`] into a log line, text or JSON, on the writer thread. Envoy's
//! conventions: a missing value is `-` in text and `null` in JSON; codes, byte counts and
//! durations are JSON numbers; times are UTC.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use http::Version;
use sinew_config::access_log::{HeaderSource, Operator, Part};

use super::{Entry, Format};

/// Appends `entry` formatted by `format` to `out`, ending with a newline for JSON (text
/// formats carry their own, as Envoy's do). Values are written straight into `out`: this
/// runs once per logged request, on the writer thread but on the proxy's cores.
pub(crate) fn render(format: &Format, entry: &Entry, out: &mut String) {
    match format {
        Format::Text(parts) => {
            for part in parts {
                match part {
                    Part::Literal(s) => out.push_str(s),
                    Part::Op(op) => {
                        if !write_value(op, entry, out) {
                            out.push('-');
                        }
                    }
                }
            }
        }
        Format::Json(fields) => {
            let mut scratch = String::new();
            out.push('{');
            for (i, (key, parts)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_string(key, out);
                out.push(':');
                scratch.clear();
                match parts.as_slice() {
                    // A lone operator keeps its type: numbers as numbers, absent as null.
                    [Part::Op(op)] => {
                        if !write_value(op, entry, &mut scratch) {
                            out.push_str("null");
                        } else if op.is_numeric() {
                            out.push_str(&scratch);
                        } else {
                            json_string(&scratch, out);
                        }
                    }
                    _ => {
                        for part in parts {
                            match part {
                                Part::Literal(s) => scratch.push_str(s),
                                Part::Op(op) => {
                                    if !write_value(op, entry, &mut scratch) {
                                        scratch.push('-');
                                    }
                                }
                            }
                        }
                        json_string(&scratch, out);
                    }
                }
            }
            out.push_str("}\n");
        }
    }
}

/// Writes one operator's value to `out`; false (and nothing written) when the entry has
/// none (`-`).
fn write_value(op: &Operator, e: &Entry, out: &mut String) -> bool {
    let _ = match op {
        Operator::StartTime(None) => {
            rfc3339_millis(e.start, out);
            Ok(())
        }
        Operator::StartTime(Some(fmt)) => {
            strftime_into(e.start, fmt, out);
            Ok(())
        }
        Operator::Request { sources, max_len } => {
            let Some(v) = sources.iter().find_map(|s| request_value(s, e)) else {
                return false;
            };
            push_truncated(&v, *max_len, out);
            Ok(())
        }
        Operator::Response { sources, max_len } => {
            let Some(v) = sources.iter().find_map(|s| match s {
                HeaderSource::Header(name) => header(&e.response_headers, name),
                _ => None,
            }) else {
                return false;
            };
            push_truncated(&v, *max_len, out);
            Ok(())
        }
        Operator::Protocol => {
            let name = match e.version {
                Some(Version::HTTP_09) => "HTTP/0.9",
                Some(Version::HTTP_10) => "HTTP/1.0",
                Some(Version::HTTP_11) => "HTTP/1.1",
                Some(Version::HTTP_2) => "HTTP/2",
                Some(Version::HTTP_3) => "HTTP/3",
                _ => match e.protocol {
                    Some(rpc) => rpc,
                    None => return false,
                },
            };
            out.push_str(name);
            Ok(())
        }
        Operator::ResponseCode => {
            push_u64(e.status.unwrap_or(0) as u64, out);
            Ok(())
        }
        Operator::ResponseFlags => {
            if e.flags.is_empty() {
                out.push('-');
                Ok(())
            } else {
                write!(out, "{}", e.flags)
            }
        }
        Operator::BytesReceived => {
            push_u64(e.bytes_received, out);
            Ok(())
        }
        Operator::BytesSent => {
            push_u64(e.bytes_sent, out);
            Ok(())
        }
        Operator::Duration => {
            push_u64(e.duration.as_millis() as u64, out);
            Ok(())
        }
        Operator::ResponseDuration => match e.response_duration {
            Some(d) => {
                push_u64(d.as_millis() as u64, out);
                Ok(())
            }
            None => return false,
        },
        Operator::UpstreamHost => match e.upstream_host {
            Some(h) => {
                push_socket_addr(h, out);
                Ok(())
            }
            None => return false,
        },
        Operator::UpstreamCluster => match &e.upstream_cluster {
            Some(c) => {
                out.push_str(c);
                Ok(())
            }
            None => return false,
        },
        Operator::DownstreamRemoteAddress => {
            push_socket_addr(e.downstream_remote, out);
            Ok(())
        }
        Operator::DownstreamRemoteAddressWithoutPort => write!(out, "{}", e.downstream_remote.ip()),
        Operator::DownstreamLocalAddress => {
            push_socket_addr(e.downstream_local, out);
            Ok(())
        }
        Operator::DownstreamPeerUriSan => match &e.peer_identity {
            Some(id) if !id.uri_sans.is_empty() => {
                out.push_str(&id.uri_sans.join(","));
                Ok(())
            }
            _ => return false,
        },
        Operator::DownstreamPeerDnsSan => match &e.peer_identity {
            Some(id) if !id.dns_sans.is_empty() => {
                out.push_str(&id.dns_sans.join(","));
                Ok(())
            }
            _ => return false,
        },
        Operator::DownstreamPeerSubject => match &e.peer_identity {
            Some(id) => {
                out.push_str(&id.subject);
                Ok(())
            }
            None => return false,
        },
        Operator::DownstreamPeerSerial => match &e.peer_identity {
            Some(id) => {
                out.push_str(&id.serial);
                Ok(())
            }
            None => return false,
        },
        Operator::Hostname => {
            out.push_str(hostname());
            Ok(())
        }
        Operator::ResponseCodeDetails => match &e.details {
            Some(d) => {
                out.push_str(d);
                Ok(())
            }
            None => return false,
        },
    };
    true
}

/// A request value, borrowed where the entry holds it as text.
fn request_value<'a>(source: &HeaderSource, e: &'a Entry) -> Option<Cow<'a, str>> {
    match source {
        HeaderSource::Method => e.method.as_ref().map(|m| Cow::Borrowed(m.as_str())),
        HeaderSource::Path => e.path.as_ref().map(|p| Cow::Borrowed(p.as_str())),
        HeaderSource::Authority => e
            .authority
            .as_ref()
            .map(|a| String::from_utf8_lossy(a.as_bytes())),
        HeaderSource::Scheme => e
            .version
            .map(|_| Cow::Borrowed(if e.tls { "https" } else { "http" })),
        HeaderSource::Header(name) => header(&e.request_headers, name),
    }
}

fn header<'a>(
    list: &'a [(http::HeaderName, http::HeaderValue)],
    name: &str,
) -> Option<Cow<'a, str>> {
    list.iter()
        .find(|(n, _)| n.as_str() == name)
        .map(|(_, v)| String::from_utf8_lossy(v.as_bytes()))
}

/// Decimal digits without the `fmt` machinery (a log line has several numbers; `write!`
/// made up a third of the formatting cost).
fn push_u64(mut n: u64, out: &mut String) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[i..] {
        out.push(d as char);
    }
}

/// `n` as exactly `width` digits, zero-padded.
fn push_padded(n: u64, width: u32, out: &mut String) {
    let mut div = 10u64.pow(width.saturating_sub(1));
    while div > 0 {
        out.push((b'0' + ((n / div) % 10) as u8) as char);
        div /= 10;
    }
}

fn push_socket_addr(addr: std::net::SocketAddr, out: &mut String) {
    match addr {
        std::net::SocketAddr::V4(v4) => {
            for (i, octet) in v4.ip().octets().iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                push_u64(*octet as u64, out);
            }
            out.push(':');
            push_u64(v4.port() as u64, out);
        }
        v6 => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// `%START_TIME%`'s default, `2016-04-15T20:17:00.310Z`, without parsing a format.
fn rfc3339_millis(t: SystemTime, out: &mut String) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    push_padded(year.max(0) as u64, 4, out);
    out.push('-');
    push_padded(month as u64, 2, out);
    out.push('-');
    push_padded(day as u64, 2, out);
    out.push('T');
    push_padded((secs % 86_400) / 3600, 2, out);
    out.push(':');
    push_padded((secs % 3600) / 60, 2, out);
    out.push(':');
    push_padded(secs % 60, 2, out);
    out.push('.');
    push_padded(since.subsec_millis() as u64, 3, out);
    out.push('Z');
}

fn push_truncated(v: &str, max: Option<usize>, out: &mut String) {
    match max {
        Some(max) if v.len() > max => {
            let mut cut = max;
            while !v.is_char_boundary(cut) {
                cut -= 1;
            }
            out.push_str(&v[..cut]);
        }
        _ => out.push_str(v),
    }
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
#[cfg(test)]
fn strftime(t: SystemTime, fmt: &str) -> String {
    let mut out = String::new();
    strftime_into(t, fmt, &mut out);
    out
}

fn strftime_into(t: SystemTime, fmt: &str, out: &mut String) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = (secs / 86_400) as i64;
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = ((secs % 86_400) / 3600, (secs % 3600) / 60, secs % 60);
    let nanos = since.subsec_nanos();
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
                let digits = d.to_digit(10).unwrap_or(9).min(9);
                let fraction = nanos / 10u32.pow(9 - digits);
                write!(out, "{fraction:0width$}", width = digits as usize)
            }
            other => write!(out, "%{other}"),
        };
    }
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
    use std::time::Duration;

    #[test]
    fn formats_times_in_utc_like_envoy() {
        // 2016-04-15T20:17:00.310Z, the time in Envoy's access-log docs.
        let t = UNIX_EPOCH + Duration::from_millis(1_460_751_420_310);
        assert_eq!(
            strftime(t, "%Y-%m-%dT%H:%M:%S.%3fZ"),
            "2016-04-15T20:17:00.310Z"
        );
        let mut fast = String::new();
        rfc3339_millis(t, &mut fast);
        assert_eq!(fast, "2016-04-15T20:17:00.310Z");
        assert_eq!(
            strftime(t, "%F %T %z %j %a %b %e"),
            "2016-04-15 20:17:00 +0000 106 Fri Apr 15"
        );
        assert_eq!(strftime(t, "%s.%6f %%"), "1460751420.310000 %");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(strftime(leap, "%F %j"), "2000-02-29 060");
    }

    #[test]
    fn writes_numbers_and_addresses_like_display() {
        for n in [0u64, 7, 10, 404, 65_535, u64::MAX] {
            let mut out = String::new();
            push_u64(n, &mut out);
            assert_eq!(out, n.to_string());
        }
        for a in ["127.0.0.1:8080", "10.0.255.1:1", "[::1]:443"] {
            let addr: std::net::SocketAddr = a.parse().unwrap();
            let mut out = String::new();
            push_socket_addr(addr, &mut out);
            assert_eq!(out, a);
        }
    }

    #[test]
    fn escapes_json_strings() {
        let mut out = String::new();
        json_string("a\"b\\c\nd\u{1}", &mut out);
        assert_eq!(out, r#""a\"b\\c\nd\u0001""#);
    }

    #[test]
    fn truncates_on_character_boundaries() {
        let cut = |v: &str, max| {
            let mut out = String::new();
            push_truncated(v, max, &mut out);
            out
        };
        assert_eq!(cut("héllo", Some(2)), "h");
        assert_eq!(cut("hello", Some(3)), "hel");
        assert_eq!(cut("hi", None), "hi");
    }
}

/// Fuzzing (docs/fuzzing.md): any format `sinew_config::access_log` accepts renders any
/// entry without a panic, and a JSON format always gives one line of valid JSON.
#[cfg(test)]
mod fuzz {
    use super::super::{Entry, Format};
    use super::render;
    use crate::stream::flags::ResponseFlags;
    use http::{HeaderName, HeaderValue, Method};
    use sinew_fuzz::proptest::prelude::*;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    const FORMAT_DICTIONARY: &[&[u8]] = &[
        b"%",
        b"%%",
        b"(",
        b")",
        b":1",
        b":3",
        b"%START_TIME%",
        b"%START_TIME(%Y-%m-%dT%H:%M:%S.%3fZ)%",
        b"%START_TIME(%s.%9f %j %e %z %a %b %F %T %% %q %)%",
        b"%START_TIME(%0f%10f%f)%",
        b"%REQ(:AUTHORITY)%",
        b"%REQ(:PATH):2%",
        b"%REQ(X-A?:METHOD):1%",
        b"%REQ(:SCHEME)%",
        b"%RESP(X-B):1%",
        b"%RESPONSE_CODE%",
        b"%RESPONSE_FLAGS%",
        b"%BYTES_RECEIVED%",
        b"%DURATION%",
        b"%RESPONSE_DURATION%",
        b"%UPSTREAM_HOST%",
        b"%UPSTREAM_CLUSTER%",
        b"%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
        b"%DOWNSTREAM_PEER_URI_SAN%",
        b"%DOWNSTREAM_PEER_SUBJECT%",
        b"%PROTOCOL%",
        b"%HOSTNAME%",
        b"\xc3\xa9",
        b"\xf0\x9f\x98\x80",
        b"\"\\\n",
    ];

    /// Header values may hold any byte but controls (obs-text included).
    fn header_value() -> impl Strategy<Value = HeaderValue> {
        prop::collection::vec(any::<u8>(), 0..12).prop_map(|bytes| {
            HeaderValue::from_bytes(&bytes).unwrap_or_else(|_| HeaderValue::from_static("x"))
        })
    }

    fn entry() -> impl Strategy<Value = Entry> {
        (
            // From 1970 to beyond year 9999: strftime must not assume four-digit years.
            0u64..400_000_000_000,
            0u32..1_000_000_000,
            any::<u16>(),
            any::<u64>(),
            prop::option::of(any::<u64>()),
            header_value(),
            header_value(),
            "[ -~]{0,12}",
        )
            .prop_map(|(secs, nanos, status, n, response_ms, a, b, path)| {
                let addr = "[::1]:443".parse().expect("an address");
                Entry {
                    start: UNIX_EPOCH
                        .checked_add(Duration::new(secs, nanos))
                        .unwrap_or(SystemTime::UNIX_EPOCH),
                    method: Some(Method::POST),
                    path: format!("/{path}").parse().ok(),
                    authority: Some(a.clone()),
                    tls: n % 2 == 0,
                    version: Some(http::Version::HTTP_11),
                    protocol: None,
                    status: Some(status),
                    flags: ResponseFlags::default(),
                    details: None,
                    bytes_received: n,
                    bytes_sent: n / 3,
                    duration: Duration::from_nanos(n),
                    response_duration: response_ms.map(Duration::from_millis),
                    upstream_host: Some(addr),
                    upstream_cluster: Some("c\u{e9}".into()),
                    downstream_remote: addr,
                    downstream_local: addr,
                    peer_identity: None,
                    request_headers: vec![(HeaderName::from_static("x-a"), a)],
                    response_headers: vec![(HeaderName::from_static("x-b"), b)],
                }
            })
    }

    #[test]
    fn fuzz_access_log_render() {
        sinew_fuzz::run(
            "fuzz_access_log_render",
            1,
            (
                sinew_fuzz::token_soup(FORMAT_DICTIONARY, 16)
                    .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
                entry(),
            ),
            |(format, entry)| {
                let Ok(parts) = sinew_config::access_log::parse(&format) else {
                    return Ok(());
                };
                let mut text = String::new();
                render(&Format::Text(parts.clone()), &entry, &mut text);
                let mut json = String::new();
                let fields = vec![("k\"ey".to_string(), parts.clone()), ("v".into(), parts)];
                render(&Format::Json(fields), &entry, &mut json);
                prop_assert!(json.ends_with('\n') && json.matches('\n').count() == 1);
                let parsed: Result<serde_json::Value, _> = serde_json::from_str(&json);
                prop_assert!(parsed.is_ok(), "not JSON: {json}");
                Ok(())
            },
        );
    }
}
