//! Copies of a request body for shadow requests (request mirroring).
//!
//! A buffered body is simply shared. A streamed body is copied as it passes on its way to
//! the main upstream, up to a cap: the copy is handed over once the body has ended, and
//! abandoned — never the main request — if the body outgrows the cap, fails, or the main
//! request is dropped before its end. So a shadow never reads the downstream itself and
//! can neither slow the main request nor hold its body back.

use bytes::{Bytes, BytesMut};
use tokio::sync::oneshot;

/// A shadow request's body: at hand, or due when the main request has sent its own.
#[derive(Debug)]
pub enum ShadowBody {
    Ready(Bytes),
    /// Dropped unsent (an error on receive) when the copy was abandoned.
    Pending(oneshot::Receiver<Bytes>),
}

/// The copy a streamed [`RequestBody`](crate::RequestBody) keeps while it streams.
#[derive(Debug)]
pub struct BodyTee {
    copy: BytesMut,
    /// The largest cap asked for; each waiter has its own.
    cap: usize,
    waiters: Vec<(usize, oneshot::Sender<Bytes>)>,
}

impl BodyTee {
    /// An empty copy. A body whose exact length is known (it is within the cap, or no
    /// copy would be made) is allocated for once.
    pub(crate) fn new(exact_len: Option<u64>) -> Self {
        BodyTee {
            copy: BytesMut::with_capacity(exact_len.map_or(0, |n| n as usize)),
            cap: 0,
            waiters: Vec::new(),
        }
    }

    /// One more shadow request waits for the copy, which it gets if it is at most `cap`
    /// bytes.
    pub(crate) fn wait(&mut self, cap: usize) -> oneshot::Receiver<Bytes> {
        let (sender, receiver) = oneshot::channel();
        self.cap = self.cap.max(cap);
        self.waiters.push((cap, sender));
        receiver
    }

    /// Adds `data` to the copy; false when the copy is over every cap and is to be dropped.
    pub(crate) fn copy(&mut self, data: &[u8]) -> bool {
        if self.copy.len() + data.len() > self.cap {
            return false;
        }
        self.copy.extend_from_slice(data);
        true
    }

    /// The body has ended: each waiter whose cap the copy fits gets it.
    pub(crate) fn finish(self) {
        let body = self.copy.freeze();
        for (cap, waiter) in self.waiters {
            if body.len() <= cap {
                let _ = waiter.send(body.clone());
            }
        }
    }
}
