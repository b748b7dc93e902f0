//! Vector stores: one [`VectorStore`] API over several backends. Stores take vectors, not text;
//! embedding sits above them. The embedded store ([`EmbeddedStore`]) is the default and needs no
//! server.
//!
//! Scores are "higher is better" on every backend and metric: cosine similarity for `cosine`,
//! the dot product for `dot`, and the negated Euclidean distance for `l2`.

pub mod analyzer;
mod embedded;
pub mod filter;
pub mod hybrid;
mod open;
#[cfg(feature = "pgvector")]
mod postgres;
#[cfg(feature = "qdrant")]
mod qdrant;
mod resilient;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use analyzer::Analyzer;
/// Entry points of the fuzz targets (`fuzz/`): not part of the API.
#[doc(hidden)]
pub use embedded::fuzz;
pub use embedded::{AnnConfig, EmbeddedStore, IndexPrecision, IndexStatus};
pub use filter::Filter;
pub use hybrid::{Fusion, SearchMode};
pub use open::{OpenedStore, StoreConfig};

/// A connection pool's figures, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections open.
    pub size: u32,
    /// Connections open and idle.
    pub idle: usize,
}
#[cfg(feature = "pgvector")]
pub use postgres::{PgConfig, PgVectorStore};
#[cfg(feature = "qdrant")]
pub use qdrant::{QdrantConfig, QdrantStore};
pub use resilient::ResilientStore;

use crate::error::{Error, Result};

/// How vectors are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Cosine similarity; vectors are normalized on the way in.
    Cosine,
    /// Dot product.
    Dot,
    /// Euclidean distance (scored as its negation).
    L2,
}

impl Metric {
    /// The metric's name as used in APIs and files.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::Dot => "dot",
            Metric::L2 => "l2",
        }
    }

    /// Parses `cosine`, `dot` or `l2`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "cosine" => Ok(Metric::Cosine),
            "dot" => Ok(Metric::Dot),
            "l2" => Ok(Metric::L2),
            other => Err(Error::invalid(format!(
                "unknown metric {other:?} (cosine, dot or l2)"
            ))),
        }
    }

    /// The score of `candidate` against `query` (both already prepared for this metric).
    pub fn score(self, query: &[f32], candidate: &[f32]) -> f32 {
        match self {
            // Unit vectors: rounding may put the dot product a hair past ±1, and a cosine
            // similarity outside [-1, 1] breaks callers that map it to a relevance.
            Metric::Cosine => dot(query, candidate).clamp(-1.0, 1.0),
            Metric::Dot => dot(query, candidate),
            Metric::L2 => -l2_squared(query, candidate).sqrt(),
        }
    }
}

/// Lanes of the distance kernels: 32 independent sums, so the additions are not one long
/// dependency chain (four AVX registers, or eight SSE ones). The order of additions is the same
/// on every CPU, so scores are bit-equal whichever copy runs.
const LANES: usize = 32;

/// Compiles a distance kernel twice, for AVX2 (chosen at run time) and for the baseline target.
/// No FMA: a fused multiply-add rounds differently, and scores must not depend on the CPU.
macro_rules! kernel {
    ($(#[$doc:meta])* fn $name:ident / $fast:ident ($a:ident, $b:ident) $body:block) => {
        $(#[$doc])*
        pub fn $name($a: &[f32], $b: &[f32]) -> f32 {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2, the one feature this copy was compiled for.
                return unsafe { $fast($a, $b) };
            }
            $body
        }
        /// # Safety
        /// Callable only where the CPU has AVX2 (checked by the caller).
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        unsafe fn $fast($a: &[f32], $b: &[f32]) -> f32 $body
    };
}

mod kernels {
    use super::LANES;

    /// `Σ term(a[i], b[i])` over [`LANES`] running sums, added up in one fixed order. Inlined
    /// into each kernel copy, so it is compiled with that copy's features.
    #[inline(always)]
    fn lane_sum(a: &[f32], b: &[f32], term: impl Fn(f32, f32) -> f32) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [0f32; LANES];
        let mut ca = a.chunks_exact(LANES);
        let mut cb = b.chunks_exact(LANES);
        for (x, y) in (&mut ca).zip(&mut cb) {
            for j in 0..LANES {
                acc[j] += term(x[j], y[j]);
            }
        }
        let mut s = 0f32;
        for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
            s += term(*x, *y);
        }
        acc.iter().sum::<f32>() + s
    }

    kernel! {
        /// The dot product of two equally long vectors.
        fn dot / dot_avx2 (a, b) {
            lane_sum(a, b, |x, y| x * y)
        }
    }

    kernel! {
        /// The squared Euclidean distance of two equally long vectors.
        fn l2_squared / l2_squared_avx2 (a, b) {
            lane_sum(a, b, |x, y| (x - y) * (x - y))
        }
    }
}

