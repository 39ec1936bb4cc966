//! The API on a real socket: SSE chunks arrive one by one and end in
//! `[DONE]`, clients that disconnect free their slot and stop their
//! generation, overload is refused with 429 + Retry-After, and the
//! Prometheus counters move by exactly what was served.

mod common;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use strata::api::{app, ApiConfig, AppState};

async fn serve(state: AppState) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app(state)).await.unwrap() });
    format!("http://{addr}")
}

fn chat_body(max_tokens: usize, stream: bool) -> Value {
    json!({
        "model": "tiny",
        "messages": [{"role": "user", "content": "tell me a story"}],
        "max_tokens": max_tokens,
        "stream": stream,
        "stream_options": {"include_usage": true},
        "temperature": 0.7,
        "seed": 3,
    })
}

/// The `data:` payloads of an SSE body so far, and what is left over.
fn take_events(buf: &mut String) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(end) = buf.find("\n\n") {
        let event: String = buf.drain(..end + 2).collect();
        for line in event.lines() {
            if let Some(d) = line.strip_prefix("data: ") {
                out.push(d.to_string());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_arrive_chunk_by_chunk_and_end_with_done() {
    let mut settings = common::fast_settings(4);
    settings.decode_pause = Duration::from_millis(15);
    let (_d, state) = common::api_state(settings, ApiConfig::default());
    let base = serve(state).await;
    let res = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .json(&chat_body(12, true))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut body = res.bytes_stream();
    let mut buf = String::new();
    let mut events: Vec<(Instant, String)> = Vec::new();
    while let Some(bytes) = body.next().await {
        buf.push_str(&String::from_utf8_lossy(&bytes.unwrap()));
        let now = Instant::now();
        events.extend(take_events(&mut buf).into_iter().map(|e| (now, e)));
    }
    let datas: Vec<&str> = events.iter().map(|(_, d)| d.as_str()).collect();
    assert_eq!(*datas.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = datas[..datas.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"].as_array().unwrap().len(), 0);
    let completion = usage["usage"]["completion_tokens"].as_u64().unwrap();
    let finish = &chunks[chunks.len() - 2];
    assert!(
        finish["choices"][0]["finish_reason"].is_string(),
        "{finish}"
    );
    for c in &chunks[1..chunks.len() - 2] {
        assert!(c["choices"][0]["finish_reason"].is_null());
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], chunks[0]["id"]);
    }
    // With 15 ms between decode steps, text chunks that were not buffered
    // arrive spread over time, not in one burst at the end.
    let content: Vec<Instant> = events
        .iter()
        .filter(|(_, d)| d.contains("\"content\"") && !d.contains("\"role\""))
        .map(|(t, _)| *t)
        .collect();
    assert!(content.len() >= 3, "{datas:?}");
    assert!(completion >= content.len() as u64);
    let spread = *content.last().unwrap() - content[0];
    assert!(
        spread >= Duration::from_millis(15 * (content.len() as u64 - 2)),
        "{spread:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_streams_free_their_slots_and_stop_generating() {
    let mut settings = common::fast_settings(16);
    settings.decode_pause = Duration::from_millis(10);
    let (_d, state) = common::api_state(settings, ApiConfig::default());
    let engine = state.pool.engines()[0].1.clone();
    let admission = state.resources.admission().clone();
    let metrics = state.metrics.clone();
    let base = serve(state).await;
    let client = reqwest::Client::new();
    let mut streams = Vec::new();
    for _ in 0..8 {
        let res = client
            .post(format!("{base}/v1/completions"))
            .json(&json!({"model": "tiny", "prompt": "once", "max_tokens": 100, "stream": true, "temperature": 0}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        streams.push(res.bytes_stream());
    }
    // The first stream is being served: read a few of its chunks.
    let mut got = 0;
    while got < 3 {
        let bytes = streams[0].next().await.unwrap().unwrap();
        got += String::from_utf8_lossy(&bytes).matches("data: ").count();
    }
    assert_eq!(admission.in_flight(), 8);
    drop(streams);
    let deadline = Instant::now() + Duration::from_secs(10);
    while admission.in_flight() > 0 || engine.is_busy() {
        assert!(
            Instant::now() < deadline,
            "slots not freed: {}",
            admission.in_flight()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let tokens = engine.tokens_generated();
    assert!(
        tokens < 100,
        "the first generation ran on to {tokens} tokens"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        engine.tokens_generated(),
        tokens,
        "generation went on after the drop"
    );
    assert_eq!(metrics.cancelled.get(), 8, "every stream ended unfinished");
    assert_eq!(
        engine.generations_cancelled(),
        1,
        "the running one was cut, the queued skipped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_429_with_retry_after_and_never_5xx() {
    let mut settings = common::fast_settings(2);
    settings.decode_pause = Duration::from_millis(5);
    let (_d, state) = common::api_state(settings, ApiConfig::default());
    let base = serve(state).await;
    let client = reqwest::Client::new();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (client, base) = (client.clone(), base.clone());
            tokio::spawn(async move {
                let res = client
                    .post(format!("{base}/v1/chat/completions"))
                    .json(&chat_body(16, false))
                    .send()
                    .await
                    .unwrap();
                let status = res.status().as_u16();
                let retry = res
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_string());
                let body: Value = res.json().await.unwrap();
                (status, retry, body)
            })
        })
        .collect();
    let mut ok = 0;
    let mut busy = 0;
    for t in tasks {
        let (status, retry, body) = t.await.unwrap();
        match status {
            200 => {
                ok += 1;
                assert!(body["usage"]["completion_tokens"].as_u64().unwrap() > 0);
            }
            429 => {
                busy += 1;
                let secs: u64 = retry.expect("Retry-After").parse().unwrap();
                assert!(secs >= 1);
                assert_eq!(body["error"]["code"], "server_busy");
                assert!(body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("limit (`max_in_flight`) is 2"));
            }
            other => panic!("status {other}: {body}"),
        }
    }
    assert_eq!(ok + busy, 16);
    assert!(ok >= 2, "the admitted ones complete");
    assert!(busy >= 1, "the excess is refused");
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_was_served() {
    let (_d, state) = common::api_state(common::fast_settings(4), ApiConfig::default());
    let base = serve(state).await;
    let client = reqwest::Client::new();
    let scrape = || async {
        client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let before = scrape().await;
    let (mut prompt, mut completion) = (0, 0);
    for _ in 0..3 {
        let body: Value = client
            .post(format!("{base}/v1/chat/completions"))
            .json(&chat_body(6, false))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        prompt += body["usage"]["prompt_tokens"].as_u64().unwrap();
        completion += body["usage"]["completion_tokens"].as_u64().unwrap();
    }
    let bad = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({"model": "tiny", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let after = scrape().await;
    let delta = |name: &str| metric(&after, name) - metric(&before, name);
    assert_eq!(
        delta(r#"strata_requests_total{route="/v1/chat/completions",status="200"}"#),
        3.0
    );
    assert_eq!(
        delta(r#"strata_requests_total{route="/v1/chat/completions",status="400"}"#),
        1.0
    );
    assert_eq!(delta("strata_prompt_tokens_total"), prompt as f64);
    assert_eq!(delta("strata_completion_tokens_total"), completion as f64);
    assert_eq!(delta("strata_time_to_first_token_seconds_count"), 3.0);
    assert_eq!(
        delta("strata_token_latency_seconds_count"),
        (completion - 3) as f64
    );
    assert_eq!(metric(&after, "strata_requests_in_flight"), 0.0);
    assert_eq!(metric(&after, "strata_queue_depth"), 0.0);
    assert!(metric(&after, r#"strata_device_memory_budget_bytes{device="cpu"}"#) > 0.0);
    assert!(
        metric(
            &after,
            r#"strata_device_memory_planned_bytes{device="cpu"}"#
        ) > 0.0
    );
    assert!(after.contains("# TYPE strata_throttle_wait_seconds histogram"));
}
