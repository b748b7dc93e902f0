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

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use qdrant_client::qdrant::{
    value::Kind, vector_output, vectors_config, vectors_output::VectorsOptions, Condition,
    CountPointsBuilder, CreateCollectionBuilder, DeletePointsBuilder, Distance, Filter as QFilter,
    GetPointsBuilder, HnswConfigDiffBuilder, PointId, PointStruct, QueryBatchPointsBuilder,
    QueryPointsBuilder, Range, RetrievedPoint, SearchParamsBuilder, UpsertPointsBuilder,
    Value as QValue, VectorParamsBuilder, VectorsOutput,
};
use qdrant_client::{Payload, Qdrant, QdrantError};
use serde_json::{Map, Value};

use super::filter::{Cmp, Scalar};
use super::{
    prepare_records, prepare_requests, sort_hits, validate_collection_name, CollectionInfo,
    CollectionSpec, Filter, Hit, Metric, Record, SearchMode, SearchRequest, VectorStore,
};
use crate::error::{Error, Result};

const ID_KEY: &str = "aistack_id";
const META_KEY: &str = "metadata";
const PRESENT_KEY: &str = "aistack_present";
/// The UUIDv5 namespace of aistack point ids.
const ID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6a1f_3c52_8d04_4b7e_9e2a_51c0_d7f3_a9b1);

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

fn dense(v: Option<VectorsOutput>) -> Option<Vec<f32>> {
    match v?.vectors_options? {
        VectorsOptions::Vector(out) => match out.into_vector() {
            vector_output::Vector::Dense(d) => Some(d.data),
            _ => None,
        },
        VectorsOptions::Vectors(_) => None,
    }
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
    /// aistack can use (named or sparse vectors, another distance).
    async fn spec_of(&self, name: &str) -> Result<Option<(CollectionSpec, u64)>> {
        // One round trip: a missing collection comes back as NotFound.
        let info = match self.client.collection_info(name).await {
            Ok(r) => r.result,
            Err(e) => match q_err(&coll_what(name), e) {
                Error::NotFound { .. } => return Ok(None),
                other => return Err(other),
            },
        };
        let Some(info) = info else { return Ok(None) };
        let params = info
            .config
            .and_then(|c| c.params)
            .and_then(|p| p.vectors_config)
            .and_then(|v| v.config);
        let Some(vectors_config::Config::Params(p)) = params else {
            return Ok(None);
        };
        let metric = match Distance::try_from(p.distance) {
            Ok(Distance::Cosine) => Metric::Cosine,
            Ok(Distance::Dot) => Metric::Dot,
            Ok(Distance::Euclid) => Metric::L2,
            _ => return Ok(None),
        };
        Ok(Some((
            CollectionSpec::new(name, p.size as usize, metric),
            info.points_count.unwrap_or(0),
        )))
    }

    async fn spec(&self, name: &str) -> Result<CollectionSpec> {
        validate_collection_name(name)?;
        self.spec_of(name)
            .await?
            .map(|(s, _)| s)
            .ok_or_else(|| Error::NotFound {
                what: coll_what(name),
            })
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
        if let Some((existing, _)) = self.spec_of(&spec.name).await? {
            return if exist_ok && existing == *spec {
                Ok(())
            } else {
                Err(conflict(&existing))
            };
        }
        let created = self
            .client
            .create_collection(
                CreateCollectionBuilder::new(&spec.name)
                    .vectors_config(VectorParamsBuilder::new(
                        spec.dims as u64,
                        distance(spec.metric),
                    ))
                    .hnsw_config(
                        HnswConfigDiffBuilder::default()
                            .m(self.config.hnsw_m)
                            .ef_construct(self.config.hnsw_ef_construct),
                    ),
            )
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(e) => {
                // Another client may have created it meanwhile.
                let err = q_err(&coll_what(&spec.name), e);
                match self.spec_of(&spec.name).await? {
                    Some((existing, _)) if exist_ok && existing == *spec => Ok(()),
                    Some((existing, _)) => Err(conflict(&existing)),
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
                        .with_vectors(full),
                )
                .await
                .map_err(|e| q_err(&coll_what(name), e))?;
            out.extend(got.result);
        }
        Ok(out)
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
            if let Some((spec, count)) = self.spec_of(&c.name).await? {
                out.push(CollectionInfo { spec, count });
            }
        }
        out.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        Ok(out)
    }

    async fn collection(&self, name: &str) -> Result<CollectionInfo> {
        validate_collection_name(name)?;
        let (spec, _) = self.spec_of(name).await?.ok_or_else(|| Error::NotFound {
            what: coll_what(name),
        })?;
        // The info's point count may trail recent writes; an exact count does not.
        let count = self.count(name, None).await?;
        Ok(CollectionInfo { spec, count })
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
        let spec = self.spec(collection).await?;
        prepare_records(&spec, &mut records)?;
        if records.is_empty() {
            return Ok(());
        }
        let points: Vec<PointStruct> = records
            .iter()
            .map(|r| PointStruct::new(point_id(&r.id), r.vector.clone(), payload(r)))
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
        let spec = self.spec(collection).await?;
        let queries = prepare_requests(&spec, requests)?;
        if let Some(r) = requests.iter().find(|r| r.mode != SearchMode::Vector) {
            return Err(Error::invalid(format!(
                "{} search is not available on the qdrant backend yet (vector search is)",
                r.mode.as_str()
            )));
        }
        let mut batch = Vec::new();
        let mut slots = Vec::with_capacity(requests.len());
        for (req, q) in requests.iter().zip(queries) {
            let Some(qf) = qfilter(req.filter.as_ref()) else {
                slots.push(None);
                continue;
            };
            let ef = self.config.ef_search.max(req.k as u64);
            let mut b = QueryPointsBuilder::new(collection)
                .query(q)
                .limit(req.k as u64)
                .with_payload(true)
                .with_vectors(req.with_vector)
                .params(SearchParamsBuilder::default().hnsw_ef(ef));
            if let Some(qf) = qf {
                b = b.filter(qf);
            }
            slots.push(Some(batch.len()));
            batch.push(b.build());
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
        let mut out = Vec::with_capacity(requests.len());
        for (req, slot) in requests.iter().zip(slots) {
            let Some(i) = slot else {
                out.push(Vec::new());
                continue;
            };
            let points = std::mem::take(&mut results[i].result);
            let mut hits = Vec::with_capacity(points.len());
            for p in points {
                // Qdrant scores Euclid by distance; aistack's L2 score is minus the distance.
                let score = match spec.metric {
                    Metric::L2 => -p.score,
                    _ => p.score,
                };
                if req.min_score.is_some_and(|m| score < m) {
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
            super::hybrid::rank_arm(&mut hits, SearchMode::Vector);
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
    fn trivial_filters_fold() {
        let never = Filter::from_json(&json!({"x": {"$in": []}})).unwrap();
        assert!(qfilter(Some(&never)).is_none());
        let all = Filter::from_json(&json!({"x": {"$nin": []}})).unwrap();
        assert!(matches!(qfilter(Some(&all)), Some(None)));
        let or = Filter::from_json(&json!({"$or": [{"x": {"$in": []}}, {"y": 1}]})).unwrap();
        assert!(matches!(qfilter(Some(&or)), Some(Some(_))));
    }
}