pub use kernels::dot;
use kernels::l2_squared;

/// Metadata key holding a record's text: what lexical search indexes (a string; records
/// without one are found by vector search only).
pub const TEXT_KEY: &str = "_text";

/// Which model made a collection's text vectors, and with which prompts: recorded when a text
/// front end creates the collection, so that later writes and searches by another model, or
/// with other prompts, are refused instead of mixing vectors that cannot be compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingOrigin {
    /// The model's name, for messages (a Hub id or a directory's name).
    pub model: String,
    /// The model's output width; the collection may keep fewer (Matryoshka: cut, then normalize).
    pub model_dims: usize,
    /// Text prepended to queries (`None`: nothing).
    #[serde(default)]
    pub query_prompt: Option<String>,
    /// Text prepended to documents.
    #[serde(default)]
    pub document_prompt: Option<String>,
    /// The model's identity: the first [`PROBE_DIMS`] values of its normalized embedding of
    /// [`PROBE_TEXT`]. Two loads of the same weights agree to rounding on any CPU; different
    /// models (or a fine-tune of one) do not.
    pub probe: Vec<f32>,
}

/// The text whose embedding identifies a model ([`EmbeddingOrigin::probe`]).
pub const PROBE_TEXT: &str = "aistack records which model embedded a collection by this sentence.";
/// How many leading values of the probe embedding are kept.
pub const PROBE_DIMS: usize = 32;
/// Cosine between two probes above which they are the same model.
const SAME_MODEL_COSINE: f32 = 0.999;

impl EmbeddingOrigin {
    /// Whether `current` may write to and search a collection recorded with `self`; if not, a
    /// `Conflict` that says what differs and what to do.
    pub fn admit(&self, collection: &str, current: &EmbeddingOrigin) -> Result<()> {
        let cos = probe_cosine(&self.probe, &current.probe);
        if self.model == current.model
            && self.model_dims == current.model_dims
            && cos < SAME_MODEL_COSINE
        {
            return Err(Error::Conflict(format!(
                "collection {collection:?} was embedded by a model named {} whose weights differ from this server's {} (another revision or fine-tune: their vectors agree at cosine {cos:.3} on a probe sentence): use the weights it was made with, or ingest into another collection",
                self.model, current.model
            )));
        }
        if self.model_dims != current.model_dims || cos < SAME_MODEL_COSINE {
            return Err(Error::Conflict(format!(
                "collection {collection:?} was embedded by the model {} ({} dimensions); this server embeds with {} ({} dimensions), whose vectors cannot be compared with them: use that model, or ingest into another collection",
                self.model, self.model_dims, current.model, current.model_dims
            )));
        }
        let differs = |what: &str, kept: &Option<String>, now: &Option<String>, setting: &str| {
            if kept == now {
                return Ok(());
            }
            // No prompt is the empty one, which is also how the setting says so.
            let show = |p: &Option<String>| format!("{:?}", p.as_deref().unwrap_or(""));
            Err(Error::Conflict(format!(
                "collection {collection:?} was embedded with the {what} prompt {}; this server's is {}: set embed.{setting} to {} to use it",
                show(kept),
                show(now),
                show(kept)
            )))
        };
        differs(
            "query",
            &self.query_prompt,
            &current.query_prompt,
            "query_prefix",
        )?;
        differs(
            "document",
            &self.document_prompt,
            &current.document_prompt,
            "passage_prefix",
        )
    }
}

fn probe_cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        return 0.0;
    }
    (ab / (aa.sqrt() * bb.sqrt())) as f32
}

