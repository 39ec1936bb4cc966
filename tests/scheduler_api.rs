//! The scheduler's HTTP API through `router().oneshot(...)` with an
//! injected clock: registration (with a join token), heartbeats, expiry
//! within TTL + one sweep, 409 / 410, clean leave, status counts, and the
//! gateway's refusals when no node can take a request.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use strata::scheduler::clock::ManualClock;
use strata::scheduler::http::router;
use strata::scheduler::service::{Scheduler, SchedulerConfig};
use strata::scheduler::store::MemoryStore;
use tower::ServiceExt;

const TTL: Duration = Duration::from_secs(3);

fn scheduler(join_token: Option<&str>) -> (Scheduler, ManualClock, Router) {
    let clock = ManualClock::default();
    let s = Scheduler::new(
        Arc::new(MemoryStore::new()),
        Arc::new(clock.clone()),
        SchedulerConfig {
            ttl: TTL,
            stale_after: Duration::from_secs(10),
            join_token: join_token.map(Into::into),
            ..SchedulerConfig::default()
        },
    );
    let app = router(s.clone());
    (s, clock, app)
}

async fn call(app: &Router, method: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn worker(endpoint: &str) -> Value {
    json!({"endpoint": endpoint, "models": ["m"], "mode": "default", "join_token": "t0ken"})
}

fn beat(reg: &Value) -> Value {
    json!({"lease_id": reg["lease_id"], "epoch": reg["epoch"], "load": {"in_flight": 0, "max_in_flight": 4, "healthy": true}})
}

#[tokio::test]
async fn leases_expire_on_the_scheduler_clock() {
    let (s, clock, app) = scheduler(Some("t0ken"));
    let (st, body) = call(
        &app,
        "POST",
        "/v1/nodes/register",
        json!({"endpoint": "http://a", "models": ["m"]}),
    )
    .await;
    assert_eq!(st, 401, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("join token"));
    let (st, a) = call(&app, "POST", "/v1/nodes/register", worker("http://a")).await;
    assert_eq!(st, 200, "{a}");
    assert_eq!(a["ttl_ms"], 3000);
    assert_eq!(a["heartbeat_ms"], 1000);
    let (_, b) = call(&app, "POST", "/v1/nodes/register", worker("http://b")).await;
    let hb_a = format!("/v1/nodes/{}/heartbeat", a["node_id"].as_str().unwrap());

    // a keeps heartbeating, b goes quiet.
    for _ in 0..3 {
        clock.advance(1000);
        let (st, r) = call(&app, "POST", &hb_a, beat(&a)).await;
        assert_eq!(st, 200, "{r}");
        assert_eq!(r["lease_left_ms"], 3000);
    }
    // 3 s after b's registration its lease is gone: one sweep later at the
    // latest it is out of the active set (here it already is).
    let (_, v) = call(&app, "GET", "/v1/nodes", Value::Null).await;
    assert_eq!(
        (
            v["total"].as_u64(),
            v["active"].as_u64(),
            v["inactive"].as_u64()
        ),
        (Some(2), Some(1), Some(1))
    );
    let hb_b = format!("/v1/nodes/{}/heartbeat", b["node_id"].as_str().unwrap());
    let (st, e) = call(&app, "POST", &hb_b, beat(&b)).await;
    assert_eq!(st, 410, "{e}");
    assert_eq!(e["error"]["code"], "no_lease");
    // b registers again under its id: new epoch; its old epoch is 409.
    let mut again = worker("http://b");
    again["node_id"] = b["node_id"].clone();
    let (_, b2) = call(&app, "POST", "/v1/nodes/register", again).await;
    assert_eq!(b2["node_id"], b["node_id"]);
    assert!(b2["epoch"].as_u64() > a["epoch"].as_u64());
    let (st, e) = call(&app, "POST", &hb_b, beat(&b)).await;
    assert_eq!(st, 409, "{e}");
    assert_eq!(e["error"]["code"], "stale_epoch");

    // Unknown nodes are 410; a clean leave is 204 and takes it off.
    let (st, _) = call(&app, "POST", "/v1/nodes/n-nope/heartbeat", beat(&a)).await;
    assert_eq!(st, 410);
    let leave = json!({"lease_id": a["lease_id"], "epoch": a["epoch"]});
    let (st, _) = call(
        &app,
        "DELETE",
        &format!("/v1/nodes/{}", a["node_id"].as_str().unwrap()),
        leave,
    )
    .await;
    assert_eq!(st, 204);
    let (_, v) = call(&app, "GET", "/v1/nodes", Value::Null).await;
    assert_eq!(
        (v["total"].as_u64(), v["active"].as_u64()),
        (Some(1), Some(1))
    );

    // The sweep removes b once it has been quiet for the stale timeout.
    clock.advance(3000 + 10_000);
    let removed = s.store.sweep(s.now_ms(), 10_000).await.unwrap();
    assert_eq!(removed.len(), 1);
}

#[tokio::test]
async fn the_gateway_says_why_no_node_can_take_a_request() {
    let (_s, clock, app) = scheduler(None);
    let chat = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let (st, e) = call(&app, "POST", "/v1/chat/completions", chat.clone()).await;
    assert_eq!(st, 404, "a model no worker serves does not exist: {e}");
    assert_eq!(e["error"]["code"], "model_not_found");
    assert_eq!(e["error"]["param"], "model");
    let (_, reg) = call(
        &app,
        "POST",
        "/v1/nodes/register",
        worker("http://127.0.0.1:9"),
    )
    .await;
    let mut yielding = beat(&reg);
    yielding["load"]["yielding"] = json!(true);
    let hb = format!("/v1/nodes/{}/heartbeat", reg["node_id"].as_str().unwrap());
    assert_eq!(call(&app, "POST", &hb, yielding).await.0, 200);
    let (st, e) = call(&app, "POST", "/v1/chat/completions", chat.clone()).await;
    assert_eq!(st, 503);
    assert!(
        e["error"]["message"].as_str().unwrap().contains("yielding"),
        "{e}"
    );
    // A node that cannot be reached: tried, then a 502 that names it.
    assert_eq!(call(&app, "POST", &hb, beat(&reg)).await.0, 200);
    let (st, e) = call(&app, "POST", "/v1/chat/completions", chat.clone()).await;
    assert_eq!(st, 502, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains(reg["node_id"].as_str().unwrap()),
        "{e}"
    );
    let (_, models) = call(&app, "GET", "/v1/models", Value::Null).await;
    assert_eq!(models["data"][0]["id"], "m");
    let (st, e) = call(
        &app,
        "POST",
        "/v1/chat/completions",
        json!({"messages": []}),
    )
    .await;
    assert_eq!(
        (st.as_u16(), e["error"]["param"].as_str()),
        (400, Some("model"))
    );
    // Known, but with no live lease: 503 that says so, not 404.
    clock.advance(TTL.as_millis() as u64);
    let (st, e) = call(&app, "POST", "/v1/chat/completions", chat).await;
    assert_eq!(st, 503, "{e}");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("no live worker serves the model `m`"),
        "{e}"
    );
}

