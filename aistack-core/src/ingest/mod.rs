//! Document ingestion and text search: documents `{id, text, metadata}` are chunked by the
//! embedding model's tokens, embedded in batches and upserted; search embeds a query and returns
//! chunks with their document. Results are cached per collection until the next write to it.
//!
//! Chunk ids derive from the document id (`{id}#{index}`), so re-importing a document replaces
//! its chunks and removes the ones it no longer has, and deleting a document deletes them all.
//! Each chunk's metadata is the document's, plus the reserved keys `_doc`, `_chunk` and `_text`.

mod chunk;
mod collection;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

pub use chunk::{chunk_text, Chunk, ChunkConfig};
pub use collection::{TextCollection, TextHit, TextRecord};

use crate::cache::{Cache, CacheBound, CacheConfig, CacheStats, Epochs};
use crate::embed::{embed_all, embed_query, Embedder, InputKind};
use crate::error::{Error, Result};
use crate::store::{
    validate_id, CollectionSpec, Filter, Fusion, Metric, Record, SearchMode, SearchRequest,
    VectorStore, MAX_UPSERT_BATCH,
};

/// Metadata key holding a chunk's document id.
pub const DOC_KEY: &str = "_doc";
/// Metadata key holding a chunk's index in its document.
pub const CHUNK_KEY: &str = "_chunk";
/// Metadata key holding a chunk's text (the key lexical search indexes).
pub use crate::store::TEXT_KEY;

/// Most bytes of a document's metadata, as compact JSON. Every chunk of the document carries
/// it (so filters and hits see it), so this bounds what one document can store beyond its text
/// and vectors: at most this much per chunk of about 1 KB of text.
pub const MAX_METADATA_BYTES: usize = 8 * 1024;

/// A document to ingest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// Unique in the collection; 1 to 400 bytes.
    pub id: String,
    /// The text; must not be empty.
    pub text: String,
    /// Filterable metadata; keys must not start with `_`.
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

/// One search result: a chunk and its document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocHit {
    /// The chunk's id (`{document_id}#{chunk_index}`).
    pub id: String,
    /// The document the chunk belongs to.
    pub document_id: String,
    /// The chunk's position in its document.
    pub chunk_index: u64,
    /// The chunk's text.
    pub text: String,
    /// The document's metadata.
    pub metadata: Map<String, Value>,
    /// Higher is better (the fused score, in hybrid mode).
    pub score: f32,
    /// Rank (from 1) in the vector arm, where the vector arm found it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector_rank: Option<u32>,
    /// Rank (from 1) in the lexical arm, where the lexical arm found it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lexical_rank: Option<u32>,
}

/// How a text search runs, beyond its query and `k`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchOptions {
    /// Vector (the default), lexical (BM25) or hybrid.
    pub mode: SearchMode,
    /// Only chunks whose metadata passes (the JSON filter form).
    pub filter: Option<Value>,
    /// Only hits whose vector score is at least this (vector and hybrid).
    pub min_score: Option<f32>,
    /// How hybrid search fuses its arms.
    pub fusion: Fusion,
}

impl SearchOptions {
    /// Vector search with an optional filter and score bound (what `search` does).
    pub fn vector(filter: Option<&Value>, min_score: Option<f32>) -> Self {
        Self {
            filter: filter.cloned(),
            min_score,
            ..Self::default()
        }
    }
}

/// What an ingest call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct IngestReport {
    /// Documents written.
    pub documents: usize,
    /// Chunks written.
    pub chunks: usize,
    /// Stale chunks removed from earlier versions of the documents.
    pub removed: u64,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct SearchKey {
    collection: String,
    epoch: u64,
    query: String,
    k: usize,
    filter: String,
    min_score: Option<u32>,
    mode: SearchMode,
    fusion: [u64; 5],
}

