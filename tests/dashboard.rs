//! The web dashboard in a real browser: a scheduler with two workers, and
//! headless Chromium (through playwright-core, from scripts/browser-env)
//! on its `/`. The page lists both nodes with their memory bars; after one
//! worker is stopped (SIGSTOP) the page shows it unhealthy without a
//! reload. The screenshot is kept as an artifact in `target/tmp`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use candle_core::quantized::GgmlDType;
use common::wait_for;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_lists_the_nodes_and_shows_a_stopped_one_unhealthy() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let env = Command::new(root.join("scripts/browser-env"))
        .output()
        .expect("run scripts/browser-env");
    assert!(
        env.status.success(),
        "scripts/browser-env failed:\n{}",
        String::from_utf8_lossy(&env.stderr)
    );
    let playwright = String::from_utf8_lossy(&env.stdout).trim().to_string();

    let (_dir, model) = common::chat_model(GgmlDType::Q8_0, 61);
    let model = model.to_string_lossy().into_owned();
    let scheduler =
        common::spawn_scheduler(&["--health-interval", "200ms", "--health-timeout", "300ms"]);
    let base = scheduler.base.clone();
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let mut w = common::spawn_worker(&base, &model, &["--ctx-size", "128"]);
            w.drain();
            w
        })
        .collect();
    let v = wait_for(&base, Duration::from_secs(20), "two nodes", |v| {
        v["active"] == 2
    })
    .await;
    let id_of = |w: &common::ServeProcess| {
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["info"]["endpoint"] == w.base.as_str())
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (a, b) = (id_of(&workers[0]), id_of(&workers[1]));

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let mut node = Command::new("node")
        .arg(root.join("tests/browser/dashboard.cjs"))
        .args([&base, &shot.to_string_lossy().into_owned(), &a, &b])
        .env("STRATA_PLAYWRIGHT", &playwright)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node");
    let mut out = BufReader::new(node.stdout.take().unwrap()).lines();
    let first = tokio::task::spawn_blocking(move || (out.next(), out))
        .await
        .unwrap();
    let (line, mut out) = first;
    let line = line.map(|l| l.unwrap()).unwrap_or_default();
    if line != "listed" {
        let _ = node.kill();
        let err = std::io::read_to_string(node.stderr.take().unwrap()).unwrap_or_default();
        panic!("the page did not list both nodes: {line}\n{err}");
    }

    unsafe { libc::kill(workers[1].child.id() as i32, libc::SIGSTOP) };
    writeln!(node.stdin.as_mut().unwrap(), "stopped").unwrap();
    let status = tokio::task::spawn_blocking(move || {
        let line = out.next().map(|l| l.unwrap()).unwrap_or_default();
        (node.wait_with_output(), line)
    })
    .await
    .unwrap();
    unsafe { libc::kill(workers[1].child.id() as i32, libc::SIGCONT) };
    let (output, line) = status;
    let output = output.unwrap();
    assert!(
        output.status.success() && line == "unhealthy shown",
        "{line}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    eprintln!("dashboard screenshot: {}", shot.display());
}
