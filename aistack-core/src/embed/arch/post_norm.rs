//! The post-norm transformer encoder that BERT and MPNet share: embeddings summed and
//! normalized, then per layer `x = norm(x + attention(x))`, `x = norm(x + ffn(x))`.
//!
//! Faster than the generic candle graph on the same weights because it:
//! - packs a batch's sequences end to end (no padding rows, no attention mask);
//! - fuses the query, key and value projections into one matrix product;
//! - runs a batch as one group of whole sequences per core, each with single-threaded matrix
//!   products (no barrier between threads), or one sequence with every core in its products;
//! - computes GELU, softmax and layer norm in vectorized loops (AVX2/FMA where present);
//! - reuses its working buffers between calls instead of allocating a tensor per op;
//! - keeps the linear layers' weights in the matrix kernels' own panel layout, so a product
//!   repacks nothing.

use candle_nn::VarBuilder;
use gemm::Parallelism;

use super::{tensor, Network};
use crate::embed::kernels::attention::{attention_head, relative_bucket, Head, Mask};
use crate::embed::kernels::linear::{linear, Panels};
use crate::embed::kernels::{simd, take};

/// The feed-forward activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum HiddenAct {
    /// Exact GELU (erf).
    Gelu,
    /// GELU's tanh approximation.
    #[serde(alias = "gelu_new", alias = "gelu_pytorch_tanh")]
    GeluApproximate,
    /// ReLU.
    Relu,
}

/// How each token's position id is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PositionIds {
    /// 0, 1, 2, … (BERT).
    FromZero,
    /// As fairseq counts them (RoBERTa, MPNet): `pad + 1 + i` for the i-th token that is not
    /// the padding token, and `pad` for a padding token.
    AfterPadding {
        /// The padding token's id, also the first position id.
        pad: u32,
    },
}

impl PositionIds {
    /// Positions used beyond the sequence's own length.
    pub(crate) fn offset(self) -> usize {
        match self {
            Self::FromZero => 0,
            Self::AfterPadding { pad } => pad as usize + 1,
        }
    }

    /// The longest sequence a table of `table` positions takes (512 of RoBERTa's 514).
    pub(crate) fn usable(self, table: usize) -> usize {
        table.saturating_sub(self.offset())
    }
}

/// A bias added to attention scores by bucketed relative position, one table for all layers
/// (MPNet).
pub(crate) struct RelativeBias {
    /// `[buckets, heads]`.
    pub table: Vec<f32>,
    pub buckets: usize,
    pub max_distance: usize,
}

/// A layer norm's parameters.
pub(crate) struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

impl Norm {
    /// Reads `weight`/`bias` (or the older `gamma`/`beta`) under `vb`.
    pub(crate) fn load(vb: &VarBuilder, size: usize) -> candle_core::Result<Self> {
        let pick = |a: &str, b: &str| {
            if vb.contains_tensor(a) {
                a.to_string()
            } else {
                b.to_string()
            }
        };
        Ok(Self {
            gamma: tensor(vb, size, &pick("weight", "gamma"))?,
            beta: tensor(vb, size, &pick("bias", "beta"))?,
        })
    }
}

/// Where an architecture keeps each of a layer's weights, relative to the layer's prefix.
pub(crate) struct LayerNames {
    pub query: &'static str,
    pub key: &'static str,
    pub value: &'static str,
    pub attn_out: &'static str,
    pub attn_norm: &'static str,
    pub up: &'static str,
    pub down: &'static str,
    pub out_norm: &'static str,
}

/// One layer; weight matrices in panels.
struct Layer {
    qkv_w: Panels,
    qkv_b: Vec<f32>,
    out_w: Panels,
    out_b: Vec<f32>,
    attn_norm: Norm,
    up_w: Panels,
    up_b: Vec<f32>,
    down_w: Panels,
    down_b: Vec<f32>,
    out_norm: Norm,
}