/// A collection's name, size, metric and text analyzer, and the model that embeds its texts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionSpec {
    /// 1 to 64 characters: ASCII letters, digits, `_` and `-`, starting with a letter or digit.
    pub name: String,
    /// Vector dimensions (1 to 65,536).
    pub dims: usize,
    /// How vectors are compared.
    pub metric: Metric,
    /// How the records' text becomes terms for lexical search (English by default).
    #[serde(default)]
    pub analyzer: Analyzer,
    /// The model and prompts its texts are embedded with, where a text front end created it
    /// (`None`: vectors only, or a collection made before this was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<EmbeddingOrigin>,
}

impl CollectionSpec {
    /// A spec with the default (English) analyzer, unchecked until used.
    pub fn new(name: impl Into<String>, dims: usize, metric: Metric) -> Self {
        Self {
            name: name.into(),
            dims,
            metric,
            analyzer: Analyzer::default(),
            embedding: None,
        }
    }

    /// The same spec recording the model and prompts its texts are embedded with.
    pub fn with_embedding(mut self, origin: Option<EmbeddingOrigin>) -> Self {
        self.embedding = origin;
        self
    }

    /// The same spec with another analyzer.
    pub fn with_analyzer(mut self, analyzer: Analyzer) -> Self {
        self.analyzer = analyzer;
        self
    }

    /// Whether `other` describes the same collection shape: name, dims, metric and analyzer
    /// (the recorded embedding origin is checked by the text front ends, with a tolerance).
    pub fn same_shape(&self, other: &CollectionSpec) -> bool {
        self.name == other.name
            && self.dims == other.dims
            && self.metric == other.metric
            && self.analyzer == other.analyzer
    }

    /// Checks the name and dimensions.
    pub fn validate(&self) -> Result<()> {
        validate_collection_name(&self.name)?;
        if self.dims == 0 || self.dims > 65_536 {
            return Err(Error::invalid(format!(
                "collection dims must be 1 to 65536, got {}",
                self.dims
            )));
        }
        if let Some(o) = &self.embedding {
            if self.dims > o.model_dims || o.probe.iter().any(|x| !x.is_finite()) {
                return Err(Error::invalid(format!(
                    "collection of {} dims cannot keep the {}-dimensional output of {}",
                    self.dims, o.model_dims, o.model
                )));
            }
        }
        Ok(())
    }
}

/// Checks a collection name (safe as a file name, a SQL identifier part and a Qdrant name).
pub fn validate_collection_name(name: &str) -> Result<()> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "collection name {name:?} is invalid: 1 to 64 ASCII letters, digits, _ or -, starting with a letter or digit"
        )))
    }
}

/// A collection as it is now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionInfo {
    /// Name, dims and metric.
    #[serde(flatten)]
    pub spec: CollectionSpec,
    /// Records held.
    pub count: u64,
}

/// A stored record: an id, a vector and its metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Unique within the collection; 1 to 512 bytes.
    pub id: String,
    /// The vector (normalized, in a cosine collection).
    pub vector: Vec<f32>,
    /// Metadata: a JSON object, filterable.
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

impl Record {
    /// A record with metadata.
    pub fn new(id: impl Into<String>, vector: Vec<f32>, metadata: Map<String, Value>) -> Self {
        Self {
            id: id.into(),
            vector,
            metadata,
        }
    }
}

/// One query of a batched search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchRequest {
    /// How hits are ranked: by vector (the default), by BM25 over the text, or both fused.
    pub mode: SearchMode,
    /// The query vector (not used, and may be empty, in `lexical` mode).
    pub vector: Vec<f32>,
    /// The query text, for the `lexical` and `hybrid` modes (analyzed as the collection's text).
    pub text: Option<String>,
    /// How a hybrid search fuses its arms.
    pub fusion: Fusion,
    /// How many hits at most (1 to 10,000).
    pub k: usize,
    /// Only records whose metadata passes.
    pub filter: Option<Filter>,
    /// Only hits whose vector score is at least this (vector and hybrid modes: it bounds the
    /// vector arm).
    pub min_score: Option<f32>,
    /// Return each hit's metadata.
    pub with_metadata: bool,
    /// Return each hit's vector.
    pub with_vector: bool,
}

impl SearchRequest {
    /// The `k` nearest to `vector`, with metadata, no filter.
    pub fn new(vector: Vec<f32>, k: usize) -> Self {
        Self {
            mode: SearchMode::Vector,
            vector,
            text: None,
            fusion: Fusion::default(),
            k,
            filter: None,
            min_score: None,
            with_metadata: true,
            with_vector: false,
        }
    }

