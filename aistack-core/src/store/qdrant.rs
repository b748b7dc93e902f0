//! The Qdrant backend over gRPC (qdrant-client): for users who outgrow one machine, with the
//! server holding no state of its own.
//!
//! Layout: one Qdrant collection per aistack collection, one unnamed dense vector per point.
//! Point ids are UUIDv5 of the record id (Qdrant takes only integers and UUIDs); the payload
//! holds the record id (`aistack_id`), the metadata (`metadata`), and the metadata paths that
//! hold a non-null value (`aistack_present`), which is what `$exists` tests, so the filter
//! semantics match [`Filter::matches`] exactly. Filters compile to Qdrant's `Filter` over
//! `metadata.<field>`; numeric equality is a closed range, so `2024` matches `2024.0`.
//!
//! Upserts are sent in chunks of [`QdrantConfig::upsert_chunk`] points with `wait=true`; a batch
//! within one chunk is applied as a whole, a larger one chunk by chunk (a retry, being
//! idempotent, completes it). Hits are ordered and cut to `min_score` here, so ordering and ties
//! match the other backends.
//!
//! Lexical search is BM25 over a named sparse vector, `aistack_bm25_<analyzer>` (the name records
//! the collection's analyzer). A point's sparse vector holds, per term of its text (ids from
//! [`term_id`]), the BM25 term-frequency factor; the collection's `idf` modifier makes Qdrant
//! multiply it by the term's inverse document frequency at query time, so the dot product with
//! a query of weight 1 per term is the BM25 score. Qdrant does not know a collection's average
//! document length, so the factor uses [`BM25_AVG_TERMS`].
//!
//! A hybrid search sends both arms, for every request of the call, in one `query_batch` round
//! trip and fuses them here with [`super::hybrid::fuse`]. Qdrant's own RRF (`prefetch` +
//! `Fusion::Rrf`) cannot give what every backend returns: it reports only the fused score, not
//! each hit's rank in each arm; it applies weights as `1/(rank/w + k - 1)` rather than
//! `w/(k + rank)`, in `f32`; and it leaves ties in arrival order.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use qdrant_client::qdrant::points_selector::PointsSelectorOneOf;
use qdrant_client::qdrant::points_update_operation::{DeletePoints, Operation, PointStructList};
use qdrant_client::qdrant::with_vectors_selector::SelectorOptions;
use qdrant_client::qdrant::{
    value::Kind, vector_output, vectors_config, vectors_output::VectorsOptions, Condition,
    CountPointsBuilder, CreateCollectionBuilder, DeletePointsBuilder, Distance, Filter as QFilter,
    GetPointsBuilder, HnswConfigDiffBuilder, Modifier, NamedVectors, PointId, PointStruct,
    PointsSelector, PointsUpdateOperation, QueryBatchPointsBuilder, QueryPoints,
    QueryPointsBuilder, Range, RetrievedPoint, ScoredPoint, SearchParamsBuilder,
    SparseVectorParamsBuilder, SparseVectorsConfigBuilder, UpdateBatchPointsBuilder,
    UpsertPointsBuilder, Value as QValue, Vector, VectorInput, VectorParamsBuilder, VectorsOutput,
    VectorsSelector,
};
use qdrant_client::{Payload, Qdrant, QdrantError};
use serde_json::{Map, Value};

use super::analyzer::{term_id, Analyzer};
use super::filter::{Cmp, Scalar};
use super::hybrid::{fuse, rank_arm};
use super::{
    prepare_records, prepare_requests, sort_hits, validate_collection_name, CollectionInfo,
    CollectionSpec, Filter, Hit, Metric, Record, SearchMode, SearchRequest, VectorStore, TEXT_KEY,
};
use crate::error::{Error, Result};

const ID_KEY: &str = "aistack_id";
const META_KEY: &str = "metadata";
const PRESENT_KEY: &str = "aistack_present";
/// The UUIDv5 namespace of aistack point ids.
const ID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6a1f_3c52_8d04_4b7e_9e2a_51c0_d7f3_a9b1);
/// The name of the dense vector: Qdrant's default (unnamed) vector.
const DENSE: &str = "";
/// The collection metadata key holding the model and prompts its texts are embedded with.
const ORIGIN_KEY: &str = "aistack_embedding";

/// The sparse vector's name is this and the analyzer's name.
const SPARSE_PREFIX: &str = "aistack_bm25_";
/// BM25's `k1` (term-frequency saturation), as tantivy and Lucene use.
const BM25_K1: f32 = 1.2;
/// BM25's `b` (document-length normalisation), as tantivy and Lucene use.
const BM25_B: f32 = 0.75;
/// The document length (in terms) BM25 normalises by on Qdrant, which keeps no average: about
/// the terms an ingested chunk of the default size has once stop words are gone.
pub const BM25_AVG_TERMS: f32 = 128.0;
/// Extra candidates fetched past each cut, so that equal scores at the cut are ordered by id
/// here rather than by the server's arrival order.
const TIE_MARGIN: usize = 16;

