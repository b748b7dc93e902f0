//! A store behind retry and a circuit breaker, with a real PostgreSQL that is stopped and started
//! again: calls fail with Unavailable, the breaker opens and rejects fast, and once the server is
//! back a trial call closes it, with every acknowledged write still there.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aistack_core::resilience::{
    BreakerConfig, BreakerPolicy, BreakerRegistry, BreakerState, RetryPolicy,
};
use aistack_core::store::{
    CollectionSpec, Metric, PgConfig, PgVectorStore, Record, ResilientStore, SearchRequest,
    VectorStore,
};
use aistack_core::{Error, ErrorKind};
use serde_json::Map;

/// A PostgreSQL of this test's own (port and directory), so stopping it disturbs no other test.
struct Server {
    port: String,
    dir: PathBuf,
}

impl Server {
    fn script() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg-test-server")
    }

    fn run(&self, action: &str) -> String {
        let out = Command::new(Self::script())
            .arg(action)
            .env("AISTACK_PG_PORT", &self.port)
            .env("AISTACK_PG_DIR", &self.dir)
            .output()
            .expect("scripts/pg-test-server runs");
        assert!(
            out.status.success(),
            "pg-test-server {action}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.run("stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_opens_while_postgres_is_down_and_closes_when_it_is_back() {
    let server = Server {
        port: std::env::var("AISTACK_TEST_PG_RESILIENCE_PORT").unwrap_or_else(|_| "55499".into()),
        dir: std::env::temp_dir().join("aistack-pg-resilience"),
    };
    let dsn = server.run("start");
    let mut cfg = PgConfig::new(dsn);
    cfg.acquire_timeout = Duration::from_secs(1);
    let pg: Arc<dyn VectorStore> = Arc::new(PgVectorStore::connect(cfg).await.unwrap());
    let registry = BreakerRegistry::new();
    let breaker = registry
        .get_or_create(
            "pgvector",
            &BreakerConfig {
                policy: BreakerPolicy::ConsecutiveFailures(3),
                open_for: Duration::from_millis(500),
                max_open: Duration::from_secs(2),
                half_open_max_calls: 1,
                call_timeout: Duration::from_secs(5),
            },
        )
        .unwrap();
    let store = ResilientStore::new(
        pg,
        RetryPolicy {
            max_attempts: 3,
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            max_elapsed: None,
        },
        breaker.clone(),
    );

    let name = "resilience";
    let _ = store.drop_collection(name).await;
    store
        .create_collection(&CollectionSpec::new(name, 3, Metric::Cosine))
        .await
        .unwrap();
    store
        .upsert(
            name,
            vec![Record::new("a", vec![1.0, 0.0, 0.0], Map::new())],
        )
        .await
        .unwrap();
    // A caller error is not retried and does not count against the backend.
    let err = store
        .upsert(name, vec![Record::new("b", vec![1.0], Map::new())])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(breaker.snapshot().failures, 0);

    server.run("stop");
    // Three attempts fail: the breaker opens.
    let err = store.count(name, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert_eq!(breaker.state(), BreakerState::Open);
    assert_eq!(registry.snapshot()[0].state, BreakerState::Open);
    // While open, calls are rejected at once, without waiting on the dead server.
    let started = Instant::now();
    let err = store.count(name, None).await.unwrap_err();
    assert!(matches!(err, Error::CircuitOpen { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_millis(500));

    server.run("start");
    // After the open interval a trial call goes through and closes the breaker.
    let deadline = Instant::now() + Duration::from_secs(30);
    let n = loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        match store.count(name, None).await {
            Ok(n) => break n,
            Err(e) if Instant::now() < deadline => {
                assert!(e.kind() == ErrorKind::Unavailable, "{e}");
            }
            Err(e) => panic!("the store did not come back: {e}"),
        }
    };
    assert_eq!(n, 1, "the acknowledged write survived the restart");
    assert_eq!(breaker.state(), BreakerState::Closed);
    let hits = store
        .search(name, &[SearchRequest::new(vec![1.0, 0.0, 0.0], 1)])
        .await
        .unwrap();
    assert_eq!(hits[0][0].id, "a");
    assert!(breaker.snapshot().opened >= 1);
}
