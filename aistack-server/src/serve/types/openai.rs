//! OpenAI's embeddings request and response (`POST /v1/embeddings`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Inputs;

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
    /// Matryoshka: keep the first this many dimensions (normalized again), between 1 and the
    /// model's dimensions.
    #[schema(minimum = 1)]
    pub dimensions: Option<u64>,
    /// Accepted and ignored (OpenAI's end-user id).
    #[allow(dead_code)]
    pub user: Option<String>,
    /// aistack's extension: `{"prompt_name": "query"}` embeds with one of the model's prompts
    /// (see `GET /v1/models`).
    pub aistack: Option<EmbeddingsExtension>,
}

/// aistack's fields of an embeddings request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsExtension {
    /// One of the model's prompts by name (its `config_sentence_transformers.json`), prepended
    /// to every input; without it the model's default prompt, if it has one.
    pub prompt_name: Option<String>,
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
