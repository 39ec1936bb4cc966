//! Download progress: shared counters a caller can poll (a remote pull
//! job), shown as a progress bar (bytes, rate, ETA) on a terminal or as a
//! plain line at every tenth of the file otherwise.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

/// Bytes done of bytes in total, readable while the download runs.
#[derive(Debug, Default)]
pub struct PullState {
    total: AtomicU64,
    done: AtomicU64,
}

impl PullState {
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }
}

/// How progress is shown besides the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// A bar on stderr when it is a terminal, else log lines.
    Auto,
    /// `tracing` lines only (a worker's pull job).
    Log,
}

/// The hf-hub progress callback; clones share their state.
#[derive(Clone)]
pub struct Reporter {
    pub state: Arc<PullState>,
    bar: Option<ProgressBar>,
    name: Arc<Mutex<String>>,
    /// The last tenth logged, and when the download (re)started.
    logged: Arc<Mutex<(u64, Instant)>>,
}

impl Reporter {
    pub fn new(display: Display) -> Self {
        let bar = (display == Display::Auto && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar
        });
        Self {
            state: Arc::default(),
            bar,
            name: Arc::default(),
            logged: Arc::new(Mutex::new((0, Instant::now()))),
        }
    }

    fn log_tenths(&self) {
        let (done, total) = (self.state.done(), self.state.total());
        if self.bar.is_some() || total == 0 {
            return;
        }
        let tenth = done * 10 / total;
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        if tenth > logged.0 {
            logged.0 = tenth;
            let rate = done as f64 / logged.1.elapsed().as_secs_f64().max(1e-3);
            let name = self.name.lock().unwrap_or_else(|e| e.into_inner()).clone();
            tracing::info!(
                "pulling {name}: {} of {} ({}%), {}/s",
                HumanBytes(done),
                HumanBytes(total),
                tenth * 10,
                HumanBytes(rate as u64)
            );
        }
    }
}

impl hf_hub::api::tokio::Progress for Reporter {
    async fn init(&mut self, size: usize, filename: &str) {
        self.state.total.store(size as u64, Ordering::Relaxed);
        // A resumed download reports the bytes it kept as its first update.
        self.state.done.store(0, Ordering::Relaxed);
        *self.name.lock().unwrap_or_else(|e| e.into_inner()) = filename.to_string();
        *self.logged.lock().unwrap_or_else(|e| e.into_inner()) = (0, Instant::now());
        if let Some(bar) = &self.bar {
            bar.set_length(size as u64);
            bar.set_position(0);
            bar.set_message(filename.to_string());
        }
    }

    async fn update(&mut self, size: usize) {
        self.state.done.fetch_add(size as u64, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.inc(size as u64);
        }
        self.log_tenths();
    }

    async fn finish(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
