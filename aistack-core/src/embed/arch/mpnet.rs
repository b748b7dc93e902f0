//! MPNet (`model_type` `mpnet`, e.g. all-mpnet-base-v2): positions counted from the padding id
//! as fairseq does, no token types, and a bias by bucketed relative position added to every
//! layer's attention scores, over the post-norm encoder.

use candle_nn::VarBuilder;

use super::post_norm::{
    self, CommonConfig, Encoder, LayerNames, Layout, PositionIds, RelativeBias,
};
use super::{tensor, unprefixed};

/// The fields of an MPNet `config.json` that the encoder reads.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub(crate) struct MpNetConfig {
    #[serde(flatten)]
    pub common: CommonConfig,
    #[serde(default = "default_pad")]
    pub pad_token_id: u32,
    #[serde(default = "default_buckets")]
    pub relative_attention_num_buckets: usize,
}

fn default_pad() -> u32 {
    1
}

fn default_buckets() -> usize {
    32
}

/// The farthest relative position with a bucket of its own (transformers' constant for MPNet).
const MAX_DISTANCE: usize = 128;

impl MpNetConfig {
    fn positions(&self) -> PositionIds {
        PositionIds::AfterPadding {
            pad: self.pad_token_id,
        }
    }

    /// Longest sequence: the position table less the positions below the first one.
    pub(crate) fn max_positions(&self) -> usize {
        self.positions().usable(self.common.max_position_embeddings)
    }
}

/// Where MPNet keeps a layer's weights.
const NAMES: LayerNames = LayerNames {
    query: "attention.attn.q",
    key: "attention.attn.k",
    value: "attention.attn.v",
    attn_out: "attention.attn.o",
    attn_norm: "attention.LayerNorm",
    up: "intermediate.dense",
    down: "output.dense",
    out_norm: "output.LayerNorm",
};

/// Reads an MPNet encoder's weights (with or without the `mpnet.` prefix).
pub(crate) fn load(vb: VarBuilder, c: &MpNetConfig) -> candle_core::Result<Encoder> {
    let vb = unprefixed(vb, "embeddings.word_embeddings.weight", &["mpnet"]);
    let (buckets, heads) = (
        c.relative_attention_num_buckets,
        c.common.num_attention_heads,
    );
    let relative = RelativeBias {
        table: tensor(
            &vb.pp("encoder"),
            (buckets, heads),
            "relative_attention_bias.weight",
        )?,
        buckets,
        max_distance: MAX_DISTANCE,
    };
    let layout = Layout {
        layers: "encoder.layer",
        names: NAMES,
        position_ids: c.positions(),
        token_types: None,
    };
    post_norm::load(&vb, c.common.shape(), layout, Some(relative))
}
