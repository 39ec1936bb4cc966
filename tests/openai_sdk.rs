//! The official `openai` Python SDK against the `strata serve` binary, in
//! its own process on a free port, with an API key. The SDK comes from
//! `scripts/python-env` (run by `scripts/test`); without it this test
//! fails with the command to run, it never skips.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use candle_core::quantized::GgmlDType;
use strata::model::synth::SynthSpec;
use strata::model::tokenizer::VocabKind;

/// Kills the server however the test ends.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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
    let mut spec = SynthSpec::tiny(GgmlDType::Q4_0, 11);
    spec.vocab = VocabKind::BytePairGpt2;
    let (_dir, model) = common::synth_file(&spec);
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args([
            "serve",
            "--port",
            "0",
            "--mode",
            "aggressive",
            "--model-name",
            "tiny-chat",
        ])
        .args(["--api-key", "sdk-key", "--ctx-size", "256", "-m"])
        .arg(&model)
        .env("RUST_LOG", "strata=warn")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start strata serve");
    let stderr = child.stderr.take().unwrap();
    let server = Server(child);
    let mut lines = BufReader::new(stderr).lines();
    let base = loop {
        let line = lines
            .next()
            .expect("strata serve exited before listening")
            .unwrap();
        if let Some(rest) = line.split(" on http://").nth(1) {
            break format!("http://{}", rest.split_whitespace().next().unwrap());
        }
    };
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
