//! Copies of a request body for shadow requests (request mirroring).
//!
//! A buffered body is simply shared. A streamed body is copied as it passes on its way to
//! the main upstream, up to a cap: the copy is handed over once the body has ended, and
//! abandoned — never the main request — if the body outgrows the cap, fails, or the main
//! request is dropped before its end. So a shadow never reads the downstream itself and
//! can neither slow the main request nor hold its body back.

use bytes::{Bytes, BytesMut};
use tokio::sync::oneshot;

use crate::body::RequestBody;

/// A shadow request's body: at hand, or due when the main request has sent its own.
#[derive(Debug)]
pub enum ShadowBody {
    Ready(Bytes),
    /// Dropped unsent (an error on receive) when the copy was abandoned.
    Pending(oneshot::Receiver<Bytes>),
}

/// The copy a streamed [`RequestBody`] keeps while it streams.
#[derive(Debug)]
pub struct BodyTee {
    copy: BytesMut,
    /// The largest cap asked for; each waiter has its own.
    cap: usize,
    waiters: Vec<(usize, oneshot::Sender<Bytes>)>,
}

impl BodyTee {
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

impl RequestBody {
    /// A copy of this body for a shadow request, or None when it is known to be larger
    /// than `cap` bytes. A streamed body's copy is made as it streams (see the module doc).
    pub fn shadow_copy(&mut self, cap: usize) -> Option<ShadowBody> {
        match self {
            RequestBody::Empty => Some(ShadowBody::Ready(Bytes::new())),
            RequestBody::Full(b) => {
                let b = b.clone().unwrap_or_default();
                (b.len() <= cap).then_some(ShadowBody::Ready(b))
            }
            RequestBody::Streaming { body, tee, .. } => {
                let hint = http_body::Body::size_hint(body);
                if hint.lower() > cap as u64 {
                    return None;
                }
                let (sender, receiver) = oneshot::channel();
                let tee = tee.get_or_insert_with(|| {
                    Box::new(BodyTee {
                        // An exact length up to the cap is allocated once.
                        copy: BytesMut::with_capacity(hint.exact().map_or(0, |n| n as usize)),
                        cap: 0,
                        waiters: Vec::new(),
                    })
                });
                tee.cap = tee.cap.max(cap);
                tee.waiters.push((cap, sender));
                Some(ShadowBody::Pending(receiver))
            }
        }
    }
}
