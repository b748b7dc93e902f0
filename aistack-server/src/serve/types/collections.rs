//! Collections, documents and search (`/v1/collections/...`).

use aistack_core::ingest::DocHit;
use aistack_core::store::CollectionInfo;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// `POST /v1/collections` request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCollection {
    /// 1 to 64 ASCII letters, digits, `_` or `-`, starting with a letter or digit.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
    pub name: String,
    /// Vector dimensions of a collection for vectors only, of any model: nothing is recorded
    /// about the model. Without `dims`, the collection takes the served model's vectors and
    /// records the model and its prompts: texts are then refused by any other model.
    #[schema(minimum = 1, maximum = 65536)]
    pub dims: Option<usize>,
    /// Keep only the first `dimensions` of the served model's vectors, normalized again
    /// (Matryoshka models); the model is recorded as without `dims`. Not with `dims`.
    #[schema(minimum = 1)]
    pub dimensions: Option<usize>,
    /// `cosine` (default), `dot` or `l2`.
    #[schema(pattern = "^(cosine|dot|l2)$")]
    pub metric: Option<String>,
    /// How text becomes terms for lexical search: `english` (default: stop words dropped,
    /// words stemmed) or `simple` (every word as it is, lowercased: for code and identifiers).
    #[schema(pattern = "^(english|simple)$")]
    pub analyzer: Option<String>,
}

/// A collection as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CollectionView {
    /// Its name.
    pub name: String,
    /// Vector dimensions.
    pub dims: usize,
    /// `cosine`, `dot` or `l2`.
    pub metric: String,
    /// `english` or `simple`.
    pub analyzer: String,
    /// Records (chunks) held.
    pub count: u64,
    /// The model and prompts its texts are embedded with, where recorded; texts from another
    /// model, or with other prompts, are refused with 409.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding: Option<EmbeddingView>,
}

/// The model a collection's texts are embedded with.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EmbeddingView {
    /// The model's name.
    pub model: String,
    /// The model's output width (the collection's `dims` may keep fewer).
    pub model_dims: usize,
    /// Text prepended to queries, if any.
    pub query_prompt: Option<String>,
    /// Text prepended to documents, if any.
    pub document_prompt: Option<String>,
}

impl From<CollectionInfo> for CollectionView {
    fn from(c: CollectionInfo) -> Self {
        Self {
            name: c.spec.name,
            dims: c.spec.dims,
            metric: c.spec.metric.as_str().to_string(),
            analyzer: c.spec.analyzer.as_str().to_string(),
            count: c.count,
            embedding: c.spec.embedding.map(|o| EmbeddingView {
                model: o.model,
                model_dims: o.model_dims,
                query_prompt: o.query_prompt,
                document_prompt: o.document_prompt,
            }),
        }
    }
}

/// `GET /v1/collections` response.
#[derive(Debug, Serialize, ToSchema)]
pub struct CollectionList {
    /// Every collection.
    pub collections: Vec<CollectionView>,
}

/// `DELETE /v1/collections/{name}` response.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    /// Whether something was deleted.
    pub deleted: bool,
    /// Records removed, where counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records: Option<u64>,
}

/// One document to ingest.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DocumentIn {
    /// Unique within the collection; re-sending an id replaces that document.
    #[schema(min_length = 1, max_length = 400)]
    pub id: String,
    /// The text (not blank); it is split into chunks that fit the model.
    #[schema(min_length = 1, pattern = "\\S")]
    pub text: String,
    /// Filterable metadata (keys starting with `_` are reserved).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
}

/// `POST /v1/collections/{name}/documents` request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IngestRequest {
    /// The documents; all are checked before any is written.
    #[schema(min_items = 1)]
    pub documents: Vec<DocumentIn>,
}

/// What an ingest did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IngestResult {
    /// Documents written.
    pub documents: usize,
    /// Chunks written.
    pub chunks: usize,
    /// Stale chunks of replaced documents removed.
    pub removed: u64,
}

