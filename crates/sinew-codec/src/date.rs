//! The `Date` field of responses (RFC 9110 §6.6.1: a server with a clock sends one, and a
//! proxy adds one to a response that has none). Formatting a date per response would
//! cost more than the rest of the head, so each thread keeps the value for the current
//! second and makes a new one when the second changes.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderValue;

thread_local! {
    static CACHED: RefCell<(u64, HeaderValue)> =
        const { RefCell::new((u64::MAX, HeaderValue::from_static(""))) };
}

/// The current time as an IMF-fixdate header value (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn now() -> HeaderValue {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second {
            let text = httpdate::fmt_http_date(now);
            cached.1 = HeaderValue::from_str(&text).expect("a date is a valid header value");
            cached.0 = second;
        }
        cached.1.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_an_imf_fixdate_of_the_current_second() {
        let value = now();
        let text = value.to_str().unwrap();
        let parsed = httpdate::parse_http_date(text).expect("IMF-fixdate");
        let skew = SystemTime::now()
            .duration_since(parsed)
            .unwrap_or_default()
            .as_secs();
        assert!(skew <= 1, "{text} is {skew}s old");
        assert!(text.ends_with(" GMT") && text.len() == 29, "{text}");
    }
}
