//! The systemd units in `scripts/systemd` and the environment file they
//! read: every `STRATA_*` variable in it (set or commented out) is one
//! strata reads, each unit starts a subcommand that exists, and a
//! scheduler and a worker started with the file's settings (address, state
//! file and model swapped for test ones) find each other with its join
//! token.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use candle_core::quantized::GgmlDType;
use strata::resources::settings::{env_name, SETTINGS};

fn systemd_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/systemd")
}

/// `KEY=VALUE` lines of the env file; commented ones too when `all`.
fn env_file(all: bool) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(systemd_dir().join("strata.env")).unwrap();
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = if all { l.trim_start_matches('#') } else { l };
            let (k, v) = l.split_once('=')?;
            k.starts_with("STRATA_")
                .then(|| (k.to_string(), v.to_string()))
        })
        .collect()
}

fn help(sub: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args([sub, "--help"])
        .output()
        .unwrap();
    assert!(out.status.success(), "strata {sub} --help");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_variable_in_the_env_file_is_read_by_strata() {
    let known: String = help("worker") + &help("scheduler");
    let settings: Vec<String> = SETTINGS.iter().map(|s| env_name(s.key)).collect();
    let vars = env_file(true);
    assert!(vars.len() >= 10, "{vars:?}");
    for key in vars.keys() {
        assert!(
            known.contains(&format!("env: {key}")) || settings.contains(key),
            "{key} in strata.env is not a variable strata reads"
        );
    }
}

#[test]
fn each_unit_starts_a_real_subcommand_with_the_env_file() {
    for (unit, sub) in [
        ("strata-worker.service", "worker"),
        ("strata-scheduler.service", "scheduler"),
    ] {
        let text = std::fs::read_to_string(systemd_dir().join(unit)).unwrap();
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap_or_else(|| panic!("{unit}: no ExecStart"));
        assert_eq!(exec.split_whitespace().nth(1), Some(sub), "{unit}: {exec}");
        assert!(
            text.lines()
                .any(|l| l == "EnvironmentFile=/etc/strata/strata.env"),
            "{unit}"
        );
        help(sub);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_and_a_scheduler_configured_by_the_file_find_each_other() {
    let env = env_file(false);
    let dir = tempfile::tempdir().unwrap();
    let (_model_dir, model) = common::chat_model(GgmlDType::Q8_0, 9);
    let start = |sub: &str, overrides: &[(&str, String)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
        cmd.arg(sub)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap());
        for (k, v) in &env {
            cmd.env(k, v);
        }
        for (k, v) in overrides {
            cmd.env(k, v);
        }
        common::spawn_command(cmd)
    };
    let local = [
        ("STRATA_HOST", "127.0.0.1".to_string()),
        ("STRATA_PORT", "0".to_string()),
    ];
    let scheduler = start(
        "scheduler",
        &[
            &local[..],
            &[(
                "STRATA_STATE",
                dir.path().join("s.redb").display().to_string(),
            )],
        ]
        .concat(),
    );
    let mut worker = start(
        "worker",
        &[
            &local[..],
            &[
                ("STRATA_SCHEDULER", scheduler.base.clone()),
                ("STRATA_ADVERTISE", String::new()),
                ("STRATA_MODEL", model.display().to_string()),
                ("STRATA_DEVICES", "cpu".to_string()),
            ],
        ]
        .concat(),
    );
    let log = worker.drain();
    let v = common::wait_for(
        &scheduler.base,
        std::time::Duration::from_secs(20),
        "the worker's registration",
        |v| v["active"] == 1,
    )
    .await;
    assert_eq!(
        v["nodes"][0]["info"]["mode"],
        env["STRATA_MODE"],
        "{:?}",
        log.lock().unwrap()
    );
}
