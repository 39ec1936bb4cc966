//! A scheduler and two workers as separate processes on loopback, with a
//! 1 s lease TTL: a worker frozen with SIGSTOP is routed around and leaves
//! the active set within TTL + one sweep; thawed, its stale work is refused
//! and it registers again with a new epoch. A worker killed mid-request
//! before its first byte costs the client nothing: the request is retried
//! on the other; one lost after its first byte ends the stream with an SSE
//! error event. Two schedulers on one Redis share every node.

mod common;
#[path = "common/redis.rs"]
mod redis_server;

use std::time::{Duration, Instant};

use candle_core::quantized::GgmlDType;
use common::{nodes, spawn_strata, wait_for, ServeProcess};
use futures_util::StreamExt;
use serde_json::{json, Value};

const TTL_MS: u64 = 1000;

struct Cluster {
    scheduler: ServeProcess,
    workers: Vec<ServeProcess>,
    _model: tempfile::TempDir,
}

fn cluster(decode_pause: &str) -> Cluster {
    let (dir, model) = common::chat_model(GgmlDType::Q8_0, 21);
    let scheduler = common::spawn_scheduler(&[
        "--ttl",
        "1s",
        "--stale-after",
        "60s",
        "--selection-policy",
        "round_robin",
    ]);
    let model = model.to_string_lossy().into_owned();
    let workers = (0..2)
        .map(|_| {
            let mut w = spawn_worker(&scheduler.base, &model, &["--decode-pause", decode_pause]);
            w.drain();
            w
        })
        .collect();
    Cluster {
        scheduler,
        workers,
        _model: dir,
    }
}

/// A worker of the test model `tiny` registered with `scheduler`.
fn spawn_worker(scheduler: &str, model: &str, extra: &[&str]) -> ServeProcess {
    let args = [
        "--model-name",
        "tiny",
        "--mode",
        "aggressive",
        "--ctx-size",
        "256",
    ];
    common::spawn_worker(scheduler, model, &[&args[..], extra].concat())
}

fn node_of<'a>(v: &'a Value, endpoint: &str) -> &'a Value {
    v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["info"]["endpoint"] == endpoint)
        .unwrap_or_else(|| panic!("no node at {endpoint}: {v:#}"))
}

