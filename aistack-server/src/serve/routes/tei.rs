//! The text-embeddings-inference-compatible route.

use std::sync::Arc;

use aistack_core::embed::{EmbedOptions, InputKind, Norm};
use axum::extract::State;
use axum::Json;

use super::{ApiJson, ApiResult};
use crate::serve::error::{ApiError, ErrorBody};
use crate::serve::state::AppState;
use crate::serve::types::tei::TeiEmbedRequest;

/// TEI's root route, which `huggingface_hub`'s `InferenceClient(base_url=...)
/// .feature_extraction(...)` calls: the same as `POST /embed`.
#[utoipa::path(post, path = "/", request_body = TeiEmbedRequest,
    responses((status = 200, body = Vec<Vec<f32>>), (status = "4XX", body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
pub async fn tei_root(
    app: State<Arc<AppState>>,
    req: ApiJson<TeiEmbedRequest>,
) -> ApiResult<Json<Vec<Vec<f32>>>> {
    tei_embed(app, req).await
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
    let embedder = app.embedder().await?;
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
    let options = EmbedOptions {
        prompt_name: req.prompt_name,
        dimensions: req.dimensions,
    };
    Ok(Json(
        embedder
            .embed_with(&texts, InputKind::Plain, norm, &options)
            .await?,
    ))
}
