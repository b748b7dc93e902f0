//! The pgvector backend against a real PostgreSQL 18 + pgvector 0.8 server: the conformance
//! suite, and two stateless clients sharing one database. The server is `AISTACK_TEST_PG_DSN`, or
//! the one `scripts/pg-test-server` starts.

mod conformance;

use std::sync::Arc;

use aistack_core::store::{
    CollectionSpec, Metric, PgConfig, PgVectorStore, Record, SearchRequest, VectorStore,
};
use aistack_core::ErrorKind;
use serde_json::Map;

async fn store() -> PgVectorStore {
    PgVectorStore::connect(PgConfig::new(aistack_testing::pg_dsn()))
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite() {
    let s: Arc<dyn VectorStore> = Arc::new(store().await);
    conformance::run_all(s, &format!("pg{}", std::process::id())).await;
}

#[tokio::test]
async fn clients_share_state_through_the_database() {
    let a = store().await;
    let b = store().await;
    let name = format!("pg{}-shared", std::process::id());
    let _ = a.drop_collection(&name).await;
    a.create_collection(&CollectionSpec::new(&name, 3, Metric::L2))
        .await
        .unwrap();
    b.upsert(
        &name,
        vec![Record::new("x", vec![1.0, 2.0, 3.0], Map::new())],
    )
    .await
    .unwrap();
    let hits = a
        .search(&name, &[SearchRequest::new(vec![1.0, 2.0, 3.0], 1)])
        .await
        .unwrap();
    assert_eq!(hits[0][0].id, "x");
    assert!(b.drop_collection(&name).await.unwrap());
    assert_eq!(
        a.count(&name, None).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    let mut cfg = PgConfig::new("postgres://postgres@127.0.0.1:1/postgres");
    cfg.acquire_timeout = std::time::Duration::from_secs(2);
    let err = PgVectorStore::connect(cfg).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());
}