/// How to reach Qdrant and how collections are created there.
#[derive(Debug, Clone)]
pub struct QdrantConfig {
    /// The gRPC URL, e.g. `http://127.0.0.1:6334`.
    pub url: String,
    /// The API key, if the server requires one.
    pub api_key: Option<String>,
    /// Deadline of each request.
    pub timeout: Duration,
    /// Deadline for establishing a connection.
    pub connect_timeout: Duration,
    /// HNSW graph degree for new collections.
    pub hnsw_m: u64,
    /// HNSW `ef_construct` for new collections.
    pub hnsw_ef_construct: u64,
    /// HNSW `ef` per query (raised to `k` when `k` is larger).
    pub ef_search: u64,
    /// Points per upsert request.
    pub upsert_chunk: usize,
}

impl QdrantConfig {
    /// Defaults for `url`: 30 s requests, 5 s connect, m = 16, ef_construct = 100, ef = 128,
    /// 1,024 points per upsert request.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            api_key: None,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            hnsw_m: 16,
            hnsw_ef_construct: 100,
            ef_search: 128,
            upsert_chunk: 1024,
        }
    }
}

/// A [`VectorStore`] on a Qdrant server.
pub struct QdrantStore {
    client: Qdrant,
    config: QdrantConfig,
}

impl std::fmt::Debug for QdrantStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The API key stays out of debug output.
        f.debug_struct("QdrantStore")
            .field("url", &self.config.url)
            .finish()
    }
}

/// Maps a client error to the core error, by gRPC status.
fn q_err(context: &str, e: QdrantError) -> Error {
    use tonic::Code;
    match &e {
        QdrantError::ResponseError { status } => match status.code() {
            Code::NotFound => Error::NotFound {
                what: context.to_string(),
            },
            Code::InvalidArgument => Error::invalid(format!(
                "{context}: Qdrant refused the request: {}",
                status.message()
            )),
            Code::AlreadyExists => Error::Conflict(format!("{context}: already exists")),
            Code::DeadlineExceeded => Error::Timeout {
                what: format!("Qdrant ({context})"),
                after: Duration::ZERO,
            },
            Code::ResourceExhausted => Error::Overloaded(format!("Qdrant ({context})")),
            Code::Unauthenticated | Code::PermissionDenied => Error::Unavailable {
                reason: format!("Qdrant refused the credentials ({context})"),
                source: Some(Box::new(e)),
            },
            // The client reports a refused connection as `Internal` "Failed to connect".
            Code::Internal if status.message().starts_with("Failed to connect") => {
                Error::Unavailable {
                    reason: format!("Qdrant cannot be reached ({context})"),
                    source: Some(Box::new(e)),
                }
            }
            Code::Unavailable | Code::Cancelled | Code::Aborted | Code::Unknown => {
                Error::Unavailable {
                    reason: format!("Qdrant: {context}"),
                    source: Some(Box::new(e)),
                }
            }
            _ => Error::internal(format!("Qdrant: {context}"), e),
        },
        QdrantError::ResourceExhaustedError { .. } => {
            Error::Overloaded(format!("Qdrant ({context})"))
        }
        QdrantError::InvalidUri(_) => Error::config("qdrant.url", e.to_string()),
        _ => Error::internal(format!("Qdrant: {context}"), e),
    }
}

fn coll_what(name: &str) -> String {
    format!("collection {name:?}")
}

/// The Qdrant point id of a record id.
fn point_id(id: &str) -> PointId {
    uuid::Uuid::new_v5(&ID_NAMESPACE, id.as_bytes())
        .to_string()
        .into()
}

fn distance(metric: Metric) -> Distance {
    match metric {
        Metric::Cosine => Distance::Cosine,
        Metric::Dot => Distance::Dot,
        Metric::L2 => Distance::Euclid,
    }
}

/// Every dotted path of `metadata` holding a non-null value (objects are walked, arrays are
/// values), as [`super::filter::lookup`] resolves them.
fn present_paths(metadata: &Map<String, Value>, prefix: &str, out: &mut Vec<Value>) {
    for (k, v) in metadata {
        if v.is_null() {
            continue;
        }
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if let Value::Object(inner) = v {
            present_paths(inner, &path, out);
        }
        out.push(Value::String(path));
    }
}

fn payload(r: &Record) -> Payload {
    let mut present = Vec::new();
    present_paths(&r.metadata, "", &mut present);
    let mut p = Map::new();
    p.insert(ID_KEY.into(), Value::String(r.id.clone()));
    p.insert(META_KEY.into(), Value::Object(r.metadata.clone()));
    p.insert(PRESENT_KEY.into(), Value::Array(present));
    Payload::from(p)
}

