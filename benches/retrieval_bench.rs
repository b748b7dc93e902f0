//! Retrieval quality of vector, lexical and hybrid search, on every backend at hand: the
//! CPython 3.11 standard-library docstring corpus of `benches/retrieval/` (3,456 documents) and
//! its 106 judged queries (natural-language questions and exact terms). Documents are ingested
//! (chunked and embedded with the real model) into the embedded store once; the same chunks and
//! vectors are copied into pgvector (and Qdrant, given a URL). Each query takes the best 50
//! chunks, keeps each document's best chunk, and scores the first 10 documents: nDCG@10 (binary
//! relevance) and recall@10, per query kind. Prints one JSON object per backend and mode.
//!
//! Usage: `retrieval-bench [--corpus FILE] [--queries FILE] [--pg-dsn DSN] [--qdrant-url URL]
//! [--dump FILE]` (`--dump` writes each query's first 10 documents per backend and mode)
//! (the corpus defaults to `benches/retrieval/corpus.jsonl`, written by
//! `python3 benches/retrieval/make_corpus.py benches/retrieval/corpus.jsonl`).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aistack_benches::model_dir;
use aistack_core::config::{CacheSettings, EmbedSettings};
use aistack_core::embed::EmbeddingEngine;
use aistack_core::ingest::{Document, Ingestor, SearchOptions};
use aistack_core::store::{
    CollectionSpec, EmbeddedStore, Filter, Metric, PgConfig, PgVectorStore, SearchMode, VectorStore,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};

#[derive(Deserialize)]
struct CorpusDoc {
    id: String,
    text: String,
}

#[derive(Deserialize)]
struct Query {
    id: String,
    kind: String,
    query: String,
    relevant: Vec<String>,
}

fn read_jsonl<T: for<'a> Deserialize<'a>>(path: &PathBuf) -> Vec<T> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (write it with `python3 benches/retrieval/make_corpus.py {}`)",
            path.display(),
            path.display()
        )
    });
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// Chunks searched per query; each document counts once, at its best chunk.
const CHUNKS: usize = 50;
const CUTOFF: usize = 10;

/// nDCG@10 and recall@10 of one ranked document list.
fn score(ranked: &[String], relevant: &HashSet<&str>) -> (f64, f64) {
    let top = &ranked[..ranked.len().min(CUTOFF)];
    let dcg: f64 = top
        .iter()
        .enumerate()
        .filter(|(_, d)| relevant.contains(d.as_str()))
        .map(|(i, _)| 1.0 / (i as f64 + 2.0).log2())
        .sum();
    let ideal: f64 = (0..relevant.len().min(CUTOFF))
        .map(|i| 1.0 / (i as f64 + 2.0).log2())
        .sum();
    let found = top.iter().filter(|d| relevant.contains(d.as_str())).count();
    (dcg / ideal, found as f64 / relevant.len() as f64)
}

/// Runs every query in `mode` through `ing` and averages the figures per query kind; each
/// query's first 10 documents go to `dump` (one JSON line per query) when given.
async fn evaluate(
    ing: &Ingestor,
    collection: &str,
    queries: &[Query],
    mode: SearchMode,
    mut dump: Option<(&str, &mut std::fs::File)>,
) -> Value {
    let opts = SearchOptions {
        mode,
        ..SearchOptions::default()
    };
    let mut sums: HashMap<String, (f64, f64, usize)> = HashMap::new();
    let started = Instant::now();
    for q in queries {
        let hits = ing
            .search_with(collection, &q.query, CHUNKS, &opts)
            .await
            .unwrap();
        let mut seen = HashSet::new();
        let ranked: Vec<String> = hits
            .iter()
            .filter(|h| seen.insert(h.document_id.clone()))
            .map(|h| h.document_id.clone())
            .collect();
        let relevant: HashSet<&str> = q.relevant.iter().map(String::as_str).collect();
        let (ndcg, recall) = score(&ranked, &relevant);
        if let Some((backend, f)) = dump.as_mut() {
            use std::io::Write;
            let top = &ranked[..ranked.len().min(CUTOFF)];
            let line = json!({"backend": backend, "mode": mode.as_str(), "query": q.id,
                "text": q.query, "ndcg@10": ndcg, "top": top});
            writeln!(f, "{line}").unwrap();
        }
        for kind in [q.kind.as_str(), "all"] {
            let e = sums.entry(kind.to_string()).or_default();
            e.0 += ndcg;
            e.1 += recall;
            e.2 += 1;
        }
    }
    let ms = started.elapsed().as_secs_f64() * 1000.0 / queries.len() as f64;
    let mut out = Map::new();
    for (kind, (n, r, c)) in sums {
        out.insert(
            kind,
            json!({"ndcg@10": n / c as f64, "recall@10": r / c as f64, "queries": c}),
        );
    }
    out.insert("mean_ms_per_query".into(), json!(ms));
    Value::Object(out)
}

