//! Ingest rate against the raw embedding rate of the same chunks, on real documents: every
//! `.txt`/`.md` file under a folder (docs/benchmarks.md names the corpus used). Prints JSON.
//!
//! Usage: `ingest-rate FOLDER`

use std::sync::Arc;
use std::time::Instant;

use aistack_benches::{model_dir, uncached_embedder};
use aistack_core::embed::{Embedder, InputKind};
use aistack_core::ingest::{Document, Ingestor};
use aistack_core::store::{EmbeddedStore, VectorStore};
use serde_json::Map;

#[tokio::main]
async fn main() {
    let folder = std::env::args().nth(1).expect("usage: ingest-rate FOLDER");
    let mut docs = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(&folder)
        .expect("folder")
        .map(|e| e.unwrap().path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("txt" | "md")))
        .collect();
    paths.sort();
    for p in paths {
        docs.push(Document {
            id: p.display().to_string(),
            text: std::fs::read_to_string(&p).unwrap(),
            metadata: Map::new(),
        });
    }
    let embedder = uncached_embedder(model_dir()).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn VectorStore> = Arc::new(EmbeddedStore::open(dir.path()).await.unwrap());
    let ing = Ingestor::new(embedder.clone(), store.clone(), None, 0).unwrap();
    ing.ensure_collection("bench").await.unwrap();

    let t = Instant::now();
    let mut chunks = 0;
    for batch in docs.chunks(32) {
        chunks += ing.ingest("bench", batch.to_vec()).await.unwrap().chunks;
    }
    let ingest_s = t.elapsed().as_secs_f64();

    // The same chunk texts, embedded raw: 32 per request, two requests in flight.
    let mut texts = Vec::with_capacity(chunks);
    for d in &docs {
        let f = aistack_core::store::Filter::from_json(&serde_json::json!({"_doc": d.id})).unwrap();
        let n = store.count("bench", Some(&f)).await.unwrap();
        let ids: Vec<String> = (0..n).map(|i| format!("{}#{i}", d.id)).collect();
        for r in store.get("bench", &ids).await.unwrap() {
            texts.push(r.metadata["_text"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(texts.len(), chunks);
    let t = Instant::now();
    for pair in texts.chunks(64) {
        let calls = pair
            .chunks(32)
            .map(|b| embedder.embed(b, InputKind::Passage));
        for r in futures::future::join_all(calls).await {
            r.unwrap();
        }
    }
    let raw_s = t.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "documents": docs.len(),
            "chunks": chunks,
            "ingest_documents_per_s": docs.len() as f64 / ingest_s,
            "ingest_chunks_per_s": chunks as f64 / ingest_s,
            "raw_embed_chunks_per_s": chunks as f64 / raw_s,
            "ingest_vs_raw": raw_s / ingest_s,
        })
    );
}