/// The name of the sparse vector of a collection with `analyzer`.
fn sparse_name(analyzer: Analyzer) -> String {
    format!("{SPARSE_PREFIX}{}", analyzer.as_str())
}

/// A text's BM25 document vector: per distinct term id, the term-frequency factor
/// `tf·(k1+1) / (tf + k1·(1 − b + b·len/avg))`, indices ascending. Empty for a text with no
/// terms.
fn bm25_document(analyzer: Analyzer, text: &str) -> (Vec<u32>, Vec<f32>) {
    let terms = analyzer.terms(text);
    let len = terms.len() as f32;
    let mut tf: std::collections::BTreeMap<u32, f32> = std::collections::BTreeMap::new();
    for t in &terms {
        *tf.entry(term_id(t)).or_default() += 1.0;
    }
    let norm = BM25_K1 * (1.0 - BM25_B + BM25_B * len / BM25_AVG_TERMS);
    tf.into_iter()
        .map(|(id, f)| (id, f * (BM25_K1 + 1.0) / (f + norm)))
        .unzip()
}

/// A query's sparse vector: weight 1 per distinct term id (so the score is the sum of the
/// matched terms' BM25 weights). Empty when the query has no terms.
fn bm25_query(analyzer: Analyzer, text: &str) -> (Vec<u32>, Vec<f32>) {
    let mut ids: Vec<u32> = analyzer
        .query_terms(text)
        .iter()
        .map(|t| term_id(t))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let ones = vec![1.0; ids.len()];
    (ids, ones)
}

/// A point's vectors: the dense one, and the sparse one when the record has text with terms.
fn point_vectors(r: &Record, lexical: Option<Analyzer>) -> NamedVectors {
    let v = NamedVectors::default().add_vector(DENSE, Vector::new_dense(r.vector.clone()));
    let text = r.metadata.get(TEXT_KEY).and_then(Value::as_str);
    match (lexical, text) {
        (Some(analyzer), Some(text)) => {
            let (indices, values) = bm25_document(analyzer, text);
            if indices.is_empty() {
                v
            } else {
                v.add_vector(sparse_name(analyzer), Vector::new_sparse(indices, values))
            }
        }
        _ => v,
    }
}

/// A filter compiled for Qdrant: one that matches everything or nothing is kept apart, since
/// Qdrant has no literal for either.
enum Compiled {
    All,
    Never,
    Cond(Box<Condition>),
}

fn cond(c: Condition) -> Compiled {
    Compiled::Cond(Box::new(c))
}

fn key(field: &str) -> String {
    format!("{META_KEY}.{field}")
}

fn not(c: Condition) -> Condition {
    QFilter::must_not([c]).into()
}

fn eq(field: &str, s: &Scalar) -> Condition {
    match s {
        Scalar::Str(x) => Condition::matches(key(field), x.clone()),
        Scalar::Bool(b) => Condition::matches(key(field), *b),
        // A closed range compares by value, integers and floats alike.
        Scalar::Num(n) => Condition::range(
            key(field),
            Range {
                gte: Some(*n),
                lte: Some(*n),
                ..Default::default()
            },
        ),
    }
}

fn any_of(field: &str, list: &[Scalar]) -> Compiled {
    match list {
        [] => Compiled::Never,
        [one] => cond(eq(field, one)),
        many => cond(QFilter::should(many.iter().map(|s| eq(field, s))).into()),
    }
}

fn negate(c: Compiled) -> Compiled {
    match c {
        Compiled::All => Compiled::Never,
        Compiled::Never => Compiled::All,
        Compiled::Cond(c) => cond(not(*c)),
    }
}

fn compile(f: &Filter) -> Compiled {
    match f {
        Filter::Eq(field, s) => cond(eq(field, s)),
        Filter::Ne(field, s) => cond(not(eq(field, s))),
        Filter::In(field, list) => any_of(field, list),
        Filter::Nin(field, list) => negate(any_of(field, list)),
        Filter::Cmp(field, op, x) => {
            let x = Some(*x);
            let range = match op {
                Cmp::Gt => Range {
                    gt: x,
                    ..Default::default()
                },
                Cmp::Gte => Range {
                    gte: x,
                    ..Default::default()
                },
                Cmp::Lt => Range {
                    lt: x,
                    ..Default::default()
                },
                Cmp::Lte => Range {
                    lte: x,
                    ..Default::default()
                },
            };
            cond(Condition::range(key(field), range))
        }
        Filter::Exists(field, want) => {
            let c = Condition::matches(PRESENT_KEY, field.clone());
            cond(if *want { c } else { not(c) })
        }
        Filter::And(fs) => {
            let mut conds = Vec::new();
            for f in fs {
                match compile(f) {
                    Compiled::Never => return Compiled::Never,
                    Compiled::All => {}
                    Compiled::Cond(c) => conds.push(*c),
                }
            }
            match conds.len() {
                0 => Compiled::All,
                1 => cond(conds.pop().expect("one")),
                _ => cond(QFilter::must(conds).into()),
            }
        }
        Filter::Or(fs) => {
            let mut conds = Vec::new();
            for f in fs {
                match compile(f) {
                    Compiled::All => return Compiled::All,
                    Compiled::Never => {}
                    Compiled::Cond(c) => conds.push(*c),
                }
            }
            match conds.len() {
                0 => Compiled::Never,
                1 => cond(conds.pop().expect("one")),
                _ => cond(QFilter::should(conds).into()),
            }
        }
        Filter::Not(f) => negate(compile(f)),
    }
}

