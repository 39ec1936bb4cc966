//! End-to-end tests of the `strata` binary: make-model, plan (table, JSON,
//! errors), generate (streamed text, report, seeds, stop strings), devices,
//! check (the oracles on a device) and quantize.

use std::path::Path;
use std::process::{Command, Output};

fn strata(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .env("RUST_LOG", "strata=warn")
        .output()
        .expect("run strata")
}

fn ok(out: &Output) -> (String, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "strata failed:\n{stderr}");
    (stdout, stderr)
}

fn make_model(dir: &Path, extra: &[&str]) -> String {
    let path = dir.join("m.gguf").to_string_lossy().into_owned();
    let mut args = vec!["make-model", "--out", &path];
    args.extend_from_slice(extra);
    ok(&strata(&args));
    path
}

#[test]
fn plan_prints_a_table_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let m = make_model(dir.path(), &["--quant", "q8_0"]);
    let devices = "cpu=6MiB,cpu=4MiB,cpu=64MiB";
    let args = ["plan", "-m", &m, "--devices", devices, "--ctx-size", "64"];
    let (table, _) = ok(&strata(&args));
    assert!(table.contains("device  layers"), "{table}");
    for label in ["cpu:0", "cpu:1", "cpu:2", "headroom"] {
        assert!(table.contains(label), "{label} missing:\n{table}");
    }
    let (json, _) = ok(&strata(&[&args[..], &["--json"]].concat()));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let devs = v["devices"].as_array().unwrap();
    assert_eq!(devs.len(), 3);
    let layers: u64 = devs
        .iter()
        .map(|d| d["layers"]["end"].as_u64().unwrap() - d["layers"]["start"].as_u64().unwrap())
        .sum();
    assert_eq!(layers, 4);
    for d in devs {
        assert!(d["total_bytes"].as_u64().unwrap() <= d["budget"].as_u64().unwrap());
    }
}

