//! One suite of store behaviour, run against every store: the memory
//! store, the embedded durable store (redb) and the Redis store (a real
//! `redis-server` the test starts). Time is injected: every call takes the
//! scheduler clock's milliseconds, so expiry is exact.

#[path = "common/redis.rs"]
mod redis_server;

use std::sync::Arc;

use redis_server::RedisServer;
use strata::scheduler::embedded::EmbeddedStore;
use strata::scheduler::lease::{Heartbeat, LeaseError};
use strata::scheduler::node::{LoadReport, NodeInfo};
use strata::scheduler::redis_store::RedisStore;
use strata::scheduler::store::{MemoryStore, Store, StoreError};

const TTL: u64 = 3_000;

fn info(endpoint: &str) -> NodeInfo {
    NodeInfo {
        endpoint: endpoint.into(),
        models: vec!["m".into()],
        mode: "default".into(),
        devices: vec![],
    }
}

fn hb(lease_id: &str, epoch: u64) -> Heartbeat {
    Heartbeat {
        lease_id: lease_id.into(),
        epoch,
        load: LoadReport {
            in_flight: 1,
            max_in_flight: 4,
            healthy: true,
            ..Default::default()
        },
        info: None,
    }
}

fn lease_err(r: Result<impl std::fmt::Debug, StoreError>) -> LeaseError {
    match r {
        Err(StoreError::Lease(e)) => e,
        other => panic!("expected a lease error, got {other:?}"),
    }
}

async fn store_suite(store: Arc<dyn Store>) {
    // Registration: fresh ids, epochs from one increasing counter.
    let a = store
        .register(None, info("http://a"), 0, TTL)
        .await
        .unwrap();
    let b = store
        .register(None, info("http://b"), 10, TTL)
        .await
        .unwrap();
    assert_ne!(a.id, b.id);
    assert!(b.epoch > a.epoch);
    assert_eq!(store.current_epoch().await.unwrap(), b.epoch);
    assert_eq!(a.lease_expires_ms, TTL);

    // Heartbeats renew on the scheduler's clock.
    let renewed = store
        .heartbeat(&a.id, hb(&a.lease_id, a.epoch), 2_000, TTL)
        .await
        .unwrap();
    assert_eq!(renewed.lease_expires_ms, 5_000);
    assert_eq!(renewed.load.in_flight, 1);
    // Unknown node, wrong lease: 410. Stale epoch: 409.
    let e = lease_err(
        store
            .heartbeat("n-nope", hb(&a.lease_id, a.epoch), 2_000, TTL)
            .await,
    );
    assert_eq!(e.status(), 410);
    let e = lease_err(
        store
            .heartbeat(&a.id, hb("l-other", a.epoch), 2_000, TTL)
            .await,
    );
    assert_eq!(e.status(), 410);
    let e = lease_err(
        store
            .heartbeat(&a.id, hb(&a.lease_id, a.epoch - 1), 2_000, TTL)
            .await,
    );
    assert_eq!(e.status(), 409);
    // Expiry: exactly at the deadline the lease is gone.
    let e = lease_err(
        store
            .heartbeat(&b.id, hb(&b.lease_id, b.epoch), 10 + TTL, TTL)
            .await,
    );
    assert_eq!(e, LeaseError::Expired(b.id.clone()));

    // Re-registering under the same id: same node, new epoch and lease;
    // the old credentials are fenced off with 409.
    let b2 = store
        .register(Some(b.id.clone()), info("http://b"), 4_000, TTL)
        .await
        .unwrap();
    assert_eq!(b2.id, b.id);
    assert!(b2.epoch > a.epoch && b2.epoch > b.epoch);
    assert_ne!(b2.lease_id, b.lease_id);
    let e = lease_err(
        store
            .heartbeat(&b.id, hb(&b.lease_id, b.epoch), 4_100, TTL)
            .await,
    );
    assert_eq!(e.status(), 409);
    assert!(store
        .heartbeat(&b.id, hb(&b2.lease_id, b2.epoch), 4_100, TTL)
        .await
        .is_ok());

    // Request figures survive and update atomically under concurrency.
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let (s, id) = (store.clone(), a.id.clone());
            tokio::spawn(async move { s.record_result(&id, i % 4 != 0, 100.0).await.unwrap() })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let stats = store.get(&a.id).await.unwrap().unwrap().stats;
    assert_eq!((stats.requests, stats.successes), (100, 75));
    assert!((stats.latency_ms - 100.0).abs() < 1e-9);

    // A clean leave needs the current credentials.
    let e = lease_err(store.leave(&b.id, &b.lease_id, b.epoch, 4_200).await);
    assert_eq!(e.status(), 409);
    store
        .leave(&b.id, &b2.lease_id, b2.epoch, 4_200)
        .await
        .unwrap();
    assert!(store.get(&b.id).await.unwrap().is_none());

    // Sweep: a lapsed node goes only after the stale timeout.
    assert!(store.sweep(5_100, 10_000).await.unwrap().is_empty());
    let removed = store.sweep(5_000 + 10_000, 10_000).await.unwrap();
    assert_eq!(removed, vec![a.id.clone()]);
    assert!(store.list().await.unwrap().is_empty());
}

