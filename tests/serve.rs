//! `strata serve` as a process: it says where it listens, answers, and on
//! SIGTERM stops accepting, cuts in-flight streams after the deadline and
//! exits 0. A missing model is one clear line, not a crash.

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
