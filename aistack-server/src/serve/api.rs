//! The API's handlers and their request and response shapes. Each handler converts HTTP shapes
//! to core calls and back; the logic lives in aistack-core.

use std::sync::Arc;

use aistack_core::embed::{Embedder, InputKind, Norm};
use aistack_core::ingest::{DocHit, Document};
use aistack_core::store::{CollectionInfo, CollectionSpec, Metric};
use axum::extract::{FromRequest, FromRequestParts, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::state::AppState;

/// A JSON body whose every rejection (syntax, shape, size, content type) is a JSON error.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// A path parameter whose rejection is a JSON error.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

type ApiResult<T> = std::result::Result<T, ApiError>;

/// One string, a list of strings, or (OpenAI only) token ids.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Inputs {
    /// A single text.
    One(String),
    /// Several texts, embedded in order.
    Many(Vec<String>),
    /// One text as `cl100k_base` token ids (what OpenAI clients such as LangChain send).
    Tokens(Vec<u32>),
    /// Several texts as `cl100k_base` token ids.
    TokenLists(Vec<Vec<u32>>),
    /// Anything else: refused with a clear 400.
    #[schema(value_type = Object)]
    Other(serde::de::IgnoredAny),
}

impl Inputs {
    /// The texts of a request; token ids are refused (TEI's `/embed` takes text only).
    fn into_texts(self, field: &str) -> ApiResult<Vec<String>> {
        match self {
            Inputs::One(s) => Ok(vec![s]),
            Inputs::Many(v) => Ok(v),
            _ => Err(ApiError::invalid(format!(
                "`{field}` must be a string or an array of strings"
            ))),
        }
    }

    /// The texts of an OpenAI request: token ids are decoded with `cl100k_base`, the encoding
    /// OpenAI clients tokenize with for models tiktoken does not know.
    async fn into_openai_texts(self) -> ApiResult<Vec<String>> {
        let lists =
            match self {
                Inputs::One(s) => return Ok(vec![s]),
                Inputs::Many(v) => return Ok(v),
                Inputs::Tokens(t) => vec![t],
                Inputs::TokenLists(l) => l,
                Inputs::Other(_) => return Err(ApiError::invalid(
                    "`input` must be a string, an array of strings, an array of token ids or an \
                     array of arrays of token ids",
                )),
            };
        // The first use builds the 100k-entry table: off the async workers.
        let decoded = tokio::task::spawn_blocking(move || {
            let bpe = tiktoken_rs::cl100k_base_singleton();
            lists
                .into_iter()
                .enumerate()
                .map(|(i, tokens)| {
                    bpe.decode(tokens).map_err(|_| {
                        format!(
                            "input {i}: the token ids are not valid `cl100k_base` tokens of UTF-8 text"
                        )
                    })
                })
                .collect::<Result<Vec<String>, String>>()
        })
        .await
        .map_err(|e| aistack_core::Error::internal("the token decoding task failed", e))?;
        decoded.map_err(ApiError::invalid)
    }
}

/// `POST /v1/embeddings` request (OpenAI-compatible).
#[derive(Debug, Deserialize, ToSchema)]
pub struct EmbeddingsRequest {
    /// A text, an array of texts, or token ids (`cl100k_base`) of one or several texts.
    pub input: Inputs,
    /// The model: the served model's id or its short name.
    pub model: Option<String>,
    /// `float` (default) or `base64` (little-endian f32).
    #[schema(pattern = "^(float|base64)$")]
    pub encoding_format: Option<String>,
    /// Must equal the model's dimensions if given.
    #[schema(minimum = 1)]
    pub dimensions: Option<u64>,
    /// Accepted and ignored (OpenAI's end-user id).
    #[allow(dead_code)]
    pub user: Option<String>,
}

/// One embedding in an OpenAI-shaped response.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingItem {
    /// Always `embedding`.
    pub object: &'static str,
    /// Position of the input.
    pub index: usize,
    /// A float array, or a base64 string of little-endian f32 when asked for.
    pub embedding: Embedding,
}

/// An embedding as the client asked for it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Embedding {
    /// `encoding_format: float`: the numbers.
    Float(Vec<f32>),
    /// `encoding_format: base64`: little-endian f32 bytes, base64-encoded.
    Base64(String),
}