/// Ingests documents into a vector store and searches them by text.
pub struct Ingestor {
    embedder: Arc<dyn Embedder>,
    store: Arc<dyn VectorStore>,
    chunking: ChunkConfig,
    epochs: Epochs,
    cache: Cache<SearchKey, Arc<Vec<DocHit>>>,
    /// Collections' specs, checked against the model, for a few seconds (see `text_spec`).
    specs: moka::sync::Cache<String, Arc<CollectionSpec>>,
}

impl std::fmt::Debug for Ingestor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingestor")
            .field("model", &self.embedder.model_id())
            .field("store", &self.store.backend())
            .field("chunking", &self.chunking)
            .finish()
    }
}

/// Embedding calls in flight at once during an ingest: two, so one is tokenized and queued while
/// the other computes, without putting many long chunks ahead of each call's deadline.
const IN_FLIGHT: usize = 2;

impl Ingestor {
    /// An ingestor over `store` with `embedder`; `chunking` defaults to the model's input size
    /// with 32 tokens of overlap. The search cache holds `search_cache_entries` results.
    pub fn new(
        embedder: Arc<dyn Embedder>,
        store: Arc<dyn VectorStore>,
        chunking: Option<ChunkConfig>,
        search_cache_entries: u64,
    ) -> Result<Self> {
        let chunking = chunking.unwrap_or(ChunkConfig {
            max_tokens: embedder.max_input_tokens().saturating_sub(2).max(8),
            overlap_tokens: 32.min(embedder.max_input_tokens() / 4),
        });
        chunking.validate()?;
        if chunking.max_tokens + 2 > embedder.max_input_tokens() {
            return Err(Error::invalid(format!(
                "chunks of {} tokens do not fit the model's {} input tokens",
                chunking.max_tokens,
                embedder.max_input_tokens()
            )));
        }
        Ok(Self {
            embedder,
            store,
            chunking,
            epochs: Epochs::new(),
            cache: Cache::new(
                CacheConfig {
                    bound: CacheBound::Entries(search_cache_entries),
                    ttl: Some(Duration::from_secs(300)),
                },
                |_, _| 1,
            ),
            specs: moka::sync::Cache::builder()
                .max_capacity(4096)
                .time_to_live(SPEC_TTL)
                .build(),
        })
    }

    /// The store documents go to.
    pub fn store(&self) -> &Arc<dyn VectorStore> {
        &self.store
    }

    /// The embedder used for chunks and queries.
    pub fn embedder(&self) -> &Arc<dyn Embedder> {
        &self.embedder
    }