#[tokio::test]
async fn an_api_key_guards_the_gateway_and_the_status_not_the_leases() {
    let s = Scheduler::new(
        Arc::new(MemoryStore::new()),
        Arc::new(ManualClock::default()),
        SchedulerConfig {
            api_key: Some("k3y".into()),
            ..SchedulerConfig::default()
        },
    );
    let app = router(s);
    let get = |path: &str, key: Option<&str>| {
        let mut b = Request::get(path);
        if let Some(k) = key {
            b = b.header(header::AUTHORIZATION, format!("Bearer {k}"));
        }
        b.body(Body::empty()).unwrap()
    };
    for path in ["/v1/models", "/v1/nodes"] {
        let res = app.clone().oneshot(get(path, None)).await.unwrap();
        assert_eq!(res.status(), 401, "{path}");
        let res = app.clone().oneshot(get(path, Some("wrong"))).await.unwrap();
        assert_eq!(res.status(), 401, "{path}");
        let res = app.clone().oneshot(get(path, Some("k3y"))).await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
    }
    let (st, reg) = call(&app, "POST", "/v1/nodes/register", worker("http://a")).await;
    assert_eq!(st, 200, "workers register without the client key: {reg}");
    assert_eq!(
        app.clone()
            .oneshot(get("/health", None))
            .await
            .unwrap()
            .status(),
        200
    );
}

/// A stub worker that answers every chat with 429 and `Retry-After: 7`.
async fn busy_worker() -> String {
    use axum::response::IntoResponse;
    let app = Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(|| async {
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, "7")],
                "{}",
            )
                .into_response()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn busy_workers_give_503_with_their_retry_after_and_metrics_count_it() {
    let (_s, _clock, app) = scheduler(None);
    let endpoint = busy_worker().await;
    for _ in 0..2 {
        let (st, reg) = call(&app, "POST", "/v1/nodes/register", worker(&endpoint)).await;
        assert_eq!(st, 200, "{reg}");
    }
    let chat = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let req = Request::post("/v1/chat/completions")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(chat.to_string()))
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()[header::RETRY_AFTER], "7");
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("every worker serving `m` is busy"), "{text}");

    let (st, card) = call(&app, "GET", "/v1/models/m", Value::Null).await;
    assert_eq!((st.as_u16(), card["id"].as_str()), (200, Some("m")));
    let (st, e) = call(&app, "GET", "/v1/models/other", Value::Null).await;
    assert_eq!(
        (st.as_u16(), e["error"]["code"].as_str()),
        (404, Some("model_not_found"))
    );

    let res = app
        .clone()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes);
    for line in [
        "strata_gateway_forward_attempts_total{outcome=\"busy\"} 2",
        "strata_gateway_requests_total{route=\"/v1/chat/completions\",status=\"503\"} 1",
        "strata_gateway_requests_total{route=\"/v1/nodes/register\",status=\"200\"} 2",
        "strata_gateway_active_nodes 2",
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    }
}
