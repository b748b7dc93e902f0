//! BERT (`model_type` `bert`): learned absolute positions from 0, token type 0 added to every
//! token, the post-norm encoder.

use candle_nn::VarBuilder;

use super::post_norm::{self, CommonConfig, Encoder, LayerNames, Layout, PositionIds};
use super::unprefixed;

/// The fields of a BERT `config.json` that the encoder reads; others are ignored.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub(crate) struct BertConfig {
    #[serde(flatten)]
    pub common: CommonConfig,
    pub type_vocab_size: usize,
    /// Only `absolute` is implemented; anything else is refused rather than computed wrongly.
    #[serde(default)]
    pub position_embedding_type: PositionEmbeddingType,
}

/// How positions are embedded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum PositionEmbeddingType {
    /// One learned vector per position.
    #[default]
    Absolute,
}

/// Where BERT (and the RoBERTa family) keep a layer's weights.
pub(crate) const NAMES: LayerNames = LayerNames {
    query: "attention.self.query",
    key: "attention.self.key",
    value: "attention.self.value",
    attn_out: "attention.output.dense",
    attn_norm: "attention.output.LayerNorm",
    up: "intermediate.dense",
    down: "output.dense",
    out_norm: "output.LayerNorm",
};

/// Reads a BERT encoder's weights (with or without the `bert.` prefix).
pub(crate) fn load(vb: VarBuilder, c: &BertConfig) -> candle_core::Result<Encoder> {
    let vb = unprefixed(vb, "embeddings.word_embeddings.weight", &["bert"]);
    let layout = Layout {
        layers: "encoder.layer",
        names: NAMES,
        position_ids: PositionIds::FromZero,
        token_types: Some(c.type_vocab_size),
    };
    post_norm::load(&vb, c.common.shape(), layout, None)
}