    /// Creates the collection (cosine, the model's dimensions, the English analyzer, the model
    /// and prompts recorded) if it does not exist; an existing one of any analyzer is used as it
    /// is, unless it was embedded by another model or with other prompts (`Conflict`).
    pub async fn ensure_collection(&self, name: &str) -> Result<()> {
        // Read afresh: the collection may have been dropped or made again elsewhere.
        self.specs.invalidate(name);
        match self.text_spec(name).await {
            // Recorded and admitted: whatever its width (Matryoshka) or analyzer.
            Ok(spec) if spec.embedding.is_some() => return Ok(()),
            Err(e) if e.kind() != crate::error::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let spec = CollectionSpec::new(name, self.embedder.dims(), Metric::Cosine)
            .with_embedding(Some(self.embedder.origin().clone()));
        ensure_any_analyzer(self.store.as_ref(), spec).await?;
        self.text_spec(name).await.map(drop)
    }

    /// The collection's spec, checked against this ingestor's model: a `Conflict` when its
    /// texts were embedded by another model or with other prompts. Read without counting
    /// records, and kept for [`SPEC_TTL`] (dropping or creating the collection through this
    /// ingestor forgets it at once).
    pub async fn text_spec(&self, collection: &str) -> Result<Arc<CollectionSpec>> {
        if let Some(spec) = self.specs.get(collection) {
            return Ok(spec);
        }
        let epoch = self.epochs.current(collection);
        let spec = Arc::new(self.store.collection_spec(collection).await?);
        if let Some(origin) = &spec.embedding {
            origin.admit(collection, self.embedder.origin())?;
        }
        // A drop or write through this ingestor while it was read may have made it stale.
        if self.epochs.current(collection) == epoch {
            self.specs.insert(collection.to_string(), spec.clone());
        }
        Ok(spec)
    }

    fn check(doc: &Document, i: usize) -> Result<()> {
        validate_id(&doc.id).map_err(|e| Error::invalid(format!("document {i}: {e}")))?;
        if doc.id.len() > 400 {
            return Err(Error::invalid(format!(
                "document {i}: id is longer than 400 bytes"
            )));
        }
        if doc.text.trim().is_empty() {
            return Err(Error::invalid(format!(
                "document {i} ({}): text is empty",
                doc.id
            )));
        }
        let meta_bytes = serde_json::to_vec(&doc.metadata).map_or(usize::MAX, |v| v.len());
        if meta_bytes > MAX_METADATA_BYTES {
            return Err(Error::invalid(format!(
                "document {i} ({}): metadata is {meta_bytes} bytes as JSON; at most {MAX_METADATA_BYTES} are allowed (every chunk carries it)",
                doc.id
            )));
        }
        if let Some(k) = doc.metadata.keys().find(|k| k.starts_with('_')) {
            return Err(Error::invalid(format!(
                "document {i} ({}): metadata key {k:?} is reserved (keys starting with _)",
                doc.id
            )));
        }
        Ok(())
    }

    /// Chunks, embeds and upserts `docs`. Every document is checked before anything is written,
    /// and the whole call is one write: the new chunks go in and the documents' stale chunks go
    /// out together, so a document is never missing, half replaced or half written.
    pub async fn ingest(&self, collection: &str, docs: Vec<Document>) -> Result<IngestReport> {
        for (i, d) in docs.iter().enumerate() {
            Self::check(d, i)?;
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(d) = docs.iter().find(|d| !seen.insert(d.id.as_str())) {
            return Err(Error::invalid(format!(
                "document id {:?} appears twice in one request",
                d.id
            )));
        }
        // Chunk everything first (cheap), then embed in batches across documents.
        let mut chunked: Vec<(usize, Vec<Chunk>)> = Vec::with_capacity(docs.len());
        for (i, d) in docs.iter().enumerate() {
            let spans = self.embedder.token_spans(&d.text)?;
            chunked.push((i, chunk_text(&d.text, &spans, &self.chunking)));
        }
        let texts: Vec<String> = chunked
            .iter()
            .flat_map(|(_, cs)| cs.iter().map(|c| c.text.clone()))
            .collect();
        // One request is one write, of at most MAX_UPSERT_BATCH records: refused before any
        // embedding is computed.
        if texts.len() > MAX_UPSERT_BATCH {
            return Err(Error::invalid(format!(
                "these documents make {} chunks; one request may make at most {MAX_UPSERT_BATCH} (send fewer documents at a time)",
                texts.len()
            )));
        }
        let spec = self.text_spec(collection).await?;
        let vectors = embed_all(
            self.embedder.as_ref(),
            &texts,
            InputKind::Passage,
            IN_FLIGHT,
        )
        .await?;
        let vectors: Vec<Vec<f32>> = vectors.into_iter().map(|v| fit(&spec, v)).collect();

        let mut report = IngestReport::default();
        let mut vectors = vectors.into_iter();
        let mut records: Vec<Record> = Vec::with_capacity(texts.len());
        for (i, chunks) in chunked {
            let doc = &docs[i];
            for c in &chunks {
                let mut m = doc.metadata.clone();
                m.insert(DOC_KEY.into(), Value::from(doc.id.clone()));
                m.insert(CHUNK_KEY.into(), Value::from(c.index as u64));
                m.insert(TEXT_KEY.into(), Value::from(c.text.clone()));
                records.push(Record::new(
                    format!("{}#{}", doc.id, c.index),
                    vectors.next().unwrap_or_default(),
                    m,
                ));
            }
            report.documents += 1;
            report.chunks += chunks.len();
        }
        // Every chunk of the request and the removal of the documents' older chunks are one
        // write: after a failure or a crash, the request is applied whole or not at all.
        let ids: Vec<Value> = docs.iter().map(|d| Value::from(d.id.clone())).collect();
        let stale = Filter::from_json(&json!({ DOC_KEY: { "$in": ids } }))?;
        let result = self.store.replace(collection, records, &stale).await;
        self.epochs.bump(collection);
        report.removed = result?;
        Ok(report)
    }

    /// Deletes a document's chunks; returns how many there were.
    pub async fn delete_document(&self, collection: &str, id: &str) -> Result<u64> {
        let f = Filter::from_json(&json!({ DOC_KEY: id }))?;
        let n = self.store.delete_where(collection, &f).await?;
        self.epochs.bump(collection);
        Ok(n)
    }

    /// The `k` chunks nearest to `query`, best first, optionally filtered by metadata. Served from
    /// the cache until the collection is next written through this ingestor.
    pub async fn search(
        &self,
        collection: &str,
        query: &str,
        k: usize,
        filter: Option<&Value>,
        min_score: Option<f32>,
    ) -> Result<Arc<Vec<DocHit>>> {
        self.search_with(
            collection,
            query,
            k,
            &SearchOptions::vector(filter, min_score),
        )
        .await
    }

    /// The best `k` chunks for `query` in the mode `opts` names: nearest by vector, by BM25
    /// over the chunks' text (no embedding, so it works while the model loads), or both fused.
    /// Cached like [`Ingestor::search`].
    pub async fn search_with(
        &self,
        collection: &str,
        query: &str,
        k: usize,
        opts: &SearchOptions,
    ) -> Result<Arc<Vec<DocHit>>> {
        // A bad filter is refused before the query is embedded (or the model is even ready).
        let parsed = opts.filter.as_ref().map(Filter::from_json).transpose()?;
        let f = &opts.fusion;
        let key = SearchKey {
            collection: collection.to_string(),
            epoch: self.epochs.current(collection),
            query: query.to_string(),
            k,
            filter: opts
                .filter
                .as_ref()
                .map(|f| f.to_string())
                .unwrap_or_default(),
            min_score: opts.min_score.map(f32::to_bits),
            mode: opts.mode,
            fusion: [
                f.rrf_k.to_bits(),
                f.vector_weight.to_bits(),
                f.lexical_weight.to_bits(),
                f.vector_depth.map_or(0, |d| d as u64 + 1),
                f.lexical_depth.map_or(0, |d| d as u64 + 1),
            ],
        };
        if let Some(hit) = self.cache.get(&key) {
            return Ok(hit);
        }
        let v = if opts.mode.uses_vector() {
            let spec = self.text_spec(collection).await?;
            fit(&spec, embed_query(self.embedder.as_ref(), query).await?)
        } else {
            Vec::new()
        };
        let hits = run_search(
            self.store.as_ref(),
            collection,
            v,
            Some(query),
            k,
            parsed,
            opts,
        )
        .await?;
        let hits = Arc::new(hits.into_iter().map(doc_hit).collect::<Vec<_>>());
        self.cache.insert(key, hits.clone());
        Ok(hits)
    }

    /// The `k` chunks nearest to a query vector, best first, optionally filtered by metadata.
    /// The vector is checked like any other (dimensions, NaN, infinity); not cached.
    pub async fn search_vector(
        &self,
        collection: &str,
        vector: Vec<f32>,
        k: usize,
        filter: Option<&Value>,
        min_score: Option<f32>,
    ) -> Result<Vec<DocHit>> {
        let filter = filter.map(Filter::from_json).transpose()?;
        let hits = nearest(
            self.store.as_ref(),
            collection,
            vector,
            k,
            filter,
            min_score,
        )
        .await?;
        Ok(hits.into_iter().map(doc_hit).collect())
    }

    /// Forgets cached searches of `collection` (after it was written or dropped elsewhere).
    pub fn invalidate(&self, collection: &str) {
        self.epochs.bump(collection);
        self.specs.invalidate(collection);
    }

    /// Search cache counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }
}

/// How long a checked collection spec is reused before it is read again: a collection dropped
/// and made again by another model through another server is refused within this time.
pub const SPEC_TTL: Duration = Duration::from_secs(10);

/// A model's vector as a collection keeps it: a collection that records the model and keeps
/// fewer dimensions than it makes (Matryoshka) gets the leading ones, normalized again.
pub(crate) fn fit(spec: &CollectionSpec, mut v: Vec<f32>) -> Vec<f32> {
    if spec.embedding.is_some() && spec.dims < v.len() {
        v.truncate(spec.dims);
        crate::embed::normalize(&mut v);
    }
    v
}

/// Ensures a collection like `spec`, accepting an existing one whatever its analyzer (dims and
/// metric must match): text front ends create with the default analyzer but use any. One store
/// call when the collection is as asked (the ingest path); the lookup only follows a conflict.
pub(crate) async fn ensure_any_analyzer(
    store: &dyn VectorStore,
    spec: CollectionSpec,
) -> Result<()> {
    match store.ensure_collection(&spec).await {
        Err(e) if e.kind() == crate::error::ErrorKind::Conflict => {
            let info = store.collection(&spec.name).await?;
            if info.spec.dims == spec.dims && info.spec.metric == spec.metric {
                Ok(())
            } else {
                Err(e)
            }
        }
        other => other,
    }
}

/// The one vector search of the text front ends: the `k` records nearest to `vector` in
/// `collection`, filtered by `filter` and `min_score`, best first.
pub(crate) async fn nearest(
    store: &dyn VectorStore,
    collection: &str,
    vector: Vec<f32>,
    k: usize,
    filter: Option<Filter>,
    min_score: Option<f32>,
) -> Result<Vec<crate::store::Hit>> {
    let opts = SearchOptions::vector(None, min_score);
    run_search(store, collection, vector, None, k, filter, &opts).await
}

/// The one search of the text front ends, in any mode: `vector` for the vector arm (empty in
/// lexical mode), `text` for the lexical arm.
pub(crate) async fn run_search(
    store: &dyn VectorStore,
    collection: &str,
    vector: Vec<f32>,
    text: Option<&str>,
    k: usize,
    filter: Option<Filter>,
    opts: &SearchOptions,
) -> Result<Vec<crate::store::Hit>> {
    let mut req = SearchRequest::new(vector, k);
    req.mode = opts.mode;
    if opts.mode.uses_text() {
        req.text = text.map(str::to_string);
    }
    req.fusion = opts.fusion;
    req.filter = filter;
    req.min_score = opts.min_score;
    Ok(store
        .search(collection, &[req])
        .await?
        .pop()
        .unwrap_or_default())
}

fn doc_hit(h: crate::store::Hit) -> DocHit {
    let mut m = h.metadata.unwrap_or_default();
    let document_id = match m.remove(DOC_KEY) {
        Some(Value::String(s)) => s,
        _ => String::new(),
    };
    let chunk_index = m.remove(CHUNK_KEY).and_then(|v| v.as_u64()).unwrap_or(0);
    let text = match m.remove(TEXT_KEY) {
        Some(Value::String(s)) => s,
        _ => String::new(),
    };
    DocHit {
        id: h.id,
        document_id,
        chunk_index,
        text,
        metadata: m,
        score: h.score,
        vector_rank: h.vector_rank,
        lexical_rank: h.lexical_rank,
    }
}