/// 1000 nodes, half stop heartbeating: exactly 500 stay live.
async fn half_of_a_thousand_lapse(store: Arc<dyn Store>) {
    let mut nodes = Vec::new();
    for i in 0..1000 {
        nodes.push(
            store
                .register(None, info(&format!("http://n{i}")), 0, TTL)
                .await
                .unwrap(),
        );
    }
    for n in nodes.iter().step_by(2) {
        store
            .heartbeat(&n.id, hb(&n.lease_id, n.epoch), 2_500, TTL)
            .await
            .unwrap();
    }
    let now = TTL + 1;
    let live = store
        .list()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.lease_live(now))
        .count();
    assert_eq!(live, 500);
    let epochs: std::collections::BTreeSet<u64> = nodes.iter().map(|n| n.epoch).collect();
    assert_eq!(epochs.len(), 1000, "every registration its own epoch");
}

#[tokio::test]
async fn memory_store() {
    store_suite(Arc::new(MemoryStore::new())).await;
    half_of_a_thousand_lapse(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    store_suite(Arc::new(
        EmbeddedStore::open(&dir.path().join("a.redb")).unwrap(),
    ))
    .await;
    half_of_a_thousand_lapse(Arc::new(
        EmbeddedStore::open(&dir.path().join("b.redb")).unwrap(),
    ))
    .await;
}

#[tokio::test]
async fn embedded_epochs_and_figures_survive_a_restart_and_leases_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let (node, last) = {
        let store = EmbeddedStore::open(&path).unwrap();
        let n = store
            .register(None, info("http://a"), 0, TTL)
            .await
            .unwrap();
        let m = store
            .register(None, info("http://b"), 0, TTL)
            .await
            .unwrap();
        store.record_result(&n.id, true, 12.0).await.unwrap();
        (n, m.epoch)
    };
    let store = EmbeddedStore::open(&path).unwrap();
    assert_eq!(store.current_epoch().await.unwrap(), last);
    // Figures live in memory and are saved when the store closes.
    let kept = store.get(&node.id).await.unwrap().unwrap();
    assert_eq!(kept.stats.requests, 1, "{kept:?}");
    assert!(
        !kept.lease_live(0),
        "a lease from before the restart is void"
    );
    // The new process's clock starts again at 0: the old lease is void.
    let e = lease_err(
        store
            .heartbeat(&node.id, hb(&node.lease_id, node.epoch), 0, TTL)
            .await,
    );
    assert_eq!(e.status(), 410);
    let again = store
        .register(Some(node.id.clone()), info("http://a"), 0, TTL)
        .await
        .unwrap();
    assert!(again.epoch > last, "epochs never go backwards");
    assert_eq!(store.list().await.unwrap().len(), 2);
}

#[tokio::test]
async fn redis_store() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path(), 0);
    store_suite(Arc::new(
        RedisStore::connect(&redis.url(), "suite-a").await.unwrap(),
    ))
    .await;
    half_of_a_thousand_lapse(Arc::new(
        RedisStore::connect(&redis.url(), "suite-b").await.unwrap(),
    ))
    .await;
}

#[tokio::test]
async fn redis_epochs_survive_a_redis_restart() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path(), 0);
    let (port, url) = (redis.port, redis.url());
    let store = RedisStore::connect(&url, "restart").await.unwrap();
    let mut last = 0;
    for i in 0..5 {
        last = store
            .register(None, info(&format!("http://n{i}")), 0, TTL)
            .await
            .unwrap()
            .epoch;
    }
    drop(store);
    redis.stop();
    let _redis = RedisServer::start(dir.path(), port);
    let store = RedisStore::connect(&url, "restart").await.unwrap();
    assert_eq!(store.current_epoch().await.unwrap(), last);
    let next = store
        .register(None, info("http://x"), 0, TTL)
        .await
        .unwrap();
    assert_eq!(next.epoch, last + 1, "epochs never go backwards");
    assert_eq!(store.list().await.unwrap().len(), 6);
}

#[tokio::test]
async fn redis_locks_are_released_only_by_their_holder() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path(), 0);
    let a = RedisStore::connect(&redis.url(), "locks").await.unwrap();
    let b = RedisStore::connect(&redis.url(), "locks").await.unwrap();
    let token = a.try_lock("sweep", 10_000).await.unwrap().expect("free");
    assert_eq!(b.try_lock("sweep", 10_000).await.unwrap(), None, "held");
    assert!(!b.unlock("sweep", "t-not-mine").await.unwrap());
    assert_eq!(
        b.try_lock("sweep", 10_000).await.unwrap(),
        None,
        "still held"
    );
    assert!(a.unlock("sweep", &token).await.unwrap());
    let t2 = b.try_lock("sweep", 200).await.unwrap().expect("free again");
    assert!(
        !a.unlock("sweep", &token).await.unwrap(),
        "an old token frees nothing"
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        a.try_lock("sweep", 200).await.unwrap().is_some(),
        "lapsed by itself"
    );
    assert!(!b.unlock("sweep", &t2).await.unwrap());
}
