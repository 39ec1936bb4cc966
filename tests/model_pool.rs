//! A worker with three models and a CPU budget that fits two, as a
//! `strata serve` process: requests alternating between all three keep
//! succeeding, the devices' budget is never overrun, the model unloaded is
//! the least recently used idle one, never one with a request in flight,
//! and a higher-priority model is kept over a more recently used one. A
//! model that could never fit is refused at start.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::quantized::GgmlDType;
use futures_util::StreamExt;
use serde_json::{json, Value};

/// Three chat models `a`, `b`, `c` of one size in one folder.
fn three_models() -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let paths = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let (_src, path) = common::chat_model(GgmlDType::Q8_0, 40 + i as u64);
            let to = dir.path().join(format!("{name}.gguf"));
            std::fs::copy(path, &to).unwrap();
            to
        })
        .collect();
    (dir, paths)
}

/// The bytes `strata plan` places for `model` on the CPU.
fn planned_bytes(model: &Path) -> u64 {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args([
            "plan",
            "--devices",
            "cpu",
            "--ctx-size",
            "128",
            "--json",
            "-m",
        ])
        .arg(model)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["devices"][0]["total_bytes"].as_u64().unwrap()
}

fn serve(paths: &[PathBuf], budget: u64, extra: &[&str]) -> common::ServeProcess {
    let mut args: Vec<String> = vec!["serve".into(), "--port".into(), "0".into()];
    for p in paths {
        args.push("-m".into());
        args.push(p.display().to_string());
    }
    let devices = format!("cpu={budget}");
    let more = [
        "--devices",
        &devices,
        "--ctx-size",
        "128",
        "--mode",
        "aggressive",
        "--keep-alive",
        "never",
    ];
    args.extend(more.iter().chain(extra).map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = common::spawn_strata(&args);
    server.drain();
    server
}

async fn health(base: &str) -> Value {
    common::get_json(&format!("{base}/health")).await
}

fn loaded(h: &Value) -> BTreeSet<String> {
    h["models"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["state"] == "loaded")
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

async fn complete(client: &reqwest::Client, base: &str, model: &str) -> Value {
    let res = client
        .post(format!("{base}/v1/completions"))
        .json(&json!({"model": model, "prompt": "hi", "max_tokens": 2, "temperature": 0}))
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 200, "{model}: {body}");
    body
}

/// The budget never overrun: what the loaded models take fits.
fn within_budget(h: &Value) {
    let d = &h["devices"][0];
    assert!(
        d["used"].as_u64().unwrap() <= d["budget"].as_u64().unwrap(),
        "{d}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternating_requests_unload_the_least_recently_used_idle_model() {
    let (_dir, paths) = three_models();
    let one = planned_bytes(&paths[0]);
    let server = serve(&paths, one * 5 / 2, &["--decode-pause", "20ms"]);
    let base = server.base.clone();
    let client = reqwest::Client::new();

    let models = common::get_json(&format!("{base}/v1/models")).await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b", "c"]);
    let h = health(&base).await;
    assert_eq!(
        loaded(&h),
        set(&["a"]),
        "the first model loads at start: {h}"
    );

    let order = ["b", "c", "a", "b", "c", "a"];
    let mut previous = "a";
    for model in order {
        let body = complete(&client, &base, model).await;
        assert_eq!(body["model"], model);
        let h = health(&base).await;
        within_budget(&h);
        // Room for two: the one used before stays, the older one went.
        assert_eq!(loaded(&h), set(&[previous, model]), "after `{model}`: {h}");
        previous = model;
    }

    // Now `c` (older) and `a` are loaded. A long stream holds `c`; `a` is
    // used after it started, so `c` is the least recently used, but it is
    // busy: making room for `b` unloads `a`.
    let res = client
        .post(format!("{base}/v1/completions"))
        .json(&json!({"model": "c", "prompt": "hi", "max_tokens": 40, "temperature": 0, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut stream = res.bytes_stream();
    stream.next().await.unwrap().unwrap();
    complete(&client, &base, "a").await;
    complete(&client, &base, "b").await;
    let h = health(&base).await;
    within_budget(&h);
    assert_eq!(loaded(&h), set(&["b", "c"]), "{h}");
    let mut rest = String::new();
    while let Some(chunk) = stream.next().await {
        rest.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert!(rest.contains("[DONE]") && !rest.contains("error"), "{rest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_higher_priority_model_is_kept_and_one_that_never_fits_is_refused() {
    let (_dir, paths) = three_models();
    let one = planned_bytes(&paths[0]);
    let server = serve(&paths, one * 5 / 2, &["--priority", "a=5"]);
    let base = server.base.clone();
    let client = reqwest::Client::new();
    complete(&client, &base, "b").await;
    complete(&client, &base, "a").await;
    // `b` is now the least recently used, `a` outranks it anyway; with
    // `a` used last it would be the other way round without priorities.
    complete(&client, &base, "b").await;
    complete(&client, &base, "c").await;
    let h = health(&base).await;
    within_budget(&h);
    assert_eq!(loaded(&h), set(&["a", "c"]), "{h}");
    drop(server);

    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["serve", "--port", "0", "--ctx-size", "128"])
        .args(["--devices", &format!("cpu={}", one / 2)])
        .arg("-m")
        .arg(&paths[0])
        .arg("-m")
        .arg(&paths[1])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("the model `a` cannot be loaded on this worker's devices"),
        "{err}"
    );
}
