//! ModernBERT (`modernbert`: nomic-ai/modernbert-embed-base, Alibaba-NLP/gte-modernbert-base):
//! pre-norm layers without biases, rotary positions, a GeGLU MLP, and attention that alternates
//! between global layers (every `global_attn_every_n_layers`-th, from the first) and local ones
//! that see `local_attention / 2` tokens either side, each with its own rotary base.

use candle_nn::VarBuilder;

use super::pre_norm::{Encoder, GluAct, Layer, Linear, Norm, Placement, Rotary, Shape};
use super::{tensor, unprefixed};
use crate::embed::kernels::attention::Mask;

/// The fields of a ModernBERT `config.json` that the encoder reads.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub(crate) struct ModernBertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default = "default_act")]
    pub hidden_activation: String,
    pub max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    pub norm_eps: f64,
    #[serde(default = "default_global_theta")]
    pub global_rope_theta: f64,
    pub local_rope_theta: Option<f64>,
    #[serde(default = "default_local")]
    pub local_attention: usize,
    #[serde(default = "default_every")]
    pub global_attn_every_n_layers: usize,
    /// transformers 5 writes the bases per attention type here instead.
    pub rope_parameters: Option<RopeParameters>,
    /// transformers 5 lists each layer's attention type instead of the period.
    pub layer_types: Option<Vec<String>>,
}

/// Rotary bases by attention type (transformers 5's `rope_parameters`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub(crate) struct RopeParameters {
    pub full_attention: Option<RopeBase>,
    pub sliding_attention: Option<RopeBase>,
}

/// One rotary base.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub(crate) struct RopeBase {
    pub rope_theta: f64,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_eps() -> f64 {
    1e-5
}
fn default_global_theta() -> f64 {
    160_000.0
}
fn default_local() -> usize {
    128
}
fn default_every() -> usize {
    3
}

impl ModernBertConfig {
    /// The rotary bases of global and local layers.
    fn thetas(&self) -> (f64, f64) {
        let p = self.rope_parameters.as_ref();
        let global = p
            .and_then(|p| p.full_attention.as_ref())
            .map_or(self.global_rope_theta, |b| b.rope_theta);
        let local = p
            .and_then(|p| p.sliding_attention.as_ref())
            .map(|b| b.rope_theta)
            .or(self.local_rope_theta)
            .unwrap_or(global);
        (global, local)
    }

    /// Whether layer `i` attends globally.
    fn is_global(&self, i: usize) -> bool {
        match &self.layer_types {
            Some(t) => t.get(i).is_some_and(|t| t == "full_attention"),
            None => i.is_multiple_of(self.global_attn_every_n_layers.max(1)),
        }
    }

    fn act(&self) -> candle_core::Result<GluAct> {
        Ok(match self.hidden_activation.as_str() {
            "gelu" => GluAct::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" => GluAct::GeluTanh,
            "silu" | "swish" => GluAct::Silu,
            other => candle_core::bail!("hidden_activation '{other}' is not supported"),
        })
    }
}

/// Reads a ModernBERT encoder's weights (with or without the `model.` prefix).
pub(crate) fn load(vb: VarBuilder, c: &ModernBertConfig) -> candle_core::Result<Encoder> {
    let vb = unprefixed(vb, "embeddings.tok_embeddings.weight", &["model"]);
    let (h, i, heads) = (c.hidden_size, c.intermediate_size, c.num_attention_heads);
    let shape = Shape::multi_head(
        h,
        heads,
        i,
        (c.vocab_size, c.max_position_embeddings),
        c.act()?,
        Placement::Pre,
    )?;
    let eps = c.norm_eps;
    let mut layers = Vec::with_capacity(c.num_hidden_layers);
    for n in 0..c.num_hidden_layers {
        let l = vb.pp(format!("layers.{n}"));
        let global = c.is_global(n);
        layers.push(Layer {
            attn_norm: if l.contains_tensor("attn_norm.weight") {
                Some(Norm::layer(&l.pp("attn_norm"), h, eps)?)
            } else {
                None
            },
            qkv: Linear::load(l.pp("attn.Wqkv"), 3 * h, h)?,
            q_norm: None,
            k_norm: None,
            out: Linear::load(l.pp("attn.Wo"), h, h)?,
            mlp_norm: Norm::layer(&l.pp("mlp_norm"), h, eps)?,
            up: Linear::load(l.pp("mlp.Wi"), 2 * i, h)?,
            down: Linear::load(l.pp("mlp.Wo"), h, i)?,
            mask: if global {
                Mask::Full
            } else {
                Mask::Window(c.local_attention / 2)
            },
            rotary: usize::from(!global),
        });
    }
    let (global, local) = c.thetas();
    Encoder::new(
        shape,
        tensor(
            &vb.pp("embeddings"),
            (c.vocab_size, h),
            "tok_embeddings.weight",
        )?,
        Some(Norm::layer(&vb.pp("embeddings.norm"), h, eps)?),
        layers,
        Some(Norm::layer(&vb.pp("final_norm"), h, eps)?),
        vec![
            Rotary::new(h / heads, global),
            Rotary::new(h / heads, local),
        ],
    )
}
