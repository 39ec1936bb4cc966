//! `strata serve` as a process: it says where it listens once its local
//! worker holds a lease with the embedded scheduler, answers through the
//! gateway, refuses outside registrations, and on SIGTERM stops accepting,
//! cuts in-flight streams after the deadline and exits 0. A missing model
//! is one clear line, not a crash.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use candle_core::quantized::GgmlDType;
use futures_util::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_exits_zero() {
    let (_dir, model) = common::chat_model(GgmlDType::Q8_0, 5);
    let args = [
        "--mode",
        "aggressive",
        "--decode-pause",
        "50ms",
        "--shutdown-timeout",
        "1s",
    ];
    let more = ["--model-name", "m", "--ctx-size", "256"];
    let server = common::spawn_serve(&model, &[&args[..], &more[..]].concat());
    let (base, log) = (server.base.clone(), server.log.clone());
    assert!(
        log.iter().any(|l| l.contains("placement")),
        "placement not logged: {log:?}"
    );
    let client = reqwest::Client::new();
    assert_eq!(
        client
            .get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // A stream that would run 200 × 50 ms = 10 s.
    let res = client
        .post(format!("{base}/v1/completions"))
        .json(&serde_json::json!({"model": "m", "prompt": "x", "max_tokens": 200, "stream": true, "temperature": 0}))
        .send()
        .await
        .unwrap();
    let mut stream = res.bytes_stream();
    stream.next().await.unwrap().unwrap();
    let stopped = Instant::now();
    unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) };
    let (status, mut server) = tokio::task::spawn_blocking(move || {
        let mut server = server;
        (server.child.wait(), server)
    })
    .await
    .unwrap();
    let status = status.unwrap();
    let took = stopped.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(
        took < Duration::from_secs(5),
        "took {took:?} with a 1 s deadline"
    );
    let rest: Vec<_> = server.lines.take().unwrap().map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("shutting down")), "{rest:?}");
    assert!(
        client.get(format!("{base}/health")).send().await.is_err(),
        "still listening"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_is_a_gateway_in_front_of_one_leased_local_worker() {
    let (_dir, model) = common::chat_model(GgmlDType::Q8_0, 6);
    let server = common::spawn_serve(&model, &["--model-name", "m", "--ctx-size", "128"]);
    let base = server.base.clone();
    let client = reqwest::Client::new();
    let get = |path: &str| {
        let req = client.get(format!("{base}{path}"));
        async move {
            req.send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    // Printed only once the worker held its lease: nothing to wait for.
    let nodes = get("/v1/nodes").await;
    assert_eq!(
        (nodes["total"].as_u64(), nodes["active"].as_u64()),
        (Some(1), Some(1)),
        "{nodes}"
    );
    let node = &nodes["nodes"][0];
    assert_eq!(node["epoch"], 1, "{node}");
    assert_eq!(node["info"]["models"], serde_json::json!(["m"]), "{node}");
    let endpoint = node["info"]["endpoint"].as_str().unwrap();
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
    assert_ne!(
        endpoint, base,
        "the worker listens on its own loopback port"
    );
    assert_eq!(get("/health").await["active_nodes"], 1);

    let res = client
        .post(format!("{base}/v1/completions"))
        .json(&serde_json::json!({"model": "m", "prompt": "x", "max_tokens": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["usage"]["completion_tokens"], 3, "{body}");

    // Another machine cannot join: the join token is the process's own.
    let res = client
        .post(format!("{base}/v1/nodes/register"))
        .json(&serde_json::json!({"endpoint": "http://10.0.0.9:8081", "models": ["m"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(get("/v1/nodes").await["total"], 1);
}

#[test]
fn a_missing_model_says_how_to_get_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["serve", "--port", "0", "-m", "/nonexistent/model.gguf"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/model.gguf not found"), "{err}");
    assert!(err.contains("scripts/fetch-models"), "{err}");
}