/// Token counts of a request.
#[derive(Debug, Serialize, ToSchema)]
pub struct Usage {
    /// Tokens in the inputs (after truncation, special tokens included).
    pub prompt_tokens: usize,
    /// Same as `prompt_tokens`.
    pub total_tokens: usize,
}

/// `POST /v1/embeddings` response.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingsResponse {
    /// Always `list`.
    pub object: &'static str,
    /// One item per input, in order.
    pub data: Vec<EmbeddingItem>,
    /// The model that computed them.
    pub model: String,
    /// Token counts.
    pub usage: Usage,
}

fn model_matches(asked: &str, served: &[&str]) -> bool {
    let short = |s: &str| s.rsplit('/').next().unwrap_or(s).to_string();
    served
        .iter()
        .any(|m| asked == *m || short(asked) == short(m))
}

/// OpenAI-compatible embeddings.
#[utoipa::path(post, path = "/v1/embeddings", request_body = EmbeddingsRequest,
    responses((status = 200, body = EmbeddingsResponse), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
pub async fn embeddings(
    State(app): State<Arc<AppState>>,
    ApiJson(req): ApiJson<EmbeddingsRequest>,
) -> ApiResult<Json<EmbeddingsResponse>> {
    let texts = req.input.into_openai_texts().await?;
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "encoding_format must be \"float\" or \"base64\", got {other:?}"
            )))
        }
    };
    let embedder = app.engine.embedder()?;
    let info = embedder.info();
    let served = app
        .settings
        .server
        .model_name
        .clone()
        .unwrap_or_else(|| info.model_id.clone());
    if let Some(m) = &req.model {
        if !model_matches(m, &[&served, &info.model_id, app.engine.model_spec()]) {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("model {m:?} is not served here; this server serves {served:?}"),
            ));
        }
    }
    if let Some(d) = req.dimensions {
        if d != info.dims as u64 {
            return Err(ApiError::invalid(format!(
                "dimensions={d} is not supported: the model's embeddings have {} dimensions",
                info.dims
            )));
        }
    }
    let vectors = embedder.embed(&texts, InputKind::Plain).await?;
    let tokens: usize = embedder.count_tokens(&texts)?.iter().sum();
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| EmbeddingItem {
            object: "embedding",
            index,
            embedding: if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Embedding::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                Embedding::Float(v)
            },
        })
        .collect();
    Ok(Json(EmbeddingsResponse {
        object: "list",
        data,
        model: served,
        usage: Usage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    }))
}

/// `POST /embed` request (text-embeddings-inference compatible).
#[derive(Debug, Deserialize, ToSchema)]
pub struct TeiEmbedRequest {
    /// A text or an array of texts.
    pub inputs: Inputs,
    /// L2-normalize (default true); `false` returns the pooled vectors as the model computes them.
    #[serde(default = "yes")]
    pub normalize: bool,
    /// Truncate over-long inputs (default false: they are refused, as TEI does).
    #[serde(default)]
    pub truncate: bool,
}

fn yes() -> bool {
    true
}

/// TEI-compatible embeddings: an array of float arrays.
#[utoipa::path(post, path = "/embed", request_body = TeiEmbedRequest,
    responses((status = 200, body = Vec<Vec<f32>>), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
pub async fn tei_embed(
    State(app): State<Arc<AppState>>,
    ApiJson(req): ApiJson<TeiEmbedRequest>,
) -> ApiResult<Json<Vec<Vec<f32>>>> {
    let texts = req.inputs.into_texts("inputs")?;
    let embedder = app.engine.embedder()?;
    let info = embedder.info();
    if !req.truncate {
        let counts = embedder.count_tokens(&texts)?;
        // count_tokens counts after truncation, so reaching the limit means the input was cut.
        if let Some(i) = counts.iter().position(|n| *n >= info.max_input_tokens) {
            return Err(ApiError::invalid(format!(
                "input {i} is longer than the model's {} tokens; send truncate=true to cut it",
                info.max_input_tokens
            )));
        }
    }
    let norm = if req.normalize {
        Norm::Unit
    } else {
        Norm::Pooled
    };
    Ok(Json(
        embedder.embed_with(&texts, InputKind::Plain, norm).await?,
    ))
}

/// `POST /v1/collections` request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCollection {
    /// 1 to 64 ASCII letters, digits, `_` or `-`, starting with a letter or digit.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
    pub name: String,
    /// Vector dimensions; defaults to the model's.
    #[schema(minimum = 1, maximum = 65536)]
    pub dims: Option<usize>,
    /// `cosine` (default), `dot` or `l2`.
    #[schema(pattern = "^(cosine|dot|l2)$")]
    pub metric: Option<String>,
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
    /// Records (chunks) held.
    pub count: u64,
}