impl Layer {
    fn load(l: &VarBuilder, n: &LayerNames, h: usize, i: usize) -> candle_core::Result<Self> {
        let mut qkv_w = Vec::with_capacity(3 * h * h);
        let mut qkv_b = Vec::with_capacity(3 * h);
        for part in [n.query, n.key, n.value] {
            let p = l.pp(part);
            qkv_w.extend(tensor(&p, (h, h), "weight")?);
            qkv_b.extend(tensor(&p, h, "bias")?);
        }
        let (o, up, down) = (l.pp(n.attn_out), l.pp(n.up), l.pp(n.down));
        Ok(Self {
            qkv_w: Panels::new(&qkv_w, 3 * h, h),
            qkv_b,
            out_w: Panels::new(&tensor(&o, (h, h), "weight")?, h, h),
            out_b: tensor(&o, h, "bias")?,
            attn_norm: Norm::load(&l.pp(n.attn_norm), h)?,
            up_w: Panels::new(&tensor(&up, (i, h), "weight")?, i, h),
            up_b: tensor(&up, i, "bias")?,
            down_w: Panels::new(&tensor(&down, (h, i), "weight")?, h, i),
            down_b: tensor(&down, h, "bias")?,
            out_norm: Norm::load(&l.pp(n.out_norm), h)?,
        })
    }
}

/// The shape of a post-norm encoder, as its architecture's config gives it.
pub(crate) struct Shape {
    pub hidden: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub vocab: usize,
    pub max_position_embeddings: usize,
    pub eps: f64,
    pub act: HiddenAct,
}

/// The `config.json` fields BERT, RoBERTa and MPNet name alike (as transformers writes them).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub(crate) struct CommonConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: HiddenAct,
    pub max_position_embeddings: usize,
    pub layer_norm_eps: f64,
}

impl CommonConfig {
    /// The encoder's shape.
    pub(crate) fn shape(&self) -> Shape {
        Shape {
            hidden: self.hidden_size,
            heads: self.num_attention_heads,
            intermediate: self.intermediate_size,
            layers: self.num_hidden_layers,
            vocab: self.vocab_size,
            max_position_embeddings: self.max_position_embeddings,
            eps: self.layer_norm_eps,
            act: self.hidden_act,
        }
    }
}

/// Where a BERT-style checkpoint keeps its weights and how it counts positions: embeddings
/// under `embeddings.` (`word_embeddings`, `position_embeddings`, `token_type_embeddings`,
/// `LayerNorm`), layers under `{layers}.{i}.`.
pub(crate) struct Layout {
    /// The layers' prefix: `encoder.layer` (BERT) or `transformer.layer` (DistilBERT).
    pub layers: &'static str,
    pub names: LayerNames,
    pub position_ids: PositionIds,
    /// `type_vocab_size`, where the architecture has token types (type 0 is added).
    pub token_types: Option<usize>,
}

/// Reads a BERT-style encoder of `shape` laid out as `layout` under `vb`.
pub(crate) fn load(
    vb: &VarBuilder,
    shape: Shape,
    layout: Layout,
    relative: Option<RelativeBias>,
) -> candle_core::Result<Encoder> {
    let (h, n) = (shape.hidden, shape.layers);
    let emb = vb.pp("embeddings");
    let token_type0 = match layout.token_types {
        Some(types) => {
            Some(tensor(&emb, (types, h), "token_type_embeddings.weight")?[..h].to_vec())
        }
        None => None,
    };
    Encoder::new(Parts {
        word: tensor(&emb, (shape.vocab, h), "word_embeddings.weight")?,
        position: tensor(
            &emb,
            (shape.max_position_embeddings, h),
            "position_embeddings.weight",
        )?,
        position_ids: layout.position_ids,
        token_type0,
        embed_norm: Norm::load(&emb.pp("LayerNorm"), h)?,
        layers: (0..n)
            .map(|i| vb.pp(format!("{}.{i}", layout.layers)))
            .collect(),
        names: layout.names,
        relative,
        shape,
    })
}

