//! Scheduler benchmarks (not tests):
//!
//! - `heartbeats/embedded` and `heartbeats/redis`: heartbeats one scheduler
//!   absorbs over HTTP on loopback, 200 nodes, 64 keep-alive connections
//!   each sending one heartbeat after the other (throughput in elements/s).
//!   The load generator writes prepared request bytes and reads the
//!   answers itself, so that most of the CPU goes to the scheduler, as
//!   with `wrk`. The Redis group starts its own `redis-server`.
//! - `gateway/direct` vs `gateway/via_scheduler`: one non-streamed chat
//!   request to a stub worker (a fixed JSON answer), directly and through
//!   the gateway; the difference is the gateway's added latency. p50 / p99
//!   of 2000 sequential requests each are printed too.
//!
//! `cargo bench --bench scheduler`

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::{Json, Router};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::{json, Value};
use strata::scheduler::clock::MonotonicClock;
use strata::scheduler::embedded::EmbeddedStore;
use strata::scheduler::http::router;
use strata::scheduler::redis_store::RedisStore;
use strata::scheduler::service::{Scheduler, SchedulerConfig};
use strata::scheduler::store::Store;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const NODES: usize = 200;
const BATCH: usize = 2000;
const CONCURRENCY: usize = 64;

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn scheduler(store: Arc<dyn Store>) -> Scheduler {
    Scheduler::new(
        store,
        Arc::new(MonotonicClock::new()),
        SchedulerConfig {
            ttl: Duration::from_secs(3600),
            ..SchedulerConfig::default()
        },
    )
}

/// Registers one node serving `m` at `endpoint`; the scheduler's answer.
async fn register(client: &reqwest::Client, base: &str, endpoint: &str) -> Value {
    client
        .post(format!("{base}/v1/nodes/register"))
        .json(&json!({"endpoint": endpoint, "models": ["m"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Registers `NODES` nodes; returns each one's heartbeat as the raw
/// HTTP/1.1 request bytes.
async fn register_nodes(client: &reqwest::Client, base: &str, endpoint: &str) -> Vec<Vec<u8>> {
    let host = base.trim_start_matches("http://");
    let mut out = Vec::new();
    for _ in 0..NODES {
        let r = register(client, base, endpoint).await;
        let body = json!({"lease_id": r["lease_id"], "epoch": r["epoch"],
            "load": {"in_flight": 0, "max_in_flight": 8, "healthy": true}})
        .to_string();
        let request = format!(
            "POST /v1/nodes/{}/heartbeat HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            r["node_id"].as_str().unwrap(),
            body.len()
        );
        out.push(request.into_bytes());
    }
    out
}

/// Sends `count` of `requests` (round robin from `first`) one after the
/// other on one keep-alive connection, checking each answer is a 200.
async fn heartbeat_connection(addr: &str, requests: &[Vec<u8>], first: usize, count: usize) {
    let mut conn = BufReader::new(TcpStream::connect(addr).await.unwrap());
    conn.get_mut().set_nodelay(true).unwrap();
    let mut line = String::new();
    for i in 0..count {
        conn.get_mut()
            .write_all(&requests[(first + i) % requests.len()])
            .await
            .unwrap();
        let mut length = 0;
        let mut status = true;
        loop {
            line.clear();
            conn.read_line(&mut line).await.unwrap();
            if status {
                assert!(line.starts_with("HTTP/1.1 200"), "{line}");
                status = false;
            } else if line == "\r\n" {
                break;
            } else if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        conn.read_exact(&mut body).await.unwrap();
    }
}

/// `BATCH` heartbeats over `CONCURRENCY` keep-alive connections: a load
/// generator that costs little next to the server, like `wrk`.
async fn heartbeat_batch(addr: &str, requests: &Arc<Vec<Vec<u8>>>) -> Duration {
    let start = Instant::now();
    let per = BATCH / CONCURRENCY;
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|c| {
            let (addr, requests) = (addr.to_string(), requests.clone());
            tokio::spawn(async move { heartbeat_connection(&addr, &requests, c * per, per).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

fn heartbeats(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("heartbeats");
    group.throughput(Throughput::Elements(
        (BATCH / CONCURRENCY * CONCURRENCY) as u64,
    ));
    group.sample_size(10);
    let client = reqwest::Client::new();

    let embedded: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(&dir.path().join("s.redb")).unwrap());
    // Registers the nodes on a scheduler over `store`, then times batches.
    let mut bench_store = |name: &str, store: Arc<dyn Store>| {
        let (addr, requests) = rt.block_on(async {
            let base = serve(router(scheduler(store))).await;
            let requests = register_nodes(&client, &base, "http://127.0.0.1:9").await;
            (
                base.trim_start_matches("http://").to_string(),
                Arc::new(requests),
            )
        });
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += heartbeat_batch(&addr, &requests).await;
                    }
                    total
                })
            })
        });
    };
    bench_store("embedded", embedded);

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut redis = std::process::Command::new("redis-server")
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server (apt-get install -y redis-server)");
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let redis_store = rt.block_on(RedisStore::connect(
        &format!("redis://127.0.0.1:{port}/"),
        "bench",
    ));
    bench_store("redis", Arc::new(redis_store.unwrap()));
    group.finish();
    let _ = redis.kill();
    let _ = redis.wait();
}

async fn one_chat(client: &reqwest::Client, url: &str) {
    let res = client
        .post(url)
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    res.bytes().await.unwrap();
}

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[v.len() * 99 / 100])
}

fn gateway(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    let answer = json!({"id": "x", "object": "chat.completion", "choices": [{"index": 0,
        "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}]});
    let (direct, via) = rt.block_on(async {
        let stub = Router::new().route(
            "/v1/chat/completions",
            post(move || {
                let a = answer.clone();
                async move { Json(a) }
            }),
        );
        let worker = serve(stub).await;
        let s = scheduler(Arc::new(strata::scheduler::store::MemoryStore::new()));
        let base = serve(router(s)).await;
        let r = register(&client, &base, &worker).await;
        assert!(r["epoch"].as_u64().is_some());
        (
            format!("{worker}/v1/chat/completions"),
            format!("{base}/v1/chat/completions"),
        )
    });
    let mut group = c.benchmark_group("gateway");
    group.bench_function("direct", |b| {
        b.iter(|| rt.block_on(one_chat(&client, &direct)))
    });
    group.bench_function("via_scheduler", |b| {
        b.iter(|| rt.block_on(one_chat(&client, &via)))
    });
    group.finish();
    let sample = |url: &str| {
        rt.block_on(async {
            let mut v = Vec::with_capacity(2000);
            for _ in 0..2000 {
                let t = Instant::now();
                one_chat(&client, url).await;
                v.push(t.elapsed());
            }
            percentiles(v)
        })
    };
    let (d50, d99) = sample(&direct);
    let (g50, g99) = sample(&via);
    println!(
        "gateway latency over 2000 requests: direct p50 {d50:?} p99 {d99:?}; via scheduler p50 {g50:?} p99 {g99:?}; added p50 {:?} p99 {:?}",
        g50.saturating_sub(d50),
        g99.saturating_sub(d99)
    );
}

criterion_group!(benches, heartbeats, gateway);
criterion_main!(benches);
