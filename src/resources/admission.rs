//! Admission: the concurrency limit and the yield switch.
//!
//! A request is admitted only if fewer than `max_in_flight` are in flight
//! and the worker is not yielding to its desktop. Refusal is immediate
//! (no unbounded queue) and says when to retry; the API turns it into 429
//! with `Retry-After`. An admitted request holds a [`Permit`] whose drop
//! frees the slot, however the request ends (done, failed, cancelled).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::devices::HumanBytes;

/// Why a worker yields: another process crowds one of its GPUs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct YieldReason {
    /// NVML index of the GPU.
    pub gpu: u32,
    /// Bytes other processes hold on it.
    pub others: u64,
    /// What the cap leaves them before the worker yields.
    pub allowance: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    #[error("the worker is busy: {in_flight} requests in flight, the limit (`max_in_flight`) is {limit}; retry after {}s", retry_after.as_secs())]
    Overloaded {
        in_flight: usize,
        limit: usize,
        retry_after: Duration,
    },
    #[error("the worker is yielding to its desktop: other processes use {} of gpu {} (more than the {} the VRAM cap leaves them); retry after {}s", HumanBytes(reason.others), reason.gpu, HumanBytes(reason.allowance), retry_after.as_secs())]
    Yielding {
        reason: YieldReason,
        retry_after: Duration,
    },
}

impl AdmissionError {
    pub fn retry_after(&self) -> Duration {
        match self {
            AdmissionError::Overloaded { retry_after, .. }
            | AdmissionError::Yielding { retry_after, .. } => *retry_after,
        }
    }
}

pub struct Admission {
    limit: usize,
    in_flight: AtomicUsize,
    yielding: Mutex<Option<YieldReason>>,
    retry_after: Duration,
}

impl Admission {
    /// `retry_after` is what refusals advise (at least one second, as
    /// `Retry-After` counts whole seconds).
    pub fn new(limit: usize, retry_after: Duration) -> Arc<Self> {
        Arc::new(Self {
            limit,
            in_flight: AtomicUsize::new(0),
            yielding: Mutex::new(None),
            retry_after: retry_after.max(Duration::from_secs(1)),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    pub fn yielding(&self) -> Option<YieldReason> {
        self.yielding
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_yielding(&self, reason: Option<YieldReason>) {
        *self.yielding.lock().unwrap_or_else(|e| e.into_inner()) = reason;
    }

    /// Takes a slot, or says why not. Never blocks.
    pub fn try_admit(self: &Arc<Self>) -> Result<Permit, AdmissionError> {
        if let Some(reason) = self.yielding() {
            return Err(AdmissionError::Yielding {
                reason,
                retry_after: self.retry_after,
            });
        }
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .map_err(|in_flight| AdmissionError::Overloaded {
                in_flight,
                limit: self.limit,
                retry_after: self.retry_after,
            })?;
        Ok(Permit {
            admission: self.clone(),
        })
    }
}

/// One admitted request's slot; freed on drop.
pub struct Permit {
    admission: Arc<Admission>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.admission.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_holds_and_slots_come_back() {
        let a = Admission::new(2, Duration::ZERO);
        let p1 = a.try_admit().unwrap();
        let _p2 = a.try_admit().unwrap();
        let e = a.try_admit().err().unwrap();
        assert_eq!(
            e,
            AdmissionError::Overloaded {
                in_flight: 2,
                limit: 2,
                retry_after: Duration::from_secs(1)
            }
        );
        assert!(e.to_string().contains("`max_in_flight`) is 2"), "{e}");
        drop(p1);
        assert_eq!(a.in_flight(), 1);
        assert!(a.try_admit().is_ok());
    }

    #[test]
    fn never_over_the_limit_under_contention() {
        let a = Admission::new(3, Duration::ZERO);
        let peak = Arc::new(AtomicUsize::new(0));
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..2000 {
                        if let Ok(_p) = a.try_admit() {
                            peak.fetch_max(a.in_flight(), Ordering::AcqRel);
                        }
                    }
                });
            }
        });
        assert!(peak.load(Ordering::Acquire) <= 3);
        assert_eq!(a.in_flight(), 0, "every permit came back");
    }

    #[test]
    fn yielding_refuses_with_the_reason() {
        let a = Admission::new(4, Duration::from_secs(2));
        a.set_yielding(Some(YieldReason {
            gpu: 1,
            others: 5 << 30,
            allowance: 4 << 30,
        }));
        let e = a.try_admit().err().unwrap();
        assert_eq!(e.retry_after(), Duration::from_secs(2));
        assert!(e.to_string().contains("5.00 GiB of gpu 1"), "{e}");
        a.set_yielding(None);
        assert!(a.try_admit().is_ok());
    }
}
