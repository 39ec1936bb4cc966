//! The request throttle: a minimum interval between the starts of two
//! requests.
//!
//! A caller reserves the next free start slot under a lock held only for
//! the arithmetic, and sleeps outside it. Waking up is not exact (a task
//! may be scheduled late), so the start is granted under the lock again,
//! against the previous grant: if that one came late, the caller sleeps the
//! remainder and tries again. Grants are therefore never closer than the
//! interval, and each caller waits only as long as its slot and the
//! previous grant require. A caller that gives up while waiting (its
//! future is dropped) hands its slot back if nobody reserved after it.
//! Time is tokio's, so tests run under a paused clock.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

pub struct Throttle {
    interval: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The earliest slot for the next reservation.
    next_slot: Option<Instant>,
    /// When the last start was granted.
    last_grant: Option<Instant>,
}

/// A granted start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The instant the start was granted (what the interval is kept between).
    pub start: Instant,
    /// How long the caller waited for it.
    pub waited: Duration,
}

impl Throttle {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: Mutex::new(State::default()),
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for this caller's start.
    pub async fn acquire(&self) -> Grant {
        let asked = Instant::now();
        if self.interval.is_zero() {
            return Grant {
                start: asked,
                waited: Duration::ZERO,
            };
        }
        let slot = self.reserve(asked);
        let mut wake = slot.start;
        loop {
            tokio::time::sleep_until(wake).await;
            let mut state = self.lock();
            let now = Instant::now();
            match state.last_grant.map(|g| g + self.interval) {
                Some(earliest) if now < earliest => wake = earliest,
                _ => {
                    state.last_grant = Some(now);
                    drop(state);
                    slot.commit();
                    return Grant {
                        start: now,
                        waited: now - asked,
                    };
                }
            }
        }
    }

    fn reserve(&self, now: Instant) -> Slot<'_> {
        let mut state = self.lock();
        let previous = state.next_slot;
        let after_grant = state.last_grant.map(|g| g + self.interval);
        let start = [Some(now), previous, after_grant]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(now);
        state.next_slot = Some(start + self.interval);
        Slot {
            throttle: self,
            start,
            previous,
            committed: false,
        }
    }
}

/// A reserved start slot; dropped uncommitted, it is handed back.
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
        let mut state = self.throttle.lock();
        // Only the latest reservation can be undone without moving others.
        if state.next_slot == Some(self.start + self.throttle.interval) {
            state.next_slot = self.previous;
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
                tokio::spawn(async move { t.acquire().await.start })
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
        let waited = t.acquire().await.waited;
        // Without the hand-back it would wait for +200ms.
        assert_eq!(waited, Duration::from_millis(90));
        assert_eq!(Instant::now() - before, Duration::from_millis(90));
    }

    #[tokio::test(start_paused = true)]
    async fn no_wait_after_a_quiet_spell() {
        let t = Throttle::new(Duration::from_millis(50));
        t.acquire().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(t.acquire().await.waited, Duration::ZERO);
        let free = Throttle::new(Duration::ZERO);
        assert_eq!(free.acquire().await.waited, Duration::ZERO);
    }

    /// A start granted late (its task woke late) pushes the next one back.
    #[tokio::test(start_paused = true)]
    async fn a_late_grant_pushes_the_next_start() {
        let t = Throttle::new(Duration::from_millis(50));
        let first = t.reserve(Instant::now()); // slot at 0
        let second = t.reserve(Instant::now()); // slot at 50ms
        tokio::time::sleep(Duration::from_millis(30)).await;
        // The first caller only now gets its grant, 30 ms late ...
        t.lock().last_grant = Some(Instant::now());
        first.commit();
        drop(second);
        // ... so a start at the 50 ms slot would be 20 ms too close.
        let g = t.acquire().await;
        assert_eq!(g.waited, Duration::from_millis(50));
    }
}
