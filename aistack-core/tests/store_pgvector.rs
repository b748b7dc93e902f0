//! The pgvector backend against a real PostgreSQL 18 + pgvector 0.8 server: the conformance
//! suite, and two stateless clients sharing one database. The server is `AISTACK_TEST_PG_DSN`, or
//! the one `scripts/pg-test-server` starts.

mod conformance;

use std::sync::Arc;

use aistack_core::store::{
    Analyzer, CollectionSpec, Metric, PgConfig, PgVectorStore, Record, SearchMode, SearchRequest,
    VectorStore,
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
    conformance::run_all(s.clone(), &format!("pg{}", std::process::id())).await;
    conformance::run_hybrid(s, &format!("pg{}", std::process::id())).await;
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

/// A database made before lexical search (the 0001 schema, a collection with rows) is upgraded
/// when aistack connects: the migration adds the columns and the GIN index, and the rows' terms
/// are filled in, so lexical and hybrid search find the old rows.
#[tokio::test]
async fn an_existing_collection_is_upgraded_for_lexical_search() {
    let admin = store().await;
    let db = format!("aistack_upgrade_{}", std::process::id());
    let drop = format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)");
    sqlx::query(sqlx::AssertSqlSafe(drop.clone()))
        .execute(admin.pool())
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(admin.pool())
        .await
        .unwrap();
    let base = aistack_testing::pg_dsn();
    let dsn = format!("{}/{db}", &base[..base.rfind('/').unwrap()]);
    {
        let old = sqlx::PgPool::connect(&dsn).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(include_str!(
            "../migrations/0001_collections.sql"
        )))
        .execute(&old)
        .await
        .unwrap();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO aistack_collections (name, dims, metric) VALUES ('old', 4, 'cosine') RETURNING id",
        )
        .fetch_one(&old)
        .await
        .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE aistack_vec_{id} (id TEXT PRIMARY KEY, embedding vector(4) NOT NULL, metadata JSONB NOT NULL DEFAULT '{{}}');
             INSERT INTO aistack_vec_{id} VALUES
               ('a', '[1,0,0,0]', '{{\"_text\": \"defines S_IFCHR for character devices\"}}'),
               ('b', '[0,1,0,0]', '{{\"_text\": \"non-blocking files\"}}'),
               ('c', '[0,0,1,0]', '{{\"lang\": \"en\"}}')"
        )))
        .execute(&old)
        .await
        .unwrap();
        old.close().await;
    }
    let upgraded = PgVectorStore::connect(PgConfig::new(&dsn)).await.unwrap();
    let info = upgraded.collection("old").await.unwrap();
    assert_eq!((info.count, info.spec.analyzer), (3, Analyzer::English));
    let r = SearchRequest::new(Vec::new(), 5).with_text(SearchMode::Lexical, "s_ifchr devices");
    let hits = upgraded.search("old", &[r]).await.unwrap().pop().unwrap();
    assert_eq!(
        hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
        ["a"]
    );
    let r =
        SearchRequest::new(vec![0.0, 0.0, 1.0, 0.0], 2).with_text(SearchMode::Hybrid, "blocking");
    let hits = upgraded.search("old", &[r]).await.unwrap().pop().unwrap();
    assert_eq!(
        hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
        ["b", "c"]
    );
    // A second connect finds nothing left to do and changes nothing.
    let again = PgVectorStore::connect(PgConfig::new(&dsn)).await.unwrap();
    assert_eq!(again.count("old", None).await.unwrap(), 3);
    upgraded.pool().close().await;
    again.pool().close().await;
    sqlx::query(sqlx::AssertSqlSafe(drop))
        .execute(admin.pool())
        .await
        .unwrap();
}

/// A database a newer aistack has migrated further (a migration this version does not know)
/// still opens: migrations only add, so an older and a newer server can share it during a
/// rolling upgrade. Runs in a database of its own.
#[tokio::test]
async fn a_database_migrated_by_a_newer_server_still_opens() {
    let admin = store().await;
    let db = format!("aistack_newer_{}", std::process::id());
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db}")))
        .execute(admin.pool())
        .await;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(admin.pool())
        .await
        .unwrap();
    let dsn = aistack_testing::pg_dsn();
    let dsn = format!("{}/{db}", &dsn[..dsn.rfind('/').unwrap()]);
    {
        let first = PgVectorStore::connect(PgConfig::new(&dsn)).await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (99990101, 'from a newer aistack', true, '\\x00', 1)",
        )
        .execute(first.pool())
        .await
        .unwrap();
        first
            .create_collection(&CollectionSpec::new("kept", 3, Metric::Cosine))
            .await
            .unwrap();
        first.pool().close().await;
    }
    let again = PgVectorStore::connect(PgConfig::new(&dsn))
        .await
        .expect("a newer schema is accepted");
    assert_eq!(again.collection("kept").await.unwrap().spec.dims, 3);
    again.pool().close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {db}")))
        .execute(admin.pool())
        .await
        .unwrap();
}