    /// The same request in another mode with query text (for `lexical` and `hybrid`).
    pub fn with_text(mut self, mode: SearchMode, text: impl Into<String>) -> Self {
        self.mode = mode;
        self.text = Some(text.into());
        self
    }

    /// A copy of this request as one arm of a hybrid search: `mode`, `k` candidates.
    pub fn arm(&self, mode: SearchMode, k: usize) -> Self {
        Self {
            mode,
            k,
            min_score: if mode == SearchMode::Vector {
                self.min_score
            } else {
                None
            },
            ..self.clone()
        }
    }
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    /// The record's id.
    pub id: String,
    /// Higher is better: the vector score (see the module docs), the backend's lexical score
    /// (BM25, or `ts_rank_cd` on PostgreSQL), or the fused score of a hybrid search.
    pub score: f32,
    /// The hit's rank (from 1) in the vector arm, where it was found there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector_rank: Option<u32>,
    /// The hit's rank (from 1) in the lexical arm, where it was found there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lexical_rank: Option<u32>,
    /// The metadata, when asked for.
    pub metadata: Option<Map<String, Value>>,
    /// The vector, when asked for.
    pub vector: Option<Vec<f32>>,
}

/// The vector-store API every backend implements. Usable as `Arc<dyn VectorStore>`.
#[async_trait]
pub trait VectorStore: Send + Sync {
    /// The backend's name (`embedded`, `pgvector`, `qdrant`).
    fn backend(&self) -> &'static str;

    /// Open and idle connections of the backend's connection pool, where it has one.
    fn pool_stats(&self) -> Option<PoolStats> {
        None
    }

    /// Creates a collection; `Conflict` if one of that name exists.
    async fn create_collection(&self, spec: &CollectionSpec) -> Result<()>;

    /// Creates the collection if missing; `Conflict` if it exists with other dims or metric.
    async fn ensure_collection(&self, spec: &CollectionSpec) -> Result<()>;

    /// Every collection, sorted by name.
    async fn list_collections(&self) -> Result<Vec<CollectionInfo>>;

    /// One collection; `NotFound` if missing.
    async fn collection(&self, name: &str) -> Result<CollectionInfo>;

    /// One collection's spec, without counting its records (what the text front ends check on
    /// their hot paths); `NotFound` if missing.
    async fn collection_spec(&self, name: &str) -> Result<CollectionSpec> {
        Ok(self.collection(name).await?.spec)
    }

    /// Drops a collection and its records; `false` if it did not exist.
    async fn drop_collection(&self, name: &str) -> Result<bool>;

    /// Inserts or replaces records by id, all or none. A retried call never duplicates.
    async fn upsert(&self, collection: &str, records: Vec<Record>) -> Result<()>;

    /// The records with these ids that exist, in the order asked.
    async fn get(&self, collection: &str, ids: &[String]) -> Result<Vec<Record>>;

    /// Deletes by id; returns how many existed.
    async fn delete(&self, collection: &str, ids: &[String]) -> Result<u64>;

    /// Deletes every record the filter matches; returns how many.
    async fn delete_where(&self, collection: &str, filter: &Filter) -> Result<u64>;

    /// Upserts `records` and deletes every other record `stale` matches, as one write: after a
    /// failure or a crash either all of it is visible or none. Returns how many were deleted.
    async fn replace(&self, collection: &str, records: Vec<Record>, stale: &Filter) -> Result<u64>;

    /// Records held, or those the filter matches.
    async fn count(&self, collection: &str, filter: Option<&Filter>) -> Result<u64>;

    /// Whether writes work: an error (a full or read-only disk, say) while they fail for a
    /// reason reads do not share. Backends that report such failures only per write say `Ok`.
    async fn check_writable(&self) -> Result<()> {
        Ok(())
    }

    /// Runs each request; hits best first, equal scores in id order (byte order).
    async fn search(&self, collection: &str, requests: &[SearchRequest]) -> Result<Vec<Vec<Hit>>>;
}

/// Most records in one upsert call.
pub const MAX_UPSERT_BATCH: usize = 10_000;
/// Largest `k`.
pub const MAX_K: usize = 10_000;

