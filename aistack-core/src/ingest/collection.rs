//! A collection of texts, one record per id, shaped after Chroma's collections: upsert ids with
//! documents (embedded as passages) or with vectors, query by text or vector with a metadata
//! filter, get, delete, count. Records carry their text and id under the reserved keys the
//! ingestor uses, so they read like one-chunk documents to the server's search.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::{SearchOptions, CHUNK_KEY, DOC_KEY, TEXT_KEY};
use crate::embed::{embed_all, embed_query, Embedder, InputKind};
use crate::error::{Error, Result};
use crate::store::{CollectionSpec, Filter, Metric, Record, VectorStore};

/// One result of [`TextCollection::query`].
#[derive(Debug, Clone, PartialEq)]
pub struct TextHit {
    /// The record's id.
    pub id: String,
    /// Higher is better.
    pub score: f32,
    /// The record's text, if it was stored with one.
    pub document: Option<String>,
    /// The caller's metadata (reserved keys removed).
    pub metadata: Map<String, Value>,
    /// Rank (from 1) in the vector arm, where the vector arm found it.
    pub vector_rank: Option<u32>,
    /// Rank (from 1) in the lexical arm, where the lexical arm found it.
    pub lexical_rank: Option<u32>,
}

/// One record as [`TextCollection::get`] returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct TextRecord {
    /// The record's id.
    pub id: String,
    /// The record's text, if it was stored with one.
    pub document: Option<String>,
    /// The caller's metadata (reserved keys removed).
    pub metadata: Map<String, Value>,
    /// The stored vector (normalized in a cosine collection).
    pub vector: Vec<f32>,
}

/// A collection in a store, with the embedder that turns its texts into vectors.
#[derive(Clone)]
pub struct TextCollection {
    store: Arc<dyn VectorStore>,
    embedder: Option<Arc<dyn Embedder>>,
    spec: CollectionSpec,
}

impl std::fmt::Debug for TextCollection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextCollection")
            .field("spec", &self.spec)
            .finish()
    }
}

impl TextCollection {
    /// Opens an existing collection; `NotFound` if there is none. Without an embedder only
    /// vectors can be upserted and queried.
    pub async fn open(
        store: Arc<dyn VectorStore>,
        name: &str,
        embedder: Option<Arc<dyn Embedder>>,
    ) -> Result<Self> {
        let spec = store.collection_spec(name).await?;
        if let (Some(e), Some(origin)) = (&embedder, &spec.embedding) {
            origin.admit(name, e.origin())?;
        } else if let Some(e) = &embedder {
            if e.dims() != spec.dims {
                return Err(Error::invalid(format!(
                    "collection {name:?} holds {}-dimensional vectors; the embedder {} makes {}",
                    spec.dims,
                    e.model_id(),
                    e.dims()
                )));
            }
        }
        Ok(Self {
            store,
            embedder,
            spec,
        })
    }

    /// Opens the collection, creating it first if needed. Dimensions default to the embedder's;
    /// an existing collection with other dimensions or metric is a `Conflict`.
    pub async fn open_or_create(
        store: Arc<dyn VectorStore>,
        name: &str,
        embedder: Option<Arc<dyn Embedder>>,
        dims: Option<usize>,
        metric: Metric,
    ) -> Result<Self> {
        // A collection that records this embedder's model is used as it is, whatever width it
        // keeps (Matryoshka), when no width is asked for.
        if let (None, Some(_)) = (dims, &embedder) {
            if let Ok(spec) = store.collection_spec(name).await {
                if spec.embedding.is_some() && spec.metric == metric {
                    return Self::open(store, name, embedder).await;
                }
            }
        }
        let dims = match (dims, &embedder) {
            (Some(d), _) => d,
            (None, Some(e)) => e.dims(),
            (None, None) => {
                return Err(Error::invalid(
                    "a new collection needs its dimensions or an embedder",
                ))
            }
        };
        // The model is recorded when its vectors (or their leading dimensions) fill it.
        let origin = embedder
            .as_ref()
            .filter(|e| dims <= e.dims())
            .map(|e| e.origin().clone());
        let spec = CollectionSpec::new(name, dims, metric).with_embedding(origin);
        super::ensure_any_analyzer(store.as_ref(), spec).await?;
        Self::open(store, name, embedder).await
    }

    /// The collection's name, dimensions and metric.
    pub fn spec(&self) -> &CollectionSpec {
        &self.spec
    }

    fn embedder(&self) -> Result<&Arc<dyn Embedder>> {
        self.embedder.as_ref().ok_or_else(|| {
            Error::invalid("this collection has no embedder: pass vectors, or open it with one")
        })
    }

    /// Embeds `texts` in groups the embedder accepts, one group at a time (a caller's bulk
    /// upsert never queues ahead of its own deadline).
    async fn embed(&self, texts: &[String], kind: InputKind) -> Result<Vec<Vec<f32>>> {
        let vectors = embed_all(self.embedder()?.as_ref(), texts, kind, 1).await?;
        Ok(vectors
            .into_iter()
            .map(|v| super::fit(&self.spec, v))
            .collect())
    }

