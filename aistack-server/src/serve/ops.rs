//! Operational routes: health, metrics, the OpenAPI document and the API page.

use std::sync::Arc;
use std::time::Duration;

use aistack_core::config::ServerSettings;
use aistack_core::embed::ModelState;
use aistack_core::resilience::BreakerSnapshot;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use super::api;
use super::error::{ErrorBody, ErrorDetail};
use super::state::AppState;

/// The model's part of the health report.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelHealth {
    /// `loading`, `ready` or `failed`.
    pub state: String,
    /// Why loading failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The model as configured.
    pub id: String,
    /// Embedding dimensions, once loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dims: Option<usize>,
}

/// The store's part of the health report.
#[derive(Debug, Serialize, ToSchema)]
pub struct StoreHealth {
    /// `embedded`, `pgvector` or `qdrant`.
    pub backend: String,
    /// `ok` or `down`.
    pub status: String,
    /// The error kind when down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One circuit breaker in the health report.
#[derive(Debug, Serialize, ToSchema)]
pub struct BreakerHealth {
    /// The breaker's name.
    pub name: String,
    /// `closed`, `open` or `half_open`.
    pub state: String,
    /// Calls rejected while open.
    pub rejected: u64,
    /// Times it opened.
    pub opened: u64,
}

impl From<BreakerSnapshot> for BreakerHealth {
    fn from(b: BreakerSnapshot) -> Self {
        Self {
            name: b.name,
            state: b.state.as_str().to_string(),
            rejected: b.rejected,
            opened: b.opened,
        }
    }
}

/// `GET /health`: 200 only when the model is ready and the store answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `unavailable`.
    pub status: String,
    /// The embedding model.
    pub model: ModelHealth,
    /// The vector store.
    pub store: StoreHealth,
    /// Every circuit breaker.
    pub breakers: Vec<BreakerHealth>,
}

/// Readiness: 200 when ready; 503 while the model loads, after it failed, or when the store is
/// down. The body says which.
#[utoipa::path(get, path = "/health",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn health(State(app): State<Arc<AppState>>) -> Response {
    let (state, reason) = match app.engine.state() {
        ModelState::Loading => ("loading", None),
        ModelState::Ready => ("ready", None),
        ModelState::Failed(r) => ("failed", Some(r)),
    };
    let dims = app.engine.embedder().ok().map(|e| e.info().dims);
    let probe = tokio::time::timeout(Duration::from_secs(2), app.store.list_collections()).await;
    let store_error = match probe {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e.kind().code().to_string()),
        Err(_) => Some("timeout".to_string()),
    };
    let ok = state == "ready" && store_error.is_none();
    let body = Health {
        status: if ok { "ok" } else { "unavailable" }.to_string(),
        model: ModelHealth {
            state: state.to_string(),
            reason,
            id: app.engine.model_spec().to_string(),
            dims,
        },
        store: StoreHealth {
            backend: app.store.backend().to_string(),
            status: if store_error.is_none() { "ok" } else { "down" }.to_string(),
            error: store_error,
        },
        breakers: app
            .breakers
            .snapshot()
            .into_iter()
            .map(Into::into)
            .collect(),
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut resp = (status, Json(body)).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, "no-store".parse().expect("static"));
    resp
}

/// Prometheus metrics in the OpenMetrics text format.
#[utoipa::path(get, path = "/metrics",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text")))]
pub async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    let text = app.metrics.render(&app).await;
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// The OpenAPI document of this server.
#[derive(OpenApi)]
#[openapi(
    info(title = "aistack", description = "Embeddings, documents and vector search."),
    paths(
        api::embeddings, api::tei_embed, api::list_collections, api::create_collection,
        api::get_collection, api::drop_collection, api::ingest, api::delete_document,
        api::search, health, metrics, openapi_json
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&ErrorResponses)
)]
pub struct ApiDoc;

/// Adds the errors every API route can answer: 413 and 415 for bodies, 429 and 503 for load.
struct ErrorResponses;

impl utoipa::Modify for ErrorResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/v1/") && path != "/embed" {
                continue;
            }
            for op in operations(item) {
                add_error(op, "429", "overloaded: retry after `Retry-After` seconds");
                add_error(op, "503", "not ready, or the request timed out");
            }
        }
    }
}

fn operations(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        item.get.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.put.as_mut(),
        item.patch.as_mut(),
    ]
    .into_iter()
    .flatten()
}

fn add_error(op: &mut utoipa::openapi::path::Operation, status: &str, description: &str) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let response = ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build();
    op.responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| response.into());
}

/// The OpenAPI document as this server is configured: with API keys, a bearer scheme on every
/// route that needs one (documenting its 401) and none on the public ones.
pub fn openapi_document(settings: &ServerSettings) -> String {
    use utoipa::openapi::security::{
        HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
    };
    let mut doc = ApiDoc::openapi();
    if settings.api_key_file.is_some() {
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "api_key",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        doc.security = Some(vec![SecurityRequirement::new(
            "api_key",
            Vec::<String>::new(),
        )]);
        for (path, item) in doc.paths.paths.iter_mut() {
            let public = (path == "/health" && settings.public_health)
                || (path == "/metrics" && settings.public_metrics);
            for op in operations(item) {
                if public {
                    op.security = Some(Vec::new());
                } else {
                    add_error(
                        op,
                        "401",
                        "no valid API key (`Authorization: Bearer <key>`)",
                    );
                }
            }
        }
    }
    doc.to_json().unwrap_or_else(|_| "{}".into())
}

/// The OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "OpenAPI document")))]
pub async fn openapi_json(State(app): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        app.openapi.clone(),
    )
        .into_response()
}

/// A self-contained API page (no CDN): it reads `/openapi.json` and lists every route.
pub async fn docs() -> Html<&'static str> {
    Html(include_str!("docs.html"))
}
