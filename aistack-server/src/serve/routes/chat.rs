//! The chat gateway's routes: `GET /v1/models`, `POST /v1/chat/completions` and
//! `POST /v1/completions`. The gateway in aistack-core does the work; this turns its answer into
//! a JSON response or a server-sent event stream.

use std::convert::Infallible;
use std::sync::Arc;

use aistack_core::embed::model_matches;
use aistack_core::llm::{ChatReply, ChatRequest, Endpoint, Grounding, Retriever};
use aistack_core::ErrorKind;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use serde_json::{Map, Value};

use super::openai::served_names;
use super::{ApiJson, ApiResult};
use crate::serve::error::{ApiError, ErrorBody};
use crate::serve::router::REQUEST_ID;
use crate::serve::state::AppState;
use crate::serve::types::chat::{ChatCompletionRequest, CompletionRequest, ModelEntry, ModelList};
use crate::serve::types::ops::ModelDetails;

/// The upstream that answered.
pub const UPSTREAM_HEADER: &str = "x-aistack-upstream";
/// Set when a grounded route answered without sources because the search failed; the value is
/// the failure's error code.
pub const GROUNDING_HEADER: &str = "x-aistack-grounding-skipped";

/// Every name the server accepts as `model`: the embedding model's, then the chat routes.
#[utoipa::path(get, path = "/v1/models", responses((status = 200, body = ModelList)))]
pub async fn list_models(State(app): State<Arc<AppState>>) -> Json<ModelList> {
    let details: Option<ModelDetails> = app.engine.embedder().ok().map(|e| e.info().into());
    let embedding = app.model_names.iter().map(|n| ModelEntry {
        id: n.clone(),
        object: "model",
        created: 0,
        owned_by: "aistack-embeddings",
        aistack: details.clone(),
    });
    let chat = app.gateway.route_names().into_iter().map(|n| ModelEntry {
        id: n.to_string(),
        object: "model",
        created: 0,
        owned_by: "aistack",
        aistack: None,
    });
    Json(ModelList {
        object: "list",
        data: embedding.chain(chat).collect(),
    })
}

/// OpenAI-compatible chat, streaming or not, through the route named by `model`.
#[utoipa::path(post, path = "/v1/chat/completions", request_body = ChatCompletionRequest,
    responses((status = 200, description = "OpenAI chat completion, or an event stream when `stream` is true"),
              (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn chat_completions(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> ApiResult<Response> {
    answer(app, headers, Endpoint::Chat, body).await
}

/// OpenAI-compatible legacy completions, passed through the route named by `model`.
#[utoipa::path(post, path = "/v1/completions", request_body = CompletionRequest,
    responses((status = 200, description = "OpenAI completion, or an event stream when `stream` is true"),
              (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn completions(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> ApiResult<Response> {
    answer(app, headers, Endpoint::Completions, body).await
}

fn grounding_headers(resp: &mut Response, upstream: &str, grounding: &Grounding) {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(upstream) {
        h.insert(UPSTREAM_HEADER, v);
    }
    if let Some(code) = &grounding.skipped {
        if let Ok(v) = HeaderValue::from_str(code) {
            h.insert(GROUNDING_HEADER, v);
        }
    }
}

async fn answer(
    app: Arc<AppState>,
    headers: HeaderMap,
    endpoint: Endpoint,
    body: Map<String, Value>,
) -> ApiResult<Response> {
    if let Some(Value::String(m)) = body.get("model") {
        if !app.gateway.has_route(m) {
            let what = if model_matches(m, &app.model_names) {
                "is the embedding model; chat needs a chat route"
            } else {
                "is not served here"
            };
            return Err(ApiError::new(
                ErrorKind::NotFound,
                format!(
                    "model {:?} {what}; this server serves {}",
                    m.chars().take(64).collect::<String>(),
                    served_names(&app)
                ),
            ));
        }
    }
    let request_id = headers
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let retriever: &dyn Retriever = app.as_ref();
    let reply = app
        .gateway
        .chat(
            ChatRequest {
                endpoint,
                body,
                request_id,
            },
            Some(retriever),
        )
        .await?;
    Ok(match reply {
        ChatReply::Full {
            upstream,
            status,
            body,
            grounding,
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            let mut resp = (status, Json(body)).into_response();
            grounding_headers(&mut resp, &upstream, &grounding);
            resp
        }
        ChatReply::Stream {
            upstream,
            events,
            grounding,
        } => {
            let body = Body::from_stream(events.map(Ok::<_, Infallible>));
            let mut resp = Response::new(body);
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            // Proxies such as nginx must pass each event on, not buffer the answer.
            h.insert("x-accel-buffering", HeaderValue::from_static("no"));
            grounding_headers(&mut resp, &upstream, &grounding);
            resp
        }
    })
}