    /// Inserts or replaces records. Give `documents` (embedded as passages), `vectors`, or
    /// both (then the vectors are stored and the texts kept). Everything is checked before
    /// anything is written.
    pub async fn upsert(
        &self,
        ids: Vec<String>,
        documents: Option<Vec<String>>,
        vectors: Option<Vec<Vec<f32>>>,
        metadatas: Option<Vec<Map<String, Value>>>,
    ) -> Result<()> {
        let n = ids.len();
        let same = |what: &str, len: usize| {
            if len == n {
                Ok(())
            } else {
                Err(Error::invalid(format!(
                    "{n} ids but {len} {what}: give one per id"
                )))
            }
        };
        if let Some(d) = &documents {
            same("documents", d.len())?;
        }
        if let Some(v) = &vectors {
            same("embeddings", v.len())?;
        }
        if let Some(m) = &metadatas {
            same("metadatas", m.len())?;
            for (i, meta) in m.iter().enumerate() {
                if let Some(k) = meta.keys().find(|k| k.starts_with('_')) {
                    return Err(Error::invalid(format!(
                        "metadata {i}: key {k:?} is reserved (keys starting with _)"
                    )));
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = ids.iter().find(|id| !seen.insert(id.as_str())) {
            return Err(Error::invalid(format!(
                "id {dup:?} appears twice in one upsert"
            )));
        }
        let vectors = match (vectors, &documents) {
            (Some(v), _) => v,
            (None, Some(d)) => self.embed(d, InputKind::Passage).await?,
            (None, None) => return Err(Error::invalid("an upsert needs documents or embeddings")),
        };
        let mut metadatas = metadatas.unwrap_or_else(|| vec![Map::new(); n]);
        let mut documents = documents.map(|d| d.into_iter().map(Some).collect::<Vec<_>>());
        let records = ids
            .into_iter()
            .zip(vectors)
            .enumerate()
            .map(|(i, (id, vector))| {
                let mut meta = std::mem::take(&mut metadatas[i]);
                meta.insert(DOC_KEY.into(), Value::String(id.clone()));
                meta.insert(CHUNK_KEY.into(), Value::from(0));
                if let Some(text) = documents.as_mut().and_then(|d| d[i].take()) {
                    meta.insert(TEXT_KEY.into(), Value::String(text));
                }
                Record::new(id, vector, meta)
            })
            .collect();
        self.store.upsert(&self.spec.name, records).await
    }

    /// The `k` records nearest to `text` (embedded as a query), best first.
    pub async fn query(
        &self,
        text: &str,
        k: usize,
        filter: Option<&Value>,
        min_score: Option<f32>,
    ) -> Result<Vec<TextHit>> {
        self.query_with(text, k, &SearchOptions::vector(filter, min_score))
            .await
    }

    /// The best `k` records for `text` in the mode `opts` names (vector, lexical or hybrid);
    /// lexical search does not embed the query.
    pub async fn query_with(
        &self,
        text: &str,
        k: usize,
        opts: &SearchOptions,
    ) -> Result<Vec<TextHit>> {
        let filter = opts.filter.as_ref().map(Filter::from_json).transpose()?;
        let v = if opts.mode.uses_vector() {
            super::fit(
                &self.spec,
                embed_query(self.embedder()?.as_ref(), text).await?,
            )
        } else {
            Vec::new()
        };
        let hits = super::run_search(
            self.store.as_ref(),
            &self.spec.name,
            v,
            Some(text),
            k,
            filter,
            opts,
        )
        .await?;
        Ok(hits.into_iter().map(text_hit).collect())
    }

    /// The `k` records nearest to `vector`, best first.
    pub async fn query_vector(
        &self,
        vector: Vec<f32>,
        k: usize,
        filter: Option<&Value>,
        min_score: Option<f32>,
    ) -> Result<Vec<TextHit>> {
        let filter = filter.map(Filter::from_json).transpose()?;
        let hits = super::nearest(
            self.store.as_ref(),
            &self.spec.name,
            vector,
            k,
            filter,
            min_score,
        )
        .await?;
        Ok(hits.into_iter().map(text_hit).collect())
    }

    /// The records with these ids, in the order asked; missing ids are left out.
    pub async fn get(&self, ids: &[String]) -> Result<Vec<TextRecord>> {
        let found = self.store.get(&self.spec.name, ids).await?;
        let mut by_id: std::collections::HashMap<String, Record> =
            found.into_iter().map(|r| (r.id.clone(), r)).collect();
        Ok(ids
            .iter()
            .filter_map(|id| by_id.remove(id))
            .map(|r| {
                let (document, metadata) = split(r.metadata);
                TextRecord {
                    id: r.id,
                    document,
                    metadata,
                    vector: r.vector,
                }
            })
            .collect())
    }

    /// Deletes the records with these ids; returns how many there were.
    pub async fn delete(&self, ids: &[String]) -> Result<u64> {
        self.store.delete(&self.spec.name, ids).await
    }

    /// Deletes the records whose metadata passes `filter`; returns how many there were.
    pub async fn delete_where(&self, filter: &Value) -> Result<u64> {
        let f = Filter::from_json(filter)?;
        self.store.delete_where(&self.spec.name, &f).await
    }

    /// Records held, or those passing `filter`.
    pub async fn count(&self, filter: Option<&Value>) -> Result<u64> {
        let f = filter.map(Filter::from_json).transpose()?;
        self.store.count(&self.spec.name, f.as_ref()).await
    }
}

fn text_hit(h: crate::store::Hit) -> TextHit {
    let (document, metadata) = split(h.metadata.unwrap_or_default());
    TextHit {
        id: h.id,
        score: h.score,
        document,
        metadata,
        vector_rank: h.vector_rank,
        lexical_rank: h.lexical_rank,
    }
}

/// The text and the caller's metadata of a stored record's metadata.
fn split(mut meta: Map<String, Value>) -> (Option<String>, Map<String, Value>) {
    let document = match meta.remove(TEXT_KEY) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    meta.retain(|k, _| !k.starts_with('_'));
    (document, meta)
}
