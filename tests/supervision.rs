//! Auto-recovery, as processes: a scheduler and a worker with a 1 s
//! watchdog. An injected hang is detected, its request fails (never
//! silence), the engine is restarted after 1 s and serves again; an
//! injected panic restarts it again after 2 s (the backoff doubles). The
//! restart count and backoff reach the scheduler's events through the
//! heartbeats.
//!
//! Faults are injected through a route that exists only in builds with
//! the `fault-injection` feature (scripts/test passes it).

#[cfg(not(feature = "fault-injection"))]
#[test]
fn needs_the_fault_injection_feature() {
    panic!("tests/supervision.rs needs `--features fault-injection`; run scripts/test");
}

#[cfg(feature = "fault-injection")]
mod common;

#[cfg(feature = "fault-injection")]
mod with_faults {
    use std::time::{Duration, Instant};

    use candle_core::quantized::GgmlDType;
    use serde_json::{json, Value};

    use super::common::{self, wait_for};

    async fn chat(base: &str) -> (u16, Value) {
        let res = reqwest::Client::new()
            .post(format!("{base}/v1/chat/completions"))
            .json(&json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap();
        (
            res.status().as_u16(),
            res.json().await.unwrap_or(Value::Null),
        )
    }

    async fn inject(worker: &str, fault: &str) {
        let res = reqwest::Client::new()
            .post(format!("{worker}/v1/admin/fault"))
            .json(&json!({"fault": fault}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    }

    /// Chats until one succeeds; how long it took.
    async fn until_served(base: &str, within: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let (status, body) = chat(base).await;
            if status == 200 {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "not served again: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn restart_events(base: &str) -> Vec<String> {
        let v = common::get_json(&format!("{base}/v1/events")).await;
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "engine_restart")
            .map(|e| {
                assert_eq!(e["level"], "INFO", "{e}");
                e["message"].as_str().unwrap().to_string()
            })
            .collect()
    }

    async fn wait_events(base: &str, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let events = restart_events(base).await;
            if events.len() >= n {
                return events;
            }
            assert!(Instant::now() < deadline, "restart events: {events:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hung_or_panicked_engine_is_restarted_with_backoff_and_serves_again() {
        let (_dir, model) = common::chat_model(GgmlDType::Q8_0, 51);
        let model = model.to_string_lossy().into_owned();
        let scheduler = common::spawn_scheduler(&["--ttl", "1s", "--health-interval", "200ms"]);
        let base = scheduler.base.clone();
        let mut worker = common::spawn_worker(
            &base,
            &model,
            &[
                "--model-name",
                "tiny",
                "--ctx-size",
                "128",
                "--mode",
                "aggressive",
                "--watchdog",
                "1s",
            ],
        );
        let log = worker.drain();
        let w = worker.base.clone();
        wait_for(&base, Duration::from_secs(20), "registration", |v| {
            v["active"] == 1
        })
        .await;
        assert_eq!(chat(&base).await.0, 200);

        // A hang: the request in flight fails once the watchdog gives the
        // engine up, with a reason; no request waits in silence.
        inject(&w, "hang").await;
        let started = Instant::now();
        let (status, body) = chat(&base).await;
        assert!(status >= 500, "{status} {body}");
        assert!(body.to_string().contains("no progress"), "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        let took = until_served(&base, Duration::from_secs(15)).await;
        assert!(
            took >= Duration::from_millis(500),
            "restarted before its backoff: {took:?}"
        );
        let events = wait_events(&base, 1).await;
        assert!(
            events[0].contains("1 restarts so far, next backoff 1000 ms"),
            "{events:?}"
        );
        assert!(events[0].contains("no progress for 1s"), "{events:?}");

        // A panic right after: the backoff doubles.
        inject(&w, "panic").await;
        let (status, body) = chat(&base).await;
        assert!(status >= 500, "{status} {body}");
        assert!(body.to_string().contains("injected fault: panic"), "{body}");
        let took = until_served(&base, Duration::from_secs(15)).await;
        assert!(
            took >= Duration::from_millis(1500),
            "restarted before its backoff: {took:?}"
        );
        let events = wait_events(&base, 2).await;
        assert!(
            events[1].contains("2 restarts so far, next backoff 2000 ms"),
            "{events:?}"
        );

        let health = common::get_json(&format!("{w}/health")).await;
        assert_eq!(health["models"][0]["restarts"], 2, "{health}");
        assert_eq!(health["models"][0]["state"], "loaded", "{health}");
        let log = log.lock().unwrap().join("\n");
        assert!(log.contains("restarting the engine in 1s"), "{log}");
        assert!(log.contains("restarting the engine in 2s"), "{log}");
    }
}
