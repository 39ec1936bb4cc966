//! Helpers shared by the integration tests: synthetic models in temp dirs,
//! spawned `strata` processes, a fake model hub.

#![allow(dead_code)]

pub mod fake_hub;

use std::path::PathBuf;

use candle_core::quantized::GgmlDType;
use candle_core::Device;
use strata::model::synth::{write_synthetic, SynthSpec};
use strata::model::{GgufFile, LayeredModel, StageSpec};

/// Writes `spec` to a fresh temp dir; the dir lives as long as the guard.
pub fn synth_file(spec: &SynthSpec) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("model.gguf");
    write_synthetic(spec, &path).expect("write synthetic model");
    (dir, path)
}

pub fn tiny(dtype: GgmlDType) -> (tempfile::TempDir, PathBuf) {
    synth_file(&SynthSpec::tiny(dtype, 42))
}

/// Loads `path` with its layers split into stages of `counts` layers each,
/// every stage a virtual CPU device.
pub fn load_split(path: &PathBuf, counts: &[usize], ctx: usize) -> LayeredModel {
    let mut gguf = GgufFile::open(path).expect("open gguf");
    LayeredModel::load(&mut gguf, &StageSpec::virtual_cpus(counts), ctx).expect("load model")
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn max_abs(a: &[f32]) -> f32 {
    a.iter().map(|x| x.abs()).fold(0.0, f32::max)
}

/// Asserts that `ours` agrees with a reference's logits `theirs`.
///
/// With float weights (no 8-bit rounding of activations) the largest
/// difference stays within 1e-4 of the largest logit. With quantized
/// weights the CPU's host kernels, whose float sums differ from candle's in
/// the last bits, can move an activation across a rounding boundary before
/// a product; in a small random model one such flip moves later logits by
/// a few percent (see `src/engine/check.rs`). There the largest difference
/// must stay within 5e-2 of the largest logit and the normalized squared
/// error within 1e-3: a wrong rotation, head or cache row breaks both.
pub fn assert_logits_agree(ours: &[f32], theirs: &[f32], quantized: bool, what: &str) {
    let diff = max_abs_diff(ours, theirs);
    let scale = max_abs(theirs);
    if !quantized {
        assert!(
            diff <= 1e-4 * scale,
            "{what}: max |diff| {diff} exceeds 1e-4 x max |logit| {scale}"
        );
        return;
    }
    let err: f32 = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| (a - b) * (a - b))
        .sum();
    let nmse = err / theirs.iter().map(|b| b * b).sum::<f32>();
    assert!(
        diff <= 5e-2 * scale && nmse <= 1e-3,
        "{what}: max |diff| {diff} (limit 5e-2 x max |logit| {scale}), normalized squared error {nmse} (limit 1e-3)"
    );
}

/// Whether weights of `dtype` are products over 8-bit activations.
pub fn is_quantized(dtype: GgmlDType) -> bool {
    !matches!(dtype, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16)
}

pub fn argmax(v: &[f32]) -> u32 {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i as u32)
        .unwrap()
}

