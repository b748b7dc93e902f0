//! The router and its layers, read top to bottom in one `ServiceBuilder`: request ids, panics
//! caught as JSON, tracing, metrics, auth, body limits, and (on API routes) a request timeout and
//! a concurrency limit that sheds load as 429.

use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::Response as HttpResponse;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::{BoxError, ServiceBuilder};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, OnResponse, TraceLayer};
use tower_http::validate_request::ValidateRequestHeaderLayer;
use tracing::Level;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::auth::{ApiKeys, RequireKey};
use super::error::ApiError;
use super::metrics;
use super::openapi::openapi_document;
use super::routes::{chat, collections, openai, ops, tei};
use super::state::AppState;

/// The request-id header: taken from the request when well-formed, else generated.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A client's request id is kept if it is 1 to 128 characters of `A-Z a-z 0-9 - _ . :`.
pub fn well_formed_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    (1..=128).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'))
}

fn drop_malformed_request_id(mut req: Request) -> Request {
    let bad = req
        .headers()
        .get_all(&REQUEST_ID)
        .iter()
        .enumerate()
        .any(|(i, v)| i > 0 || !well_formed_request_id(v));
    if bad {
        req.headers_mut().remove(&REQUEST_ID);
    }
    req
}

/// A request with a body that is shed or cut off by the API's layers may still have body bytes
/// on the wire that no one reads: the answer closes the connection and says so
/// (`Connection: close`). A bodiless request keeps its connection.
async fn shed_or_timeout(headers: HeaderMap, err: BoxError) -> ApiError {
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0");
    let close = |e: ApiError| if has_body { e.closing() } else { e };
    if err.is::<tower::timeout::error::Elapsed>() {
        close(ApiError::request_timeout())
    } else if err.is::<tower::load_shed::error::Overloaded>() {
        close(ApiError::overloaded())
    } else {
        aistack_core::Error::internal("the request pipeline failed", err).into()
    }
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::from(aistack_core::Error::internal(
        "a request handler panicked",
        std::io::Error::other("panic"),
    ))
    .into_response()
}

async fn no_route() -> ApiError {
    ApiError::no_route()
}

async fn wrong_method() -> ApiError {
    ApiError::wrong_method()
}

/// The paths that answer without an API key, given the settings.
fn public_paths(app: &AppState) -> Vec<&'static str> {
    let mut p = Vec::new();
    if app.settings.server.public_health {
        p.push("/health");
    }
    if app.settings.server.public_metrics {
        p.push("/metrics");
    }
    p
}

/// The span of one request, named by its route template (`POST /v1/collections/{name}/search`,
/// as OpenTelemetry's HTTP conventions ask, so names stay few). It carries the request id, and
/// continues the caller's trace when the request has a W3C `traceparent`.
fn request_span(req: &Request) -> tracing::Span {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let route = metrics::route_of(req);
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("{} {}", req.method(), route),
        otel.kind = "server",
        method = %req.method(),
        route = %route,
        path = %req.uri().path(),
        request_id = %id,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&HeaderExtractor(req.headers()))
    });
    let _ = span.set_parent(parent);
    span
}

/// Logs the response (as tower-http does) and records its status on the request span.
#[derive(Clone)]
struct RecordStatus(DefaultOnResponse);

impl<B> OnResponse<B> for RecordStatus {
    fn on_response(self, res: &HttpResponse<B>, latency: Duration, span: &tracing::Span) {
        span.record("http.response.status_code", res.status().as_u16());
        if res.status().is_server_error() {
            span.record("otel.status_code", "ERROR");
        }
        self.0.on_response(res, latency, span);
    }
}

/// Reads W3C trace context from request headers.
struct HeaderExtractor<'a>(&'a axum::http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The whole application: every route with every layer.
pub fn router(app: Arc<AppState>, keys: Option<ApiKeys>) -> Router {
    let s = &app.settings.server;
    let guarded = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(shed_or_timeout))
        .load_shed()
        .layer(GlobalConcurrencyLimitLayer::with_semaphore(
            app.api_slots.clone(),
        ))
        .timeout(Duration::from_millis(s.request_timeout_ms));
    let api = Router::new()
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/embed", post(tei::tei_embed))
        .route(
            "/v1/collections",
            get(collections::list_collections).post(collections::create_collection),
        )
        .route(
            "/v1/collections/{name}",
            get(collections::get_collection).delete(collections::drop_collection),
        )
        .route(
            "/v1/collections/{name}/documents",
            post(collections::ingest),
        )
        .route(
            "/v1/collections/{name}/documents/{id}",
            delete(collections::delete_document),
        )
        .route("/v1/collections/{name}/search", post(collections::search))
        .route("/", post(tei::tei_root))
        .route("/v1/models", get(chat::list_models))
        .route_layer(guarded);
    // Chat answers run for minutes and stream: the gateway's own deadlines, per-route limits
    // (429 when full) and body limit apply instead of the API's timeout and concurrency cap.
    let chat = Router::new()
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/completions", post(chat::completions))
        .route_layer(DefaultBodyLimit::max(app.settings.llm.max_body_bytes));
    let document: Arc<str> =
        openapi_document(s, keys.is_some(), !app.gateway.route_names().is_empty()).into();
    let ops = Router::new()
        .route("/health", get(ops::health))
        .route("/metrics", get(ops::metrics))
        .route(
            "/openapi.json",
            get(move || ops::openapi_json(document.clone())),
        )
        .route("/docs", get(ops::docs));
    // MCP over streamable HTTP: its tool calls take the API's request slots and deadline
    // themselves, so an overload or a timeout is a tool error, not a protocol failure.
    let mcp = Router::new()
        .route_service("/mcp", crate::mcp::http_service(app.clone()))
        .route_layer(axum::middleware::from_fn_with_state(
            s.max_body_bytes,
            crate::mcp::json_errors,
        ));
    let require = RequireKey::new(keys, public_paths(&app));
    // Outermost first: each request passes these top to bottom, its response bottom to top.
    let layers = ServiceBuilder::new()
        .map_request(drop_malformed_request_id)
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(SetSensitiveRequestHeadersLayer::new([
            axum::http::header::AUTHORIZATION,
        ]))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(RecordStatus(DefaultOnResponse::new().level(Level::INFO)))
                // Errors are logged once, by `ApiError`, at the level their kind deserves.
                .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
        )
        .layer(axum::middleware::from_fn_with_state(
            app.metrics.clone(),
            metrics::record,
        ))
        .layer(ValidateRequestHeaderLayer::custom(require))
        .layer(DefaultBodyLimit::max(s.max_body_bytes));
    api.merge(chat)
        .merge(mcp)
        .merge(ops)
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(layers)
        .with_state(app)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_checked() {
        let ok = |s: &str| well_formed_request_id(&HeaderValue::from_str(s).unwrap());
        assert!(ok("abc-123_x.y:z"));
        assert!(!ok(""));
        assert!(!ok("has space"));
        assert!(!ok(&"a".repeat(129)));
        assert!(!ok("quote\"d"));
    }
}