/// Copies every chunk of `docs` from `from` into `to` (same ids, vectors and metadata).
async fn copy(from: &dyn VectorStore, to: &dyn VectorStore, collection: &str, docs: &[CorpusDoc]) {
    let mut ids = Vec::new();
    for d in docs {
        let f = Filter::from_json(&json!({"_doc": d.id})).unwrap();
        let n = from.count(collection, Some(&f)).await.unwrap();
        ids.extend((0..n).map(|i| format!("{}#{i}", d.id)));
    }
    for batch in ids.chunks(500) {
        let records = from.get(collection, batch).await.unwrap();
        assert_eq!(records.len(), batch.len());
        to.upsert(collection, records).await.unwrap();
    }
}

#[tokio::main]
async fn main() {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("retrieval");
    let mut corpus = here.join("corpus.jsonl");
    let mut queries_path = here.join("queries.jsonl");
    let mut pg_dsn = std::env::var("AISTACK_TEST_PG_DSN").ok();
    let mut qdrant_url = std::env::var("QDRANT_URL").ok().filter(|u| !u.is_empty());
    let mut dump: Option<std::fs::File> = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--corpus" => corpus = value.into(),
            "--queries" => queries_path = value.into(),
            "--pg-dsn" => pg_dsn = Some(value),
            "--qdrant-url" => qdrant_url = Some(value),
            "--dump" => dump = Some(std::fs::File::create(value).unwrap()),
            other => panic!("unknown flag {other}"),
        }
    }
    let docs: Vec<CorpusDoc> = read_jsonl(&corpus);
    let queries: Vec<Query> = read_jsonl(&queries_path);
    let known: HashSet<&str> = docs.iter().map(|d| d.id.as_str()).collect();
    for q in &queries {
        for r in &q.relevant {
            assert!(
                known.contains(r.as_str()),
                "{}: {r} is not in the corpus",
                q.id
            );
        }
    }
    let embedder = EmbeddingEngine::start(
        EmbedSettings {
            model: model_dir(),
            request_timeout_ms: 3_600_000,
            ..EmbedSettings::default()
        },
        CacheSettings::default(),
    )
    .wait_ready(Some(Duration::from_secs(300)))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let embedded: Arc<dyn VectorStore> = Arc::new(EmbeddedStore::open(dir.path()).await.unwrap());
    let ing = Ingestor::new(embedder.clone(), embedded.clone(), None, 0).unwrap();
    let collection = "pydocs";
    ing.ensure_collection(collection).await.unwrap();
    let started = Instant::now();
    let mut chunks = 0;
    for batch in docs.chunks(64) {
        let batch = batch
            .iter()
            .map(|d| Document {
                id: d.id.clone(),
                text: d.text.clone(),
                metadata: Map::new(),
            })
            .collect();
        chunks += ing.ingest(collection, batch).await.unwrap().chunks;
    }
    println!(
        "{}",
        json!({"corpus": {"documents": docs.len(), "chunks": chunks, "queries": queries.len(),
            "ingest_s": started.elapsed().as_secs_f64()}})
    );
    let mut backends: Vec<(&str, Arc<dyn VectorStore>)> = vec![("embedded", embedded.clone())];
    let pg = match pg_dsn {
        Some(dsn) => Some(
            Arc::new(PgVectorStore::connect(PgConfig::new(dsn)).await.unwrap())
                as Arc<dyn VectorStore>,
        ),
        None => None,
    };
    let qdrant = match qdrant_url {
        Some(url) => Some(Arc::new(
            aistack_core::store::QdrantStore::connect(aistack_core::store::QdrantConfig::new(url))
                .await
                .unwrap(),
        ) as Arc<dyn VectorStore>),
        None => None,
    };
    for (name, store, missing) in [
        ("pgvector", pg, "no --pg-dsn and no AISTACK_TEST_PG_DSN"),
        ("qdrant", qdrant, "no --qdrant-url and no QDRANT_URL"),
    ] {
        let Some(store) = store else {
            println!("{}", json!({name: format!("skipped: {missing}")}));
            continue;
        };
        let _ = store.drop_collection(collection).await;
        store
            .create_collection(&CollectionSpec::new(collection, 384, Metric::Cosine))
            .await
            .unwrap();
        copy(embedded.as_ref(), store.as_ref(), collection, &docs).await;
        backends.push((name, store));
    }
    for (name, store) in backends {
        let ing = Ingestor::new(embedder.clone(), store.clone(), None, 0).unwrap();
        for mode in [SearchMode::Vector, SearchMode::Lexical, SearchMode::Hybrid] {
            let d = dump.as_mut().map(|f| (name, f));
            let v = evaluate(&ing, collection, &queries, mode, d).await;
            println!(
                "{}",
                json!({"backend": name, "mode": mode.as_str(), "results": v})
            );
        }
        if name != "embedded" {
            store.drop_collection(collection).await.unwrap();
        }
    }
}