/// Copies the GGUF at `src` to `dst`, letting `edit` change the metadata and
/// leaving out the tensors `keep` refuses.
pub fn rewrite_gguf(
    src: &std::path::Path,
    dst: &std::path::Path,
    edit: impl FnOnce(&mut Vec<(String, candle_core::quantized::gguf_file::Value)>),
    keep: impl Fn(&str) -> bool,
) {
    use candle_core::quantized::gguf_file;
    let mut file = std::fs::File::open(src).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let mut md: Vec<(String, gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    md.sort_by(|a, b| a.0.cmp(&b.0));
    edit(&mut md);
    let mut names: Vec<&String> = content.tensor_infos.keys().filter(|n| keep(n)).collect();
    names.sort();
    let tensors: Vec<(String, candle_core::quantized::QTensor)> = names
        .into_iter()
        .map(|n| {
            (
                n.clone(),
                content.tensor(&mut file, n, &Device::Cpu).unwrap(),
            )
        })
        .collect();
    strata::model::gguf::write_gguf(dst, &md, &tensors).unwrap();
}

/// A served tiny model (byte-level BPE vocabulary with a ChatML template)
/// with `settings` and `config`; context 128.
pub fn api_state(
    settings: strata::resources::ResourceSettings,
    config: strata::api::ApiConfig,
) -> (tempfile::TempDir, strata::api::AppState) {
    let mut spec = SynthSpec::tiny(GgmlDType::Q8_0, 7);
    spec.vocab = strata::model::tokenizer::VocabKind::BytePairGpt2;
    let (dir, path) = synth_file(&spec);
    let loaded = strata::engine::load(&strata::engine::LoadOptions {
        model: path,
        devices: "cpu".parse().unwrap(),
        strategy: strata::placement::Strategy::Balance,
        ctx_size: Some(128),
        budget_policy: Default::default(),
    })
    .expect("load the tiny model");
    let resources = strata::resources::ResourceManager::new(settings);
    let state = strata::api::AppState::new(loaded, "tiny".into(), resources, config);
    (dir, state)
}

/// Settings without throttle or pauses, with `max_in_flight` slots.
pub fn fast_settings(max_in_flight: usize) -> strata::resources::ResourceSettings {
    let mut s = strata::resources::Mode::Aggressive.defaults();
    s.max_in_flight = max_in_flight;
    s
}

/// A `strata serve` process on a free port; killed when dropped.
pub struct ServeProcess {
    pub child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The stderr lines up to and including the "serving ... on" line.
    pub log: Vec<String>,
    /// The rest of stderr (`None` once drained).
    pub lines: Option<std::io::Lines<std::io::BufReader<std::process::ChildStderr>>>,
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A chat-capable synthetic model (byte-level BPE vocabulary, ChatML).
pub fn chat_model(dtype: GgmlDType, seed: u64) -> (tempfile::TempDir, PathBuf) {
    let mut spec = SynthSpec::tiny(dtype, seed);
    spec.vocab = strata::model::tokenizer::VocabKind::BytePairGpt2;
    synth_file(&spec)
}

/// Starts `strata serve -m model --port 0 ARGS` and waits until it listens.
pub fn spawn_serve(model: &std::path::Path, args: &[&str]) -> ServeProcess {
    let model = model.to_string_lossy().into_owned();
    spawn_strata(&[&["serve", "--port", "0", "-m", &model][..], args].concat())
}

/// Starts `strata ARGS` (a command that prints `... on http://ADDR`) and
/// waits until it listens.
pub fn spawn_strata(args: &[&str]) -> ServeProcess {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_strata"));
    cmd.args(args);
    spawn_command(cmd)
}

/// Starts `cmd` (a strata command that prints `... on http://ADDR`) and
/// waits until it listens.
pub fn spawn_command(mut cmd: std::process::Command) -> ServeProcess {
    use std::io::BufRead;
    let mut child = cmd
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start strata");
    let lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    // Owned by the guard from here on, so a panic still kills and reaps it.
    let mut server = ServeProcess {
        child,
        base: String::new(),
        log: Vec::new(),
        lines: Some(lines),
    };
    loop {
        let line = match server.lines.as_mut().and_then(|l| l.next()) {
            Some(line) => line.unwrap(),
            None => panic!("strata serve exited before listening: {:?}", server.log),
        };
        server.log.push(line.clone());
        if let Some(rest) = line.split(" on http://").nth(1) {
            server.base = format!("http://{}", rest.split_whitespace().next().unwrap());
            return server;
        }
    }
}

impl ServeProcess {
    /// Keeps reading stderr on a thread (so the process never blocks on a
    /// full pipe); the lines collect in the returned log.
    pub fn drain(&mut self) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
        let log = std::sync::Arc::new(std::sync::Mutex::new(self.log.clone()));
        let sink = log.clone();
        let lines = self.lines.take().expect("stderr not drained yet");
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        log
    }
}

/// `GET url` answered 200 with JSON.
pub async fn get_json(url: &str) -> serde_json::Value {
    let res = reqwest::get(url).await.unwrap();
    assert!(res.status().is_success(), "{url}: {}", res.status());
    res.json().await.unwrap()
}

/// A scheduler's `/v1/nodes`.
pub async fn nodes(base: &str) -> serde_json::Value {
    get_json(&format!("{base}/v1/nodes")).await
}

/// Polls `/v1/nodes` until `ok` holds, or fails after `within`.
pub async fn wait_for(
    base: &str,
    within: std::time::Duration,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + within;
    loop {
        let v = nodes(base).await;
        if ok(&v) {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} not within {within:?}: {v:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// `POST url` with a JSON body; the JSON answer (`null` when there is none).
pub async fn post_json(url: &str, body: &serde_json::Value) -> serde_json::Value {
    reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap_or(serde_json::Value::Null)
}

/// `strata scheduler --port 0 --memory EXTRA`, its stderr drained.
pub fn spawn_scheduler(extra: &[&str]) -> ServeProcess {
    let mut s = spawn_strata(&[&["scheduler", "--port", "0", "--memory"][..], extra].concat());
    s.drain();
    s
}

/// `strata worker --scheduler SCHEDULER --port 0 -m MODEL EXTRA`.
pub fn spawn_worker(scheduler: &str, model: &str, extra: &[&str]) -> ServeProcess {
    let args = [
        "worker",
        "--scheduler",
        scheduler,
        "--port",
        "0",
        "-m",
        model,
    ];
    spawn_strata(&[&args[..], extra].concat())
}
