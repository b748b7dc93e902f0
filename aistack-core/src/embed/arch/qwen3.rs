//! Qwen3 (`qwen3`: Qwen/Qwen3-Embedding-*), a decoder: causal attention, RMS norms (also per head
//! on queries and keys), rotary positions, grouped-query attention and a SwiGLU MLP. Its
//! sentence-transformers pipeline pools the last token, the end-of-text token its tokenizer
//! appends.

use candle_nn::VarBuilder;

use super::pre_norm::{Encoder, GluAct, Layer, Linear, Norm, Placement, Rotary, Shape};
use super::{tensor, unprefixed};
use crate::embed::kernels::attention::Mask;

/// The fields of a Qwen3 `config.json` that the encoder reads.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub(crate) struct Qwen3Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    pub rope_theta: Option<f64>,
    /// transformers 5 writes the base here instead.
    pub rope_parameters: Option<RopeTheta>,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub use_sliding_window: bool,
    pub layer_types: Option<Vec<String>>,
    pub rope_scaling: Option<serde_json::Value>,
}

/// The rotary base (transformers 5's `rope_parameters`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub(crate) struct RopeTheta {
    pub rope_theta: f64,
    #[serde(default)]
    pub rope_type: Option<String>,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_act() -> String {
    "silu".into()
}

impl Qwen3Config {
    fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    fn theta(&self) -> f64 {
        self.rope_parameters
            .as_ref()
            .map(|p| p.rope_theta)
            .or(self.rope_theta)
            .unwrap_or(10_000.0)
    }

    /// What this implementation does not compute, refused rather than computed wrongly.
    fn check(&self) -> candle_core::Result<()> {
        let sliding = self.use_sliding_window
            || self
                .layer_types
                .as_ref()
                .is_some_and(|t| t.iter().any(|t| t != "full_attention"));
        if sliding {
            candle_core::bail!("Qwen3 sliding-window attention is not supported");
        }
        let scaled = self.rope_scaling.as_ref().is_some_and(|v| !v.is_null())
            || self
                .rope_parameters
                .as_ref()
                .and_then(|p| p.rope_type.as_deref())
                .is_some_and(|t| t != "default");
        if scaled {
            candle_core::bail!("Qwen3 rotary scaling is not supported");
        }
        if self.hidden_act != "silu" {
            candle_core::bail!("hidden_act '{}' is not supported", self.hidden_act);
        }
        Ok(())
    }
}

/// Reads a Qwen3 model's weights (with or without the `model.` prefix; the language-model head
/// is not used).
pub(crate) fn load(vb: VarBuilder, c: &Qwen3Config) -> candle_core::Result<Encoder> {
    c.check()?;
    let vb = unprefixed(vb, "embed_tokens.weight", &["model"]);
    let (h, i, heads) = (c.hidden_size, c.intermediate_size, c.num_attention_heads);
    let kv = c.num_key_value_heads.unwrap_or(heads);
    let d = c.head_dim();
    let eps = c.rms_norm_eps;
    let mut layers = Vec::with_capacity(c.num_hidden_layers);
    for n in 0..c.num_hidden_layers {
        let l = vb.pp(format!("layers.{n}"));
        let a = l.pp("self_attn");
        let m = l.pp("mlp");
        layers.push(Layer {
            attn_norm: Some(Norm::rms(&l.pp("input_layernorm"), h, eps)?),
            qkv: Linear::stacked(
                &[
                    (a.pp("q_proj"), heads * d),
                    (a.pp("k_proj"), kv * d),
                    (a.pp("v_proj"), kv * d),
                ],
                h,
            )?,
            q_norm: Some(Norm::rms(&a.pp("q_norm"), d, eps)?),
            k_norm: Some(Norm::rms(&a.pp("k_norm"), d, eps)?),
            out: Linear::load(a.pp("o_proj"), h, heads * d)?,
            mlp_norm: Norm::rms(&l.pp("post_attention_layernorm"), h, eps)?,
            up: Linear::stacked(&[(m.pp("gate_proj"), i), (m.pp("up_proj"), i)], h)?,
            down: Linear::load(m.pp("down_proj"), h, i)?,
            mask: Mask::Causal,
            rotary: 0,
        });
    }
    Encoder::new(
        Shape {
            hidden: h,
            heads,
            kv_heads: kv,
            head_dim: d,
            intermediate: i,
            vocab: c.vocab_size,
            max_positions: c.max_position_embeddings,
            act: GluAct::Silu,
            placement: Placement::Pre,
        },
        tensor(&vb, (c.vocab_size, h), "embed_tokens.weight")?,
        None,
        layers,
        Some(Norm::rms(&vb.pp("norm"), h, eps)?),
        vec![Rotary::new(d, c.theta())],
    )
}
