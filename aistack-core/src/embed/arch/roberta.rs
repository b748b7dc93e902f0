//! The RoBERTa family (`roberta`, `xlm-roberta`, `camembert`: e5 multilingual,
//! paraphrase-multilingual-*, bge-m3): BERT's layers and weight names under the `roberta.` prefix,
//! with positions counted from the padding id as fairseq does (the first token is at `pad + 1`).

use candle_nn::VarBuilder;

use super::bert::{PositionEmbeddingType, NAMES};
use super::post_norm::{self, CommonConfig, Encoder, Layout, PositionIds};
use super::unprefixed;

/// The fields of a RoBERTa-family `config.json` that the encoder reads.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub(crate) struct RobertaConfig {
    #[serde(flatten)]
    pub common: CommonConfig,
    pub type_vocab_size: usize,
    #[serde(default = "default_pad")]
    pub pad_token_id: u32,
    /// Only `absolute` is implemented; anything else is refused rather than computed wrongly.
    #[serde(default)]
    pub position_embedding_type: PositionEmbeddingType,
}

fn default_pad() -> u32 {
    1
}

impl RobertaConfig {
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

/// Reads a RoBERTa-family encoder's weights (with or without the `roberta.` prefix).
pub(crate) fn load(vb: VarBuilder, c: &RobertaConfig) -> candle_core::Result<Encoder> {
    let vb = unprefixed(vb, "embeddings.word_embeddings.weight", &["roberta"]);
    let layout = Layout {
        layers: "encoder.layer",
        names: NAMES,
        position_ids: c.positions(),
        token_types: Some(c.type_vocab_size),
    };
    post_norm::load(&vb, c.common.shape(), layout, None)
}