impl From<CollectionInfo> for CollectionView {
    fn from(c: CollectionInfo) -> Self {
        Self {
            name: c.spec.name,
            dims: c.spec.dims,
            metric: c.spec.metric.as_str().to_string(),
            count: c.count,
        }
    }
}

/// `GET /v1/collections` response.
#[derive(Debug, Serialize, ToSchema)]
pub struct CollectionList {
    /// Every collection.
    pub collections: Vec<CollectionView>,
}

/// Lists collections.
#[utoipa::path(get, path = "/v1/collections",
    responses((status = 200, body = CollectionList), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
pub async fn list_collections(State(app): State<Arc<AppState>>) -> ApiResult<Json<CollectionList>> {
    let collections = app.store.list_collections().await?;
    Ok(Json(CollectionList {
        collections: collections.into_iter().map(Into::into).collect(),
    }))
}

/// Creates a collection; 409 if one of that name exists.
#[utoipa::path(post, path = "/v1/collections", request_body = CreateCollection,
    responses((status = 201, body = CollectionView), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
pub async fn create_collection(
    State(app): State<Arc<AppState>>,
    ApiJson(req): ApiJson<CreateCollection>,
) -> ApiResult<Response> {
    let dims = match req.dims {
        Some(d) => d,
        None => app.engine.embedder()?.info().dims,
    };
    let metric = Metric::parse(req.metric.as_deref().unwrap_or("cosine"))?;
    let spec = CollectionSpec::new(req.name, dims, metric);
    app.store.create_collection(&spec).await?;
    let info = app.store.collection(&spec.name).await?;
    Ok((StatusCode::CREATED, Json(CollectionView::from(info))).into_response())
}

/// One collection.
#[utoipa::path(get, path = "/v1/collections/{name}",
    params(("name" = String, Path, description = "collection name", pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")),
    responses((status = 200, body = CollectionView), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
pub async fn get_collection(
    State(app): State<Arc<AppState>>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<CollectionView>> {
    Ok(Json(app.store.collection(&name).await?.into()))
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

/// Drops a collection and everything in it; 404 if there is none.
#[utoipa::path(delete, path = "/v1/collections/{name}",
    params(("name" = String, Path, description = "collection name", pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")),
    responses((status = 200, body = Deleted), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
pub async fn drop_collection(
    State(app): State<Arc<AppState>>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Deleted>> {
    if !app.store.drop_collection(&name).await? {
        return Err(aistack_core::Error::NotFound {
            what: format!("collection {name:?}"),
        }
        .into());
    }
    app.invalidate(&name);
    Ok(Json(Deleted {
        deleted: true,
        records: None,
    }))
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

/// Chunks, embeds and upserts documents (idempotent by id). The collection is created (cosine,
/// the model's dimensions) if it does not exist.
#[utoipa::path(post, path = "/v1/collections/{name}/documents", request_body = IngestRequest,
    params(("name" = String, Path, description = "collection name", pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")),
    responses((status = 200, body = IngestResult), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
pub async fn ingest(
    State(app): State<Arc<AppState>>,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<IngestRequest>,
) -> ApiResult<Json<IngestResult>> {
    let limits = &app.settings.server;
    if req.documents.is_empty() {
        return Err(ApiError::invalid("`documents` is empty"));
    }
    if req.documents.len() > limits.max_documents_per_request {
        return Err(ApiError::invalid(format!(
            "{} documents in one request; at most {} are accepted (server.max_documents_per_request)",
            req.documents.len(),
            limits.max_documents_per_request
        )));
    }
    if let Some((i, _)) = req
        .documents
        .iter()
        .enumerate()
        .find(|(_, d)| d.text.chars().count() > limits.max_document_chars)
    {
        return Err(ApiError::invalid(format!(
            "document {i} is longer than {} characters (server.max_document_chars)",
            limits.max_document_chars
        )));
    }
    aistack_core::store::validate_collection_name(&name)?;
    let ingestor = app.ingestor().await?;
    ingestor.ensure_collection(&name).await?;
    let docs = req
        .documents
        .into_iter()
        .map(|d| Document {
            id: d.id,
            text: d.text,
            metadata: d.metadata,
        })
        .collect();
    let report = ingestor.ingest(&name, docs).await?;
    Ok(Json(IngestResult {
        documents: report.documents,
        chunks: report.chunks,
        removed: report.removed,
    }))
}

/// Deletes a document's chunks; 404 if the collection has none for that id.
#[utoipa::path(delete, path = "/v1/collections/{name}/documents/{id}",
    params(("name" = String, Path, description = "collection name", pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"),
           ("id" = String, Path, description = "document id", min_length = 1, max_length = 400)),
    responses((status = 200, body = Deleted), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
pub async fn delete_document(
    State(app): State<Arc<AppState>>,
    ApiPath((name, id)): ApiPath<(String, String)>,
) -> ApiResult<Json<Deleted>> {
    let ingestor = app.ingestor().await?;
    let n = ingestor.delete_document(&name, &id).await?;
    if n == 0 {
        return Err(aistack_core::Error::NotFound {
            what: format!("document {id:?} in collection {name:?}"),
        }
        .into());
    }
    Ok(Json(Deleted {
        deleted: true,
        records: Some(n),
    }))
}

/// `POST /v1/collections/{name}/search` request: exactly one of `query` and `vector`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    /// Text to search for (embedded as a query).
    #[schema(min_length = 1, pattern = "\\S")]
    pub query: Option<String>,
    /// A query vector with the collection's dimensions.
    #[schema(min_items = 1)]
    pub vector: Option<Vec<f32>>,
    /// Hits wanted (default 10; at most `server.max_search_k`).
    #[schema(minimum = 1)]
    pub k: Option<usize>,
    /// A metadata filter in the JSON filter language (`$eq`, `$in`, `$and`, ...).
    #[schema(value_type = Object)]
    pub filter: Option<Value>,
    /// Only hits scoring at least this.
    pub min_score: Option<f32>,
}

/// One search hit: a chunk of a document.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SearchHit {
    /// The chunk's id (`{document id}#{chunk index}`).
    pub id: String,
    /// The document it belongs to.
    pub document_id: String,
    /// Higher is better.
    pub score: f32,
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

/// Searches a collection by text or by vector.
#[utoipa::path(post, path = "/v1/collections/{name}/search", request_body = SearchBody,
    params(("name" = String, Path, description = "collection name", pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")),
    responses((status = 200, body = SearchResult), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
pub async fn search(
    State(app): State<Arc<AppState>>,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<SearchBody>,
) -> ApiResult<Json<SearchResult>> {
    let k = req.k.unwrap_or(10);
    if k == 0 || k > app.settings.server.max_search_k {
        return Err(ApiError::invalid(format!(
            "k must be 1 to {} (server.max_search_k), got {k}",
            app.settings.server.max_search_k
        )));
    }
    if let Some(s) = req.min_score {
        if !s.is_finite() {
            return Err(ApiError::invalid("min_score must be a finite number"));
        }
    }
    aistack_core::store::validate_collection_name(&name)?;
    let ingestor = app.ingestor().await?;
    let hits: Vec<SearchHit> = match (req.query, req.vector) {
        (Some(q), None) => {
            // Empty and over-long queries are refused by the engine's own input checks.
            let hits = ingestor
                .search(&name, &q, k, req.filter.as_ref(), req.min_score)
                .await?;
            hits.iter().map(Into::into).collect()
        }
        (None, Some(v)) => ingestor
            .search_vector(&name, v, k, req.filter.as_ref(), req.min_score)
            .await?
            .iter()
            .map(Into::into)
            .collect(),
        _ => {
            return Err(ApiError::invalid(
                "send exactly one of `query` (text) and `vector`",
            ))
        }
    };
    Ok(Json(SearchResult { hits }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_match_by_id_or_short_name() {
        let served = [
            "sentence-transformers/all-MiniLM-L6-v2",
            "/models/all-MiniLM-L6-v2",
        ];
        assert!(model_matches("all-MiniLM-L6-v2", &served));
        assert!(model_matches(
            "sentence-transformers/all-MiniLM-L6-v2",
            &served
        ));
        assert!(!model_matches("text-embedding-3-small", &served));
    }
}
