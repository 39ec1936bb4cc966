//! Fencing on the worker: the epoch the scheduler gave this worker, and
//! when its lease was last renewed.
//!
//! A forwarded request carries the epoch it was routed under; one that is
//! not the current epoch is refused (409), so work routed to a worker's old
//! incarnation never runs. A worker that has not renewed its lease for a
//! full TTL cannot know it still holds it, and takes no work at all (503)
//! until it renews or registers again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::StatusCode;

use crate::api::ApiError;

#[derive(Default)]
pub struct Fence {
    /// 0 while not registered with a scheduler.
    epoch: AtomicU64,
    ttl_ms: AtomicU64,
    renewed: Mutex<Option<Instant>>,
}

impl Fence {
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// A lease was granted or renewed now under `epoch`.
    pub fn renewed(&self, epoch: u64, ttl: Duration) {
        self.epoch.store(epoch, Ordering::Release);
        self.ttl_ms.store(ttl.as_millis() as u64, Ordering::Release);
        *self.renewed.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// Whether the last renewal is within one TTL (always true when the
    /// worker runs without a scheduler).
    pub fn lease_fresh(&self) -> bool {
        if self.epoch() == 0 {
            return true;
        }
        let ttl = Duration::from_millis(self.ttl_ms.load(Ordering::Acquire));
        self.renewed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| t.elapsed() < ttl)
    }

    /// Admits or refuses a request stamped with `stamp` (the
    /// `X-Strata-Epoch` header; `None` for a direct call).
    pub fn check(&self, stamp: Option<&str>) -> Result<(), ApiError> {
        if !self.lease_fresh() {
            return Err(ApiError::unavailable(
                "this worker has not renewed its lease with the scheduler for a full TTL; it takes no work until it does",
            ));
        }
        let Some(stamp) = stamp else { return Ok(()) };
        let current = self.epoch();
        match stamp.trim().parse::<u64>() {
            Ok(e) if e == current && current != 0 => Ok(()),
            _ => Err(ApiError::new(
                StatusCode::CONFLICT,
                "lease_error",
                format!("the request was routed under epoch `{stamp}`, this worker holds epoch {current}"),
            )
            .with_code("stale_epoch")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_current_epoch_passes() {
        let f = Fence::default();
        assert!(f.check(None).is_ok(), "no scheduler: direct calls pass");
        assert_eq!(f.check(Some("3")).unwrap_err().status, StatusCode::CONFLICT);
        f.renewed(7, Duration::from_secs(30));
        assert!(f.check(Some("7")).is_ok());
        let e = f.check(Some("6")).unwrap_err();
        assert_eq!(e.status, StatusCode::CONFLICT);
        assert!(e.message.contains("holds epoch 7"), "{}", e.message);
        assert!(f.check(Some("x")).is_err());
    }

    #[test]
    fn a_lease_not_renewed_for_a_ttl_stops_all_work() {
        let f = Fence::default();
        f.renewed(2, Duration::from_millis(30));
        assert!(f.check(Some("2")).is_ok());
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(
            f.check(Some("2")).unwrap_err().status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            f.check(None).unwrap_err().status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        f.renewed(3, Duration::from_secs(30));
        assert!(f.check(Some("3")).is_ok());
    }
}