/// The filter as Qdrant's, or `None` when nothing can match.
fn qfilter(f: Option<&Filter>) -> Option<Option<QFilter>> {
    match f.map(compile) {
        None | Some(Compiled::All) => Some(None),
        Some(Compiled::Never) => None,
        Some(Compiled::Cond(c)) => Some(Some(QFilter::must([*c]))),
    }
}

fn json_of(v: QValue) -> Value {
    match v.kind {
        Some(Kind::NullValue(_)) | None => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::IntegerValue(i)) => Value::from(i),
        Some(Kind::DoubleValue(d)) => {
            serde_json::Number::from_f64(d).map_or(Value::Null, Value::Number)
        }
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::ListValue(l)) => Value::Array(l.values.into_iter().map(json_of).collect()),
        Some(Kind::StructValue(s)) => {
            Value::Object(s.fields.into_iter().map(|(k, v)| (k, json_of(v))).collect())
        }
    }
}

/// The record id and metadata from a point's payload.
fn from_payload(mut p: HashMap<String, QValue>) -> Result<(String, Map<String, Value>)> {
    let id = match p.remove(ID_KEY).map(json_of) {
        Some(Value::String(s)) => s,
        _ => {
            return Err(Error::Internal {
                context: "a Qdrant point has no aistack id in its payload".into(),
                source: None,
            })
        }
    };
    let metadata = match p.remove(META_KEY).map(json_of) {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    Ok((id, metadata))
}

/// The dense vector of a point, whether Qdrant sent it alone or among named vectors.
fn dense(v: Option<VectorsOutput>) -> Option<Vec<f32>> {
    let out = match v?.vectors_options? {
        VectorsOptions::Vector(out) => out,
        VectorsOptions::Vectors(mut named) => named.vectors.remove(DENSE)?,
    };
    match out.into_vector() {
        vector_output::Vector::Dense(d) => Some(d.data),
        _ => None,
    }
}

/// What aistack knows of one of its collections on Qdrant.
struct Found {
    spec: CollectionSpec,
    count: u64,
    /// Whether the collection has the sparse vector of lexical search (collections created
    /// before it do not, and Qdrant cannot add one to an existing collection).
    lexical: bool,
}

/// The hits of one arm from Qdrant's points, ordered by score then id and cut to `limit`.
fn arm_hits(
    points: Vec<ScoredPoint>,
    req: &SearchRequest,
    metric: Option<Metric>,
    limit: usize,
) -> Result<Vec<Hit>> {
    let mut hits = Vec::with_capacity(points.len());
    for p in points {
        // Qdrant scores Euclid by distance; aistack's L2 score is minus the distance.
        let score = match metric {
            Some(Metric::L2) => -p.score,
            _ => p.score,
        };
        if metric.is_some() && req.min_score.is_some_and(|m| score < m) {
            continue;
        }
        let (id, metadata) = from_payload(p.payload)?;
        hits.push(Hit {
            id,
            score,
            vector_rank: None,
            lexical_rank: None,
            metadata: req.with_metadata.then_some(metadata),
            vector: if req.with_vector {
                dense(p.vectors)
            } else {
                None
            },
        });
    }
    sort_hits(&mut hits);
    hits.truncate(limit);
    Ok(hits)
}

impl QdrantStore {
    /// Connects to the server and checks that it answers.
    pub async fn connect(config: QdrantConfig) -> Result<Self> {
        if config.upsert_chunk == 0 {
            return Err(Error::config("qdrant.upsert_chunk", "must be at least 1"));
        }
        let client = Qdrant::from_url(&config.url)
            .api_key(config.api_key.clone())
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .skip_compatibility_check()
            .build()
            .map_err(|e| q_err("connecting", e))?;
        client
            .health_check()
            .await
            .map_err(|e| q_err("health check", e))?;
        Ok(Self { client, config })
    }

    /// The collection's spec, or `None` if Qdrant has no such collection or it is not one
    /// aistack can use (named dense vectors, another distance).
    async fn spec_of(&self, name: &str) -> Result<Option<Found>> {
        // One round trip: a missing collection comes back as NotFound.
        let info = match self.client.collection_info(name).await {
            Ok(r) => r.result,
            Err(e) => match q_err(&coll_what(name), e) {
                Error::NotFound { .. } => return Ok(None),
                other => return Err(other),
            },
        };
        let Some(info) = info else { return Ok(None) };
        let Some(config) = info.config else {
            return Ok(None);
        };
        // A record another version wrote in a shape this one cannot read is treated as absent.
        let embedding = config
            .metadata
            .get(ORIGIN_KEY)
            .and_then(|v| serde_json::from_value(serde_json::Value::from(v.clone())).ok());
        let Some(params) = config.params else {
            return Ok(None);
        };
        // The analyzer is in the sparse vector's name; without one, lexical search is off.
        let analyzer = params.sparse_vectors_config.as_ref().and_then(|s| {
            s.map
                .keys()
                .filter_map(|k| k.strip_prefix(SPARSE_PREFIX))
                .find_map(|a| Analyzer::parse(a).ok())
        });
        let Some(vectors_config::Config::Params(p)) = params.vectors_config.and_then(|v| v.config)
        else {
            return Ok(None);
        };
        let metric = match Distance::try_from(p.distance) {
            Ok(Distance::Cosine) => Metric::Cosine,
            Ok(Distance::Dot) => Metric::Dot,
            Ok(Distance::Euclid) => Metric::L2,
            _ => return Ok(None),
        };
        Ok(Some(Found {
            spec: CollectionSpec::new(name, p.size as usize, metric)
                .with_analyzer(analyzer.unwrap_or_default())
                .with_embedding(embedding),
            count: info.points_count.unwrap_or(0),
            lexical: analyzer.is_some(),
        }))
    }

    async fn found(&self, name: &str) -> Result<Found> {
        validate_collection_name(name)?;
        self.spec_of(name).await?.ok_or_else(|| Error::NotFound {
            what: coll_what(name),
        })
    }

    async fn spec(&self, name: &str) -> Result<CollectionSpec> {
        Ok(self.found(name).await?.spec)
    }

    async fn create(&self, spec: &CollectionSpec, exist_ok: bool) -> Result<()> {
        spec.validate()?;
        let conflict = |existing: &CollectionSpec| {
            Error::Conflict(format!(
                "collection {:?} already exists with {} dims and metric {}",
                spec.name,
                existing.dims,
                existing.metric.as_str()
            ))
        };
        if let Some(Found { spec: existing, .. }) = self.spec_of(&spec.name).await? {
            return if exist_ok && existing.same_shape(spec) {
                Ok(())
            } else {
                Err(conflict(&existing))
            };
        }
        let mut metadata = std::collections::HashMap::new();
        if let Some(origin) = &spec.embedding {
            let json = serde_json::to_value(origin).map_err(|e| Error::internal("origin", e))?;
            metadata.insert(ORIGIN_KEY.to_string(), json);
        }
        let created = self
            .client
            .create_collection(
                CreateCollectionBuilder::new(&spec.name)
                    .metadata(metadata)
                    .vectors_config(VectorParamsBuilder::new(
                        spec.dims as u64,
                        distance(spec.metric),
                    ))
                    .hnsw_config(
                        HnswConfigDiffBuilder::default()
                            .m(self.config.hnsw_m)
                            .ef_construct(self.config.hnsw_ef_construct),
                    )
                    .sparse_vectors_config({
                        let mut sparse = SparseVectorsConfigBuilder::default();
                        sparse.add_named_vector_params(
                            sparse_name(spec.analyzer),
                            SparseVectorParamsBuilder::default().modifier(Modifier::Idf),
                        );
                        sparse
                    }),
            )
            .await;
        match created {
            Ok(_) if spec.embedding.is_some() => {
                // A server too old for collection metadata drops it without an error; the
                // collection would then take any model's texts and lose its Matryoshka width.
                match self.spec_of(&spec.name).await? {
                    Some(Found { spec: made, .. }) if made.embedding.is_none() => {
                        let _ = self.client.delete_collection(&spec.name).await;
                        Err(Error::Unavailable {
                            reason: format!(
                                "Qdrant did not keep collection {:?}'s metadata (the model its texts are embedded with); this needs a Qdrant with collection metadata (1.16 or newer)",
                                spec.name
                            ),
                            source: None,
                        })
                    }
                    _ => Ok(()),
                }
            }
            Ok(_) => Ok(()),
            Err(e) => {
                // Another client may have created it meanwhile.
                let err = q_err(&coll_what(&spec.name), e);
                match self.spec_of(&spec.name).await?.map(|f| f.spec) {
                    Some(existing) if exist_ok && existing.same_shape(spec) => Ok(()),
                    Some(existing) => Err(conflict(&existing)),
                    None => Err(err),
                }
            }
        }
    }

    /// Ids among `ids` that exist, as records (payload and vectors on request).
    async fn fetch(&self, name: &str, ids: &[String], full: bool) -> Result<Vec<RetrievedPoint>> {
        let mut out = Vec::new();
        for chunk in ids.chunks(self.config.upsert_chunk) {
            let pids: Vec<PointId> = chunk.iter().map(|id| point_id(id)).collect();
            let got = self
                .client
                .get_points(
                    GetPointsBuilder::new(name, pids)
                        .with_payload(true)
                        .with_vectors(dense_only(full)),
                )
                .await
                .map_err(|e| q_err(&coll_what(name), e))?;
            out.extend(got.result);
        }
        Ok(out)
    }
}

/// The vectors a read returns: the dense one, or none.
fn dense_only(with: bool) -> SelectorOptions {
    if with {
        VectorsSelector {
            names: vec![DENSE.to_string()],
        }
        .into()
    } else {
        SelectorOptions::Enable(false)
    }
}

#[async_trait]
impl VectorStore for QdrantStore {
    fn backend(&self) -> &'static str {
        "qdrant"
    }

    async fn create_collection(&self, spec: &CollectionSpec) -> Result<()> {
        self.create(spec, false).await
    }

    async fn ensure_collection(&self, spec: &CollectionSpec) -> Result<()> {
        self.create(spec, true).await
    }

    async fn list_collections(&self) -> Result<Vec<CollectionInfo>> {
        let names = self
            .client
            .list_collections()
            .await
            .map_err(|e| q_err("listing collections", e))?;
        let mut out = Vec::new();
        for c in names.collections {
            if validate_collection_name(&c.name).is_err() {
                continue;
            }
            if let Some(Found { spec, count, .. }) = self.spec_of(&c.name).await? {
                out.push(CollectionInfo { spec, count });
            }
        }
        out.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        Ok(out)
    }

    async fn collection(&self, name: &str) -> Result<CollectionInfo> {
        validate_collection_name(name)?;
        let spec = self.spec(name).await?;
        // The info's point count may trail recent writes; an exact count does not.
        let count = self.count(name, None).await?;
        Ok(CollectionInfo { spec, count })
    }

    async fn collection_spec(&self, name: &str) -> Result<CollectionSpec> {
        self.spec(name).await
    }

    async fn drop_collection(&self, name: &str) -> Result<bool> {
        validate_collection_name(name)?;
        if self.spec_of(name).await?.is_none() {
            return Ok(false);
        }
        let r = self
            .client
            .delete_collection(name)
            .await
            .map_err(|e| q_err(&coll_what(name), e))?;
        Ok(r.result)
    }

    async fn upsert(&self, collection: &str, mut records: Vec<Record>) -> Result<()> {
        let found = self.found(collection).await?;
        prepare_records(&found.spec, &mut records)?;
        if records.is_empty() {
            return Ok(());
        }
        let lexical = found.lexical.then_some(found.spec.analyzer);
        let points: Vec<PointStruct> = records
            .iter()
            .map(|r| PointStruct::new(point_id(&r.id), point_vectors(r, lexical), payload(r)))
            .collect();
        self.client
            .upsert_points_chunked(
                UpsertPointsBuilder::new(collection, points).wait(true),
                self.config.upsert_chunk,
            )
            .await
            .map_err(|e| q_err(&coll_what(collection), e))?;
        Ok(())
    }

    async fn get(&self, collection: &str, ids: &[String]) -> Result<Vec<Record>> {
        self.spec(collection).await?;
        let mut found: HashMap<String, Record> = HashMap::new();
        for p in self.fetch(collection, ids, true).await? {
            let (id, metadata) = from_payload(p.payload)?;
            let vector = dense(p.vectors).unwrap_or_default();
            found.insert(
                id.clone(),
                Record {
                    id,
                    vector,
                    metadata,
                },
            );
        }
        Ok(ids.iter().filter_map(|id| found.get(id).cloned()).collect())
    }

    async fn delete(&self, collection: &str, ids: &[String]) -> Result<u64> {
        self.spec(collection).await?;
        let mut unique: Vec<String> = ids.to_vec();
        unique.sort();
        unique.dedup();
        let present = self.fetch(collection, &unique, false).await?.len() as u64;
        for chunk in unique.chunks(self.config.upsert_chunk) {
            let pids: Vec<PointId> = chunk.iter().map(|id| point_id(id)).collect();
            self.client
                .delete_points(DeletePointsBuilder::new(collection).points(pids).wait(true))
                .await
                .map_err(|e| q_err(&coll_what(collection), e))?;
        }
        Ok(present)
    }

    async fn delete_where(&self, collection: &str, filter: &Filter) -> Result<u64> {
        self.spec(collection).await?;
        let Some(qf) = qfilter(Some(filter)) else {
            return Ok(0);
        };
        let n = self.count(collection, Some(filter)).await?;
        if n == 0 {
            return Ok(0);
        }
        self.client
            .delete_points(
                DeletePointsBuilder::new(collection)
                    .points(qf.unwrap_or_default())
                    .wait(true),
            )
            .await
            .map_err(|e| q_err(&coll_what(collection), e))?;
        Ok(n)
    }

    async fn replace(
        &self,
        collection: &str,
        mut records: Vec<Record>,
        stale: &Filter,
    ) -> Result<u64> {
        let found = self.found(collection).await?;
        prepare_records(&found.spec, &mut records)?;
        let lexical = found.lexical.then_some(found.spec.analyzer);
        let keep: Vec<PointId> = records.iter().map(|r| point_id(&r.id)).collect();
        // The stale records: what the filter passes, less the records written now.
        let doomed = qfilter(Some(stale)).map(|f| {
            let mut f = f.unwrap_or_default();
            if !keep.is_empty() {
                f.must_not.push(Condition::has_id(keep.clone()));
            }
            f
        });
        let n = match &doomed {
            Some(f) => self
                .client
                .count(
                    CountPointsBuilder::new(collection)
                        .exact(true)
                        .filter(f.clone()),
                )
                .await
                .map_err(|e| q_err(&coll_what(collection), e))?
                .result
                .map_or(0, |r| r.count),
            None => 0,
        };
        let mut operations = Vec::with_capacity(2);
        if !records.is_empty() {
            let points: Vec<PointStruct> = records
                .iter()
                .map(|r| PointStruct::new(point_id(&r.id), point_vectors(r, lexical), payload(r)))
                .collect();
            operations.push(PointsUpdateOperation {
                operation: Some(Operation::Upsert(PointStructList {
                    points,
                    ..Default::default()
                })),
            });
        }
        if let (Some(f), true) = (doomed, n > 0) {
            operations.push(PointsUpdateOperation {
                operation: Some(Operation::DeletePoints(DeletePoints {
                    points: Some(PointsSelector {
                        points_selector_one_of: Some(PointsSelectorOneOf::Filter(f)),
                    }),
                    ..Default::default()
                })),
            });
        }
        if operations.is_empty() {
            return Ok(0);
        }
        // One batch request: Qdrant applies its operations in order, under one write.
        self.client
            .update_points_batch(UpdateBatchPointsBuilder::new(collection, operations).wait(true))
            .await
            .map_err(|e| q_err(&coll_what(collection), e))?;
        Ok(n)
    }

    async fn count(&self, collection: &str, filter: Option<&Filter>) -> Result<u64> {
        validate_collection_name(collection)?;
        let Some(qf) = qfilter(filter) else {
            self.spec(collection).await?;
            return Ok(0);
        };
        let mut req = CountPointsBuilder::new(collection).exact(true);
        if let Some(qf) = qf {
            req = req.filter(qf);
        }
        let r = self
            .client
            .count(req)
            .await
            .map_err(|e| q_err(&coll_what(collection), e))?;
        Ok(r.result.map_or(0, |c| c.count))
    }

    async fn search(&self, collection: &str, requests: &[SearchRequest]) -> Result<Vec<Vec<Hit>>> {
        let found = self.found(collection).await?;
        let spec = &found.spec;
        let queries = prepare_requests(spec, requests)?;
        if !found.lexical {
            if let Some(r) = requests.iter().find(|r| r.mode.uses_text()) {
                return Err(Error::invalid(format!(
                    "{} search needs a term index, which collection {collection:?} lacks: it was \
                     created on Qdrant before aistack had lexical search, and Qdrant cannot add \
                     one to an existing collection; create a new collection and ingest into it",
                    r.mode.as_str()
                )));
            }
        }
        let sparse = sparse_name(spec.analyzer);
        // Every arm of every request goes in one batch; `arms` says where each request's are.
        let mut batch: Vec<QueryPoints> = Vec::new();
        let mut arms: Vec<Option<(Option<usize>, Option<usize>)>> = Vec::new();
        for (req, q) in requests.iter().zip(queries) {
            let Some(qf) = qfilter(req.filter.as_ref()) else {
                arms.push(None);
                continue;
            };
            let (vector_limit, lexical_limit) = match req.mode {
                SearchMode::Vector => (req.k, 0),
                SearchMode::Lexical => (0, req.k),
                SearchMode::Hybrid => (
                    req.fusion.vector_depth_for(req.k),
                    req.fusion.lexical_depth_for(req.k),
                ),
            };
            let arm = |b: QueryPointsBuilder, limit: usize| {
                let b = b
                    .limit((limit + TIE_MARGIN) as u64)
                    .with_payload(true)
                    .with_vectors(dense_only(req.with_vector));
                match &qf {
                    Some(qf) => b.filter(qf.clone()),
                    None => b,
                }
            };
            let mut slot = (None, None);
            if req.mode.uses_vector() {
                let ef = self
                    .config
                    .ef_search
                    .max((vector_limit + TIE_MARGIN) as u64);
                slot.0 = Some(batch.len());
                batch.push(
                    arm(QueryPointsBuilder::new(collection).query(q), vector_limit)
                        .params(SearchParamsBuilder::default().hnsw_ef(ef))
                        .build(),
                );
            }
            if req.mode.uses_text() {
                let (indices, values) =
                    bm25_query(spec.analyzer, req.text.as_deref().unwrap_or(""));
                // A query of stop words only has no terms: the arm is empty.
                if !indices.is_empty() {
                    slot.1 = Some(batch.len());
                    batch.push(
                        arm(
                            QueryPointsBuilder::new(collection)
                                .query(VectorInput::new_sparse(indices, values))
                                .using(sparse.clone()),
                            lexical_limit,
                        )
                        .build(),
                    );
                }
            }
            arms.push(Some(slot));
        }
        let mut results = if batch.is_empty() {
            Vec::new()
        } else {
            self.client
                .query_batch(QueryBatchPointsBuilder::new(collection, batch))
                .await
                .map_err(|e| q_err(&coll_what(collection), e))?
                .result
        };
        let mut take =
            |i: Option<usize>| i.map_or_else(Vec::new, |i| std::mem::take(&mut results[i].result));
        let mut out = Vec::with_capacity(requests.len());
        for (req, slot) in requests.iter().zip(arms) {
            let Some((v, l)) = slot else {
                out.push(Vec::new());
                continue;
            };
            let hits = match req.mode {
                SearchMode::Vector => {
                    let mut hits = arm_hits(take(v), req, Some(spec.metric), req.k)?;
                    rank_arm(&mut hits, SearchMode::Vector);
                    hits
                }
                SearchMode::Lexical => {
                    let mut hits = arm_hits(take(l), req, None, req.k)?;
                    rank_arm(&mut hits, SearchMode::Lexical);
                    hits
                }
                SearchMode::Hybrid => {
                    let vector = arm_hits(
                        take(v),
                        req,
                        Some(spec.metric),
                        req.fusion.vector_depth_for(req.k),
                    )?;
                    let lexical =
                        arm_hits(take(l), req, None, req.fusion.lexical_depth_for(req.k))?;
                    fuse(&req.fusion, vector, lexical, req.k)
                }
            };
            out.push(hits);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn point_ids_are_stable_uuids() {
        let a = point_id("doc-1#0");
        assert_eq!(a, point_id("doc-1#0"));
        assert_ne!(a, point_id("doc-1#1"));
    }

    #[test]
    fn present_paths_follow_lookup() {
        let m = json!({"a": 1, "b": null, "c": {"d": [], "e": null}, "f": [{"g": 1}]});
        let mut out = Vec::new();
        present_paths(m.as_object().unwrap(), "", &mut out);
        let mut got: Vec<String> = out
            .into_iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        got.sort();
        assert_eq!(got, ["a", "c", "c.d", "f"]);
    }

    #[test]
    fn bm25_document_weights_saturate_and_normalise() {
        let (ids, w) = bm25_document(Analyzer::English, "Errors, errors and the S_IFCHR error");
        // "errors" and "error" stem alike; "and", "the" are stop words.
        assert_eq!(ids.len(), 2);
        assert!(ids.windows(2).all(|p| p[0] < p[1]));
        let e = ids.iter().position(|&i| i == term_id("error")).unwrap();
        let s = ids.iter().position(|&i| i == term_id("s_ifchr")).unwrap();
        // Four terms, tf 3 and 1, against an average of BM25_AVG_TERMS.
        let norm = BM25_K1 * (1.0 - BM25_B + BM25_B * 4.0 / BM25_AVG_TERMS);
        assert_eq!(w[e], 3.0 * (BM25_K1 + 1.0) / (3.0 + norm));
        assert_eq!(w[s], (BM25_K1 + 1.0) / (1.0 + norm));
        assert!(w[e] > w[s] && w[e] < BM25_K1 + 1.0);
        assert!(bm25_document(Analyzer::English, "the of and").0.is_empty());
        let (q, ones) = bm25_query(Analyzer::English, "error ERRORS s_ifchr");
        assert_eq!(q.len(), 2);
        assert_eq!(ones, [1.0, 1.0]);
    }

    #[test]
    fn trivial_filters_fold() {
        let never = Filter::from_json(&json!({"x": {"$in": []}})).unwrap();
        assert!(qfilter(Some(&never)).is_none());
        let all = Filter::from_json(&json!({"x": {"$nin": []}})).unwrap();
        assert!(matches!(qfilter(Some(&all)), Some(None)));
        let or = Filter::from_json(&json!({"$or": [{"x": {"$in": []}}, {"y": 1}]})).unwrap();
        assert!(matches!(qfilter(Some(&or)), Some(Some(_))));
    }
}
