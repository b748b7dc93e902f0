//! text-embeddings-inference's request (`POST /embed`).

use serde::Deserialize;
use utoipa::ToSchema;

use super::Inputs;

/// `POST /embed` request (text-embeddings-inference compatible).
#[derive(Debug, Deserialize, ToSchema)]
pub struct TeiEmbedRequest {
    /// A text or an array of texts.
    pub inputs: Inputs,
    /// L2-normalize (default true); `false` returns the pooled vectors as the model computes them.
    #[serde(default = "yes")]
    pub normalize: bool,
    /// Truncate over-long inputs (default false: they are refused, as TEI does).
    #[serde(default)]
    pub truncate: bool,
    /// One of the model's prompts by name, prepended to every input.
    pub prompt_name: Option<String>,
    /// Matryoshka: keep the first this many dimensions (normalized again when `normalize`).
    #[schema(minimum = 1)]
    pub dimensions: Option<usize>,
}

pub(crate) fn yes() -> bool {
    true
}
