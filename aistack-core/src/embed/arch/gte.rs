//! GTE (`new`: Alibaba-NLP/gte-base-en-v1.5, gte-large-en-v1.5, gte-multilingual-base, a
//! `trust_remote_code` model whose code lives on the Hub in Alibaba-NLP/new-impl): BERT's
//! post-norm layers with rotary positions (static NTK scaling), a fused `qkv_proj`, and a GeGLU
//! MLP whose fused `up_gate_proj` holds the linear half first. Checked against that code
//! (`scripts/make-gte-fixture.py`).

use candle_nn::VarBuilder;

use super::pre_norm::{
    bert_tokens, Encoder, GluAct, Layer, Linear, Norm, Placement, Rotary, Shape,
};
use super::{tensor, unprefixed};
use crate::embed::kernels::attention::Mask;

/// The fields of a GTE (`new`) `config.json` that the encoder reads.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub(crate) struct GteConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_position")]
    pub position_embedding_type: String,
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
    #[serde(default = "default_norm")]
    pub layer_norm_type: String,
    #[serde(default)]
    pub logn_attention_scale: bool,
    #[serde(default = "default_pack")]
    pub pack_qkv: bool,
}

/// `rope_scaling`: only `ntk` without `mixed_b` is computed.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub(crate) struct RopeScaling {
    #[serde(rename = "type")]
    pub kind: String,
    pub factor: f64,
    pub mixed_b: Option<f64>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_eps() -> f64 {
    1e-12
}
fn default_position() -> String {
    "rope".into()
}
fn default_theta() -> f64 {
    10_000.0
}
fn default_norm() -> String {
    "layer_norm".into()
}
fn default_pack() -> bool {
    true
}

impl GteConfig {
    /// What this encoder does not run, refused by name rather than computed differently.
    fn check(&self) -> candle_core::Result<GluAct> {
        let unsupported =
            |what: String| candle_core::bail!("gte (model_type new) with {what} is not supported");
        if self.position_embedding_type != "rope" {
            return unsupported(format!(
                "position_embedding_type '{}'",
                self.position_embedding_type
            ));
        }
        if self.layer_norm_type != "layer_norm" {
            return unsupported(format!("layer_norm_type '{}'", self.layer_norm_type));
        }
        if self.logn_attention_scale || !self.pack_qkv {
            return unsupported("logn_attention_scale or unpacked qkv".into());
        }
        if let Some(s) = &self.rope_scaling {
            if s.kind != "ntk" || s.mixed_b.is_some() {
                return unsupported(format!("rope_scaling type '{}' (or mixed_b)", s.kind));
            }
        }
        match self.hidden_act.as_str() {
            "gelu" => Ok(GluAct::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Ok(GluAct::GeluTanh),
            "silu" | "swish" => Ok(GluAct::Silu),
            other => unsupported(format!("hidden_act '{other}'")),
        }
    }

    /// The rotation its layers use: the base as is, or NTK-scaled.
    fn rotary(&self, d: usize) -> Rotary {
        match &self.rope_scaling {
            Some(s) if s.factor > 1.0 => Rotary::ntk(d, self.rope_theta, s.factor),
            _ => Rotary::new(d, self.rope_theta),
        }
    }
}

/// Reads a GTE encoder (with or without the `new.` prefix of its task classes).
pub(crate) fn load(vb: VarBuilder, c: &GteConfig) -> candle_core::Result<Encoder> {
    let act = c.check()?;
    let vb = unprefixed(vb, "embeddings.word_embeddings.weight", &["new"]);
    let (h, i, heads) = (c.hidden_size, c.intermediate_size, c.num_attention_heads);
    let shape = Shape::multi_head(
        h,
        heads,
        i,
        (c.vocab_size, c.max_position_embeddings),
        act,
        Placement::Post,
    )?;
    let eps = c.layer_norm_eps;
    let mut layers = Vec::with_capacity(c.num_hidden_layers);
    for n in 0..c.num_hidden_layers {
        let l = vb.pp(format!("encoder.layer.{n}"));
        // `up_gate_proj` is `[up; gate]` and the gate is activated: the shared MLP wants the
        // activated half first.
        let fused = tensor(&l.pp("mlp.up_gate_proj"), (2 * i, h), "weight")?;
        let (up, gate) = fused.split_at(i * h);
        let bias = if l.contains_tensor("mlp.up_gate_proj.bias") {
            let b = tensor(&l.pp("mlp.up_gate_proj"), 2 * i, "bias")?;
            Some([&b[i..], &b[..i]].concat())
        } else {
            None
        };
        layers.push(Layer {
            attn_norm: Some(Norm::layer(&l.pp("attn_ln"), h, eps)?),
            qkv: Linear::load(l.pp("attention.qkv_proj"), 3 * h, h)?,
            q_norm: None,
            k_norm: None,
            out: Linear::load(l.pp("attention.o_proj"), h, h)?,
            mlp_norm: Norm::layer(&l.pp("mlp_ln"), h, eps)?,
            up: Linear::from_parts(&[gate, up].concat(), bias, 2 * i, h),
            down: Linear::load(l.pp("mlp.down_proj"), h, i)?,
            mask: Mask::Full,
            rotary: 0,
        });
    }
    let emb = vb.pp("embeddings");
    Encoder::new(
        shape,
        bert_tokens(&emb, c.vocab_size, h, c.type_vocab_size)?,
        Some(Norm::layer(&emb.pp("LayerNorm"), h, eps)?),
        layers,
        None,
        vec![c.rotary(h / heads)],
    )
}
