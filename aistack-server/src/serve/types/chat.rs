//! The chat gateway's shapes as the OpenAPI document shows them. Chat and completion bodies are
//! OpenAI's and pass through to the upstream; only the fields aistack reads are described.

use serde::Serialize;
use utoipa::ToSchema;

/// `POST /v1/chat/completions` request: OpenAI's, with any further field passed upstream.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct ChatCompletionRequest {
    /// A chat route's name (see `GET /v1/models`).
    pub model: String,
    /// The conversation: objects with `role` and `content`.
    pub messages: Vec<serde_json::Value>,
    /// Stream the answer as server-sent events.
    pub stream: Option<bool>,
    /// aistack's extension: `{"collections": [...], "k": 4, "filter": {...}, "min_score": 0.2}`
    /// grounds the answer in these collections.
    pub aistack: Option<serde_json::Value>,
}

/// `POST /v1/completions` request: OpenAI's legacy completions, passed upstream.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct CompletionRequest {
    /// A chat route's name.
    pub model: String,
    /// A prompt, or several.
    pub prompt: serde_json::Value,
    /// Stream the answer as server-sent events.
    pub stream: Option<bool>,
}

/// One model in `GET /v1/models`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelEntry {
    /// The name to send as `model`.
    pub id: String,
    /// Always `model`.
    pub object: &'static str,
    /// Always 0: aistack does not track when a model was made.
    pub created: u64,
    /// `aistack` for chat routes, `aistack-embeddings` for the embedding model.
    pub owned_by: &'static str,
    /// For the embedding model once loaded: what it is (architecture, dimensions, pooling,
    /// prompts, input length).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aistack: Option<super::ops::ModelDetails>,
}

/// `GET /v1/models`: every name the server accepts as `model`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: &'static str,
    /// The embedding model's names, then the chat routes.
    pub data: Vec<ModelEntry>,
}