/// What an architecture hands over to build its encoder: its shape, its embedding weights, and
/// where its layers are.
pub(crate) struct Parts<'a> {
    pub shape: Shape,
    pub word: Vec<f32>,
    pub position: Vec<f32>,
    pub position_ids: PositionIds,
    /// The token-type-0 vector added to every token, if the architecture has token types.
    pub token_type0: Option<Vec<f32>>,
    pub embed_norm: Norm,
    /// The layers' prefixes, `encoder.layer.0` …, and where each weight is under them.
    pub layers: Vec<VarBuilder<'a>>,
    pub names: LayerNames,
    pub relative: Option<RelativeBias>,
}

/// A loaded post-norm encoder.
pub(crate) struct Encoder {
    hidden: usize,
    heads: usize,
    inter: usize,
    vocab: usize,
    max_positions: usize,
    eps: f32,
    act: HiddenAct,
    word: Vec<f32>,
    position: Vec<f32>,
    position_ids: PositionIds,
    token_type0: Option<Vec<f32>>,
    embed_norm: Norm,
    layers: Vec<Layer>,
    relative: Option<RelativeBias>,
    scratch: super::Scratch<Buffers>,
}

/// The encoder's working buffers.
#[derive(Default)]
struct Buffers {
    x: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    tmp: Vec<f32>,
    inter: Vec<f32>,
    scores: Vec<f32>,
    bias: Vec<f32>,
}

impl super::ScratchSet for Buffers {
    fn floats(&self) -> usize {
        [
            &self.x,
            &self.qkv,
            &self.ctx,
            &self.tmp,
            &self.inter,
            &self.scores,
            &self.bias,
        ]
        .iter()
        .map(|v| v.capacity())
        .sum()
    }
}

