//! Operational routes: health, metrics, the OpenAPI document and the API page.

use std::sync::Arc;
use std::time::Duration;

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
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        openapi.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "api_key",
            Vec::<String>::new(),
        )]);
    }
}

/// The OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "OpenAPI document")))]
pub async fn openapi_json() -> Response {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let doc = DOC.get_or_init(|| ApiDoc::openapi().to_json().unwrap_or_else(|_| "{}".into()));
    ([(header::CONTENT_TYPE, "application/json")], doc.as_str()).into_response()
}

/// A self-contained API page (no CDN): it reads `/openapi.json` and lists every route.
pub async fn docs() -> Html<&'static str> {
    Html(include_str!("docs.html"))
}
