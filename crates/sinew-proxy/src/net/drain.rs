//! Graceful drain: the signal a [`Proxy`](crate::Proxy) sends every connection it holds
//! when it is asked to stop ([`Proxy::drain`](crate::Proxy::drain)), and the count of
//! live connections it waits on.
//!
//! One [`Drain`] is shared by the proxy and all its listener slots, so connections of a
//! listener that a reload removed are drained and waited for too. A connection reads the
//! phase through a `watch` receiver taken when it is accepted; nothing on the request
//! path looks at it. HTTP connections wait on it in their connection loop (beside their
//! timers) and shut down gracefully when draining starts; every connection task is cut
//! when the phase becomes [`Phase::Closing`] (the drain deadline).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::sync::{watch, Notify};

/// Where the proxy is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Serving,
    /// Listeners are closed; connections finish what they have in flight and close.
    Draining,
    /// The drain deadline passed: every connection still open is closed now.
    Closing,
}

/// The drain state shared by a proxy and its listener slots.
pub(crate) struct Drain {
    phase: watch::Sender<Phase>,
    /// Connections (and upgraded tunnels) open across all listeners.
    live: AtomicUsize,
    /// Woken when `live` drops to zero.
    emptied: Notify,
}

impl Drain {
    pub fn new() -> Self {
        Drain {
            phase: watch::Sender::new(Phase::Serving),
            live: AtomicUsize::new(0),
            emptied: Notify::new(),
        }
    }

    /// A view of the phase for one connection.
    pub fn watch(&self) -> DrainWatch {
        DrainWatch(self.phase.subscribe())
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    pub fn set(&self, phase: Phase) {
        self.phase.send_replace(phase);
    }

    pub fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    pub fn connection_opened(&self) {
        self.live.fetch_add(1, Ordering::AcqRel);
    }

    pub fn connection_closed(&self) {
        if self.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Only when the last connection goes, not per connection in general.
            self.emptied.notify_waiters();
        }
    }

    /// Resolves once no connection is open.
    pub async fn emptied(&self) {
        loop {
            let notified = self.emptied.notified();
            tokio::pin!(notified);
            // Registered before the count is read, so a close in between is not missed.
            notified.as_mut().enable();
            if self.live() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One connection's view of the drain phase.
pub(crate) struct DrainWatch(watch::Receiver<Phase>);

impl DrainWatch {
    /// Resolves once draining has begun (at once if it already has).
    pub async fn draining(&mut self) {
        if self.0.wait_for(|p| *p != Phase::Serving).await.is_err() {
            // The proxy is gone without draining; nothing will ever ask to drain.
            std::future::pending::<()>().await;
        }
    }

    /// Resolves once the drain deadline has passed.
    pub async fn closing(&mut self) {
        if self.0.wait_for(|p| *p == Phase::Closing).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Runs `work` (a whole connection) until it ends or the drain deadline cuts it.
    pub fn cut_at_deadline<F: Future<Output = ()>>(mut self, work: F) -> CutAtDeadline<F> {
        CutAtDeadline {
            work,
            // Boxed: one small allocation per connection, polled only when the drain
            // phase changes.
            closing: Box::pin(async move { self.closing().await }),
        }
    }
}

pin_project_lite::pin_project! {
    /// A connection's work, cut short when the drain deadline passes. A struct rather
    /// than an async fn: an async fn keeps its `work` argument and the copy it moves into
    /// the select side by side, which doubled every connection's task (about 2 KB more
    /// per idle keep-alive connection in bench scenario (h)).
    pub(crate) struct CutAtDeadline<F> {
        #[pin]
        work: F,
        closing: Pin<Box<dyn Future<Output = ()> + Send>>,
    }
}

impl<F: Future<Output = ()>> Future for CutAtDeadline<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        // The work first, as the select this replaces was biased towards it.
        if this.work.poll(cx).is_ready() {
            return Poll::Ready(());
        }
        this.closing.as_mut().poll(cx)
    }
}

/// What a drain did, for the log and the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Every connection finished on its own before the deadline.
    pub finished: bool,
    /// Connections still open at the deadline, which were then closed.
    pub cut: usize,
    /// How long the drain took.
    pub took: std::time::Duration,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn emptied_resolves_when_the_last_connection_closes() {
        let drain = Arc::new(Drain::new());
        drain.emptied().await; // nothing open: at once
        drain.connection_opened();
        drain.connection_opened();
        let waiter = tokio::spawn({
            let drain = drain.clone();
            async move { drain.emptied().await }
        });
        drain.connection_closed();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "one connection is still open");
        drain.connection_closed();
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("emptied in time")
            .unwrap();
    }

    #[tokio::test]
    async fn a_watch_taken_after_draining_began_sees_it() {
        let drain = Drain::new();
        drain.set(Phase::Draining);
        let mut late = drain.watch();
        tokio::time::timeout(Duration::from_secs(1), late.draining())
            .await
            .expect("draining seen at once");
    }

    #[tokio::test]
    async fn closing_cuts_the_work_and_only_closing_does() {
        let drain = Drain::new();
        let stuck = drain.watch().cut_at_deadline(std::future::pending());
        tokio::pin!(stuck);
        drain.set(Phase::Draining);
        assert!(
            tokio::time::timeout(Duration::from_millis(30), stuck.as_mut())
                .await
                .is_err(),
            "draining alone does not cut a connection"
        );
        drain.set(Phase::Closing);
        tokio::time::timeout(Duration::from_secs(1), stuck)
            .await
            .expect("closing cuts it");
    }
}
