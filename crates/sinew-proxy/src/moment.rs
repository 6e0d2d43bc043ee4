//! A moment that a connection's tasks share without a lock: milliseconds after a base
//! `Instant`, in an atomic. Connections use it for "last active" and "head began".

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct SharedMoment {
    base: Instant,
    /// Milliseconds after `base`, plus one; 0 when unset.
    at: AtomicU64,
}

impl SharedMoment {
    /// Set to now.
    pub fn now() -> Self {
        let m = Self::unset();
        m.mark();
        m
    }

    pub fn unset() -> Self {
        Self {
            base: Instant::now(),
            at: AtomicU64::new(0),
        }
    }

    fn ticks(&self) -> u64 {
        self.base.elapsed().as_millis() as u64 + 1
    }

    /// Moves the moment to now.
    pub fn mark(&self) {
        self.at.store(self.ticks(), Ordering::Relaxed);
    }

    /// How long ago the moment was, if it is set.
    pub fn elapsed(&self) -> Option<Duration> {
        let at = self.at.load(Ordering::Relaxed);
        (at != 0).then(|| Duration::from_millis(self.ticks().saturating_sub(at)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_and_measures() {
        let m = SharedMoment::unset();
        assert_eq!(m.elapsed(), None);
        m.mark();
        std::thread::sleep(Duration::from_millis(20));
        assert!(m.elapsed().unwrap() >= Duration::from_millis(20));
        assert!(SharedMoment::now().elapsed().unwrap() < Duration::from_secs(1));
    }
}
