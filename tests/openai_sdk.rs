//! The official `openai` Python SDK against the `strata serve` binary, in
//! its own process on a free port, with an API key. The SDK comes from
//! `scripts/python-env` (run by `scripts/test`); without it this test
//! fails with the command to run, it never skips.

mod common;

use std::path::Path;
use std::process::Command;

use candle_core::quantized::GgmlDType;

#[test]
fn the_openai_python_sdk_works_unchanged() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var("STRATA_TEST_PYTHON")
        .map(Into::into)
        .unwrap_or_else(|_| root.join(".cache/py-venv/bin/python"));
    assert!(
        python.exists(),
        "{} is missing: run `scripts/python-env` first (scripts/test does)",
        python.display()
    );
    let (_dir, model) = common::chat_model(GgmlDType::Q4_0, 11);
    let args = [
        "--mode",
        "aggressive",
        "--model-name",
        "tiny-chat",
        "--api-key",
        "sdk-key",
    ];
    let server = common::spawn_serve(&model, &[&args[..], &["--ctx-size", "256"]].concat());
    let base = server.base.clone();
    let out = Command::new(&python)
        .arg(root.join("tests/openai_sdk.py"))
        .args([&base, "tiny-chat", "sdk-key"])
        .output()
        .expect("run python");
    drop(server);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "openai_sdk.py failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all as expected"), "{stdout}");
}
