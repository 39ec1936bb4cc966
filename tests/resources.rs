//! The resource manager through its public surface: the throttle in real
//! time, admission under the concurrency limit, and desktop yield driven
//! by a scripted probe under tokio's paused clock.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use strata::resources::probe::gpu;
use strata::resources::{AdmissionError, FakeProbe, Mode, ResourceManager, Throttle};
use tokio::time::Instant;

const GIB: u64 = 1 << 30;

/// Real time is noisy (tasks wake late), so only the promise is checked:
/// granted starts never closer than the interval, every caller starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttle_in_real_time_never_starts_two_within_the_interval() {
    let interval = Duration::from_millis(20);
    let throttle = Arc::new(Throttle::new(interval));
    let tasks: Vec<_> = (0..25)
        .map(|_| {
            let t = throttle.clone();
            tokio::spawn(async move {
                let asked = Instant::now();
                let g = t.acquire().await;
                assert!(g.start >= asked && Instant::now() >= g.start);
                g.start
            })
        })
        .collect();
    let mut starts = Vec::new();
    for t in tasks {
        starts.push(t.await.unwrap());
    }
    assert_eq!(starts.len(), 25);
    starts.sort();
    for w in starts.windows(2) {
        assert!(w[1] - w[0] >= interval, "starts {:?} apart", w[1] - w[0]);
    }
}

#[tokio::test(start_paused = true)]
async fn admission_refuses_beyond_the_limit_at_once_and_frees_slots() {
    let mut s = Mode::Default.defaults();
    s.max_in_flight = 3;
    s.throttle = Duration::from_millis(50);
    let rm = ResourceManager::new(s);
    let t0 = Instant::now();
    let a = rm.admit().await.unwrap();
    let b = rm.admit().await.unwrap();
    let c = rm.admit().await.unwrap();
    assert_eq!(c.throttle_wait, Duration::from_millis(50));
    assert_eq!(Instant::now() - t0, Duration::from_millis(100));
    let before = Instant::now();
    let refused = rm.admit().await.err().expect("over the limit");
    assert_eq!(Instant::now(), before, "refusal does not wait");
    let AdmissionError::Overloaded {
        in_flight,
        limit,
        retry_after,
    } = refused
    else {
        panic!("{refused}")
    };
    assert_eq!((in_flight, limit), (3, 3));
    assert!(retry_after >= Duration::from_secs(1));
    drop(b);
    assert!(rm.admit().await.is_ok());
    drop((a, c));
    assert_eq!(rm.admission().in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn desktop_yield_follows_other_processes_within_one_sample() {
    let me = std::process::id();
    let mut s = Mode::Conservative.defaults();
    s.sample_interval = Duration::from_secs(1);
    s.vram_reserve = 0;
    let rm = ResourceManager::new(s);
    // An 8 GiB card, 50 % cap: other processes may hold 4 GiB.
    let card = |desktop: u64| vec![gpu(0, "8G", 8 * GIB, &[(me, 3 * GIB), (4242, desktop)])];
    let probe = FakeProbe::new(card(GIB));
    let monitor = rm
        .watch_gpus(Arc::new(probe.clone()), BTreeMap::from([(0, 3 * GIB)]))
        .expect("conservative mode watches its GPU");
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(rm.admission().try_admit().is_ok());

    // A game starts: the desktop takes 5 GiB.
    probe.set(card(5 * GIB));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let refused = rm.admission().try_admit().err().expect("yielding");
    assert!(
        matches!(refused, AdmissionError::Yielding { .. }),
        "{refused}"
    );
    assert!(refused.to_string().contains("gpu 0"), "{refused}");
    let held = rm.status().yielding.expect("status says it yields");
    assert_eq!((held.others, held.allowance), (5 * GIB, 4 * GIB));

    // Just under the line is not enough (hysteresis 5 % = 0.4 GiB) ...
    probe.set(card(4 * GIB - (100 << 20)));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(rm.admission().try_admit().is_err(), "inside the hysteresis");
    // ... well below it is.
    probe.set(card(3 * GIB));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(rm.admission().try_admit().is_ok(), "resumed");

    // A failing probe keeps the state and does not stop the monitor.
    probe.fail_next(2);
    probe.set(card(6 * GIB));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        rm.admission().try_admit().is_err(),
        "yielded after the failures"
    );
    assert!(!monitor.is_finished());
    monitor.abort();
}

#[tokio::test(start_paused = true)]
async fn aggressive_mode_never_yields() {
    let rm = ResourceManager::new(Mode::Aggressive.defaults());
    let probe = FakeProbe::new(vec![gpu(0, "80G", 80 * GIB, &[(1, 79 * GIB)])]);
    assert!(rm
        .watch_gpus(Arc::new(probe.clone()), BTreeMap::from([(0, GIB)]))
        .is_none());
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(probe.calls(), 0);
    assert!(rm.admission().try_admit().is_ok());
}
