//! Active health checks and alerts, with stub workers on loopback and the
//! scheduler's rounds run by hand on an injected clock: one failed check
//! degrades a node (WARNING), three make it unhealthy (ERROR) and the
//! gateway stops routing to it, the last healthy worker of a model going
//! raises CRITICAL, a passing check recovers it (INFO). Events come back
//! from `/v1/events` (filtered by level, and live over SSE) and reach a
//! webhook that fails once.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde_json::{json, Value};
use strata::scheduler::clock::ManualClock;
use strata::scheduler::health::HealthState;
use strata::scheduler::http::router;
use strata::scheduler::service::{Scheduler, SchedulerConfig};
use strata::scheduler::store::MemoryStore;

async fn listen(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// A worker whose `/health` answers 200 while `up` holds, else 500.
async fn stub_worker(up: Arc<AtomicBool>) -> String {
    let app = Router::new()
        .route(
            "/health",
            get(move || {
                let up = up.load(Ordering::Acquire);
                async move {
                    if up {
                        StatusCode::OK
                    } else {
                        StatusCode::INTERNAL_SERVER_ERROR
                    }
                }
            }),
        )
        .route(
            "/v1/chat/completions",
            post(|| async { Json(json!({"object": "chat.completion", "choices": []})) }),
        );
    listen(app).await
}

/// A webhook receiver that answers 500 to its first delivery.
async fn webhook(received: Arc<Mutex<Vec<Value>>>, calls: Arc<AtomicUsize>) -> String {
    let app = Router::new().route(
        "/hook",
        post(move |Json(v): Json<Value>| {
            let (received, calls) = (received.clone(), calls.clone());
            async move {
                if calls.fetch_add(1, Ordering::AcqRel) == 0 {
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                received.lock().unwrap().push(v);
                StatusCode::OK
            }
        }),
    );
    format!("{}/hook", listen(app).await)
}

async fn register(base: &str, endpoint: &str) -> String {
    let url = format!("{base}/v1/nodes/register");
    let v = common::post_json(&url, &json!({"endpoint": endpoint, "models": ["m"]})).await;
    v["node_id"].as_str().unwrap().to_string()
}

fn kinds(events: &Value) -> Vec<(String, String)> {
    events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["level"].as_str().unwrap().to_string(),
                e["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_degrade_then_isolate_a_node_and_alerts_say_so() {
    let received = Arc::new(Mutex::new(Vec::new()));
    let calls = Arc::new(AtomicUsize::new(0));
    let hook = webhook(received.clone(), calls.clone()).await;
    let s = Scheduler::new(
        Arc::new(MemoryStore::new()),
        Arc::new(ManualClock::default()),
        SchedulerConfig {
            ttl: Duration::from_secs(3600),
            health_timeout: Duration::from_millis(500),
            webhook: Some(hook),
            ..SchedulerConfig::default()
        },
    );
    let base = listen(router(s.clone())).await;
    let (up_a, up_b) = (
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicBool::new(true)),
    );
    let a = register(&base, &stub_worker(up_a.clone()).await).await;
    let b = register(&base, &stub_worker(up_b.clone()).await).await;

    // A live SSE subscriber sees what happens from here on.
    let sse = reqwest::Client::new()
        .get(format!("{base}/v1/events?level=ERROR"))
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    let mut sse = sse.bytes_stream();

    s.check_all().await;
    assert_eq!(s.health.state(&a), HealthState::Healthy);

    up_a.store(false, Ordering::Release);
    s.check_all().await;
    assert_eq!(s.health.state(&a), HealthState::Degraded);
    assert_eq!(
        s.eligible("m").await.unwrap().unwrap().len(),
        2,
        "degraded still serves"
    );
    s.check_all().await;
    s.check_all().await;
    assert_eq!(s.health.state(&a), HealthState::Unhealthy);
    let ready = s.eligible("m").await.unwrap().unwrap();
    let ready: Vec<&str> = ready.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ready, [b.as_str()]);

    // The last healthy worker of `m` goes: CRITICAL, and the gateway says
    // why it cannot route.
    up_b.store(false, Ordering::Release);
    for _ in 0..3 {
        s.check_all().await;
    }
    let res = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    let e: Value = res.json().await.unwrap();
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unhealthy"),
        "{e}"
    );

    up_a.store(true, Ordering::Release);
    s.check_all().await;
    assert_eq!(s.health.state(&a), HealthState::Healthy);

    let all = common::get_json(&format!("{base}/v1/events")).await;
    assert_eq!(
        kinds(&all),
        pairs(&[
            ("INFO", "node_registered"),
            ("INFO", "node_registered"),
            ("WARNING", "node_degraded"),
            ("ERROR", "node_unhealthy"),
            ("WARNING", "node_degraded"),
            ("ERROR", "node_unhealthy"),
            ("CRITICAL", "model_unserved"),
            ("INFO", "node_recovered"),
            ("INFO", "model_served"),
        ])
    );
    let errors = common::get_json(&format!("{base}/v1/events?level=error")).await;
    assert_eq!(
        kinds(&errors),
        pairs(&[
            ("ERROR", "node_unhealthy"),
            ("ERROR", "node_unhealthy"),
            ("CRITICAL", "model_unserved"),
        ])
    );
    let res = reqwest::get(format!("{base}/v1/events?level=loud"))
        .await
        .unwrap();
    assert_eq!(res.status(), 400);

    // The SSE stream carried the three ERROR-or-worse events, live.
    let mut text = String::new();
    while text.matches("event: ").count() < 3 {
        let chunk = tokio::time::timeout(Duration::from_secs(5), sse.next())
            .await
            .expect("SSE events")
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        text.contains("event: CRITICAL") && text.contains("model_unserved"),
        "{text}"
    );
    assert!(!text.contains("node_degraded"), "{text}");

    // The webhook got every event once, its first failure retried.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while received.lock().unwrap().len() < 9 {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            received.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ids: Vec<u64> = received
        .lock()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, (1..=9).collect::<Vec<_>>());
    assert_eq!(
        calls.load(Ordering::Acquire),
        10,
        "one failed delivery, retried"
    );

    // Figures in /v1/nodes.
    let nodes = common::nodes(&base).await;
    let node_a = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == a.as_str())
        .unwrap();
    assert_eq!(node_a["health"]["state"], "healthy");
    assert_eq!(node_a["health"]["checks"], 8);
}