/// Checks a vector for a collection and prepares it (normalized for cosine). Wrong dimension,
/// NaN, infinity, or a zero vector in a cosine collection → `InvalidInput`.
pub fn prepare_vector(spec: &CollectionSpec, v: &mut [f32], what: &str) -> Result<()> {
    if v.len() != spec.dims {
        return Err(Error::invalid(format!(
            "{what}: vector has {} dimensions; collection {} has {}",
            v.len(),
            spec.name,
            spec.dims
        )));
    }
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(Error::invalid(format!(
            "{what}: vector element {i} is {} (only finite numbers)",
            v[i]
        )));
    }
    if spec.metric == Metric::Cosine {
        let norm = dot(v, v).sqrt();
        if norm == 0.0 || !norm.is_finite() {
            return Err(Error::invalid(format!(
                "{what}: a zero vector has no direction (cosine collection)"
            )));
        }
        v.iter_mut().for_each(|x| *x /= norm);
    }
    Ok(())
}

/// Checks a batch for upsert: size, ids, vectors. Nothing is written when this fails.
pub fn prepare_records(spec: &CollectionSpec, records: &mut [Record]) -> Result<()> {
    if records.len() > MAX_UPSERT_BATCH {
        return Err(Error::invalid(format!(
            "{} records in one upsert; the limit is {MAX_UPSERT_BATCH}",
            records.len()
        )));
    }
    for (i, r) in records.iter_mut().enumerate() {
        validate_id(&r.id).map_err(|e| Error::invalid(format!("record {i}: {e}")))?;
        prepare_vector(spec, &mut r.vector, &format!("record {i} ({})", r.id))?;
    }
    Ok(())
}

/// Checks a record id.
pub fn validate_id(id: &str) -> std::result::Result<(), String> {
    if id.is_empty() || id.len() > 512 {
        return Err(format!("id must be 1 to 512 bytes, got {}", id.len()));
    }
    if id.chars().any(|c| c.is_control()) {
        return Err("id must not contain control characters".into());
    }
    Ok(())
}

/// Checks a batch of search requests and prepares their vectors (empty for `lexical` ones).
pub fn prepare_requests(
    spec: &CollectionSpec,
    requests: &[SearchRequest],
) -> Result<Vec<Vec<f32>>> {
    if requests.is_empty() || requests.len() > 100 {
        return Err(Error::invalid(format!(
            "1 to 100 search requests per call, got {}",
            requests.len()
        )));
    }
    requests
        .iter()
        .enumerate()
        .map(|(i, r)| {
            if r.k == 0 || r.k > MAX_K {
                return Err(Error::invalid(format!(
                    "search {i}: k must be 1 to {MAX_K}, got {}",
                    r.k
                )));
            }
            if r.min_score.is_some_and(|s| !s.is_finite()) {
                return Err(Error::invalid(format!(
                    "search {i}: min_score must be finite"
                )));
            }
            if r.mode.uses_text() {
                let text = r.text.as_deref().unwrap_or("");
                if text.trim().is_empty() {
                    return Err(Error::invalid(format!(
                        "search {i}: {} search needs query text",
                        r.mode.as_str()
                    )));
                }
                if text.len() > MAX_QUERY_TEXT_BYTES {
                    return Err(Error::invalid(format!(
                        "search {i}: query text is {} bytes; the limit is {MAX_QUERY_TEXT_BYTES}",
                        text.len()
                    )));
                }
            }
            if r.mode == SearchMode::Lexical {
                if r.min_score.is_some() {
                    return Err(Error::invalid(format!(
                        "search {i}: min_score bounds the vector score; it does not apply to lexical search"
                    )));
                }
                return Ok(Vec::new());
            }
            if r.mode == SearchMode::Hybrid {
                r.fusion.validate(&format!("search {i}"))?;
            }
            let mut v = r.vector.clone();
            prepare_vector(spec, &mut v, &format!("search {i}"))?;
            Ok(v)
        })
        .collect()
}

/// Longest query text of a lexical or hybrid search, in bytes.
pub const MAX_QUERY_TEXT_BYTES: usize = 16 * 1024;

