//! The OpenAI-compatible embeddings route.

use std::sync::Arc;

use aistack_core::embed::{model_matches, EmbedOptions, InputKind, Norm};
use aistack_core::ErrorKind;
use axum::extract::State;
use axum::Json;
use base64::Engine as _;

use super::{ApiJson, ApiResult};
use crate::serve::error::{ApiError, ErrorBody};
use crate::serve::state::AppState;
use crate::serve::types::openai::{
    Embedding, EmbeddingItem, EmbeddingsRequest, EmbeddingsResponse, Usage,
};

/// Every accepted model name, quoted, for error messages: embedding names, then chat routes.
pub fn served_names(app: &AppState) -> String {
    app.model_names
        .iter()
        .map(String::as_str)
        .chain(app.gateway.route_names())
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
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
    let embedder = app.embedder().await?;
    let info = embedder.info();
    let served = app
        .model_names
        .first()
        .cloned()
        .unwrap_or_else(|| info.model_id.clone());
    if let Some(m) = &req.model {
        if !model_matches(m, &app.model_names) {
            return Err(ApiError::new(
                ErrorKind::NotFound,
                format!(
                    "model {:?} is not served here; this server serves {}",
                    m.chars().take(64).collect::<String>(),
                    served_names(&app)
                ),
            ));
        }
    }
    let options = EmbedOptions {
        prompt_name: req.aistack.and_then(|a| a.prompt_name),
        dimensions: req
            .dimensions
            .map(|d| usize::try_from(d).unwrap_or(usize::MAX)),
    };
    let vectors = embedder
        .embed_with(&texts, InputKind::Plain, Norm::Model, &options)
        .await?;
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
