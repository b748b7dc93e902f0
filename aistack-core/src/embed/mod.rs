//! Text embeddings: the [`Embedder`] trait, the candle BERT backend ([`SentenceModel`]), the
//! dynamic [`Batcher`], and the [`EmbeddingEngine`] that loads a model in the background and
//! serves it with validation, caching and batching.

mod batcher;
mod bert;
mod engine;
pub mod jsonl;
mod model;
mod source;
mod validate;

use async_trait::async_trait;

pub use batcher::{Admission, BatchCompute, Batcher, BatcherConfig, BatcherStats};
pub use engine::{EmbeddingEngine, EngineStats, ModelEmbedder, ModelState, Norm};
pub use model::{normalize, ModelInfo, Pooling, SentenceModel};
pub use source::{ModelFiles, ModelSource};
pub use validate::InputLimits;

use crate::error::Result;

/// What a text is, so the model's query or passage prefix can be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum InputKind {
    /// Embed the text as given.
    #[default]
    Plain,
    /// A search query (e5's `"query: "`, bge's instruction).
    Query,
    /// A passage or document to be searched (e5's `"passage: "`).
    Passage,
}

/// Turns texts into vectors. Order-preserving: `out[i]` embeds `texts[i]`.
#[async_trait]
pub trait Embedder: Send + Sync {
    /// The model's id, e.g. `sentence-transformers/all-MiniLM-L6-v2`.
    fn model_id(&self) -> &str;
    /// The length of every vector returned.
    fn dims(&self) -> usize;
    /// Longest input in tokens; longer inputs are truncated.
    fn max_input_tokens(&self) -> usize;
    /// Most texts one [`Embedder::embed`] call accepts.
    fn max_batch(&self) -> usize;
    /// Byte ranges of `text`'s tokens (no special tokens, no truncation), for chunking.
    fn token_spans(&self, text: &str) -> Result<Vec<std::ops::Range<usize>>>;
    /// Embeds `texts` as `kind`, one vector per text, in order.
    async fn embed(&self, texts: &[String], kind: InputKind) -> Result<Vec<Vec<f32>>>;
}
