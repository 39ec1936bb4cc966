//! The request throttle: a minimum interval between the starts of two
//! requests.
//!
//! The next free start time is reserved under a lock held only for the
//! arithmetic; the sleep happens outside it. So two starts are never closer
//! than the interval, and each caller waits exactly until its slot. A
//! caller that gives up while waiting (its future is dropped) hands its
//! slot back if nobody reserved after it, so the next caller does not wait
//! for a start that never happens. Time is tokio's, so tests run under a
//! paused clock.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

pub struct Throttle {
    interval: Duration,
    /// The earliest start of the next request; `None` before the first.
    next_start: Mutex<Option<Instant>>,
}

impl Throttle {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            next_start: Mutex::new(None),
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Waits for this caller's start slot; returns how long it waited.
    pub async fn acquire(&self) -> Duration {
        if self.interval.is_zero() {
            return Duration::ZERO;
        }
        let slot = self.reserve();
        let waited = slot.start.saturating_duration_since(Instant::now());
        tokio::time::sleep_until(slot.start).await;
        slot.commit();
        waited
    }

    fn reserve(&self) -> Slot<'_> {
        let now = Instant::now();
        let mut next = self.next_start.lock().unwrap_or_else(|e| e.into_inner());
        let previous = *next;
        let start = previous.map_or(now, |n| n.max(now));
        *next = Some(start + self.interval);
        Slot {
            throttle: self,
            start,
            previous,
            committed: false,
        }
    }
}

/// A reserved start time; dropped uncommitted, it is handed back.
struct Slot<'a> {
    throttle: &'a Throttle,
    start: Instant,
    previous: Option<Instant>,
    committed: bool,
}

impl Slot<'_> {
    fn commit(mut self) {
        self.committed = true;
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        let mut next = self
            .throttle
            .next_start
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Only the latest reservation can be undone without moving others.
        if *next == Some(self.start + self.throttle.interval) {
            *next = self.previous;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn a_hundred_concurrent_starts_are_spaced_exactly() {
        let throttle = Arc::new(Throttle::new(Duration::from_millis(50)));
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let t = throttle.clone();
                tokio::spawn(async move {
                    t.acquire().await;
                    Instant::now()
                })
            })
            .collect();
        let mut starts = Vec::new();
        for t in tasks {
            starts.push(t.await.unwrap());
        }
        assert_eq!(starts.len(), 100);
        starts.sort();
        for w in starts.windows(2) {
            assert!(
                w[1] - w[0] >= Duration::from_millis(50),
                "{:?}",
                w[1] - w[0]
            );
        }
        assert_eq!(starts[0], t0, "the first start does not wait");
        assert_eq!(starts[99] - t0, Duration::from_millis(99 * 50));
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_wait_hands_its_slot_back() {
        let t = Throttle::new(Duration::from_millis(100));
        t.acquire().await; // starts now, next slot at +100ms
        let gave_up = tokio::time::timeout(Duration::from_millis(10), t.acquire()).await;
        assert!(gave_up.is_err());
        let before = Instant::now();
        let waited = t.acquire().await;
        // Without the hand-back it would wait for +200ms.
        assert_eq!(waited, Duration::from_millis(90));
        assert_eq!(Instant::now() - before, Duration::from_millis(90));
    }

    #[tokio::test(start_paused = true)]
    async fn no_wait_after_a_quiet_spell() {
        let t = Throttle::new(Duration::from_millis(50));
        t.acquire().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(t.acquire().await, Duration::ZERO);
        assert_eq!(
            Throttle::new(Duration::ZERO).acquire().await,
            Duration::ZERO
        );
    }
}
