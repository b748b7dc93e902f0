//! Operational routes: health, metrics, the OpenAPI document and the API page.

use std::sync::Arc;
use std::time::Duration;

use aistack_core::embed::ModelState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;

use crate::serve::state::AppState;
use crate::serve::types::ops::{Health, ModelHealth, StoreHealth};

/// Readiness: 200 when ready (`degraded` while the store refuses writes but serves reads); 503
/// while the model loads, after it failed, or when the store is down. The body says which.
#[utoipa::path(get, path = "/health",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn health(State(app): State<Arc<AppState>>) -> Response {
    // `/health` is public by default: it names the model and never shows a server path (a
    // model directory, a failed load's cause). The log has the cause.
    let (state, reason) = match app.engine.state() {
        ModelState::Loading => ("loading", None),
        ModelState::Ready => ("ready", None),
        ModelState::Failed(_) => (
            "failed",
            Some("the model could not be loaded; the server log has the cause".to_string()),
        ),
    };
    let ready = app.engine.embedder().ok();
    let dims = ready.as_ref().map(|e| e.info().dims);
    let queue_wait = ready.as_ref().map(|e| e.queue_wait().into());
    let probe = tokio::time::timeout(Duration::from_secs(2), app.store.list_collections()).await;
    let store_error = match probe {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e.kind().code().to_string()),
        Err(_) => Some("timeout".to_string()),
    };
    // Reads may work while writes fail (a full or read-only disk): degraded, not down.
    let write_error = match store_error {
        Some(_) => None,
        None => {
            match tokio::time::timeout(Duration::from_secs(2), app.store.check_writable()).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.kind().public().code().to_string()),
                Err(_) => Some("timeout".to_string()),
            }
        }
    };
    let ok = state == "ready" && store_error.is_none();
    let store_status = match (&store_error, &write_error) {
        (Some(_), _) => "down",
        (None, Some(_)) => "degraded",
        (None, None) => "ok",
    };
    let status = match (ok, &write_error) {
        (false, _) => "unavailable",
        (true, Some(_)) => "degraded",
        (true, None) => "ok",
    };
    let body = Health {
        status: status.to_string(),
        model: ModelHealth {
            state: state.to_string(),
            reason,
            id: app
                .model_names
                .first()
                .cloned()
                .unwrap_or_else(|| "unnamed".to_string()),
            dims,
            queue_wait,
            details: ready.as_ref().map(|e| e.info().into()),
        },
        store: StoreHealth {
            backend: app.store.backend().to_string(),
            status: store_status.to_string(),
            writable: store_error.is_none() && write_error.is_none(),
            error: store_error.or(write_error),
        },
        breakers: app
            .breakers
            .snapshot()
            .into_iter()
            .map(Into::into)
            .collect(),
        upstreams: app.gateway.health().into_iter().map(Into::into).collect(),
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
    if let Ok(list) = app.store.list_collections().await {
        app.metrics.set_collections(list.len());
    }
    let text = app.metrics.render();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// The OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "OpenAPI document")))]
pub async fn openapi_json(document: Arc<str>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.to_string(),
    )
        .into_response()
}

/// A self-contained API page (no CDN): it reads `/openapi.json` and lists every route.
pub async fn docs() -> Html<&'static str> {
    Html(include_str!("../docs.html"))
}
