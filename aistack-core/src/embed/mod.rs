//! Text embeddings: the [`Embedder`] trait, the CPU backend ([`SentenceModel`]), the dynamic
//! [`Batcher`], and the [`EmbeddingEngine`] that loads a model in the background and serves it
//! with validation, caching and batching.
//!
//! The backend is laid out by what changes with the model:
//! - `kernels/`: the shared pieces of every forward pass (linear layers over panels, attention
//!   and its position schemes, vectorized activations and norms);
//! - `arch/`: one file per transformer architecture, wiring those pieces as its layers do;
//! - `pipeline`: the sentence-transformers modules after the transformer (pooling, Dense,
//!   Normalize);
//! - `model`: the tokenizer and all of the above as one [`SentenceModel`].

mod arch;
mod batcher;
mod engine;
mod kernels;
mod model;
mod pipeline;
mod source;
mod validate;

use std::future::Future;

use async_trait::async_trait;
use futures::stream::{Stream, StreamExt, TryStreamExt};

pub use arch::SUPPORTED as ARCHITECTURES;
pub use batcher::{
    calibrated_bound, time_passes, Admission, BatchCompute, Batcher, BatcherConfig, BatcherStats,
    QueueWaitInfo, QueueWaitSource, Sequences, CALIBRATION_FACTOR, INTERACTIVE_COST,
};
pub use engine::{EmbedOptions, EmbeddingEngine, EngineStats, ModelEmbedder, ModelState, Norm};
pub use model::{normalize, ModelInfo, SentenceModel, COMPUTE_NICE};
pub use pipeline::Pooling;
pub use source::{model_matches, model_names, DenseFiles, ModelFiles, ModelSource};
pub use validate::InputLimits;

use crate::error::{Error, Result};

/// Groups of one long list in flight at once by default: enough for the batcher to pack full
/// forward passes while one computes, few enough to leave admission to other callers.
pub const GROUPS_IN_FLIGHT: usize = 4;

/// The one way a long list of texts is embedded: `embed` runs on groups of at most `group`
/// texts, `in_flight` groups at a time, and the stream yields each group's result in order.
pub(crate) fn in_groups<'a, T, F, Fut>(
    texts: &'a [String],
    group: usize,
    in_flight: usize,
    embed: F,
) -> impl Stream<Item = Result<T>> + 'a
where
    F: FnMut(&'a [String]) -> Fut,
    Fut: Future<Output = Result<T>> + 'a,
    T: 'a,
{
    // The futures are made up front (they are lazy: nothing runs or is embedded before the
    // stream polls them) so the stream's type names no closure, which keeps handlers `Send`.
    let work: Vec<Fut> = texts.chunks(group.max(1)).map(embed).collect();
    futures::stream::iter(work).buffered(in_flight.max(1))
}

/// Embeds any number of texts through `embedder` in groups it accepts (`max_batch`), with
/// `in_flight` groups sent at once ([`GROUPS_IN_FLIGHT`] suits most callers); `out[i]` embeds
/// `texts[i]`.
pub async fn embed_all(
    embedder: &dyn Embedder,
    texts: &[String],
    kind: InputKind,
    in_flight: usize,
) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(texts.len());
    let groups = in_groups(texts, embedder.max_batch(), in_flight, |g| {
        embedder.embed(g, kind)
    });
    let mut groups = std::pin::pin!(groups);
    while let Some(vectors) = groups.try_next().await? {
        out.extend(vectors);
    }
    Ok(out)
}

/// Embeds one search query (with the model's query prefix); a blank query is `InvalidInput`.
pub async fn embed_query(embedder: &dyn Embedder, query: &str) -> Result<Vec<f32>> {
    if query.trim().is_empty() {
        return Err(Error::invalid("the query is empty"));
    }
    Ok(embedder
        .embed(&[query.to_string()], InputKind::Query)
        .await?
        .pop()
        .unwrap_or_default())
}

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
    /// The model and prompts this embedder's vectors come from, as collections record them.
    fn origin(&self) -> &crate::store::EmbeddingOrigin;
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