async fn chat(client: &reqwest::Client, base: &str, max_tokens: usize) -> (u16, Value) {
    let res = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens}))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn signal(p: &ServeProcess, sig: i32) {
    assert_eq!(unsafe { libc::kill(p.child.id() as i32, sig) }, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_worker_is_routed_around_fenced_and_rejoins() {
    let c = cluster("0ms");
    let base = c.scheduler.base.clone();
    wait_for(&base, Duration::from_secs(20), "two active nodes", |v| {
        v["active"] == 2
    })
    .await;
    let frozen = &c.workers[0];
    let before = node_of(&nodes(&base).await, &frozen.base).clone();
    let old_epoch = before["epoch"].as_u64().unwrap();

    signal(frozen, libc::SIGSTOP);
    let stopped = Instant::now();
    let client = reqwest::Client::new();
    let mut served = 0;
    while stopped.elapsed() < Duration::from_millis(2 * TTL_MS) {
        let (status, body) = chat(&client, &base, 3).await;
        assert_eq!(
            status, 200,
            "a request failed while one worker was frozen: {body}"
        );
        served += 1;
    }
    assert!(served >= 2);
    // Out of the active set within TTL + one sweep (a third of the TTL).
    let v = nodes(&base).await;
    let n = node_of(&v, &frozen.base);
    assert_eq!(n["active"], false, "{v:#}");
    assert_eq!(
        (v["active"].as_u64(), v["inactive"].as_u64()),
        (Some(1), Some(1))
    );

    signal(frozen, libc::SIGCONT);
    let v = wait_for(
        &base,
        Duration::from_secs(10),
        "the thawed worker registered again",
        |v| {
            let n = node_of(v, &frozen.base);
            n["active"] == true && n["epoch"].as_u64().unwrap() > old_epoch
        },
    )
    .await;
    let n = node_of(&v, &frozen.base);
    assert_eq!(n["id"], before["id"], "it keeps its node id");
    // Work stamped with its old epoch is refused.
    let res = client
        .post(format!("{}/v1/chat/completions", frozen.base))
        .header("x-strata-epoch", old_epoch.to_string())
        .json(&json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "stale_epoch");
    // And it serves again through the gateway.
    for _ in 0..4 {
        assert_eq!(chat(&client, &base, 2).await.0, 200);
    }
    let v = nodes(&base).await;
    assert!(
        node_of(&v, &frozen.base)["stats"]["successes"]
            .as_u64()
            .unwrap()
            >= 1,
        "{v:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_before_its_first_byte_costs_nothing() {
    // 20 tokens × 100 ms: a non-streamed answer takes about 2 s to start.
    let c = cluster("100ms");
    let base = c.scheduler.base.clone();
    wait_for(&base, Duration::from_secs(20), "two active nodes", |v| {
        v["active"] == 2
    })
    .await;
    let client = reqwest::Client::new();
    let request = {
        let (client, base) = (client.clone(), base.clone());
        tokio::spawn(async move { chat(&client, &base, 20).await })
    };
    // Find the worker that took it, and kill it mid-generation.
    let deadline = Instant::now() + Duration::from_secs(10);
    let busy = loop {
        let mut found = None;
        for (i, w) in c.workers.iter().enumerate() {
            let h = common::get_json(&format!("{}/health", w.base)).await;
            if h["engine"]["busy"] == true {
                found = Some(i);
            }
        }
        if let Some(i) = found {
            break i;
        }
        assert!(Instant::now() < deadline, "no worker got busy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    signal(&c.workers[busy], libc::SIGKILL);
    let (status, body) = request.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    let v = nodes(&base).await;
    let survivor = node_of(&v, &c.workers[1 - busy].base);
    assert!(
        survivor["stats"]["successes"].as_u64().unwrap() >= 1,
        "{v:#}"
    );
    let dead = node_of(&v, &c.workers[busy].base);
    assert!(
        dead["stats"]["requests"].as_u64().unwrap() > dead["stats"]["successes"].as_u64().unwrap(),
        "{v:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_on_one_redis_share_their_workers() {
    let dir = tempfile::tempdir().unwrap();
    let redis = redis_server::RedisServer::start(dir.path(), 0);
    let url = redis.url();
    let start = || {
        let mut s = spawn_strata(&["scheduler", "--port", "0", "--redis", &url, "--ttl", "2s"]);
        s.drain();
        s
    };
    let (a, b) = (start(), start());
    let (_m, model) = common::chat_model(GgmlDType::Q8_0, 23);
    let model = model.to_string_lossy().into_owned();
    let mut worker = spawn_worker(&a.base, &model, &[]);
    worker.drain();
    let v = wait_for(
        &b.base,
        Duration::from_secs(20),
        "the worker seen through the other scheduler",
        |v| v["active"] == 1,
    )
    .await;
    assert_eq!(node_of(&v, &worker.base)["active"], true);
    let client = reqwest::Client::new();
    let (status, body) = chat(&client, &b.base, 3).await;
    assert_eq!(status, 200, "{body}");
    let models: Value = client
        .get(format!("{}/v1/models", b.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], "tiny");
    // Heartbeats through A keep the lease B sees alive past one TTL.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(nodes(&b.base).await["active"], 1);
    let seen_by_a = nodes(&a.base).await;
    let stats = &node_of(&seen_by_a, &worker.base)["stats"];
    assert_eq!(stats["successes"], 1, "B's result is in the shared record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_lost_mid_stream_ends_the_stream_with_an_error_event() {
    let c = cluster("50ms");
    let base = c.scheduler.base.clone();
    wait_for(&base, Duration::from_secs(20), "two active nodes", |v| {
        v["active"] == 2
    })
    .await;
    let client = reqwest::Client::new();
    let res = client
        .post(format!("{base}/v1/completions"))
        .json(&json!({"model": "tiny", "prompt": "x", "max_tokens": 100, "stream": true, "temperature": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.bytes_stream();
    let first = String::from_utf8_lossy(&body.next().await.unwrap().unwrap()).into_owned();
    assert!(first.starts_with("data: {"), "{first}");
    for w in &c.workers {
        signal(w, libc::SIGKILL);
    }
    let mut rest = String::new();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(b) => rest.push_str(&String::from_utf8_lossy(&b)),
            Err(e) => panic!("the stream broke without an error event: {e}; got {rest}"),
        }
    }
    let error_line = rest
        .lines()
        .find(|l| l.starts_with("data: {\"error\""))
        .unwrap_or_else(|| panic!("no SSE error event in: {rest}"));
    let e: Value = serde_json::from_str(&error_line["data: ".len()..]).unwrap();
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("mid-stream"),
        "{e}"
    );
    assert!(rest.trim_end().ends_with("data: [DONE]"), "{rest}");
}
