//! `strata models pull | list | rm` as a process against a fake hub on
//! loopback (`HF_ENDPOINT`): a pull cut mid-file resumes where it stopped
//! and ends with the file's true digest; a file whose bytes do not match
//! the digest the hub (or a catalog pin) gives is deleted and the error
//! names both digests; offline mode never asks the network; list shows
//! what a GGUF is; `plan -m hf:...` finds the pulled file; rm frees the
//! blob.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use candle_core::quantized::GgmlDType;
use common::fake_hub::{sha256_hex, FakeHub};

const REPO: &str = "acme/tiny-GGUF";

/// Runs `strata ARGS --model-dir DIR` with the hub as `HF_ENDPOINT`.
async fn strata(hub: &FakeHub, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
    cmd.args(args)
        .arg("--model-dir")
        .arg(dir)
        .env("HF_ENDPOINT", &hub.endpoint)
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Files under the store's blobs, lock files aside.
fn blobs(dir: &Path) -> Vec<String> {
    let blobs = dir.join("models--acme--tiny-GGUF/blobs");
    let Ok(entries) = std::fs::read_dir(blobs) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect()
}

fn model_bytes(seed: u64) -> Vec<u8> {
    let (_dir, path) = common::chat_model(GgmlDType::Q8_0, seed);
    std::fs::read(path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_pull_resumes_verifies_lists_and_is_removed() {
    let hub = FakeHub::start().await;
    let bytes = model_bytes(3);
    let len = bytes.len() as u64;
    let sha = hub.add(REPO, "tiny.Q8_0.gguf", bytes.clone());
    hub.cut_once_at(len * 6 / 10);
    let store = tempfile::tempdir().unwrap();
    let reference = "hf:acme/tiny-GGUF/tiny.Q8_0.gguf";

    let out = strata(
        &hub,
        store.path(),
        &["models", "pull", reference, "--chunk-size", "256KiB"],
        &[],
    )
    .await;
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("download interrupted"), "{said}");
    assert!(said.contains(&format!("sha256 {sha}")), "{said}");
    // After the cut, the download went on from where it stopped: no range
    // asked for again from the start of the file.
    let ranges = hub.ranges();
    let cut = ranges
        .iter()
        .position(|r| r.is_some_and(|(s, e)| (s..=e).contains(&(len * 6 / 10)) && e > s))
        .unwrap();
    let after: Vec<u64> = ranges[cut + 1..]
        .iter()
        .flatten()
        .filter(|(s, e)| e > s)
        .map(|(s, _)| *s)
        .collect();
    assert!(!after.is_empty(), "{ranges:?}");
    assert!(
        after.iter().all(|&s| s >= 256 * 1024),
        "restarted from 0: {ranges:?}"
    );
    assert_eq!(blobs(store.path()), vec![sha.clone()]);
    let blob = store
        .path()
        .join("models--acme--tiny-GGUF/blobs")
        .join(&sha);
    assert_eq!(sha256_hex(&std::fs::read(blob).unwrap()), sha);

    let out = strata(&hub, store.path(), &["models", "list", "--json"], &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entry = &list[0];
    assert_eq!(entry["model"], reference);
    assert_eq!(entry["sha256"], sha.as_str());
    assert_eq!(entry["size"], len);
    assert_eq!(entry["quant"], "Q8_0");
    assert_eq!(entry["architecture"], "llama");
    assert!(entry["layers"].as_u64().unwrap() >= 1, "{entry}");

    // Commands that load a model take the reference.
    let out = strata(
        &hub,
        store.path(),
        &["plan", "-m", reference, "--devices", "cpu"],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("cpu"), "{}", text(&out));

    // A second pull finds it and downloads nothing.
    let before = hub.requests();
    let out = strata(&hub, store.path(), &["models", "pull", reference], &[]).await;
    assert!(
        text(&out).contains("already in the store"),
        "{}",
        text(&out)
    );
    assert!(hub.requests() - before <= 1, "only the metadata probe");

    let out = strata(&hub, store.path(), &["models", "rm", reference], &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("freed"), "{}", text(&out));
    assert!(blobs(store.path()).is_empty());
    let out = strata(&hub, store.path(), &["models", "rm", reference], &[]).await;
    assert!(!out.status.success());
    assert!(
        text(&out).contains("is not in the model store"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_fails_its_digest_is_deleted_and_both_digests_are_named() {
    let hub = FakeHub::start().await;
    let bytes = model_bytes(4);
    let actual = sha256_hex(&bytes);
    let claimed = sha256_hex(b"some other file");
    hub.add_with_etag(REPO, "bad.gguf", bytes.clone(), &claimed);
    let store = tempfile::tempdir().unwrap();
    let out = strata(
        &hub,
        store.path(),
        &["models", "pull", "hf:acme/tiny-GGUF/bad.gguf"],
        &[],
    )
    .await;
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains(&format!("expected {claimed}")), "{said}");
    assert!(said.contains(&format!("got {actual}")), "{said}");
    assert!(said.contains("deleted"), "{said}");
    assert!(blobs(store.path()).is_empty(), "{:?}", blobs(store.path()));
    assert!(!store
        .path()
        .join("models--acme--tiny-GGUF/snapshots")
        .join(common::fake_hub::COMMIT)
        .join("bad.gguf")
        .exists());

    // A catalog pin that disagrees with the hub stops the pull before it
    // downloads anything.
    let good_sha = hub.add(REPO, "good.gguf", bytes);
    let catalog = store.path().join("catalog.toml");
    std::fs::write(
        &catalog,
        format!(
            "[[model]]\nref = \"hf:acme/tiny-GGUF/good.gguf\"\nsha256 = \"{}\"\n",
            "0".repeat(64)
        ),
    )
    .unwrap();
    let out = strata(
        &hub,
        store.path(),
        &["models", "pull", "hf:acme/tiny-GGUF/good.gguf", "--catalog"],
        &[],
    )
    .await;
    assert!(!out.status.success(), "--catalog needs a value");
    let cat = catalog.to_string_lossy().into_owned();
    let out = strata(
        &hub,
        store.path(),
        &[
            "models",
            "pull",
            "hf:acme/tiny-GGUF/good.gguf",
            "--catalog",
            &cat,
        ],
        &[],
    )
    .await;
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "has SHA-256 {good_sha}, the catalog pins {}",
            "0".repeat(64)
        )),
        "{said}"
    );
    assert!(blobs(store.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_mode_never_touches_the_network() {
    let hub = FakeHub::start().await;
    hub.add(REPO, "m.gguf", model_bytes(5));
    let store = tempfile::tempdir().unwrap();
    let reference = "hf:acme/tiny-GGUF/m.gguf";
    let offline = [("HF_HUB_OFFLINE", "1")];

    let out = strata(&hub, store.path(), &["models", "pull", reference], &offline).await;
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("HF_HUB_OFFLINE is set"), "{said}");
    assert_eq!(hub.requests(), 0);

    let out = strata(
        &hub,
        store.path(),
        &["plan", "-m", reference, "--devices", "cpu"],
        &offline,
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out).contains(&format!("{reference} is not in the model store")),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("strata models pull"), "{}", text(&out));

    let out = strata(&hub, store.path(), &["models", "pull", reference], &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    let online = hub.requests();
    let out = strata(&hub, store.path(), &["models", "pull", reference], &offline).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("already in the store"),
        "{}",
        text(&out)
    );
    let out = strata(&hub, store.path(), &["models", "list"], &offline).await;
    assert!(text(&out).contains(reference), "{}", text(&out));
    assert_eq!(hub.requests(), online, "offline commands asked the hub");
}
