//! Handing a connection over when it stops being HTTP/1: after a 101 to an upgrade
//! request, or a 2xx to CONNECT, the connection's halves and whatever was already read
//! past the head go to whoever tunnels them (the proxy joins two such connections).
//!
//! The server driver puts an [`OnUpgrade`] in the extensions of a request that asks to
//! switch, and only of such a request (others cost nothing): the service keeps it (a
//! clone, or the one taken out of the request), answers 101, and the handle resolves
//! once the 101 is on the wire. If the driver does not switch (another status, the
//! connection failed, the request body was not read to its end), the handle resolves to
//! [`UpgradeError`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

/// A connection that has left HTTP/1.
pub struct Upgraded<R, W> {
    pub read: R,
    pub write: W,
    /// Bytes the peer sent after the head that were already read off `read`: they come
    /// first in the new protocol.
    pub read_buf: Bytes,
}

impl<R, W> fmt::Debug for Upgraded<R, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upgraded")
            .field("read_buf", &self.read_buf.len())
            .finish_non_exhaustive()
    }
}

/// The connection was not handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpgradeError;

impl fmt::Display for UpgradeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the connection did not switch protocols")
    }
}

impl std::error::Error for UpgradeError {}

struct Shared<R, W> {
    conn: Option<Upgraded<R, W>>,
    /// The driver has handed the connection over or given up on it.
    settled: bool,
    waker: Option<Waker>,
}

/// Resolves to the upgraded connection once the driver has written the response that
/// switches protocols. Clones share one connection: the first to be polled after the
/// switch takes it, and only the last clone polled is woken.
pub struct OnUpgrade<R, W> {
    shared: Arc<Mutex<Shared<R, W>>>,
}

impl<R, W> Clone for OnUpgrade<R, W> {
    fn clone(&self) -> Self {
        OnUpgrade {
            shared: self.shared.clone(),
        }
    }
}

impl<R, W> fmt::Debug for OnUpgrade<R, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OnUpgrade")
    }
}

impl<R, W> Future for OnUpgrade<R, W> {
    type Output = Result<Upgraded<R, W>, UpgradeError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut shared = lock(&self.shared);
        if let Some(conn) = shared.conn.take() {
            return Poll::Ready(Ok(conn));
        }
        if shared.settled {
            return Poll::Ready(Err(UpgradeError));
        }
        shared.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// The driver's end: hands the connection over, or (dropped) says it never will.
pub(crate) struct UpgradeSender<R, W> {
    shared: Arc<Mutex<Shared<R, W>>>,
}

pub(crate) fn pair<R, W>() -> (UpgradeSender<R, W>, OnUpgrade<R, W>) {
    let shared = Arc::new(Mutex::new(Shared {
        conn: None,
        settled: false,
        waker: None,
    }));
    (
        UpgradeSender {
            shared: shared.clone(),
        },
        OnUpgrade { shared },
    )
}

impl<R, W> UpgradeSender<R, W> {
    pub(crate) fn send(self, conn: Upgraded<R, W>) {
        lock(&self.shared).conn = Some(conn);
        // Drop settles and wakes.
    }
}

impl<R, W> Drop for UpgradeSender<R, W> {
    fn drop(&mut self) {
        let waker = {
            let mut shared = lock(&self.shared);
            shared.settled = true;
            shared.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
