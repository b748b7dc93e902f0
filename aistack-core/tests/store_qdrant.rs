//! The Qdrant backend against a real Qdrant server: the conformance suite, stateless clients
//! sharing one server, and credentials. No package registry ships a Qdrant server, so these run
//! only when `QDRANT_URL` (gRPC, e.g. `http://127.0.0.1:6334`) names one, with `QDRANT_API_KEY`
//! if it requires a key: each test is ignored in the main run (the runner counts it as ignored)
//! and scripts/test runs them with `--ignored` when `QDRANT_URL` is set.

mod conformance;

use std::sync::Arc;
use std::time::Duration;

use aistack_core::store::{
    CollectionSpec, Metric, QdrantConfig, QdrantStore, Record, SearchMode, SearchRequest,
    VectorStore,
};
use aistack_core::ErrorKind;
use serde_json::json;

/// The server under test; these tests are ignored unless run with `--ignored`, which
/// scripts/test does when `QDRANT_URL` is set.
fn config() -> QdrantConfig {
    let url = std::env::var("QDRANT_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .expect("QDRANT_URL names a Qdrant server (gRPC, e.g. http://127.0.0.1:6334)");
    let mut cfg = QdrantConfig::new(url);
    cfg.api_key = std::env::var("QDRANT_API_KEY")
        .ok()
        .filter(|k| !k.is_empty());
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Qdrant server: QDRANT_URL (scripts/test runs it when it is set)"]
async fn conformance_suite() {
    let cfg = config();
    let s: Arc<dyn VectorStore> = Arc::new(QdrantStore::connect(cfg).await.unwrap());
    conformance::run_all(s.clone(), &format!("qd{}", std::process::id())).await;
    conformance::run_hybrid(s, &format!("qd{}", std::process::id())).await;
}

/// A collection made before lexical search (one dense vector, no sparse one) still serves
/// vector search, and lexical or hybrid search on it is a clear 400, not a server error.
#[tokio::test]
#[ignore = "needs a Qdrant server: QDRANT_URL (scripts/test runs it when it is set)"]
async fn collections_without_a_term_index_refuse_lexical_search() {
    let cfg = config();
    use qdrant_client::qdrant::{CreateCollectionBuilder, Distance, VectorParamsBuilder};
    let raw = qdrant_client::Qdrant::from_url(&cfg.url)
        .api_key(cfg.api_key.clone())
        .skip_compatibility_check()
        .build()
        .unwrap();
    let name = format!("qd{}-legacy", std::process::id());
    let _ = raw.delete_collection(name.as_str()).await;
    raw.create_collection(
        CreateCollectionBuilder::new(&name)
            .vectors_config(VectorParamsBuilder::new(3, Distance::Cosine)),
    )
    .await
    .unwrap();
    let store = QdrantStore::connect(cfg).await.unwrap();
    let spec = CollectionSpec::new(&name, 3, Metric::Cosine);
    store.ensure_collection(&spec).await.unwrap();
    let mut meta = serde_json::Map::new();
    meta.insert("_text".into(), json!("the S_IFCHR constant"));
    store
        .upsert(&name, vec![Record::new("a", vec![1.0, 0.0, 0.0], meta)])
        .await
        .unwrap();
    let hits = store
        .search(&name, &[SearchRequest::new(vec![1.0, 0.0, 0.0], 3)])
        .await
        .unwrap();
    assert_eq!(hits[0][0].id, "a");
    assert_eq!(
        hits[0][0].metadata.as_ref().unwrap()["_text"],
        "the S_IFCHR constant"
    );
    for mode in [SearchMode::Lexical, SearchMode::Hybrid] {
        let r = SearchRequest::new(vec![1.0, 0.0, 0.0], 3).with_text(mode, "S_IFCHR");
        let err = store.search(&name, &[r]).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains("term index"), "{err}");
    }
    assert!(store.drop_collection(&name).await.unwrap());
}

#[tokio::test]
#[ignore = "needs a Qdrant server: QDRANT_URL (scripts/test runs it when it is set)"]
async fn clients_share_state_and_metadata_round_trips() {
    let cfg = config();
    let a = QdrantStore::connect(cfg.clone()).await.unwrap();
    let b = QdrantStore::connect(cfg).await.unwrap();
    let name = format!("qd{}-shared", std::process::id());
    let _ = a.drop_collection(&name).await;
    a.create_collection(&CollectionSpec::new(&name, 3, Metric::L2))
        .await
        .unwrap();
    let meta = json!({"title": "x", "n": 2.5, "big": 9007199254740991i64, "nested": {"k": [1, "two", null]}, "none": null});
    b.upsert(
        &name,
        vec![Record::new(
            "doc/with spaces#0",
            vec![1.0, 2.0, 3.0],
            meta.as_object().unwrap().clone(),
        )],
    )
    .await
    .unwrap();
    let hits = a
        .search(&name, &[SearchRequest::new(vec![1.0, 2.0, 3.0], 1)])
        .await
        .unwrap();
    assert_eq!(hits[0][0].id, "doc/with spaces#0");
    assert_eq!(
        hits[0][0].metadata.as_ref().unwrap(),
        meta.as_object().unwrap()
    );
    let got = a.get(&name, &["doc/with spaces#0".into()]).await.unwrap();
    assert_eq!(got[0].vector, vec![1.0, 2.0, 3.0]);
    assert_eq!(a.collection(&name).await.unwrap().count, 1);
    assert!(b.drop_collection(&name).await.unwrap());
    assert_eq!(
        a.count(&name, None).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

/// No server at the address: `Unavailable`, after the connect timeout (no Qdrant needed).
#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    let mut down = QdrantConfig::new("http://127.0.0.1:1");
    down.connect_timeout = Duration::from_secs(2);
    let err = QdrantStore::connect(down).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
}

/// A server that requires a key refuses a wrong one: `Unavailable`, and the key is not echoed.
/// scripts/test runs it when `QDRANT_URL` and `QDRANT_API_KEY` are both set.
#[tokio::test]
#[ignore = "needs a Qdrant server with an API key: QDRANT_URL and QDRANT_API_KEY"]
async fn a_wrong_key_is_unavailable() {
    let mut wrong = config();
    assert!(
        wrong.api_key.is_some(),
        "QDRANT_API_KEY is the key the server at QDRANT_URL requires"
    );
    wrong.api_key = Some("not-the-key".into());
    let err = match QdrantStore::connect(wrong).await {
        Err(e) => e,
        Ok(s) => s.list_collections().await.unwrap_err(),
    };
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(!err.to_string().contains("not-the-key"));
}
