//! Desktop yield: stop taking work while other processes crowd a GPU.
//!
//! The rule, per watched GPU: the VRAM cap and reserve give Strata at most
//! `budget = total × cap − reserve`; the rest, `allowance = total − budget`,
//! belongs to the other processes. When they hold more than their
//! allowance the worker yields (admits nothing new; in-flight requests
//! finish). It resumes when every watched GPU is back under its allowance
//! minus the hysteresis margin (a share of the GPU's memory), so a reading
//! that hovers at the line does not flap.
//!
//! Other processes' use is the GPU's used memory minus Strata's own, taken
//! from NVML's process list by pid, or from the bytes the loader placed on
//! the GPU when the pid is not visible (containers, Windows). Counting our
//! own weights against the line would make a worker that filled its budget
//! yield for good as soon as the desktop held more than the reserve.
//!
//! [`YieldDetector`] is the pure state machine; [`spawn`] samples a probe
//! at an interval on tokio's clock and flips the admission switch.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::admission::{Admission, YieldReason};
use super::budget::{budget, Percent};
use super::probe::{DeviceProbe, GpuReading};
use crate::devices::HumanBytes;

/// A change of the yield state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum YieldChange {
    Started(YieldReason),
    Ended,
}

pub struct YieldDetector {
    cap: Percent,
    reserve: u64,
    hysteresis: Percent,
    own_pid: u32,
    /// Bytes Strata placed on each GPU (by NVML index), used when NVML does
    /// not list our pid.
    own_bytes: BTreeMap<u32, u64>,
    current: Option<YieldReason>,
}

impl YieldDetector {
    pub fn new(
        cap: Percent,
        reserve: u64,
        hysteresis: Percent,
        own_pid: u32,
        own_bytes: BTreeMap<u32, u64>,
    ) -> Self {
        Self {
            cap,
            reserve,
            hysteresis,
            own_pid,
            own_bytes,
            current: None,
        }
    }

    pub fn current(&self) -> Option<&YieldReason> {
        self.current.as_ref()
    }

    /// Bytes other processes hold on `g`.
    fn others(&self, g: &GpuReading) -> u64 {
        let listed: Option<u64> = g
            .processes
            .iter()
            .filter(|p| p.pid == self.own_pid)
            .map(|p| p.bytes)
            .reduce(|a, b| Some(a? + b?))
            .flatten();
        let ours = listed.unwrap_or_else(|| self.own_bytes.get(&g.index).copied().unwrap_or(0));
        g.used.saturating_sub(ours)
    }

    fn allowance(&self, total: u64) -> u64 {
        total - budget(total, self.cap, self.reserve)
    }

    /// Feeds one reading of the watched GPUs; returns the change, if any.
    pub fn observe(&mut self, gpus: &[GpuReading]) -> Option<YieldChange> {
        if self.current.is_none() {
            let over = gpus.iter().find_map(|g| {
                let (others, allowance) = (self.others(g), self.allowance(g.total));
                (others > allowance).then_some(YieldReason {
                    gpu: g.index,
                    others,
                    allowance,
                })
            });
            self.current = over.clone();
            over.map(YieldChange::Started)
        } else {
            let all_clear = gpus.iter().all(|g| {
                let margin = self.hysteresis.of(g.total);
                self.others(g) <= self.allowance(g.total).saturating_sub(margin)
            });
            if all_clear {
                self.current = None;
                Some(YieldChange::Ended)
            } else {
                None
            }
        }
    }
}

/// Samples `probe` every `interval`, feeds the readings of the GPUs in
/// `watched` to `detector`, and sets `admission`'s yield switch. A failed
/// reading is logged once per failure spell and leaves the state as it is.
pub fn spawn(
    probe: Arc<dyn DeviceProbe>,
    watched: Vec<u32>,
    mut detector: YieldDetector,
    admission: Arc<Admission>,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            ticker.tick().await;
            let readings = match probe.gpus() {
                Ok(r) => {
                    failing = false;
                    r
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!("desktop yield: {e}; keeping the current state");
                    }
                    failing = true;
                    continue;
                }
            };
            let watched: Vec<GpuReading> = readings
                .into_iter()
                .filter(|g| watched.contains(&g.index))
                .collect();
            match detector.observe(&watched) {
                Some(YieldChange::Started(reason)) => {
                    tracing::warn!(
                        gpu = reason.gpu,
                        others = %HumanBytes(reason.others),
                        allowance = %HumanBytes(reason.allowance),
                        "other processes crowd the GPU: yielding (no new requests)"
                    );
                    admission.set_yielding(Some(reason));
                }
                Some(YieldChange::Ended) => {
                    tracing::info!("GPU memory back under the cap: resuming");
                    admission.set_yielding(None);
                }
                None => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::probe::gpu;

    const GIB: u64 = 1 << 30;
    const ME: u32 = 1000;

    fn detector() -> YieldDetector {
        // 50 % cap, no reserve, 5 % hysteresis: others may hold half.
        YieldDetector::new(
            Percent::whole(50),
            0,
            Percent::whole(5),
            ME,
            BTreeMap::new(),
        )
    }

    #[test]
    fn yields_above_the_allowance_and_resumes_below_the_margin() {
        let mut d = detector();
        let card = |desktop: u64| vec![gpu(0, "8G", 8 * GIB, &[(ME, 3 * GIB), (7, desktop)])];
        assert_eq!(d.observe(&card(GIB)), None);
        assert_eq!(
            d.observe(&card(4 * GIB)),
            None,
            "exactly the allowance is fine"
        );
        let Some(YieldChange::Started(r)) = d.observe(&card(5 * GIB)) else {
            panic!("no yield")
        };
        assert_eq!((r.gpu, r.others, r.allowance), (0, 5 * GIB, 4 * GIB));
        // Under the allowance but inside the margin (4 GiB − 5 % of 8 GiB).
        assert_eq!(d.observe(&card(4 * GIB - 100)), None);
        assert_eq!(d.observe(&card(3 * GIB)), Some(YieldChange::Ended));
        assert!(d.current().is_none());
    }

    #[test]
    fn our_bytes_come_from_the_hint_when_nvml_hides_our_pid() {
        let own = BTreeMap::from([(1, 6 * GIB)]);
        let mut d = YieldDetector::new(Percent::whole(50), 0, Percent::whole(5), ME, own);
        // Our 6 GiB show under a foreign pid (container); 1 GiB desktop.
        let r = vec![gpu(1, "16G", 16 * GIB, &[(1, 6 * GIB), (7, GIB)])];
        assert_eq!(d.observe(&r), None);
        let r = vec![gpu(1, "16G", 16 * GIB, &[(1, 6 * GIB), (7, 9 * GIB)])];
        assert!(matches!(d.observe(&r), Some(YieldChange::Started(_))));
    }

    #[test]
    fn any_crowded_gpu_yields_and_all_must_clear() {
        let mut d = detector();
        let two = |a: u64, b: u64| {
            vec![
                gpu(0, "24G", 24 * GIB, &[(7, a)]),
                gpu(1, "8G", 8 * GIB, &[(8, b)]),
            ]
        };
        assert_eq!(d.observe(&two(GIB, GIB)), None);
        assert!(
            matches!(d.observe(&two(GIB, 6 * GIB)), Some(YieldChange::Started(r)) if r.gpu == 1)
        );
        assert_eq!(d.observe(&two(13 * GIB, GIB)), None, "gpu 0 now crowded");
        assert_eq!(d.observe(&two(GIB, GIB)), Some(YieldChange::Ended));
    }
}
