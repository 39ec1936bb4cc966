//! A worker's model store managed through the scheduler, all as
//! processes on loopback with a fake hub: `strata models --node ID` pulls
//! (a job polled to the end), lists (the served model marked loaded),
//! refuses to delete the model in use, deletes another; a digest mismatch
//! fails the job with the reason; a frozen worker makes the scheduler
//! answer 504 within its node timeout.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use candle_core::quantized::GgmlDType;
use common::fake_hub::{sha256_hex, FakeHub};
use serde_json::Value;

const REPO: &str = "acme/tiny-GGUF";

fn model_bytes(seed: u64) -> Vec<u8> {
    let (_dir, path) = common::chat_model(GgmlDType::Q8_0, seed);
    std::fs::read(path).unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn run(cmd: Command) -> Output {
    let mut cmd = cmd;
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_models_are_pulled_listed_and_deleted_through_the_scheduler() {
    let hub = FakeHub::start().await;
    hub.add(REPO, "served.gguf", model_bytes(31));
    let other_sha = hub.add(REPO, "other.gguf", model_bytes(32));
    hub.add_with_etag(REPO, "bad.gguf", model_bytes(33), &sha256_hex(b"not it"));
    let store = tempfile::tempdir().unwrap();
    let strata = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
        cmd.args(args)
            .env("HF_ENDPOINT", &hub.endpoint)
            .env("STRATA_MODEL_DIR", store.path())
            .env_remove("HF_HUB_OFFLINE");
        cmd
    };
    let served = "hf:acme/tiny-GGUF/served.gguf";
    let out = run(strata(&["models", "pull", served])).await;
    assert!(out.status.success(), "{}", text(&out));

    let mut scheduler = common::spawn_command(strata(&[
        "scheduler",
        "--port",
        "0",
        "--memory",
        "--node-timeout",
        "1s",
    ]));
    scheduler.drain();
    let mut worker = common::spawn_command(strata(&[
        "worker",
        "--scheduler",
        &scheduler.base,
        "--port",
        "0",
        "-m",
        served,
        "--ctx-size",
        "128",
    ]));
    let _log = worker.drain();
    let v = common::wait_for(
        &scheduler.base,
        Duration::from_secs(20),
        "registration",
        |v| v["active"] == 1,
    )
    .await;
    let node = v["nodes"][0]["id"].as_str().unwrap().to_string();
    let client = reqwest::Client::new();
    let remote = |args: &[&str]| {
        strata(
            &[
                &[
                    "models",
                    "--node",
                    node.as_str(),
                    "--scheduler",
                    &scheduler.base,
                ][..],
                args,
            ]
            .concat(),
        )
    };

    let other = "hf:acme/tiny-GGUF/other.gguf";
    let out = run(remote(&["pull", other])).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("sha256 {other_sha}")),
        "{}",
        text(&out)
    );

    let out = run(remote(&["list", "--json"])).await;
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let loaded: Vec<(String, bool)> = v["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["model"].as_str().unwrap().to_string(),
                m["loaded"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        loaded,
        vec![(other.to_string(), false), (served.to_string(), true)]
    );

    let out = run(remote(&["rm", served])).await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("409"), "{}", text(&out));
    assert!(text(&out).contains("is in use"), "{}", text(&out));
    let out = run(remote(&["rm", other])).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("removed hf:acme/tiny-GGUF/other.gguf"),
        "{}",
        text(&out)
    );

    let out = run(remote(&["pull", "hf:acme/tiny-GGUF/bad.gguf"])).await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("SHA-256 mismatch"), "{}", text(&out));

    let out = run(remote(&["rm", "not-a-ref.gguf"])).await;
    assert!(!out.status.success());
    assert!(text(&out).contains("`model` must be hf:"), "{}", text(&out));

    // A worker that does not answer: the scheduler gives up after its
    // node timeout with a 504 that says so.
    unsafe { libc::kill(worker.child.id() as i32, libc::SIGSTOP) };
    let started = Instant::now();
    let res = client
        .get(format!("{}/v1/nodes/{node}/models", scheduler.base))
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    unsafe { libc::kill(worker.child.id() as i32, libc::SIGCONT) };
    assert_eq!(res.status(), 504);
    let e: Value = res.json().await.unwrap();
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did not answer within 1s"),
        "{e}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    let res = client
        .get(format!("{}/v1/nodes/n-nobody/models", scheduler.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}
