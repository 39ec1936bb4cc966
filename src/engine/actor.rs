//! The engine as an actor: one thread owns the loaded model and runs
//! generations one after another; callers hold an [`EngineHandle`] and
//! talk to it through channels, never through locks held across awaits.
//!
//! Each submitted job carries the sender of its event stream. The engine
//! sends one [`EngineEvent::Step`] per decode step; when that send fails
//! (the caller dropped the receiver: the client went away) the generation
//! stops before the next decode step and the engine takes the next job. A
//! job whose caller left while it was queued is skipped.
//!
//! A panic inside a generation fails that job with an error event and ends
//! the engine (the model's state may be half-written): it fails the jobs
//! still queued and marks itself dead with the reason, for the supervisor
//! ([`super::pool`]) to restart it. An engine that hangs cannot be stopped,
//! but [`EngineHandle::abandon`] fails every job it holds, so no caller
//! waits on it in silence. With the `fault-injection` feature (tests only)
//! a panic or a hang can be injected into the next generation.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::generate::{generate_steps, FinishReason, GenerateRequest, Generation};
use super::LoadedModel;

/// What a job reports, in order: steps, then one `Done` or `Failed`.
#[derive(Debug, Clone)]
pub enum EngineEvent {
    /// The engine picked the job up (prefill starts).
    Started,
    /// One decode step: the text it made final (may be empty) and whether
    /// it produced a token (the final flush does not).
    Step {
        text: String,
        token: bool,
    },
    Done(Summary),
    Failed(String),
}

/// How a generation ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub finish: FinishReason,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub prefill: Duration,
    pub decode: Duration,
}

impl From<&Generation> for Summary {
    fn from(g: &Generation) -> Self {
        Self {
            finish: g.finish,
            prompt_tokens: g.prompt_tokens,
            completion_tokens: g.tokens.len(),
            prefill: g.prefill,
            decode: g.decode,
        }
    }
}

struct Job {
    id: u64,
    request: GenerateRequest,
    events: mpsc::UnboundedSender<EngineEvent>,
}

/// A fault to inject into the next generation (`fault-injection` builds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Panic,
    Hang,
}

/// Liveness and load of the engine thread, readable without a message.
#[derive(Default)]
pub struct EngineStats {
    alive: AtomicBool,
    busy: AtomicBool,
    queued: AtomicUsize,
    /// Milliseconds since `epoch` at the last sign of progress.
    progress_ms: AtomicU64,
    /// Tokens generated since start.
    tokens: AtomicU64,
    /// Generations stopped because their caller went away.
    cancelled: AtomicU64,
    /// Why the engine ended, once it has (a panic, or abandoned).
    death: Mutex<Option<String>>,
    /// The event senders of the jobs submitted and not finished, so that
    /// an abandoned engine's callers can be told.
    pending: Mutex<HashMap<u64, mpsc::UnboundedSender<EngineEvent>>>,
    next_job: AtomicU64,
    /// 0 none, 1 panic, 2 hang (`fault-injection` builds).
    fault: AtomicUsize,
}

impl EngineStats {
    fn finished(&self, job: u64) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&job);
    }

    fn die(&self, why: String) {
        let mut death = self.death.lock().unwrap_or_else(|e| e.into_inner());
        death.get_or_insert(why);
        self.alive.store(false, Ordering::Release);
    }

    /// Fails every job not finished with `message`.
    fn fail_pending(&self, message: &str) {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        for (_, events) in pending {
            let _ = events.send(EngineEvent::Failed(message.to_string()));
        }
    }
}

