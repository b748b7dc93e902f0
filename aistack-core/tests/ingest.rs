//! Ingestion and text search with the real model, on the embedded store and on pgvector:
//! chunking, re-import without orphans, delete, filters, cache invalidation, refused input.

use std::sync::Arc;
use std::time::Duration;

use aistack_core::config::{CacheSettings, EmbedSettings};
use aistack_core::embed::{Embedder, EmbeddingEngine, ModelEmbedder};
use aistack_core::ingest::{Document, Ingestor, DOC_KEY};
use aistack_core::store::{EmbeddedStore, Filter, VectorStore};
use aistack_core::ErrorKind;
use aistack_testing::{model_dir, reference};
use serde_json::{json, Value};

async fn embedder() -> Arc<ModelEmbedder> {
    EmbeddingEngine::start(
        EmbedSettings {
            model: model_dir().display().to_string(),
            request_timeout_ms: 600_000,
            ..EmbedSettings::default()
        },
        CacheSettings::default(),
    )
    .wait_ready(Some(Duration::from_secs(120)))
    .await
    .unwrap()
}

fn doc(id: &str, text: &str, meta: Value) -> Document {
    Document {
        id: id.into(),
        text: text.into(),
        metadata: meta.as_object().cloned().unwrap_or_default(),
    }
}

