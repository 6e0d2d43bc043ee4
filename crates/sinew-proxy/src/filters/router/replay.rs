//! The copy of an upstream request's head that a retry would send again.
//!
//! hyper consumes the request it sends, so a route with a retry policy must keep a copy
//! of every retriable request's head, though few are ever retried. Cloning the
//! `HeaderMap` for it cost two allocations and two frees per request (its index and its
//! entries). The copy is instead a flat list of the header fields in a vector reused
//! from a small per-thread pool: one reference-count increment per field and no
//! allocation. The `HeaderMap` is rebuilt only when a retry is actually sent. Under
//! callgrind (`bench/instructions.sh`, every resilience feature configured) that took
//! 530 of about 1,470 instructions a retry policy added per request.

use std::cell::RefCell;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

use super::upstream_request::Prepared;

/// Vectors kept per thread for reuse: enough for the requests one worker has in flight
/// with retry policies at once, in the common case.
const POOL_SIZE: usize = 64;
/// A copy of a request with more header fields than this is not pooled, so one huge
/// request does not pin its memory in the pool.
const MAX_POOLED_FIELDS: usize = 64;

type Fields = Vec<(HeaderName, HeaderValue)>;

thread_local! {
    static POOL: RefCell<Vec<Fields>> = const { RefCell::new(Vec::new()) };
}

/// A request head kept for a possible retry. Dropping it returns its vector to the pool.
pub(super) struct HeadCopy {
    method: Method,
    uri: Uri,
    scheme: Option<sinew_config::model::Scheme>,
    fields: Fields,
}

impl HeadCopy {
    pub(super) fn of(head: &Prepared) -> Self {
        let mut fields = POOL
            .with(|pool| pool.borrow_mut().pop())
            .unwrap_or_default();
        fields.reserve(head.headers.len());
        fields.extend(
            head.headers
                .iter()
                .map(|(name, value)| (name.clone(), value.clone())),
        );
        Self {
            method: head.method.clone(),
            uri: head.uri.clone(),
            scheme: head.scheme,
            fields,
        }
    }

    /// The head to send again, in its original field order (repeated fields included).
    pub(super) fn to_prepared(&self) -> Prepared {
        let mut headers = HeaderMap::with_capacity(self.fields.len());
        for (name, value) in &self.fields {
            headers.append(name.clone(), value.clone());
        }
        Prepared {
            method: self.method.clone(),
            uri: self.uri.clone(),
            headers,
            scheme: self.scheme,
        }
    }
}

impl Drop for HeadCopy {
    fn drop(&mut self) {
        let mut fields = std::mem::take(&mut self.fields);
        if fields.capacity() > MAX_POOLED_FIELDS {
            return;
        }
        fields.clear();
        // `try_with`: a copy dropped while its thread exits has no pool to go back to.
        let _ = POOL.try_with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() < POOL_SIZE {
                pool.push(fields);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head() -> Prepared {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("example.com"));
        headers.append("x-multi", HeaderValue::from_static("one"));
        headers.append("x-multi", HeaderValue::from_static("two"));
        headers.insert("accept", HeaderValue::from_static("*/*"));
        Prepared {
            method: Method::POST,
            uri: Uri::from_static("/a?b=c"),
            headers,
            scheme: None,
        }
    }

    #[test]
    fn a_replayed_head_equals_the_original_repeated_fields_in_order() {
        let original = head();
        let copy = HeadCopy::of(&original);
        let again = copy.to_prepared();
        assert_eq!(again.method, Method::POST);
        assert_eq!(again.uri, "/a?b=c");
        assert_eq!(again.headers, original.headers);
        let multi: Vec<_> = again.headers.get_all("x-multi").iter().collect();
        assert_eq!(multi, ["one", "two"]);
    }

    #[test]
    fn copies_reuse_pooled_vectors_and_start_empty() {
        let first = HeadCopy::of(&head());
        let capacity = first.fields.capacity();
        let pointer = first.fields.as_ptr();
        drop(first);
        let mut small = HeaderMap::new();
        small.insert("host", HeaderValue::from_static("b"));
        let second = HeadCopy::of(&Prepared {
            method: Method::GET,
            uri: Uri::from_static("/"),
            headers: small,
            scheme: None,
        });
        assert_eq!(
            second.fields.as_ptr(),
            pointer,
            "the pooled vector is reused"
        );
        assert_eq!(second.fields.capacity(), capacity);
        assert_eq!(
            second.fields.len(),
            1,
            "nothing of the last request is left"
        );
    }

    #[test]
    fn huge_heads_are_not_pooled() {
        let mut big = HeaderMap::new();
        for i in 0..(MAX_POOLED_FIELDS + 1) {
            big.append(
                HeaderName::from_bytes(format!("x-{i}").as_bytes()).unwrap(),
                HeaderValue::from_static("v"),
            );
        }
        POOL.with(|pool| pool.borrow_mut().clear());
        drop(HeadCopy::of(&Prepared {
            method: Method::GET,
            uri: Uri::from_static("/"),
            headers: big,
            scheme: None,
        }));
        assert_eq!(POOL.with(|pool| pool.borrow().len()), 0);
    }
}