#[test]
fn plan_errors_name_the_device_and_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let m = make_model(dir.path(), &[]);
    let out = strata(&["plan", "-m", &m, "--devices", "cpu=1MiB,cpu=1MiB"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("device `cpu:1` is short by"), "{err}");

    let out = strata(&["plan", "-m", &m, "--devices", "gpu:0"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("`gpu:0`"));
    let out = strata(&["plan", "-m", &m, "--layers", "cpu:9=1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("`cpu:9`"));
    let out = strata(&["plan", "-m", &m, "--ctx-size", "100000"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`--ctx-size`") && err.contains("100000"),
        "{err}"
    );
    let out = strata(&["plan", "-m", "/nonexistent.gguf"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.gguf"));
}

#[test]
fn generate_streams_reports_and_repeats_with_a_seed() {
    let dir = tempfile::tempdir().unwrap();
    let m = make_model(dir.path(), &["--quant", "q4_k"]);
    let args = |seed: &str| {
        vec![
            "generate",
            "-m",
            &m,
            "-p",
            "Once upon a time",
            "-n",
            "12",
            "--devices",
            "cpu=2MiB,cpu=2MiB,cpu=64MiB",
            "--ctx-size",
            "64",
            "--temperature",
            "1.0",
            "--seed",
        ]
        .into_iter()
        .map(String::from)
        .chain([seed.to_string()])
        .collect::<Vec<_>>()
    };
    let run = |seed: &str| {
        let a = args(seed);
        ok(&strata(&a.iter().map(String::as_str).collect::<Vec<_>>()))
    };
    let (text1, report) = run("7");
    let (text2, _) = run("7");
    assert_eq!(text1, text2, "same seed, same text");
    assert!(report.contains("prompt tokens: "), "{report}");
    assert!(report.contains("generated tokens: 12"), "{report}");
    assert!(
        report.contains("decode: ") && report.contains("tok/s"),
        "{report}"
    );
    assert!(report.contains("stages: "), "{report}");
}

#[test]
fn generate_cuts_at_a_stop_string() {
    let dir = tempfile::tempdir().unwrap();
    let m = make_model(dir.path(), &["--quant", "q8_0"]);
    let base = [
        "generate",
        "-m",
        &m,
        "-p",
        "The",
        "-n",
        "40",
        "--temperature",
        "0",
        "--ctx-size",
        "64",
    ];
    let (full, _) = ok(&strata(&base));
    let full = full.trim_end_matches('\n');
    // Pick a stop string from the middle of the greedy output.
    let chars: Vec<char> = full.chars().collect();
    assert!(chars.len() > 10, "output too short: {full:?}");
    let stop: String = chars[6..9].iter().collect();
    let expected_len = full.find(&stop).unwrap();
    let mut args = base.to_vec();
    args.extend(["--stop", &stop]);
    let (cut, report) = ok(&strata(&args));
    assert_eq!(cut.trim_end_matches('\n'), &full[..expected_len]);
    assert!(report.contains("finish: Stop"), "{report}");
}

#[test]
fn a_broken_model_gets_one_clear_line_even_with_backtraces_on() {
    let dir = tempfile::tempdir().unwrap();
    let m = make_model(dir.path(), &["--quant", "q8_0"]);
    let bytes = std::fs::read(&m).unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args([
            "generate",
            "-m",
            cut.to_str().unwrap(),
            "-p",
            "hi",
            "--ctx-size",
            "64",
        ])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: cannot read tensor `"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "no stack dump:\n{err}");
}

#[test]
fn devices_shows_the_cpu_and_what_each_mode_allows() {
    let (table, _) = ok(&strata(&["devices"]));
    assert!(table.lines().any(|l| l.starts_with("cpu ")), "{table}");
    for mode in ["conservative", "default", "aggressive", "now (default)"] {
        assert!(table.contains(mode), "{mode} missing:\n{table}");
    }
    let (json, _) = ok(&strata(&["devices", "--json", "--mode", "aggressive"]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let cpu = &v["cpu"];
    let total = cpu["reading"]["total"].as_u64().unwrap();
    assert!(total > 0);
    let b = &cpu["mode_budgets"];
    let (c, d, a) = (
        b["conservative"].as_u64().unwrap(),
        b["default"].as_u64().unwrap(),
        b["aggressive"].as_u64().unwrap(),
    );
    assert!(c < d && d < a && a <= total, "{b}");
    assert_eq!(v["settings"]["mode"], "aggressive");
    #[cfg(not(feature = "cuda"))]
    assert!(v["gpus"].is_array());
}

#[test]
fn resource_settings_layer_and_bad_values_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("strata.toml");
    std::fs::write(
        &config,
        "[resources]\nmode = \"conservative\"\nthrottle = \"10ms\"\n",
    )
    .unwrap();
    let config = config.to_string_lossy().into_owned();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_strata"));
        c.args(args).env("RUST_LOG", "strata=warn");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let json = |out: &Output| -> serde_json::Value { serde_json::from_str(&ok(out).0).unwrap() };
    let v = json(&run(&["devices", "--json", "--config", &config], &[]));
    assert_eq!(v["settings"]["mode"], "conservative");
    assert_eq!(v["settings"]["throttle"], 10);
    let v = json(&run(
        &["devices", "--json", "--throttle", "30ms"],
        &[("STRATA_CONFIG", &config), ("STRATA_THROTTLE", "20ms")],
    ));
    assert_eq!(v["settings"]["throttle"], 30, "flag over env over file");
    assert_eq!(v["sources"]["throttle"], "flag");

    let out = run(&["devices"], &[("STRATA_VRAM_CAP", "120")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        "error: `vram_cap` (from environment STRATA_VRAM_CAP) must be a percentage from 0 to 100, got `120`"
    );
    let m = make_model(dir.path(), &[]);
    let out = run(&["plan", "-m", &m, "--nice", "-30"], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`nice` (from flag --nice) must be a whole number from -20 to 19"),
        "{err}"
    );
}

#[test]
fn check_runs_the_oracles_on_the_cpu_and_refuses_what_it_cannot_check() {
    let (table, _) = ok(&strata(&[
        "check",
        "--device",
        "cpu",
        "--quant",
        "q4_1,q6_k",
        "--steps",
        "4",
    ]));
    for (model, check) in [
        ("tiny-q4_1", "candle"),
        ("tiny-q4_1", "split"),
        ("tiny-q6_k", "candle"),
        ("tiny-q6_k", "split"),
    ] {
        let row = table
            .lines()
            .find(|l| l.starts_with(model) && l.contains(check))
            .unwrap_or_else(|| panic!("no {model} {check} row:\n{table}"));
        assert!(row.contains(" ok "), "{row}");
    }
    assert!(
        table.contains("split: cpu:0 layers 0-1 + cpu:1 layers 2-3 vs cpu alone"),
        "{table}"
    );
    // GPU-only checks need a GPU.
    assert!(!table.contains("vs-cpu"), "{table}");

    // A user's file, as JSON.
    let dir = tempfile::tempdir().unwrap();
    let m = make_model(dir.path(), &["--quant", "q8_0", "--arch", "qwen2"]);
    let (json, _) = ok(&strata(&[
        "check", "--device", "cpu", "-m", &m, "--steps", "2", "--json",
    ]));
    let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
    let checks: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["result"]["check"].as_str().unwrap())
        .collect();
    assert_eq!(checks, ["split"], "candle's reference reads llama only");
    assert_eq!(rows[0]["result"]["passed"], true);

    let out = strata(&["check", "--device", "cpu=1GiB"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`--device` takes one device"));
    let out = strata(&["check", "--steps", "0"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("`--steps` must be at least 1, got 0"));
    if !cfg!(feature = "cuda") {
        let out = strata(&["check", "--device", "cuda:0", "--quant", "q4_0"]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("rebuild with `--features cuda`"), "{err}");
    }
}

#[test]
fn quantize_writes_a_model_that_loads_and_refuses_bad_input_by_name() {
    use candle_core::quantized::{gguf_file::Content, GgmlDType};
    let dir = tempfile::tempdir().unwrap();
    let m = make_model(dir.path(), &["--quant", "f16"]);
    let types_of = |path: &str| -> Vec<(String, GgmlDType)> {
        let mut f = std::fs::File::open(path).unwrap();
        let c = Content::read(&mut f).unwrap();
        c.tensor_infos
            .iter()
            .map(|(n, i)| (n.clone(), i.ggml_dtype))
            .collect()
    };
    for (scheme, probe, expected) in [
        ("q8_0", "blk.0.ffn_up.weight", GgmlDType::Q8_0),
        ("q4_k_m", "blk.1.ffn_up.weight", GgmlDType::Q4K),
        ("q4_k_m", "blk.3.ffn_down.weight", GgmlDType::Q6K),
        ("q4_1", "output.weight", GgmlDType::Q4_1),
    ] {
        let out = dir.path().join(format!("{scheme}.gguf"));
        let out = out.to_string_lossy().into_owned();
        let (_, report) = ok(&strata(&["quantize", &m, "-o", &out, "-t", scheme]));
        assert!(
            report.contains("wrote") && report.contains("f32"),
            "{report}"
        );
        let types = types_of(&out);
        let t = types.iter().find(|(n, _)| n == probe).unwrap().1;
        assert_eq!(t, expected, "{scheme}: {probe}");
        assert!(types
            .iter()
            .all(|(n, t)| !n.ends_with("norm.weight") || *t == GgmlDType::F32));
        // The requantized model generates.
        ok(&strata(&[
            "generate",
            "-m",
            &out,
            "-p",
            "Once upon",
            "-n",
            "4",
            "--temperature",
            "0",
        ]));
    }
    let bad = strata(&["quantize", &m, "-o", "/tmp/never.gguf", "-t", "q9_9"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("`q9_9`") && err.contains("q4_k_m"),
        "{err}"
    );
    let missing = strata(&[
        "quantize",
        "no-such.gguf",
        "-o",
        "/tmp/never.gguf",
        "-t",
        "q8_0",
    ]);
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        !missing.status.success() && err.contains("no-such.gguf"),
        "{err}"
    );
}
