//! Collections, documents and search. Each handler converts HTTP shapes to core calls and
//! back; the logic lives in aistack-core.

use std::sync::Arc;

use aistack_core::embed::EmbedOptions;
use aistack_core::ingest::Document;
use aistack_core::ingest::SearchOptions;
use aistack_core::store::{Analyzer, CollectionSpec, Metric, SearchMode};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{ApiJson, ApiPath, ApiResult};
use crate::serve::error::{ApiError, ErrorBody};
use crate::serve::state::AppState;
use crate::serve::types::collections::{
    CollectionList, CollectionView, CreateCollection, Deleted, IngestRequest, IngestResult,
    SearchBody, SearchHit, SearchResult,
};

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
    let metric = Metric::parse(req.metric.as_deref().unwrap_or("cosine"))?;
    let analyzer = Analyzer::parse(req.analyzer.as_deref().unwrap_or("english"))?;
    let spec = match (req.dims, req.dimensions) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "give `dims` (vectors of any model) or `dimensions` (the served model's, cut), not both",
            ))
        }
        (Some(dims), None) => CollectionSpec::new(req.name, dims, metric),
        (None, cut) => {
            let embedder = app.embedder().await?;
            // The width is checked as /v1/embeddings checks `dimensions`.
            let dims = embedder.output_dims(&EmbedOptions {
                prompt_name: None,
                dimensions: cut,
            })?;
            let origin = aistack_core::embed::Embedder::origin(embedder.as_ref()).clone();
            CollectionSpec::new(req.name, dims, metric).with_embedding(Some(origin))
        }
    };
    let spec = spec.with_analyzer(analyzer);
    app.store.create_collection(&spec).await?;
    app.invalidate(&spec.name);
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
    let mode = SearchMode::parse(req.mode.as_deref().unwrap_or("vector"))?;
    if req.fusion.is_some() && mode != SearchMode::Hybrid {
        return Err(ApiError::invalid("`fusion` applies to hybrid search only"));
    }
    if mode != SearchMode::Vector && req.vector.is_some() {
        return Err(ApiError::invalid(format!(
            "{} search takes `query` (text), not `vector`",
            mode.as_str()
        )));
    }
    let ingestor = app.ingestor().await?;
    let hits: Vec<SearchHit> = match (req.query, req.vector) {
        (Some(q), None) => {
            // Empty and over-long queries are refused by the engine's own input checks.
            let opts = SearchOptions {
                mode,
                filter: req.filter,
                min_score: req.min_score,
                fusion: req.fusion.map(|f| f.to_fusion()).unwrap_or_default(),
            };
            let hits = ingestor.search_with(&name, &q, k, &opts).await?;
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