/// Orders hits best first, ties by id, so every backend returns the same order.
pub fn sort_hits(hits: &mut [Hit]) {
    hits.sort_by(|a, b| {
        b.score
            .partial_cmp(&a.score)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.id.cmp(&b.id))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(probe: Vec<f32>) -> EmbeddingOrigin {
        EmbeddingOrigin {
            model: "e5-small".into(),
            model_dims: 384,
            query_prompt: Some("query: ".into()),
            document_prompt: Some("passage: ".into()),
            probe,
        }
    }

    #[test]
    fn the_same_model_is_admitted_to_rounding_and_another_is_not() {
        let kept = origin(numbers(PROBE_DIMS, 7));
        // Another CPU's kernels: the same values to about 1e-6.
        let mut again = kept.clone();
        again.probe.iter_mut().for_each(|x| *x += 1e-6);
        again.model = "/elsewhere/e5-small".into();
        kept.admit("docs", &again).unwrap();
        // Other weights: refused, naming both models and what to do.
        let flipped = (kept.probe.iter().enumerate())
            .map(|(i, x)| if i % 2 == 0 { *x } else { -*x })
            .collect();
        let mut other = origin(flipped);
        other.model = "all-MiniLM-L6-v2".into();
        let e = kept.admit("docs", &other).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Conflict);
        let msg = e.to_string();
        assert!(
            msg.contains("e5-small") && msg.contains("all-MiniLM-L6-v2"),
            "{msg}"
        );
        // The same name with other weights (a revision, a fine-tune) is told as such.
        let mut tuned = other.clone();
        tuned.model = kept.model.clone();
        let msg = kept.admit("docs", &tuned).unwrap_err().to_string();
        assert!(msg.contains("weights differ"), "{msg}");
        // Same probe, other width (a probe cannot tell): refused.
        let mut wider = kept.clone();
        wider.model_dims = 768;
        assert!(kept.admit("docs", &wider).is_err());
        // An empty or mismatched probe is never the same model.
        assert!(kept.admit("docs", &origin(Vec::new())).is_err());
    }

    #[test]
    fn other_prompts_are_refused_naming_the_setting() {
        let kept = origin(numbers(PROBE_DIMS, 7));
        let mut bare = kept.clone();
        bare.query_prompt = None;
        let msg = kept.admit("docs", &bare).unwrap_err().to_string();
        assert!(
            msg.contains("embed.query_prefix") && msg.contains("\"query: \""),
            "{msg}"
        );
        let mut doc = kept.clone();
        doc.document_prompt = Some("document: ".into());
        let msg = kept.admit("docs", &doc).unwrap_err().to_string();
        assert!(msg.contains("embed.passage_prefix"), "{msg}");
    }

    #[test]
    fn a_spec_keeps_at_most_the_models_dimensions() {
        let o = origin(numbers(PROBE_DIMS, 7));
        let spec = CollectionSpec::new("docs", 256, Metric::Cosine).with_embedding(Some(o.clone()));
        spec.validate().unwrap();
        let wide = CollectionSpec::new("docs", 385, Metric::Cosine).with_embedding(Some(o));
        assert_eq!(
            wide.validate().unwrap_err().kind(),
            crate::ErrorKind::InvalidInput
        );
        // Specs written before the origin was recorded read back without one.
        let old: CollectionSpec =
            serde_json::from_str(r#"{"name":"docs","dims":4,"metric":"cosine"}"#).unwrap();
        assert_eq!(old.embedding, None);
        let json = serde_json::to_string(&CollectionSpec::new("docs", 4, Metric::Cosine)).unwrap();
        assert!(!json.contains("embedding"), "{json}");
    }

    fn numbers(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ seed) as f32 / u32::MAX as f32 - 0.5)
            .collect()
    }

    #[test]
    fn kernels_agree_with_a_plain_sum_at_every_length() {
        for n in [0, 1, 7, 31, 32, 33, 100, 384, 1000] {
            let (a, b) = (numbers(n, 1), numbers(n, 99));
            let want_dot: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            let want_l2: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
                .sum();
            assert!((dot(&a, &b) as f64 - want_dot).abs() < 1e-4, "dot at {n}");
            assert!(
                (l2_squared(&a, &b) as f64 - want_l2).abs() < 1e-4,
                "l2 at {n}"
            );
        }
    }

    #[test]
    fn cosine_of_a_unit_vector_with_itself_is_at_most_one() {
        for seed in 0..200 {
            let mut v = numbers(384, seed);
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            let s = Metric::Cosine.score(&v, &v);
            assert!((0.9999..=1.0).contains(&s), "seed {seed}: {s}");
            let opposite: Vec<f32> = v.iter().map(|x| -x).collect();
            assert!(Metric::Cosine.score(&v, &opposite) >= -1.0);
        }
    }
}
