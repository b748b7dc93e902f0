//! DistilBERT (`distilbert`, e.g. msmarco-distilbert-*, multi-qa-distilbert-*): BERT's post-norm
//! layers under other names, learned positions from 0, no token types.

use candle_nn::VarBuilder;

use super::post_norm::{self, Encoder, HiddenAct, LayerNames, Layout, PositionIds, Shape};
use super::unprefixed;

/// The fields of a DistilBERT `config.json` that the encoder reads.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub(crate) struct DistilBertConfig {
    pub vocab_size: usize,
    pub dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub hidden_dim: usize,
    pub activation: HiddenAct,
    pub max_position_embeddings: usize,
}

/// DistilBERT's layer norms are fixed at this epsilon (not in its config).
const EPS: f64 = 1e-12;

/// Where DistilBERT keeps a layer's weights.
const NAMES: LayerNames = LayerNames {
    query: "attention.q_lin",
    key: "attention.k_lin",
    value: "attention.v_lin",
    attn_out: "attention.out_lin",
    attn_norm: "sa_layer_norm",
    up: "ffn.lin1",
    down: "ffn.lin2",
    out_norm: "output_layer_norm",
};

/// Reads a DistilBERT encoder's weights (with or without the `distilbert.` prefix).
pub(crate) fn load(vb: VarBuilder, c: &DistilBertConfig) -> candle_core::Result<Encoder> {
    let vb = unprefixed(vb, "embeddings.word_embeddings.weight", &["distilbert"]);
    let shape = Shape {
        hidden: c.dim,
        heads: c.n_heads,
        intermediate: c.hidden_dim,
        layers: c.n_layers,
        vocab: c.vocab_size,
        max_position_embeddings: c.max_position_embeddings,
        eps: EPS,
        act: c.activation,
    };
    let layout = Layout {
        layers: "transformer.layer",
        names: NAMES,
        position_ids: PositionIds::FromZero,
        token_types: None,
    };
    post_norm::load(&vb, shape, layout, None)
}