/// `POST /v1/collections/{name}/search` request: exactly one of `query` and `vector` (`query`
/// in the `lexical` and `hybrid` modes).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    /// Text to search for (embedded as a query; analyzed into terms for lexical search).
    #[schema(min_length = 1, pattern = "\\S")]
    pub query: Option<String>,
    /// A query vector with the collection's dimensions (vector mode only).
    #[schema(min_items = 1)]
    pub vector: Option<Vec<f32>>,
    /// `vector` (default: nearest by meaning), `lexical` (BM25 over the chunks' text: exact
    /// terms, identifiers) or `hybrid` (both, fused by reciprocal rank).
    #[schema(pattern = "^(vector|lexical|hybrid)$")]
    pub mode: Option<String>,
    /// How a hybrid search fuses its two ranked lists.
    pub fusion: Option<FusionBody>,
    /// Hits wanted (default 10; at most `server.max_search_k`).
    #[schema(minimum = 1)]
    pub k: Option<usize>,
    /// A metadata filter in the JSON filter language (`$eq`, `$in`, `$and`, ...).
    #[schema(value_type = Object)]
    pub filter: Option<Value>,
    /// Only hits whose vector score is at least this (not in lexical mode).
    pub min_score: Option<f32>,
}

/// Reciprocal rank fusion settings: a hit scores `Σ weight / (rrf_k + rank)` over the arms that
/// found it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FusionBody {
    /// Default 60.
    #[schema(minimum = 0, maximum = 1000000)]
    pub rrf_k: Option<f64>,
    /// Weight of the vector arm (default 1).
    #[schema(minimum = 0, maximum = 1000000)]
    pub vector_weight: Option<f64>,
    /// Weight of the lexical arm (default 1).
    #[schema(minimum = 0, maximum = 1000000)]
    pub lexical_weight: Option<f64>,
    /// Candidates from the vector arm (default `max(k, 50)`).
    #[schema(minimum = 1, maximum = 10000)]
    pub vector_depth: Option<usize>,
    /// Candidates from the lexical arm (default `max(k, 50)`).
    #[schema(minimum = 1, maximum = 10000)]
    pub lexical_depth: Option<usize>,
}

impl FusionBody {
    /// The core's fusion settings, defaults filled in (checked by the store).
    pub fn to_fusion(&self) -> aistack_core::store::Fusion {
        let d = aistack_core::store::Fusion::default();
        aistack_core::store::Fusion {
            rrf_k: self.rrf_k.unwrap_or(d.rrf_k),
            vector_weight: self.vector_weight.unwrap_or(d.vector_weight),
            lexical_weight: self.lexical_weight.unwrap_or(d.lexical_weight),
            vector_depth: self.vector_depth,
            lexical_depth: self.lexical_depth,
        }
    }
}

/// One search hit: a chunk of a document.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SearchHit {
    /// The chunk's id (`{document id}#{chunk index}`).
    pub id: String,
    /// The document it belongs to.
    pub document_id: String,
    /// Higher is better: the vector score, the lexical score, or the fused score (hybrid).
    pub score: f32,
    /// Rank (from 1) in the vector arm, where it found this hit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector_rank: Option<u32>,
    /// Rank (from 1) in the lexical arm, where it found this hit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lexical_rank: Option<u32>,
    /// The chunk's text.
    pub text: String,
    /// The document's metadata.
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
}

impl From<&DocHit> for SearchHit {
    fn from(h: &DocHit) -> Self {
        Self {
            id: h.id.clone(),
            document_id: h.document_id.clone(),
            score: h.score,
            vector_rank: h.vector_rank,
            lexical_rank: h.lexical_rank,
            text: h.text.clone(),
            metadata: h.metadata.clone(),
        }
    }
}

/// `POST /v1/collections/{name}/search` response.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SearchResult {
    /// Best first.
    pub hits: Vec<SearchHit>,
}
