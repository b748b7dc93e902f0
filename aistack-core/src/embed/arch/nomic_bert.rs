//! NomicBERT (`nomic_bert`: nomic-ai/nomic-embed-text-v1 and v1.5, a `trust_remote_code` model
//! whose code lives with its weights): BERT's post-norm layers with rotary positions instead of
//! a position table, a SwiGLU MLP and no biases in its projections. Checked against the
//! published modeling code (`scripts/make-arch-fixtures.py`).

use candle_nn::VarBuilder;

use super::pre_norm::{
    bert_tokens, Encoder, GluAct, Layer, Linear, Norm, Placement, Rotary, Shape,
};
use super::unprefixed;
use crate::embed::kernels::attention::Mask;

/// The fields of a NomicBERT `config.json` that the encoder reads (GPT-2 style names).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub(crate) struct NomicBertConfig {
    /// The embedding table's rows (the tokenizer's size rounded up).
    pub vocab_size: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    /// The MLP width before the modeling code rounds it up to a multiple of 256.
    pub n_inner: Option<usize>,
    #[serde(default = "default_positions")]
    pub n_positions: usize,
    #[serde(default = "default_act")]
    pub activation_function: String,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// 0 (the code's default) means no rotary positions at all, which is refused.
    #[serde(default = "default_fraction")]
    pub rotary_emb_fraction: f64,
    #[serde(default = "default_base")]
    pub rotary_emb_base: f64,
    #[serde(default)]
    pub rotary_emb_interleaved: bool,
    pub rotary_scaling_factor: Option<f64>,
    #[serde(default)]
    pub prenorm: bool,
    #[serde(default)]
    pub use_rms_norm: Option<bool>,
    #[serde(default = "default_types")]
    pub type_vocab_size: usize,
    #[serde(default)]
    pub causal: bool,
    #[serde(default)]
    pub parallel_block: bool,
    pub rotary_emb_scale_base: Option<f64>,
    pub num_heads_kv: Option<usize>,
}

fn default_positions() -> usize {
    2048
}
fn default_act() -> String {
    "swiglu".into()
}
fn default_eps() -> f64 {
    1e-12
}
fn default_fraction() -> f64 {
    0.0
}
fn default_base() -> f64 {
    1_000.0
}
fn default_types() -> usize {
    2
}

impl NomicBertConfig {
    /// The MLP width the modeling code builds: `n_inner` (else 8/3 × hidden, as its gated
    /// MLP defaults) rounded up to a multiple of 256.
    fn intermediate(&self) -> usize {
        self.n_inner.unwrap_or(8 * self.n_embd / 3).div_ceil(256) * 256
    }

    /// What this encoder does not run, refused by name rather than computed differently.
    fn check(&self) -> candle_core::Result<GluAct> {
        let unsupported = |what: String| {
            candle_core::bail!(
                "nomic_bert with {what} is not supported (nomic-embed-text v1 and v1.5 are)"
            )
        };
        if self.rotary_emb_fraction != 1.0 {
            return unsupported(format!("rotary_emb_fraction {}", self.rotary_emb_fraction));
        }
        if self.rotary_emb_interleaved {
            return unsupported("interleaved rotary embeddings".into());
        }
        if let Some(f) = self.rotary_scaling_factor {
            return unsupported(format!("rotary_scaling_factor {f}"));
        }
        if self.prenorm || self.use_rms_norm == Some(true) || self.causal {
            return unsupported("prenorm, RMS norms or causal attention".into());
        }
        if self.parallel_block || self.rotary_emb_scale_base.is_some() {
            return unsupported("parallel blocks or rotary_emb_scale_base".into());
        }
        if self.num_heads_kv.is_some_and(|kv| kv != self.n_head) {
            return unsupported("num_heads_kv other than n_head".into());
        }
        match self.activation_function.as_str() {
            "swiglu" => Ok(GluAct::Silu),
            "geglu" => Ok(GluAct::Gelu),
            other => unsupported(format!("activation_function '{other}'")),
        }
    }
}

/// Reads a NomicBERT encoder (with or without the `bert.` prefix of its pre-training class).
pub(crate) fn load(vb: VarBuilder, c: &NomicBertConfig) -> candle_core::Result<Encoder> {
    let act = c.check()?;
    let vb = unprefixed(vb, "embeddings.word_embeddings.weight", &["bert"]);
    let (h, heads, i, eps) = (c.n_embd, c.n_head, c.intermediate(), c.layer_norm_epsilon);
    let shape = Shape::multi_head(
        h,
        heads,
        i,
        (c.vocab_size, c.n_positions),
        act,
        Placement::Post,
    )?;
    let mut layers = Vec::with_capacity(c.n_layer);
    for n in 0..c.n_layer {
        let l = vb.pp(format!("encoder.layers.{n}"));
        layers.push(Layer {
            attn_norm: Some(Norm::layer(&l.pp("norm1"), h, eps)?),
            qkv: Linear::load(l.pp("attn.Wqkv"), 3 * h, h)?,
            q_norm: None,
            k_norm: None,
            out: Linear::load(l.pp("attn.out_proj"), h, h)?,
            mlp_norm: Norm::layer(&l.pp("norm2"), h, eps)?,
            // `fc2(fc11(x) · act(fc12(x)))`: the activated half (fc12) first.
            up: Linear::stacked(&[(l.pp("mlp.fc12"), i), (l.pp("mlp.fc11"), i)], h)?,
            down: Linear::load(l.pp("mlp.fc2"), h, i)?,
            mask: Mask::Full,
            rotary: 0,
        });
    }
    Encoder::new(
        shape,
        bert_tokens(&vb.pp("embeddings"), c.vocab_size, h, c.type_vocab_size)?,
        Some(Norm::layer(&vb.pp("emb_ln"), h, eps)?),
        layers,
        None,
        vec![Rotary::new(h / heads, c.rotary_emb_base)],
    )
}