#[derive(Clone)]
pub struct EngineHandle {
    jobs: mpsc::UnboundedSender<Job>,
    stats: Arc<EngineStats>,
    epoch: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the engine has stopped")]
pub struct EngineStopped;

impl EngineHandle {
    /// Starts the engine thread over `model`.
    pub fn spawn(model: Arc<LoadedModel>) -> Self {
        let (jobs, mut rx) = mpsc::unbounded_channel::<Job>();
        let stats = Arc::new(EngineStats::default());
        let epoch = Instant::now();
        stats.alive.store(true, Ordering::Release);
        let thread_stats = stats.clone();
        std::thread::Builder::new()
            .name("strata-engine".into())
            .spawn(move || {
                let stats = thread_stats;
                let touch = || {
                    stats
                        .progress_ms
                        .store(epoch.elapsed().as_millis() as u64, Ordering::Release)
                };
                while let Some(job) = rx.blocking_recv() {
                    stats.queued.fetch_sub(1, Ordering::AcqRel);
                    if job.events.is_closed() {
                        stats.finished(job.id);
                        continue; // the caller left while queued
                    }
                    stats.busy.store(true, Ordering::Release);
                    touch();
                    let _ = job.events.send(EngineEvent::Started);
                    let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        injected_fault(&stats);
                        generate_steps(&model.model, &model.tokenizer, &job.request, |step| {
                            touch();
                            if step.token.is_some() {
                                stats.tokens.fetch_add(1, Ordering::AcqRel);
                            }
                            let event = EngineEvent::Step {
                                text: step.text.to_string(),
                                token: step.token.is_some(),
                            };
                            match job.events.send(event) {
                                Ok(()) => ControlFlow::Continue(()),
                                Err(_) => ControlFlow::Break(()),
                            }
                        })
                    }));
                    let (last, panicked) = match run {
                        Ok(Ok(g)) => {
                            if g.finish == FinishReason::Cancelled {
                                stats.cancelled.fetch_add(1, Ordering::AcqRel);
                            }
                            (EngineEvent::Done(Summary::from(&g)), None)
                        }
                        Ok(Err(e)) => (EngineEvent::Failed(e.to_string()), None),
                        Err(panic) => {
                            let what = panic_message(panic.as_ref());
                            tracing::error!(
                                "a generation panicked ({what}); the engine stops for a restart"
                            );
                            (
                                EngineEvent::Failed(format!(
                                    "the engine failed on this request ({what}) and restarts"
                                )),
                                Some(what),
                            )
                        }
                    };
                    let _ = job.events.send(last);
                    stats.finished(job.id);
                    stats.busy.store(false, Ordering::Release);
                    touch();
                    if let Some(what) = panicked {
                        stats.die(format!("a generation panicked: {what}"));
                        stats.fail_pending("the engine failed and restarts; retry the request");
                        break;
                    }
                }
                stats.alive.store(false, Ordering::Release);
            })
            .expect("spawn the engine thread");
        Self { jobs, stats, epoch }
    }

    /// Queues `request`; its events arrive on the returned receiver.
    /// Dropping the receiver cancels the job.
    pub fn submit(
        &self,
        request: GenerateRequest,
    ) -> Result<mpsc::UnboundedReceiver<EngineEvent>, EngineStopped> {
        if self.death().is_some() {
            return Err(EngineStopped);
        }
        let (events, rx) = mpsc::unbounded_channel();
        let id = self.stats.next_job.fetch_add(1, Ordering::AcqRel);
        self.stats
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, events.clone());
        self.stats.queued.fetch_add(1, Ordering::AcqRel);
        if self
            .jobs
            .send(Job {
                id,
                request,
                events,
            })
            .is_err()
        {
            self.stats.queued.fetch_sub(1, Ordering::AcqRel);
            self.stats.finished(id);
            return Err(EngineStopped);
        }
        Ok(rx)
    }

    /// Jobs waiting for the engine (not counting the one running).
    pub fn queue_depth(&self) -> usize {
        self.stats.queued.load(Ordering::Acquire)
    }

    pub fn tokens_generated(&self) -> u64 {
        self.stats.tokens.load(Ordering::Acquire)
    }

    /// Generations cut short because the caller dropped its receiver.
    pub fn generations_cancelled(&self) -> u64 {
        self.stats.cancelled.load(Ordering::Acquire)
    }

    pub fn is_busy(&self) -> bool {
        self.stats.busy.load(Ordering::Acquire)
    }

    /// Why the engine ended, once it has.
    pub fn death(&self) -> Option<String> {
        self.stats
            .death
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Busy with no sign of progress for `deadline` (a hang).
    pub fn stalled(&self, deadline: Duration) -> bool {
        if !self.is_busy() {
            return false;
        }
        let last = Duration::from_millis(self.stats.progress_ms.load(Ordering::Acquire));
        self.epoch.elapsed().saturating_sub(last) > deadline
    }

    /// Gives the engine up (it hung): every job it holds fails with
    /// `why`, and it takes no more.
    pub fn abandon(&self, why: String) {
        self.stats.die(why.clone());
        self.stats
            .fail_pending(&format!("{why}; the engine restarts, retry the request"));
    }

    /// Makes the next generation panic or hang (tests only).
    #[cfg(feature = "fault-injection")]
    pub fn inject(&self, fault: Fault) {
        let code = match fault {
            Fault::Panic => 1,
            Fault::Hang => 2,
        };
        self.stats.fault.store(code, Ordering::Release);
    }

    /// The engine thread runs and, if busy, made progress within `stall`.
    pub fn is_healthy(&self, stall: Duration) -> bool {
        if !self.stats.alive.load(Ordering::Acquire) || self.jobs.is_closed() {
            return false;
        }
        if !self.is_busy() {
            return true;
        }
        let last = Duration::from_millis(self.stats.progress_ms.load(Ordering::Acquire));
        self.epoch.elapsed().saturating_sub(last) <= stall
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}

/// Runs an injected fault, if one is armed (always none in normal builds).
fn injected_fault(stats: &EngineStats) {
    match stats.fault.swap(0, Ordering::AcqRel) {
        1 => panic!("injected fault: panic"),
        2 => loop {
            // A hang: no progress, ever.
            std::thread::park();
        },
        _ => {}
    }
}