async fn exercise(store: Arc<dyn VectorStore>, collection: &str) {
    let e = embedder().await;
    let ing = Ingestor::new(e.clone(), store.clone(), None, 1000).unwrap();
    let _ = store.drop_collection(collection).await;
    ing.ensure_collection(collection).await.unwrap();
    let refs = reference();
    // Three long topic bodies (over 256 tokens each), joined into one long document.
    let long: Vec<String> = refs
        .iter()
        .filter(|r| r.tokens >= 256)
        .take(3)
        .map(|r| r.text.clone())
        .collect();
    let long_text = long.join("\n\n");
    let docs = vec![
        doc("long", &long_text, json!({"kind": "topic", "year": 2024})),
        doc(
            "cats",
            "Cats are small domesticated carnivorous mammals that purr.",
            json!({"kind": "animal", "year": 2020}),
        ),
        doc(
            "rust",
            "Rust is a systems programming language focused on safety and speed.",
            json!({"kind": "language", "year": 2015}),
        ),
    ];
    let report = ing.ingest(collection, docs.clone()).await.unwrap();
    assert_eq!(report.documents, 3);
    assert!(
        report.chunks >= 5,
        "the long document was split: {report:?}"
    );
    assert_eq!(
        store.count(collection, None).await.unwrap(),
        report.chunks as u64
    );

    // Every chunk fits the model (no truncation) and the chunks cover the document in order.
    let long_chunks = store
        .count(
            collection,
            Some(&Filter::from_json(&json!({ DOC_KEY: "long" })).unwrap()),
        )
        .await
        .unwrap();
    let ids: Vec<String> = (0..long_chunks).map(|i| format!("long#{i}")).collect();
    let recs = store.get(collection, &ids).await.unwrap();
    assert_eq!(recs.len() as u64, long_chunks);
    let texts: Vec<String> = recs
        .iter()
        .map(|r| r.metadata["_text"].as_str().unwrap().to_string())
        .collect();
    for n in e.count_tokens(&texts).unwrap() {
        assert!(n <= 256, "a chunk of {n} tokens would be truncated");
    }
    assert!(long_text.starts_with(&texts[0]));
    assert!(long_text.ends_with(texts.last().unwrap().as_str()));

    // Search finds the right document, with its text and metadata.
    let hits = ing
        .search(collection, "a purring pet animal", 2, None, None)
        .await
        .unwrap();
    assert_eq!(hits[0].document_id, "cats");
    assert_eq!(hits[0].id, "cats#0");
    assert_eq!(hits[0].chunk_index, 0);
    assert!(hits[0].text.contains("purr"));
    assert_eq!(hits[0].metadata["kind"], json!("animal"));
    assert!(!hits[0].metadata.contains_key(DOC_KEY));
    let filter = json!({"year": {"$lt": 2018}});
    let hits = ing
        .search(collection, "a purring pet animal", 5, Some(&filter), None)
        .await
        .unwrap();
    assert!(hits.iter().all(|h| h.document_id == "rust"), "{hits:?}");

    // The same search again is served from the cache; a write invalidates it.
    let before = ing.cache_stats();
    ing.search(collection, "a purring pet animal", 2, None, None)
        .await
        .unwrap();
    assert_eq!(ing.cache_stats().hits, before.hits + 1);
    ing.ingest(
        collection,
        vec![doc(
            "dogs",
            "Dogs are loyal animals that bark and purr never.",
            json!({"kind": "animal"}),
        )],
    )
    .await
    .unwrap();
    let hits = ing
        .search(collection, "a purring pet animal", 5, None, None)
        .await
        .unwrap();
    assert_eq!(
        ing.cache_stats().hits,
        before.hits + 1,
        "a miss after the write"
    );
    assert!(hits.iter().any(|h| h.document_id == "dogs"));

    // Re-importing a shorter version replaces its chunks and leaves no orphans.
    let report = ing
        .ingest(
            collection,
            vec![doc("long", &long[0][..400], json!({"kind": "topic"}))],
        )
        .await
        .unwrap();
    assert_eq!(report.chunks, 1);
    assert_eq!(report.removed, long_chunks - 1);
    let f = Filter::from_json(&json!({ DOC_KEY: "long" })).unwrap();
    assert_eq!(store.count(collection, Some(&f)).await.unwrap(), 1);
    assert!(store
        .get(collection, &["long#1".into()])
        .await
        .unwrap()
        .is_empty());

    // Metadata of exactly the limit is taken.
    let fits = doc("fits", "A short note.", json!({"b": "m".repeat(8192 - 8)}));
    ing.ingest(collection, vec![fits]).await.unwrap();
    assert_eq!(ing.delete_document(collection, "fits").await.unwrap(), 1);

    // Deleting a document deletes its chunks only.
    assert_eq!(ing.delete_document(collection, "long").await.unwrap(), 1);
    assert_eq!(store.count(collection, Some(&f)).await.unwrap(), 0);
    assert_eq!(store.count(collection, None).await.unwrap(), 3);

    // Bad documents are refused and nothing is written.
    let bad: Vec<(Vec<Document>, &str)> = vec![
        (
            vec![doc("ok", "fine", json!({})), doc("empty", "  ", json!({}))],
            "text is empty",
        ),
        (vec![doc("x", "text", json!({"_doc": "spoof"}))], "reserved"),
        (
            vec![doc("twice", "a", json!({})), doc("twice", "b", json!({}))],
            "appears twice",
        ),
        (vec![doc("", "text", json!({}))], "id"),
        // Metadata is bounded (every chunk carries it): the attack's 900 KB, and one byte over.
        (
            vec![doc(
                "big",
                &"words and more words. ".repeat(4_500),
                json!({"blob": "m".repeat(900_000)}),
            )],
            "at most 8192",
        ),
        (
            vec![doc("over", "text", json!({"b": "m".repeat(8192 - 8 + 1)}))],
            "8193 bytes",
        ),
    ];
    for (docs, want) in bad {
        let err = ing.ingest(collection, docs).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().contains(want), "{err} / {want}");
    }
    assert_eq!(store.count(collection, None).await.unwrap(), 3);
    let err = ing
        .search(collection, " ", 3, None, None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let err = ing
        .search(
            collection,
            "q",
            3,
            Some(&json!({"year": {"$near": 1}})),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(e.dims(), 384);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_and_search_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn VectorStore> = Arc::new(EmbeddedStore::open(dir.path()).await.unwrap());
    exercise(store, "docs").await;
}

#[cfg(feature = "pgvector")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_and_search_on_pgvector() {
    use aistack_core::store::{PgConfig, PgVectorStore};
    let dsn = aistack_testing::pg_dsn();
    let store: Arc<dyn VectorStore> =
        Arc::new(PgVectorStore::connect(PgConfig::new(dsn)).await.unwrap());
    exercise(store, &format!("ingest{}", std::process::id())).await;
}