impl Encoder {
    /// Builds the encoder from an architecture's parts, reading and checking each layer's
    /// weights.
    pub(crate) fn new(p: Parts) -> candle_core::Result<Self> {
        let s = &p.shape;
        if s.heads == 0 || !s.hidden.is_multiple_of(s.heads) {
            candle_core::bail!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                s.hidden,
                s.heads
            );
        }
        if p.layers.len() != s.layers {
            candle_core::bail!("expected {} layers, got {}", s.layers, p.layers.len());
        }
        let layers = p
            .layers
            .iter()
            .map(|l| Layer::load(l, &p.names, s.hidden, s.intermediate))
            .collect::<candle_core::Result<Vec<_>>>()?;
        if let Some(r) = &p.relative {
            if r.table.len() != r.buckets * s.heads {
                candle_core::bail!("the relative attention bias is not [buckets, heads]");
            }
        }
        Ok(Self {
            hidden: s.hidden,
            heads: s.heads,
            inter: s.intermediate,
            vocab: s.vocab,
            max_positions: p.position_ids.usable(s.max_position_embeddings),
            eps: s.eps as f32,
            act: s.act,
            word: p.word,
            position: p.position,
            position_ids: p.position_ids,
            token_type0: p.token_type0,
            embed_norm: p.embed_norm,
            layers,
            relative: p.relative,
            scratch: super::Scratch::new(),
        })
    }

    fn run(
        &self,
        seqs: &[&[u32]],
        par: Parallelism,
        s: &mut Buffers,
        emit: &mut dyn FnMut(usize, &[f32]),
    ) {
        let (h, i) = (self.hidden, self.inter);
        let t: usize = seqs.iter().map(|q| q.len()).sum();
        let longest = seqs.iter().map(|q| q.len()).max().unwrap_or(0);
        let x = take(&mut s.x, t * h);
        let qkv = take(&mut s.qkv, t * 3 * h);
        let ctx = take(&mut s.ctx, t * h);
        let tmp = take(&mut s.tmp, t * h);
        let inter = take(&mut s.inter, t * i);
        let scores = take(&mut s.scores, longest * longest);
        let d = h / self.heads;
        // Per sequence and head, the relative bias by offset (2·len − 1 values).
        let bias_len: usize = match &self.relative {
            Some(_) => seqs.iter().map(|q| (2 * q.len() - 1) * self.heads).sum(),
            None => 0,
        };
        let bias = take(&mut s.bias, bias_len);

        // Embeddings: word + position (+ token type 0), then layer norm.
        let mut row = 0;
        for seq in seqs {
            let mut counted = 0usize;
            for (index, &id) in seq.iter().enumerate() {
                let pos = match self.position_ids {
                    PositionIds::FromZero => index,
                    PositionIds::AfterPadding { pad } if id == pad => pad as usize,
                    PositionIds::AfterPadding { pad } => {
                        counted += 1;
                        pad as usize + counted
                    }
                };
                let dst = &mut x[row * h..(row + 1) * h];
                let w = &self.word[id as usize * h..(id as usize + 1) * h];
                let p = &self.position[pos * h..(pos + 1) * h];
                for ((d, w), p) in dst.iter_mut().zip(w).zip(p) {
                    *d = w + p;
                }
                if let Some(k) = &self.token_type0 {
                    dst.iter_mut().zip(k).for_each(|(d, k)| *d += k);
                }
                row += 1;
            }
        }
        simd::layer_norm(
            x,
            None,
            h,
            &self.embed_norm.gamma,
            &self.embed_norm.beta,
            self.eps,
        );
        if let Some(r) = &self.relative {
            // Buckets depend on the offset alone: once for the longest sequence's offsets
            // (`rel + longest − 1` indexes them), then looked up per sequence and head.
            let span = longest as i64;
            let buckets: Vec<usize> = (-(span - 1)..span)
                .map(|rel| relative_bucket(rel, r.buckets, r.max_distance))
                .collect();
            let mut at = 0;
            for seq in seqs {
                let l = seq.len();
                let offsets = &buckets[longest - l..longest + l - 1];
                for head in 0..self.heads {
                    for &b in offsets {
                        bias[at] = r.table[b * self.heads + head];
                        at += 1;
                    }
                }
            }
        }

        let scale = 1.0 / (d as f32).sqrt();
        for layer in &self.layers {
            linear(x, &layer.qkv_w, &layer.qkv_b, qkv, t, par);
            let (mut start, mut at) = (0, 0);
            for seq in seqs {
                let l = seq.len();
                for head in 0..self.heads {
                    let b = self.relative.as_ref().map(|_| {
                        let b = &bias[at..at + 2 * l - 1];
                        at += 2 * l - 1;
                        b
                    });
                    let view = Head::fused(head, h, d);
                    attention_head(qkv, ctx, scores, start, l, view, scale, b, Mask::Full, par);
                }
                start += l;
            }
            linear(ctx, &layer.out_w, &layer.out_b, tmp, t, par);
            simd::layer_norm(
                x,
                Some(tmp),
                h,
                &layer.attn_norm.gamma,
                &layer.attn_norm.beta,
                self.eps,
            );
            linear(x, &layer.up_w, &layer.up_b, inter, t, par);
            match self.act {
                HiddenAct::Gelu => simd::gelu_erf(inter),
                HiddenAct::GeluApproximate => simd::gelu_tanh(inter),
                HiddenAct::Relu => inter.iter_mut().for_each(|v| *v = v.max(0.0)),
            }
            linear(inter, &layer.down_w, &layer.down_b, tmp, t, par);
            simd::layer_norm(
                x,
                Some(tmp),
                h,
                &layer.out_norm.gamma,
                &layer.out_norm.beta,
                self.eps,
            );
        }

        let mut start = 0;
        for (n, seq) in seqs.iter().enumerate() {
            emit(n, &x[start * h..(start + seq.len()) * h]);
            start += seq.len();
        }
    }
}

impl Network for Encoder {
    fn hidden(&self) -> usize {
        self.hidden
    }

    fn max_positions(&self) -> usize {
        self.max_positions
    }

    fn vocab(&self) -> usize {
        self.vocab
    }

    fn encode(&self, seqs: &[&[u32]], par: Parallelism, emit: &mut dyn FnMut(usize, &[f32])) {
        self.scratch.with(|s| self.run(seqs, par, s, emit));
    }
}
