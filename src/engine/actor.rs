//! The engine as an actor: one thread owns the loaded model and runs
//! generations one after another; callers hold an [`EngineHandle`] and
//! talk to it through channels, never through locks held across awaits.
//!
//! Each submitted job carries the sender of its event stream. The engine
//! sends one [`EngineEvent::Step`] per decode step; when that send fails
//! (the caller dropped the receiver: the client went away) the generation
//! stops before the next decode step and the engine takes the next job. A
//! job whose caller left while it was queued is skipped. A panic inside a
//! generation fails that job with an error event and the engine goes on.

use std::ops::ControlFlow;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
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
    request: GenerateRequest,
    events: mpsc::UnboundedSender<EngineEvent>,
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
                        continue; // the caller left while queued
                    }
                    stats.busy.store(true, Ordering::Release);
                    touch();
                    let _ = job.events.send(EngineEvent::Started);
                    let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
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
                    let last = match run {
                        Ok(Ok(g)) => {
                            if g.finish == FinishReason::Cancelled {
                                stats.cancelled.fetch_add(1, Ordering::AcqRel);
                            }
                            EngineEvent::Done(Summary::from(&g))
                        }
                        Ok(Err(e)) => EngineEvent::Failed(e.to_string()),
                        Err(_) => {
                            tracing::error!("a generation panicked; the engine goes on");
                            EngineEvent::Failed("the engine failed on this request".into())
                        }
                    };
                    let _ = job.events.send(last);
                    stats.busy.store(false, Ordering::Release);
                    touch();
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
        let (events, rx) = mpsc::unbounded_channel();
        self.stats.queued.fetch_add(1, Ordering::AcqRel);
        if self.jobs.send(Job { request, events }).is_err() {
            self.stats.queued.fetch_sub(1, Ordering::AcqRel);
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
